// bench/roofline.cu — the current CUDA device's measured roofline (bench/roofline.h).
#include <string>

#include "bench/roofline.h"
#include "kernels/cuda_context.h"

namespace hisvid::bench {

namespace {

constexpr int kChains = 8;       // independent fmaf chains per thread
constexpr int kSteps = 1 << 15;  // FMAs per chain: a few ms a run, long enough for boost clocks
constexpr int kCopies = 16;      // copies per timed run (each about 0.2 ms on an H100)
constexpr int kThreads = 256;    // per block
constexpr int kBlocksPerSm = 8;  // 2048 threads: a multiprocessor's most
constexpr size_t kCopyBytes = size_t(256) << 20;

// out: (blocks * kThreads,) one sum per thread, so that no chain is dropped.
__global__ void __launch_bounds__(kThreads) fma_chains_kernel(float* out, float a, float b) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float acc[kChains];
#pragma unroll
  for (int j = 0; j < kChains; ++j) acc[j] = 1.0f + 1e-3f * static_cast<float>(i + j);
#pragma unroll 16  // the loop's own counter and branch would otherwise take FMA issue slots
  for (int s = 0; s < kSteps; ++s) {
#pragma unroll
    for (int j = 0; j < kChains; ++j) acc[j] = fmaf(acc[j], a, b);
  }
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kChains; ++j) sum += acc[j];
  out[i] = sum;
}

// dst, src: (n,) float4.
__global__ void copy_kernel(float4* dst, const float4* src, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

}  // namespace

Roofline measure_cuda_roofline() {
  int device = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  int l2 = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  Roofline r;
  r.cache_bytes = l2;
  try {
    const int blocks = sms * kBlocksPerSm;
    cuda::DeviceBuffer sums(sizeof(float) * size_t(blocks) * kThreads);
    const float ms_fma = cuda::fastest_ms(
        [&] {
          fma_chains_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<float*>(sums.get()), 0.999999f,
                                                             1e-7f);
          CUDA_CHECK(cudaGetLastError());  // not HISVID_CHECK_LAUNCH: a debug build's synchronising
                                           // after each launch would be timed with it
        },
        stream);
    r.gflops = 2.0 * kChains * kSteps * double(blocks) * kThreads / (ms_fma * 1e-3) * 1e-9;

    cuda::DeviceBuffer from(kCopyBytes), to(kCopyBytes);
    CUDA_CHECK(cudaMemsetAsync(from.get(), 0, kCopyBytes, stream));
    const size_t n = kCopyBytes / sizeof(float4);
    const float ms_copy = cuda::fastest_ms(
        [&] {
          for (int copy = 0; copy < kCopies; ++copy) {
            copy_kernel<<<sms * 4, 512, 0, stream>>>(static_cast<float4*>(to.get()),
                                                     static_cast<const float4*>(from.get()), n);
            CUDA_CHECK(cudaGetLastError());
          }
        },
        stream);
    r.gbs = 2.0 * double(kCopyBytes) * kCopies / (ms_copy * 1e-3) * 1e-9;
  } catch (...) {
    cudaStreamDestroy(stream);
    throw;
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
  r.basis = std::to_string(sms) + " multiprocessors; fmaf chains, " +
            std::to_string(kBlocksPerSm * kThreads) + " threads each; float4 copy of 256 MiB; best of " +
            std::to_string(cuda::kTimedRuns);
  return r;
}

}  // namespace hisvid::bench
