// Elementwise ops: add, sub, mul, scale, bias_add, activations.
#include <algorithm>

#include "engine/op_support.h"
#include "engine/ops.h"

namespace hisvid::ops {

using detail::empty_like;
using detail::zeros_as;

namespace {

// out = a (op) b for same-shaped a, b through the kernel-table entry of that op.
template <typename Entry32, typename Entry64>
Tensor binary(const char* op, const Tensor& a, const Tensor& b, Entry32 entry32, Entry64 entry64) {
  detail::require_same(op, "a", a, "b", b);
  Tensor out = empty_like(a);
  if (a.dtype() == DType::Float64) {
    kernel(entry64, op, a)(out.data<double>(), a.data<double>(), b.data<double>(), a.numel());
  } else {
    kernel(entry32, op, a)(out.data<float>(), a.data<float>(), b.data<float>(), a.numel());
  }
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary("add", a, b, &KernelTable<float>::add, &KernelTable<double>::add);
  if (should_record({a, b})) {
    record("add", {a, b}, {out}, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0], g[0]}; });
  }
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary("sub", a, b, &KernelTable<float>::sub, &KernelTable<double>::sub);
  if (should_record({a, b})) {
    const bool need_b = b.requires_grad();
    record("sub", {a, b}, {out}, [need_b](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0], need_b ? scale(g[0], -1.0) : Tensor()};
    });
  }
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary("mul", a, b, &KernelTable<float>::mul, &KernelTable<double>::mul);
  if (should_record({a, b})) {
    const bool need_a = a.requires_grad(), need_b = b.requires_grad();
    record("mul", {a, b}, {out}, [a, b, need_a, need_b](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{need_a ? mul(g[0], b) : Tensor(), need_b ? mul(g[0], a) : Tensor()};
    });
  }
  return out;
}

Tensor scale(const Tensor& a, double alpha) {
  detail::require_defined("scale", "a", a);
  Tensor out = empty_like(a);
  with_dtype(a, [&](auto tag) {
    using T = decltype(tag);
    kernel(&KernelTable<T>::scale, "scale", a)(out.data<T>(), a.data<T>(), static_cast<T>(alpha), a.numel());
  });
  if (should_record({a})) {
    record("scale", {a}, {out}, [alpha](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{scale(g[0], alpha)};
    });
  }
  return out;
}

Tensor bias_add(const Tensor& x, const Tensor& bias) {
  detail::require_compatible("bias_add", "x", x, "bias", bias);
  if (bias.rank() != 1 || x.rank() < 1 || x.dim(-1) != bias.dim(0)) {
    fail("bias_add: bias {} does not match the last axis of x {}", bias.shape().str(), x.shape().str());
  }
  const int64_t C = bias.dim(0), M = x.numel() / std::max<int64_t>(C, 1);
  Tensor out = empty_like(x);
  with_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    kernel(&KernelTable<T>::bias_add_forward, "bias_add", x)(out.data<T>(), x.data<T>(), bias.data<T>(), M, C);
  });
  if (should_record({x, bias})) {
    const bool need_bias = bias.requires_grad();
    record("bias_add", {x, bias}, {out}, [M, C, need_bias, bias](const std::vector<Tensor>& g) {
      Tensor dbias;
      if (need_bias) {
        dbias = zeros_as(bias.shape(), bias);
        with_dtype(dbias, [&](auto tag) {
          using T = decltype(tag);
          kernel(&KernelTable<T>::bias_add_backward, "bias_add backward", dbias)(dbias.data<T>(),
                                                                                 g[0].data<T>(), M, C);
        });
      }
      return std::vector<Tensor>{g[0], dbias};
    });
  }
  return out;
}

Tensor activation(const Tensor& x, Activation act) {
  detail::require_defined("activation", "x", x);
  Tensor out = empty_like(x);
  with_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    kernel(&KernelTable<T>::activation_forward, "activation", x)(out.data<T>(), x.data<T>(), x.numel(), act);
  });
  if (should_record({x})) {
    // act' is taken from the forward output (kernels/common.h).
    record("activation", {x}, {out}, [saved = out.detach(), act](const std::vector<Tensor>& g) {
      Tensor dx = empty_like(saved);
      with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        kernel(&KernelTable<T>::activation_backward, "activation backward", dx)(
            dx.data<T>(), g[0].data<T>(), saved.data<T>(), dx.numel(), act);
      });
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

}  // namespace hisvid::ops
