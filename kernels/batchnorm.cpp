// kernels/batchnorm.cpp — the naive rows of kernels/batchnorm.h: Keras BatchNormalization
// over the channel axis of an (M,C) view. Dimension letters as in kernels/common.h.
// Per-channel sums accumulate in double, for float inputs too.
#include "kernels/batchnorm.h"

#include <cmath>
#include <vector>

namespace hisvid::naive {

namespace {

// Below this many elements the loops run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

}  // namespace

template <typename T>
void batchnorm_forward_train(const BatchnormForwardTrain<T>& k) {
  T* out = k.out;                                          // (M,C)
  T* mean = k.mean;                                        // (C) batch mean
  T* var = k.var;                                          // (C) biased batch variance
  T* invstd = k.invstd;                                    // (C) 1 / sqrt(var + eps)
  const T *inp = k.inp, *gamma = k.gamma, *beta = k.beta;  // (M,C), (C), (C)
  const int64_t M = k.M, C = k.C;
  const float eps = k.eps;
  std::vector<double> sum(static_cast<size_t>(C), 0.0), sq(static_cast<size_t>(C), 0.0);
  double* s = sum.data();
  double* q = sq.data();
#pragma omp parallel for reduction(+ : s[:C]) if (M * C > kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = 0; c < C; ++c) s[c] += inp[m * C + c];
  }
  for (int64_t c = 0; c < C; ++c) s[c] /= static_cast<double>(M);  // s now holds the mean
    // Second pass over the centred values: no cancellation as in E[x^2] - E[x]^2.
#pragma omp parallel for reduction(+ : q[:C]) if (M * C > kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = 0; c < C; ++c) {
      const double d = inp[m * C + c] - s[c];
      q[c] += d * d;
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    const double v = q[c] / static_cast<double>(M);
    mean[c] = static_cast<T>(s[c]);
    var[c] = static_cast<T>(v);
    invstd[c] = static_cast<T>(1.0 / std::sqrt(v + static_cast<double>(eps)));
  }
#pragma omp parallel for if (M * C > kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = 0; c < C; ++c) {
      out[m * C + c] = gamma[c] * (inp[m * C + c] - mean[c]) * invstd[c] + beta[c];
    }
  }
}

template <typename T>
void batchnorm_forward_infer(const BatchnormForwardInfer<T>& k) {
  T* out = k.out;                                                    // (M,C)
  const T *inp = k.inp, *gamma = k.gamma, *beta = k.beta;            // (M,C), (C), (C)
  const T *moving_mean = k.moving_mean, *moving_var = k.moving_var;  // (C), (C)
  const int64_t M = k.M, C = k.C;
  const float eps = k.eps;
  std::vector<T> inv(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) inv[c] = T(1) / std::sqrt(moving_var[c] + T(eps));
#pragma omp parallel for if (M * C > kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = 0; c < C; ++c) {
      out[m * C + c] = gamma[c] * (inp[m * C + c] - moving_mean[c]) * inv[c] + beta[c];
    }
  }
}

// With xhat = (x - mean) * invstd and dy = dout:
//   dbeta += sum(dy),  dgamma += sum(dy * xhat)
//   dx = gamma * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))
template <typename T>
void batchnorm_backward(const BatchnormBackward<T>& args) {
  T *dinp = args.dinp, *dgamma = args.dgamma, *dbeta = args.dbeta;        // (M,C), (C), (C)
  const T *dout = args.dout, *inp = args.inp;                             // (M,C), (M,C)
  const T *mean = args.mean, *invstd = args.invstd, *gamma = args.gamma;  // (C) each
  const int64_t M = args.M, C = args.C;
  std::vector<double> sum_dy(static_cast<size_t>(C), 0.0), sum_dy_xhat(static_cast<size_t>(C), 0.0);
  double* sd = sum_dy.data();
  double* sdx = sum_dy_xhat.data();
#pragma omp parallel for reduction(+ : sd[:C], sdx[:C]) if (M * C > kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = 0; c < C; ++c) {
      const double dy = dout[m * C + c];
      const double xhat = (static_cast<double>(inp[m * C + c]) - mean[c]) * invstd[c];
      sd[c] += dy;
      sdx[c] += dy * xhat;
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    dbeta[c] += static_cast<T>(sd[c]);
    dgamma[c] += static_cast<T>(sdx[c]);
  }
  const double inv_m = 1.0 / static_cast<double>(M);
#pragma omp parallel for if (M * C > kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = 0; c < C; ++c) {
      const double xhat = (static_cast<double>(inp[m * C + c]) - mean[c]) * invstd[c];
      const double k = static_cast<double>(gamma[c]) * invstd[c] * inv_m;
      dinp[m * C + c] =
          static_cast<T>(k * (static_cast<double>(M) * dout[m * C + c] - sd[c] - xhat * sdx[c]));
    }
  }
}

template <typename T>
void batchnorm_update_moving(const BatchnormUpdateMoving<T>& k) {
  T *moving_mean = k.moving_mean, *moving_var = k.moving_var;  // (C), (C)
  const T *mean = k.mean, *var = k.var;                        // (C), (C) biased
  const int64_t C = k.C;
  const T momentum = T(k.momentum), decay = T(k.decay), factor = T(k.variance_factor);
  for (int64_t c = 0; c < C; ++c) {
    moving_mean[c] = moving_average(moving_mean[c], mean[c], T(1), k.update, momentum, decay);
    moving_var[c] = moving_average(moving_var[c], var[c], factor, k.update, momentum, decay);
  }
}

#define HISVID_INSTANTIATE(T)                                                \
  template void batchnorm_forward_train<T>(const BatchnormForwardTrain<T>&); \
  template void batchnorm_forward_infer<T>(const BatchnormForwardInfer<T>&); \
  template void batchnorm_backward<T>(const BatchnormBackward<T>&);          \
  template void batchnorm_update_moving<T>(const BatchnormUpdateMoving<T>&);
HISVID_INSTANTIATE(float)
HISVID_INSTANTIATE(double)
#undef HISVID_INSTANTIATE

}  // namespace hisvid::naive
