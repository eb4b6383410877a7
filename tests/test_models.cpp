// Layers and Sequential models: the six zoo models' parameter counts and output shapes (the
// seeds' numbers), JSON spec round trips, Keras defaults and initializers, errors naming the
// layer and argument, and float64 gradient checks through every layer type.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/optimizer.h"
#include "io/batch.h"
#include "io/keras_archive.h"
#include "kernels/softmax.h"
#include "layers/regularizers.h"
#include "models/inference.h"
#include "models/inference_step.h"
#include "models/loss.h"
#include "models/metrics.h"
#include "models/model_file.h"
#include "models/sequential.h"
#include "models/trainer.h"
#include "models/zoo.h"
#include "tests/gradcheck.h"
#include "tests/test_support.h"

namespace hisvid::models {
namespace {

using hisvid::testing::expect_error;

struct ZooCase {
  std::string name;
  int classes;
  int64_t total, non_trainable;
  std::vector<std::string> shapes;  // output shape of every layer, Keras style
};

std::string batch_shape(const Shape& s) {
  std::string out = "(None";
  for (int i = 0; i < s.rank(); ++i) out += ", " + std::to_string(s[i]);
  return out + ")";
}

TEST(Zoo, ParameterCountsAndOutputShapesOfTheSeeds) {
  const std::vector<ZooCase> cases = {
      {"lrcn",
       4,
       73060,
       0,
       {"(None, 20, 64, 64, 16)", "(None, 20, 16, 16, 16)", "(None, 20, 16, 16, 16)",
        "(None, 20, 16, 16, 32)", "(None, 20, 4, 4, 32)", "(None, 20, 4, 4, 32)", "(None, 20, 4, 4, 64)",
        "(None, 20, 2, 2, 64)", "(None, 20, 2, 2, 64)", "(None, 20, 2, 2, 64)", "(None, 20, 1, 1, 64)",
        "(None, 20, 64)", "(None, 32)", "(None, 4)"}},
      {"convlstm",
       4,
       44524,
       0,
       {"(None, 20, 62, 62, 4)", "(None, 20, 31, 31, 4)", "(None, 20, 31, 31, 4)", "(None, 20, 29, 29, 8)",
        "(None, 20, 15, 15, 8)", "(None, 20, 15, 15, 8)", "(None, 20, 13, 13, 14)", "(None, 20, 7, 7, 14)",
        "(None, 20, 7, 7, 14)", "(None, 20, 5, 5, 16)", "(None, 20, 3, 3, 16)", "(None, 2880)", "(None, 4)"}},
      {"lrcn_bn", 10, 783818, 704, {}},
      {"convlstm_deep",
       4,
       368324,
       0,
       {"(None, 20, 62, 62, 8)", "(None, 20, 31, 31, 8)", "(None, 20, 31, 31, 8)", "(None, 20, 29, 29, 16)",
        "(None, 20, 15, 15, 16)", "(None, 20, 15, 15, 16)", "(None, 20, 13, 13, 32)", "(None, 20, 7, 7, 32)",
        "(None, 20, 7, 7, 32)", "(None, 5, 5, 64)", "(None, 3, 3, 64)", "(None, 3, 3, 64)", "(None, 576)",
        "(None, 128)", "(None, 128)", "(None, 4)"}},
      {"lrcn_small",
       50,
       2103474,
       0,
       {"(None, 20, 64, 64, 16)", "(None, 20, 32, 32, 16)", "(None, 20, 32, 32, 16)", "(None, 20, 16384)",
        "(None, 32)", "(None, 50)"}},
      // Not printed by seed 002: 1,024 + 3,488 + (20*15*15*8 = 36,000) * 50 + 50.
      {"convlstm_small", 50, 1804562, 0, {}},
  };
  for (const ZooCase& c : cases) {
    SCOPED_TRACE(c.name);
    Sequential model = load_spec(c.name, c.classes);
    model.build(1);
    const ParamCounts counts = model.count_params();
    EXPECT_EQ(counts.total, c.total);
    EXPECT_EQ(counts.non_trainable, c.non_trainable);
    EXPECT_EQ(counts.trainable, c.total - c.non_trainable);
    EXPECT_EQ(model.num_classes(), c.classes);
    if (c.shapes.empty()) continue;
    const std::vector<layers::Layer*> layers = model.layers();
    ASSERT_EQ(layers.size(), c.shapes.size());
    for (size_t i = 0; i < layers.size(); ++i)
      EXPECT_EQ(batch_shape(layers[i]->output_shape()), c.shapes[i]) << i;
  }
}

TEST(Zoo, LrcnBnSplitsItsParametersLikeSeed001) {
  // conv 896 + 18,496 + 73,856 + 147,584; BN 128 + 256 + 512 + 512; LSTM 540,928; Dense 650.
  Sequential model = load_spec("lrcn_bn", 10);
  model.build(1);
  std::vector<int64_t> per_layer;
  for (const layers::Layer* layer : model.layers()) {
    int64_t n = 0;
    for (const layers::Weight& w : layer->weights()) n += w.value.numel();
    if (n > 0) per_layer.push_back(n);
  }
  EXPECT_EQ(per_layer, (std::vector<int64_t>{896, 128, 18496, 256, 73856, 512, 147584, 512, 540928, 650}));
}

TEST(Zoo, UnknownNameListsTheZoo) {
  try {
    load_spec("lrcnn");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lrcn, lrcn_bn"), std::string::npos) << e.what();
  }
}

TEST(Spec, RoundTripsThroughJson) {
  for (const std::string& name : zoo_names()) {
    SCOPED_TRACE(name);
    Sequential a = load_spec(name);
    const nlohmann::json first = a.to_json();
    Sequential b = Sequential::from_json(first, "round trip");
    EXPECT_EQ(b.to_json(), first);
    a.build(3);
    b.build(3);
    EXPECT_EQ(a.count_params().total, b.count_params().total);
  }
}

TEST(Spec, KerasDefaultsAndAutomaticNames) {
  const nlohmann::json spec = nlohmann::json::parse(R"([
    {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 3, 8, 8, 2]}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Conv2D", "config": {"filters": 4, "kernel_size": 3}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Conv2D", "config": {"filters": 4, "kernel_size": [3, 3]}}}},
    {"class_name": "ConvLSTM2D", "config": {"filters": 2, "kernel_size": [3, 3]}},
    {"class_name": "Flatten", "config": {}},
    {"class_name": "Dense", "config": {"units": 3, "activation": "softmax"}}])");
  Sequential model = Sequential::from_json(spec, "test");
  model.build(0);
  const std::vector<layers::Layer*> layers = model.layers();
  EXPECT_EQ(layers[0]->name(), "time_distributed");
  EXPECT_EQ(layers[1]->name(), "time_distributed_1");
  EXPECT_EQ(layers[2]->name(), "conv_lstm2d");
  const nlohmann::json config = model.to_json()["config"]["layers"];
  // Conv2D: valid padding, stride 1, linear, bias, glorot_uniform; ConvLSTM2D: hard_sigmoid.
  EXPECT_EQ(config[1]["config"]["layer"]["config"]["padding"], "valid");
  EXPECT_EQ(config[1]["config"]["layer"]["config"]["activation"], "linear");
  EXPECT_EQ(config[1]["config"]["layer"]["config"]["kernel_initializer"]["class_name"], "GlorotUniform");
  EXPECT_EQ(config[3]["config"]["recurrent_activation"], "hard_sigmoid");
  EXPECT_EQ(config[3]["config"]["recurrent_initializer"]["class_name"], "Orthogonal");
  EXPECT_EQ(config[3]["config"]["unit_forget_bias"], true);
  EXPECT_EQ(batch_shape(model.output_shape()), "(None, 3)");
}

TEST(Initializers, KerasRulesAndUnitForgetBias) {
  Sequential model = load_spec("lrcn");
  model.build(7);
  const layers::Layer& conv = *model.layers()[0];
  // glorot_uniform on (3,3,3,16): fan_in 27, fan_out 144, limit sqrt(6/171).
  const double limit = std::sqrt(6.0 / (27 + 144));
  double max_abs = 0;
  for (double v : conv.weights()[0].value.to_vector()) max_abs = std::max(max_abs, std::fabs(v));
  EXPECT_LE(max_abs, limit);
  EXPECT_GT(max_abs, 0.9 * limit);  // 432 draws reach the top decile of the range
  for (double v : conv.weights()[1].value.to_vector()) EXPECT_EQ(v, 0.0);

  const layers::Layer& lstm = *model.layers()[12];
  // orthogonal recurrent kernel (32, 128): rows orthonormal, R R^T = I.
  const Tensor r = lstm.weights()[1].value.to(DType::Float64);
  const std::vector<double> rrt = ops::matmul(r, r, false, true).to_vector();
  constexpr double kOrthoTol = 1e-5;  // float32 storage of unit-norm rows
  for (int i = 0; i < 32; ++i) {
    for (int j = 0; j < 32; ++j) EXPECT_NEAR(rrt[i * 32 + j], i == j ? 1.0 : 0.0, kOrthoTol);
  }
  // unit_forget_bias: [0, 32) zeros, [32, 64) ones, [64, 128) zeros.
  const std::vector<double> bias = lstm.weights()[2].value.to_vector();
  for (int u = 0; u < 128; ++u) EXPECT_EQ(bias[u], u >= 32 && u < 64 ? 1.0 : 0.0) << u;
}

TEST(Initializers, SameSeedSameWeights) {
  Sequential a = load_spec("convlstm"), b = load_spec("convlstm"), c = load_spec("convlstm");
  a.build(11);
  b.build(11);
  c.build(12);
  const std::vector<Tensor> wa = a.trainable_weights(), wb = b.trainable_weights(),
                            wc = c.trainable_weights();
  for (size_t i = 0; i < wa.size(); ++i) EXPECT_EQ(wa[i].to_vector(), wb[i].to_vector());
  EXPECT_NE(wa[0].to_vector(), wc[0].to_vector());
}

TEST(Forward, ZooModelsProduceProbabilities) {
  for (const char* name : {"lrcn", "convlstm"}) {
    SCOPED_TRACE(name);
    Sequential model = load_spec(name, 5);
    model.build(2);
    Generator rng(4);
    const Tensor x = rng.uniform({2, 20, 64, 64, 3}, 0.0, 1.0);
    NoGradGuard no_grad;
    const Tensor p = model.forward(x, {});
    EXPECT_EQ(p.shape(), (Shape{2, 5}));
    const std::vector<double> v = p.to_vector();
    constexpr double kSumTol = 1e-6;  // float32 softmax normalisation
    EXPECT_NEAR(v[0] + v[1] + v[2] + v[3] + v[4], 1.0, kSumTol);
  }
}

// Conv2D + MaxPooling2D pairs run as one kernel on the CPU by default (Sequential::steps): the
// LRCN's four blocks fuse, the first three with the Dropout after them folded in, the ConvLSTM
// has no pair, CUDA fuses only under Fusion::Everywhere, Fusion::None nowhere; and the fused
// model computes what the unfused one does, forward and gradients, in inference and in
// training (the folded dropouts draw the layers' own masks).
TEST(Fusion, LrcnBlocksFuseAndComputeTheSameStep) {
  const auto fused_steps = [](const std::vector<Sequential::Step>& steps) {
    int pairs = 0;
    for (const Sequential::Step& s : steps) pairs += s.count > 1 ? 1 : 0;
    return pairs;
  };
  Sequential fused = load_spec("lrcn", 5), plain = load_spec("lrcn", 5);
  fused.build(3);
  plain.build(3);
  fused.set_fuse_conv_pool(Sequential::Fusion::Cpu);  // whatever HISVID_FUSE_CONV_POOL says
  plain.set_fuse_conv_pool(Sequential::Fusion::None);
  EXPECT_EQ(fused_steps(fused.steps(Device::cpu())), 4);
  EXPECT_EQ(fused_steps(fused.steps(Device::cuda(0))), 0);
  EXPECT_EQ(fused_steps(plain.steps(Device::cpu())), 0);
  EXPECT_EQ(fused_steps(plain.steps(Device::cuda(0))), 0);
  Sequential everywhere = load_spec("lrcn", 5);
  everywhere.build(3);
  everywhere.set_fuse_conv_pool(Sequential::Fusion::Everywhere);
  EXPECT_EQ(fused_steps(everywhere.steps(Device::cpu())), 4);
  EXPECT_EQ(fused_steps(everywhere.steps(Device::cuda(0))), 4);
  Sequential convlstm = load_spec("convlstm", 5);
  convlstm.build(3);
  EXPECT_EQ(fused_steps(convlstm.steps(Device::cpu())), 0);
  std::vector<size_t> counts;
  for (const Sequential::Step& s : fused.steps(Device::cpu())) {
    if (s.count > 1) counts.push_back(s.count);
  }
  EXPECT_EQ(counts, (std::vector<size_t>{3, 3, 3, 2}))
      << "blocks 1-3 fold their Dropout(0.25), block 4 has none";

  // float32: sums of up to 576 products in another order (chunked convolution, sparse
  // backward), then the LSTM and Dense on top; measured (2026-11-26): probabilities within
  // 1e-7, gradients within 7e-9.
  constexpr double kStepTol = 1e-4;
  Generator rng(5);
  const Tensor x = rng.uniform({2, 20, 64, 64, 3}, 0.0, 1.0);
  const Tensor y = Tensor::from_vector(std::vector<double>{0, 1, 0, 0, 0, 0, 0, 0, 1, 0}, {2, 5});
  for (const bool training : {false, true}) {
    SCOPED_TRACE(training ? "training (dropout on)" : "inference");
    std::vector<std::vector<double>> grads[2];
    std::vector<double> probs[2];
    Sequential* models[2] = {&fused, &plain};
    for (int m = 0; m < 2; ++m) {
      Tape::current().clear();
      zero_grad(models[m]->trainable_weights());  // the previous pass's gradients
      Generator dropout_rng(6);                   // the same draws for both models
      const Tensor logits = models[m]->forward(x, {training, &dropout_rng}, Output::Logits);
      probs[m] = ops::softmax(logits).to_vector();
      backward(ops::softmax_cross_entropy(logits, y).loss);
      Tape::current().clear();
      for (const Tensor& w : models[m]->trainable_weights()) grads[m].push_back(w.grad().to_vector());
    }
    for (size_t i = 0; i < probs[0].size(); ++i) EXPECT_NEAR(probs[0][i], probs[1][i], kStepTol);
    ASSERT_EQ(grads[0].size(), grads[1].size());
    for (size_t w = 0; w < grads[0].size(); ++w) {
      double scale = 0.0;
      for (double g : grads[1][w]) scale = std::max(scale, std::fabs(g));
      for (size_t i = 0; i < grads[0][w].size(); ++i) {
        ASSERT_NEAR(grads[0][w][i], grads[1][w][i], kStepTol * std::max(scale, 1e-3))
            << "weight " << w << " element " << i;
      }
    }
  }
}

// The evaluation step (models/inference_step.h) on the CPU: its probabilities are the model's
// forward on the same clips scaled by clips_to_batch, bit for bit, with and without labels; with
// labels, its sums are the batch loss times the batch and the correct count (kernels/softmax.h
// StepSum); bad pixel and label counts and labels out of range are errors naming them.
TEST(InferenceStep, IsTheForwardOnTheClipsAndSumsTheLoss) {
  constexpr int kClasses = 3;
  const Shape clip{20, 64, 64, 3};
  Sequential model = load_spec("lrcn", kClasses);
  model.build(4);
  const size_t batch = 5, values = static_cast<size_t>(clip.numel());
  std::vector<uint8_t> pixels(batch * values);
  Generator draws(12);
  const std::vector<double> u = draws.uniform({static_cast<int64_t>(pixels.size())}, 0.0, 256.0).to_vector();
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(u[i]);
  const std::vector<int> labels = {0, 2, 1, 1, 0};

  NoGradGuard no_grad;
  const Tensor x = io::clips_to_batch(pixels.data(), Shape{5, 20, 64, 64, 3}, {}, nullptr, Device::cpu());
  const std::vector<double> expected = class_probabilities(model, model.forward(x, {})).to_vector();
  const Tensor targets = Tensor::from_vector(one_hot_rows(labels, kClasses), {5, kClasses});
  const LossTerms terms = model_loss(model, x, targets, {});

  InferenceStep step(model, clip, false);
  EXPECT_EQ(step.run(pixels, {}).to_vector(), expected);
  EXPECT_EQ(step.run(pixels, labels).to_vector(), expected);
  EXPECT_EQ(step.run_again().to_vector(), expected);
  const std::vector<double> sums = step.sums().to_vector();
  EXPECT_EQ(sums[kStepLossSum], 2 * terms.loss.item() * static_cast<double>(batch));  // two labelled steps
  EXPECT_EQ(sums[kStepCorrect], 2.0 * static_cast<double>(correct_count(model, terms, targets)));
  EXPECT_EQ(sums[kStepSamples], 2.0 * static_cast<double>(batch));
  EXPECT_EQ(sums[kStepFailed], 0.0);
  EXPECT_EQ(step.graph_status(), "") << "no graph on the CPU";
  step.zero_sums();
  EXPECT_EQ(step.sums().to_vector()[kStepLossSum], 0.0);

  const auto error = [&](const std::vector<uint8_t>& p, const std::vector<int>& l) {
    return hisvid::testing::error_of([&] { step.run(p, l); });
  };
  EXPECT_NE(error(std::vector<uint8_t>(values + 1), {}).find("not whole clips"), std::string::npos);
  EXPECT_NE(error(pixels, {0, 1}).find("2 labels for 5 clips"), std::string::npos);
  EXPECT_NE(error(pixels, {0, 1, 2, 3, 0}).find("label 3"), std::string::npos);
}

// From its third step on, a training step (forward in training mode, loss, backward, Adam)
// takes every block from the allocator's cache: no call reaches the system allocator.
TEST(SteadyState, TrainingStepsAllocateNothingFromTheSystem) {
  for (const char* name : {"lrcn", "convlstm"}) {
    SCOPED_TRACE(name);
    Sequential model = load_spec(name, 4);
    model.build(9);
    Generator rng(10);
    const Tensor x = rng.uniform({2, 20, 64, 64, 3}, 0.0, 1.0);
    const Tensor y = Tensor::from_vector(std::vector<double>{0, 1, 0, 0, 0, 0, 1, 0}, {2, 4});
    const std::vector<Tensor> weights = model.trainable_weights();
    std::unique_ptr<Optimizer> adam = make_optimizer("adam");
    Allocator& memory = allocator_for(Device::cpu());
    size_t after_two = 0;
    for (int step = 1; step <= 5; ++step) {
      Tape::current().clear();
      const layers::ForwardContext ctx{true, &rng};
      backward(ops::softmax_cross_entropy(model.forward(x, ctx, Output::Logits), y).loss);
      Tape::current().clear();
      adam->step(weights);
      zero_grad(weights);
      if (step == 2) after_two = memory.system_allocations();
    }
    EXPECT_EQ(memory.system_allocations(), after_two) << "steps 3 to 5 went to the system allocator";
  }
}

// Runs f and checks that the Error it throws mentions every fragment.
void expect_spec_error(const std::string& spec_text, const std::vector<std::string>& fragments) {
  try {
    Sequential model = Sequential::from_json(nlohmann::json::parse(spec_text), "spec.json");
    model.build(0);
    ADD_FAILURE() << "expected an error for " << spec_text;
  } catch (const Error& e) {
    for (const std::string& f : fragments) {
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos)
          << "'" << f << "' missing from: " << e.what();
    }
  }
}

TEST(Spec, ErrorsNameTheLayerAndArgument) {
  const std::string input =
      R"({"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4, 8, 8, 3]}})";
  expect_spec_error("[" + input + R"(, {"class_name": "Flatten"}, {"class_name": "Conv3D", "config": {}}])",
                    {"spec.json", "layer 3", "unknown layer class 'Conv3D'"});
  expect_spec_error("[" + input + R"(, {"class_name": "TimeDistributed", "config": {"layer":
      {"class_name": "Conv2D", "config": {"filtrs": 4, "filters": 4, "kernel_size": 3}}}}])",
                    {"layer 2", "Conv2D", "unknown argument 'filtrs'"});
  expect_spec_error("[" + input + R"(, {"class_name": "Dense", "config": {"units": "4"}}])",
                    {"layer 2", "Dense 'dense'", "'units' must be an integer", "\"4\""});
  expect_spec_error("[" + input + R"(, {"class_name": "TimeDistributed", "config": {"layer":
      {"class_name": "Conv2D", "config": {"kernel_size": 3}}}}])",
                    {"layer 2", "missing required argument 'filters'"});
  expect_spec_error("[" + input + R"(, {"class_name": "TimeDistributed", "config": {"layer":
      {"class_name": "Conv2D", "config": {"filters": 2, "kernel_size": 3, "dilation_rate": [2, 2]}}}}])",
                    {"layer 2", "dilation_rate", "not supported"});
  expect_spec_error("[" + input + R"(, {"class_name": "LSTM", "config": {"units": 3, "stateful": true}}])",
                    {"layer 2", "stateful"});
  expect_spec_error(
      "[" + input + R"(, {"class_name": "Dense", "config": {"units": 3, "activation": "swish"}}])",
      {"layer 2", "unknown activation 'swish'"});
  expect_spec_error(R"([{"class_name": "Flatten"}, )" + input + "]",
                    {"layer 2", "InputLayer must come first"});
  // An input that does not fit a layer: named at build.
  expect_spec_error("[" + input + R"(, {"class_name": "LSTM", "config": {"units": 3}}])",
                    {"layer 'lstm' (LSTM)", "(T, features)", "(4, 8, 8, 3)"});
  expect_spec_error(R"({"class_name": "Functional", "config": {}})", {"only Sequential"});
}

TEST(Forward, WrongInputShapeIsNamed) {
  Sequential model = load_spec("lrcn");
  model.build(0);
  try {
    model.forward(Tensor::zeros({1, 20, 32, 32, 3}), {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(1, 20, 32, 32, 3)"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("(None, 20, 64, 64, 3)"), std::string::npos);
  }
}

// Float64 gradient of the training loss (model_loss: the head's cross-entropy plus every
// regularization penalty) with respect to every weight, in training mode (dropout masks fixed
// by a fresh generator per evaluation), through a model built from a spec: checks the layers'
// wiring of the ops, not just the ops.
void check_model_gradients(const std::string& spec_text, const Shape& input, int classes,
                           const layers::KerasVersion& version = {}) {
  Sequential model = Sequential::from_json(nlohmann::json::parse(spec_text), "gradcheck spec", version);
  model.set_input_shape(input);
  model.build(5);
  model.to(DType::Float64);
  std::vector<int64_t> dims = input.vec();
  dims.insert(dims.begin(), 2);
  Tensor x = testing::random_input(Shape(dims), 6);
  x.set_requires_grad(false);
  std::vector<double> onehot(2 * classes, 0.0);
  onehot[1] = onehot[classes] = 1.0;
  const Tensor targets = Tensor::from_vector(onehot, {2, classes}, DType::Float64);
  const std::vector<Tensor> weights = model.trainable_weights();
  const testing::GradCheckResult r = testing::grad_check(
      [&](const std::vector<Tensor>&) {
        Generator rng(9);
        return model_loss(model, x, targets, {true, &rng}).loss;
      },
      weights);
  int64_t total = 0;
  for (const Tensor& w : weights) total += w.numel();
  EXPECT_EQ(r.checked + r.kinks, total);
  EXPECT_LE(r.max_error, testing::kGradTolerance) << r.worst;
}

TEST(LayerGradients, TimeDistributedConvBatchNormPoolDropoutLstmDense) {
  check_model_gradients(R"([
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Conv2D", "config": {"filters": 3, "kernel_size": 3, "padding": "same", "activation": "relu"}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "BatchNormalization", "config": {}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "MaxPooling2D", "config": {"pool_size": 2}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Dropout", "config": {"rate": 0.25}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Flatten", "config": {}}}},
    {"class_name": "LSTM", "config": {"units": 4, "return_sequences": true, "dropout": 0.1, "recurrent_dropout": 0.2}},
    {"class_name": "Flatten", "config": {}},
    {"class_name": "Dense", "config": {"units": 5, "activation": "tanh"}},
    {"class_name": "Dropout", "config": {"rate": 0.2}},
    {"class_name": "Dense", "config": {"units": 3, "activation": "softmax"}}])",
                        Shape{3, 6, 6, 2}, 3);
}

TEST(LayerGradients, ConvLstmPool3dAndPool2d) {
  check_model_gradients(R"([
    {"class_name": "ConvLSTM2D", "config": {"filters": 2, "kernel_size": 3, "recurrent_dropout": 0.2, "return_sequences": true}},
    {"class_name": "MaxPooling3D", "config": {"pool_size": [1, 2, 2], "padding": "same"}},
    {"class_name": "ConvLSTM2D", "config": {"filters": 3, "kernel_size": [2, 2], "padding": "same"}},
    {"class_name": "MaxPooling2D", "config": {"pool_size": 2, "padding": "same"}},
    {"class_name": "Flatten", "config": {}},
    {"class_name": "Dense", "config": {"units": 2, "activation": "softmax"}}])",
                        Shape{3, 7, 7, 2}, 2);
}

TEST(LayerGradients, GlobalPoolingSpatialDropoutAndBinaryHead) {
  check_model_gradients(R"([
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Conv2D", "config": {"filters": 3, "kernel_size": 3, "padding": "same", "activation": "relu"}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "SpatialDropout2D", "config": {"rate": 0.3}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "GlobalAveragePooling2D", "config": {}}}},
    {"class_name": "LSTM", "config": {"units": 4, "return_sequences": true}},
    {"class_name": "LSTM", "config": {"units": 3}},
    {"class_name": "Dense", "config": {"units": 1, "activation": "sigmoid"}}])",
                        Shape{3, 5, 5, 2}, 2);
}

TEST(LayerGradients, BatchNormAfterConvLstmAndGlobalPooling3D) {
  check_model_gradients(R"([
    {"class_name": "ConvLSTM2D", "config": {"filters": 2, "kernel_size": 3, "return_sequences": true}},
    {"class_name": "BatchNormalization", "config": {}},
    {"class_name": "SpatialDropout3D", "config": {"rate": 0.25}},
    {"class_name": "GlobalAveragePooling3D", "config": {"keepdims": true}},
    {"class_name": "Flatten", "config": {}},
    {"class_name": "Dense", "config": {"units": 3, "activation": "softmax"}}])",
                        Shape{3, 5, 5, 2}, 3, layers::KerasVersion{3, 3, 3});
}

// Every regularizer kind on every weight kind and on activities: the gradient of the whole
// training loss, penalties included, in both versions' activity semantics. Biases under L1
// start away from 0, where |x| has its kink.
TEST(LayerGradients, Regularizers) {
  const std::string spec = R"([
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Conv2D", "config": {"filters": 2, "kernel_size": 3, "kernel_regularizer": {"class_name": "L2", "config": {"l2": 0.01}}, "bias_regularizer": "l1", "bias_initializer": {"class_name": "RandomUniform", "config": {"minval": 0.1, "maxval": 0.5}}, "activity_regularizer": {"class_name": "L1L2", "config": {"l1": 0.001, "l2": 0.002}}}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Flatten", "config": {}}}},
    {"class_name": "LSTM", "config": {"units": 3, "kernel_regularizer": {"class_name": "L1", "config": {"l1": 0.003}}, "recurrent_regularizer": "l2", "bias_regularizer": {"class_name": "L1L2", "config": {"l1": 0.01, "l2": 0.01}}, "bias_initializer": {"class_name": "RandomUniform", "config": {"minval": 0.1, "maxval": 0.5}}, "activity_regularizer": "l2"}},
    {"class_name": "Dense", "config": {"units": 2, "activation": "softmax", "kernel_regularizer": "l1_l2", "activity_regularizer": {"class_name": "L2", "config": {"l2": 0.1}}}}])";
  check_model_gradients(spec, Shape{2, 4, 4, 1}, 2);
  check_model_gradients(spec, Shape{2, 4, 4, 1}, 2, layers::KerasVersion{3, 3, 3});
}

TEST(Regularizers, PenaltyGradients) {
  // Values kept away from 0, where |x| has its kink.
  Tensor w = testing::random_input({4, 6}, 28, 0.05, 1.0);
  std::vector<double> v = w.to_vector();
  for (size_t i = 0; i < v.size(); i += 2) v[i] = -v[i];
  w = Tensor::from_vector(v, w.shape(), DType::Float64);
  w.set_requires_grad(true);
  for (const layers::Regularizer& r :
       {layers::Regularizer{"L1", 0.01, 0.0}, layers::Regularizer{"L2", 0.0, 0.001},
        layers::Regularizer{"L1L2", 0.003, 0.02}}) {
    SCOPED_TRACE(r.class_name);
    EXPECT_GRAD_OK(
        testing::grad_check([&r](const std::vector<Tensor>& in) { return r.penalty(in[0]); }, {w}));
  }
}

// What each regularizer adds to the loss, by hand: weights as Keras's model.losses, activities
// divided by the batch size in Keras 2 and not in Keras 3 (and inside TimeDistributed only in
// Keras 2); written back into the config.
TEST(Regularizers, PenaltiesAsKerasAddsThem) {
  const std::string spec = R"({"class_name": "Sequential", "config": {"layers": [
    {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 2, 3]}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Dense", "config": {"units": 2, "activity_regularizer": {"class_name": "L1", "config": {"l1": 0.5}}}}}},
    {"class_name": "Flatten", "config": {}},
    {"class_name": "Dense", "config": {"units": 2, "activation": "softmax", "kernel_regularizer": {"class_name": "L2", "config": {"l2": 0.25}}}}]}})";
  for (const bool keras3 : {false, true}) {
    SCOPED_TRACE(keras3 ? "Keras 3" : "Keras 2");
    Sequential model = Sequential::from_json(nlohmann::json::parse(spec), "spec",
                                             keras3 ? layers::KerasVersion{3, 0, 5} : layers::KerasVersion{});
    model.build(3);
    const Tensor x = Tensor::from_vector(std::vector<double>{1, -2, 3, 0.5, 0, -1,  //
                                                             2, 1, -1, 0, 3, 1},
                                         {2, 2, 3});
    const Tensor targets = Tensor::from_vector(std::vector<double>{1, 0, 0, 1}, {2, 2});
    NoGradGuard no_grad;
    const LossTerms terms = model_loss(model, x, targets, {});
    const double data_loss = ops::softmax_cross_entropy(terms.logits, targets).loss.item();
    double weight_penalty = 0.0;
    for (double w : model.layers()[2]->weights()[0].value.to_vector()) weight_penalty += 0.25 * w * w;
    // The wrapped Dense's activity: |outputs| summed over (N*T = 4) rows.
    double activity = 0.0;
    const Tensor inner = ops::reshape(x, {4, 3});
    const Tensor y = ops::bias_add(ops::matmul(inner, model.layers()[0]->weights()[0].value),
                                   model.layers()[0]->weights()[1].value);
    for (double v : y.to_vector()) activity += 0.5 * std::fabs(v);
    const double expected = data_loss + weight_penalty + (keras3 ? 0.0 : activity / 4.0);
    constexpr double kFloat32Sums = 1e-6;  // a dozen float32 terms
    EXPECT_NEAR(terms.loss.item(), expected, kFloat32Sums);
    const nlohmann::json config = model.to_json()["config"]["layers"];
    EXPECT_EQ(config[3]["config"]["kernel_regularizer"]["class_name"], "L2");
    EXPECT_EQ(config[3]["config"]["kernel_regularizer"]["config"]["l2"], 0.25);
    EXPECT_EQ(config[1]["config"]["layer"]["config"]["activity_regularizer"]["config"]["l1"], 0.5);
  }
}

// A spec as Keras 3.9 writes it (module, registered_name, build_config at every level, a
// DTypePolicy, batch_shape, build_input_shape, compile_config) and as Keras 2.4 writes it
// (string initializers, L1L2 objects): both load and agree.
TEST(Spec, AcceptsTheMetadataOfEveryKerasVersion) {
  const nlohmann::json keras39 =
      nlohmann::json::parse(R"({"module": "keras", "class_name": "Sequential", "config": {
    "name": "sequential_4", "trainable": true,
    "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null},
    "layers": [
      {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 4, 8, 8, 3], "dtype": "float32", "sparse": false, "ragged": false, "name": "input_layer"}, "registered_name": null},
      {"module": "keras.layers", "class_name": "TimeDistributed", "config": {"name": "td", "trainable": true,
        "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": null},
        "layer": {"module": "keras.layers", "class_name": "Conv2D", "config": {"name": "conv2d", "trainable": true, "dtype": "float32", "filters": 2, "kernel_size": [3, 3],
          "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null},
          "kernel_regularizer": {"module": "keras.regularizers", "class_name": "L2", "config": {"l2": 0.001}, "registered_name": null}},
          "registered_name": null, "build_config": {"input_shape": [null, 8, 8, 3]}}},
        "registered_name": null, "build_config": {"input_shape": [null, 4, 8, 8, 3]}},
      {"module": "keras.layers", "class_name": "TimeDistributed", "config": {"name": "td_1", "layer": {"module": "keras.layers", "class_name": "Flatten", "config": {"name": "flatten", "data_format": "channels_last"}, "registered_name": null}}, "registered_name": null},
      {"module": "keras.layers", "class_name": "LSTM", "config": {"name": "lstm", "units": 3, "zero_output_for_mask": false, "seed": null,
        "recurrent_initializer": {"module": "keras.initializers", "class_name": "OrthogonalInitializer", "config": {"gain": 1.0, "seed": null}, "registered_name": null}}, "registered_name": null},
      {"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense", "units": 2, "activation": "softmax"}, "registered_name": null}],
    "build_input_shape": [null, 4, 8, 8, 3]},
    "registered_name": null, "build_config": {"input_shape": [null, 4, 8, 8, 3]},
    "compile_config": {"optimizer": "adam", "loss": "categorical_crossentropy"}})");
  Sequential model = Sequential::from_json(keras39, "keras 3.9 spec", layers::KerasVersion{3, 9, 2});
  model.build(1);
  EXPECT_EQ(model.input_shape(), (Shape{4, 8, 8, 3}));
  EXPECT_EQ(model.count_params().total, 2 * 27 + 2 + 4 * 3 * (72 + 3 + 1) + 3 * 2 + 2);
  EXPECT_EQ(model.weight_penalties().size(), 1u);

  const nlohmann::json keras24 =
      nlohmann::json::parse(R"({"class_name": "Sequential", "config": {"name": "s", "layers": [
      {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4, 6], "dtype": "float32", "sparse": false, "ragged": false, "name": "in"}},
      {"class_name": "LSTM", "config": {"units": 2, "kernel_initializer": "glorot_uniform", "recurrent_initializer": "orthogonal",
        "bias_initializer": "zeros", "kernel_regularizer": {"class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.01}}, "implementation": 2}},
      {"class_name": "Dense", "config": {"units": 2, "activation": "softmax", "kernel_initializer": {"class_name": "VarianceScaling", "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": null}}}}]},
      "keras_version": "2.4.0", "backend": "tensorflow"})");
  Sequential old = Sequential::from_json(keras24, "keras 2.4 spec");
  EXPECT_EQ(old.keras_version().str(), "2.4.0");
  old.build(1);
  EXPECT_EQ(old.count_params().total, 4 * 2 * (6 + 2 + 1) + 2 * 2 + 2);

  // Keras 2.0 and 2.1: the Sequential's config is the bare list of its layers.
  const nlohmann::json keras21 = nlohmann::json::parse(R"({"class_name": "Sequential", "config": [
      {"class_name": "LSTM", "config": {"name": "lstm_1", "units": 2, "batch_input_shape": [null, 4, 6], "dtype": "float32"}},
      {"class_name": "Dense", "config": {"name": "dense_1", "units": 2, "activation": "softmax"}}],
      "keras_version": "2.1.6", "backend": "tensorflow"})");
  Sequential oldest = Sequential::from_json(keras21, "keras 2.1 spec");
  oldest.build(1);
  EXPECT_EQ(oldest.input_shape(), (Shape{4, 6}));
  EXPECT_EQ(oldest.count_params().total, 4 * 2 * (6 + 2 + 1) + 2 * 2 + 2);
}

// What does not change the computation is read: an LSTM's unroll (how TensorFlow builds the
// loop); and an InputLayer's shape is the model's even where the next layer declares another
// batch_input_shape, as Keras takes it.
TEST(Spec, UnrollAndTheInputLayersShape) {
  const nlohmann::json spec =
      nlohmann::json::parse(R"({"class_name": "Sequential", "config": {"name": "s", "layers": [
      {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4, 6], "name": "in"}},
      {"class_name": "LSTM", "config": {"units": 2, "unroll": true, "batch_input_shape": [null, 9, 9]}},
      {"class_name": "Dense", "config": {"units": 2, "activation": "softmax"}}]}})");
  Sequential model = Sequential::from_json(spec, "unrolled spec");
  model.build(1);
  EXPECT_EQ(model.input_shape(), (Shape{4, 6}));
  EXPECT_EQ(model.count_params().total, 4 * 2 * (6 + 2 + 1) + 2 * 2 + 2);
}

// BatchNormalization's moving variance after one training batch, as each Keras path updates it
// (from a helper's audit against Keras's source): Keras 2's fused path (4-D inputs counting the
// batch axis, 5-D from 2.6) with the unbiased batch variance, its other path (2-D and 3-D
// inputs, or fused=False) and Keras 3 with the biased one. One channel, batch values 1 2 3 4:
// biased variance 1.25, unbiased 5/3; the moving variance starts at 1.
TEST(Spec, BatchNormMovingVarianceFollowsKerasPaths) {
  const auto moving_variance = [](const std::string& frame, const std::string& bn_config,
                                  const layers::KerasVersion& version) {
    const nlohmann::json spec = nlohmann::json::parse(
        R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_input_shape": [null, )" +
        frame + R"(]}}, {"class_name": "BatchNormalization", "config": {)" + bn_config + R"(}}]}})");
    Sequential model = Sequential::from_json(spec, "bn spec", version);
    model.build(1);
    std::vector<int64_t> dims{4};  // the batch, then the frame's ones
    for (char ch : frame) {
      if (ch == '1') dims.push_back(1);
    }
    const Tensor x = Tensor::from_vector(std::vector<double>{1.0, 2.0, 3.0, 4.0}, Shape(dims));
    Generator rng(1);
    layers::Layer& bn = *model.layers().back();
    (void)bn.forward(x, {true, &rng});
    return bn.weights().back().value.to_vector()[0];
  };
  const double m = static_cast<double>(0.99f);
  const double unbiased = m + (1 - m) * (5.0 / 3.0), biased = m + (1 - m) * 1.25;
  const layers::KerasVersion keras28{2, 8, 0}, keras24{2, 4, 0}, keras3{3, 3, 3};
  // To the bit, in float32 as each path computes it (decay = float(1 - 0.99) = 0.01f):
  // TensorFlow's fused kernel, assign_moving_average, and Keras 3's blend.
  volatile float decay = 0.01f, momentum = 0.99f, adjust = 4.0f / 3.0f, one = 1.0f, var = 1.25f;
  const float fused = (one - decay) * one + (decay * adjust) * var;
  const float assigned = one - (one - var) * decay;
  const float blended = one * momentum + var * decay;
  EXPECT_EQ(moving_variance("1, 1, 1", "", keras28), static_cast<double>(fused));
  EXPECT_EQ(moving_variance("1", "", keras28), static_cast<double>(assigned));
  EXPECT_EQ(moving_variance("1, 1, 1", "", keras3), static_cast<double>(blended));
  EXPECT_NEAR(moving_variance("1, 1, 1", "", keras28), unbiased, 1e-6) << "4-D: fused";
  EXPECT_NEAR(moving_variance("1, 1, 1, 1", "", keras28), unbiased, 1e-6) << "5-D: fused from 2.6";
  EXPECT_NEAR(moving_variance("1, 1, 1, 1", "", keras24), biased, 1e-6) << "5-D before 2.6";
  EXPECT_NEAR(moving_variance("1", "", keras28), biased, 1e-6) << "2-D: not fused";
  EXPECT_NEAR(moving_variance("1, 1", "", keras28), biased, 1e-6) << "3-D: not fused";
  EXPECT_NEAR(moving_variance("1, 1, 1", R"("fused": false)", keras28), biased, 1e-6) << "fused=False";
  EXPECT_NEAR(moving_variance("1, 1, 1", "", keras3), biased, 1e-6) << "Keras 3";
  // Standalone Keras 2.2: every input, var * n / (n - (1 + epsilon)), by assign_moving_average.
  volatile float n = 4.0f, epsilon = 1e-3f;
  const float standalone = one - (one - var * (n / (n - (one + epsilon)))) * decay;
  EXPECT_EQ(moving_variance("1", "", layers::KerasVersion::parse("2.2.4", "test")),
            static_cast<double>(standalone));
  expect_error([&] { moving_variance("1", R"("fused": true)", keras28); }, {"fused=True", "4-D"});
  // fused=False is saved back in a Keras 2 config, and left out of a Keras 3 one (its layer has
  // no such argument).
  const nlohmann::json spec = nlohmann::json::parse(
      R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 3]}}, {"class_name": "BatchNormalization", "config": {"fused": false}}, {"class_name": "Dense", "config": {"units": 2, "activation": "softmax"}}]}})");
  Sequential unfused = Sequential::from_json(spec, "bn spec");
  unfused.build(1);
  EXPECT_EQ(unfused.to_json()["config"]["layers"][1]["config"]["fused"], false);
  const std::string path =
      (std::filesystem::temp_directory_path() / ("hisvid_unfused_" + std::to_string(::getpid()) + ".keras"))
          .string();
  save_model(path, unfused, {"a", "b"}, nullptr, nullptr);
  const std::string config = io::read_keras_archive(path).config;
  std::filesystem::remove(path);
  EXPECT_EQ(config.find("fused"), std::string::npos) << config;
}

// An LSTM's input dropout draws its masks as the Keras that wrote it does (from a helper's audit
// against Keras's source): Keras 2 forces implementation 1's mask per gate with
// recurrent_dropout; without it, its cuDNN-compatible path (tanh, sigmoid gates, a bias, no
// unroll), taken on every device, draws one mask over the whole sequence; otherwise
// implementation 2 shares one mask (implementation 1 keeps one per gate). Keras 3 shares one.
TEST(Spec, LstmInputDropoutFollowsKerasPaths) {
  const auto scheme = [](const std::string& extra, const layers::KerasVersion& version) {
    const nlohmann::json spec = nlohmann::json::parse(
        R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4, 6]}}, {"class_name": "LSTM", "config": {"units": 3, "dropout": 0.5)" +
        extra + R"(}}]}})");
    Sequential model = Sequential::from_json(spec, "lstm spec", version);
    const auto* lstm = dynamic_cast<const layers::Recurrent*>(model.layers().back());
    return lstm->input_dropout_masks();
  };
  const layers::KerasVersion keras28{2, 8, 0}, keras3{3, 3, 3};
  EXPECT_EQ(scheme("", keras28), InputDropout::PerStep);
  EXPECT_EQ(scheme(R"(, "recurrent_dropout": 0.2)", keras28), InputDropout::PerGate);
  EXPECT_EQ(scheme(R"(, "unroll": true)", keras28), InputDropout::Shared);
  EXPECT_EQ(scheme(R"(, "use_bias": false)", keras28), InputDropout::Shared);
  EXPECT_EQ(scheme(R"(, "activation": "relu", "implementation": 1)", keras28), InputDropout::PerGate);
  EXPECT_EQ(scheme("", keras3), InputDropout::Shared);
  EXPECT_EQ(scheme(R"(, "recurrent_dropout": 0.2)", keras3), InputDropout::Shared) << "3.3: shared masks";
  EXPECT_EQ(scheme(R"(, "recurrent_dropout": 0.2)", layers::KerasVersion{3, 8, 0}), InputDropout::PerGate);
  // Standalone Keras 2.0-2.3 follows the implementation alone; tf.keras's "2.3.0-tf" is Keras 2's.
  const layers::KerasVersion standalone = layers::KerasVersion::parse("2.2.4", "test"),
                             tf_keras = layers::KerasVersion::parse("2.3.0-tf", "test");
  ASSERT_TRUE(standalone.standalone());
  ASSERT_FALSE(tf_keras.standalone());
  EXPECT_EQ(tf_keras.str(), "2.3.0-tf");  // what a saved file states again
  EXPECT_EQ(scheme("", standalone), InputDropout::Shared);
  EXPECT_EQ(scheme(R"(, "recurrent_dropout": 0.2)", standalone), InputDropout::Shared);
  EXPECT_EQ(scheme(R"(, "implementation": 1)", standalone), InputDropout::PerGate);
  EXPECT_EQ(scheme("", tf_keras), InputDropout::PerStep);
  // Keras 3.0-3.4's ConvLSTM2D applies no dropout (its cell's mask code is commented out), 3.5 on
  // applies it: training outputs equal the inference ones only in the former.
  const auto convlstm_drops = [](const layers::KerasVersion& version) {
    Sequential model = Sequential::from_json(
        nlohmann::json::parse(
            R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 2, 5, 5, 2]}}, {"class_name": "ConvLSTM2D", "config": {"filters": 2, "kernel_size": [3, 3], "dropout": 0.5, "recurrent_dropout": 0.5, "return_sequences": true}}]}})"),
        "convlstm spec", version);
    model.build(3);
    Generator data(4), rng(5);
    const Tensor x = data.uniform({2, 2, 5, 5, 2}, 0.0, 1.0);
    layers::Layer& layer = *model.layers().back();
    return layer.forward(x, {true, &rng}).to_vector() != layer.forward(x, {}).to_vector();
  };
  EXPECT_FALSE(convlstm_drops(layers::KerasVersion{3, 4, 1}));
  EXPECT_TRUE(convlstm_drops(layers::KerasVersion{3, 5, 0}));
  EXPECT_TRUE(convlstm_drops(keras28));
  // Saved back as read, so that the masks stay the same.
  const nlohmann::json spec = nlohmann::json::parse(
      R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4, 6]}}, {"class_name": "LSTM", "config": {"units": 3, "unroll": true, "implementation": 1}}]}})");
  const nlohmann::json saved =
      Sequential::from_json(spec, "lstm spec").to_json()["config"]["layers"][1]["config"];
  EXPECT_EQ(saved["unroll"], true);
  EXPECT_EQ(saved["implementation"], 1);
}

// Accuracy is taken on the head's probabilities, as Keras's metrics take y_pred (from a helper's
// audit against Keras's source): logits a float32 ulp apart have equal probabilities, whose
// argmax is the first class; the logits' argmax would be the second.
TEST(Loss, AccuracyIsTakenOnTheProbabilities) {
  Sequential model = Sequential::from_json(
      nlohmann::json::parse(
          R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"units": 3, "activation": "softmax", "batch_input_shape": [null, 2]}}]}})"),
      "dense spec");
  model.build(1);
  LossTerms terms;
  terms.logits = Tensor::from_vector(std::vector<float>{0.1f, std::nextafter(0.1f, 1.0f), -3.0f}, {1, 3});
  terms.probs = ops::softmax(terms.logits);
  const std::vector<double> p = terms.probs.to_vector();
  ASSERT_EQ(p[0], p[1]) << "the case needs equal probabilities";
  EXPECT_EQ(correct_count(model, terms, Tensor::from_vector(std::vector<double>{1, 0, 0}, {1, 3})), 1);
  EXPECT_EQ(correct_count(model, terms, Tensor::from_vector(std::vector<double>{0, 1, 0}, {1, 3})), 0);
}

// Hand-written and Keras 3 specs read as Keras reads them (from a helper's audit of specs): an
// explicit null activation is linear (activations.get(None)), not the layer's default; a
// BatchNormalization axis given as an integer, or naming another axis than the last, is told
// apart (the last was assumed); a layer name a model file cannot hold is refused when read, not
// when the first checkpoint is saved; InputLayer(shape=...) gives the shape; a spec in Keras 3's
// form with no keras_version computes as Keras 3; a layer that does not fit its input names the
// spec.
TEST(Spec, NullsAxesNamesAndKeras3Forms) {
  const auto lstm_spec = [](const std::string& input, const std::string& extra) {
    return nlohmann::json::parse(
        R"({"class_name": "Sequential", "config": {"name": "s", "layers": [)" + input +
        R"(, {"class_name": "LSTM", "config": {"name": "lstm", "units": 3)" + extra +
        R"(}}, {"class_name": "Dense", "config": {"units": 2, "activation": "softmax"}}]}})");
  };
  const std::string input = R"({"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4, 6]}})";
  Sequential nulls = Sequential::from_json(
      lstm_spec(input, R"(, "activation": null, "recurrent_activation": null)"), "nulls");
  const nlohmann::json lstm = nulls.to_json()["config"]["layers"][1]["config"];
  EXPECT_EQ(lstm["activation"], "linear");
  EXPECT_EQ(lstm["recurrent_activation"], "linear");

  const auto bn_spec = [](const std::string& axis) {
    return nlohmann::json::parse(
        R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4, 6]}}, {"class_name": "BatchNormalization", "config": {"axis": )" +
        axis +
        R"(}}, {"class_name": "Flatten", "config": {}}, {"class_name": "Dense", "config": {"units": 2, "activation": "softmax"}}]}})");
  };
  for (const std::string axis : {"2", "[2]", "-1", "[-1]"}) {
    Sequential bn = Sequential::from_json(bn_spec(axis), "bn");
    EXPECT_NO_THROW(bn.build(1)) << axis;
  }
  for (const std::string axis : {"1", "[-2]"}) {
    Sequential bn = Sequential::from_json(bn_spec(axis), "bn spec");
    expect_error([&] { bn.build(1); }, {"bn spec", "not the channel axis"});
  }
  expect_error([&] { Sequential::from_json(bn_spec("[100]"), "bn spec"); }, {"bn spec", "axis [100]"});

  const nlohmann::json slash = nlohmann::json::parse(
      R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"name": "a/b", "units": 2, "batch_input_shape": [null, 3]}}]}})");
  expect_error([&] { Sequential::from_json(slash, "slash spec"); },
               {"slash spec", "'a/b'", "cannot name a layer"});

  Sequential shaped = Sequential::from_json(
      lstm_spec(R"({"class_name": "InputLayer", "config": {"shape": [4, 6]}})", ""), "shape");
  EXPECT_EQ(shaped.input_shape(), (Shape{4, 6}));

  const std::string path = (std::filesystem::temp_directory_path() /
                            ("hisvid_keras3_spec_" + std::to_string(::getpid()) + ".json"))
                               .string();
  nlohmann::json keras3 = lstm_spec(input, "");
  keras3["module"] = "keras";
  std::ofstream(path) << keras3.dump();
  EXPECT_TRUE(load_spec(path).keras_version().keras3());
  keras3.erase("module");
  std::ofstream(path) << keras3.dump();
  EXPECT_FALSE(load_spec(path).keras_version().keras3());
  std::filesystem::remove(path);

  Sequential too_small = Sequential::from_json(
      nlohmann::json::parse(
          R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 2, 2, 1]}}, {"class_name": "Conv2D", "config": {"filters": 1, "kernel_size": 3}}]}})"),
      "small.json");
  expect_error([&] { too_small.build(1); }, {"small.json: ", "Conv2D"});
}

TEST(Spec, WhatChangesTheComputationStaysAnError) {
  const std::string input =
      R"({"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4, 8, 8, 3]}},)";
  auto conv = [&](const std::string& extra) {
    return "[" + input +
           R"({"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Conv2D", "config": {"filters": 2, "kernel_size": 3)" +
           extra + "}}}}]";
  };
  expect_spec_error(conv(R"(, "dilation_rate": [2, 2])"), {"layer 2", "Conv2D", "dilation_rate"});
  expect_spec_error(conv(R"(, "dtype": {"class_name": "DTypePolicy", "config": {"name": "mixed_float16"}})"),
                    {"Conv2D", "mixed_float16", "float32"});
  expect_spec_error(conv(R"(, "kernel_constraint": {"class_name": "MaxNorm", "config": {"max_value": 2}})"),
                    {"Conv2D", "kernel_constraint"});
  expect_spec_error(conv(R"(, "kernel_regularizer": {"class_name": "OrthogonalRegularizer", "config": {}})"),
                    {"Conv2D", "kernel_regularizer", "OrthogonalRegularizer"});
  // 2^32 + 4 must not wrap to 4 filters.
  expect_spec_error(
      "[" + input + R"({"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Conv2D",
      "config": {"filters": 4294967300, "kernel_size": 3}}}}])",
      {"filters", "out of range"});
  expect_spec_error("[" + input + R"({"class_name": "Dense", "config": {"units": 2147483648}}])",
                    {"units", "out of range"});
  expect_spec_error(
      "[" + input + R"({"class_name": "Flatten", "registered_name": "my_pkg>Flatten", "config": {}}])",
      {"layer 2", "my_pkg>Flatten", "custom"});
  expect_spec_error("[" + input + R"({"class_name": "Flatten", "config": {}, "shape": 3}])",
                    {"layer 2", "unknown key 'shape'"});
  expect_spec_error(
      R"([{"class_name": "InputLayer", "config": {"batch_shape": [null, 4, 6], "sparse": true}}, {"class_name": "Flatten"}])",
      {"InputLayer", "sparse"});
}

TEST(Spec, HardSigmoidAndConvLstmGatesFollowTheKerasVersion) {
  const std::string spec = R"([{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 1]}},
    {"class_name": "Dense", "config": {"units": 1, "activation": "hard_sigmoid", "kernel_initializer": "ones"}}])";
  for (const bool keras3 : {false, true}) {
    Sequential model =
        Sequential::from_json(nlohmann::json::parse(spec), "spec",
                              keras3 ? layers::KerasVersion{3, 3, 3} : layers::KerasVersion{2, 15, 0});
    model.build(0);
    NoGradGuard no_grad;
    const double y = model.forward(Tensor::from_vector(std::vector<double>{2.0}, {1, 1}), {}).item();
    // Keras 2: clip(0.2 * 2 + 0.5) = 0.9; Keras 3: clip(2 / 6 + 0.5) = 0.8333..., in float32
    // (a few roundings of 6e-8 each); the two versions differ by 0.067.
    constexpr double kFloatRoundings = 1e-6;
    EXPECT_NEAR(y, keras3 ? 2.0 / 6.0 + 0.5 : 0.9, kFloatRoundings) << (keras3 ? "Keras 3" : "Keras 2");
  }
  const std::string convlstm =
      R"([{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 2, 5, 5, 1]}},
    {"class_name": "ConvLSTM2D", "config": {"filters": 1, "kernel_size": 3}}])";
  Sequential k2 =
      Sequential::from_json(nlohmann::json::parse(convlstm), "spec", layers::KerasVersion{2, 8, 0});
  Sequential k3 =
      Sequential::from_json(nlohmann::json::parse(convlstm), "spec", layers::KerasVersion{3, 0, 5});
  EXPECT_EQ(k2.to_json()["config"]["layers"][1]["config"]["recurrent_activation"], "hard_sigmoid");
  EXPECT_EQ(k3.to_json()["config"]["layers"][1]["config"]["recurrent_activation"], "sigmoid");
}

TEST(Spec, JsonNestingIsLimited) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_THROW(layers::parse_json_limited(deep), nlohmann::json::exception);
  const std::string shallow =
      std::string(layers::kMaxJsonDepth, '[') + std::string(layers::kMaxJsonDepth, ']');
  EXPECT_NO_THROW(layers::parse_json_limited(shallow));
}

TEST(Initializers, EveryKerasClassAndName) {
  const char* objects[] = {
      "GlorotUniform",   "GlorotNormal",          "HeUniform", "HeNormal", "LecunUniform",  "LecunNormal",
      "Orthogonal",      "OrthogonalInitializer", "Zeros",     "Ones",     "RandomUniform", "RandomNormal",
      "TruncatedNormal", "VarianceScaling",       "Constant"};
  const char* names[] = {"glorot_uniform",   "he_normal",  "lecun_normal", "uniform",
                         "normal",           "zero",       "one",          "truncated_normal",
                         "variance_scaling", "orthogonal", "identity"};
  std::vector<nlohmann::json> inits;
  for (const char* c : objects) inits.push_back({{"class_name", c}, {"config", {{"seed", nullptr}}}});
  inits.back()["config"] = {{"value", 0.5}};
  for (const char* n : names) inits.push_back(n);
  for (const nlohmann::json& init : inits) {
    SCOPED_TRACE(init.dump());
    nlohmann::json spec =
        nlohmann::json::parse(R"([{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 6]}},
      {"class_name": "Dense", "config": {"units": 6}}])");
    spec[1]["config"]["kernel_initializer"] = init;
    Sequential model = Sequential::from_json(spec, "spec");
    model.build(4);
    const std::vector<double> w = model.layers()[0]->weights()[0].value.to_vector();
    for (double v : w) EXPECT_TRUE(std::isfinite(v));
    // The class name is written back as read.
    const nlohmann::json back = model.to_json()["config"]["layers"][1]["config"]["kernel_initializer"];
    if (init.is_object()) {
      EXPECT_EQ(back["class_name"], init["class_name"]);
    }
  }
}

// Seed 003's per-frame labels: every window of T frames classified (built batch by batch), each
// frame the mean of the last K windows' probabilities.
TEST(Inference, RollingPredictionsAverageTheLastKWindows) {
  Sequential model = Sequential::from_json(nlohmann::json::parse(R"([
    {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 3, 4, 4, 1]}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Flatten", "config": {}}}},
    {"class_name": "LSTM", "config": {"units": 3}},
    {"class_name": "Dense", "config": {"units": 2, "activation": "softmax"}}])"),
                                           "spec");
  model.build(8);
  const io::ExtractionSettings settings{3, 4, 4, 1};
  std::vector<std::vector<uint8_t>> frames;
  for (int f = 0; f < 7; ++f) {
    std::vector<uint8_t> frame(16);
    for (int i = 0; i < 16; ++i) frame[i] = static_cast<uint8_t>((f * 37 + i * 11) % 256);
    frames.push_back(frame);
  }
  const RollingPredictions r = rolling_predictions(model, frames, settings, 2, /*batch_size=*/2);
  ASSERT_EQ(r.windows.size(), 5u);  // windows ending at frames 2..6
  ASSERT_EQ(r.frames.size(), 7u);
  EXPECT_TRUE(r.frames[0].empty() && r.frames[1].empty());
  for (size_t w = 0; w < 5; ++w) {
    std::vector<uint8_t> clip;
    for (size_t t = 0; t < 3; ++t) clip.insert(clip.end(), frames[w + t].begin(), frames[w + t].end());
    const std::vector<double> alone = classify_clips(model, {clip}, settings, 1)[0];
    // The same window alone or in a batch of 2: OpenBLAS may order the float32 sums differently.
    constexpr double kBatchSummation = 1e-6;
    for (size_t k = 0; k < 2; ++k) EXPECT_NEAR(r.windows[w][k], alone[k], kBatchSummation) << "window " << w;
  }
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_EQ(r.frames[2][k], r.windows[0][k]);  // the first frame with a window: that one alone
    EXPECT_DOUBLE_EQ(r.frames[6][k], (r.windows[3][k] + r.windows[4][k]) / 2);
  }
  expect_error(
      [&] {
        rolling_predictions(model, {frames[0], frames[1]}, settings, 2, 2);
      },
      {"2 frames", "3"});
}

// sklearn.metrics.classification_report with its default labels (those in the truth or the
// predictions), zero_division=0; the expected values worked by hand from the confusion matrices.
TEST(ClassificationReport, AveragesOverTheClassesInTheTruthOrThePredictions) {
  constexpr double kExact = 1e-12;  // a few divisions and sums of small integers
  // C is a model class neither in the data nor predicted: no row, not in the macro average.
  const ClassificationReport r = classification_report({0, 0, 1, 1, 1}, {0, 1, 1, 1, 0}, {"A", "B", "C"});
  EXPECT_EQ(r.labels, (std::vector<size_t>{0, 1}));
  EXPECT_NEAR(r.per_class[0].precision, 0.5, kExact);
  EXPECT_NEAR(r.per_class[1].f1, 2.0 / 3.0, kExact);
  EXPECT_NEAR(r.macro.precision, (0.5 + 2.0 / 3.0) / 2.0, kExact);
  EXPECT_NEAR(r.weighted.recall, 0.4 * 0.5 + 0.6 * 2.0 / 3.0, kExact);
  EXPECT_NEAR(r.accuracy, 0.6, kExact);
  EXPECT_EQ(r.text().find("C "), std::string::npos) << r.text();
  EXPECT_FALSE(r.to_json()["classes"].contains("C"));
  EXPECT_EQ(r.confusion.size(), 3u);  // the matrix keeps every model class
  // A class only predicted counts: precision 0, recall 0, in the average.
  const ClassificationReport p = classification_report({0, 1}, {2, 1}, {"A", "B", "C"});
  EXPECT_EQ(p.labels, (std::vector<size_t>{0, 1, 2}));
  EXPECT_NEAR(p.macro.precision, 1.0 / 3.0, kExact);
  EXPECT_NEAR(p.macro.f1, 1.0 / 3.0, kExact);
  EXPECT_NE(p.text().find("C "), std::string::npos) << p.text();
}

}  // namespace
}  // namespace hisvid::models
