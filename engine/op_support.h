// engine/op_support.h — input checks and small helpers shared by the ops_*.cpp files.
// Each check throws hisvid::Error naming the op, the argument and what it got.
#pragma once

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/error.h"
#include "engine/tensor.h"

namespace hisvid::detail {

void require_defined(const char* op, const char* name, const Tensor& t);
// Same dtype and device.
void require_compatible(const char* op, const char* a_name, const Tensor& a, const char* b_name,
                        const Tensor& b);
// Same dtype, device and shape.
void require_same(const char* op, const char* a_name, const Tensor& a, const char* b_name, const Tensor& b);
void require_rank(const char* op, const char* name, const Tensor& t, int rank);
// A tensor's shape must be exactly `expected`.
void require_shape(const char* op, const char* name, const Tensor& t, const Shape& expected);

inline Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }
inline Tensor empty_as(const Shape& shape, const Tensor& like) {
  return Tensor::empty(shape, like.dtype(), like.device());
}
inline Tensor zeros_as(const Shape& shape, const Tensor& like) {
  return Tensor::zeros(shape, like.dtype(), like.device());
}

// Typed data pointer of a possibly undefined tensor (nullptr then).
template <typename T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

}  // namespace hisvid::detail
