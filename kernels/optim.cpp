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
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) adam_element(w[i], m[i], v[i], g[i], alpha, beta1, beta2, eps);
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
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) rmsprop_element(w[i], v[i], g[i], lr, rho, eps, form);
}

template <typename T>
void sgd_update(const SgdUpdate<T>& k) {
  if (halted(k.halt)) return;
  T* w = k.w;        // (n)
  const T* g = k.g;  // (n)
  const int64_t n = k.n;
  const T lr = k.scalar_at != nullptr ? *k.scalar_at : k.lr;
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) sgd_element(w[i], g[i], lr);
}

template <typename T>
void multi_tensor_update(const MultiTensorUpdate<T>& k) {
  for (int t = 0; t < k.count; ++t) {
    if (k.rule == UpdateRule::Adam) {
      AdamUpdate<T> one;
      one.w = k.w[t], one.m = k.m[t], one.v = k.v[t], one.g = k.g[t], one.n = k.n[t];
      one.alpha = k.scalar, one.beta1 = k.beta1, one.beta2 = k.beta2, one.eps = k.eps;
      one.halt = k.halt, one.scalar_at = k.scalar_at;
      adam_update(one);
    } else if (k.rule == UpdateRule::Rmsprop) {
      RmspropUpdate<T> one;
      one.w = k.w[t], one.v = k.v[t], one.g = k.g[t], one.n = k.n[t];
      one.lr = k.scalar, one.rho = k.rho, one.eps = k.eps, one.form = k.form;
      one.halt = k.halt, one.scalar_at = k.scalar_at;
      rmsprop_update(one);
    } else {
      SgdUpdate<T> one;
      one.w = k.w[t], one.g = k.g[t], one.n = k.n[t], one.lr = k.scalar;
      one.halt = k.halt, one.scalar_at = k.scalar_at;
      sgd_update(one);
    }
  }
}

template void adam_update<float>(const AdamUpdate<float>&);
template void adam_update<double>(const AdamUpdate<double>&);
template void rmsprop_update<float>(const RmspropUpdate<float>&);
template void rmsprop_update<double>(const RmspropUpdate<double>&);
template void sgd_update<float>(const SgdUpdate<float>&);
template void sgd_update<double>(const SgdUpdate<double>&);
template void multi_tensor_update<float>(const MultiTensorUpdate<float>&);
template void multi_tensor_update<double>(const MultiTensorUpdate<double>&);

}  // namespace hisvid::naive
