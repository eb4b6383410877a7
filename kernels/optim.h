// kernels/optim.h — optimizer updates with the Keras / TensorFlow formulas, in place.
//
// Adam (TensorFlow's ApplyAdam, which Keras 2 calls):
//   m += (g - m) * (1 - beta1);  v += (g*g - v) * (1 - beta2)
//   alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t);  w -= alpha * m / (sqrt(v) + eps)
// RMSprop without momentum, two epsilon placements:
//   v = rho * v + (1 - rho) * g*g
//   EpsOutsideSqrt (Keras <= 2.10):  w -= lr * g / (sqrt(v) + eps)
//   EpsInsideSqrt  (Keras >= 2.11):  w -= lr * g / sqrt(v + eps)
// SGD: w -= lr * g.
// The step-dependent scalar alpha (and lr, which ReduceLROnPlateau changes) is computed by the
// caller on the host and passed by value each step: a training step captured once into a CUDA
// graph would replay step 1's values, so capture needs them read from device memory instead.
//
// scalar_at (optional, one T in the memory the kernel runs on): when present, the step scalar
// (Adam's alpha, RMSprop's and SGD's lr) is read there instead of from the field: a step
// captured into a CUDA graph replays with the value staged before each replay.
// halt (optional, float64 in device memory): when present and not 0 the update does nothing.
// The trainer points it at its step sums' failed step (kernels/softmax.h StepMetrics), so that
// a step whose loss is not finite, and every step after it, leaves the weights and the slots
// as they were, without the host reading the loss.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/common.h"

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid {

enum class RmspropEpsilon : int { OutsideSqrt = 0, InsideSqrt };

}  // namespace hisvid

namespace hisvid {

// w, m, v, g all (n); alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t).
template <typename T>
struct AdamUpdate {
  static constexpr const char* kName = "adam_update";
  T* w = nullptr;
  T* m = nullptr;
  T* v = nullptr;
  const T* g = nullptr;
  int64_t n = 0;
  T alpha = T(0), beta1 = T(0.9), beta2 = T(0.999), eps = T(1e-7);
  const double* halt = nullptr;  // (1)
  const T* scalar_at = nullptr;  // (1)
  template <typename V>
  void buffers(V& vis) {
    vis.float64_in("halt", halt, 1);
    vis.in("scalar_at", scalar_at, 1);
    vis.inout("w", w, n);
    vis.inout("m", m, n);
    vis.inout("v", v, n);
    vis.in("g", g, n);
  }
};

// w, v, g all (n).
template <typename T>
struct RmspropUpdate {
  static constexpr const char* kName = "rmsprop_update";
  T* w = nullptr;
  T* v = nullptr;
  const T* g = nullptr;
  int64_t n = 0;
  T lr = T(0.001), rho = T(0.9), eps = T(1e-7);
  RmspropEpsilon form = RmspropEpsilon::OutsideSqrt;
  const double* halt = nullptr;  // (1)
  const T* scalar_at = nullptr;  // (1)
  template <typename V>
  void buffers(V& vis) {
    vis.float64_in("halt", halt, 1);
    vis.in("scalar_at", scalar_at, 1);
    vis.inout("w", w, n);
    vis.inout("v", v, n);
    vis.in("g", g, n);
  }
};

// w, g (n).
template <typename T>
struct SgdUpdate {
  static constexpr const char* kName = "sgd_update";
  T* w = nullptr;
  const T* g = nullptr;
  int64_t n = 0;
  T lr = T(0.01);
  const double* halt = nullptr;  // (1)
  const T* scalar_at = nullptr;  // (1)
  template <typename V>
  void buffers(V& vis) {
    vis.float64_in("halt", halt, 1);
    vis.in("scalar_at", scalar_at, 1);
    vis.inout("w", w, n);
    vis.in("g", g, n);
  }
};

// The update of one element, in the order of the formulas above: what every row computes.
template <typename T>
HISVID_HD void adam_element(T& w, T& m, T& v, T g, T alpha, T beta1, T beta2, T eps) {
  m += (g - m) * (T(1) - beta1);
  v += (g * g - v) * (T(1) - beta2);
  w -= (m * alpha) / (sqrt_of(v) + eps);
}
template <typename T>
HISVID_HD void rmsprop_element(T& w, T& v, T g, T lr, T rho, T eps, RmspropEpsilon form) {
  v = rho * v + (T(1) - rho) * g * g;
  if (form == RmspropEpsilon::OutsideSqrt) {
    w = w - (lr * g) / (sqrt_of(v) + eps);
  } else {
    w = w - lr * (g * (T(1) / sqrt_of(v + eps)));
  }
}
template <typename T>
HISVID_HD void sgd_element(T& w, T g, T lr) {
  w -= lr * g;
}

// Every parameter's update of an optimizer step in one call (on CUDA one launch, where the
// single-tensor kernels above took one per parameter): tensor t < count, of n[t] values, is
// updated by `rule` exactly as its single-tensor kernel would (m: Adam's first moment; v:
// Adam's second moment or RMSprop's rms). scalar is Adam's alpha or the learning rate; rho is
// RMSprop's; halt and scalar_at as above, for all the tensors.
enum class UpdateRule : int { Adam = 0, Rmsprop, Sgd };
template <typename T>
struct MultiTensorUpdate {
  static constexpr const char* kName = "multi_tensor_update";
  static constexpr int kMaxTensors = 16;  // kernel parameters: 16 x 40 bytes of pointers and sizes
  UpdateRule rule = UpdateRule::Adam;
  int count = kMaxTensors;
  T* w[kMaxTensors] = {};
  T* m[kMaxTensors] = {};
  T* v[kMaxTensors] = {};
  const T* g[kMaxTensors] = {};
  int64_t n[kMaxTensors] = {};
  T scalar = T(0), beta1 = T(0.9), beta2 = T(0.999), rho = T(0.9), eps = T(1e-7);
  RmspropEpsilon form = RmspropEpsilon::OutsideSqrt;
  const double* halt = nullptr;  // (1)
  const T* scalar_at = nullptr;  // (1)
  template <typename V>
  void buffers(V& vis) {
    vis.float64_in("halt", halt, 1);
    vis.in("scalar_at", scalar_at, 1);
    for (int t = 0; t < count; ++t) {
      const std::string i = std::to_string(t);
      vis.inout(("w" + i).c_str(), w[t], n[t]);
      if (rule == UpdateRule::Adam) vis.inout(("m" + i).c_str(), m[t], n[t]);
      if (rule != UpdateRule::Sgd) vis.inout(("v" + i).c_str(), v[t], n[t]);
      vis.in(("g" + i).c_str(), g[t], n[t]);
    }
  }
};

}  // namespace hisvid

namespace hisvid::naive {

template <typename T>
void adam_update(const AdamUpdate<T>& k);
template <typename T>
void rmsprop_update(const RmspropUpdate<T>& k);
template <typename T>
void sgd_update(const SgdUpdate<T>& k);
// Each tensor through the single-tensor rows above.
template <typename T>
void multi_tensor_update(const MultiTensorUpdate<T>& k);

}  // namespace hisvid::naive

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

// One launch: blockIdx.y is the tensor, blockIdx.x strides over its values.
void multi_tensor_update(const MultiTensorUpdate<float>& k, cudaStream_t stream);
// The same launch with one tensor.
void adam_update(const AdamUpdate<float>& k, cudaStream_t stream);
void rmsprop_update(const RmspropUpdate<float>& k, cudaStream_t stream);
void sgd_update(const SgdUpdate<float>& k, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
