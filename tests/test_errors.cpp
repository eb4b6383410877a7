// Bad input to ops: mismatched shapes, dtypes and devices each raise an Error whose message
// names the op and the shapes involved.
#include <gtest/gtest.h>

#include <string>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/recurrent.h"
#include "tests/test_support.h"

namespace hisvid {
namespace {

using hisvid::testing::expect_error;

const Tensor f32(const Shape& s) { return Tensor::zeros(s); }

TEST(Errors, ElementwiseShapeMismatch) {
  expect_error([] { ops::add(f32({2, 3}), f32({3, 2})); }, {"add", "(2, 3)", "(3, 2)"});
  expect_error([] { ops::mul(f32({4}), f32({5})); }, {"mul", "(4,)", "(5,)"});
  expect_error([] { ops::bias_add(f32({2, 3}), f32({4})); }, {"bias_add", "(4,)", "(2, 3)"});
}

TEST(Errors, DtypeMismatch) {
  expect_error([] { ops::add(f32({2}), Tensor::zeros({2}, DType::Float64)); }, {"add", "float32", "float64"});
  expect_error(
      [] {
        ops::matmul(f32({2, 2}), Tensor::zeros({2, 2}, DType::Float64));
      },
      {"matmul", "float32 (2, 2)", "float64 (2, 2)"});
}

TEST(Errors, MatmulInnerDimensions) {
  expect_error([] { ops::matmul(f32({2, 3}), f32({4, 5})); }, {"matmul", "(2, 3)", "(4, 5)", "3 vs 4"});
}

TEST(Errors, Conv2dShapes) {
  expect_error(
      [] {
        ops::conv2d(f32({1, 8, 8, 3}), f32({3, 3, 4, 16}), Tensor(), 1, 1, Padding::Same);
      },
      {"conv2d", "(1, 8, 8, 3)", "(3, 3, 4, 16)", "channels"});
  expect_error(
      [] {
        ops::conv2d(f32({1, 2, 2, 3}), f32({3, 3, 3, 4}), Tensor(), 1, 1, Padding::Valid);
      },
      {"conv2d", "(1, 2, 2, 3)", "smaller"});
  expect_error(
      [] {
        ops::conv2d(f32({1, 8, 8, 3}), f32({3, 3, 3, 4}), f32({5}), 1, 1, Padding::Same);
      },
      {"conv2d", "bias", "(5,)"});
  expect_error(
      [] {
        ops::conv2d(f32({8, 8, 3}), f32({3, 3, 3, 4}), Tensor(), 1, 1, Padding::Same);
      },
      {"conv2d", "(8, 8, 3)"});
}

TEST(Errors, PoolAndDropoutArguments) {
  expect_error(
      [] {
        ops::max_pool2d(f32({1, 3, 3, 1}), 4, 4, 4, 4, Padding::Valid);
      },
      {"max_pool2d", "(1, 3, 3, 1)"});
  expect_error([] { ops::dropout(f32({3}), 1.0f, RandomDraw{}); }, {"dropout", "rate"});
}

TEST(Errors, LstmAndLossShapes) {
  expect_error(
      [] {
        ops::lstm_cell(f32({2, 7}), Tensor(), Activation::Tanh, Activation::Sigmoid);
      },
      {"lstm_cell", "(2, 7)"});
  expect_error(
      [] {
        ops::lstm_cell(f32({2, 8}), f32({2, 3}), Activation::Tanh, Activation::Sigmoid);
      },
      {"lstm_cell", "c_prev", "(2, 2)", "(2, 3)"});
  expect_error(
      [] {
        ops::softmax_cross_entropy(f32({2, 4}), f32({2, 5}));
      },
      {"softmax_cross_entropy", "(2, 4)", "(2, 5)"});
  expect_error(
      [] {
        lstm_sequence(f32({2, 3, 4}), {f32({5, 8}), f32({2, 8}), Tensor()}, RecurrentOptions());
      },
      {"lstm", "kernel", "(4, 8)", "(5, 8)"});
  expect_error(
      [] {
        ops::lstm_recurrence(f32({2, 3, 12}), f32({2, 8}), Tensor(), Activation::Tanh, Activation::Sigmoid,
                             false);
      },
      {"lstm_recurrence", "xz", "(2, 3, 8)", "(2, 3, 12)"});
  expect_error(
      [] {
        ops::lstm_recurrence(f32({2, 3, 8}), f32({2, 8}), f32({4, 3, 2}), Activation::Tanh,
                             Activation::Sigmoid, true);
      },
      {"lstm_recurrence", "masks", "(4, 2, 2)", "(4, 3, 2)"});
  expect_error(
      [] {
        ops::convlstm_recurrence(f32({1, 2, 3, 3, 8}), f32({3, 3, 2, 4}), Tensor(), Activation::Tanh,
                                 Activation::HardSigmoid, true);
      },
      {"convlstm_recurrence", "R", "(3, 3, 2, 8)", "(3, 3, 2, 4)"});
}

TEST(Errors, ShapeOps) {
  expect_error([] { ops::reshape(f32({2, 3}), {4, 2}); }, {"reshape", "(2, 3)"});
  expect_error([] { ops::slice(f32({2, 3}), 1, 2, 2); }, {"slice", "(2, 3)"});
  expect_error([] { ops::concat({f32({2, 3}), f32({3, 3})}, 1); }, {"concat", "(3, 3)", "(2, 3)"});
}

TEST(Errors, DeviceMismatchAndMissingKernels) {
  if (!cuda_available()) GTEST_SKIP() << "needs a CUDA device: " << cuda_unavailable_reason();
  const Tensor gpu = Tensor::zeros({2}, DType::Float32, Device::cuda());
  expect_error([&] { ops::add(f32({2}), gpu); }, {"add", "cpu", "cuda:0"});
  // No backend but the CPU runs float64.
  const Tensor gpu64 = Tensor::zeros({2}, DType::Float64, Device::cuda());
  expect_error([&] { ops::relu(gpu64); }, {"activation", "float64", "cuda:0"});
}

}  // namespace
}  // namespace hisvid
