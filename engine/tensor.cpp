#include "engine/tensor.h"

#include <cstring>

#include "engine/dispatch.h"
#include "engine/error.h"
#include "kernels/elementwise.h"

namespace hisvid {

const char* dtype_name(DType dtype) { return dtype == DType::Float64 ? "float64" : "float32"; }

size_t dtype_size(DType dtype) { return dtype == DType::Float64 ? 8 : 4; }

Storage::Storage(size_t nbytes, Device dev) : bytes(nbytes), device(dev) {
  data = allocator_for(device).allocate(bytes);
}

Storage::~Storage() { allocator_for(device).deallocate(data, bytes); }

// --- creation -----------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape.numel()) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

namespace {

template <typename Src>
Tensor tensor_from_host(const std::vector<Src>& values, const Shape& shape, DType dtype, Device device) {
  if (static_cast<int64_t>(values.size()) != shape.numel()) {
    fail("Tensor::from_vector: {} values for shape {} ({} elements)", values.size(), shape.str(),
         shape.numel());
  }
  Tensor host = Tensor::empty(shape, dtype, Device::cpu());
  with_dtype(host, [&](auto tag) {
    using T = decltype(tag);
    T* dst = host.data<T>();
    for (size_t i = 0; i < values.size(); ++i) dst[i] = static_cast<T>(values[i]);
  });
  return device.is_cpu() ? host : host.to(device);
}

}  // namespace

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype,
                           Device device) {
  return tensor_from_host(values, shape, dtype, device);
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape, DType dtype, Device device) {
  return tensor_from_host(values, shape, dtype, device);
}

Tensor Tensor::scalar(double value, DType dtype, Device device) {
  return from_vector(std::vector<double>{value}, Shape{}, dtype, device);
}

// --- properties ---------------------------------------------------------------------------

void Tensor::require_defined(const char* what) const {
  if (!impl_) fail("{} of an undefined tensor", what);
}

const Shape& Tensor::shape() const {
  require_defined("shape");
  return impl_->shape;
}

int64_t Tensor::dim(int axis) const {
  const int r = rank();
  const int a = axis < 0 ? axis + r : axis;
  if (a < 0 || a >= r) fail("axis {} is out of range for a tensor of shape {}", axis, shape().str());
  return impl_->shape[a];
}

DType Tensor::dtype() const {
  require_defined("dtype");
  return impl_->dtype;
}

Device Tensor::device() const {
  require_defined("device");
  return impl_->storage->device;
}

std::string Tensor::describe() const {
  if (!impl_) return "undefined tensor";
  return fmt::format("{} {} on {}", dtype_name(dtype()), shape().str(), device().str());
}

void* Tensor::data_ptr() const {
  require_defined("data");
  return impl_->storage->data;
}

template <typename T>
T* Tensor::data() const {
  require_defined("data");
  if (impl_->dtype != dtype_of<T>()) {
    fail("tensor {} accessed as {}", describe(), dtype_name(dtype_of<T>()));
  }
  return static_cast<T*>(impl_->storage->data);
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;

// --- copies and conversions ---------------------------------------------------------------

Tensor Tensor::to(Device target) const {
  if (device() == target) return *this;
  Tensor out = empty(shape(), dtype(), target);
  out.copy_from(*this);
  return out;
}

Tensor Tensor::to(DType target) const {
  if (dtype() == target) return *this;
  if (!device().is_cpu()) fail("dtype conversion of {} is only done on the CPU", describe());
  Tensor out = empty(shape(), target, device());
  with_dtype(out, [&](auto dst_tag) {
    using D = decltype(dst_tag);
    D* dst = out.data<D>();
    with_dtype(*this, [&](auto src_tag) {
      using S = decltype(src_tag);
      const S* src = data<S>();
      for (int64_t i = 0; i < numel(); ++i) dst[i] = static_cast<D>(src[i]);
    });
  });
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  out.copy_from(*this);
  return out;
}

void Tensor::copy_from(const Tensor& src) {
  if (src.shape() != shape() || src.dtype() != dtype()) {
    fail("copy_from: source {} does not match destination {}", src.describe(), describe());
  }
  copy_bytes(data_ptr(), device(), src.data_ptr(), src.device(), nbytes());
}

std::vector<double> Tensor::to_vector() const {
  if (device().is_cpu()) count_host_read();  // a device's values count as they are copied
  const Tensor host = to(Device::cpu());
  std::vector<double> values(static_cast<size_t>(numel()));
  with_dtype(host, [&](auto tag) {
    using T = decltype(tag);
    const T* src = host.data<T>();
    for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<double>(src[i]);
  });
  return values;
}

double Tensor::item() const {
  if (numel() != 1) fail("item() of {}, which does not hold exactly one element", describe());
  return to_vector()[0];
}

void Tensor::fill_(double value) {
  with_dtype(*this, [&](auto tag) {
    using T = decltype(tag);
    Fill<T> k;
    k.out = data<T>(), k.value = static_cast<T>(value), k.n = numel();
    run_kernel(k, device());
  });
}

void Tensor::zero_() { zero_bytes(data_ptr(), device(), nbytes()); }

Tensor Tensor::view(const Shape& new_shape) const {
  if (new_shape.numel() != numel()) {
    fail("view: cannot view {} as {} ({} vs {} elements)", describe(), new_shape.str(), numel(),
         new_shape.numel());
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->shape = new_shape;
  impl->dtype = impl_->dtype;
  return Tensor(std::move(impl));
}

// --- autograd -----------------------------------------------------------------------------

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool requires) {
  require_defined("set_requires_grad");
  impl_->requires_grad = requires;
  return *this;
}

Tensor Tensor::grad() const {
  require_defined("grad");
  return Tensor(impl_->grad);
}

void Tensor::set_grad(const Tensor& g) {
  require_defined("set_grad");
  if (g.defined() && (g.shape() != shape() || g.dtype() != dtype() || g.device() != device())) {
    fail("set_grad: gradient {} does not match tensor {}", g.describe(), describe());
  }
  impl_->grad = g.impl_ptr();
}

void Tensor::zero_grad() {
  require_defined("zero_grad");
  impl_->grad.reset();
}

Tensor Tensor::detach() const { return view(shape()); }

}  // namespace hisvid
