// kernels/clips.cu — clips_to_batch on CUDA (see kernels/clips.h): one thread per value for
// the scaling, flip and brightness; one block per clip for the contrast's mean (a double sum in
// a fixed order: the same bits every run); one thread per value again for the contrast, the
// noise and the clipping.
#include "kernels/clips.h"
#include "kernels/cuda_context.h"
#include "kernels/philox.h"

namespace hisvid::cuda {

namespace {

constexpr int kMeanThreads = 256;

__global__ void scale_kernel(ClipsToBatch<float> args) {
  const ClipsToBatch<float> k = args.with_base();
  const int64_t total = k.B * k.E, row = k.W * k.C;
  for (const int64_t i : device::grid_stride(total)) {
    const int64_t b = i / k.E, e = i % k.E;
    const uint64_t slot = 4 * static_cast<uint64_t>(b);
    const bool flip = k.flip && philox_uniform(k.choice_seed, k.choice_offset, slot) < 0.5f;
    const int64_t r = e / row, w = (e % row) / k.C, c = e % k.C;
    float v = static_cast<float>(k.inp[b * k.E + r * row + (flip ? k.W - 1 - w : w) * k.C + c]) / 255.0f;
    if (k.brightness > 0) {
      const double u = philox_uniform(k.choice_seed, k.choice_offset, slot + 1);
      v += static_cast<float>(k.brightness * (2.0 * u - 1.0));
    }
    k.out[i] = v;
  }
}

// mean[b] = the mean of out's clip b, summed in double. Grid: B blocks.
__global__ void __launch_bounds__(kMeanThreads) mean_kernel(float* mean, const float* out, int64_t E) {
  const float* x = out + int64_t(blockIdx.x) * E;
  double s = 0.0;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) s += x[e];
  s = device::block_sum(s);
  if (threadIdx.x == 0) mean[blockIdx.x] = static_cast<float>(s / static_cast<double>(E));
}

__global__ void finish_kernel(ClipsToBatch<float> args, const float* mean) {
  const ClipsToBatch<float> k = args.with_base();
  const int64_t total = k.B * k.E;
  for (const int64_t i : device::grid_stride(total)) {
    const int64_t b = i / k.E;
    float v = k.out[i];
    if (k.contrast > 0) {
      const double u = philox_uniform(k.choice_seed, k.choice_offset, 4 * static_cast<uint64_t>(b) + 2);
      const float factor = static_cast<float>(1.0 + k.contrast * (2.0 * u - 1.0));
      v = (v - mean[b]) * factor + mean[b];
    }
    if (k.noise > 0)
      v += static_cast<float>(k.noise) * philox_normal(k.noise_seed, k.noise_offset, uint64_t(i));
    k.out[i] = fminf(fmaxf(v, 0.0f), 1.0f);
  }
}

}  // namespace

void clips_to_batch(const ClipsToBatch<float>& k, cudaStream_t stream) {
  const int64_t total = k.B * k.E;
  if (total == 0) return;
  scale_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(k);
  HISVID_CHECK_LAUNCH();
  if (!k.any()) return;
  float* mean = nullptr;
  if (k.contrast > 0) {
    Context& ctx = context_for_stream(stream, "clips_to_batch");
    mean = static_cast<float*>(ctx.workspace(sizeof(float) * size_t(k.B)));
    mean_kernel<<<static_cast<unsigned int>(k.B), kMeanThreads, 0, stream>>>(mean, k.out, k.E);
    HISVID_CHECK_LAUNCH();
  }
  finish_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(k, mean);
  HISVID_CHECK_LAUNCH();
}

}  // namespace hisvid::cuda
