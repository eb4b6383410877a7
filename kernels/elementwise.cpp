// kernels/elementwise.cpp — CPU reference of kernels/elementwise.h: fills, arithmetic,
// bias-add and the elementwise activations. Dimension letters as in kernels/common.h.
#include "kernels/elementwise.h"

#include <vector>

namespace hisvid::cpu {

namespace {

// Below this many elements a loop runs on one thread: forking costs more than it saves.
constexpr int64_t kParallelMin = int64_t(1) << 15;

}  // namespace

template <typename T>
void fill(T* out, T value, int64_t n) {  // out (n)
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = value;
}

template <typename T>
void add(T* out, const T* a, const T* b, int64_t n) {  // out, a, b (n)
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <typename T>
void sub(T* out, const T* a, const T* b, int64_t n) {  // out, a, b (n)
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] - b[i];
}

template <typename T>
void mul(T* out, const T* a, const T* b, int64_t n) {  // out, a, b (n)
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
}

template <typename T>
void scale(T* out, const T* a, T alpha, int64_t n) {  // out, a (n)
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = alpha * a[i];
}

template <typename T>
void axpy(T* y, T alpha, const T* x, int64_t n) {  // y, x (n)
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

template <typename T>
void bias_add_forward(T* out,         // (M,C)
                      const T* inp,   // (M,C)
                      const T* bias,  // (C)
                      int64_t M, int64_t C) {
#pragma omp parallel for if (M * C > kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = 0; c < C; ++c) out[m * C + c] = inp[m * C + c] + bias[c];
  }
}

// Column sums accumulate in double, so a float bias over many rows loses nothing.
template <typename T>
void bias_add_backward(T* dbias,       // (C)
                       const T* dout,  // (M,C)
                       int64_t M, int64_t C) {
  std::vector<double> sums(static_cast<size_t>(C), 0.0);
  double* s = sums.data();
#pragma omp parallel for reduction(+ : s[:C]) if (M * C > kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = 0; c < C; ++c) s[c] += dout[m * C + c];
  }
  for (int64_t c = 0; c < C; ++c) dbias[c] += static_cast<T>(s[c]);
}

template <typename T>
void activation_forward(T* out, const T* inp, int64_t n, Activation act) {  // out, inp (n)
  with_activation(act, [&](auto a) {
#pragma omp parallel for if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) out[i] = activate(inp[i], a.value);
  });
}

template <typename T>
void activation_backward(T* dinp,        // (n)
                         const T* dout,  // (n)
                         const T* out,   // (n) the forward output act(x)
                         int64_t n, Activation act) {
  with_activation(act, [&](auto a) {
#pragma omp parallel for if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) dinp[i] = dout[i] * activation_grad_from_output(out[i], a.value);
  });
}

template void fill<float>(float*, float, int64_t);
template void add<float>(float*, const float*, const float*, int64_t);
template void sub<float>(float*, const float*, const float*, int64_t);
template void mul<float>(float*, const float*, const float*, int64_t);
template void scale<float>(float*, const float*, float, int64_t);
template void axpy<float>(float*, float, const float*, int64_t);
template void bias_add_forward<float>(float*, const float*, const float*, int64_t, int64_t);
template void bias_add_backward<float>(float*, const float*, int64_t, int64_t);
template void activation_forward<float>(float*, const float*, int64_t, Activation);
template void activation_backward<float>(float*, const float*, const float*, int64_t, Activation);

template void fill<double>(double*, double, int64_t);
template void add<double>(double*, const double*, const double*, int64_t);
template void sub<double>(double*, const double*, const double*, int64_t);
template void mul<double>(double*, const double*, const double*, int64_t);
template void scale<double>(double*, const double*, double, int64_t);
template void axpy<double>(double*, double, const double*, int64_t);
template void bias_add_forward<double>(double*, const double*, const double*, int64_t, int64_t);
template void bias_add_backward<double>(double*, const double*, int64_t, int64_t);
template void activation_forward<double>(double*, const double*, int64_t, Activation);
template void activation_backward<double>(double*, const double*, const double*, int64_t, Activation);

}  // namespace hisvid::cpu
