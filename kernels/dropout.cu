// CUDA versions of kernels/dropout.h. Each thread draws its element's Philox uniform exactly
// as the CPU does (philox_uniform(seed, offset, i), kernels/philox.h), so the kept elements
// are the same bits on both backends; the mask is regenerated, never stored.
#include "kernels/cuda_context.h"
#include "kernels/dropout.h"
#include "kernels/philox.h"

namespace hisvid::cuda {

namespace {

// out (n) = inp (n) * mask; used for forward (inp) and backward (dout). inp == nullptr
// writes the mask itself.
__global__ void dropout_kernel(float* out, const float* inp, int64_t n, float rate, float keep_scale,
                               uint64_t seed, uint64_t offset, const int64_t* base) {
  offset = based_offset(offset, base);
  for (const int64_t i : device::grid_stride(n)) {
    out[i] = dropout_element(inp != nullptr ? inp[i] : 1.0f,
                             philox_uniform(seed, offset, static_cast<uint64_t>(i)), rate, keep_scale);
  }
}

// out (N,S,C) = inp (N,S,C) * mask(n, c), mask(n, c) = the draw of element n*C + c.
__global__ void spatial_dropout_kernel(float* out, const float* inp, int64_t N, int64_t S, int64_t C,
                                       float rate, float keep_scale, uint64_t seed, uint64_t offset,
                                       const int64_t* base) {
  offset = based_offset(offset, base);
  for (const int64_t i : device::grid_stride(N * S * C)) {
    const int64_t c = i % C, n = i / (S * C);
    out[i] = dropout_element(inp[i], philox_uniform(seed, offset, static_cast<uint64_t>(n * C + c)), rate,
                             keep_scale);
  }
}

void launch_spatial(float* out, const float* inp, int64_t N, int64_t S, int64_t C, float rate, uint64_t seed,
                    uint64_t offset, const int64_t* base, cudaStream_t stream) {
  const int64_t n = N * S * C;
  if (n <= 0) return;
  if (rate == 0.0f) {
    CUDA_CHECK(
        cudaMemcpyAsync(out, inp, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  const float keep_scale = dropout_scale<float>(rate);
  spatial_dropout_kernel<<<grid_blocks(n, kThreads), kThreads, 0, stream>>>(out, inp, N, S, C, rate,
                                                                            keep_scale, seed, offset, base);
  HISVID_CHECK_LAUNCH();
}

void launch(float* out, const float* inp, int64_t n, float rate, uint64_t seed, uint64_t offset,
            const int64_t* base, cudaStream_t stream) {
  if (n <= 0) return;
  const float keep_scale = dropout_scale<float>(rate);
  dropout_kernel<<<grid_blocks(n, kThreads), kThreads, 0, stream>>>(out, inp, n, rate, keep_scale, seed,
                                                                    offset, base);
  HISVID_CHECK_LAUNCH();
}

}  // namespace

void dropout_forward(const DropoutForward<float>& k, cudaStream_t stream) {
  launch(k.out, k.inp, k.n, k.rate, k.seed, k.offset, k.offset_base, stream);
}

void dropout_backward(const DropoutBackward<float>& k, cudaStream_t stream) {
  launch(k.dinp, k.dout, k.n, k.rate, k.seed, k.offset, k.offset_base, stream);
}

void dropout_mask(const DropoutMask<float>& k, cudaStream_t stream) {
  launch(k.mask, nullptr, k.n, k.rate, k.seed, k.offset, k.offset_base, stream);
}

void spatial_dropout_forward(const SpatialDropoutForward<float>& k, cudaStream_t stream) {
  launch_spatial(k.out, k.inp, k.N, k.S, k.C, k.rate, k.seed, k.offset, k.offset_base, stream);
}

void spatial_dropout_backward(const SpatialDropoutBackward<float>& k, cudaStream_t stream) {
  launch_spatial(k.dinp, k.dout, k.N, k.S, k.C, k.rate, k.seed, k.offset, k.offset_base, stream);
}

}  // namespace hisvid::cuda
