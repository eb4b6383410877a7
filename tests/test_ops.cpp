// Forward values of every op on small cases worked out by hand (the numbers are in the comments).
#include <gtest/gtest.h>

#include <cmath>

#include "engine/error.h"
#include "engine/kernel_profile.h"
#include "engine/ops.h"

namespace hisvid {
namespace {

// float64 ops against hand arithmetic: only the last few ulps may differ (absolute, on values
// of order 1; 2^-52 = 2.2e-16 per operation leaves a margin of thousands of operations).
constexpr double kUlps = 1e-12;
// A loss of ~1000 computed in float64: a few ulps of 1000 (2.3e-13 each).
constexpr double kLargeLossUlps = 1e-9;
// Binomial(1000, 0.75) kept elements: mean 750, standard deviation 13.7; 6 deviations either
// side (a false failure about once in 10^9 draws).
constexpr int kKeptSpread = 82;

Tensor d(std::vector<double> values, const Shape& shape) {
  return Tensor::from_vector(values, shape, DType::Float64);
}

void expect_values(const Tensor& t, const std::vector<double>& expected, double tolerance = kUlps) {
  const std::vector<double> got = t.to_vector();
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], tolerance) << "element " << i;
}

TEST(Ops, Arithmetic) {
  const Tensor a = d({1, 2, 3}, {3}), b = d({4, -5, 0.5}, {3});
  expect_values(ops::add(a, b), {5, -3, 3.5});
  expect_values(ops::sub(a, b), {-3, 7, 2.5});
  expect_values(ops::mul(a, b), {4, -10, 1.5});
  expect_values(ops::scale(a, -0.5), {-0.5, -1, -1.5});
  expect_values(ops::bias_add(d({1, 2, 3, 4, 5, 6}, {2, 3}), d({10, 20, 30}, {3})), {11, 22, 33, 14, 25, 36});
}

TEST(Ops, Activations) {
  const Tensor x = d({-3, -1, 0, 1, 3}, {5});
  expect_values(ops::relu(x), {0, 0, 0, 1, 3});
  // hard_sigmoid = clip(0.2x + 0.5, 0, 1): -3 -> 0 (clipped), -1 -> 0.3, 0 -> 0.5, 1 -> 0.7, 3 -> 1
  expect_values(ops::hard_sigmoid(x), {0, 0.3, 0.5, 0.7, 1});
  expect_values(ops::sigmoid(x), {1 / (1 + std::exp(3.0)), 1 / (1 + std::exp(1.0)), 0.5,
                                  1 / (1 + std::exp(-1.0)), 1 / (1 + std::exp(-3.0))});
  expect_values(ops::tanh(x), {std::tanh(-3.0), std::tanh(-1.0), 0, std::tanh(1.0), std::tanh(3.0)});
}

TEST(Ops, MatmulTransposes) {
  // [[1 2 3] [4 5 6]] x [[1 0] [0 1] [1 1]] = [[4 5] [10 11]]
  const Tensor a = d({1, 2, 3, 4, 5, 6}, {2, 3}), b = d({1, 0, 0, 1, 1, 1}, {3, 2});
  expect_values(ops::matmul(a, b), {4, 5, 10, 11});
  const Tensor at = d({1, 4, 2, 5, 3, 6}, {3, 2}), bt = d({1, 0, 1, 0, 1, 1}, {2, 3});
  expect_values(ops::matmul(at, b, true, false), {4, 5, 10, 11});
  expect_values(ops::matmul(a, bt, false, true), {4, 5, 10, 11});
  expect_values(ops::matmul(at, bt, true, true), {4, 5, 10, 11});
}

TEST(Ops, Conv2dSamePaddingByHand) {
  // 3x3 input 1..9, one channel; 3x3 kernel of ones, same padding: each output is the sum of
  // its 3x3 neighbourhood. Corners: 1+2+4+5 = 12, centre: 45. Bias 1.
  const Tensor x = d({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 3, 3, 1});
  const Tensor w = d(std::vector<double>(9, 1.0), {3, 3, 1, 1});
  expect_values(ops::conv2d(x, w, d({1}, {1}), 1, 1, Padding::Same), {13, 22, 17, 28, 46, 34, 25, 40, 29});
  // Valid: only the centre.
  expect_values(ops::conv2d(x, w, Tensor(), 1, 1, Padding::Valid), {45});
}

TEST(Ops, Conv2dStrideTwoSamePadsAfter) {
  // 4x4 input, 2x2 kernel of ones, stride 2, same: out 2x2, total padding (2-1)*2+2-4 = 0.
  // 5x5 input, 2x2 kernel, stride 2, same: out 3x3, total padding 2*2+2-5 = 1, all after, so the
  // last row/column windows hold one real row/column.
  std::vector<double> v(25);
  for (int i = 0; i < 25; ++i) v[i] = i;  // row-major 0..24
  const Tensor x = d(v, {1, 5, 5, 1});
  const Tensor w = d({1, 1, 1, 1}, {2, 2, 1, 1});
  // (0,0): 0+1+5+6 = 12; (0,1): 2+3+7+8 = 20; (0,2): 4+9 = 13
  // (1,0): 10+11+15+16 = 52; (1,1): 60; (1,2): 14+19 = 33
  // (2,0): 20+21 = 41; (2,1): 22+23 = 45; (2,2): 24
  expect_values(ops::conv2d(x, w, Tensor(), 2, 2, Padding::Same), {12, 20, 13, 52, 60, 33, 41, 45, 24});
}

TEST(Ops, Conv2dMixesChannels) {
  // One pixel, 2 channels (1, 2), 1x1 kernel (C=2, F=3) = [[1 0 1] [0 1 1]] -> (1, 2, 3).
  expect_values(ops::conv2d(d({1, 2}, {1, 1, 1, 2}), d({1, 0, 1, 0, 1, 1}, {1, 1, 2, 3}), Tensor(), 1, 1,
                            Padding::Valid),
                {1, 2, 3});
}

TEST(Ops, MaxPoolSamePadsAfter) {
  // 3x3 input, pool 2 stride 2 same: out 2x2, the padding (one row, one column) after.
  const Tensor x = d({1, 5, 2, 7, 3, 8, 4, 9, 6}, {1, 3, 3, 1});
  expect_values(ops::max_pool2d(x, 2, 2, 2, 2, Padding::Same), {7, 8, 9, 6});
  expect_values(ops::max_pool2d(x, 2, 2, 2, 2, Padding::Valid), {7});
  // Negative values: padding must never win.
  expect_values(ops::max_pool2d(ops::scale(x, -1.0), 2, 2, 2, 2, Padding::Same), {-1, -2, -4, -6});
}

TEST(Ops, DropoutMaskAndIdentity) {
  const Tensor x = Tensor::full({1000}, 1.0, DType::Float64);
  expect_values(ops::dropout(x, 0.0f, RandomDraw{1, 2}), std::vector<double>(1000, 1.0));
  const std::vector<double> out = ops::dropout(x, 0.25f, RandomDraw{1, 2}).to_vector();
  const std::vector<double> mask =
      ops::dropout_mask({1000}, 0.25f, RandomDraw{1, 2}, DType::Float64, Device::cpu()).to_vector();
  int kept = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i], mask[i]);
    EXPECT_TRUE(out[i] == 0.0 || std::fabs(out[i] - 1.0 / 0.75) < kUlps);
    kept += out[i] != 0.0;
  }
  EXPECT_NEAR(kept, 750, kKeptSpread);
  // A different draw gives a different mask.
  EXPECT_NE(ops::dropout(x, 0.25f, RandomDraw{1, 3}).to_vector(), out);
}

TEST(Ops, SliceAndConcat) {
  const Tensor x = d({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {2, 3, 2});
  const Tensor mid = ops::slice(x, 1, 1, 1);
  EXPECT_EQ(mid.shape(), (Shape{2, 1, 2}));
  expect_values(mid, {3, 4, 9, 10});
  const Tensor joined = ops::concat({ops::slice(x, 1, 0, 1), ops::slice(x, 1, 1, 2)}, 1);
  expect_values(joined, x.to_vector());
  expect_values(ops::concat({d({1, 2}, {2, 1}), d({3, 4, 5, 6}, {2, 2})}, -1), {1, 3, 4, 2, 5, 6});
}

TEST(Ops, Unstack) {
  const Tensor x = d({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {2, 3, 2});
  const std::vector<Tensor> steps = ops::unstack(x, 1);
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[1].shape(), (Shape{2, 2}));
  expect_values(steps[0], {1, 2, 7, 8});
  expect_values(steps[2], {5, 6, 11, 12});
  expect_values(ops::unstack(x, 0)[1], {7, 8, 9, 10, 11, 12});
}

TEST(Ops, TimeMergeAndFlatten) {
  const Tensor x = Tensor::zeros({2, 5, 4, 4, 3});
  EXPECT_EQ(ops::merge_time(x).shape(), (Shape{10, 4, 4, 3}));
  EXPECT_EQ(ops::split_time(ops::merge_time(x), 5).shape(), x.shape());
  EXPECT_EQ(ops::flatten(x).shape(), (Shape{2, 240}));
  EXPECT_EQ(ops::reshape(x, {2, 5, -1}).shape(), (Shape{2, 5, 48}));
}

TEST(Ops, LstmCellOneRowByHand) {
  // U = 1, z = [z_i, z_f, z_c, z_o] = [0, 0, 0, 0], c_prev = 2:
  // i = f = o = 0.5, g = tanh(0) = 0 -> c = 0.5 * 2 = 1, h = 0.5 * tanh(1).
  const ops::LstmState s =
      ops::lstm_cell(d({0, 0, 0, 0}, {1, 4}), d({2}, {1, 1}), Activation::Tanh, Activation::Sigmoid);
  expect_values(s.c, {1.0});
  expect_values(s.h, {0.5 * std::tanh(1.0)});
  // hard_sigmoid gates with z = [5, -5, 1, 0]: i = 1, f = 0, g = tanh(1), o = 0.5
  // -> c = tanh(1), h = 0.5 tanh(tanh(1)).
  const ops::LstmState hs =
      ops::lstm_cell(d({5, -5, 1, 0}, {1, 4}), d({2}, {1, 1}), Activation::Tanh, Activation::HardSigmoid);
  expect_values(hs.c, {std::tanh(1.0)});
  expect_values(hs.h, {0.5 * std::tanh(std::tanh(1.0))});
}

TEST(Ops, BatchNormTrainInferAndMovingStatistics) {
  // One channel, values 1 2 3 4: mean 2.5, biased var 1.25, unbiased 5/3.
  const Tensor x = d({1, 2, 3, 4}, {4, 1});
  const float eps = 1e-3f;
  const ops::BatchNormBatch bn = ops::batch_norm_train(x, d({2}, {1}), d({1}, {1}), eps);
  const double inv = 1.0 / std::sqrt(1.25 + static_cast<double>(eps));
  expect_values(bn.y, {1 - 3 * inv, 1 - inv, 1 + inv, 1 + 3 * inv});
  expect_values(bn.mean, {2.5});
  expect_values(bn.var, {1.25});
  // Keras 2's fused kernel: (1 - decay) * moving + (decay * 4/3) * batch, decay = float(1 - 0.99)
  // (0.01f, not 1 - 0.99f), the variance taken unbiased.
  const Tensor mm = d({0}, {1}), mv = d({1}, {1});
  ops::batch_norm_update_moving(mm, mv, bn.mean, bn.var, 4, 0.99, MovingUpdate::Fused, 4.0f / 3.0f);
  const double decay = static_cast<double>(0.01f), momentum = static_cast<double>(0.99f);
  expect_values(mm, {decay * 2.5});
  expect_values(mv, {(1 - decay) * 1.0 + (decay * static_cast<double>(4.0f / 3.0f)) * 1.25});
  // Keras 2's other path, moving - (moving - batch) * decay, and Keras 3's blend, moving *
  // momentum + batch * decay, take the biased variance.
  const Tensor assigned = d({1}, {1}), blended = d({1}, {1});
  ops::batch_norm_update_moving(d({0}, {1}), assigned, bn.mean, bn.var, 4, 0.99, MovingUpdate::AssignSub,
                                1.0f);
  expect_values(assigned, {1.0 - (1.0 - 1.25) * decay});
  ops::batch_norm_update_moving(d({0}, {1}), blended, bn.mean, bn.var, 4, 0.99, MovingUpdate::Blend, 1.0f);
  expect_values(blended, {1.0 * momentum + 1.25 * decay});
  // Inference uses the given statistics: (x - 2) / sqrt(4 + eps) * 2 + 1.
  const double s = 2.0 / std::sqrt(4.0 + static_cast<double>(eps));
  expect_values(ops::batch_norm_infer(x, d({2}, {1}), d({1}, {1}), d({2}, {1}), d({4}, {1}), eps),
                {1 - s, 1, 1 + s, 1 + 2 * s});
}

TEST(Ops, CrossEntropyFromLogits) {
  // Row 0: logits (0, ln 3): softmax (1/4, 3/4), target class 1 -> loss ln(4/3).
  // Row 1: logits (2, 2): softmax (1/2, 1/2), target class 0 -> loss ln 2.
  const Tensor logits = d({0, std::log(3.0), 2, 2}, {2, 2}), targets = d({0, 1, 1, 0}, {2, 2});
  expect_values(ops::softmax(logits), {0.25, 0.75, 0.5, 0.5});
  const ops::CrossEntropy xe = ops::softmax_cross_entropy(logits, targets);
  expect_values(xe.loss, {(std::log(4.0 / 3.0) + std::log(2.0)) / 2});
  expect_values(xe.probs, {0.25, 0.75, 0.5, 0.5});
  // No clipping: a confident wrong answer costs its full log-probability (~1000), not -log(1e-7).
  const ops::CrossEntropy wrong = ops::softmax_cross_entropy(d({1000, 0}, {1, 2}), d({0, 1}, {1, 2}));
  EXPECT_NEAR(wrong.loss.item(), 1000.0, kLargeLossUlps);
}

TEST(Ops, ReductionsAndAccuracy) {
  const Tensor x = d({1, 2, 3, 4, 5, 6}, {2, 3});
  expect_values(ops::sum(x), {21});
  expect_values(ops::mean(x), {3.5});
  // Row 0 predicts class 2 (target 2), row 1 predicts class 0 (target 1); ties take the first.
  const Tensor scores = d({0.1, 0.2, 0.7, 0.5, 0.5, 0.0}, {2, 3}), targets = d({0, 0, 1, 0, 1, 0}, {2, 3});
  EXPECT_EQ(ops::accuracy_count(scores, targets), 1);
}

// The kernel profile (engine/kernel_profile.h) times each kernel-table call and each fill on its
// device while it is active: one row per kernel with its call count, the calls made before it
// started left out, then starting over after rows(). One profile per thread at a time.
TEST(KernelProfile, CountsEachKernelCallWhileActive) {
  const Tensor x = Tensor::full({2, 8, 8, 3}, 0.5), w = Tensor::full({3, 3, 3, 4}, 0.1),
               b = Tensor::zeros({4});
  (void)ops::conv2d(x, w, b, 1, 1, Padding::Same);  // before the profile: not counted
  KernelProfile profile(Device::cpu());
  EXPECT_EQ(KernelProfile::active(Device::cpu()), &profile);
  EXPECT_EQ(KernelProfile::active(Device::cuda(0)), nullptr);
  for (int i = 0; i < 3; ++i) (void)ops::conv2d(x, w, b, 1, 1, Padding::Same);
  (void)Tensor::zeros({100});
  const std::vector<KernelProfile::Row> rows = profile.rows();
  const auto find = [&rows](const std::string& kernel) {
    for (const KernelProfile::Row& row : rows) {
      if (row.kernel == kernel) return row;
    }
    return KernelProfile::Row{};
  };
  EXPECT_EQ(find("conv2d_forward").calls, 3);
  EXPECT_GT(find("conv2d_forward").ms, 0.0);
  EXPECT_GE(find("fill").calls, 1);
  for (size_t i = 1; i < rows.size(); ++i) EXPECT_GE(rows[i - 1].ms, rows[i].ms) << "the most time first";
  EXPECT_TRUE(profile.rows().empty()) << "rows() starts over";
  EXPECT_THROW(KernelProfile second(Device::cpu()), Error);
}

}  // namespace
}  // namespace hisvid
