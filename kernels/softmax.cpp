// kernels/softmax.cpp — the naive rows of kernels/softmax.h: row softmax, the fused softmax +
// categorical cross-entropy from logits, and the accuracy count. Dimension letters as in
// kernels/common.h (N rows, K classes).
#include "kernels/softmax.h"

#include <cmath>

#include "kernels/common.h"

namespace hisvid::naive {

namespace {

// Below this many elements the loops run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

// probs (K) = exp(z - max z) / sum; returns log(sum) + max z, the row's logsumexp.
template <typename T>
T softmax_row(T* probs, const T* z, int64_t K) {
  T zmax = z[0];
  for (int64_t k = 1; k < K; ++k) zmax = z[k] > zmax ? z[k] : zmax;
  T sum = T(0);
  for (int64_t k = 0; k < K; ++k) {
    probs[k] = std::exp(z[k] - zmax);
    sum += probs[k];
  }
  for (int64_t k = 0; k < K; ++k) probs[k] /= sum;
  return zmax + std::log(sum);
}

// Index of the first maximum of x (K), as numpy's argmax.
template <typename T>
int64_t argmax_row(const T* x, int64_t K) {
  int64_t best = 0;
  for (int64_t k = 1; k < K; ++k) {
    if (x[k] > x[best]) best = k;
  }
  return best;
}

// Rows n of scores (N,K) and targets (N,K) with the same argmax.
template <typename T>
int64_t argmax_matches(const T* scores, const T* targets, int64_t N, int64_t K) {
  int64_t count = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (argmax_row(scores + n * K, K) == argmax_row(targets + n * K, K)) ++count;
  }
  return count;
}

// Elements i of probs (n) and targets (n) with (p > 0.5) == (y > 0.5).
template <typename T>
int64_t threshold_matches(const T* probs, const T* targets, int64_t n) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if ((probs[i] > T(0.5)) == (targets[i] > T(0.5))) ++count;
  }
  return count;
}

}  // namespace

template <typename T>
void softmax_forward(const SoftmaxForward<T>& k) {
  T* probs = k.probs;          // (N,K)
  const T* logits = k.logits;  // (N,K)
  const int64_t N = k.N, K = k.K;
#pragma omp parallel for if (N * K > kParallelMin)
  for (int64_t n = 0; n < N; ++n) softmax_row(probs + n * K, logits + n * K, K);
}

// dz_k = p_k * (dp_k - sum_j dp_j p_j)
template <typename T>
void softmax_backward(const SoftmaxBackward<T>& args) {
  T* dlogits = args.dlogits;                           // (N,K)
  const T *dprobs = args.dprobs, *probs = args.probs;  // (N,K), (N,K)
  const int64_t N = args.N, K = args.K;
#pragma omp parallel for if (N * K > kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const T* p = probs + n * K;
    const T* dp = dprobs + n * K;
    T dot = T(0);
    for (int64_t k = 0; k < K; ++k) dot += dp[k] * p[k];
    for (int64_t k = 0; k < K; ++k) dlogits[n * K + k] = p[k] * (dp[k] - dot);
  }
}

// loss_n = sum_k y_nk * (logsumexp(z_n) - z_nk)
template <typename T>
void softmax_xent_forward(const SoftmaxXentForward<T>& args) {
  T *losses = args.losses, *probs = args.probs;            // (N), (N,K)
  const T *logits = args.logits, *targets = args.targets;  // (N,K), (N,K)
  const int64_t N = args.N, K = args.K;
#pragma omp parallel for if (N * K > kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const T* z = logits + n * K;
    const T* y = targets + n * K;
    const T lse = softmax_row(probs + n * K, z, K);
    T loss = T(0);
    for (int64_t k = 0; k < K; ++k) loss += y[k] * (lse - z[k]);
    losses[n] = loss;
  }
}

template <typename T>
void softmax_xent_backward(const SoftmaxXentBackward<T>& args) {
  T* dlogits = args.dlogits;                                                      // (N,K)
  const T *dlosses = args.dlosses, *probs = args.probs, *targets = args.targets;  // (N), (N,K), (N,K)
  const int64_t N = args.N, K = args.K;
#pragma omp parallel for if (N * K > kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const T* p = probs + n * K;
    const T* y = targets + n * K;
    T ysum = T(0);
    for (int64_t k = 0; k < K; ++k) ysum += y[k];
    for (int64_t k = 0; k < K; ++k) dlogits[n * K + k] = dlosses[n] * (p[k] * ysum - y[k]);
  }
}

template <typename T>
void accuracy_count(const AccuracyCount<T>& args) {
  int64_t* correct = args.correct;                         // (1)
  const T *scores = args.scores, *targets = args.targets;  // (N,K), (N,K)
  *correct = argmax_matches(scores, targets, args.N, args.K);
}

template <typename T>
void sigmoid_xent_forward(const SigmoidXentForward<T>& args) {
  T *losses = args.losses, *probs = args.probs;            // (N), (N,K)
  const T *logits = args.logits, *targets = args.targets;  // (N,K), (N,K)
  const int64_t N = args.N, K = args.K;
  for (int64_t n = 0; n < N; ++n) {
    T sum = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const T z = logits[n * K + k], y = targets[n * K + k];
      sum += (z > T(0) ? z : T(0)) - z * y + std::log1p(std::exp(-std::fabs(z)));
      probs[n * K + k] = sigmoid(z);
    }
    losses[n] = sum / static_cast<T>(K);
  }
}

template <typename T>
void sigmoid_xent_backward(const SigmoidXentBackward<T>& args) {
  T* dlogits = args.dlogits;                                                      // (N,K)
  const T *dlosses = args.dlosses, *probs = args.probs, *targets = args.targets;  // (N), (N,K), (N,K)
  const int64_t N = args.N, K = args.K;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      dlogits[n * K + k] = dlosses[n] * (probs[n * K + k] - targets[n * K + k]) / static_cast<T>(K);
    }
  }
}

template <typename T>
void binary_accuracy_count(const BinaryAccuracyCount<T>& args) {
  int64_t* correct = args.correct;                       // (1)
  const T *probs = args.probs, *targets = args.targets;  // (N,K), (N,K)
  *correct = threshold_matches(probs, targets, args.N * args.K);
}

template <typename T>
void step_metrics(const StepMetrics<T>& args) {
  double* sums = args.sums;                                                   // (kStepSums)
  const T *loss = args.loss, *scores = args.scores, *targets = args.targets;  // (1), (N,K), (N,K)
  const int64_t N = args.N, K = args.K;
  sums[kStepCount] += 1.0;
  if (sums[kStepFailed] != 0.0) return;
  const double value = static_cast<double>(loss[0]);
  if (!std::isfinite(value)) {
    sums[kStepFailed] = sums[kStepCount];
    sums[kStepFailedLoss] = value;
    return;
  }
  const int64_t correct =
      args.binary ? threshold_matches(scores, targets, N * K) : argmax_matches(scores, targets, N, K);
  sums[kStepLossSum] += value * args.weight;
  sums[kStepCorrect] += static_cast<double>(correct);
  sums[kStepSamples] += args.weight;
}

#define HISVID_INSTANTIATE(T)                                            \
  template void softmax_forward<T>(const SoftmaxForward<T>&);            \
  template void softmax_backward<T>(const SoftmaxBackward<T>&);          \
  template void softmax_xent_forward<T>(const SoftmaxXentForward<T>&);   \
  template void softmax_xent_backward<T>(const SoftmaxXentBackward<T>&); \
  template void accuracy_count<T>(const AccuracyCount<T>&);              \
  template void sigmoid_xent_forward<T>(const SigmoidXentForward<T>&);   \
  template void sigmoid_xent_backward<T>(const SigmoidXentBackward<T>&); \
  template void binary_accuracy_count<T>(const BinaryAccuracyCount<T>&); \
  template void step_metrics<T>(const StepMetrics<T>&);
HISVID_INSTANTIATE(float)
HISVID_INSTANTIATE(double)
#undef HISVID_INSTANTIATE

}  // namespace hisvid::naive
