// kernels/batchnorm.h — batch normalisation over the last (channel) axis of an (M,C) view,
// Keras semantics: training normalises with the batch mean and the biased batch variance,
//   y = gamma * (x - mean) / sqrt(var + eps) + beta,
// and the moving statistics follow moving = momentum * moving + (1 - momentum) * batch, the
// moving variance taking the unbiased batch variance var * M / (M - 1). Inference uses the
// moving statistics.
#pragma once

#include <cstdint>

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid::cpu {

// out (M,C); mean (C) and var (C, biased) of the batch; invstd (C) = 1/sqrt(var + eps).
template <typename T>
void batchnorm_forward_train(T* out, T* mean, T* var, T* invstd, const T* inp, const T* gamma,
                             const T* beta, int64_t M, int64_t C, float eps);
// out (M,C) with the moving statistics moving_mean (C), moving_var (C).
template <typename T>
void batchnorm_forward_infer(T* out, const T* inp, const T* gamma, const T* beta, const T* moving_mean,
                             const T* moving_var, int64_t M, int64_t C, float eps);
// dinp (M,C) (=), dgamma (C) (+=), dbeta (C) (+=) for the training-mode forward.
template <typename T>
void batchnorm_backward(T* dinp, T* dgamma, T* dbeta, const T* dout, const T* inp, const T* mean,
                        const T* invstd, const T* gamma, int64_t M, int64_t C);
// moving_mean (C), moving_var (C) updated in place from the batch mean (C) and biased var (C).
template <typename T>
void batchnorm_update_moving(T* moving_mean, T* moving_var, const T* mean, const T* var, int64_t M,
                             int64_t C, float momentum);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void batchnorm_forward_train(float* out, float* mean, float* var, float* invstd, const float* inp,
                             const float* gamma, const float* beta, int64_t M, int64_t C, float eps,
                             cudaStream_t stream);
void batchnorm_forward_infer(float* out, const float* inp, const float* gamma, const float* beta,
                             const float* moving_mean, const float* moving_var, int64_t M, int64_t C,
                             float eps, cudaStream_t stream);
void batchnorm_backward(float* dinp, float* dgamma, float* dbeta, const float* dout, const float* inp,
                        const float* mean, const float* invstd, const float* gamma, int64_t M, int64_t C,
                        cudaStream_t stream);
void batchnorm_update_moving(float* moving_mean, float* moving_var, const float* mean, const float* var,
                             int64_t M, int64_t C, float momentum, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
