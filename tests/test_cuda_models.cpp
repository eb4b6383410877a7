// tests/test_cuda_models.cpp — whole models on the GPU against the CPU (the kernels one by one
// are tests/test_kernel_table.cpp's), and the CUDA caching allocator. Without a CUDA device, or
// in a build without CUDA, every test skips and says why.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/cuda_device.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/kernel_profile.h"
#include "engine/nccl.h"
#include "engine/ops.h"
#include "engine/optimizer.h"
#include "engine/random.h"
#include "kernels/philox.h"
#include "kernels/softmax.h"
#include "models/inference_step.h"
#include "models/trainer.h"
#include "models/training_step.h"
#include "models/zoo.h"
#include "tests/test_support.h"
#include "tests/tiny_models.h"

#ifdef HISVID_WITH_CUDA
#include <cublas_v2.h>

#include "kernels/cuda_context.h"
#endif

namespace hisvid {
namespace {

std::string skip_reason() {
  const std::string reason = cuda_unavailable_reason();
  return reason.empty() ? std::string() : "no CUDA device to compare with the CPU: " + reason;
}

#ifdef HISVID_WITH_CUDA
double rms(const std::vector<float>& v) {
  double s = 0.0;
  for (float x : v) s += double(x) * double(x);
  return v.empty() ? 0.0 : std::sqrt(s / double(v.size()));
}

// |gpu - cpu| <= tol * max(|cpu|, rms(cpu)) everywhere; NaN anywhere fails.
void expect_close(const std::string& what, const std::vector<float>& gpu, const std::vector<float>& cpu,
                  double tol) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  const double scale = rms(cpu);
  size_t bad = 0, worst = 0;
  double worst_err = -1.0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const double err = std::fabs(double(gpu[i]) - double(cpu[i]));
    const bool ok =
        !std::isnan(gpu[i]) && !std::isnan(cpu[i]) && err <= tol * std::max<double>(std::fabs(cpu[i]), scale);
    if (!ok) {
      ++bad;
      if (!(err <= worst_err)) worst_err = err, worst = i;
    }
  }
  if (bad > 0) {
    ADD_FAILURE() << what << ": " << bad << " of " << cpu.size() << " elements differ beyond tol " << tol
                  << " x max(|cpu|, rms " << scale << "); worst at " << worst << ": gpu " << gpu[worst]
                  << " cpu " << cpu[worst];
  }
}
#endif

// ---------------------------------------------------------------------------------------
// Whole models: the tiny LRCN and ConvLSTM of tiny_models.h, one training step each —
// forward in training mode (dropout and recurrent dropout on), softmax cross-entropy,
// backward, one Adam update — on the GPU and on the CPU from the same float32 values. The
// dropout masks are the same bits on both devices, so both compute the same function and
// differ only by rounding.
// ---------------------------------------------------------------------------------------

// Loss, gradients and updated weights of a whole model: every value carries a few hundred
// float32 roundings, taken in different orders on the two backends (cuDNN/cuBLAS against
// OpenBLAS and loops) and fed back through T recurrent steps. The same step in float32 against
// float64 on the CPU differs by at most 1.3e-6 of the scale in these two models; 1e-4 leaves
// room for other summation orders, while a wrong index, a missing term or a different mask
// is >= 1e-2.
constexpr double kModelStep = 1e-4;
// Adam's epsilon in this test. With Keras's 1e-7 the first update is lr * g / (|g| + 1e-7):
// for a gradient element of about 1e-7 a rounding difference in g becomes a difference of a
// whole lr in the update. 1e-3 keeps the update a smooth function of the gradient.
constexpr double kStepEpsilon = 1e-3;

using testing::tiny_convlstm;
using testing::tiny_convlstm_loss;
using testing::tiny_lrcn;
using testing::tiny_lrcn_loss;
using testing::TinyModel;
using testing::worse;

using LossFunction = Tensor (*)(const std::vector<Tensor>&, const Tensor&, uint64_t step);

#ifdef HISVID_WITH_CUDA

struct StepResult {
  double loss = 0.0;
  std::vector<std::vector<float>> grads;    // d loss / d input, for the clip batch and every parameter
  std::vector<std::vector<float>> weights;  // the parameters after the Adam update
};

std::vector<float> host_floats(const Tensor& t) {
  const std::vector<double> v = t.to_vector();
  return std::vector<float>(v.begin(), v.end());
}

StepResult training_step(const TinyModel& model, LossFunction loss_of, Device device) {
  std::vector<Tensor> inputs;
  for (const Tensor& t : model.inputs) {
    Tensor x = t.detach().to(DType::Float32).to(device);
    x.set_requires_grad(true);
    inputs.push_back(x);
  }
  const Tensor targets = model.targets.to(DType::Float32).to(device);
  Tape::current().clear();
  const Tensor loss = loss_of(inputs, targets, 0);
  backward(loss);
  Tape::current().clear();

  StepResult result;
  result.loss = loss.item();
  for (const Tensor& x : inputs) result.grads.push_back(host_floats(x.grad()));
  const std::vector<Tensor> params(inputs.begin() + 1, inputs.end());
  Adam adam(1e-2, 0.9, 0.999, kStepEpsilon);
  adam.step(params);
  for (const Tensor& p : params) result.weights.push_back(host_floats(p));
  return result;
}

void expect_same_step(const TinyModel& model, LossFunction loss_of) {
  const StepResult cpu = training_step(model, loss_of, Device::cpu());
  const StepResult gpu = training_step(model, loss_of, Device::cuda(0));
  EXPECT_NEAR(gpu.loss, cpu.loss, kModelStep * std::max(1.0, std::fabs(cpu.loss)));
  for (size_t i = 0; i < cpu.grads.size(); ++i) {
    expect_close("gradient of input " + std::to_string(i), gpu.grads[i], cpu.grads[i], kModelStep);
  }
  for (size_t i = 0; i < cpu.weights.size(); ++i) {
    expect_close("parameter " + std::to_string(i + 1) + " after Adam", gpu.weights[i], cpu.weights[i],
                 kModelStep);
  }
}
#endif  // HISVID_WITH_CUDA

// NCCL as a data-parallel run uses it (engine/nccl.h), on a group of one rank: the library
// loads, the group forms on the device, and a sum over one rank leaves float32 and float64
// values exactly as they were (an all-reduce of one contribution adds nothing). Multi-rank runs
// go through the same calls with the id sent through MPI (engine/distributed.cpp).
TEST(Nccl, OneRankGroupSumsInPlace) {
  const std::string reason = cuda_unavailable_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  const std::string missing = nccl_unavailable_reason();
  ASSERT_EQ(missing, "") << "with a GPU present, NCCL must load for data-parallel CUDA runs";
  const Device gpu = Device::cuda(0);
  NcclGroup group(nccl_unique_id(), 1, 0, gpu);
  for (DType dtype : {DType::Float32, DType::Float64}) {
    std::vector<double> values(1000);
    for (size_t i = 0; i < values.size(); ++i) values[i] = std::sin(0.37 * static_cast<double>(i)) * 1e3;
    Tensor t = Tensor::from_vector(values, Shape{10, 100}, dtype, gpu);
    const std::vector<double> before = t.to_vector();
    group.sum(t.data_ptr(), static_cast<size_t>(t.numel()), dtype);
    EXPECT_EQ(t.to_vector(), before) << dtype_name(dtype);
  }
}

TEST(CudaModelParity, TinyLrcnTrainingStep) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
#ifdef HISVID_WITH_CUDA
  expect_same_step(tiny_lrcn(), tiny_lrcn_loss);
#endif
}

TEST(CudaModelParity, TinyConvLstmTrainingStep) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
#ifdef HISVID_WITH_CUDA
  expect_same_step(tiny_convlstm(), tiny_convlstm_loss);
#endif
}

// The seed LRCN with its four Conv2D + MaxPooling2D blocks fused on the GPU
// (Fusion::Everywhere: ops::conv2d_act_pool's cuda rows, version 2) against the same model
// layer by layer on the GPU: a training step's probabilities and every weight's gradient (batch
// 2, dropout on, the same masks: the fused blocks fold the three Dropout layers in, drawing them
// in the kernels), then an evaluation at batch 5 (no tape: the fused forward
// keeps no maxima). The fused blocks sum in other orders (the sparse weight gradients, the
// transposed convolution from the pooled gradients): float32 roundings of sums of up to 576
// products, as in the CPU test Fusion.LrcnBlocksFuseAndComputeTheSameStep, whose tolerance
// this takes.
TEST(CudaModelParity, FusedLrcnBlocksMatchTheLayers) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
#ifdef HISVID_WITH_CUDA
  constexpr double kStepTol = 1e-4;
  const Device gpu = Device::cuda(0);
  models::Sequential fused = models::load_spec("lrcn", 5), plain = models::load_spec("lrcn", 5);
  fused.build(3);
  plain.build(3);
  fused.set_fuse_conv_pool(models::Sequential::Fusion::Everywhere);
  plain.set_fuse_conv_pool(models::Sequential::Fusion::None);
  fused.to(gpu);
  plain.to(gpu);
  // The comparison means something only if one model runs the four blocks fused on the GPU.
  const auto fused_blocks = [&gpu](const models::Sequential& model) {
    int blocks = 0;
    for (const models::Sequential::Step& step : model.steps(gpu)) blocks += step.count > 1 ? 1 : 0;
    return blocks;
  };
  ASSERT_EQ(fused_blocks(fused), 4);
  ASSERT_EQ(fused_blocks(plain), 0);
  Generator data(5);
  const Tensor x = data.uniform({2, 20, 64, 64, 3}, 0.0, 1.0).to(DType::Float32).to(gpu);
  const Tensor y =
      Tensor::from_vector(std::vector<double>{0, 1, 0, 0, 0, 0, 0, 0, 1, 0}, {2, 5}, DType::Float32, gpu);
  const Tensor x_eval = data.uniform({5, 20, 64, 64, 3}, 0.0, 1.0).to(DType::Float32).to(gpu);
  std::vector<std::vector<float>> grads[2];
  std::vector<float> probs[2], eval[2];
  models::Sequential* models[2] = {&fused, &plain};
  int64_t fused_calls[2] = {0, 0};  // conv2d_act_pool_forward calls of each model's forward
  for (int m = 0; m < 2; ++m) {
    Generator masks(11);  // the same dropout masks in both models
    const layers::ForwardContext ctx{true, &masks};
    Tape::current().clear();
    Tensor logits;
    {
      KernelProfile profile(gpu);
      logits = models[m]->forward(x, ctx, models::Output::Logits);
      for (const KernelProfile::Row& row : profile.rows())
        if (row.kernel == "conv2d_act_pool_forward") fused_calls[m] = row.calls;
    }
    probs[m] = host_floats(ops::softmax(logits));
    backward(ops::softmax_cross_entropy(logits, y).loss);
    Tape::current().clear();
    for (const Tensor& w : models[m]->trainable_weights()) grads[m].push_back(host_floats(w.grad()));
    NoGradGuard no_grad;
    eval[m] = host_floats(models[m]->forward(x_eval, {}));
  }
  EXPECT_EQ(fused_calls[0], 4);  // the fused kernel ran, once per block
  EXPECT_EQ(fused_calls[1], 0);
  expect_close("training probabilities", probs[0], probs[1], kStepTol);
  expect_close("evaluation probabilities", eval[0], eval[1], kStepTol);
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t w = 0; w < grads[0].size(); ++w) {
    expect_close("gradient of weight " + std::to_string(w), grads[0][w], grads[1][w], kStepTol);
  }
#endif
}

// ---------------------------------------------------------------------------------------
// The recurrence ops alone (ops::lstm_recurrence, ops::convlstm_recurrence) on odd shapes, with
// and without recurrent dropout masks, every h or the last: output and the gradients of xz and
// R on the GPU against the CPU. The odd shapes put the per-gate and per-step blocks the ops hand
// to cuDNN at addresses that are not 16-byte aligned; U = 64 keeps the LSTM's R outside shared
// memory. Each value is a few steps of float32 sums (at most 9*F*4 terms) in other orders on the
// two devices: kModelStep's reasoning holds.
// ---------------------------------------------------------------------------------------

#ifdef HISVID_WITH_CUDA
using RecurrenceOp = Tensor (*)(const Tensor& xz, const Tensor& R, const Tensor& masks, bool sequences);

Tensor lstm_op(const Tensor& xz, const Tensor& R, const Tensor& masks, bool sequences) {
  return ops::lstm_recurrence(xz, R, masks, Activation::Tanh, Activation::Sigmoid, sequences);
}
Tensor convlstm_op(const Tensor& xz, const Tensor& R, const Tensor& masks, bool sequences) {
  return ops::convlstm_recurrence(xz, R, masks, Activation::Tanh, Activation::HardSigmoid, sequences);
}

// Values in [-scale, scale) from sin, the same on every machine.
Tensor wave(const Shape& shape, double phase, double scale, Device device) {
  std::vector<double> v(static_cast<size_t>(shape.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = scale * std::sin(phase + 0.731 * static_cast<double>(i));
  return Tensor::from_vector(v, shape, DType::Float32, device);
}

// Output, then the gradients of xz and R of sum(op(...) * projection).
std::vector<std::vector<float>> run_recurrence(RecurrenceOp op, const Shape& xz_shape, const Shape& R_shape,
                                               const Shape& mask_shape, bool masked, bool sequences,
                                               Device device) {
  Tensor xz = wave(xz_shape, 0.1, 2.0, device), R = wave(R_shape, 0.2, 0.4, device);
  xz.set_requires_grad(true);
  R.set_requires_grad(true);
  Tensor masks;
  if (masked) {
    std::vector<double> m(static_cast<size_t>(mask_shape.numel()));
    for (size_t i = 0; i < m.size(); ++i) m[i] = philox_uniform(0x3A5C, 1, i) < 0.2f ? 0.0 : 1.25;
    masks = Tensor::from_vector(m, mask_shape, DType::Float32, device);
  }
  Tape::current().clear();
  const Tensor out = op(xz, R, masks, sequences);
  backward(ops::sum(ops::mul(out, wave(out.shape(), 0.3, 1.0, device))));
  Tape::current().clear();
  return {host_floats(out), host_floats(xz.grad()), host_floats(R.grad())};
}

void expect_same_recurrence(const std::string& name, RecurrenceOp op, const Shape& xz_shape,
                            const Shape& R_shape, const Shape& mask_shape) {
  const char* parts[] = {"output", "gradient of xz", "gradient of R"};
  for (bool masked : {false, true}) {
    for (bool sequences : {false, true}) {
      const std::string what = name + (masked ? ", masks" : "") + (sequences ? ", every h" : ", last h");
      const auto cpu = run_recurrence(op, xz_shape, R_shape, mask_shape, masked, sequences, Device::cpu());
      const auto gpu = run_recurrence(op, xz_shape, R_shape, mask_shape, masked, sequences, Device::cuda(0));
      for (size_t i = 0; i < cpu.size(); ++i)
        expect_close(what + ": " + parts[i], gpu[i], cpu[i], kModelStep);
    }
  }
}
#endif  // HISVID_WITH_CUDA

TEST(CudaRecurrence, OpsMatchTheCpuOnOddShapes) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
#ifdef HISVID_WITH_CUDA
  expect_same_recurrence("lstm U=5", lstm_op, {3, 4, 20}, {5, 20}, {4, 3, 5});
  expect_same_recurrence("lstm U=64", lstm_op, {3, 5, 256}, {64, 256}, {4, 3, 64});
  expect_same_recurrence("convlstm F=3", convlstm_op, {3, 4, 3, 5, 12}, {3, 3, 3, 12}, {4, 3, 3, 5, 3});
#endif
}

// By default the ConvLSTM step's version is chosen by timing (kernels/lstm.cu): once per shape
// and direction, v1, lanes_v2, tiles and tiles_v2 each timed and one kept, as the record of timed choices
// says; running the same shape again times nothing more. (That the versions compute the same
// steps is the harness's check, and the test above runs whichever timing kept.)
TEST(CudaRecurrence, TheConvLstmStepIsTimedOncePerShapeAndDirection) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  const char* forced = std::getenv("HISVID_CUDA_CONVLSTM_STEP");
  if (forced != nullptr && *forced != '\0' && std::string(forced) != "timed")
    GTEST_SKIP() << "HISVID_CUDA_CONVLSTM_STEP=" << forced << " fixes the version: nothing is timed";
#ifdef HISVID_WITH_CUDA
  for (int run = 0; run < 2; ++run) {
    run_recurrence(convlstm_op, {2, 6, 7, 9, 20}, {3, 3, 5, 20}, {4, 2, 7, 9, 5}, true, true,
                   Device::cuda(0));
  }
  const std::string shape =
      " on batch 2, 7x9 pixels, 5 filters, recurrent kernel 3x3, recurrent dropout, 6 steps: ";
  const std::vector<std::string> choices = cuda_timed_choices();
  for (const std::string op : {"convlstm_step_forward", "convlstm_step_backward"}) {
    std::vector<std::string> lines;
    for (const std::string& line : choices)
      if (line.rfind(op + shape, 0) == 0) lines.push_back(line);
    ASSERT_EQ(lines.size(), 1u) << op << ": timed " << lines.size() << " times";
    const std::string& line = lines[0];
    EXPECT_EQ(line.find(shape + "v1 "), op.size()) << line;
    EXPECT_NE(line.find(", lanes_v2 "), std::string::npos) << line;
    EXPECT_NE(line.find(", tiles "), std::string::npos) << line;
    EXPECT_NE(line.find(", tiles_v2 "), std::string::npos) << line;
    const size_t kept_at = line.rfind("; kept ");
    ASSERT_NE(kept_at, std::string::npos) << line;
    const std::string kept = line.substr(kept_at + 7, line.find(';', kept_at + 7) - (kept_at + 7));
    EXPECT_TRUE(kept == "v1" || kept == "lanes_v2" || kept == "tiles" || kept == "tiles_v2") << line;
    EXPECT_EQ(line.find("failed"), std::string::npos) << line;
  }
#endif
}

// ---------------------------------------------------------------------------------------
// A short training run: 30 Adam steps of each tiny model from the same weights and data, with
// fresh dropout masks every step (the same bits on both devices), on the GPU and on the CPU.
// The loss curves and the final weights must agree within kTrainingRun.
//
// Where that tolerance comes from: rounding differences do not stay put over a run, each step's
// weights carry the last step's differences forward and Adam rescales them. How far float32
// drifts from exact arithmetic over these 30 steps is measured on the CPU, float32 against
// float64 from the same start (TrainingRun.Float32DriftOnTheCpu, which runs on every machine
// and fails if the drift outgrows its share of the tolerance): kMeasuredDrift below is the
// largest relative difference of loss or weights it found (lrcn 2.31e-6, convlstm 2.61e-6;
// AMD EPYC, 2026-11-26). Two float32
// implementations that each stay within d of the exact run are within 2d of each other; the
// GPU sums in other orders (cuDNN, cuBLAS, atomics) than the CPU, so kDriftHeadroom more on
// top. A wrong kernel, a mask that differs, or a step that is skipped moves the curve by
// >= 1e-2 within a few steps.
// ---------------------------------------------------------------------------------------
constexpr int kRunSteps = 30;
constexpr double kMeasuredDrift = 2.6e-6;
constexpr double kDriftHeadroom = 20.0;
constexpr double kTrainingRun = 2 * kMeasuredDrift * kDriftHeadroom;  // 1.04e-4

struct TrainingRun {
  std::vector<double> losses;               // one per step, before that step's update
  std::vector<std::vector<float>> weights;  // every parameter after the last step
};

TrainingRun training_run(const TinyModel& model, LossFunction loss_of, Device device, DType dtype) {
  const Tensor x = model.inputs[0].detach().to(dtype).to(device);
  const Tensor targets = model.targets.to(dtype).to(device);
  std::vector<Tensor> params;
  for (size_t i = 1; i < model.inputs.size(); ++i) {
    Tensor p = model.inputs[i].detach().to(DType::Float32).to(dtype).to(device);  // float32 values
    p.set_requires_grad(true);
    params.push_back(p);
  }
  Adam adam(1e-2, 0.9, 0.999, kStepEpsilon);
  TrainingRun run;
  for (int step = 0; step < kRunSteps; ++step) {
    std::vector<Tensor> inputs{x};
    inputs.insert(inputs.end(), params.begin(), params.end());
    for (Tensor& p : params) p.zero_grad();
    Tape::current().clear();
    const Tensor loss = loss_of(inputs, targets, uint64_t(step));
    backward(loss);
    Tape::current().clear();
    run.losses.push_back(loss.item());
    adam.step(params);
  }
  for (const Tensor& p : params) {
    const std::vector<double> v = p.to_vector();
    run.weights.emplace_back(v.begin(), v.end());
  }
  return run;
}

// The largest relative difference between two runs: of each step's loss (relative to
// max(1, |loss|)) and of every final weight (relative to max(|w|, rms of its tensor)).
double run_difference(const TrainingRun& a, const TrainingRun& reference) {
  double worst = 0.0;
  for (size_t k = 0; k < reference.losses.size(); ++k) {
    const double d =
        std::fabs(a.losses[k] - reference.losses[k]) / std::max(1.0, std::fabs(reference.losses[k]));
    worst = worse(worst, d);
  }
  for (size_t i = 0; i < reference.weights.size(); ++i) {
    double ss = 0.0;
    for (float w : reference.weights[i]) ss += double(w) * double(w);
    const double scale = std::sqrt(ss / double(std::max<size_t>(1, reference.weights[i].size())));
    for (size_t j = 0; j < reference.weights[i].size(); ++j) {
      const double ref = reference.weights[i][j];
      const double d = std::fabs(double(a.weights[i][j]) - ref) / std::max(std::fabs(ref), scale);
      worst = worse(worst, d);
    }
  }
  return worst;
}

// The run must learn something, or agreement would be cheap: the loss falls over the run.
void expect_learns(const TrainingRun& run) {
  ASSERT_EQ(run.losses.size(), size_t(kRunSteps));
  EXPECT_LT(run.losses.back(), 0.9 * run.losses.front())
      << "the loss did not fall over " << kRunSteps << " steps";
}

// float32 on the CPU against float64 on the CPU: the drift kTrainingRun is derived from. The
// drift must stay within kMeasuredDrift (with 2x for other CPUs' BLAS kernels), or the GPU
// tolerance above is no longer justified.
TEST(TrainingRun, Float32DriftOnTheCpu) {
  for (const auto& [name, model, loss_of] :
       {std::tuple{"lrcn", tiny_lrcn(), LossFunction(tiny_lrcn_loss)},
        std::tuple{"convlstm", tiny_convlstm(), LossFunction(tiny_convlstm_loss)}}) {
    const TrainingRun exact = training_run(model, loss_of, Device::cpu(), DType::Float64);
    const TrainingRun single = training_run(model, loss_of, Device::cpu(), DType::Float32);
    expect_learns(exact);
    const double drift = run_difference(single, exact);
    std::printf("tiny %s: float32 drift over %d steps %.3g (loss %.4f -> %.4f)\n", name, kRunSteps, drift,
                exact.losses.front(), exact.losses.back());
    EXPECT_LE(drift, 2 * kMeasuredDrift) << name;
  }
}

TEST(CudaModelParity, TinyLrcnTrainingRun) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  const TinyModel model = tiny_lrcn();
  const TrainingRun cpu = training_run(model, tiny_lrcn_loss, Device::cpu(), DType::Float32);
  const TrainingRun gpu = training_run(model, tiny_lrcn_loss, Device::cuda(0), DType::Float32);
  expect_learns(cpu);
  const double difference = run_difference(gpu, cpu);
  std::printf("tiny lrcn: GPU vs CPU over %d steps %.3g (tolerance %.3g; loss %.4f -> %.4f)\n", kRunSteps,
              difference, kTrainingRun, cpu.losses.front(), cpu.losses.back());
  EXPECT_LE(difference, kTrainingRun);
}

TEST(CudaModelParity, TinyConvLstmTrainingRun) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  const TinyModel model = tiny_convlstm();
  const TrainingRun cpu = training_run(model, tiny_convlstm_loss, Device::cpu(), DType::Float32);
  const TrainingRun gpu = training_run(model, tiny_convlstm_loss, Device::cuda(0), DType::Float32);
  expect_learns(cpu);
  const double difference = run_difference(gpu, cpu);
  std::printf("tiny convlstm: GPU vs CPU over %d steps %.3g (tolerance %.3g; loss %.4f -> %.4f)\n", kRunSteps,
              difference, kTrainingRun, cpu.losses.front(), cpu.losses.back());
  EXPECT_LE(difference, kTrainingRun);
}

// The same runs with TF32 allowed (--tf32): cuBLAS's GEMMs (the Dense layers and the LSTM's
// input projection) and cuDNN's convolutions round each product's inputs to 10 mantissa bits,
// 2^-11 against float32's 2^-24, so the drift from the exact run may grow by up to 2^13 against
// float32's (kMeasuredDrift); the run must still learn. The drift is printed: it is the mode's
// accuracy on these models (the hand-written kernels stay float32, so it is smaller where they
// do most of the work).
constexpr double kTf32Drift = kMeasuredDrift * 8192.0 * 2.0;  // 0.043

class AllowTf32 {  // for one scope, so that the other tests run in float32
 public:
  explicit AllowTf32(Device device) : device_(device) { cuda_set_allow_tf32(device_, true); }
  ~AllowTf32() { cuda_set_allow_tf32(device_, false); }
  AllowTf32(const AllowTf32&) = delete;
  AllowTf32& operator=(const AllowTf32&) = delete;

 private:
  Device device_;
};

TEST(CudaModelParity, TinyTrainingRunsUnderTf32) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  for (const auto& [name, model, loss_of] :
       {std::tuple{"lrcn", tiny_lrcn(), LossFunction(tiny_lrcn_loss)},
        std::tuple{"convlstm", tiny_convlstm(), LossFunction(tiny_convlstm_loss)}}) {
    const TrainingRun exact = training_run(model, loss_of, Device::cpu(), DType::Float64);
    TrainingRun tf32;
    {
      const AllowTf32 allow(Device::cuda(0));
#ifdef HISVID_WITH_CUDA
      // The switch reached cuBLAS's GEMMs (the Dense layers, the LSTM's input projection), or the
      // drift below would be float32's and say nothing about TF32.
      cublasMath_t mode{};
      ASSERT_EQ(cublasGetMathMode(cuda::context(0).cublas(), &mode), CUBLAS_STATUS_SUCCESS);
      EXPECT_EQ(mode, CUBLAS_TF32_TENSOR_OP_MATH);
#endif
      tf32 = training_run(model, loss_of, Device::cuda(0), DType::Float32);
    }
    expect_learns(tf32);
    const double drift = run_difference(tf32, exact);
    std::printf(
        "tiny %s: TF32 on the GPU vs float64 over %d steps %.3g (tolerance %.3g; loss %.4f -> %.4f)\n", name,
        kRunSteps, drift, kTf32Drift, tf32.losses.front(), tf32.losses.back());
    EXPECT_LE(drift, kTf32Drift) << name;
  }
}

// From their third step on, the tiny models' training steps take every block of the device's
// allocator from its cache (no cudaMalloc, no aligned_alloc), on the CPU and on the GPU.
size_t steady_state_system_allocations(Device device) {
  size_t after_two = 0;
  Allocator& memory = allocator_for(device);
  for (auto [model, loss_of] : {std::pair{tiny_lrcn(), LossFunction(tiny_lrcn_loss)},
                                std::pair{tiny_convlstm(), LossFunction(tiny_convlstm_loss)}}) {
    const Tensor x = model.inputs[0].detach().to(DType::Float32).to(device);
    const Tensor targets = model.targets.to(DType::Float32).to(device);
    std::vector<Tensor> params;
    for (size_t i = 1; i < model.inputs.size(); ++i) {
      params.push_back(model.inputs[i].detach().to(DType::Float32).to(device).set_requires_grad(true));
    }
    Adam adam(1e-2, 0.9, 0.999, kStepEpsilon);
    for (int step = 0; step < 5; ++step) {
      std::vector<Tensor> inputs{x};
      inputs.insert(inputs.end(), params.begin(), params.end());
      for (Tensor& p : params) p.zero_grad();
      Tape::current().clear();
      backward(loss_of(inputs, targets, uint64_t(step)));
      Tape::current().clear();
      adam.step(params);
      if (step == 1) after_two = memory.system_allocations();
    }
    synchronize(device);
    if (memory.system_allocations() != after_two) return memory.system_allocations() - after_two;
  }
  return 0;
}

TEST(SteadyState, TinyTrainingStepsAllocateNothingFromTheSystemOnTheCpu) {
  EXPECT_EQ(steady_state_system_allocations(Device::cpu()), 0u);
}

TEST(SteadyState, TinyTrainingStepsAllocateNothingFromTheSystemOnTheGpu) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  EXPECT_EQ(steady_state_system_allocations(Device::cuda(0)), 0u);
}

// Blocks come back from the pool once warm: the same size class reuses the freed block, and
// bytes_in_use follows what is handed out.
TEST(CudaAllocator, ReusesFreedBlocks) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
#ifdef HISVID_WITH_CUDA
  Allocator& allocator = cuda_allocator(Device::cuda(0));
  const size_t before = allocator.bytes_in_use();
  void* a = allocator.allocate(1000);
  EXPECT_EQ(allocator.bytes_in_use(), before + 1000);
  allocator.deallocate(a, 1000);
  EXPECT_EQ(allocator.bytes_in_use(), before);
  void* b = allocator.allocate(900);  // same 512-byte class (1024)
  EXPECT_EQ(b, a);
  void* c = allocator.allocate(3 << 20);
  EXPECT_NE(c, nullptr);
  EXPECT_GE(allocator.peak_bytes_in_use(), before + 900 + (3 << 20));
  allocator.deallocate(c, 3 << 20);
  allocator.deallocate(b, 900);
  EXPECT_EQ(allocator.bytes_in_use(), before);
  EXPECT_EQ(allocator.allocate(0), nullptr);
#endif
}

// Debug builds synchronise the device after every launch (HISVID_CHECK_LAUNCH), which a
// capture forbids: graphs are tested in release builds.
#ifdef NDEBUG
constexpr bool graphs_capturable() { return true; }
#else
constexpr bool graphs_capturable() { return false; }
#endif
constexpr const char* kDebugCapture = "a debug build synchronises after every launch: no graph capture";

// A graph's memory is its own: a block allocated during the capture and freed there is not
// handed out afterwards while the graph lives (its replays write there), and the graph's
// replay computes what the captured ops compute. Destroying the graph returns its blocks.
TEST(CudaGraphs, CapturedBlocksStayTheGraphsAndReplaysCompute) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  if (!graphs_capturable()) GTEST_SKIP() << kDebugCapture;
  const Device gpu = Device::cuda(0);
  const Tensor x = Tensor::full(Shape{1000}, 3.0, DType::Float32, gpu);
  Tensor out = Tensor::zeros(Shape{1000}, DType::Float32, gpu);
  void* scratch_address = nullptr;
  std::unique_ptr<CudaGraph> graph = cuda_capture(gpu, [&] {
    const Tensor scratch = ops::mul(x, x);  // 9, in a block of the graph's pool
    scratch_address = scratch.data_ptr();
    out.copy_from(ops::add(scratch, x));  // 12
  });
  EXPECT_EQ(out.to_vector()[0], 0.0) << "capturing ran the work";
  const Tensor later = Tensor::empty(Shape{1000}, DType::Float32, gpu);  // the scratch's size class
  EXPECT_NE(later.data_ptr(), scratch_address) << "a block of the graph was handed out while it lives";
  graph->replay();
  const std::vector<double> replayed = out.to_vector();
  EXPECT_EQ(*std::min_element(replayed.begin(), replayed.end()), 12.0);
  EXPECT_EQ(*std::max_element(replayed.begin(), replayed.end()), 12.0);
}

// The blocks a graph keeps for its replays count in the peak while it lives, though no tensor
// holds them: the peak of a step replayed from a graph (hisvid_bench's peak_mem_mb of the
// train_graph and eval_graph rows, reset after the capture) includes the captured step's
// activations. Once the graph is gone they do not.
TEST(CudaGraphs, TheBlocksAGraphKeepsCountInThePeak) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  if (!graphs_capturable()) GTEST_SKIP() << kDebugCapture;
  const Device gpu = Device::cuda(0);
  Allocator& allocator = allocator_for(gpu);
  const Tensor x = Tensor::full(Shape{1 << 20}, 3.0, DType::Float32, gpu);  // 4 MiB
  Tensor out = Tensor::zeros(Shape{1 << 20}, DType::Float32, gpu);
  const size_t scratch_bytes = size_t(4) << 20, in_use = allocator.bytes_in_use();
  {
    std::unique_ptr<CudaGraph> graph = cuda_capture(gpu, [&] { out.copy_from(ops::add(ops::mul(x, x), x)); });
    EXPECT_EQ(allocator.bytes_in_use(), in_use) << "the capture's scratch is freed into the graph's pool";
    allocator.reset_peak();
    EXPECT_GE(allocator.peak_bytes_in_use(), in_use + scratch_bytes);
    graph->replay();
    EXPECT_EQ(out.to_vector()[0], 12.0);
  }
  allocator.reset_peak();
  EXPECT_LT(allocator.peak_bytes_in_use(), in_use + scratch_bytes);
}

// A workspace replaced by a larger one while a graph lives is not handed out again until the
// graph is gone: the graph's kernels use it as scratch at every replay. The old block's size
// class is asked for right after the replacement; once the graph is destroyed, that block is
// the one handed out (so the check above could see it).
TEST(CudaGraphs, AWorkspaceReplacedUnderAGraphIsNotHandedOut) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  if (!graphs_capturable()) GTEST_SKIP() << kDebugCapture;
#ifdef HISVID_WITH_CUDA
  const Device gpu = Device::cuda(0);
  Allocator& allocator = allocator_for(gpu);  // installs itself as the context's workspace provider
  cuda::Context& ctx = cuda::context(0);
  constexpr size_t kOld = size_t(8) << 20, kNew = size_t(64) << 20;
  allocator.release_workspace();  // no graph lives: the next workspace is a fresh 8 MiB one
  void* old_workspace = ctx.workspace(kOld);
  const Tensor x = Tensor::full(Shape{1000}, 3.0, DType::Float32, gpu);
  Tensor out = Tensor::zeros(Shape{1000}, DType::Float32, gpu);
  {
    std::unique_ptr<CudaGraph> graph = cuda_capture(gpu, [&] { out.copy_from(ops::mul(x, x)); });
    EXPECT_NE(ctx.workspace(kNew), old_workspace);
    void* probe = allocator.allocate(kOld);
    EXPECT_NE(probe, old_workspace) << "the replaced workspace was handed out while a graph lives";
    allocator.deallocate(probe, kOld);
    graph->replay();
    EXPECT_EQ(out.to_vector()[0], 9.0);
  }
  void* after = allocator.allocate(kOld);
  EXPECT_EQ(after, old_workspace) << "the retired workspace did not join the cache with the graph gone";
  allocator.deallocate(after, kOld);
#endif
}

// What cannot be captured (here a host read of a device value inside the capture) is an
// error naming the capture, and the device works as before after it.
TEST(CudaGraphs, AnUncapturableStepIsAnErrorAndTheStreamRecovers) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  if (!graphs_capturable()) GTEST_SKIP() << kDebugCapture;
  const Device gpu = Device::cuda(0);
  const Tensor x = Tensor::full(Shape{10}, 2.0, DType::Float32, gpu);
  try {
    cuda_capture(gpu, [&] { (void)ops::sum(x).item(); });
    ADD_FAILURE() << "a host read inside a capture was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("capturing a CUDA graph"), std::string::npos) << e.what();
  }
  EXPECT_EQ(ops::sum(x).item(), 20.0);
}

// A step replayed from a CUDA graph is the direct step bit for bit (models/training_step.h):
// the seeds' models, batch 4, every augmentation and dropout on, seven steps each way: two
// direct ones, the capture (and its first replay), a replay, a direct step of 3 clips (another
// size), two more replays. A tensor allocated between replays is left alone by them (the
// graph's memory is its own pool), and so is an evaluation at batch 32 between them.
TEST(CudaGraphs, ReplayedStepsAreTheDirectStepsBitForBit) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  if (!graphs_capturable()) GTEST_SKIP() << kDebugCapture;
  constexpr int kClasses = 4;
  const Shape clip{20, 64, 64, 3};
  const std::vector<size_t> sizes = {4, 4, 4, 4, 3, 4, 4};
  using Fusion = models::Sequential::Fusion;
  // The LRCN also with its blocks fused on the GPU (the fused rows' workspace, fills and sums
  // inside a capture).
  for (const auto& [name, fusion] : {std::pair{"lrcn", Fusion::Cpu}, std::pair{"lrcn", Fusion::Everywhere},
                                     std::pair{"convlstm", Fusion::Cpu}}) {
    SCOPED_TRACE(std::string(name) + (fusion == Fusion::Everywhere ? ", fused on the GPU" : ""));
    struct Run {
      std::vector<std::vector<double>> weights;
      std::vector<double> sums, kept;
      uint64_t offset = 0;
      int64_t iterations = 0;
      std::string status;
    };
    const auto run = [&](bool graphs) {
      models::Sequential model = models::load_spec(name, kClasses);
      model.build(5);
      model.set_fuse_conv_pool(fusion);
      model.to(Device::cuda(0));
      Adam adam;
      Generator rng(8);
      models::TrainingStep step(model, adam, rng, io::Augmentation{true, 0.1, 0.2, 0.02}, clip, kClasses,
                                graphs);
      Run r;
      Tensor kept;
      for (size_t s = 0; s < sizes.size(); ++s) {
        std::vector<uint8_t> pixels(sizes[s] * static_cast<size_t>(clip.numel()));
        for (size_t i = 0; i < pixels.size(); ++i)
          pixels[i] = static_cast<uint8_t>(philox_uniform(0xC11B, s, i) * 256.0f);
        std::vector<int> labels;
        for (size_t b = 0; b < sizes[s]; ++b) labels.push_back(static_cast<int>((s + b) % kClasses));
        step.run(pixels, labels);
        if (s == 3) {
          kept = Tensor::full(Shape{1 << 20}, 7.0, DType::Float32, Device::cuda(0));
          // An evaluation between replays, at batch 32: the workspace may grow under the graph.
          NoGradGuard no_grad;
          (void)model.forward(Tensor::full(Shape{32, 20, 64, 64, 3}, 0.5, DType::Float32, Device::cuda(0)),
                              {});
        }
      }
      for (const Tensor& w : model.trainable_weights()) r.weights.push_back(w.to_vector());
      r.sums = step.sums().to_vector();
      const std::vector<double> values = kept.to_vector();
      r.kept = {*std::min_element(values.begin(), values.end()),
                *std::max_element(values.begin(), values.end())};
      r.offset = rng.offset();
      r.iterations = adam.iterations();
      r.status = step.graph_status();
      return r;
    };
    const Run direct = run(false), replayed = run(true);
    EXPECT_EQ(direct.status, "");
    ASSERT_EQ(replayed.status, "replaying");
    EXPECT_EQ(replayed.offset, direct.offset);
    EXPECT_EQ(replayed.iterations, direct.iterations);
    EXPECT_EQ(replayed.sums, direct.sums);
    EXPECT_EQ(replayed.weights, direct.weights);
    EXPECT_EQ(replayed.kept, (std::vector<double>{7.0, 7.0}));
  }
}

// Trainer::fit with cuda_graphs is fit without them bit for bit: the LRCN on 31 clips of
// Philox pixels, 22 training (5 full batches of 4 and one of 2, run directly) and 9 validation
// (batches 4, 4, 1; the validation step is captured in the second epoch, after its two direct
// steps, and replayed beside the training graph, the two sharing the workspace), augmentation
// on; EarlyStopping (a min_delta no epoch can meet) stops after the second epoch and restores
// the first's weights in place. Every epoch's metrics, the weights and the optimizer's count,
// the stop in both runs, and both graphs said to be replayed.
TEST(CudaGraphs, FitWithGraphsIsFitWithoutThem) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  if (!graphs_capturable()) GTEST_SKIP() << kDebugCapture;
  constexpr int kClasses = 4;
  constexpr size_t kClips = 31, kTraining = 22;
  io::ClipSet clips;
  for (int k = 0; k < kClasses; ++k) clips.class_names.push_back("class" + std::to_string(k));
  clips.extraction = {20, 64, 64, 3};
  clips.pixels.resize(kClips * clips.clip_elements());
  for (size_t i = 0; i < clips.pixels.size(); ++i)
    clips.pixels[i] = static_cast<uint8_t>(philox_uniform(0xF17, 0, i) * 256.0f);
  io::Split split;
  for (size_t i = 0; i < kClips; ++i) {
    clips.labels.push_back(static_cast<int>(i % kClasses));
    clips.paths.push_back("clip" + std::to_string(i) + ".avi");
    (i < kTraining ? split.train : split.validation).push_back(i);
  }
  struct Run {
    std::vector<std::vector<double>> metrics, weights;
    int64_t iterations = 0;
    std::vector<std::string> messages;
    bool stopped_early = false;
  };
  const auto fit = [&](bool graphs) {
    models::Sequential model = models::load_spec("lrcn", kClasses);
    model.build(3);
    model.to(Device::cuda(0));
    Adam adam;
    models::FitOptions options;
    options.epochs = 3;
    options.batch_size = 4;
    options.augmentation = io::Augmentation{true, 0.1, 0.2, 0.02};
    options.early_stopping = models::EarlyStoppingConfig{"val_loss", 1, 1e9, true};
    options.cuda_graphs = graphs;
    models::Trainer trainer(model, adam, clips, split, options, 9);
    Run r;
    models::FitProgress progress;
    progress.on_message = [&](const std::string& text) { r.messages.push_back(text); };
    const models::FitResult result = trainer.fit(progress);
    for (const models::EpochLog& log : result.history)
      r.metrics.push_back({log.loss, log.accuracy, log.val_loss, log.val_accuracy});
    r.stopped_early = result.stopped_early;
    for (const Tensor& w : model.trainable_weights()) r.weights.push_back(w.to_vector());
    r.iterations = adam.iterations();
    return r;
  };
  const Run direct = fit(false), replayed = fit(true);
  const auto said = [&](const std::string& text) {
    return std::find(replayed.messages.begin(), replayed.messages.end(), text) != replayed.messages.end();
  };
  EXPECT_TRUE(said("CUDA graph: the training step is captured and replayed"));
  EXPECT_TRUE(said("CUDA graph: the validation step is captured and replayed"));
  EXPECT_TRUE(direct.stopped_early);
  EXPECT_TRUE(replayed.stopped_early);
  ASSERT_EQ(replayed.metrics.size(), direct.metrics.size());
  for (size_t e = 0; e < direct.metrics.size(); ++e)
    EXPECT_EQ(replayed.metrics[e], direct.metrics[e]) << "epoch " << e + 1;
  EXPECT_EQ(replayed.iterations, direct.iterations);
  EXPECT_EQ(replayed.weights, direct.weights);
}

// An evaluation step replayed from a CUDA graph is the direct step bit for bit
// (models/inference_step.h): the seeds' models (the LRCN also fused on the GPU), batch 32 with
// labels (the loss and accuracy sums) and without, six steps: two direct, the capture (and its
// first replay), a replay, a direct step of 5 clips (another size), a replay. Every step's
// probabilities, and the sums, against the direct run's.
TEST(CudaGraphs, ReplayedEvaluationStepsAreTheDirectStepsBitForBit) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  if (!graphs_capturable()) GTEST_SKIP() << kDebugCapture;
  constexpr int kClasses = 4;
  const Shape clip{20, 64, 64, 3};
  const std::vector<size_t> sizes = {32, 32, 32, 32, 5, 32};
  using Fusion = models::Sequential::Fusion;
  for (const auto& [name, fusion] : {std::pair{"lrcn", Fusion::Cpu}, std::pair{"lrcn", Fusion::Everywhere},
                                     std::pair{"convlstm", Fusion::Cpu}}) {
    for (const bool labelled : {true, false}) {
      SCOPED_TRACE(std::string(name) + (fusion == Fusion::Everywhere ? ", fused on the GPU" : "") +
                   (labelled ? ", with labels" : ", without labels"));
      const auto run = [&](bool graphs, std::string& status) {
        models::Sequential model = models::load_spec(name, kClasses);
        model.build(5);
        model.set_fuse_conv_pool(fusion);
        model.to(Device::cuda(0));
        models::InferenceStep step(model, clip, graphs);
        std::vector<std::vector<double>> out;
        for (size_t s = 0; s < sizes.size(); ++s) {
          std::vector<uint8_t> pixels(sizes[s] * static_cast<size_t>(clip.numel()));
          for (size_t i = 0; i < pixels.size(); ++i)
            pixels[i] = static_cast<uint8_t>(philox_uniform(0xE7A1, s, i) * 256.0f);
          std::vector<int> labels;
          if (labelled) {
            for (size_t b = 0; b < sizes[s]; ++b) labels.push_back(static_cast<int>((s + b) % kClasses));
          }
          out.push_back(step.run(pixels, labels).to_vector());
        }
        out.push_back(step.sums().to_vector());
        status = step.graph_status();
        return out;
      };
      std::string direct_status, replayed_status;
      const std::vector<std::vector<double>> direct = run(false, direct_status),
                                             replayed = run(true, replayed_status);
      EXPECT_EQ(direct_status, "");
      ASSERT_EQ(replayed_status, "replaying");
      ASSERT_EQ(replayed.size(), direct.size());
      for (size_t s = 0; s < direct.size(); ++s) EXPECT_EQ(replayed[s], direct[s]) << "step " << s;
    }
  }
}

// A NaN loss in a replayed step halts its update and those after it, on the device: a NaN
// planted in the Dense bias after the capture; the weights stay those of that moment.
TEST(CudaGraphs, ANonFiniteLossHaltsTheReplayedSteps) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  if (!graphs_capturable()) GTEST_SKIP() << kDebugCapture;
  constexpr int kClasses = 4;
  const Shape clip{20, 64, 64, 3};
  models::Sequential model = models::load_spec("lrcn", kClasses);
  model.build(5);
  model.to(Device::cuda(0));
  Adam adam;
  Generator rng(8);
  models::TrainingStep step(model, adam, rng, io::Augmentation{}, clip, kClasses, true);
  const std::vector<uint8_t> pixels(4 * static_cast<size_t>(clip.numel()), 100);
  const std::vector<int> labels = {0, 1, 2, 3};
  for (int s = 0; s < 4; ++s) step.run(pixels, labels);  // 2 direct, the capture, a replay
  ASSERT_EQ(step.graph_status(), "replaying");
  Tensor bias = model.trainable_weights().back();
  std::vector<double> values = bias.to_vector();
  values[0] = std::numeric_limits<double>::quiet_NaN();
  bias.copy_from(Tensor::from_vector(values, bias.shape(), DType::Float32));
  std::vector<std::vector<double>> planted;
  for (const Tensor& w : model.trainable_weights()) planted.push_back(w.to_vector());
  for (int s = 0; s < 2; ++s) step.run_again();
  const std::vector<double> sums = step.sums().to_vector();
  EXPECT_EQ(sums[kStepFailed], 5.0);
  EXPECT_EQ(sums[kStepCount], 6.0);
  const std::vector<Tensor> weights = model.trainable_weights();
  for (size_t w = 0; w < weights.size(); ++w) {
    const std::vector<double> now = weights[w].to_vector();
    EXPECT_EQ(std::memcmp(now.data(), planted[w].data(), now.size() * sizeof(double)), 0) << "weight " << w;
  }
}

}  // namespace
}  // namespace hisvid
