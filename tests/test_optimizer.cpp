// Adam, RMSprop and SGD steps against values computed by hand from the Keras formulas
// (kernels/optim.h), in float64 so the comparison is to round-off.
#include <gtest/gtest.h>

#include "engine/error.h"
#include "engine/optimizer.h"

namespace hisvid {
namespace {

// float64 arithmetic of the same formula in a different order: a few ulps of 1.0.
constexpr double kHandTolerance = 1e-14;

// One parameter w = 1 with gradient 0.5, in float64.
Tensor parameter_with_grad(double value = 1.0, double grad = 0.5) {
  Tensor w = Tensor::full({1}, value, DType::Float64);
  w.set_requires_grad(true);
  w.set_grad(Tensor::full({1}, grad, DType::Float64));
  return w;
}

TEST(Optimizer, AdamTwoStepsByHand) {
  // m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); alpha = lr sqrt(1 - b2^t) / (1 - b1^t);
  // w -= alpha m / (sqrt(v) + eps). With g = 0.5, lr 1e-3, b1 0.9, b2 0.999, eps 1e-7:
  //   t=1: m = 0.05,  v = 0.00025,    w = 0.9990000063245154
  //   t=2: m = 0.095, v = 0.00049975, w = 0.9980000107977498
  Tensor w = parameter_with_grad();
  Adam adam;
  adam.step({w});
  EXPECT_NEAR(w.item(), 0.9990000063245154, kHandTolerance);
  EXPECT_NEAR(adam.slots()[0][0].item(), 0.05, kHandTolerance);
  EXPECT_NEAR(adam.slots()[0][1].item(), 0.00025, kHandTolerance);
  adam.step({w});
  EXPECT_NEAR(w.item(), 0.9980000107977498, kHandTolerance);
  EXPECT_NEAR(adam.slots()[0][0].item(), 0.095, kHandTolerance);
  EXPECT_NEAR(adam.slots()[0][1].item(), 0.00049975, kHandTolerance);
  EXPECT_EQ(adam.iterations(), 2);
}

TEST(Optimizer, RmspropBothEpsilonForms) {
  // v = 0.9 * 0 + 0.1 * 0.25 = 0.025.
  //   Keras <= 2.10: w = 1 - 1e-3 * 0.5 / (sqrt(0.025) + 1e-7) = 0.9968377243398303
  //   Keras >= 2.11: w = 1 - 1e-3 * 0.5 / sqrt(0.025 + 1e-7)   = 0.9968377286643679
  Tensor outside = parameter_with_grad(), inside = parameter_with_grad();
  RMSprop(1e-3, 0.9, 1e-7, RmspropEpsilon::OutsideSqrt).step({outside});
  RMSprop(1e-3, 0.9, 1e-7, RmspropEpsilon::InsideSqrt).step({inside});
  EXPECT_NEAR(outside.item(), 0.9968377243398303, kHandTolerance);
  EXPECT_NEAR(inside.item(), 0.9968377286643679, kHandTolerance);
  EXPECT_NE(outside.item(), inside.item());
}

TEST(Optimizer, SgdStep) {
  Tensor w = parameter_with_grad(2.0, -3.0);
  SGD(0.1).step({w});
  EXPECT_NEAR(w.item(), 2.3, kHandTolerance);
}

TEST(Optimizer, SkipsParametersWithoutGradient) {
  Tensor a = parameter_with_grad(), b = Tensor::full({1}, 7.0, DType::Float64);
  b.set_requires_grad(true);
  Adam adam;
  adam.step({a, b});
  EXPECT_EQ(b.item(), 7.0);
  EXPECT_NE(a.item(), 1.0);
}

TEST(Optimizer, FactoryTakesKerasNamesAndDefaults) {
  auto adam = make_optimizer("Adam");
  EXPECT_EQ(adam->name(), "Adam");
  EXPECT_DOUBLE_EQ(adam->hyper_parameters().at("epsilon"), 1e-7);
  EXPECT_DOUBLE_EQ(adam->learning_rate(), 1e-3);
  auto rms = make_optimizer("rmsprop", {{"learning_rate", 0.01}, {"epsilon_inside_sqrt", 1}});
  EXPECT_EQ(rms->name(), "RMSprop");
  EXPECT_DOUBLE_EQ(rms->learning_rate(), 0.01);
  EXPECT_DOUBLE_EQ(rms->hyper_parameters().at("epsilon_inside_sqrt"), 1.0);
  EXPECT_DOUBLE_EQ(make_optimizer("SGD")->learning_rate(), 0.01);
  EXPECT_THROW(make_optimizer("adagrad"), Error);
  EXPECT_THROW(make_optimizer("adam", {{"momentum", 0.9}}), Error);
}

TEST(Optimizer, RejectsAChangedParameterList) {
  Tensor a = parameter_with_grad(), b = parameter_with_grad();
  Adam adam;
  adam.step({a});
  EXPECT_THROW(adam.step({a, b}), Error);
}

}  // namespace
}  // namespace hisvid
