// The tape: accumulation, no_grad, release of intermediate gradients, errors.
#include <gtest/gtest.h>

#include <map>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace hisvid {
namespace {

Tensor leaf(std::vector<double> values) {
  const Shape shape{static_cast<int64_t>(values.size())};
  Tensor t = Tensor::from_vector(values, shape, DType::Float64);
  t.set_requires_grad(true);
  return t;
}

TEST(Autograd, GradientsOfATensorUsedTwiceAdd) {
  // L = sum(x * x + x) -> dL/dx = 2x + 1
  const Tensor x = leaf({1, -2, 3});
  backward(ops::sum(ops::add(ops::mul(x, x), x)));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{3, -3, 7}));
}

TEST(Autograd, LeafGradientsAccumulateUntilZeroGrad) {
  const Tensor x = leaf({1, 2});
  backward(ops::sum(ops::scale(x, 3.0)));
  backward(ops::sum(ops::scale(x, 3.0)));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{6, 6}));
  x.impl()->grad.reset();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, NoGradRecordsNothing) {
  const Tensor x = leaf({1, 2});
  Tape::current().clear();
  {
    NoGradGuard guard;
    const Tensor y = ops::mul(x, x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(Tape::current().size(), 0u);
  }
  EXPECT_TRUE(grad_enabled());
}

TEST(Autograd, InputsWithoutGradAreNotRecorded) {
  Tape::current().clear();
  const Tensor a = Tensor::full({2}, 1.0, DType::Float64);
  const Tensor y = ops::add(a, a);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(Tape::current().size(), 0u);
}

TEST(Autograd, BackwardClearsTapeAndReleasesIntermediateGradients) {
  const Tensor x = leaf({1, 2, 3});
  const Tensor y = ops::scale(x, 2.0);
  const Tensor loss = ops::sum(y);
  EXPECT_EQ(Tape::current().size(), 2u);
  backward(loss);
  EXPECT_EQ(Tape::current().size(), 0u);
  EXPECT_FALSE(y.grad().defined());
  EXPECT_TRUE(x.grad().defined());
}

TEST(Autograd, GradientOfOnlyOneOutputOfAMultiOutputOp) {
  // lstm_cell returns (h, c); a loss on c alone must still reach z.
  const Tensor z = leaf(std::vector<double>(8, 0.3));
  const Tensor z2 = ops::reshape(z, {1, 8});
  const ops::LstmState s = ops::lstm_cell(z2, Tensor(), Activation::Tanh, Activation::Sigmoid);
  backward(ops::sum(s.c));
  const std::vector<double> g = z.grad().to_vector();
  // c = i * g with f irrelevant (c_prev = 0) and o unused: df and do are exactly zero.
  EXPECT_NE(g[0], 0.0);
  EXPECT_EQ(g[2], 0.0);
  EXPECT_EQ(g[6], 0.0);
}

TEST(Autograd, BackwardErrors) {
  const Tensor x = leaf({1, 2});
  EXPECT_THROW(backward(ops::scale(x, 2.0)), Error);  // not a scalar
  EXPECT_EQ(Tape::current().size(), 0u);              // the failed call left no stale nodes
  EXPECT_THROW(backward(Tensor::scalar(1.0)), Error);  // nothing requires grad
}

// Counts backward calls per label.
class CountingProfiler final : public BackwardProfiler {
 public:
  std::map<int, int> before_calls, after_calls;
  void before(const Node& node) override { ++before_calls[node.label]; }
  void after(const Node& node) override { ++after_calls[node.label]; }
};

TEST(Autograd, LabelsAndProfilerSeeEveryNode) {
  const Tensor x = leaf({1, 2});
  Tensor y;
  {
    TapeLabel outer(7);
    y = ops::scale(x, 2.0);
    {
      TapeLabel inner(8);
      y = ops::mul(y, y);
    }
    y = ops::add(y, x);
  }
  const Tensor loss = ops::sum(y);  // unlabelled: -1
  CountingProfiler profiler;
  Tape::current().set_profiler(&profiler);
  backward(loss);
  Tape::current().set_profiler(nullptr);
  EXPECT_EQ(profiler.before_calls, (std::map<int, int>{{-1, 1}, {7, 2}, {8, 1}}));
  EXPECT_EQ(profiler.after_calls, profiler.before_calls);
}


}  // namespace
}  // namespace hisvid
