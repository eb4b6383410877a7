// engine/dispatch.h — how an op runs a kernel: the default row of the kernel table
// (kernels/registry.h) for the device its tensors live on and their element type.
//
//   Conv2dForward<T> k;
//   k.out = out.data<T>(), k.inp = x.data<T>(), ...;
//   run_kernel(k, x.device());
//
// A CPU tensor runs the kernel's cpu row where it has one and its naive row otherwise;
// float64 runs the naive row (the definition, where the gradient checks belong). A CUDA
// tensor runs the cuda row on the stream of its device. A missing row is an error naming the
// kernel, the element type and the device, never a silent fallback to another backend.
#pragma once

#include <type_traits>

#include "engine/cuda_device.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/kernel_profile.h"
#include "engine/tensor.h"
#include "kernels/registry.h"

namespace hisvid {

namespace dispatch_detail {
template <typename Args>
struct ElementOf;
template <template <typename> class A, typename T>
struct ElementOf<A<T>> {
  using type = T;
};
}  // namespace dispatch_detail

template <typename Args>
void run_kernel(const Args& args, Device device) {
  using T = typename dispatch_detail::ElementOf<Args>::type;
  const KernelTable<Args>& table = KernelTable<Args>::get();
  const Implementation<Args>* row = nullptr;
  Launch launch;
  if (device.is_cpu()) {
    if constexpr (std::is_same_v<T, float>) row = table.find(Backend::Cpu);
    if (row == nullptr) row = table.find(Backend::Naive);
  } else {
    row = table.find(Backend::Cuda);
    if (row != nullptr) launch.stream = cuda_stream(device);
  }
  if (row == nullptr) {
    fail("{}: no kernel for {} on {} in this build", Args::kName,
         dtype_name(std::is_same_v<T, double> ? DType::Float64 : DType::Float32), device.str());
  }
  count_device_call();
  const ProfiledCall timing(Args::kName, device);
  row->run(args, launch);
}

// Calls body(T{}) with T = float or double according to the tensor's dtype.
template <typename Body>
decltype(auto) with_dtype(const Tensor& t, Body&& body) {
  if (t.dtype() == DType::Float64) return body(double{});
  return body(float{});
}

}  // namespace hisvid
