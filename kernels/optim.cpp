// kernels/optim.cpp — the naive rows of kernels/optim.h: Adam, RMSprop and SGD updates in
// place, in T precision, with the operations in TensorFlow / Keras order.
#include "kernels/optim.h"

#include <cmath>

namespace hisvid::naive {

namespace {

// Below this many parameters the loops run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

bool halted(const double* halt) { return halt != nullptr && *halt != 0.0; }

}  // namespace

// TensorFlow's ApplyAdam: m += (g - m) * (1 - beta1); v += (g*g - v) * (1 - beta2);
// w -= (m * alpha) / (sqrt(v) + eps).
template <typename T>
void adam_update(const AdamUpdate<T>& k) {
  if (halted(k.halt)) return;
  T *w = k.w, *m = k.m, *v = k.v;  // (n) each
  const T* g = k.g;                // (n)
  const int64_t n = k.n;
  const T alpha = k.scalar_at != nullptr ? *k.scalar_at : k.alpha, beta1 = k.beta1, beta2 = k.beta2,
          eps = k.eps;
  const T one_minus_beta1 = T(1) - beta1, one_minus_beta2 = T(1) - beta2;
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    m[i] += (g[i] - m[i]) * one_minus_beta1;
    v[i] += (g[i] * g[i] - v[i]) * one_minus_beta2;
    w[i] -= (m[i] * alpha) / (std::sqrt(v[i]) + eps);
  }
}

// Keras RMSprop without momentum: v = rho*v + (1-rho)*g*g, then
//   OutsideSqrt (Keras <= 2.10):  w = w - (lr * g) / (sqrt(v) + eps)
//   InsideSqrt  (Keras >= 2.11):  w = w - lr * (g * (1 / sqrt(v + eps)))
template <typename T>
void rmsprop_update(const RmspropUpdate<T>& k) {
  if (halted(k.halt)) return;
  T *w = k.w, *v = k.v;  // (n) each
  const T* g = k.g;      // (n)
  const int64_t n = k.n;
  const T lr = k.scalar_at != nullptr ? *k.scalar_at : k.lr, rho = k.rho, eps = k.eps;
  const RmspropEpsilon form = k.form;
  const T one_minus_rho = T(1) - rho;
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    v[i] = rho * v[i] + one_minus_rho * g[i] * g[i];
    if (form == RmspropEpsilon::OutsideSqrt) {
      w[i] = w[i] - (lr * g[i]) / (std::sqrt(v[i]) + eps);
    } else {
      w[i] = w[i] - lr * (g[i] * (T(1) / std::sqrt(v[i] + eps)));
    }
  }
}

template <typename T>
void sgd_update(const SgdUpdate<T>& k) {
  if (halted(k.halt)) return;
  T* w = k.w;        // (n)
  const T* g = k.g;  // (n)
  const int64_t n = k.n;
  const T lr = k.scalar_at != nullptr ? *k.scalar_at : k.lr;
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) w[i] -= lr * g[i];
}

template void adam_update<float>(const AdamUpdate<float>&);
template void adam_update<double>(const AdamUpdate<double>&);
template void rmsprop_update<float>(const RmspropUpdate<float>&);
template void rmsprop_update<double>(const RmspropUpdate<double>&);
template void sgd_update<float>(const SgdUpdate<float>&);
template void sgd_update<double>(const SgdUpdate<double>&);

}  // namespace hisvid::naive
