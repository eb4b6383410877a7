// CUDA versions of kernels/optim.h: one fused pass over the parameters, the formulas written
// in the same order as the header (and the CPU). The step-dependent Adam scalar alpha is an
// argument, so a captured graph can be replayed with it updated.
#include "kernels/cuda_context.h"
#include "kernels/optim.h"

namespace hisvid::cuda {

namespace {

// w, m, v, g (n)
__global__ void adam_kernel(float* w, float* m, float* v, const float* g, int64_t n, float alpha, float beta1,
                            float beta2, float eps) {
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
                               RmspropEpsilon form) {
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
__global__ void sgd_kernel(float* w, const float* g, int64_t n, float lr) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    w[i] -= lr * g[i];
  }
}

}  // namespace

void adam_update(const AdamUpdate<float>& k, cudaStream_t stream) {
  if (k.n <= 0) return;
  adam_kernel<<<grid_blocks(k.n, kThreads), kThreads, 0, stream>>>(k.w, k.m, k.v, k.g, k.n, k.alpha, k.beta1,
                                                                   k.beta2, k.eps);
  HISVID_CHECK_LAUNCH();
}

void rmsprop_update(const RmspropUpdate<float>& k, cudaStream_t stream) {
  if (k.n <= 0) return;
  rmsprop_kernel<<<grid_blocks(k.n, kThreads), kThreads, 0, stream>>>(k.w, k.v, k.g, k.n, k.lr, k.rho, k.eps,
                                                                      k.form);
  HISVID_CHECK_LAUNCH();
}

void sgd_update(const SgdUpdate<float>& k, cudaStream_t stream) {
  if (k.n <= 0) return;
  sgd_kernel<<<grid_blocks(k.n, kThreads), kThreads, 0, stream>>>(k.w, k.g, k.n, k.lr);
  HISVID_CHECK_LAUNCH();
}

}  // namespace hisvid::cuda
