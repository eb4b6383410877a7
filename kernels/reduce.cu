// CUDA versions of kernels/reduce.h. sum_all accumulates in double like the CPU, in two
// deterministic passes (per-block partials, then one block adds them in order), so the result
// depends only on n. copy_block is a grid-stride copy over the (outer, len, inner) block.
#include "kernels/cuda_context.h"
#include "kernels/reduce.h"

namespace hisvid::cuda {

namespace {

constexpr int kMaxSumBlocks = 1024;

// partials (gridDim.x) = sums of inp (n) over each block's grid-stride share
__global__ void sum_partial_kernel(double* partials, const float* inp, int64_t n) {
  double acc = 0.0;
  for (const int64_t i : device::grid_stride(n)) {
    acc += inp[i];
  }
  const double total = device::block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// out (1) = sum of partials (count); one block
__global__ void sum_finalize_kernel(float* out, const double* partials, int count) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  const double total = device::block_sum(acc);
  if (threadIdx.x == 0) out[0] = static_cast<float>(total);
}

// dst (outer, dst_dim, inner)[:, dst_start : dst_start + len, :] (= or +=)
// src (outer, src_dim, inner)[:, src_start : src_start + len, :], or [:, src_start, :] repeated
__global__ void copy_block_kernel(float* dst, int64_t dst_dim, int64_t dst_start, const float* src,
                                  int64_t src_dim, int64_t src_start, int64_t outer, int64_t len,
                                  int64_t inner, bool accumulate, bool repeat) {
  const int64_t block = len * inner, total = outer * block;
  for (const int64_t i : device::grid_stride(total)) {
    const int64_t o = i / block, r = i - o * block;  // r = l * inner + k
    float* d = dst + (o * dst_dim + dst_start) * inner + r;
    const float v = src[(o * src_dim + src_start) * inner + (repeat ? r % inner : r)];
    *d = accumulate ? *d + v : v;
  }
}

}  // namespace

// out (1) = sum of inp (n)
void sum_all(const SumAll<float>& k, cudaStream_t stream) {
  const int64_t n = k.n;
  Context& ctx = context_for_stream(stream, "sum_all");
  int64_t blocks = (n + int64_t(kThreads) * 8 - 1) / (int64_t(kThreads) * 8);
  if (blocks < 1) blocks = 1;
  if (blocks > kMaxSumBlocks) blocks = kMaxSumBlocks;
  double* partials = static_cast<double*>(ctx.workspace(sizeof(double) * size_t(blocks)));
  sum_partial_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(partials, k.inp, n);
  HISVID_CHECK_LAUNCH();
  sum_finalize_kernel<<<1, kThreads, 0, stream>>>(k.out, partials, static_cast<int>(blocks));
  HISVID_CHECK_LAUNCH();
}

void copy_block(const CopyBlock<float>& k, cudaStream_t stream) {
  const int64_t total = k.outer * k.len * k.inner;
  if (total <= 0) return;
  copy_block_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(
      k.dst, k.dst_dim, k.dst_start, k.src, k.src_dim, k.src_start, k.outer, k.len, k.inner, k.accumulate,
      k.repeat);
  HISVID_CHECK_LAUNCH();
}

}  // namespace hisvid::cuda
