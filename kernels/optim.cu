// CUDA versions of kernels/optim.h: one fused pass over the parameters, the formulas written
// in the same order as the header (and the CPU). The step scalar is an argument, or read from
// device memory (scalar_at) by a step captured into a graph.
#include "kernels/cuda_context.h"
#include "kernels/optim.h"

namespace hisvid::cuda {

namespace {

__device__ __forceinline__ bool halted(const double* halt) { return halt != nullptr && *halt != 0.0; }

// w, m, v, g (n)
__global__ void adam_kernel(float* w, float* m, float* v, const float* g, int64_t n, float alpha, float beta1,
                            float beta2, float eps, const double* halt, const float* alpha_at) {
  if (halted(halt)) return;
  if (alpha_at != nullptr) alpha = *alpha_at;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float mi = m[i] + (gi - m[i]) * (1.0f - beta1);
    const float vi = v[i] + (gi * gi - v[i]) * (1.0f - beta2);
    m[i] = mi;
    v[i] = vi;
    w[i] -= (mi * alpha) / (sqrtf(vi) + eps);
  }
}

// w, v, g (n)
__global__ void rmsprop_kernel(float* w, float* v, const float* g, int64_t n, float lr, float rho, float eps,
                               RmspropEpsilon form, const double* halt, const float* lr_at) {
  if (halted(halt)) return;
  if (lr_at != nullptr) lr = *lr_at;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float vi = rho * v[i] + (1.0f - rho) * gi * gi;
    v[i] = vi;
    if (form == RmspropEpsilon::OutsideSqrt) {
      w[i] = w[i] - (lr * gi) / (sqrtf(vi) + eps);
    } else {
      w[i] = w[i] - lr * (gi * (1.0f / sqrtf(vi + eps)));
    }
  }
}

// w, g (n)
__global__ void sgd_kernel(float* w, const float* g, int64_t n, float lr, const double* halt,
                           const float* lr_at) {
  if (halted(halt)) return;
  if (lr_at != nullptr) lr = *lr_at;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    w[i] -= lr * g[i];
  }
}

}  // namespace

void adam_update(const AdamUpdate<float>& k, cudaStream_t stream) {
  if (k.n <= 0) return;
  adam_kernel<<<grid_blocks(k.n, kThreads), kThreads, 0, stream>>>(k.w, k.m, k.v, k.g, k.n, k.alpha, k.beta1,
                                                                   k.beta2, k.eps, k.halt, k.scalar_at);
  HISVID_CHECK_LAUNCH();
}

void rmsprop_update(const RmspropUpdate<float>& k, cudaStream_t stream) {
  if (k.n <= 0) return;
  rmsprop_kernel<<<grid_blocks(k.n, kThreads), kThreads, 0, stream>>>(k.w, k.v, k.g, k.n, k.lr, k.rho, k.eps,
                                                                      k.form, k.halt, k.scalar_at);
  HISVID_CHECK_LAUNCH();
}

void sgd_update(const SgdUpdate<float>& k, cudaStream_t stream) {
  if (k.n <= 0) return;
  sgd_kernel<<<grid_blocks(k.n, kThreads), kThreads, 0, stream>>>(k.w, k.g, k.n, k.lr, k.halt, k.scalar_at);
  HISVID_CHECK_LAUNCH();
}

}  // namespace hisvid::cuda
