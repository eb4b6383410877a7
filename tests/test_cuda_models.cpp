// tests/test_cuda_models.cpp — whole models on the GPU against the CPU (the kernels one by one
// are tests/test_kernel_table.cpp's), and the CUDA caching allocator. Without a CUDA device, or
// in a build without CUDA, every test skips and says why.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/cuda_device.h"
#include "engine/device.h"
#include "engine/optimizer.h"
#include "tests/tiny_models.h"

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

#ifdef HISVID_WITH_CUDA
using LossFunction = Tensor (*)(const std::vector<Tensor>&, const Tensor&);

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
  const Tensor loss = loss_of(inputs, targets);
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

}  // namespace
}  // namespace hisvid
