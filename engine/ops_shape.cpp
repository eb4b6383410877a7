// Shape ops: reshape (and flatten / TimeDistributed's merge and split of N and T), slice, concat.
#include <algorithm>

#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/reduce.h"

namespace hisvid::ops {

namespace {

int normalize_axis(const char* op, int axis, int rank) {
  const int a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) fail("{}: axis {} is out of range for rank {}", op, axis, rank);
  return a;
}

// dst[:, dst_start:dst_start+len, :] (=|+=) src[:, src_start:src_start+len, :] along `axis`.
void copy_along(const Tensor& dst, int64_t dst_start, const Tensor& src, int64_t src_start, int axis,
                int64_t len, bool accumulate) {
  const Shape& s = src.shape();
  const int64_t outer = s.prod(0, axis), inner = s.prod(axis + 1, s.rank());
  with_dtype(dst, [&](auto tag) {
    using T = decltype(tag);
    CopyBlock<T> k;
    k.dst = dst.data<T>(), k.src = src.data<T>(), k.outer = outer, k.len = len, k.inner = inner;
    k.dst_dim = dst.dim(axis), k.dst_start = dst_start, k.src_dim = src.dim(axis), k.src_start = src_start;
    k.accumulate = accumulate;
    run_kernel(k, dst.device());
  });
}

}  // namespace

Tensor repeat_steps(const Tensor& m, int64_t T) {
  detail::require_defined("repeat_steps", "m", m);
  if (m.rank() < 1 || T < 1) fail("repeat_steps: cannot repeat {} over {} steps", m.shape().str(), T);
  std::vector<int64_t> dims = m.shape().vec();
  dims.insert(dims.begin() + 1, T);
  Tensor out = detail::empty_as(Shape(dims), m);
  if (m.numel() == 0) return out;
  with_dtype(m, [&](auto tag) {
    using E = decltype(tag);
    CopyBlock<E> k;  // (N, 1, rest) repeated into (N, T, rest)
    k.dst = out.data<E>(), k.src = m.data<E>(), k.outer = m.dim(0), k.len = T, k.inner = m.numel() / m.dim(0);
    k.dst_dim = T, k.src_dim = 1, k.repeat = true;
    run_kernel(k, m.device());
  });
  return out;
}

Tensor reshape(const Tensor& x, std::vector<int64_t> dims) {
  detail::require_defined("reshape", "x", x);
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == -1) {
      if (infer >= 0) fail("reshape: more than one -1 in the target shape of {}", x.shape().str());
      infer = static_cast<int>(i);
    } else {
      known *= dims[i];
    }
  }
  if (infer >= 0 && known > 0 && x.numel() % known == 0) dims[infer] = x.numel() / known;
  const Shape shape(dims);
  if (shape.numel() != x.numel() || (infer >= 0 && known == 0)) {
    std::string target = "(";
    for (size_t i = 0; i < dims.size(); ++i) target += (i ? ", " : "") + std::to_string(dims[i]);
    fail("reshape: cannot reshape {} ({} elements) to {})", x.shape().str(), x.numel(), target);
  }
  Tensor out = x.view(shape);
  if (should_record({x})) {
    record("reshape", {x}, {out}, [in_shape = x.shape()](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0].view(in_shape)};
    });
  }
  return out;
}

Tensor flatten(const Tensor& x) {
  detail::require_defined("flatten", "x", x);
  if (x.rank() < 1) fail("flatten: x must have a batch axis, got shape {}", x.shape().str());
  return reshape(x, {x.dim(0), x.shape().prod(1, x.rank())});
}

Tensor merge_time(const Tensor& x) {
  detail::require_defined("merge_time", "x", x);
  if (x.rank() < 2) fail("merge_time: x must be (N,T,...), got shape {}", x.shape().str());
  std::vector<int64_t> dims = x.shape().vec();
  dims[1] *= dims[0];
  dims.erase(dims.begin());
  return reshape(x, dims);
}

Tensor split_time(const Tensor& x, int64_t T) {
  detail::require_defined("split_time", "x", x);
  if (x.rank() < 1 || x.rank() >= Shape::kMaxRank || T <= 0 || x.dim(0) % T != 0) {
    fail("split_time: cannot split the first axis of {} into (N, {})", x.shape().str(), T);
  }
  std::vector<int64_t> dims = x.shape().vec();
  dims[0] /= T;
  dims.insert(dims.begin() + 1, T);
  return reshape(x, dims);
}

Tensor slice(const Tensor& x, int axis, int64_t start, int64_t length) {
  detail::require_defined("slice", "x", x);
  const int a = normalize_axis("slice", axis, x.rank());
  if (start < 0 || length < 0 || start + length > x.dim(a)) {
    fail("slice: range [{}, {}) is outside axis {} of {}", start, start + length, a, x.shape().str());
  }
  Shape shape = x.shape();
  shape[a] = length;
  Tensor out = detail::empty_as(shape, x);
  copy_along(out, 0, x, start, a, length, false);
  if (should_record({x})) {
    record("slice", {x}, {out}, [in_shape = x.shape(), a, start, length](const std::vector<Tensor>& g) {
      Tensor dx = detail::zeros_as(in_shape, g[0]);
      copy_along(dx, start, g[0], 0, a, length, false);
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

Tensor concat(const std::vector<Tensor>& xs, int axis) {
  if (xs.empty()) fail("concat: no tensors to join");
  detail::require_defined("concat", "xs[0]", xs[0]);
  const int a = normalize_axis("concat", axis, xs[0].rank());
  // Every input must equal input 0 outside `axis`.
  Shape reference = xs[0].shape();
  reference[a] = 0;
  int64_t extent = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    detail::require_compatible("concat", "xs[0]", xs[0], "another input", xs[i]);
    Shape probe = xs[i].shape();
    if (probe.rank() == reference.rank()) probe[a] = 0;
    if (probe != reference) {
      fail("concat: input {} has shape {}, which differs from input 0 {} outside axis {}", i,
           xs[i].shape().str(), xs[0].shape().str(), a);
    }
    extent += xs[i].dim(a);
  }
  Shape shape = xs[0].shape();
  shape[a] = extent;
  Tensor out = detail::empty_as(shape, xs[0]);
  int64_t offset = 0;
  for (const Tensor& x : xs) {
    copy_along(out, offset, x, 0, a, x.dim(a), false);
    offset += x.dim(a);
  }
  if (should_record(xs)) {
    std::vector<int64_t> extents;
    std::vector<bool> needs;
    for (const Tensor& x : xs) {
      extents.push_back(x.dim(a));
      needs.push_back(x.requires_grad());
    }
    record("concat", xs, {out}, [a, extents, needs](const std::vector<Tensor>& g) {
      std::vector<Tensor> grads(extents.size());
      int64_t start = 0;
      for (size_t i = 0; i < extents.size(); ++i) {
        if (needs[i]) grads[i] = slice(g[0], a, start, extents[i]);
        start += extents[i];
      }
      return grads;
    });
  }
  return out;
}

std::vector<Tensor> unstack(const Tensor& x, int axis) {
  detail::require_defined("unstack", "x", x);
  const int a = normalize_axis("unstack", axis, x.rank());
  std::vector<int64_t> dims = x.shape().vec();
  const int64_t count = dims[a];
  dims.erase(dims.begin() + a);
  const Shape part_shape(dims);
  Shape slice_shape = x.shape();
  slice_shape[a] = 1;
  std::vector<Tensor> parts;
  for (int64_t i = 0; i < count; ++i) {
    Tensor part = detail::empty_as(slice_shape, x);
    copy_along(part, 0, x, i, a, 1, false);
    parts.push_back(part.view(part_shape));
  }
  if (should_record({x})) {
    record("unstack", {x}, parts, [in_shape = x.shape(), slice_shape, a](const std::vector<Tensor>& g) {
      const Tensor& any = *std::find_if(g.begin(), g.end(), [](const Tensor& t) { return t.defined(); });
      Tensor dx = detail::empty_as(in_shape, any);
      for (size_t i = 0; i < g.size(); ++i) {
        if (g[i].defined()) {
          copy_along(dx, static_cast<int64_t>(i), g[i].view(slice_shape), 0, a, 1, false);
        } else {
          copy_along(dx, static_cast<int64_t>(i), detail::zeros_as(slice_shape, any), 0, a, 1, false);
        }
      }
      return std::vector<Tensor>{dx};
    });
  }
  return parts;
}

}  // namespace hisvid::ops
