// CUDA versions of kernels/softmax.h: one warp per row (rows are class scores, K in the tens
// to thousands), max-subtracted exponentials, warp-shuffle reductions. accuracy_count and
// step_metrics run in one block and write the count (no atomics, no zeroing pass). The sigmoid loss is
// elementwise: one thread per row (K is 1 for a binary head), as the CPU sums it.
#include <cmath>

#include "kernels/common.h"
#include "kernels/cuda_context.h"
#include "kernels/softmax.h"

namespace hisvid::cuda {

namespace {

constexpr int kRowsPerBlock = kThreads / 32;  // one warp per row

// Rows of a warp-per-row kernel: the warp's global index, then strides of all the grid's warps.
__device__ __forceinline__ int64_t first_row() {
  return blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / 32;
}
__device__ __forceinline__ int64_t row_stride() { return int64_t(gridDim.x) * kRowsPerBlock; }

unsigned int row_blocks(int64_t N) { return grid_blocks(N, kRowsPerBlock); }

// max over z (K) and sum of exp(z - max), every lane of the warp getting both.
__device__ void row_max_and_sum(float& max_out, float& sum_out, const float* z, int64_t K, int lane) {
  float mx = -INFINITY;
  for (int64_t k = lane; k < K; k += 32) mx = fmaxf(mx, z[k]);
  mx = device::warp_max(mx);
  float s = 0.0f;
  for (int64_t k = lane; k < K; k += 32) s += expf(z[k] - mx);
  max_out = mx;
  sum_out = device::warp_sum(s);
}

// probs (N,K) = softmax(logits (N,K))
__global__ void softmax_forward_kernel(float* probs, const float* logits, int64_t N, int64_t K) {
  const int lane = threadIdx.x % 32;
  for (int64_t row = first_row(); row < N; row += row_stride()) {
    const float* z = logits + row * K;
    float* p = probs + row * K;
    float mx, s;
    row_max_and_sum(mx, s, z, K, lane);
    for (int64_t k = lane; k < K; k += 32) p[k] = expf(z[k] - mx) / s;
  }
}

// dlogits (N,K) = probs * (dprobs - sum_k dprobs * probs)
__global__ void softmax_backward_kernel(float* dlogits, const float* dprobs, const float* probs, int64_t N,
                                        int64_t K) {
  const int lane = threadIdx.x % 32;
  for (int64_t row = first_row(); row < N; row += row_stride()) {
    const float* dp = dprobs + row * K;
    const float* p = probs + row * K;
    float dot = 0.0f;
    for (int64_t k = lane; k < K; k += 32) dot += dp[k] * p[k];
    dot = device::warp_sum(dot);
    for (int64_t k = lane; k < K; k += 32) dlogits[row * K + k] = p[k] * (dp[k] - dot);
  }
}

// losses (N) = sum_k y (lse - z); probs (N,K) from logits (N,K), targets (N,K)
__global__ void softmax_xent_forward_kernel(float* losses, float* probs, const float* logits,
                                            const float* targets, int64_t N, int64_t K) {
  const int lane = threadIdx.x % 32;
  for (int64_t row = first_row(); row < N; row += row_stride()) {
    const float* z = logits + row * K;
    const float* y = targets + row * K;
    float mx, s;
    row_max_and_sum(mx, s, z, K, lane);
    const float lse = mx + logf(s);
    float loss = 0.0f;
    for (int64_t k = lane; k < K; k += 32) {
      probs[row * K + k] = expf(z[k] - mx) / s;
      loss += y[k] * (lse - z[k]);
    }
    loss = device::warp_sum(loss);
    if (lane == 0) losses[row] = loss;
  }
}

// dlogits (N,K) = dlosses (N) * (p * sum_j y_j - y)
__global__ void softmax_xent_backward_kernel(float* dlogits, const float* dlosses, const float* probs,
                                             const float* targets, int64_t N, int64_t K) {
  const int lane = threadIdx.x % 32;
  for (int64_t row = first_row(); row < N; row += row_stride()) {
    const float* p = probs + row * K;
    const float* y = targets + row * K;
    float y_sum = 0.0f;
    for (int64_t k = lane; k < K; k += 32) y_sum += y[k];
    y_sum = device::warp_sum(y_sum);
    const float dl = dlosses[row];
    for (int64_t k = lane; k < K; k += 32) dlogits[row * K + k] = dl * (p[k] * y_sum - y[k]);
  }
}

// Whether candidate (v at index v_at) beats (best at best_at) in the CPU's argmax_row: the
// first maximum, where a NaN never wins a comparison, so a NaN counts only at index 0 (the
// CPU's starting point, kept by a NaN since nothing compares greater) and then wins.
__device__ bool beats(float v, int64_t v_at, float best, int64_t best_at) {
  if (v_at < 0) return false;
  if (best_at < 0 || isnan(v)) return true;  // a NaN candidate is x[0]
  if (isnan(best)) return false;
  return v > best || (v == best && v_at < best_at);
}

// Index of the first maximum of x (K) as argmax_row (softmax.cpp), every lane of the warp
// getting it. Each lane scans its strided elements; lane 0 always takes x[0].
__device__ int64_t warp_argmax(const float* x, int64_t K, int lane) {
  float best = -INFINITY;
  int64_t at = -1;
  for (int64_t k = lane; k < K; k += 32) {
    if (k == 0 || x[k] > best) {
      best = x[k];
      at = k;
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, best, offset);
    const int64_t other_at = __shfl_xor_sync(0xffffffffu, at, offset);
    if (beats(other, other_at, best, at)) {
      best = other;
      at = other_at;
    }
  }
  return at;
}

// Rows of scores (N,K) and targets (N,K) with the same argmax, valid in thread 0 of the one
// block (kThreads threads, a warp per row), added in warp order: the same count on every run.
__device__ int64_t block_argmax_matches(const float* scores, const float* targets, int64_t N, int64_t K) {
  __shared__ int64_t per_warp[kRowsPerBlock];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int64_t count = 0;
  for (int64_t row = warp; row < N; row += kRowsPerBlock) {
    if (warp_argmax(scores + row * K, K, lane) == warp_argmax(targets + row * K, K, lane)) ++count;
  }
  if (lane == 0) per_warp[warp] = count;
  __syncthreads();
  int64_t total = 0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kRowsPerBlock; ++w) total += per_warp[w];
  }
  return total;
}

// Elements of probs (n) and targets (n) with (p > 0.5) == (y > 0.5), valid in thread 0 of the
// one block (kThreads threads).
__device__ int64_t block_threshold_matches(const float* probs, const float* targets, int64_t n) {
  __shared__ int64_t per_thread[kThreads];
  int64_t count = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    if ((probs[i] > 0.5f) == (targets[i] > 0.5f)) ++count;
  }
  per_thread[threadIdx.x] = count;
  __syncthreads();
  int64_t total = 0;
  if (threadIdx.x == 0) {
    for (int t = 0; t < kThreads; ++t) total += per_thread[t];
  }
  return total;
}

// correct (1) = rows of scores (N,K) and targets (N,K) with the same argmax. One block.
__global__ void accuracy_count_kernel(int64_t* correct, const float* scores, const float* targets, int64_t N,
                                      int64_t K) {
  const int64_t total = block_argmax_matches(scores, targets, N, K);
  if (threadIdx.x == 0) *correct = total;
}

// losses (N), probs (N,K) from logits (N,K), targets (N,K): one thread per row, k in order.
__global__ void sigmoid_xent_forward_kernel(float* losses, float* probs, const float* logits,
                                            const float* targets, int64_t N, int64_t K) {
  for (const int64_t n : device::grid_stride(N)) {
    float sum = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      const float z = logits[n * K + k], y = targets[n * K + k];
      sum += fmaxf(z, 0.0f) - z * y + log1pf(expf(-fabsf(z)));
      probs[n * K + k] = sigmoid(z);
    }
    losses[n] = sum / static_cast<float>(K);
  }
}

// dlogits (N,K) = dlosses_n * (p - y) / K
__global__ void sigmoid_xent_backward_kernel(float* dlogits, const float* dlosses, const float* probs,
                                             const float* targets, int64_t N, int64_t K) {
  for (const int64_t i : device::grid_stride(N * K)) {
    dlogits[i] = dlosses[i / K] * (probs[i] - targets[i]) / static_cast<float>(K);
  }
}

// correct (1) = elements with (p > 0.5) == (y > 0.5). One block.
__global__ void binary_accuracy_count_kernel(int64_t* correct, const float* probs, const float* targets,
                                             int64_t n) {
  const int64_t total = block_threshold_matches(probs, targets, n);
  if (threadIdx.x == 0) *correct = total;
}

// sums (kStepSums) += one step (kernels/softmax.h StepMetrics). One block; every thread
// reads the same halt state, so the block leaves or counts together.
__global__ void step_metrics_kernel(double* sums, const float* loss, const float* scores,
                                    const float* targets, int64_t N, int64_t K, bool binary, double weight) {
  const bool halted = sums[kStepFailed] != 0.0;
  const double value = static_cast<double>(loss[0]);
  const bool finite = isfinite(value);
  int64_t correct = 0;
  if (!halted && finite) {
    correct = binary ? block_threshold_matches(scores, targets, N * K)
                     : block_argmax_matches(scores, targets, N, K);
  }
  if (threadIdx.x != 0) return;
  sums[kStepCount] += 1.0;
  if (halted) return;
  if (!finite) {
    sums[kStepFailed] = sums[kStepCount];
    sums[kStepFailedLoss] = value;
    return;
  }
  sums[kStepLossSum] += value * weight;
  sums[kStepCorrect] += static_cast<double>(correct);
  sums[kStepSamples] += weight;
}

// The count of a kernel that writes it to device memory (count(device_count) launches it),
// copied to correct (host).
template <typename Count>
void count_to_host(int64_t* correct, cudaStream_t stream, const char* op, Count&& count) {
  int64_t* on_device = static_cast<int64_t*>(context_for_stream(stream, op).workspace(sizeof(int64_t)));
  count(on_device);
  CUDA_CHECK(cudaMemcpyAsync(correct, on_device, sizeof(int64_t), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace

void softmax_forward(const SoftmaxForward<float>& k, cudaStream_t stream) {
  if (k.N <= 0 || k.K <= 0) return;
  softmax_forward_kernel<<<row_blocks(k.N), kThreads, 0, stream>>>(k.probs, k.logits, k.N, k.K);
  HISVID_CHECK_LAUNCH();
}

void softmax_backward(const SoftmaxBackward<float>& k, cudaStream_t stream) {
  if (k.N <= 0 || k.K <= 0) return;
  softmax_backward_kernel<<<row_blocks(k.N), kThreads, 0, stream>>>(k.dlogits, k.dprobs, k.probs, k.N, k.K);
  HISVID_CHECK_LAUNCH();
}

void softmax_xent_forward(const SoftmaxXentForward<float>& k, cudaStream_t stream) {
  if (k.N <= 0 || k.K <= 0) return;
  softmax_xent_forward_kernel<<<row_blocks(k.N), kThreads, 0, stream>>>(k.losses, k.probs, k.logits,
                                                                        k.targets, k.N, k.K);
  HISVID_CHECK_LAUNCH();
}

void softmax_xent_backward(const SoftmaxXentBackward<float>& k, cudaStream_t stream) {
  if (k.N <= 0 || k.K <= 0) return;
  softmax_xent_backward_kernel<<<row_blocks(k.N), kThreads, 0, stream>>>(k.dlogits, k.dlosses, k.probs,
                                                                         k.targets, k.N, k.K);
  HISVID_CHECK_LAUNCH();
}

void accuracy_count(const AccuracyCount<float>& k, cudaStream_t stream) {
  if (k.N <= 0 || k.K <= 0) {
    *k.correct = 0;
    return;
  }
  count_to_host(k.correct, stream, "accuracy_count", [&](int64_t* count) {
    accuracy_count_kernel<<<1, kThreads, 0, stream>>>(count, k.scores, k.targets, k.N, k.K);
    HISVID_CHECK_LAUNCH();
  });
}

// losses (N), probs (N,K) from logits (N,K), targets (N,K)
void sigmoid_xent_forward(const SigmoidXentForward<float>& k, cudaStream_t stream) {
  if (k.N <= 0 || k.K <= 0) return;
  sigmoid_xent_forward_kernel<<<grid_blocks(k.N, kThreads), kThreads, 0, stream>>>(
      k.losses, k.probs, k.logits, k.targets, k.N, k.K);
  HISVID_CHECK_LAUNCH();
}

// dlogits (N,K) (=) dlosses_n * (p - y) / K
void sigmoid_xent_backward(const SigmoidXentBackward<float>& k, cudaStream_t stream) {
  if (k.N <= 0 || k.K <= 0) return;
  sigmoid_xent_backward_kernel<<<grid_blocks(k.N * k.K, kThreads), kThreads, 0, stream>>>(
      k.dlogits, k.dlosses, k.probs, k.targets, k.N, k.K);
  HISVID_CHECK_LAUNCH();
}

void binary_accuracy_count(const BinaryAccuracyCount<float>& k, cudaStream_t stream) {
  if (k.N <= 0 || k.K <= 0) {
    *k.correct = 0;
    return;
  }
  count_to_host(k.correct, stream, "binary_accuracy_count", [&](int64_t* count) {
    binary_accuracy_count_kernel<<<1, kThreads, 0, stream>>>(count, k.probs, k.targets, k.N * k.K);
    HISVID_CHECK_LAUNCH();
  });
}

void step_metrics(const StepMetrics<float>& k, cudaStream_t stream) {
  step_metrics_kernel<<<1, kThreads, 0, stream>>>(k.sums, k.loss, k.scores, k.targets, k.N, k.K, k.binary,
                                                  k.weight);
  HISVID_CHECK_LAUNCH();
}

}  // namespace hisvid::cuda
