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
#pragma once

#include <cstdint>

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid {

enum class RmspropEpsilon : int { OutsideSqrt = 0, InsideSqrt };

}  // namespace hisvid

namespace hisvid::cpu {

// w, m, v, g all (n); alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t).
template <typename T>
void adam_update(T* w, T* m, T* v, const T* g, int64_t n, T alpha, T beta1, T beta2, T eps);
template <typename T>
void rmsprop_update(T* w, T* v, const T* g, int64_t n, T lr, T rho, T eps, RmspropEpsilon form);
template <typename T> void sgd_update(T* w, const T* g, int64_t n, T lr);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void adam_update(float* w, float* m, float* v, const float* g, int64_t n, float alpha, float beta1,
                 float beta2, float eps, cudaStream_t stream);
void rmsprop_update(float* w, float* v, const float* g, int64_t n, float lr, float rho, float eps,
                    RmspropEpsilon form, cudaStream_t stream);
void sgd_update(float* w, const float* g, int64_t n, float lr, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
