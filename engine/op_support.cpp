#include "engine/op_support.h"

namespace hisvid::detail {

void require_defined(const char* op, const char* name, const Tensor& t) {
  if (!t.defined()) fail("{}: {} is an undefined tensor", op, name);
}

void require_compatible(const char* op, const char* a_name, const Tensor& a, const char* b_name,
                        const Tensor& b) {
  require_defined(op, a_name, a);
  require_defined(op, b_name, b);
  if (a.dtype() != b.dtype() || a.device() != b.device()) {
    fail("{}: {} is {} but {} is {} (dtype and device must match)", op, a_name, a.describe(), b_name,
         b.describe());
  }
}

void require_same(const char* op, const char* a_name, const Tensor& a, const char* b_name, const Tensor& b) {
  require_compatible(op, a_name, a, b_name, b);
  if (a.shape() != b.shape()) {
    fail("{}: shapes of {} {} and {} {} differ", op, a_name, a.shape().str(), b_name, b.shape().str());
  }
}

void require_rank(const char* op, const char* name, const Tensor& t, int rank) {
  require_defined(op, name, t);
  if (t.rank() != rank) fail("{}: {} must have rank {}, got shape {}", op, name, rank, t.shape().str());
}

void require_shape(const char* op, const char* name, const Tensor& t, const Shape& expected) {
  require_defined(op, name, t);
  if (t.shape() != expected) {
    fail("{}: {} must have shape {}, got {}", op, name, expected.str(), t.shape().str());
  }
}

}  // namespace hisvid::detail
