// engine/dispatch.h — the one explicit dispatch table: for each (device, dtype) the kernel
// that runs every op. The CPU tables (float and double) point at the hisvid::cpu templates;
// the CUDA float table at adapters that call hisvid::cuda with the device's stream. There is
// no CUDA double table: an op asked to run there fails with an error naming the op, the
// device and the dtype — never a silent fallback to another backend.
//
// Signatures are those of the CPU kernels (see kernels/*.h for the shapes).
#pragma once

#include <cstdint>

#include "engine/cuda_device.h"
#include "engine/error.h"
#include "engine/tensor.h"
#include "kernels/common.h"
#include "kernels/conv2d.h"
#include "kernels/optim.h"
#include "kernels/pool.h"

namespace hisvid {

template <typename T>
struct KernelTable {
  // elementwise.h
  void (*fill)(T*, T, int64_t) = nullptr;
  void (*add)(T*, const T*, const T*, int64_t) = nullptr;
  void (*sub)(T*, const T*, const T*, int64_t) = nullptr;
  void (*mul)(T*, const T*, const T*, int64_t) = nullptr;
  void (*scale)(T*, const T*, T, int64_t) = nullptr;
  void (*axpy)(T*, T, const T*, int64_t) = nullptr;
  void (*bias_add_forward)(T*, const T*, const T*, int64_t, int64_t) = nullptr;
  void (*bias_add_backward)(T*, const T*, int64_t, int64_t) = nullptr;
  void (*activation_forward)(T*, const T*, int64_t, Activation) = nullptr;
  void (*activation_backward)(T*, const T*, const T*, int64_t, Activation) = nullptr;
  // matmul.h
  void (*matmul)(T*, const T*, const T*, int64_t, int64_t, int64_t, bool, bool, bool) = nullptr;
  // conv2d.h
  void (*conv2d_forward)(T*, const T*, const T*, const T*, const Conv2dGeometry&) = nullptr;
  void (*conv2d_backward_data)(T*, const T*, const T*, const Conv2dGeometry&) = nullptr;
  void (*conv2d_backward_filter)(T*, T*, const T*, const T*, const Conv2dGeometry&) = nullptr;
  // pool.h
  void (*maxpool2d_forward)(T*, int32_t*, const T*, const Pool2dGeometry&) = nullptr;
  void (*maxpool2d_backward)(T*, const T*, const int32_t*, const Pool2dGeometry&) = nullptr;
  void (*global_avgpool_forward)(T*, const T*, int64_t, int64_t, int64_t) = nullptr;
  void (*global_avgpool_backward)(T*, const T*, int64_t, int64_t, int64_t) = nullptr;
  // dropout.h
  void (*dropout_forward)(T*, const T*, int64_t, float, uint64_t, uint64_t) = nullptr;
  void (*dropout_backward)(T*, const T*, int64_t, float, uint64_t, uint64_t) = nullptr;
  void (*dropout_mask)(T*, int64_t, float, uint64_t, uint64_t) = nullptr;
  void (*spatial_dropout_forward)(T*, const T*, int64_t, int64_t, int64_t, float, uint64_t,
                                  uint64_t) = nullptr;
  void (*spatial_dropout_backward)(T*, const T*, int64_t, int64_t, int64_t, float, uint64_t,
                                   uint64_t) = nullptr;
  // lstm.h
  void (*lstm_cell_forward)(T*, T*, T*, const T*, const T*, int64_t, int64_t, Activation,
                            Activation) = nullptr;
  void (*lstm_cell_backward)(T*, T*, const T*, const T*, const T*, const T*, const T*, int64_t, int64_t,
                             Activation, Activation) = nullptr;
  // batchnorm.h
  void (*batchnorm_forward_train)(T*, T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t,
                                  float) = nullptr;
  void (*batchnorm_forward_infer)(T*, const T*, const T*, const T*, const T*, const T*, int64_t, int64_t,
                                  float) = nullptr;
  void (*batchnorm_backward)(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, int64_t,
                             int64_t) = nullptr;
  void (*batchnorm_update_moving)(T*, T*, const T*, const T*, int64_t, int64_t, float) = nullptr;
  // softmax.h
  void (*softmax_forward)(T*, const T*, int64_t, int64_t) = nullptr;
  void (*softmax_backward)(T*, const T*, const T*, int64_t, int64_t) = nullptr;
  void (*softmax_xent_forward)(T*, T*, const T*, const T*, int64_t, int64_t) = nullptr;
  void (*softmax_xent_backward)(T*, const T*, const T*, const T*, int64_t, int64_t) = nullptr;
  // correct count written to host memory by every backend's table entry
  void (*accuracy_count)(int64_t*, const T*, const T*, int64_t, int64_t) = nullptr;
  void (*sigmoid_xent_forward)(T*, T*, const T*, const T*, int64_t, int64_t) = nullptr;
  void (*sigmoid_xent_backward)(T*, const T*, const T*, const T*, int64_t, int64_t) = nullptr;
  // correct count written to host memory, as accuracy_count
  void (*binary_accuracy_count)(int64_t*, const T*, const T*, int64_t, int64_t) = nullptr;
  // reduce.h
  void (*sum_all)(T*, const T*, int64_t) = nullptr;
  void (*copy_block)(T*, int64_t, int64_t, const T*, int64_t, int64_t, int64_t, int64_t, int64_t,
                     bool) = nullptr;
  // optim.h
  void (*adam_update)(T*, T*, T*, const T*, int64_t, T, T, T, T) = nullptr;
  void (*rmsprop_update)(T*, T*, const T*, int64_t, T, T, T, RmspropEpsilon) = nullptr;
  void (*sgd_update)(T*, const T*, int64_t, T) = nullptr;
};

// The table of a device for element type T (float or double).
template <typename T> const KernelTable<T>& kernel_table(DeviceType device);

// The CUDA float table (engine/cuda_dispatch.cpp); null entries everywhere in a CPU-only build.
const KernelTable<float>& cuda_kernel_table();

// Looks an entry up and throws when that backend has none:
//   kernel(&KernelTable<T>::conv2d_forward, "conv2d", x)(args...)
template <typename T, typename Fn>
Fn kernel(Fn KernelTable<T>::*entry, const char* op, const Tensor& on) {
  Fn fn = kernel_table<T>(on.device().type).*entry;
  if (fn == nullptr) {
    fail("{}: no kernel for {} on {} in this build", op, dtype_name(on.dtype()), on.device().str());
  }
  // CUDA entries run on the current device's stream: make it the tensor's (cuda:1 as well).
  if (on.device().is_cuda()) cuda_make_current(on.device());
  return fn;
}

// Calls body(T{}) with T = float or double according to the tensor's dtype.
template <typename Body>
decltype(auto) with_dtype(const Tensor& t, Body&& body) {
  if (t.dtype() == DType::Float64) return body(double{});
  return body(float{});
}

}  // namespace hisvid
