// kernels/elementwise.cpp — the naive rows of kernels/elementwise.h: fills, arithmetic,
// bias-add and the elementwise activations, one loop each. Dimension letters as in
// kernels/common.h. The loops run on OpenMP threads above kParallelMin elements (the loop
// itself is the definition either way).
#include "kernels/elementwise.h"

#include <vector>

namespace hisvid::naive {

namespace {

// Below this many elements a loop runs on one thread: forking costs more than it saves.
constexpr int64_t kParallelMin = int64_t(1) << 15;

}  // namespace

template <typename T>
void fill(const Fill<T>& k) {
  T* out = k.out;  // (n)
#pragma omp parallel for if (k.n > kParallelMin)
  for (int64_t i = 0; i < k.n; ++i) out[i] = k.value;
}

template <typename T>
void add(const Add<T>& k) {
  T* out = k.out;              // (n)
  const T *a = k.a, *b = k.b;  // (n)
#pragma omp parallel for if (k.n > kParallelMin)
  for (int64_t i = 0; i < k.n; ++i) out[i] = a[i] + b[i];
}

template <typename T>
void sub(const Sub<T>& k) {
  T* out = k.out;              // (n)
  const T *a = k.a, *b = k.b;  // (n)
#pragma omp parallel for if (k.n > kParallelMin)
  for (int64_t i = 0; i < k.n; ++i) out[i] = a[i] - b[i];
}

template <typename T>
void mul(const Mul<T>& k) {
  T* out = k.out;              // (n)
  const T *a = k.a, *b = k.b;  // (n)
#pragma omp parallel for if (k.n > kParallelMin)
  for (int64_t i = 0; i < k.n; ++i) out[i] = a[i] * b[i];
}

template <typename T>
void scale(const Scale<T>& k) {
  T* out = k.out;    // (n)
  const T* a = k.a;  // (n)
#pragma omp parallel for if (k.n > kParallelMin)
  for (int64_t i = 0; i < k.n; ++i) out[i] = k.alpha * a[i];
}

template <typename T>
void axpy(const Axpy<T>& k) {
  T* y = k.y;        // (n)
  const T* x = k.x;  // (n)
#pragma omp parallel for if (k.n > kParallelMin)
  for (int64_t i = 0; i < k.n; ++i) y[i] += k.alpha * x[i];
}

template <typename T>
void bias_add_forward(const BiasAddForward<T>& k) {
  T* out = k.out;          // (M,C)
  const T* inp = k.inp;    // (M,C)
  const T* bias = k.bias;  // (C)
  const int64_t M = k.M, C = k.C;
#pragma omp parallel for if (M * C > kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = 0; c < C; ++c) out[m * C + c] = inp[m * C + c] + bias[c];
  }
}

// Column sums accumulate in double, so a float bias over many rows loses nothing.
template <typename T>
void bias_add_backward(const BiasAddBackward<T>& k) {
  const T* dout = k.dout;  // (M,C)
  const int64_t M = k.M, C = k.C;
  std::vector<double> sums(static_cast<size_t>(C), 0.0);
  double* s = sums.data();
#pragma omp parallel for reduction(+ : s[:C]) if (M * C > kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = 0; c < C; ++c) s[c] += dout[m * C + c];
  }
  for (int64_t c = 0; c < C; ++c) k.dbias[c] += static_cast<T>(s[c]);  // dbias (C)
}

template <typename T>
void activation_forward(const ActivationForward<T>& k) {
  T* out = k.out;        // (n)
  const T* inp = k.inp;  // (n)
  const int64_t n = k.n;
  with_activation(k.act, [&](auto a) {
#pragma omp parallel for if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) out[i] = activate(inp[i], a.value);
  });
}

template <typename T>
void activation_backward(const ActivationBackward<T>& k) {
  T* dinp = k.dinp;        // (n)
  const T* dout = k.dout;  // (n)
  const T* out = k.out;    // (n) the forward output act(x)
  const int64_t n = k.n;
  with_activation(k.act, [&](auto a) {
#pragma omp parallel for if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) dinp[i] = dout[i] * activation_grad_from_output(out[i], a.value);
  });
}

#define HISVID_INSTANTIATE(T)                                       \
  template void fill<T>(const Fill<T>&);                            \
  template void add<T>(const Add<T>&);                              \
  template void sub<T>(const Sub<T>&);                              \
  template void mul<T>(const Mul<T>&);                              \
  template void scale<T>(const Scale<T>&);                          \
  template void axpy<T>(const Axpy<T>&);                            \
  template void bias_add_forward<T>(const BiasAddForward<T>&);      \
  template void bias_add_backward<T>(const BiasAddBackward<T>&);    \
  template void activation_forward<T>(const ActivationForward<T>&); \
  template void activation_backward<T>(const ActivationBackward<T>&);
HISVID_INSTANTIATE(float)
HISVID_INSTANTIATE(double)
#undef HISVID_INSTANTIATE

}  // namespace hisvid::naive
