// CUDA versions of kernels/batchnorm.h. The per-channel statistics are deterministic
// two-pass column reductions in double (device::column_partial_sums, kernels/cuda_context.h):
// M reaches N*T*H*W ~ 80*64*64 rows here, where float sums would drift and atomics would make
// every run differ in the last bits. The batch variance is E[x^2] - mean^2 in double, exact
// to ~1e-16 relative unless |mean| / std exceeds ~1e6.
#include <algorithm>

#include "kernels/batchnorm.h"
#include "kernels/cuda_context.h"

namespace hisvid::cuda {

namespace {

// x and x^2 of inp (M,C), for the batch statistics.
struct LoadMoments {
  const float* inp;  // (M,C)
  int64_t C;
  __device__ void operator()(int64_t m, int64_t c, double* values) const {
    const double x = inp[m * C + c];
    values[0] = x;
    values[1] = x * x;
  }
};

// dout and dout * xhat, for the gradients of beta and gamma.
struct LoadGradMoments {
  const float* dout;    // (M,C)
  const float* inp;     // (M,C)
  const float* mean;    // (C)
  const float* invstd;  // (C)
  int64_t C;
  __device__ void operator()(int64_t m, int64_t c, double* values) const {
    const double dy = dout[m * C + c];
    const double xhat = (double(inp[m * C + c]) - mean[c]) * invstd[c];
    values[0] = dy;
    values[1] = dy * xhat;
  }
};

// partials (row_blocks, 2, C)
__global__ void moments_partial_kernel(double* partials, const float* inp, int64_t M, int64_t C) {
  device::column_partial_sums<2>(partials, M, C, LoadMoments{inp, C});
}

// mean (C), var (C, biased), invstd (C) from partials (row_blocks, 2, C)
__global__ void moments_finalize_kernel(float* mean, float* var, float* invstd, const double* partials,
                                        int row_blocks, int64_t M, int64_t C, float eps) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double sums[2];
  device::column_total<2>(sums, partials, row_blocks, C, c);
  const double mu = sums[0] / double(M);
  const double sigma2 = fmax(sums[1] / double(M) - mu * mu, 0.0);
  mean[c] = static_cast<float>(mu);
  var[c] = static_cast<float>(sigma2);
  invstd[c] = static_cast<float>(1.0 / sqrt(sigma2 + double(eps)));
}

// out (M,C) = gamma (C) * (inp (M,C) - mean (C)) * invstd (C) + beta (C)
__global__ void normalize_kernel(float* out, const float* inp, const float* gamma, const float* beta,
                                 const float* mean, const float* invstd, int64_t M, int64_t C) {
  const int64_t total = M * C;
  for (const int64_t i : device::grid_stride(total)) {
    const int64_t c = i % C;
    out[i] = gamma[c] * (inp[i] - mean[c]) * invstd[c] + beta[c];
  }
}

// out (M,C) with moving_mean (C), moving_var (C)
__global__ void normalize_infer_kernel(float* out, const float* inp, const float* gamma, const float* beta,
                                       const float* moving_mean, const float* moving_var, int64_t M,
                                       int64_t C, float eps) {
  const int64_t total = M * C;
  for (const int64_t i : device::grid_stride(total)) {
    const int64_t c = i % C;
    const float invstd = 1.0f / sqrtf(moving_var[c] + eps);
    out[i] = gamma[c] * (inp[i] - moving_mean[c]) * invstd + beta[c];
  }
}

// partials (row_blocks, 2, C)
__global__ void grad_moments_partial_kernel(double* partials, const float* dout, const float* inp,
                                            const float* mean, const float* invstd, int64_t M, int64_t C) {
  device::column_partial_sums<2>(partials, M, C, LoadGradMoments{dout, inp, mean, invstd, C});
}

// dbeta (C) += sum dout, dgamma (C) += sum dout * xhat; coef (2,C) = those sums / M
__global__ void grad_moments_finalize_kernel(float* dgamma, float* dbeta, double* coef,
                                             const double* partials, int row_blocks, int64_t M, int64_t C) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double sums[2];
  device::column_total<2>(sums, partials, row_blocks, C, c);
  dbeta[c] += static_cast<float>(sums[0]);
  dgamma[c] += static_cast<float>(sums[1]);
  coef[c] = sums[0] / double(M);
  coef[C + c] = sums[1] / double(M);
}

// dinp (M,C) = gamma * invstd * (dout - mean(dout) - xhat * mean(dout * xhat)), in double as
// the CPU reference: for small M the bracket cancels to ~eps/(var+eps) of its terms (M = 2:
// about 1e-3), and float there would leave ~1e-4 relative error in every element.
__global__ void batchnorm_dinp_kernel(float* dinp, const float* dout, const float* inp, const float* mean,
                                      const float* invstd, const float* gamma, const double* coef, int64_t M,
                                      int64_t C) {
  const int64_t total = M * C;
  for (const int64_t i : device::grid_stride(total)) {
    const int64_t c = i % C;
    const double xhat = (double(inp[i]) - double(mean[c])) * double(invstd[c]);
    dinp[i] = static_cast<float>(double(gamma[c]) * double(invstd[c]) *
                                 (double(dout[i]) - coef[c] - xhat * coef[C + c]));
  }
}

// moving_mean (C), moving_var (C) from mean (C), var (C, biased)
__global__ void update_moving_kernel(BatchnormUpdateMoving<float> k) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= k.C) return;
  k.moving_mean[c] = moving_average(k.moving_mean[c], k.mean[c], 1.0f, k.update, k.momentum, k.decay);
  k.moving_var[c] =
      moving_average(k.moving_var[c], k.var[c], k.variance_factor, k.update, k.momentum, k.decay);
}

}  // namespace

void batchnorm_forward_train(const BatchnormForwardTrain<float>& k, cudaStream_t stream) {
  float *out = k.out, *mean = k.mean, *var = k.var, *invstd = k.invstd;
  const float *inp = k.inp, *gamma = k.gamma, *beta = k.beta;
  const int64_t M = k.M, C = k.C;
  const float eps = k.eps;
  if (M <= 0 || C <= 0) return;
  Context& ctx = context_for_stream(stream, "batchnorm_forward_train");
  const device::ColumnTiling tiling = device::column_tiling(M, C);
  double* partials =
      static_cast<double*>(ctx.workspace(sizeof(double) * 2 * size_t(tiling.row_blocks) * size_t(C)));
  moments_partial_kernel<<<tiling.grid, tiling.block, 0, stream>>>(partials, inp, M, C);
  HISVID_CHECK_LAUNCH();
  moments_finalize_kernel<<<grid_blocks(C, kThreads), kThreads, 0, stream>>>(mean, var, invstd, partials,
                                                                             tiling.row_blocks, M, C, eps);
  HISVID_CHECK_LAUNCH();
  normalize_kernel<<<grid_blocks(M * C, kThreads), kThreads, 0, stream>>>(out, inp, gamma, beta, mean, invstd,
                                                                          M, C);
  HISVID_CHECK_LAUNCH();
}

void batchnorm_forward_infer(const BatchnormForwardInfer<float>& k, cudaStream_t stream) {
  if (k.M <= 0 || k.C <= 0) return;
  normalize_infer_kernel<<<grid_blocks(k.M * k.C, kThreads), kThreads, 0, stream>>>(
      k.out, k.inp, k.gamma, k.beta, k.moving_mean, k.moving_var, k.M, k.C, k.eps);
  HISVID_CHECK_LAUNCH();
}

void batchnorm_backward(const BatchnormBackward<float>& k, cudaStream_t stream) {
  float *dinp = k.dinp, *dgamma = k.dgamma, *dbeta = k.dbeta;
  const float *dout = k.dout, *inp = k.inp, *mean = k.mean, *invstd = k.invstd, *gamma = k.gamma;
  const int64_t M = k.M, C = k.C;
  if (M <= 0 || C <= 0) return;
  Context& ctx = context_for_stream(stream, "batchnorm_backward");
  const device::ColumnTiling tiling = device::column_tiling(M, C);
  const size_t partial_bytes = (sizeof(double) * 2 * size_t(tiling.row_blocks) * size_t(C) + 255) / 256 * 256;
  char* ws = static_cast<char*>(ctx.workspace(partial_bytes + sizeof(double) * 2 * size_t(C)));
  double* partials = reinterpret_cast<double*>(ws);              // (row_blocks, 2, C)
  double* coef = reinterpret_cast<double*>(ws + partial_bytes);  // (2, C)
  grad_moments_partial_kernel<<<tiling.grid, tiling.block, 0, stream>>>(partials, dout, inp, mean, invstd, M,
                                                                        C);
  HISVID_CHECK_LAUNCH();
  grad_moments_finalize_kernel<<<grid_blocks(C, kThreads), kThreads, 0, stream>>>(
      dgamma, dbeta, coef, partials, tiling.row_blocks, M, C);
  HISVID_CHECK_LAUNCH();
  batchnorm_dinp_kernel<<<grid_blocks(M * C, kThreads), kThreads, 0, stream>>>(dinp, dout, inp, mean, invstd,
                                                                               gamma, coef, M, C);
  HISVID_CHECK_LAUNCH();
}

void batchnorm_update_moving(const BatchnormUpdateMoving<float>& k, cudaStream_t stream) {
  if (k.C <= 0) return;
  update_moving_kernel<<<grid_blocks(k.C, kThreads), kThreads, 0, stream>>>(k);
  HISVID_CHECK_LAUNCH();
}

}  // namespace hisvid::cuda
