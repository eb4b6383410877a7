// kernels/softmax.h — the output losses: softmax over the last axis, the fused softmax +
// categorical cross-entropy, the fused sigmoid + binary cross-entropy (both computed from
// logits, no probability clipping, as TensorFlow does for a softmax / sigmoid output), and the
// accuracy counts.
//   p = softmax(z),  loss_n = -sum_k y_nk * log p_nk = sum_k y_nk * (logsumexp(z_n) - z_nk)
//   p = sigmoid(z),  loss_n = mean_k [max(z_nk, 0) - z_nk * y_nk + log(1 + exp(-|z_nk|))]
#pragma once

#include <cstdint>

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid::cpu {

// probs (N,K) = softmax(logits (N,K)) row by row (max-subtracted).
template <typename T> void softmax_forward(T* probs, const T* logits, int64_t N, int64_t K);
// dlogits (N,K) (=) from dprobs (N,K) and probs (N,K).
template <typename T>
void softmax_backward(T* dlogits, const T* dprobs, const T* probs, int64_t N, int64_t K);
// losses (N) and probs (N,K) from logits (N,K) and targets (N,K) (one-hot or a distribution).
template <typename T>
void softmax_xent_forward(T* losses, T* probs, const T* logits, const T* targets, int64_t N, int64_t K);
// dlogits (N,K) (=) = dlosses_n * (p_nk * sum_j y_nj - y_nk).
template <typename T>
void softmax_xent_backward(T* dlogits, const T* dlosses, const T* probs, const T* targets, int64_t N,
                           int64_t K);
// correct (1) = number of rows whose argmax of scores (N,K) equals the argmax of targets (N,K)
// (first maximum on ties, as numpy's argmax).
template <typename T>
void accuracy_count(int64_t* correct, const T* scores, const T* targets, int64_t N, int64_t K);

// losses (N) and probs (N,K) = sigmoid(logits) from logits (N,K) and targets (N,K) in [0, 1].
template <typename T>
void sigmoid_xent_forward(T* losses, T* probs, const T* logits, const T* targets, int64_t N, int64_t K);
// dlogits (N,K) (=) dlosses_n * (p_nk - y_nk) / K.
template <typename T>
void sigmoid_xent_backward(T* dlogits, const T* dlosses, const T* probs, const T* targets, int64_t N,
                           int64_t K);
// correct (1) = number of elements of probs (N,K) with (p > 0.5) == (y > 0.5): Keras's
// binary_accuracy at its threshold 0.5 (a NaN probability counts as 0).
template <typename T>
void binary_accuracy_count(int64_t* correct, const T* probs, const T* targets, int64_t N, int64_t K);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void softmax_forward(float* probs, const float* logits, int64_t N, int64_t K, cudaStream_t stream);
void softmax_backward(float* dlogits, const float* dprobs, const float* probs, int64_t N, int64_t K,
                      cudaStream_t stream);
void softmax_xent_forward(float* losses, float* probs, const float* logits, const float* targets, int64_t N,
                          int64_t K, cudaStream_t stream);
void softmax_xent_backward(float* dlogits, const float* dlosses, const float* probs, const float* targets,
                           int64_t N, int64_t K, cudaStream_t stream);
// correct points to device memory.
void accuracy_count(int64_t* correct, const float* scores, const float* targets, int64_t N, int64_t K,
                    cudaStream_t stream);
void sigmoid_xent_forward(float* losses, float* probs, const float* logits, const float* targets, int64_t N,
                          int64_t K, cudaStream_t stream);
void sigmoid_xent_backward(float* dlogits, const float* dlosses, const float* probs, const float* targets,
                           int64_t N, int64_t K, cudaStream_t stream);
// correct points to device memory.
void binary_accuracy_count(int64_t* correct, const float* probs, const float* targets, int64_t N, int64_t K,
                           cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
