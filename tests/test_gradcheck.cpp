// Float64 gradient checks of every engine op, on inputs and weights, odd sizes included.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "tests/gradcheck.h"

namespace hisvid::testing {
namespace {

TEST(GradCheck, AddSubMul) {
  const Tensor a = random_input({3, 5}, 1), b = random_input({3, 5}, 2);
  EXPECT_GRAD_OK(grad_check([](const std::vector<Tensor>& in) { return ops::add(in[0], in[1]); }, {a, b}));
  EXPECT_GRAD_OK(grad_check([](const std::vector<Tensor>& in) { return ops::sub(in[0], in[1]); }, {a, b}));
  EXPECT_GRAD_OK(grad_check([](const std::vector<Tensor>& in) { return ops::mul(in[0], in[1]); }, {a, b}));
  // The same tensor on both sides: its two gradient contributions must add up.
  EXPECT_GRAD_OK(grad_check([](const std::vector<Tensor>& in) { return ops::mul(in[0], in[0]); }, {a}));
}

TEST(GradCheck, Scale) {
  const Tensor a = random_input({7}, 3);
  EXPECT_GRAD_OK(grad_check([](const std::vector<Tensor>& in) { return ops::scale(in[0], -2.5); }, {a}));
}

TEST(GradCheck, BiasAdd) {
  const Tensor x = random_input({2, 3, 5}, 4), b = random_input({5}, 5);
  EXPECT_GRAD_OK(
      grad_check([](const std::vector<Tensor>& in) { return ops::bias_add(in[0], in[1]); }, {x, b}));
}

TEST(GradCheck, Activations) {
  // Inputs over [-4, 4) visit both flat regions of hard_sigmoid and both sides of relu.
  const Tensor x = random_input({4, 9}, 6, -4.0, 4.0);
  for (Activation act : {Activation::Linear, Activation::Relu, Activation::Tanh, Activation::Sigmoid,
                         Activation::HardSigmoid, Activation::HardSigmoidKeras3}) {
    SCOPED_TRACE(static_cast<int>(act));
    EXPECT_GRAD_OK(
        grad_check([act](const std::vector<Tensor>& in) { return ops::activation(in[0], act); }, {x}));
  }
}

TEST(GradCheck, ReshapeFlattenTime) {
  const Tensor x = random_input({2, 3, 2, 2}, 7);
  EXPECT_GRAD_OK(grad_check([](const std::vector<Tensor>& in) { return ops::reshape(in[0], {6, -1}); }, {x}));
  EXPECT_GRAD_OK(grad_check([](const std::vector<Tensor>& in) { return ops::flatten(in[0]); }, {x}));
  EXPECT_GRAD_OK(grad_check(
      [](const std::vector<Tensor>& in) { return ops::split_time(ops::merge_time(in[0]), 3); }, {x}));
}

TEST(GradCheck, SliceConcat) {
  const Tensor a = random_input({2, 5, 3}, 8), b = random_input({2, 2, 3}, 9);
  EXPECT_GRAD_OK(grad_check([](const std::vector<Tensor>& in) { return ops::slice(in[0], 1, 1, 3); }, {a}));
  EXPECT_GRAD_OK(grad_check([](const std::vector<Tensor>& in) { return ops::slice(in[0], -1, 2, 1); }, {a}));
  EXPECT_GRAD_OK(grad_check(
      [](const std::vector<Tensor>& in) {
        return ops::concat({in[0], in[1]}, 1);
      },
      {a, b}));
}

TEST(GradCheck, Unstack) {
  const Tensor x = random_input({2, 4, 3}, 40);
  // Every slice used, weighted differently.
  EXPECT_GRAD_OK(grad_check(
      [](const std::vector<Tensor>& in) {
        const std::vector<Tensor> parts = ops::unstack(in[0], 1);
        return ops::concat({parts[3], ops::scale(parts[0], 2.0), parts[1], parts[2]}, 1);
      },
      {x}));
  // Some slices unused: their gradient is zero.
  EXPECT_GRAD_OK(grad_check([](const std::vector<Tensor>& in) { return ops::unstack(in[0], -1)[1]; }, {x}));
}

TEST(GradCheck, MatmulAllTransposes) {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      SCOPED_TRACE(fmt::format("trans_a={} trans_b={}", ta, tb));
      const Tensor a = random_input(ta ? Shape{5, 3} : Shape{3, 5}, 10);
      const Tensor b = random_input(tb ? Shape{4, 5} : Shape{5, 4}, 11);
      EXPECT_GRAD_OK(grad_check(
          [ta, tb](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[1], ta, tb); }, {a, b}));
    }
  }
}

struct ConvCase {
  Shape input, kernel;
  int stride_h, stride_w;
  Padding padding;
  bool bias;
};

TEST(GradCheck, Conv2d) {
  const std::vector<ConvCase> cases = {
      {{2, 5, 5, 3}, {3, 3, 3, 4}, 1, 1, Padding::Same, true},
      {{1, 6, 7, 2}, {3, 3, 2, 3}, 1, 1, Padding::Valid, true},
      {{2, 7, 6, 2}, {3, 2, 2, 3}, 2, 2, Padding::Same, false},  // odd total padding: extra after
      {{1, 8, 5, 1}, {4, 4, 1, 2}, 3, 1, Padding::Same, true},
      {{3, 4, 4, 5}, {1, 1, 5, 2}, 1, 1, Padding::Valid, true},
  };
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(c.input.str() + " * " + c.kernel.str());
    const Tensor x = random_input(c.input, 12), w = random_input(c.kernel, 13);
    const Tensor b = c.bias ? random_input({c.kernel[3]}, 14) : Tensor();
    EXPECT_GRAD_OK(grad_check(
        [&](const std::vector<Tensor>& in) {
          return ops::conv2d(in[0], in[1], in[2], c.stride_h, c.stride_w, c.padding);
        },
        {x, w, b}));
  }
}

TEST(GradCheck, MaxPool2d) {
  struct Case {
    Shape input;
    int ph, pw, sh, sw;
    Padding padding;
  };
  const std::vector<Case> cases = {
      {{2, 6, 6, 3}, 2, 2, 2, 2, Padding::Valid},
      {{1, 7, 5, 2}, 2, 2, 2, 2, Padding::Same},  // padded after: 7 -> 4, 5 -> 3
      {{1, 9, 9, 1}, 4, 4, 4, 4, Padding::Same},
      {{2, 5, 5, 2}, 3, 3, 1, 1, Padding::Valid},  // overlapping windows
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.input.str());
    const Tensor x = random_input(c.input, 15);
    EXPECT_GRAD_OK(grad_check(
        [&](const std::vector<Tensor>& in) {
          return ops::max_pool2d(in[0], c.ph, c.pw, c.sh, c.sw, c.padding);
        },
        {x}));
  }
}

// The fused Conv2D + activation + MaxPooling2D (kernels/conv2d_pool.h), with a Dropout folded
// in where dropout > 0 (drawing kConvPoolDraw).
struct ConvPoolCase {
  Shape input, kernel;
  ops::ConvSpec conv;
  Activation act;
  ops::PoolSpec pool;
  bool bias;
  float dropout = 0.0f;
};
const RandomDraw kConvPoolDraw{7, 3};

const std::vector<ConvPoolCase>& conv_pool_cases() {
  static const std::vector<ConvPoolCase> cases = {
      {{2, 8, 8, 3},
       {3, 3, 3, 4},
       {1, 1, Padding::Same},
       Activation::Relu,
       {4, 4, 4, 4, Padding::Valid},
       true},
      {{1, 7, 6, 2},
       {3, 3, 2, 3},
       {1, 1, Padding::Valid},
       Activation::Tanh,
       {2, 2, 2, 2, Padding::Same},
       true},
      {{2, 7, 7, 2},
       {3, 3, 2, 3},
       {1, 1, Padding::Same},
       Activation::Relu,
       {3, 3, 2, 2, Padding::Same},
       false},
      {{1, 9, 8, 2},
       {3, 2, 2, 3},
       {2, 2, Padding::Same},
       Activation::Sigmoid,
       {2, 2, 1, 1, Padding::Valid},
       true},
      {{2, 4, 4, 3},
       {3, 3, 3, 2},
       {1, 1, Padding::Same},
       Activation::Linear,
       {2, 2, 2, 2, Padding::Valid},
       true},
      {{2, 8, 8, 3},
       {3, 3, 3, 4},
       {1, 1, Padding::Same},
       Activation::Relu,
       {2, 2, 2, 2, Padding::Valid},
       true,
       0.4f},
      {{2, 5, 6, 2},
       {3, 3, 2, 3},
       {1, 1, Padding::Same},
       Activation::Linear,
       {2, 2, 2, 2, Padding::Same},
       false,
       0.25f},
  };
  return cases;
}

TEST(GradCheck, Conv2dActPool) {
  for (const ConvPoolCase& c : conv_pool_cases()) {
    SCOPED_TRACE(c.input.str() + " * " + c.kernel.str() + " " + activation_label(c.act) + " dropout " +
                 std::to_string(c.dropout));
    const Tensor x = random_input(c.input, 41), w = random_input(c.kernel, 42);
    const Tensor b = c.bias ? random_input({c.kernel[3]}, 43) : Tensor();
    EXPECT_GRAD_OK(grad_check(
        [&](const std::vector<Tensor>& in) {
          return ops::conv2d_act_pool(in[0], in[1], in[2], c.conv, c.act, c.pool, c.dropout, kConvPoolDraw);
        },
        {x, w, b}));
  }
}

// |a - b| <= tol * max(|b|, rms of b) everywhere; NaN fails.
void expect_near_values(const Tensor& a, const Tensor& b, double tol) {
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  ASSERT_EQ(x.size(), y.size());
  double ss = 0.0;
  for (double v : y) ss += v * v;
  const double rms = y.empty() ? 0.0 : std::sqrt(ss / double(y.size()));
  int bad = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (!(std::fabs(x[i] - y[i]) <= tol * std::max(std::fabs(y[i]), rms)) && ++bad <= 3) {
      ADD_FAILURE() << "element " << i << ": " << x[i] << " against " << y[i] << " (tol " << tol << ")";
    }
  }
  EXPECT_EQ(bad, 0);
}

// The fused op against the three (four, with a dropout) ops it replaces, values and gradients,
// in float64 (where only
// the order of a few additions differs) and float32 (where the CPU convolution may also pick
// another algorithm for a chunk of images than for the whole batch).
TEST(FusedConvPool, MatchesTheThreeOps) {
  // float64: the same naive kernels, composed in another order; float32: rounding of sums of
  // up to 27 products, and of the gradients' sums over up to 2*8*8 positions.
  constexpr double kFloat64 = 1e-12, kFloat32 = 2e-5;
  for (DType dtype : {DType::Float64, DType::Float32}) {
    const double tol = dtype == DType::Float64 ? kFloat64 : kFloat32;
    for (const ConvPoolCase& c : conv_pool_cases()) {
      SCOPED_TRACE(c.input.str() + " * " + c.kernel.str() + " " + activation_label(c.act) + " dropout " +
                   std::to_string(c.dropout) + " " + dtype_name(dtype));
      std::vector<Tensor> fused_in, plain_in;
      for (const Tensor& t : {random_input(c.input, 51), random_input(c.kernel, 52),
                              c.bias ? random_input({c.kernel[3]}, 53) : Tensor()}) {
        fused_in.push_back(t.defined() ? t.detach().to(dtype).set_requires_grad(true) : Tensor());
        plain_in.push_back(t.defined() ? t.detach().to(dtype).set_requires_grad(true) : Tensor());
      }
      Tape::current().clear();
      const Tensor fused = ops::conv2d_act_pool(fused_in[0], fused_in[1], fused_in[2], c.conv, c.act, c.pool,
                                                c.dropout, kConvPoolDraw);
      const Tensor probe = random_input(fused.shape(), 54).to(dtype);
      backward(ops::sum(ops::mul(fused, probe)));
      Tape::current().clear();
      const Tensor plain = ops::dropout(
          ops::max_pool2d(ops::activation(ops::conv2d(plain_in[0], plain_in[1], plain_in[2], c.conv.stride_h,
                                                      c.conv.stride_w, c.conv.padding),
                                          c.act),
                          c.pool.pool_h, c.pool.pool_w, c.pool.stride_h, c.pool.stride_w, c.pool.padding),
          c.dropout, kConvPoolDraw);
      backward(ops::sum(ops::mul(plain, probe)));
      Tape::current().clear();
      ASSERT_EQ(fused.shape(), plain.shape());
      expect_near_values(fused, plain, tol);
      for (size_t i = 0; i < fused_in.size(); ++i) {
        if (!fused_in[i].defined()) continue;
        SCOPED_TRACE("gradient of input " + std::to_string(i));
        expect_near_values(fused_in[i].grad(), plain_in[i].grad(), tol);
      }
    }
  }
}

// A folded dropout is the Dropout op after the fused op, bit for bit, values and gradients: the
// same mask bits and scale, the same products (the fused backward multiplies dout by the mask,
// then by act', as the two ops do one after the other).
TEST(FusedConvPool, FoldedDropoutIsTheDropoutOpBitForBit) {
  for (DType dtype : {DType::Float64, DType::Float32}) {
    for (const ConvPoolCase& c : conv_pool_cases()) {
      if (c.dropout == 0.0f) continue;
      SCOPED_TRACE(c.input.str() + " * " + c.kernel.str() + " " + activation_label(c.act) + " " +
                   dtype_name(dtype));
      std::vector<Tensor> folded_in, apart_in;
      for (const Tensor& t : {random_input(c.input, 71), random_input(c.kernel, 72),
                              c.bias ? random_input({c.kernel[3]}, 73) : Tensor()}) {
        folded_in.push_back(t.defined() ? t.detach().to(dtype).set_requires_grad(true) : Tensor());
        apart_in.push_back(t.defined() ? t.detach().to(dtype).set_requires_grad(true) : Tensor());
      }
      Tape::current().clear();
      const Tensor folded = ops::conv2d_act_pool(folded_in[0], folded_in[1], folded_in[2], c.conv, c.act,
                                                 c.pool, c.dropout, kConvPoolDraw);
      const Tensor probe = random_input(folded.shape(), 74).to(dtype);
      backward(ops::sum(ops::mul(folded, probe)));
      Tape::current().clear();
      const Tensor apart =
          ops::dropout(ops::conv2d_act_pool(apart_in[0], apart_in[1], apart_in[2], c.conv, c.act, c.pool),
                       c.dropout, kConvPoolDraw);
      backward(ops::sum(ops::mul(apart, probe)));
      Tape::current().clear();
      EXPECT_EQ(folded.to_vector(), apart.to_vector());
      for (size_t i = 0; i < folded_in.size(); ++i) {
        if (!folded_in[i].defined()) continue;
        EXPECT_EQ(folded_in[i].grad().to_vector(), apart_in[i].grad().to_vector())
            << "gradient of input " << i;
      }
    }
  }
}

// The op refuses a dropout after an activation whose derivative the dropped output does not give.
TEST(FusedConvPool, RefusesADropoutAfterOtherActivations) {
  const Tensor x = random_input({1, 4, 4, 2}, 61), w = random_input({3, 3, 2, 2}, 62);
  try {
    ops::conv2d_act_pool(x, w, Tensor(), {1, 1, Padding::Same}, Activation::Tanh,
                         {2, 2, 2, 2, Padding::Valid}, 0.5f, kConvPoolDraw);
    ADD_FAILURE() << "a dropout after tanh was accepted";
  } catch (const hisvid::Error& e) {
    EXPECT_NE(std::string(e.what()).find("relu or linear"), std::string::npos) << e.what();
  }
}

TEST(GradCheck, Dropout) {
  const Tensor x = random_input({3, 4, 5}, 16);
  EXPECT_GRAD_OK(grad_check(
      [](const std::vector<Tensor>& in) {
        return ops::dropout(in[0], 0.4f, RandomDraw{7, 3});
      },
      {x}));
}

TEST(GradCheck, LstmCell) {
  const Tensor z = random_input({3, 4 * 5}, 17, -2.0, 2.0), c_prev = random_input({3, 5}, 18);
  for (Activation rec : {Activation::Sigmoid, Activation::HardSigmoid, Activation::HardSigmoidKeras3}) {
    SCOPED_TRACE(static_cast<int>(rec));
    // h and c both feed the objective, so both backward paths are exercised.
    EXPECT_GRAD_OK(grad_check(
        [rec](const std::vector<Tensor>& in) {
          const ops::LstmState s = ops::lstm_cell(in[0], in[1], Activation::Tanh, rec);
          return ops::concat({s.h, s.c}, 1);
        },
        {z, c_prev}));
    // Zero initial state (c_prev undefined), only h used.
    EXPECT_GRAD_OK(grad_check(
        [rec](const std::vector<Tensor>& in) {
          return ops::lstm_cell(in[0], Tensor(), Activation::Tanh, rec).h;
        },
        {z}));
  }
}

TEST(GradCheck, LstmRecurrence) {
  const int64_t N = 3, T = 4, U = 5;
  const Tensor xz = random_input({N, T, 4 * U}, 19, -2.0, 2.0), R = random_input({U, 4 * U}, 20, -0.5, 0.5);
  std::vector<double> keep = random_input({4, N, U}, 21, 0.0, 1.0).to_vector();
  for (double& m : keep) m = m < 0.3 ? 0.0 : 1.0 / 0.7;  // recurrent dropout 0.3
  const Tensor masks = Tensor::from_vector(keep, {4, N, U}, DType::Float64);
  for (Activation rec : {Activation::Sigmoid, Activation::HardSigmoid}) {
    for (bool masked : {false, true}) {
      for (bool sequences : {false, true}) {
        SCOPED_TRACE(std::string(activation_label(rec)) + (masked ? " masks" : "") +
                     (sequences ? " sequences" : " last"));
        EXPECT_GRAD_OK(grad_check(
            [&](const std::vector<Tensor>& in) {
              return ops::lstm_recurrence(in[0], in[1], masked ? masks : Tensor(), Activation::Tanh, rec,
                                          sequences);
            },
            {xz, R}));
      }
    }
  }
}

TEST(GradCheck, ConvLstmRecurrence) {
  const int64_t N = 2, T = 3, H = 3, W = 4, F = 2;
  const Tensor xz = random_input({N, T, H, W, 4 * F}, 22, -2.0, 2.0),
               R = random_input({3, 3, F, 4 * F}, 23, -0.5, 0.5);
  std::vector<double> keep = random_input({4, N, H, W, F}, 24, 0.0, 1.0).to_vector();
  for (double& m : keep) m = m < 0.2 ? 0.0 : 1.25;  // recurrent dropout 0.2
  const Tensor masks = Tensor::from_vector(keep, {4, N, H, W, F}, DType::Float64);
  for (bool masked : {false, true}) {
    for (bool sequences : {false, true}) {
      SCOPED_TRACE(std::string(masked ? "masks" : "no masks") + (sequences ? ", sequences" : ", last"));
      EXPECT_GRAD_OK(grad_check(
          [&](const std::vector<Tensor>& in) {
            return ops::convlstm_recurrence(in[0], in[1], masked ? masks : Tensor(), Activation::Tanh,
                                            Activation::HardSigmoid, sequences);
          },
          {xz, R}));
    }
  }
}

TEST(GradCheck, BatchNorm) {
  const Tensor x = random_input({2, 3, 3, 4}, 19), gamma = random_input({4}, 20, 0.5, 1.5),
               beta = random_input({4}, 21);
  EXPECT_GRAD_OK(grad_check(
      [](const std::vector<Tensor>& in) { return ops::batch_norm_train(in[0], in[1], in[2], 1e-3f).y; },
      {x, gamma, beta}));
  Generator rng(22);
  const Tensor moving_mean = rng.uniform({4}, -0.5, 0.5, DType::Float64),
               moving_var = rng.uniform({4}, 0.5, 2.0, DType::Float64);
  EXPECT_GRAD_OK(grad_check(
      [&](const std::vector<Tensor>& in) {
        return ops::batch_norm_infer(in[0], in[1], in[2], moving_mean, moving_var, 1e-3f);
      },
      {x, gamma, beta}));
}

TEST(GradCheck, SoftmaxAndCrossEntropy) {
  const Tensor logits = random_input({4, 5}, 23, -3.0, 3.0);
  EXPECT_GRAD_OK(grad_check([](const std::vector<Tensor>& in) { return ops::softmax(in[0]); }, {logits}));
  const Tensor onehot = Tensor::from_vector(std::vector<double>{0, 1, 0,   0,   0,  //
                                                                0, 0, 0,   0,   1,  //
                                                                1, 0, 0,   0,   0,  //
                                                                0, 0, 0.5, 0.5, 0},
                                            {4, 5}, DType::Float64);
  EXPECT_GRAD_OK(grad_check(
      [&](const std::vector<Tensor>& in) { return ops::softmax_cross_entropy(in[0], onehot).loss; },
      {logits}));
}

TEST(GradCheck, SigmoidCrossEntropy) {
  // Logits over [-6, 6): both saturated sides; targets 0, 1 and soft (label smoothing).
  const Tensor logits = random_input({5, 2}, 25, -6.0, 6.0);
  const Tensor targets =
      Tensor::from_vector(std::vector<double>{0, 1, 1, 0, 1, 1, 0, 0, 0.9, 0.1}, {5, 2}, DType::Float64);
  EXPECT_GRAD_OK(grad_check(
      [&](const std::vector<Tensor>& in) { return ops::sigmoid_cross_entropy(in[0], targets).loss; },
      {logits}));
}

TEST(GradCheck, GlobalAveragePool) {
  const Tensor x = random_input({2, 3, 4, 5}, 26);  // (N, H, W, C): 12 positions averaged per channel
  EXPECT_GRAD_OK(
      grad_check([](const std::vector<Tensor>& in) { return ops::global_average_pool(in[0]); }, {x}));
}

TEST(GradCheck, SpatialDropout) {
  const Tensor x = random_input({3, 2, 4, 5}, 27);
  EXPECT_GRAD_OK(grad_check(
      [](const std::vector<Tensor>& in) {
        return ops::spatial_dropout(in[0], 0.4f, RandomDraw{7, 3});
      },
      {x}));
}

TEST(GradCheck, SumMean) {
  const Tensor x = random_input({3, 2, 5}, 24);
  EXPECT_GRAD_OK(grad_check([](const std::vector<Tensor>& in) { return ops::sum(in[0]); }, {x}));
  EXPECT_GRAD_OK(grad_check([](const std::vector<Tensor>& in) { return ops::mean(in[0]); }, {x}));
}

// f(x) = x^2 + x with a backward chosen by the test: the checker's own check. A checker that
// passed a wrong backward would make every test above one that cannot fail.
enum class Backward { Right, OffByOnePerMille, MissingTerm, NaN };

Tensor square_plus(const Tensor& x, Backward backward) {
  Tensor out;
  {
    NoGradGuard no_grad;
    out = ops::add(ops::mul(x, x), x);
  }
  if (should_record({x})) {
    record("square_plus", {x}, {out}, [x, backward](const std::vector<Tensor>& g) {
      const Tensor two_x = ops::scale(x, 2.0);
      Tensor dx = ops::add(two_x, Tensor::full(x.shape(), 1.0, DType::Float64));
      if (backward == Backward::OffByOnePerMille) dx = ops::scale(dx, 1.001);
      if (backward == Backward::MissingTerm) dx = two_x;
      if (backward == Backward::NaN) dx = Tensor::full(x.shape(), std::nan(""), DType::Float64);
      return std::vector<Tensor>{ops::mul(g[0], dx)};
    });
  }
  return out;
}

TEST(GradCheck, TheCheckerFailsAWrongBackward) {
  const Tensor x = random_input({3, 4}, 61);
  const auto check = [&](Backward backward) {
    return grad_check([backward](const std::vector<Tensor>& in) { return square_plus(in[0], backward); },
                      {x});
  };
  EXPECT_GRAD_OK(check(Backward::Right));
  for (const Backward wrong : {Backward::OffByOnePerMille, Backward::MissingTerm, Backward::NaN}) {
    SCOPED_TRACE(static_cast<int>(wrong));
    const GradCheckResult result = check(wrong);
    EXPECT_EQ(result.checked, 12);
    EXPECT_GT(result.max_error, kGradTolerance) << result.worst;
  }
}

}  // namespace
}  // namespace hisvid::testing
