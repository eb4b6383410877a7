// kernels/common.h — what every kernel file shares.
//
// kernels/ is raw-pointer compute. Each kernel has a reference in namespace hisvid::naive
// (templated on float/double: the double instantiation is what the gradient checks and the
// harness compare against), tuned host rows in hisvid::cpu where the loops are not enough and,
// when built with CUDA, float rows in namespace hisvid::cuda with the same name and argument
// plus a trailing cudaStream_t (kernels/registry.h). kernels/ knows nothing of Tensor.
//
// Dimension letters used in the shape comments of every kernel file:
//   N batch, T time, H height, W width, C channels, F filters (output channels),
//   KH/KW kernel height/width, HO/WO output height/width, U units, G = 4 gates (i, f, c, o),
//   M rows of a flattened (N*T*H*W or N) matrix, K classes or the inner GEMM dimension,
//   D an LSTM's input features, P = H*W pixels of one image, S positions sharing a channel's
//   dropout or pooled value (spatial dropout, global pooling), B clips and E values per clip
//   (kernels/clips.h), history the time slots a recurrent buffer keeps.
// Tensors are contiguous and channels-last, like Keras: activations (N,T,H,W,C), conv
// weights (KH,KW,C,F), LSTM kernels (D,G*U) with the gates in the order i, f, c, o.
//
// Gradient convention: parameter gradients accumulate (+=); activation gradients are
// written (=). A kernel whose name ends in _backward says in its comment which is which.
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__CUDACC__)
#define HISVID_HD __host__ __device__ __forceinline__
#else
#define HISVID_HD inline
#endif

namespace hisvid {

// Keras activation names. Softmax is not elementwise and lives in kernels/softmax.h.
// "hard_sigmoid" changed meaning in Keras 3: HardSigmoid is Keras 2's, HardSigmoidKeras3 the
// new one; which of them a file means follows from the Keras version that wrote it.
enum class Activation : int { Linear = 0, Relu, Tanh, Sigmoid, HardSigmoid, HardSigmoidKeras3 };

// How BatchNormalization's moving statistics take in a batch's, as each Keras path computes it
// (kernels/batchnorm.h, moving_average): Keras 3's blend, Keras 2's fused kernel, or Keras 2's
// other path and standalone Keras (assign_moving_average).
enum class MovingUpdate : int { Blend = 0, Fused, AssignSub };

// Keras padding modes. Same: output = ceil(in / stride), the total padding split with the
// smaller half before and the larger half after (TensorFlow's rule).
enum class Padding : int { Valid = 0, Same };

// The Philox offset a random kernel draws at: its own offset plus, when base is given, the
// value at base, read where the kernel runs (host memory for a host row, device memory on
// CUDA). A step captured into a CUDA graph passes offsets relative to a base that is staged
// before every replay, so that each replay draws new masks (engine/random.h).
HISVID_HD uint64_t based_offset(uint64_t offset, const int64_t* base) {
  return base == nullptr ? offset : offset + static_cast<uint64_t>(*base);
}

// exp in the element type's own precision on host and device (a plain exp(float) on the host
// would call the double function).
HISVID_HD float exp_of(float x) { return expf(x); }
HISVID_HD double exp_of(double x) { return exp(x); }
HISVID_HD float sqrt_of(float x) { return sqrtf(x); }
HISVID_HD double sqrt_of(double x) { return sqrt(x); }

// float tanh as the 13/6-degree rational function TensorFlow's float32 CPU kernels evaluate
// (Eigen's fast tanh): within a few ulp of tanh on [-9, 9], +-1 outside, no branches, so it
// vectorises, and it is 5x cheaper than libm's tanhf, which was a quarter of a ConvLSTM step.
// The same function runs on CUDA, and 8 lanes at a time in the AVX2 gate rows of
// kernels/lstm.cpp (same operations, same bits). double (gradient checks) uses the exact tanh.
namespace tanh_rational {
constexpr float kClamp = 9.0f;  // x is clamped to [-kClamp, kClamp] first
// numerator: x * (a1 + a3 x^2 + ... + a13 x^12)
constexpr float kA13 = -2.76076847742355e-16f, kA11 = 2.00018790482477e-13f, kA9 = -8.60467152213735e-11f,
                kA7 = 5.12229709037114e-08f, kA5 = 1.48572235717979e-05f, kA3 = 6.37261928875436e-04f,
                kA1 = 4.89352455891786e-03f;
// denominator: b0 + b2 x^2 + b4 x^4 + b6 x^6
constexpr float kB6 = 1.19825839466702e-06f, kB4 = 1.18534705686654e-04f, kB2 = 2.26843463243900e-03f,
                kB0 = 4.89352518554385e-03f;
}  // namespace tanh_rational

HISVID_HD float tanh_of(float x) {
  using namespace tanh_rational;
  x = x < -kClamp ? -kClamp : (x > kClamp ? kClamp : x);
  const float x2 = x * x;
  float p = kA13;
  p = p * x2 + kA11;
  p = p * x2 + kA9;
  p = p * x2 + kA7;
  p = p * x2 + kA5;
  p = p * x2 + kA3;
  p = p * x2 + kA1;
  float q = kB6;
  q = q * x2 + kB4;
  q = q * x2 + kB2;
  q = q * x2 + kB0;
  return x * p / q;
}
HISVID_HD double tanh_of(double x) { return tanh(x); }

template <typename T>
HISVID_HD T sigmoid(T x) {
  return T(1) / (T(1) + exp_of(-x));
}

// Keras 2 hard_sigmoid: clip(0.2 * x + 0.5, 0, 1).
template <typename T>
HISVID_HD T hard_sigmoid(T x) {
  T y = T(0.2) * x + T(0.5);
  return y < T(0) ? T(0) : (y > T(1) ? T(1) : y);
}

// Keras 3 hard_sigmoid: relu6(x + 3) / 6 = clip(x / 6 + 0.5, 0, 1).
template <typename T>
HISVID_HD T hard_sigmoid_keras3(T x) {
  T y = x + T(3);
  y = y < T(0) ? T(0) : (y > T(6) ? T(6) : y);
  return y / T(6);
}

// The Keras name (Keras 3's hard_sigmoid is "hard_sigmoid_keras3" here), for messages.
inline const char* activation_label(Activation act) {
  switch (act) {
    case Activation::Linear:
      return "linear";
    case Activation::Relu:
      return "relu";
    case Activation::Tanh:
      return "tanh";
    case Activation::Sigmoid:
      return "sigmoid";
    case Activation::HardSigmoid:
      return "hard_sigmoid";
    case Activation::HardSigmoidKeras3:
      return "hard_sigmoid_keras3";
  }
  return "unknown";
}

template <typename T>
HISVID_HD T activate(T x, Activation act) {
  switch (act) {
    case Activation::Relu:
      return x > T(0) ? x : T(0);
    case Activation::Tanh:
      return tanh_of(x);
    case Activation::Sigmoid:
      return sigmoid(x);
    case Activation::HardSigmoid:
      return hard_sigmoid(x);
    case Activation::HardSigmoidKeras3:
      return hard_sigmoid_keras3(x);
    case Activation::Linear:
      break;
  }
  return x;
}

// d act(x) / dx written in terms of the output y = act(x), so backward needs only what
// forward produced. At the kinks (relu at 0, hard_sigmoid at +-2.5 or +-3) the derivative of the
// flat side is taken, as TensorFlow does for relu and for Keras 3's hard_sigmoid (relu6). Keras
// 2's hard_sigmoid differs there: TensorFlow's clip_by_value (minimum, then maximum) passes the
// gradient where 0.2x + 0.5 is exactly 0 or 1, which from the output cannot be told from the
// clipped side; those x, a float32 interval about 1e-7 wide around -2.5 and 2.5, get 0 here, 0.2
// in Keras 2.
template <typename T>
HISVID_HD T activation_grad_from_output(T y, Activation act) {
  switch (act) {
    case Activation::Relu:
      return y > T(0) ? T(1) : T(0);
    case Activation::Tanh:
      return T(1) - y * y;
    case Activation::Sigmoid:
      return y * (T(1) - y);
    case Activation::HardSigmoid:
      return (y > T(0) && y < T(1)) ? T(0.2) : T(0);
    case Activation::HardSigmoidKeras3:
      return (y > T(0) && y < T(1)) ? T(1) / T(6) : T(0);
    case Activation::Linear:
      break;
  }
  return T(1);
}

// Calls body(tag), tag an std::integral_constant holding `act`, so a loop written in body is
// compiled once per activation with the choice folded away (a switch on the activation inside
// the loop, as activate() has, keeps it from vectorising):
//   with_activation(act, [&](auto a) { for (...) out[i] = activate(inp[i], a.value); });
template <typename Body>
void with_activation(Activation act, Body&& body) {
  switch (act) {
    case Activation::Relu:
      return body(std::integral_constant<Activation, Activation::Relu>{});
    case Activation::Tanh:
      return body(std::integral_constant<Activation, Activation::Tanh>{});
    case Activation::Sigmoid:
      return body(std::integral_constant<Activation, Activation::Sigmoid>{});
    case Activation::HardSigmoid:
      return body(std::integral_constant<Activation, Activation::HardSigmoid>{});
    case Activation::HardSigmoidKeras3:
      return body(std::integral_constant<Activation, Activation::HardSigmoidKeras3>{});
    case Activation::Linear:
      return body(std::integral_constant<Activation, Activation::Linear>{});
  }
}

// Output size and the padding placed before the first element, for one spatial dimension.
struct Window1d {
  int out;
  int pad_before;
};

HISVID_HD Window1d window_1d(int in, int kernel, int stride, Padding padding) {
  if (padding == Padding::Valid) return {in < kernel ? 0 : (in - kernel) / stride + 1, 0};
  // In 64 bits: in + stride - 1 overflows an int for strides near INT_MAX (out <= in, and
  // pad_total < kernel, fit again).
  const int64_t out = (int64_t(in) + stride - 1) / stride;
  int64_t pad_total = (out - 1) * stride + kernel - in;
  if (pad_total < 0) pad_total = 0;
  return {static_cast<int>(out), static_cast<int>(pad_total / 2)};
}

// A buffer of at least n elements owned by the calling thread and kept between calls: the CPU
// rows' scratch, allocated and page-faulted once rather than on every call. Tag, any type,
// tells apart the buffers that are in use at the same time.
template <typename T, typename Tag>
T* thread_buffer(int64_t n) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < static_cast<size_t>(n)) buffer.resize(static_cast<size_t>(n));
  return buffer.data();
}

}  // namespace hisvid
