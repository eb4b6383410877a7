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

namespace hisvid {

// probs (N,K) = softmax(logits (N,K)) row by row (max-subtracted).
template <typename T>
struct SoftmaxForward {
  static constexpr const char* kName = "softmax_forward";
  T* probs = nullptr;
  const T* logits = nullptr;
  int64_t N = 0, K = 0;
  template <typename V>
  void buffers(V& v) {
    v.out("probs", probs, N * K);
    v.in("logits", logits, N * K);
  }
};

// dlogits (N,K) (=) from dprobs (N,K) and probs (N,K): p_k * (dp_k - sum_j dp_j p_j).
template <typename T>
struct SoftmaxBackward {
  static constexpr const char* kName = "softmax_backward";
  T* dlogits = nullptr;
  const T* dprobs = nullptr;
  const T* probs = nullptr;
  int64_t N = 0, K = 0;
  template <typename V>
  void buffers(V& v) {
    v.out("dlogits", dlogits, N * K);
    v.in("dprobs", dprobs, N * K);
    v.in("probs", probs, N * K);
  }
};

// The fused cross-entropies from logits (N,K) and targets (N,K): forward writes losses (N)
// and probs (N,K); backward dlogits (N,K) (=) from dlosses (N), probs and targets.
template <typename T>
struct CrossEntropyForwardArgs {
  T* losses = nullptr;
  T* probs = nullptr;
  const T* logits = nullptr;
  const T* targets = nullptr;
  int64_t N = 0, K = 0;
  template <typename V>
  void buffers(V& v) {
    v.out("losses", losses, N);
    v.out("probs", probs, N * K);
    v.in("logits", logits, N * K);
    v.in("targets", targets, N * K);
  }
};
template <typename T>
struct CrossEntropyBackwardArgs {
  T* dlogits = nullptr;
  const T* dlosses = nullptr;
  const T* probs = nullptr;
  const T* targets = nullptr;
  int64_t N = 0, K = 0;
  template <typename V>
  void buffers(V& v) {
    v.out("dlogits", dlogits, N * K);
    v.in("dlosses", dlosses, N);
    v.in("probs", probs, N * K);
    v.in("targets", targets, N * K);
  }
};

// Softmax + categorical cross-entropy: loss_n = sum_k y_nk * (logsumexp(z_n) - z_nk), probs the
// row softmax (targets one-hot or a distribution); dlogits = dlosses_n * (p_nk * sum_j y_nj - y_nk).
template <typename T>
struct SoftmaxXentForward : CrossEntropyForwardArgs<T> {
  static constexpr const char* kName = "softmax_xent_forward";
};
template <typename T>
struct SoftmaxXentBackward : CrossEntropyBackwardArgs<T> {
  static constexpr const char* kName = "softmax_xent_backward";
};

// correct (1, host memory on every backend) = number of rows whose argmax of scores (N,K)
// equals the argmax of targets (N,K) (first maximum on ties, as numpy's argmax).
template <typename T>
struct AccuracyCount {
  static constexpr const char* kName = "accuracy_count";
  int64_t* correct = nullptr;
  const T* scores = nullptr;
  const T* targets = nullptr;
  int64_t N = 0, K = 0;
  template <typename V>
  void buffers(V& v) {
    v.host_out("correct", correct, 1);
    v.in("scores", scores, N * K);
    v.in("targets", targets, N * K);
  }
};

// Sigmoid + binary cross-entropy: loss_n = the mean over k of the binary cross-entropy, probs =
// sigmoid(logits), targets in [0, 1]; dlogits = dlosses_n * (p_nk - y_nk) / K.
template <typename T>
struct SigmoidXentForward : CrossEntropyForwardArgs<T> {
  static constexpr const char* kName = "sigmoid_xent_forward";
};
template <typename T>
struct SigmoidXentBackward : CrossEntropyBackwardArgs<T> {
  static constexpr const char* kName = "sigmoid_xent_backward";
};

// correct (1, host memory on every backend) = number of elements of probs (N,K) with
// (p > 0.5) == (y > 0.5): Keras's binary_accuracy at its threshold 0.5 (a NaN probability
// counts as 0).
template <typename T>
struct BinaryAccuracyCount {
  static constexpr const char* kName = "binary_accuracy_count";
  int64_t* correct = nullptr;
  const T* probs = nullptr;
  const T* targets = nullptr;
  int64_t N = 0, K = 0;
  template <typename V>
  void buffers(V& v) {
    v.host_out("correct", correct, 1);
    v.in("probs", probs, N * K);
    v.in("targets", targets, N * K);
  }
};

// The running sums of an epoch's training steps, kept in the model's device memory so that a
// step reads nothing back to the host (float64, kStepSums values; integers exactly).
enum StepSum : int {
  kStepLossSum = 0,  // sum over the steps of loss * weight
  kStepCorrect,      // rows (elements for a binary head) predicted right
  kStepSamples,      // sum of the weights
  kStepCount,        // steps run, the halted ones included
  kStepFailed,       // the first step (1-based) whose loss was not finite; 0 while none
  kStepFailedLoss,   // that loss
  kStepSums
};

// One training step into sums (kStepSums): steps += 1; then, unless a step has already failed,
// a loss that is not finite marks this step failed (sums[kStepFailed] = steps, its loss kept)
// and a finite one adds loss * weight, the correct count (scores (N,K) against targets (N,K):
// argmax rows as accuracy_count, or the binary rule of binary_accuracy_count) and weight.
// Once failed, nothing more is added, and the optimizer kernels given sums + kStepFailed as
// their halt flag skip their updates (kernels/optim.h): a non-finite loss stops training
// before its update without the host looking at the loss.
template <typename T>
struct StepMetrics {
  static constexpr const char* kName = "step_metrics";
  double* sums = nullptr;      // (kStepSums) float64 on every backend
  const T* loss = nullptr;     // (1)
  const T* scores = nullptr;   // (N,K) the head's probabilities (argmax, or p > 0.5 when binary)
  const T* targets = nullptr;  // (N,K)
  int64_t N = 0, K = 0;
  bool binary = false;
  double weight = 0.0;  // the samples the step stands for
  template <typename V>
  void buffers(V& v) {
    v.float64_inout("sums", sums, kStepSums);
    v.in("loss", loss, 1);
    v.in("scores", scores, N * K);
    v.in("targets", targets, N * K);
  }
};

}  // namespace hisvid

namespace hisvid::naive {

template <typename T>
void softmax_forward(const SoftmaxForward<T>& k);
template <typename T>
void softmax_backward(const SoftmaxBackward<T>& k);
template <typename T>
void softmax_xent_forward(const SoftmaxXentForward<T>& k);
template <typename T>
void softmax_xent_backward(const SoftmaxXentBackward<T>& k);
template <typename T>
void accuracy_count(const AccuracyCount<T>& k);
template <typename T>
void sigmoid_xent_forward(const SigmoidXentForward<T>& k);
template <typename T>
void sigmoid_xent_backward(const SigmoidXentBackward<T>& k);
template <typename T>
void binary_accuracy_count(const BinaryAccuracyCount<T>& k);
template <typename T>
void step_metrics(const StepMetrics<T>& k);

}  // namespace hisvid::naive

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void softmax_forward(const SoftmaxForward<float>& k, cudaStream_t stream);
void softmax_backward(const SoftmaxBackward<float>& k, cudaStream_t stream);
void softmax_xent_forward(const SoftmaxXentForward<float>& k, cudaStream_t stream);
void softmax_xent_backward(const SoftmaxXentBackward<float>& k, cudaStream_t stream);
// Counts on the device and copies the count to the host (synchronising the stream).
void accuracy_count(const AccuracyCount<float>& k, cudaStream_t stream);
void sigmoid_xent_forward(const SigmoidXentForward<float>& k, cudaStream_t stream);
void sigmoid_xent_backward(const SigmoidXentBackward<float>& k, cudaStream_t stream);
void binary_accuracy_count(const BinaryAccuracyCount<float>& k, cudaStream_t stream);
// One block; reads nothing back to the host.
void step_metrics(const StepMetrics<float>& k, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
