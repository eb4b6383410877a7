// kernels/elementwise.h — fills, arithmetic, bias-add and the elementwise activations.
// n is the number of elements; every pointer is a contiguous array of n unless noted.
//
// Each kernel's arguments are one struct, shared by every backend (kernels/registry.h); its
// buffers() lists the arrays with their sizes for the harness (kernels/harness.h): in (read),
// out (every element written), inout (read and updated in place: += or an optimizer step).
#pragma once

#include <cstdint>

#include "kernels/common.h"

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid {

// out (n) = value
template <typename T>
struct Fill {
  static constexpr const char* kName = "fill";
  T* out = nullptr;
  T value = T(0);
  int64_t n = 0;
  template <typename V>
  void buffers(V& v) {
    v.out("out", out, n);
  }
};

// out = a + b, a - b, a * b (all (n)); out may alias a or b. One argument struct, three kernels.
template <typename T>
struct BinaryArgs {
  T* out = nullptr;
  const T* a = nullptr;
  const T* b = nullptr;
  int64_t n = 0;
  template <typename V>
  void buffers(V& v) {
    v.out("out", out, n);
    v.in("a", a, n);
    v.in("b", b, n);
  }
};
template <typename T>
struct Add : BinaryArgs<T> {
  static constexpr const char* kName = "add";
};
template <typename T>
struct Sub : BinaryArgs<T> {
  static constexpr const char* kName = "sub";
};
template <typename T>
struct Mul : BinaryArgs<T> {
  static constexpr const char* kName = "mul";
};

// out (n) = alpha * a (n)
template <typename T>
struct Scale {
  static constexpr const char* kName = "scale";
  T* out = nullptr;
  const T* a = nullptr;
  T alpha = T(1);
  int64_t n = 0;
  template <typename V>
  void buffers(V& v) {
    v.out("out", out, n), v.in("a", a, n);
  }
};

// y (n) += alpha * x (n)   (gradient accumulation)
template <typename T>
struct Axpy {
  static constexpr const char* kName = "axpy";
  T* y = nullptr;
  const T* x = nullptr;
  T alpha = T(1);
  int64_t n = 0;
  template <typename V>
  void buffers(V& v) {
    v.inout("y", y, n), v.in("x", x, n);
  }
};

// out (M,C) = inp (M,C) + bias (C)
template <typename T>
struct BiasAddForward {
  static constexpr const char* kName = "bias_add_forward";
  T* out = nullptr;
  const T* inp = nullptr;
  const T* bias = nullptr;
  int64_t M = 0, C = 0;
  template <typename V>
  void buffers(V& v) {
    v.out("out", out, M * C), v.in("inp", inp, M * C), v.in("bias", bias, C);
  }
};

// dbias (C) += sum over rows of dout (M,C), summed in double. (dinp is dout itself.)
template <typename T>
struct BiasAddBackward {
  static constexpr const char* kName = "bias_add_backward";
  T* dbias = nullptr;
  const T* dout = nullptr;
  int64_t M = 0, C = 0;
  template <typename V>
  void buffers(V& v) {
    v.inout("dbias", dbias, C), v.in("dout", dout, M * C);
  }
};

// out (n) = act(inp (n))
template <typename T>
struct ActivationForward {
  static constexpr const char* kName = "activation_forward";
  T* out = nullptr;
  const T* inp = nullptr;
  int64_t n = 0;
  Activation act = Activation::Linear;
  template <typename V>
  void buffers(V& v) {
    v.out("out", out, n), v.in("inp", inp, n);
  }
};

// dinp (n) (=) dout (n) * act'(x), with act' taken from the forward output out (n) = act(x).
template <typename T>
struct ActivationBackward {
  static constexpr const char* kName = "activation_backward";
  T* dinp = nullptr;
  const T* dout = nullptr;
  const T* out = nullptr;
  int64_t n = 0;
  Activation act = Activation::Linear;
  template <typename V>
  void buffers(V& v) {
    v.out("dinp", dinp, n), v.in("dout", dout, n), v.in("out", out, n);
  }
};

}  // namespace hisvid

namespace hisvid::naive {

template <typename T>
void fill(const Fill<T>& a);
template <typename T>
void add(const Add<T>& a);
template <typename T>
void sub(const Sub<T>& a);
template <typename T>
void mul(const Mul<T>& a);
template <typename T>
void scale(const Scale<T>& a);
template <typename T>
void axpy(const Axpy<T>& a);
template <typename T>
void bias_add_forward(const BiasAddForward<T>& a);
template <typename T>
void bias_add_backward(const BiasAddBackward<T>& a);
template <typename T>
void activation_forward(const ActivationForward<T>& a);
template <typename T>
void activation_backward(const ActivationBackward<T>& a);

}  // namespace hisvid::naive

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void fill(const Fill<float>& a, cudaStream_t stream);
void add(const Add<float>& a, cudaStream_t stream);
void sub(const Sub<float>& a, cudaStream_t stream);
void mul(const Mul<float>& a, cudaStream_t stream);
void scale(const Scale<float>& a, cudaStream_t stream);
void axpy(const Axpy<float>& a, cudaStream_t stream);
void bias_add_forward(const BiasAddForward<float>& a, cudaStream_t stream);
void bias_add_backward(const BiasAddBackward<float>& a, cudaStream_t stream);
void activation_forward(const ActivationForward<float>& a, cudaStream_t stream);
void activation_backward(const ActivationBackward<float>& a, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
