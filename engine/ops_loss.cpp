// Softmax, the fused softmax + categorical and sigmoid + binary cross-entropies, reductions and
// accuracies.
#include "engine/op_support.h"
#include "engine/ops.h"

namespace hisvid::ops {

using detail::empty_as;
using detail::empty_like;

namespace {

void require_rows(const char* op, const Tensor& logits) {
  detail::require_rank(op, "logits", logits, 2);
  if (logits.dim(1) < 1) fail("{}: logits {} have no classes", op, logits.shape().str());
}

// A tensor of `shape` filled with alpha * s, s a one-element tensor, without reading s on the
// host: ones (n,1) x s (1,1) keeps the computation on s's device.
Tensor broadcast_scalar(const Tensor& s, const Shape& shape, double alpha) {
  const Tensor ones = Tensor::full(Shape{shape.numel(), 1}, alpha, s.dtype(), s.device());
  return matmul(ones, s.view(Shape{1, 1})).view(shape);
}

}  // namespace

Tensor softmax(const Tensor& logits) {
  require_rows("softmax", logits);
  const int64_t N = logits.dim(0), K = logits.dim(1);
  Tensor probs = empty_like(logits);
  with_dtype(logits, [&](auto tag) {
    using T = decltype(tag);
    kernel(&KernelTable<T>::softmax_forward, "softmax", logits)(probs.data<T>(), logits.data<T>(), N, K);
  });
  if (should_record({logits})) {
    record("softmax", {logits}, {probs}, [saved = probs.detach(), N, K](const std::vector<Tensor>& g) {
      Tensor dlogits = empty_like(saved);
      with_dtype(saved, [&](auto tag) {
        using T = decltype(tag);
        kernel(&KernelTable<T>::softmax_backward, "softmax backward", saved)(
            dlogits.data<T>(), g[0].data<T>(), saved.data<T>(), N, K);
      });
      return std::vector<Tensor>{dlogits};
    });
  }
  return probs;
}

namespace {

// The fused output losses: forward writes per-row losses and probabilities from logits and
// targets, their mean is the loss; backward maps the loss gradient, spread over the rows, to
// the logits. One tape node covers the whole op.
template <typename Forward, typename Backward>
CrossEntropy fused_cross_entropy(const char* op, Forward forward, Backward backward, const Tensor& logits,
                                 const Tensor& targets) {
  require_rows(op, logits);
  detail::require_same(op, "logits", logits, "targets", targets);
  const int64_t N = logits.dim(0), K = logits.dim(1);
  Tensor losses = empty_as(Shape{N}, logits), probs = empty_like(logits), total = empty_as(Shape{}, logits);
  with_dtype(logits, [&](auto tag) {
    using T = decltype(tag);
    kernel(forward(tag), op, logits)(losses.data<T>(), probs.data<T>(), logits.data<T>(), targets.data<T>(), N, K);
    kernel(&KernelTable<T>::sum_all, op, logits)(total.data<T>(), losses.data<T>(), N);
  });
  Tensor loss;
  {
    NoGradGuard no_grad;
    loss = scale(total, 1.0 / static_cast<double>(std::max<int64_t>(N, 1)));
  }
  if (should_record({logits, targets})) {
    record(op, {logits, targets}, {loss}, [op, backward, probs, targets, N, K](const std::vector<Tensor>& g) {
      const Tensor dlosses = broadcast_scalar(g[0], Shape{N}, 1.0 / static_cast<double>(N));
      Tensor dlogits = empty_like(probs);
      with_dtype(probs, [&](auto tag) {
        using T = decltype(tag);
        kernel(backward(tag), op, probs)(dlogits.data<T>(), dlosses.data<T>(), probs.data<T>(), targets.data<T>(), N,
                                         K);
      });
      return std::vector<Tensor>{dlogits, Tensor()};
    });
  }
  return {loss, probs};
}

}  // namespace

CrossEntropy softmax_cross_entropy(const Tensor& logits, const Tensor& targets) {
  return fused_cross_entropy(
      "softmax_cross_entropy", [](auto tag) { return &KernelTable<decltype(tag)>::softmax_xent_forward; },
      [](auto tag) { return &KernelTable<decltype(tag)>::softmax_xent_backward; }, logits, targets);
}

CrossEntropy sigmoid_cross_entropy(const Tensor& logits, const Tensor& targets) {
  return fused_cross_entropy(
      "sigmoid_cross_entropy", [](auto tag) { return &KernelTable<decltype(tag)>::sigmoid_xent_forward; },
      [](auto tag) { return &KernelTable<decltype(tag)>::sigmoid_xent_backward; }, logits, targets);
}

Tensor sum(const Tensor& x) {
  detail::require_defined("sum", "x", x);
  Tensor out = empty_as(Shape{}, x);
  with_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    kernel(&KernelTable<T>::sum_all, "sum", x)(out.data<T>(), x.data<T>(), x.numel());
  });
  if (should_record({x})) {
    record("sum", {x}, {out}, [in_shape = x.shape()](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{broadcast_scalar(g[0], in_shape, 1.0)};
    });
  }
  return out;
}

Tensor mean(const Tensor& x) {
  detail::require_defined("mean", "x", x);
  if (x.numel() == 0) fail("mean: x {} is empty", x.shape().str());
  return scale(sum(x), 1.0 / static_cast<double>(x.numel()));
}

int64_t accuracy_count(const Tensor& scores, const Tensor& targets) {
  require_rows("accuracy", scores);
  detail::require_same("accuracy", "scores", scores, "targets", targets);
  int64_t correct = 0;
  with_dtype(scores, [&](auto tag) {
    using T = decltype(tag);
    kernel(&KernelTable<T>::accuracy_count, "accuracy", scores)(&correct, scores.data<T>(), targets.data<T>(),
                                                                scores.dim(0), scores.dim(1));
  });
  return correct;
}

int64_t binary_accuracy_count(const Tensor& probs, const Tensor& targets) {
  require_rows("binary_accuracy", probs);
  detail::require_same("binary_accuracy", "probs", probs, "targets", targets);
  int64_t correct = 0;
  with_dtype(probs, [&](auto tag) {
    using T = decltype(tag);
    kernel(&KernelTable<T>::binary_accuracy_count, "binary_accuracy", probs)(
        &correct, probs.data<T>(), targets.data<T>(), probs.dim(0), probs.dim(1));
  });
  return correct;
}

}  // namespace hisvid::ops
