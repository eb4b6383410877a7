// Elementwise ops: add, sub, mul, scale, bias_add, activations.
#include <algorithm>

#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/elementwise.h"

namespace hisvid::ops {

using detail::empty_like;
using detail::zeros_as;

namespace {

// out = a (op) b for same-shaped a, b through Kernel (Add, Sub or Mul).
template <template <typename> class Kernel>
Tensor binary(const char* op, const Tensor& a, const Tensor& b) {
  detail::require_same(op, "a", a, "b", b);
  Tensor out = empty_like(a);
  with_dtype(a, [&](auto tag) {
    using T = decltype(tag);
    Kernel<T> k;
    k.out = out.data<T>(), k.a = a.data<T>(), k.b = b.data<T>(), k.n = a.numel();
    run_kernel(k, a.device());
  });
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary<Add>("add", a, b);
  if (should_record({a, b})) {
    record("add", {a, b}, {out}, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0], g[0]}; });
  }
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary<Sub>("sub", a, b);
  if (should_record({a, b})) {
    const bool need_b = b.requires_grad();
    record("sub", {a, b}, {out}, [need_b](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0], need_b ? scale(g[0], -1.0) : Tensor()};
    });
  }
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary<Mul>("mul", a, b);
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
    Scale<T> k;
    k.out = out.data<T>(), k.a = a.data<T>(), k.alpha = static_cast<T>(alpha), k.n = a.numel();
    run_kernel(k, a.device());
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
    BiasAddForward<T> k;
    k.out = out.data<T>(), k.inp = x.data<T>(), k.bias = bias.data<T>(), k.M = M, k.C = C;
    run_kernel(k, x.device());
  });
  if (should_record({x, bias})) {
    const bool need_bias = bias.requires_grad();
    record("bias_add", {x, bias}, {out}, [M, C, need_bias, bias](const std::vector<Tensor>& g) {
      Tensor dbias;
      if (need_bias) {
        dbias = zeros_as(bias.shape(), bias);
        with_dtype(dbias, [&](auto tag) {
          using T = decltype(tag);
          BiasAddBackward<T> k;
          k.dbias = dbias.data<T>(), k.dout = g[0].data<T>(), k.M = M, k.C = C;
          run_kernel(k, dbias.device());
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
    ActivationForward<T> k;
    k.out = out.data<T>(), k.inp = x.data<T>(), k.n = x.numel(), k.act = act;
    run_kernel(k, x.device());
  });
  if (should_record({x})) {
    // act' is taken from the forward output (kernels/common.h).
    record("activation", {x}, {out}, [saved = out.detach(), act](const std::vector<Tensor>& g) {
      Tensor dx = empty_like(saved);
      with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        ActivationBackward<T> k;
        k.dinp = dx.data<T>(), k.dout = g[0].data<T>(), k.out = saved.data<T>(), k.n = dx.numel(),
        k.act = act;
        run_kernel(k, dx.device());
      });
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

}  // namespace hisvid::ops
