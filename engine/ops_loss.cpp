// Softmax, the fused softmax + categorical and sigmoid + binary cross-entropies, reductions and
// accuracies.
#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"

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
    SoftmaxForward<T> k;
    k.probs = probs.data<T>(), k.logits = logits.data<T>(), k.N = N, k.K = K;
    run_kernel(k, logits.device());
  });
  if (should_record({logits})) {
    record("softmax", {logits}, {probs}, [saved = probs.detach(), N, K](const std::vector<Tensor>& g) {
      Tensor dlogits = empty_like(saved);
      with_dtype(saved, [&](auto tag) {
        using T = decltype(tag);
        SoftmaxBackward<T> k;
        k.dlogits = dlogits.data<T>(), k.dprobs = g[0].data<T>(), k.probs = saved.data<T>(), k.N = N, k.K = K;
        run_kernel(k, saved.device());
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
template <template <typename> class Forward, template <typename> class Backward>
CrossEntropy fused_cross_entropy(const char* op, const Tensor& logits, const Tensor& targets) {
  require_rows(op, logits);
  detail::require_same(op, "logits", logits, "targets", targets);
  const int64_t N = logits.dim(0), K = logits.dim(1);
  Tensor losses = empty_as(Shape{N}, logits), probs = empty_like(logits), total = empty_as(Shape{}, logits);
  with_dtype(logits, [&](auto tag) {
    using T = decltype(tag);
    Forward<T> k;
    k.losses = losses.data<T>(), k.probs = probs.data<T>(), k.logits = logits.data<T>();
    k.targets = targets.data<T>(), k.N = N, k.K = K;
    run_kernel(k, logits.device());
    SumAll<T> sum;
    sum.out = total.data<T>(), sum.inp = losses.data<T>(), sum.n = N;
    run_kernel(sum, logits.device());
  });
  Tensor loss;
  {
    NoGradGuard no_grad;
    loss = scale(total, 1.0 / static_cast<double>(std::max<int64_t>(N, 1)));
  }
  if (should_record({logits, targets})) {
    record(op, {logits, targets}, {loss}, [probs, targets, N, K](const std::vector<Tensor>& g) {
      const Tensor dlosses = broadcast_scalar(g[0], Shape{N}, 1.0 / static_cast<double>(N));
      Tensor dlogits = empty_like(probs);
      with_dtype(probs, [&](auto tag) {
        using T = decltype(tag);
        Backward<T> k;
        k.dlogits = dlogits.data<T>(), k.dlosses = dlosses.data<T>(), k.probs = probs.data<T>();
        k.targets = targets.data<T>(), k.N = N, k.K = K;
        run_kernel(k, probs.device());
      });
      return std::vector<Tensor>{dlogits, Tensor()};
    });
  }
  return {loss, probs};
}

}  // namespace

CrossEntropy softmax_cross_entropy(const Tensor& logits, const Tensor& targets) {
  return fused_cross_entropy<SoftmaxXentForward, SoftmaxXentBackward>("softmax_cross_entropy", logits,
                                                                      targets);
}

CrossEntropy sigmoid_cross_entropy(const Tensor& logits, const Tensor& targets) {
  return fused_cross_entropy<SigmoidXentForward, SigmoidXentBackward>("sigmoid_cross_entropy", logits,
                                                                      targets);
}

Tensor sum(const Tensor& x) {
  detail::require_defined("sum", "x", x);
  Tensor out = empty_as(Shape{}, x);
  with_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    SumAll<T> k;
    k.out = out.data<T>(), k.inp = x.data<T>(), k.n = x.numel();
    run_kernel(k, x.device());
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
  count_host_read();  // the count comes back to the host
  detail::require_same("accuracy", "scores", scores, "targets", targets);
  int64_t correct = 0;
  with_dtype(scores, [&](auto tag) {
    using T = decltype(tag);
    AccuracyCount<T> k;
    k.correct = &correct, k.scores = scores.data<T>(), k.targets = targets.data<T>();
    k.N = scores.dim(0), k.K = scores.dim(1);
    run_kernel(k, scores.device());
  });
  return correct;
}

int64_t binary_accuracy_count(const Tensor& probs, const Tensor& targets) {
  require_rows("binary_accuracy", probs);
  count_host_read();  // the count comes back to the host
  detail::require_same("binary_accuracy", "probs", probs, "targets", targets);
  int64_t correct = 0;
  with_dtype(probs, [&](auto tag) {
    using T = decltype(tag);
    BinaryAccuracyCount<T> k;
    k.correct = &correct, k.probs = probs.data<T>(), k.targets = targets.data<T>();
    k.N = probs.dim(0), k.K = probs.dim(1);
    run_kernel(k, probs.device());
  });
  return correct;
}

Tensor step_sums(Device device) { return Tensor::zeros(Shape{kStepSums}, DType::Float64, device); }

void add_step_metrics(const Tensor& sums, const Tensor& loss, const Tensor& scores, const Tensor& targets,
                      bool binary, double weight) {
  detail::require_defined("step_metrics", "sums", sums);
  if (sums.dtype() != DType::Float64 || sums.numel() != kStepSums) {
    fail("step_metrics: sums {} must be float64 ({}) from step_sums", sums.describe(), int(kStepSums));
  }
  require_rows("step_metrics", scores);
  detail::require_same("step_metrics", "scores", scores, "targets", targets);
  if (loss.numel() != 1 || loss.dtype() != scores.dtype()) {
    fail("step_metrics: loss {} must be one value of the scores' type ({})", loss.describe(),
         scores.describe());
  }
  if (sums.device() != scores.device() || loss.device() != scores.device()) {
    fail("step_metrics: sums on {}, loss on {}, scores on {}: all must be on one device", sums.device().str(),
         loss.device().str(), scores.device().str());
  }
  with_dtype(scores, [&](auto tag) {
    using T = decltype(tag);
    StepMetrics<T> k;
    k.sums = sums.data<double>(), k.loss = loss.data<T>(), k.scores = scores.data<T>();
    k.targets = targets.data<T>(), k.N = scores.dim(0), k.K = scores.dim(1), k.binary = binary;
    k.weight = weight;
    run_kernel(k, scores.device());
  });
}

}  // namespace hisvid::ops
