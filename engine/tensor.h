// engine/tensor.h — the Tensor: a shared handle to contiguous storage with a shape (rank 0..5),
// a dtype (float32, or float64 for gradient checks), a device, and autograd state.
//
// Copying a Tensor copies the handle, not the data (like a shared_ptr). Activations are
// channels-last like Keras: (N,T,H,W,C).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/shape.h"

namespace hisvid {

enum class DType : int { Float32 = 0, Float64 };

const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);
template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::Float32; }
template <> constexpr DType dtype_of<double>() { return DType::Float64; }

// A block of device memory returned to its allocator when the last owner lets go.
struct Storage {
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data = nullptr;
  size_t bytes = 0;
  Device device;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  DType dtype = DType::Float32;
  bool requires_grad = false;
  // Set on tensors produced by a recorded op; gradients of such tensors are released once
  // their node has run during backward.
  bool has_grad_fn = false;
  std::shared_ptr<TensorImpl> grad;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // --- creation -------------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::Float32,
                     Device device = Device::cpu());
  // Copies host values (converted to dtype) onto device; values.size() must equal numel.
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape,
                            DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape,
                            DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::Float32, Device device = Device::cpu());

  // --- properties -----------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int rank() const { return shape().rank(); }
  int64_t dim(int axis) const;  // negative axes count from the end
  int64_t numel() const { return shape().numel(); }
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  // "float32 (2, 3) on cpu", for error messages.
  std::string describe() const;

  void* data_ptr() const;
  // Typed pointer; throws when T does not match the dtype.
  template <typename T> T* data() const;

  // --- copies and conversions -----------------------------------------------------------
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;  // CPU only
  Tensor clone() const;          // a new storage with the same contents, no autograd history
  void copy_from(const Tensor& src);  // same shape and dtype, any devices
  std::vector<double> to_vector() const;  // host copy of all values, as double
  double item() const;                    // the value of a one-element tensor
  void fill_(double value);
  void zero_();
  // The same storage under another shape of equal numel, without autograd (ops::reshape
  // records the op).
  Tensor view(const Shape& shape) const;

  // --- autograd -------------------------------------------------------------------------
  bool requires_grad() const;
  Tensor& set_requires_grad(bool requires);
  // The accumulated gradient (undefined until backward has reached this tensor).
  Tensor grad() const;
  void set_grad(const Tensor& grad);
  void zero_grad();  // drops the gradient
  Tensor detach() const;  // same storage, no autograd

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same_as(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  void require_defined(const char* what) const;

  std::shared_ptr<TensorImpl> impl_;
};

}  // namespace hisvid
