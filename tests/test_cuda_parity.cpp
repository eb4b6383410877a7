// tests/test_cuda_parity.cpp — every CUDA kernel against its CPU reference, in the style of
// ggml's test-backend-ops: one table of cases (kernel, shapes), forward and backward, odd sizes
// that are not multiples of any block size, batch 1, T = 1, K = 1 where they mean something.
// Each case draws its inputs from a fixed Philox seed, runs hisvid::cpu (float) and
// hisvid::cuda on the same inputs, and compares with the named tolerances below.
//
// Outputs written with = start as NaN on both sides (an element a kernel forgets shows up);
// outputs accumulated with += start from the same random values on both sides.
//
// Without a CUDA device, or in a build without CUDA, every test skips and says why; the list
// of tests is the same in every build.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "engine/cuda_device.h"
#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/optimizer.h"
#include "kernels/batchnorm.h"
#include "kernels/common.h"
#include "kernels/conv2d.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/lstm.h"
#include "kernels/matmul.h"
#include "kernels/optim.h"
#include "kernels/philox.h"
#include "kernels/pool.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"
#include "tests/tiny_models.h"

#ifdef HISVID_WITH_CUDA
#include "engine/dispatch.h"
#include "kernels/cuda_context.h"
#endif

namespace hisvid {
namespace {

// ---------------------------------------------------------------------------------------
// Tolerances. An element passes when |gpu - cpu| <= tol * max(|cpu|, rms(cpu)): relative to
// the value, and to the typical magnitude of the tensor where the value itself is small by
// cancellation. float's unit roundoff is 2^-24 = 6.0e-8.
// ---------------------------------------------------------------------------------------

// Copies, max-pool values and argmax, dropout masks, counts, and single IEEE operations
// (add, sub, mul, scale): correctly rounded on both backends, so the very same bits.
constexpr double kExact = 0.0;
// One or a few rounded operations per element, including CUDA's expf/tanhf (<= 2 ulp) and
// FMA contraction on the GPU: a few ulp (2^-23 = 1.2e-7) of the value.
constexpr double kElementwise = 1e-6;
// Fused chains of about ten rounded operations (LSTM cell, optimizer updates, batch-norm
// normalisation): the per-operation errors add up, still far from any real bug (>= 1e-3).
constexpr double kFused = 4e-6;
// Sums of K float terms (GEMM, reductions). With either backend's summation order the error
// relative to the scale of the result grows like sqrt(K) * 2^-24 per standard deviation
// (random-walk rounding); 1e-6 * sqrt(K) leaves a margin of about 8x at 5 sigma, while TF32
// (2^-11 ~ 4.9e-4 relative per product) breaks it by more than 10x up to K ~ 1000.
constexpr double kSumPerSqrtTerm = 1e-6;
// cuDNN convolutions: cuDNN may pick Winograd or FFT algorithms, whose transforms add a few
// roundings per output on top of the K-term sum.
constexpr double kConvPerSqrtTerm = 4e-6;

// ---------------------------------------------------------------------------------------
// The cases: plain data, the same in every build.
// ---------------------------------------------------------------------------------------

// clang-format off
enum class Kernel : int {
  fill, add, sub, mul, scale, axpy, bias_add_forward, bias_add_backward, activation_forward,
  activation_backward, matmul, conv2d_forward, conv2d_backward_data, conv2d_backward_filter,
  conv2d_direct_forward, maxpool2d_forward, maxpool2d_backward, dropout_forward, dropout_backward,
  dropout_mask, lstm_cell_forward, lstm_cell_backward, batchnorm_forward_train,
  batchnorm_forward_infer, batchnorm_backward, batchnorm_update_moving, softmax_forward,
  softmax_backward, softmax_xent_forward, softmax_xent_backward, accuracy_count, sum_all,
  copy_block, adam_update, rmsprop_update, sgd_update, global_avgpool_forward, global_avgpool_backward,
  spatial_dropout_forward, spatial_dropout_backward, sigmoid_xent_forward, sigmoid_xent_backward,
  binary_accuracy_count,
  count  // number of kernels
};
// clang-format on

const char* kernel_name(Kernel k) {
  // clang-format off
  static const char* const names[] = {
      "fill", "add", "sub", "mul", "scale", "axpy", "bias_add_forward", "bias_add_backward",
      "activation_forward", "activation_backward", "matmul", "conv2d_forward", "conv2d_backward_data",
      "conv2d_backward_filter", "conv2d_direct_forward", "maxpool2d_forward", "maxpool2d_backward",
      "dropout_forward", "dropout_backward", "dropout_mask", "lstm_cell_forward", "lstm_cell_backward",
      "batchnorm_forward_train", "batchnorm_forward_infer", "batchnorm_backward", "batchnorm_update_moving",
      "softmax_forward", "softmax_backward", "softmax_xent_forward", "softmax_xent_backward",
      "accuracy_count", "sum_all", "copy_block", "adam_update", "rmsprop_update", "sgd_update",
      "global_avgpool_forward", "global_avgpool_backward", "spatial_dropout_forward", "spatial_dropout_backward",
      "sigmoid_xent_forward", "sigmoid_xent_backward", "binary_accuracy_count"};
  // clang-format on
  static_assert(sizeof(names) / sizeof(names[0]) == static_cast<size_t>(Kernel::count),
                "one name per kernel");
  return names[static_cast<int>(k)];
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::Linear:
      return "linear";
    case Activation::Relu:
      return "relu";
    case Activation::Tanh:
      return "tanh";
    case Activation::Sigmoid:
      return "sigmoid";
    case Activation::HardSigmoid:
      return "hard_sigmoid";
    case Activation::HardSigmoidKeras3:
      return "hard_sigmoid_keras3";
  }
  return "unknown";
}

// clang-format off
struct ElementwiseCase { int64_t n; Activation act; };
struct BiasCase { int64_t M, C; };
struct MatmulCase { int64_t M, P, K; bool trans_a, trans_b, accumulate; };
struct ConvCase { int N, H, W, C, F, KH, KW, SH, SW; Padding padding; bool bias; };
struct PoolCase { int N, H, W, C, PH, PW, SH, SW; Padding padding; };
struct DropoutCase { int64_t n; float rate; };
// first_step: no c_prev (and no dc_prev); last_step: no dc from a next step.
struct LstmCase { int64_t M, U; Activation act, rec_act; bool first_step, last_step; };
struct BatchnormCase { int64_t M, C; };
struct SoftmaxCase { int64_t N, K; };
struct SumCase { int64_t n; };
struct CopyBlockCase { int64_t outer, src_dim, src_start, dst_dim, dst_start, len, inner; bool accumulate; };
struct OptimCase { int64_t n; RmspropEpsilon form; };
// (N,S,C) tensors with one value per (n, c) reduced or broadcast over S.
struct ChannelCase { int64_t N, S, C; float rate; };
// clang-format on

using CaseParams =
    std::variant<ElementwiseCase, BiasCase, MatmulCase, ConvCase, PoolCase, DropoutCase, LstmCase,
                 BatchnormCase, SoftmaxCase, SumCase, CopyBlockCase, OptimCase, ChannelCase>;

std::string describe(Kernel k, const ElementwiseCase& c) {
  std::string s = "n" + std::to_string(c.n);
  if (k == Kernel::activation_forward || k == Kernel::activation_backward)
    s += std::string("_") + activation_name(c.act);
  return s;
}
std::string describe(Kernel, const BiasCase& c) {
  return "M" + std::to_string(c.M) + "_C" + std::to_string(c.C);
}
std::string describe(Kernel, const MatmulCase& c) {
  return "M" + std::to_string(c.M) + "_P" + std::to_string(c.P) + "_K" + std::to_string(c.K) + "_" +
         (c.trans_a ? "t" : "n") + (c.trans_b ? "t" : "n") + (c.accumulate ? "_acc" : "");
}
std::string describe(Kernel, const ConvCase& c) {
  return "N" + std::to_string(c.N) + "_H" + std::to_string(c.H) + "_W" + std::to_string(c.W) + "_C" +
         std::to_string(c.C) + "_F" + std::to_string(c.F) + "_K" + std::to_string(c.KH) + "x" +
         std::to_string(c.KW) + "_S" + std::to_string(c.SH) + "x" + std::to_string(c.SW) +
         (c.padding == Padding::Same ? "_same" : "_valid") + (c.bias ? "_bias" : "");
}
std::string describe(Kernel, const PoolCase& c) {
  return "N" + std::to_string(c.N) + "_H" + std::to_string(c.H) + "_W" + std::to_string(c.W) + "_C" +
         std::to_string(c.C) + "_P" + std::to_string(c.PH) + "x" + std::to_string(c.PW) + "_S" +
         std::to_string(c.SH) + "x" + std::to_string(c.SW) +
         (c.padding == Padding::Same ? "_same" : "_valid");
}
std::string describe(Kernel, const DropoutCase& c) {
  return "n" + std::to_string(c.n) + "_rate" + std::to_string(static_cast<int>(std::lround(c.rate * 100))) +
         "pct";
}
std::string describe(Kernel, const LstmCase& c) {
  return "M" + std::to_string(c.M) + "_U" + std::to_string(c.U) + "_" + activation_name(c.act) + "_" +
         activation_name(c.rec_act) + (c.first_step ? "_first" : "") + (c.last_step ? "_last" : "");
}
std::string describe(Kernel, const BatchnormCase& c) {
  return "M" + std::to_string(c.M) + "_C" + std::to_string(c.C);
}
std::string describe(Kernel, const SoftmaxCase& c) {
  return "N" + std::to_string(c.N) + "_K" + std::to_string(c.K);
}
std::string describe(Kernel, const SumCase& c) { return "n" + std::to_string(c.n); }
std::string describe(Kernel, const CopyBlockCase& c) {
  return "outer" + std::to_string(c.outer) + "_src" + std::to_string(c.src_dim) + "at" +
         std::to_string(c.src_start) + "_dst" + std::to_string(c.dst_dim) + "at" +
         std::to_string(c.dst_start) + "_len" + std::to_string(c.len) + "_inner" + std::to_string(c.inner) +
         (c.accumulate ? "_acc" : "");
}
std::string describe(Kernel k, const ChannelCase& c) {
  std::string s = "N" + std::to_string(c.N) + "_S" + std::to_string(c.S) + "_C" + std::to_string(c.C);
  if (k == Kernel::spatial_dropout_forward || k == Kernel::spatial_dropout_backward) {
    s += "_rate" + std::to_string(static_cast<int>(std::lround(c.rate * 100))) + "pct";
  }
  return s;
}
std::string describe(Kernel k, const OptimCase& c) {
  std::string s = "n" + std::to_string(c.n);
  if (k == Kernel::rmsprop_update)
    s += c.form == RmspropEpsilon::OutsideSqrt ? "_eps_outside" : "_eps_inside";
  return s;
}

struct ParityCase {
  Kernel kernel;
  CaseParams params;

  std::string name() const {
    return std::string(kernel_name(kernel)) + "_" +
           std::visit([this](const auto& p) { return describe(kernel, p); }, params);
  }
};

// gtest prints parameters in its messages.
void PrintTo(const ParityCase& c, std::ostream* os) { *os << c.name(); }

std::vector<ParityCase> all_cases() {
  std::vector<ParityCase> cases;
  auto add = [&cases](Kernel k, CaseParams p) { cases.push_back(ParityCase{k, p}); };

  const int64_t sizes[] = {1, 7, 1000, 65537};
  for (int64_t n : sizes) {
    for (Kernel k : {Kernel::fill, Kernel::add, Kernel::sub, Kernel::mul, Kernel::scale, Kernel::axpy}) {
      add(k, ElementwiseCase{n, Activation::Linear});
    }
    for (Activation a : {Activation::Linear, Activation::Relu, Activation::Tanh, Activation::Sigmoid,
                         Activation::HardSigmoid, Activation::HardSigmoidKeras3}) {
      add(Kernel::activation_forward, ElementwiseCase{n, a});
      add(Kernel::activation_backward, ElementwiseCase{n, a});
    }
  }
  for (BiasCase c :
       {BiasCase{1, 1}, BiasCase{5, 3}, BiasCase{33, 17}, BiasCase{1000, 64}, BiasCase{20483, 16}}) {
    add(Kernel::bias_add_forward, c);
    add(Kernel::bias_add_backward, c);
  }

  // clang-format off
  const MatmulCase gemm_shapes[] = {{1, 1, 1, false, false, false}, {7, 5, 3, false, false, false},
                                    {33, 17, 65, false, false, false}, {1, 50, 300, false, false, false},
                                    {128, 96, 200, false, false, false}, {20, 1, 33, false, false, false}};
  // clang-format on
  for (MatmulCase c : gemm_shapes) {
    for (int flags = 0; flags < 8; ++flags) {
      c.trans_a = (flags & 1) != 0;
      c.trans_b = (flags & 2) != 0;
      c.accumulate = (flags & 4) != 0;
      add(Kernel::matmul, c);
    }
  }

  // clang-format off
  const ConvCase conv_shapes[] = {
      {1, 5, 7, 3, 4, 3, 3, 1, 1, Padding::Same, true},       // symmetric padding, batch 1
      {2, 8, 8, 3, 16, 3, 3, 2, 2, Padding::Same, true},      // stride 2: padding 0 above, 1 below
      {3, 9, 6, 5, 7, 2, 2, 1, 1, Padding::Same, false},      // even kernel: 0 above, 1 below; no bias
      {2, 10, 11, 4, 6, 3, 5, 2, 3, Padding::Valid, true},    // valid, unequal strides, unused rows
      {1, 13, 13, 2, 5, 4, 4, 3, 3, Padding::Same, true},     // padding 1 above, 2 below
      {2, 1, 1, 2, 3, 1, 1, 1, 1, Padding::Valid, true},      // 1x1 image and kernel
      {1, 6, 5, 1, 1, 3, 3, 1, 1, Padding::Same, true},       // C = F = 1
      {2, 7, 7, 33, 17, 3, 3, 1, 1, Padding::Same, true},     // odd channel counts
      {2, 64, 64, 3, 16, 3, 3, 1, 1, Padding::Same, true},    // the LRCN's first layer
      {1, 11, 12, 33, 5, 5, 5, 2, 2, Padding::Same, true},    // direct kernel: channels in 3 chunks;
                                                              // padding 2/2 rows, 1/2 columns
      {2, 7, 6, 3, 4, 1, 1, 2, 2, Padding::Same, true},       // stride > kernel: no padding at all
      {1, 40, 40, 2, 3, 40, 40, 1, 1, Padding::Valid, true},  // too large for the direct kernel's tiles
  };
  // clang-format on
  for (const ConvCase& c : conv_shapes) {
    for (Kernel k : {Kernel::conv2d_forward, Kernel::conv2d_backward_data, Kernel::conv2d_backward_filter,
                     Kernel::conv2d_direct_forward}) {
      add(k, c);
    }
  }

  // clang-format off
  const PoolCase pool_shapes[] = {
      {1, 4, 4, 1, 2, 2, 2, 2, Padding::Valid},   {2, 7, 9, 3, 2, 2, 2, 2, Padding::Same},
      {2, 9, 8, 5, 3, 3, 2, 2, Padding::Same},    {1, 5, 5, 17, 3, 3, 1, 1, Padding::Same},
      {2, 6, 7, 4, 3, 2, 3, 1, Padding::Valid},   {3, 64, 64, 16, 2, 2, 2, 2, Padding::Valid},
      {1, 1, 1, 2, 1, 1, 1, 1, Padding::Valid},
  };
  // clang-format on
  for (const PoolCase& c : pool_shapes) {
    add(Kernel::maxpool2d_forward, c);
    add(Kernel::maxpool2d_backward, c);
  }

  for (int64_t n : {int64_t(1), int64_t(3), int64_t(4), int64_t(5), int64_t(1000), int64_t(4099)}) {
    for (float rate : {0.0f, 0.1f, 0.5f, 0.9f}) {
      for (Kernel k : {Kernel::dropout_forward, Kernel::dropout_backward, Kernel::dropout_mask}) {
        add(k, DropoutCase{n, rate});
      }
    }
  }

  // clang-format off
  const LstmCase lstm_shapes[] = {
      {1, 1, Activation::Tanh, Activation::Sigmoid, false, false},
      {3, 5, Activation::Tanh, Activation::Sigmoid, true, false},
      {7, 33, Activation::Tanh, Activation::Sigmoid, false, true},
      {64, 128, Activation::Tanh, Activation::Sigmoid, false, false},
      {5, 9, Activation::Tanh, Activation::HardSigmoid, false, false},
      {5, 9, Activation::Tanh, Activation::HardSigmoidKeras3, false, false},
      {2 * 6 * 7, 16, Activation::Tanh, Activation::HardSigmoid, true, true},  // ConvLSTM rows N*H*W
      {4, 3, Activation::Relu, Activation::Sigmoid, false, false},
      {4, 3, Activation::Linear, Activation::HardSigmoid, false, false},
  };
  // clang-format on
  for (const LstmCase& c : lstm_shapes) {
    add(Kernel::lstm_cell_forward, c);
    add(Kernel::lstm_cell_backward, c);
  }

  for (BatchnormCase c :
       {BatchnormCase{1, 3}, BatchnormCase{2, 1}, BatchnormCase{7, 5}, BatchnormCase{1000, 16},
        BatchnormCase{20001, 17}, BatchnormCase{4 * 20 * 32 * 32, 16}}) {
    for (Kernel k : {Kernel::batchnorm_forward_train, Kernel::batchnorm_forward_infer,
                     Kernel::batchnorm_backward, Kernel::batchnorm_update_moving}) {
      if (k == Kernel::batchnorm_update_moving && c.M < 2) continue;  // no unbiased variance of one row
      add(k, c);
    }
  }

  for (SoftmaxCase c : {SoftmaxCase{1, 1}, SoftmaxCase{1, 5}, SoftmaxCase{3, 7}, SoftmaxCase{17, 50},
                        SoftmaxCase{2, 33}, SoftmaxCase{4, 1000}, SoftmaxCase{70, 11}}) {
    for (Kernel k : {Kernel::softmax_forward, Kernel::softmax_backward, Kernel::softmax_xent_forward,
                     Kernel::softmax_xent_backward, Kernel::accuracy_count}) {
      add(k, c);
    }
  }
  // The binary head is K = 1; larger K are the multi-label form of the same kernels.
  for (SoftmaxCase c : {SoftmaxCase{1, 1}, SoftmaxCase{4, 1}, SoftmaxCase{33, 1}, SoftmaxCase{1000, 1},
                        SoftmaxCase{3, 7}, SoftmaxCase{17, 50}}) {
    for (Kernel k :
         {Kernel::sigmoid_xent_forward, Kernel::sigmoid_xent_backward, Kernel::binary_accuracy_count}) {
      add(k, c);
    }
  }

  // Global average pooling over S = H*W or T*H*W; spatial dropout masks per (n, c).
  for (ChannelCase c :
       {ChannelCase{1, 1, 1, 0.0f}, ChannelCase{3, 7, 5, 0.2f}, ChannelCase{2, 20 * 5 * 5, 16, 0.5f},
        ChannelCase{4, 1000, 3, 0.3f}, ChannelCase{1, 65537, 2, 0.9f}, ChannelCase{40, 256, 33, 0.25f}}) {
    for (Kernel k : {Kernel::global_avgpool_forward, Kernel::global_avgpool_backward,
                     Kernel::spatial_dropout_forward, Kernel::spatial_dropout_backward}) {
      add(k, c);
    }
  }

  for (int64_t n : {int64_t(1), int64_t(7), int64_t(1000), int64_t(1 << 20) + 3}) {
    add(Kernel::sum_all, SumCase{n});
  }

  // clang-format off
  const CopyBlockCase copies[] = {
      {1, 1, 0, 1, 0, 1, 1, false},      {3, 10, 2, 7, 4, 3, 5, false},  {3, 10, 2, 7, 4, 3, 5, true},
      {4, 6, 0, 20, 14, 6, 33, false},   {2, 20, 5, 5, 0, 5, 1, true},   {20, 3, 1, 3, 1, 1, 64, false},
  };
  // clang-format on
  for (const CopyBlockCase& c : copies) add(Kernel::copy_block, c);

  for (int64_t n : {int64_t(1), int64_t(7), int64_t(1000), int64_t(100003)}) {
    add(Kernel::adam_update, OptimCase{n, RmspropEpsilon::OutsideSqrt});
    add(Kernel::rmsprop_update, OptimCase{n, RmspropEpsilon::OutsideSqrt});
    add(Kernel::rmsprop_update, OptimCase{n, RmspropEpsilon::InsideSqrt});
    add(Kernel::sgd_update, OptimCase{n, RmspropEpsilon::OutsideSqrt});
  }
  return cases;
}

std::string skip_reason() {
  const std::string reason = cuda_unavailable_reason();
  return reason.empty() ? std::string() : "no CUDA device to compare with the CPU: " + reason;
}

#ifdef HISVID_WITH_CUDA

// ---------------------------------------------------------------------------------------
// Inputs, device buffers, comparisons.
// ---------------------------------------------------------------------------------------

constexpr uint64_t kSeed = 0x5EED0000C0FFEEull;

double sum_tol(int64_t terms) {
  return kSumPerSqrtTerm * std::sqrt(static_cast<double>(std::max<int64_t>(terms, 1)));
}
double conv_tol(int64_t terms) {
  return kConvPerSqrtTerm * std::sqrt(static_cast<double>(std::max<int64_t>(terms, 1)));
}

// n values uniform in [lo, hi) from Philox stream `id` of the fixed seed.
std::vector<float> random_vector(int64_t n, float lo, float hi, uint64_t id) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[static_cast<size_t>(i)] = lo + (hi - lo) * philox_uniform(kSeed, id, uint64_t(i));
  return v;
}

// Values on a grid of 1/8 in [-0.5, 0.5): ties are common, so "first maximum" is exercised.
std::vector<float> tied_vector(int64_t n, uint64_t id) {
  std::vector<float> v = random_vector(n, 0.0f, 1.0f, id);
  for (float& x : v) x = std::floor(x * 8.0f) / 8.0f - 0.5f;
  return v;
}

// Magnitudes in [0.5, 1.5), random signs: never zero.
std::vector<float> nonzero_vector(int64_t n, uint64_t id) {
  std::vector<float> v = random_vector(n, 0.5f, 1.5f, id);
  const std::vector<float> sign = random_vector(n, 0.0f, 1.0f, id + 1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = sign[i] < 0.5f ? -v[i] : v[i];
  return v;
}

// One-hot rows (N,K) with a Philox class per row; every third row a soft distribution instead.
std::vector<float> target_rows(int64_t N, int64_t K, uint64_t id) {
  std::vector<float> t(static_cast<size_t>(N * K), 0.0f);
  const std::vector<float> u = random_vector(N, 0.0f, 1.0f, id);
  const std::vector<float> soft = random_vector(N * K, 0.0f, 1.0f, id + 1);
  for (int64_t n = 0; n < N; ++n) {
    float* row = t.data() + n * K;
    if (n % 3 == 2) {
      float total = 0.0f;
      for (int64_t k = 0; k < K; ++k) total += soft[size_t(n * K + k)];
      for (int64_t k = 0; k < K; ++k) row[k] = soft[size_t(n * K + k)] / total;
    } else {
      row[std::min<int64_t>(K - 1, static_cast<int64_t>(u[size_t(n)] * float(K)))] = 1.0f;
    }
  }
  return t;
}

std::vector<float> nan_vector(int64_t n) {
  return std::vector<float>(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
}

cudaStream_t test_stream() { return cuda::current_context().stream(); }

// A device copy of a host vector, from the engine's caching allocator (so the parity run also
// exercises it), uploaded and read back on the context stream.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : n_(host.size()) {
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    allocator_ = &allocator_for(Device::cuda(device));
    ptr_ = static_cast<T*>(allocator_->allocate(bytes()));
    if (n_ > 0)
      CUDA_CHECK(cudaMemcpyAsync(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice, test_stream()));
  }
  ~DeviceArray() { allocator_->deallocate(ptr_, bytes()); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return ptr_; }
  std::vector<T> read() const {
    std::vector<T> host(n_);
    if (n_ > 0)
      CUDA_CHECK(cudaMemcpyAsync(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost, test_stream()));
    CUDA_CHECK(cudaStreamSynchronize(test_stream()));
    return host;
  }

 private:
  size_t bytes() const { return n_ * sizeof(T); }

  size_t n_;
  Allocator* allocator_ = nullptr;
  T* ptr_ = nullptr;
};

using Floats = DeviceArray<float>;

double rms(const std::vector<float>& v) {
  double s = 0.0;
  for (float x : v) s += double(x) * double(x);
  return v.empty() ? 0.0 : std::sqrt(s / double(v.size()));
}

// |gpu - cpu| <= tol * max(|cpu|, rms(cpu)) everywhere (tol 0: equal); NaN anywhere fails.
void expect_close(const std::string& what, const std::vector<float>& gpu, const std::vector<float>& cpu,
                  double tol) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  const double scale = rms(cpu);
  size_t bad = 0, worst = 0;
  double worst_ratio = 0.0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const double c = cpu[i], g = gpu[i];
    const double allowed = tol * std::max(std::fabs(c), scale);
    const double err = std::fabs(g - c);
    const bool ok = !std::isnan(c) && !std::isnan(g) && err <= allowed;
    if (!ok) {
      const double ratio = allowed > 0.0 ? err / allowed : std::numeric_limits<double>::infinity();
      if (bad == 0 || ratio > worst_ratio || std::isnan(ratio)) {
        worst = i;
        worst_ratio = ratio;
      }
      ++bad;
    }
  }
  if (bad > 0) {
    ADD_FAILURE() << what << ": " << bad << " of " << cpu.size() << " elements differ beyond tol " << tol
                  << " x max(|cpu|, rms " << scale << "); worst at " << worst << ": gpu " << gpu[worst]
                  << " cpu " << cpu[worst] << " (" << worst_ratio << " x the allowed error)";
  }
}

template <typename T>
void expect_equal(const std::string& what, const std::vector<T>& gpu, const std::vector<T>& cpu) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    if (gpu[i] != cpu[i]) {
      if (bad == 0) first = i;
      ++bad;
    }
  }
  if (bad > 0) {
    ADD_FAILURE() << what << ": " << bad << " of " << cpu.size() << " elements differ; first at " << first
                  << ": gpu " << gpu[first] << " cpu " << cpu[first];
  }
}

// Which elements are non-zero: the kept pattern of a dropout output, compared bit for bit.
std::vector<int> kept(const std::vector<float>& v) {
  std::vector<int> k(v.size());
  for (size_t i = 0; i < v.size(); ++i) k[i] = v[i] != 0.0f ? 1 : 0;
  return k;
}

// ---------------------------------------------------------------------------------------
// One function per kernel family: CPU on host vectors, CUDA on device copies of the same.
// ---------------------------------------------------------------------------------------

void check(Kernel k, const ElementwiseCase& c) {
  const cudaStream_t s = test_stream();
  const int64_t n = c.n;
  const std::vector<float> a = random_vector(n, -3.0f, 3.0f, 1), b = random_vector(n, -3.0f, 3.0f, 2);
  Floats a_d(a), b_d(b);
  switch (k) {
    case Kernel::fill: {
      std::vector<float> out = nan_vector(n);
      Floats out_d(out);
      cpu::fill(out.data(), 0.37f, n);
      cuda::fill(out_d.get(), 0.37f, n, s);
      expect_close("out", out_d.read(), out, kExact);
      break;
    }
    case Kernel::add:
    case Kernel::sub:
    case Kernel::mul: {
      std::vector<float> out = nan_vector(n);
      Floats out_d(out);
      if (k == Kernel::add) {
        cpu::add(out.data(), a.data(), b.data(), n);
        cuda::add(out_d.get(), a_d.get(), b_d.get(), n, s);
      } else if (k == Kernel::sub) {
        cpu::sub(out.data(), a.data(), b.data(), n);
        cuda::sub(out_d.get(), a_d.get(), b_d.get(), n, s);
      } else {
        cpu::mul(out.data(), a.data(), b.data(), n);
        cuda::mul(out_d.get(), a_d.get(), b_d.get(), n, s);
      }
      expect_close("out", out_d.read(), out, kExact);
      break;
    }
    case Kernel::scale: {
      std::vector<float> out = nan_vector(n);
      Floats out_d(out);
      cpu::scale(out.data(), a.data(), -0.7f, n);
      cuda::scale(out_d.get(), a_d.get(), -0.7f, n, s);
      expect_close("out", out_d.read(), out, kExact);
      break;
    }
    case Kernel::axpy: {
      std::vector<float> y = b;
      Floats y_d(y);
      cpu::axpy(y.data(), 0.3f, a.data(), n);
      cuda::axpy(y_d.get(), 0.3f, a_d.get(), n, s);
      expect_close("y", y_d.read(), y, kElementwise);
      break;
    }
    case Kernel::activation_forward: {
      std::vector<float> out = nan_vector(n);
      Floats out_d(out);
      cpu::activation_forward(out.data(), a.data(), n, c.act);
      cuda::activation_forward(out_d.get(), a_d.get(), n, c.act, s);
      expect_close("out", out_d.read(), out, kElementwise);
      break;
    }
    case Kernel::activation_backward: {
      std::vector<float> y(static_cast<size_t>(n));
      cpu::activation_forward(y.data(), a.data(), n, c.act);  // forward output, the same on both sides
      std::vector<float> dinp = nan_vector(n);
      Floats y_d(y), dinp_d(dinp);
      cpu::activation_backward(dinp.data(), b.data(), y.data(), n, c.act);
      cuda::activation_backward(dinp_d.get(), b_d.get(), y_d.get(), n, c.act, s);
      expect_close("dinp", dinp_d.read(), dinp, kElementwise);
      break;
    }
    default:
      FAIL() << "not an elementwise kernel: " << kernel_name(k);
  }
}

void check(Kernel k, const BiasCase& c) {
  const cudaStream_t s = test_stream();
  if (k == Kernel::bias_add_forward) {
    const std::vector<float> inp = random_vector(c.M * c.C, -1.0f, 1.0f, 1),
                             bias = random_vector(c.C, -1.0f, 1.0f, 2);
    std::vector<float> out = nan_vector(c.M * c.C);
    Floats inp_d(inp), bias_d(bias), out_d(out);
    cpu::bias_add_forward(out.data(), inp.data(), bias.data(), c.M, c.C);
    cuda::bias_add_forward(out_d.get(), inp_d.get(), bias_d.get(), c.M, c.C, s);
    expect_close("out", out_d.read(), out, kExact);
  } else {
    const std::vector<float> dout = random_vector(c.M * c.C, -1.0f, 1.0f, 1);
    std::vector<float> dbias = random_vector(c.C, -1.0f, 1.0f, 2);
    Floats dout_d(dout), dbias_d(dbias);
    cpu::bias_add_backward(dbias.data(), dout.data(), c.M, c.C);
    cuda::bias_add_backward(dbias_d.get(), dout_d.get(), c.M, c.C, s);
    expect_close("dbias", dbias_d.read(), dbias, sum_tol(c.M));
  }
}

void check(Kernel, const MatmulCase& c) {
  const std::vector<float> a = random_vector(c.M * c.K, -1.0f, 1.0f, 1),
                           b = random_vector(c.K * c.P, -1.0f, 1.0f, 2);
  std::vector<float> out = c.accumulate ? random_vector(c.M * c.P, -1.0f, 1.0f, 3) : nan_vector(c.M * c.P);
  Floats a_d(a), b_d(b), out_d(out);
  cpu::matmul(out.data(), a.data(), b.data(), c.M, c.P, c.K, c.trans_a, c.trans_b, c.accumulate);
  cuda::matmul(out_d.get(), a_d.get(), b_d.get(), c.M, c.P, c.K, c.trans_a, c.trans_b, c.accumulate,
               test_stream());
  expect_close("out", out_d.read(), out, sum_tol(c.K));
}

void check(Kernel k, const ConvCase& c) {
  const cudaStream_t s = test_stream();
  const Conv2dGeometry g = conv2d_geometry(c.N, c.H, c.W, c.C, c.F, c.KH, c.KW, c.SH, c.SW, c.padding);
  ASSERT_GT(g.HO, 0);
  ASSERT_GT(g.WO, 0);
  const int64_t in_n = int64_t(g.N) * g.H * g.W * g.C, out_n = int64_t(g.N) * g.HO * g.WO * g.F;
  const int64_t w_n = int64_t(g.KH) * g.KW * g.C * g.F;
  const std::vector<float> inp = random_vector(in_n, -1.0f, 1.0f, 1),
                           weight = random_vector(w_n, -1.0f, 1.0f, 2);
  const std::vector<float> bias = random_vector(g.F, -1.0f, 1.0f, 3),
                           dout = random_vector(out_n, -1.0f, 1.0f, 4);
  Floats inp_d(inp), weight_d(weight), bias_d(bias), dout_d(dout);
  const float* bias_h = c.bias ? bias.data() : nullptr;
  const float* bias_g = c.bias ? bias_d.get() : nullptr;
  switch (k) {
    case Kernel::conv2d_forward:
    case Kernel::conv2d_direct_forward: {
      std::vector<float> out = nan_vector(out_n);
      Floats out_d(out);
      cpu::conv2d_forward(out.data(), inp.data(), weight.data(), bias_h, g);
      const int64_t terms = int64_t(g.KH) * g.KW * g.C;
      if (k == Kernel::conv2d_forward) {
        cuda::conv2d_forward(out_d.get(), inp_d.get(), weight_d.get(), bias_g, g, s);
        expect_close("out", out_d.read(), out, conv_tol(terms));
      } else {  // a plain float sum, no transforms
        cuda::conv2d_direct_forward(out_d.get(), inp_d.get(), weight_d.get(), bias_g, g, s);
        expect_close("out", out_d.read(), out, sum_tol(terms));
      }
      break;
    }
    case Kernel::conv2d_backward_data: {
      std::vector<float> dinp = nan_vector(in_n);
      Floats dinp_d(dinp);
      cpu::conv2d_backward_data(dinp.data(), dout.data(), weight.data(), g);
      cuda::conv2d_backward_data(dinp_d.get(), dout_d.get(), weight_d.get(), g, s);
      expect_close("dinp", dinp_d.read(), dinp, conv_tol(int64_t(g.KH) * g.KW * g.F));
      break;
    }
    case Kernel::conv2d_backward_filter: {
      std::vector<float> dweight = random_vector(w_n, -1.0f, 1.0f, 5),
                         dbias = random_vector(g.F, -1.0f, 1.0f, 6);
      Floats dweight_d(dweight), dbias_d(dbias);
      cpu::conv2d_backward_filter(dweight.data(), c.bias ? dbias.data() : nullptr, dout.data(), inp.data(),
                                  g);
      cuda::conv2d_backward_filter(dweight_d.get(), c.bias ? dbias_d.get() : nullptr, dout_d.get(),
                                   inp_d.get(), g, s);
      const int64_t positions = int64_t(g.N) * g.HO * g.WO;
      expect_close("dweight", dweight_d.read(), dweight, conv_tol(positions));
      expect_close("dbias", dbias_d.read(), dbias, sum_tol(positions));  // untouched without bias
      break;
    }
    default:
      FAIL() << "not a conv2d kernel: " << kernel_name(k);
  }
}

void check(Kernel k, const PoolCase& c) {
  const cudaStream_t s = test_stream();
  const Pool2dGeometry g = pool2d_geometry(c.N, c.H, c.W, c.C, c.PH, c.PW, c.SH, c.SW, c.padding);
  const int64_t in_n = int64_t(g.N) * g.H * g.W * g.C, out_n = int64_t(g.N) * g.HO * g.WO * g.C;
  const std::vector<float> inp = tied_vector(in_n, 1);
  std::vector<float> out = nan_vector(out_n);
  std::vector<int32_t> argmax(static_cast<size_t>(out_n), -7);
  cpu::maxpool2d_forward(out.data(), argmax.data(), inp.data(), g);
  if (k == Kernel::maxpool2d_forward) {
    Floats inp_d(inp), out_d(nan_vector(out_n));
    DeviceArray<int32_t> argmax_d(std::vector<int32_t>(static_cast<size_t>(out_n), -7));
    cuda::maxpool2d_forward(out_d.get(), argmax_d.get(), inp_d.get(), g, s);
    expect_close("out", out_d.read(), out, kExact);
    expect_equal("argmax", argmax_d.read(), argmax);
  } else {
    const std::vector<float> dout = random_vector(out_n, -1.0f, 1.0f, 2);
    std::vector<float> dinp = nan_vector(in_n);
    Floats dout_d(dout), dinp_d(dinp);
    DeviceArray<int32_t> argmax_d(argmax);  // the CPU's argmax on both sides
    cpu::maxpool2d_backward(dinp.data(), dout.data(), argmax.data(), g);
    cuda::maxpool2d_backward(dinp_d.get(), dout_d.get(), argmax_d.get(), g, s);
    expect_close("dinp", dinp_d.read(), dinp, kElementwise);
  }
}

void check(Kernel k, const DropoutCase& c) {
  const cudaStream_t s = test_stream();
  const uint64_t seed = 0x9E3779B97F4A7C15ull,
                 offset = (uint64_t(1) << 32) + 12345;  // both words of each used
  const std::vector<float> x = nonzero_vector(c.n, 1);
  std::vector<float> out = nan_vector(c.n);
  Floats x_d(x), out_d(out);
  switch (k) {
    case Kernel::dropout_forward:
      cpu::dropout_forward(out.data(), x.data(), c.n, c.rate, seed, offset);
      cuda::dropout_forward(out_d.get(), x_d.get(), c.n, c.rate, seed, offset, s);
      break;
    case Kernel::dropout_backward:
      cpu::dropout_backward(out.data(), x.data(), c.n, c.rate, seed, offset);
      cuda::dropout_backward(out_d.get(), x_d.get(), c.n, c.rate, seed, offset, s);
      break;
    case Kernel::dropout_mask:
      cpu::dropout_mask(out.data(), c.n, c.rate, seed, offset);
      cuda::dropout_mask(out_d.get(), c.n, c.rate, seed, offset, s);
      break;
    default:
      FAIL() << "not a dropout kernel: " << kernel_name(k);
  }
  const std::vector<float> got = out_d.read();
  expect_equal("kept elements", kept(got), kept(out));
  expect_close("values", got, out, kElementwise);
}

void check(Kernel k, const LstmCase& c) {
  const cudaStream_t s = test_stream();
  const int64_t M = c.M, U = c.U, MU = M * U, MG = M * 4 * U;
  const std::vector<float> z = random_vector(MG, -3.0f, 3.0f, 1), c_prev = random_vector(MU, -1.0f, 1.0f, 2);
  const float* c_prev_h = c.first_step ? nullptr : c_prev.data();
  Floats z_d(z), c_prev_d(c_prev);
  const float* c_prev_g = c.first_step ? nullptr : c_prev_d.get();
  std::vector<float> h = nan_vector(MU), cell = nan_vector(MU), gates = nan_vector(MG);
  cpu::lstm_cell_forward(h.data(), cell.data(), gates.data(), z.data(), c_prev_h, M, U, c.act, c.rec_act);
  if (k == Kernel::lstm_cell_forward) {
    Floats h_d(nan_vector(MU)), cell_d(nan_vector(MU)), gates_d(nan_vector(MG));
    cuda::lstm_cell_forward(h_d.get(), cell_d.get(), gates_d.get(), z_d.get(), c_prev_g, M, U, c.act,
                            c.rec_act, s);
    expect_close("h", h_d.read(), h, kFused);
    expect_close("c", cell_d.read(), cell, kFused);
    expect_close("gates", gates_d.read(), gates, kFused);
    return;
  }
  // Backward from the CPU forward's gates and c, on both sides.
  const std::vector<float> dh = random_vector(MU, -1.0f, 1.0f, 3), dc = random_vector(MU, -1.0f, 1.0f, 4);
  Floats gates_d(gates), cell_d(cell), dh_d(dh), dc_d(dc);
  std::vector<float> dz = nan_vector(MG), dc_prev = nan_vector(MU);
  Floats dz_d(dz), dc_prev_d(dc_prev);
  cpu::lstm_cell_backward(dz.data(), c.first_step ? nullptr : dc_prev.data(), dh.data(),
                          c.last_step ? nullptr : dc.data(), gates.data(), cell.data(), c_prev_h, M, U, c.act,
                          c.rec_act);
  cuda::lstm_cell_backward(dz_d.get(), c.first_step ? nullptr : dc_prev_d.get(), dh_d.get(),
                           c.last_step ? nullptr : dc_d.get(), gates_d.get(), cell_d.get(), c_prev_g, M, U,
                           c.act, c.rec_act, s);
  expect_close("dz", dz_d.read(), dz, kFused);
  if (!c.first_step) expect_close("dc_prev", dc_prev_d.read(), dc_prev, kFused);
}

void check(Kernel k, const BatchnormCase& c) {
  const cudaStream_t s = test_stream();
  const int64_t M = c.M, C = c.C;
  const float eps = 1e-3f, momentum = 0.99f;
  const std::vector<float> inp = random_vector(M * C, -1.5f, 2.5f, 1);  // mean 0.5: the mean matters
  const std::vector<float> gamma = random_vector(C, 0.5f, 1.5f, 2), beta = random_vector(C, -0.5f, 0.5f, 3);
  Floats inp_d(inp), gamma_d(gamma), beta_d(beta);
  std::vector<float> out = nan_vector(M * C), mean = nan_vector(C), var = nan_vector(C),
                     invstd = nan_vector(C);
  cpu::batchnorm_forward_train(out.data(), mean.data(), var.data(), invstd.data(), inp.data(), gamma.data(),
                               beta.data(), M, C, eps);
  switch (k) {
    case Kernel::batchnorm_forward_train: {
      Floats out_d(nan_vector(M * C)), mean_d(nan_vector(C)), var_d(nan_vector(C)), invstd_d(nan_vector(C));
      cuda::batchnorm_forward_train(out_d.get(), mean_d.get(), var_d.get(), invstd_d.get(), inp_d.get(),
                                    gamma_d.get(), beta_d.get(), M, C, eps, s);
      expect_close("mean", mean_d.read(), mean, sum_tol(M));
      expect_close("var", var_d.read(), var, sum_tol(M));
      expect_close("invstd", invstd_d.read(), invstd, sum_tol(M));
      expect_close("out", out_d.read(), out, kFused + sum_tol(M));  // statistics feed every output
      break;
    }
    case Kernel::batchnorm_forward_infer: {
      const std::vector<float> moving_mean = random_vector(C, -0.5f, 0.5f, 4);
      const std::vector<float> moving_var = random_vector(C, 0.1f, 2.0f, 5);
      Floats mm_d(moving_mean), mv_d(moving_var), out_d(nan_vector(M * C));
      std::vector<float> out_infer = nan_vector(M * C);
      cpu::batchnorm_forward_infer(out_infer.data(), inp.data(), gamma.data(), beta.data(),
                                   moving_mean.data(), moving_var.data(), M, C, eps);
      cuda::batchnorm_forward_infer(out_d.get(), inp_d.get(), gamma_d.get(), beta_d.get(), mm_d.get(),
                                    mv_d.get(), M, C, eps, s);
      expect_close("out", out_d.read(), out_infer, kFused);
      break;
    }
    case Kernel::batchnorm_backward: {
      // From the CPU forward's mean and invstd, on both sides.
      const std::vector<float> dout = random_vector(M * C, -1.0f, 1.0f, 6);
      std::vector<float> dinp = nan_vector(M * C);
      std::vector<float> dgamma = random_vector(C, -1.0f, 1.0f, 7), dbeta = random_vector(C, -1.0f, 1.0f, 8);
      Floats dout_d(dout), mean_d(mean), invstd_d(invstd), dinp_d(dinp), dgamma_d(dgamma), dbeta_d(dbeta);
      cpu::batchnorm_backward(dinp.data(), dgamma.data(), dbeta.data(), dout.data(), inp.data(), mean.data(),
                              invstd.data(), gamma.data(), M, C);
      cuda::batchnorm_backward(dinp_d.get(), dgamma_d.get(), dbeta_d.get(), dout_d.get(), inp_d.get(),
                               mean_d.get(), invstd_d.get(), gamma_d.get(), M, C, s);
      expect_close("dgamma", dgamma_d.read(), dgamma, sum_tol(M));
      expect_close("dbeta", dbeta_d.read(), dbeta, sum_tol(M));
      expect_close("dinp", dinp_d.read(), dinp, kFused + sum_tol(M));
      break;
    }
    case Kernel::batchnorm_update_moving: {
      std::vector<float> mm = random_vector(C, -0.5f, 0.5f, 4), mv = random_vector(C, 0.1f, 2.0f, 5);
      Floats mm_d(mm), mv_d(mv), mean_d(mean), var_d(var);
      cpu::batchnorm_update_moving(mm.data(), mv.data(), mean.data(), var.data(), M, C, momentum);
      cuda::batchnorm_update_moving(mm_d.get(), mv_d.get(), mean_d.get(), var_d.get(), M, C, momentum, s);
      expect_close("moving_mean", mm_d.read(), mm, kFused);
      expect_close("moving_var", mv_d.read(), mv, kFused);
      break;
    }
    default:
      FAIL() << "not a batchnorm kernel: " << kernel_name(k);
  }
}

void check(Kernel k, const SoftmaxCase& c) {
  const cudaStream_t s = test_stream();
  const int64_t N = c.N, K = c.K, NK = N * K;
  const double tol = kFused + sum_tol(K);  // exponentials, then K-term row sums
  const std::vector<float> logits = random_vector(NK, -4.0f, 4.0f, 1), targets = target_rows(N, K, 2);
  Floats logits_d(logits), targets_d(targets);
  std::vector<float> probs = nan_vector(NK);
  cpu::softmax_forward(probs.data(), logits.data(), N, K);
  switch (k) {
    case Kernel::softmax_forward: {
      Floats probs_d(nan_vector(NK));
      cuda::softmax_forward(probs_d.get(), logits_d.get(), N, K, s);
      expect_close("probs", probs_d.read(), probs, tol);
      break;
    }
    case Kernel::softmax_backward: {
      const std::vector<float> dprobs = random_vector(NK, -1.0f, 1.0f, 3);
      std::vector<float> dlogits = nan_vector(NK);
      Floats dprobs_d(dprobs), probs_d(probs), dlogits_d(dlogits);
      cpu::softmax_backward(dlogits.data(), dprobs.data(), probs.data(), N, K);
      cuda::softmax_backward(dlogits_d.get(), dprobs_d.get(), probs_d.get(), N, K, s);
      expect_close("dlogits", dlogits_d.read(), dlogits, tol);
      break;
    }
    case Kernel::softmax_xent_forward: {
      std::vector<float> losses = nan_vector(N), xprobs = nan_vector(NK);
      Floats losses_d(losses), xprobs_d(xprobs);
      cpu::softmax_xent_forward(losses.data(), xprobs.data(), logits.data(), targets.data(), N, K);
      cuda::softmax_xent_forward(losses_d.get(), xprobs_d.get(), logits_d.get(), targets_d.get(), N, K, s);
      expect_close("losses", losses_d.read(), losses, tol);
      expect_close("probs", xprobs_d.read(), xprobs, tol);
      break;
    }
    case Kernel::softmax_xent_backward: {
      const std::vector<float> dlosses = random_vector(N, -1.0f, 1.0f, 3);
      std::vector<float> dlogits = nan_vector(NK);
      Floats dlosses_d(dlosses), probs_d(probs), dlogits_d(dlogits);
      cpu::softmax_xent_backward(dlogits.data(), dlosses.data(), probs.data(), targets.data(), N, K);
      cuda::softmax_xent_backward(dlogits_d.get(), dlosses_d.get(), probs_d.get(), targets_d.get(), N, K, s);
      expect_close("dlogits", dlogits_d.read(), dlogits, tol);
      break;
    }
    case Kernel::accuracy_count: {
      const std::vector<float> scores = tied_vector(NK, 3);  // ties: the first maximum must win
      Floats scores_d(scores);
      int64_t correct = -1;
      cpu::accuracy_count(&correct, scores.data(), targets.data(), N, K);
      DeviceArray<int64_t> correct_d(std::vector<int64_t>{-1});
      cuda::accuracy_count(correct_d.get(), scores_d.get(), targets_d.get(), N, K, s);
      expect_equal("correct", correct_d.read(), std::vector<int64_t>{correct});
      // The dispatch table's adapter writes the count to host memory.
      int64_t via_table = -1;
      cuda_kernel_table().accuracy_count(&via_table, scores_d.get(), targets_d.get(), N, K);
      EXPECT_EQ(via_table, correct) << "accuracy_count through the CUDA dispatch table";
      // Diverged scores: NaNs at column 0 of some rows, elsewhere in others. The CPU's rule
      // (first maximum; a NaN never compares greater, so it counts only at column 0) gives each
      // row's target; both backends must then count every row.
      std::vector<float> nan_scores = scores, argmax_targets(static_cast<size_t>(NK), 0.0f);
      const float nan = std::numeric_limits<float>::quiet_NaN();
      for (int64_t n = 0; n < N; ++n) {
        float* row = nan_scores.data() + n * K;
        if (n % 4 == 0 || n % 4 == 2) row[0] = nan;
        if (n % 4 == 1 || n % 4 == 2) row[(n * 7) % K] = nan;
        int64_t best = 0;
        for (int64_t k = 1; k < K; ++k) {
          if (row[k] > row[best]) best = k;
        }
        argmax_targets[static_cast<size_t>(n * K + best)] = 1.0f;
      }
      int64_t nan_correct = -1;
      cpu::accuracy_count(&nan_correct, nan_scores.data(), argmax_targets.data(), N, K);
      EXPECT_EQ(nan_correct, N) << "the CPU reference with NaN scores";
      Floats nan_scores_d(nan_scores), argmax_targets_d(argmax_targets);
      DeviceArray<int64_t> nan_correct_d(std::vector<int64_t>{-1});
      cuda::accuracy_count(nan_correct_d.get(), nan_scores_d.get(), argmax_targets_d.get(), N, K, s);
      expect_equal("correct with NaN scores", nan_correct_d.read(), std::vector<int64_t>{N});
      break;
    }
    case Kernel::sigmoid_xent_forward: {
      // Binary targets on most rows, a soft target every third row (label smoothing).
      std::vector<float> bin = random_vector(NK, 0.0f, 1.0f, 4);
      for (size_t i = 0; i < bin.size(); ++i) bin[i] = i % 3 == 2 ? bin[i] : (bin[i] < 0.5f ? 0.0f : 1.0f);
      Floats bin_d(bin);
      std::vector<float> losses = nan_vector(N), sprobs = nan_vector(NK);
      Floats losses_d(losses), sprobs_d(sprobs);
      cpu::sigmoid_xent_forward(losses.data(), sprobs.data(), logits.data(), bin.data(), N, K);
      cuda::sigmoid_xent_forward(losses_d.get(), sprobs_d.get(), logits_d.get(), bin_d.get(), N, K, s);
      expect_close("losses", losses_d.read(), losses,
                   kFused + sum_tol(K));  // log1p(exp) per element, K terms
      expect_close("probs", sprobs_d.read(), sprobs, kElementwise);
      break;
    }
    case Kernel::sigmoid_xent_backward: {
      std::vector<float> sprobs(static_cast<size_t>(NK)), losses(static_cast<size_t>(N));
      cpu::sigmoid_xent_forward(losses.data(), sprobs.data(), logits.data(), targets.data(), N, K);
      const std::vector<float> dlosses = random_vector(N, -1.0f, 1.0f, 3);
      std::vector<float> dlogits = nan_vector(NK);
      Floats dlosses_d(dlosses), sprobs_d(sprobs), dlogits_d(dlogits);
      cpu::sigmoid_xent_backward(dlogits.data(), dlosses.data(), sprobs.data(), targets.data(), N, K);
      cuda::sigmoid_xent_backward(dlogits_d.get(), dlosses_d.get(), sprobs_d.get(), targets_d.get(), N, K, s);
      expect_close("dlogits", dlogits_d.read(), dlogits, kElementwise);
      break;
    }
    case Kernel::binary_accuracy_count: {
      // Probabilities on a grid of 1/8, so that some are exactly 0.5 (not above the threshold),
      // and a NaN every fifth element (counts as 0).
      std::vector<float> p = random_vector(NK, 0.0f, 1.0f, 5);
      for (size_t i = 0; i < p.size(); ++i)
        p[i] = i % 5 == 4 ? std::numeric_limits<float>::quiet_NaN() : std::floor(p[i] * 8.0f) / 8.0f;
      Floats p_d(p);
      int64_t correct = -1;
      cpu::binary_accuracy_count(&correct, p.data(), targets.data(), N, K);
      DeviceArray<int64_t> correct_d(std::vector<int64_t>{-1});
      cuda::binary_accuracy_count(correct_d.get(), p_d.get(), targets_d.get(), N, K, s);
      expect_equal("correct", correct_d.read(), std::vector<int64_t>{correct});
      int64_t via_table = -1;
      cuda_kernel_table().binary_accuracy_count(&via_table, p_d.get(), targets_d.get(), N, K);
      EXPECT_EQ(via_table, correct) << "binary_accuracy_count through the CUDA dispatch table";
      break;
    }
    default:
      FAIL() << "not a softmax kernel: " << kernel_name(k);
  }
}

void check(Kernel k, const ChannelCase& c) {
  const cudaStream_t s = test_stream();
  const int64_t N = c.N, S = c.S, C = c.C, total = N * S * C;
  const uint64_t seed = 0x9E3779B97F4A7C15ull, offset = (uint64_t(1) << 32) + 777;
  switch (k) {
    case Kernel::global_avgpool_forward: {
      const std::vector<float> inp = random_vector(total, -1.0f, 1.0f, 1);
      std::vector<float> out = nan_vector(N * C);
      Floats inp_d(inp), out_d(out);
      cpu::global_avgpool_forward(out.data(), inp.data(), N, S, C);
      cuda::global_avgpool_forward(out_d.get(), inp_d.get(), N, S, C, s);
      expect_close("out", out_d.read(), out, kElementwise);  // both sum in double, in s order
      break;
    }
    case Kernel::global_avgpool_backward: {
      const std::vector<float> dout = random_vector(N * C, -1.0f, 1.0f, 2);
      std::vector<float> dinp = nan_vector(total);
      Floats dout_d(dout), dinp_d(dinp);
      cpu::global_avgpool_backward(dinp.data(), dout.data(), N, S, C);
      cuda::global_avgpool_backward(dinp_d.get(), dout_d.get(), N, S, C, s);
      expect_close("dinp", dinp_d.read(), dinp, kExact);  // one division
      break;
    }
    case Kernel::spatial_dropout_forward:
    case Kernel::spatial_dropout_backward: {
      const std::vector<float> x = nonzero_vector(total, 3);
      std::vector<float> out = nan_vector(total);
      Floats x_d(x), out_d(out);
      if (k == Kernel::spatial_dropout_forward) {
        cpu::spatial_dropout_forward(out.data(), x.data(), N, S, C, c.rate, seed, offset);
        cuda::spatial_dropout_forward(out_d.get(), x_d.get(), N, S, C, c.rate, seed, offset, s);
      } else {
        cpu::spatial_dropout_backward(out.data(), x.data(), N, S, C, c.rate, seed, offset);
        cuda::spatial_dropout_backward(out_d.get(), x_d.get(), N, S, C, c.rate, seed, offset, s);
      }
      const std::vector<float> got = out_d.read();
      expect_equal("kept elements", kept(got), kept(out));
      expect_close("values", got, out, kElementwise);
      break;
    }
    default:
      FAIL() << "not a per-channel kernel: " << kernel_name(k);
  }
}

void check(Kernel, const SumCase& c) {
  const std::vector<float> inp = random_vector(c.n, -1.0f, 1.0f, 1);
  std::vector<float> out = nan_vector(1);
  Floats inp_d(inp), out_d(out);
  cpu::sum_all(out.data(), inp.data(), c.n);
  cuda::sum_all(out_d.get(), inp_d.get(), c.n, test_stream());
  // Both backends accumulate in double: only the final rounding to float can differ.
  expect_close("sum", out_d.read(), out, kElementwise);
}

void check(Kernel, const CopyBlockCase& c) {
  const std::vector<float> src = random_vector(c.outer * c.src_dim * c.inner, -1.0f, 1.0f, 1);
  std::vector<float> dst = random_vector(c.outer * c.dst_dim * c.inner, -1.0f, 1.0f, 2);
  Floats src_d(src), dst_d(dst);
  cpu::copy_block(dst.data(), c.dst_dim, c.dst_start, src.data(), c.src_dim, c.src_start, c.outer, c.len,
                  c.inner, c.accumulate);
  cuda::copy_block(dst_d.get(), c.dst_dim, c.dst_start, src_d.get(), c.src_dim, c.src_start, c.outer, c.len,
                   c.inner, c.accumulate, test_stream());
  expect_close("dst", dst_d.read(), dst, kExact);  // a copy, or one add
}

void check(Kernel k, const OptimCase& c) {
  const cudaStream_t s = test_stream();
  const int64_t n = c.n;
  std::vector<float> w = random_vector(n, -1.0f, 1.0f, 1), m = random_vector(n, -0.1f, 0.1f, 3);
  std::vector<float> v = random_vector(n, 0.0f, 0.01f, 4);
  const std::vector<float> g = random_vector(n, -1.0f, 1.0f, 2);
  Floats w_d(w), m_d(m), v_d(v), g_d(g);
  const float lr = 0.01f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-7f, rho = 0.9f;
  const int t = 3;
  const float alpha = static_cast<float>(lr * std::sqrt(1.0 - std::pow(0.999, t)) / (1.0 - std::pow(0.9, t)));
  switch (k) {
    case Kernel::adam_update:
      cpu::adam_update(w.data(), m.data(), v.data(), g.data(), n, alpha, beta1, beta2, eps);
      cuda::adam_update(w_d.get(), m_d.get(), v_d.get(), g_d.get(), n, alpha, beta1, beta2, eps, s);
      expect_close("m", m_d.read(), m, kFused);
      expect_close("v", v_d.read(), v, kFused);
      break;
    case Kernel::rmsprop_update:
      cpu::rmsprop_update(w.data(), v.data(), g.data(), n, lr, rho, eps, c.form);
      cuda::rmsprop_update(w_d.get(), v_d.get(), g_d.get(), n, lr, rho, eps, c.form, s);
      expect_close("v", v_d.read(), v, kFused);
      break;
    case Kernel::sgd_update:
      cpu::sgd_update(w.data(), g.data(), n, lr);
      cuda::sgd_update(w_d.get(), g_d.get(), n, lr, s);
      break;
    default:
      FAIL() << "not an optimizer kernel: " << kernel_name(k);
  }
  expect_close("w", w_d.read(), w, kFused);
}

void run_case(const ParityCase& c) {
  std::visit([&c](const auto& params) { check(c.kernel, params); }, c.params);
  CUDA_CHECK(cudaStreamSynchronize(test_stream()));
}

#endif  // HISVID_WITH_CUDA

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

class CudaParity : public ::testing::TestWithParam<ParityCase> {
 protected:
  void SetUp() override {
    const std::string reason = skip_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
#ifdef HISVID_WITH_CUDA
    // Creating the engine's allocator installs it as the context's workspace provider, as
    // in the engine; kernels then take their scratch from it.
    (void)cuda_allocator(Device::cuda(0));
#endif
  }
};

TEST_P(CudaParity, MatchesCpu) {
#ifdef HISVID_WITH_CUDA
  run_case(GetParam());
#endif
}

INSTANTIATE_TEST_SUITE_P(AllKernels, CudaParity, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<ParityCase>& info) { return info.param.name(); });

// The table covers every kernel of kernels/*.h.
TEST(CudaParityTable, CoversEveryKernel) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  std::vector<int> cases_per_kernel(static_cast<size_t>(Kernel::count), 0);
  for (const ParityCase& c : all_cases()) ++cases_per_kernel[static_cast<size_t>(c.kernel)];
  for (int k = 0; k < static_cast<int>(Kernel::count); ++k) {
    EXPECT_GE(cases_per_kernel[static_cast<size_t>(k)], 1)
        << kernel_name(static_cast<Kernel>(k)) << " has no case";
  }
}

// Every entry of the CUDA float dispatch table is filled.
TEST(CudaDispatch, EveryEntryIsSet) {
  const std::string reason = skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
#ifdef HISVID_WITH_CUDA
  const KernelTable<float>& t = cuda_kernel_table();
  const void* entries[] = {reinterpret_cast<const void*>(t.fill),
                           reinterpret_cast<const void*>(t.add),
                           reinterpret_cast<const void*>(t.sub),
                           reinterpret_cast<const void*>(t.mul),
                           reinterpret_cast<const void*>(t.scale),
                           reinterpret_cast<const void*>(t.axpy),
                           reinterpret_cast<const void*>(t.bias_add_forward),
                           reinterpret_cast<const void*>(t.bias_add_backward),
                           reinterpret_cast<const void*>(t.activation_forward),
                           reinterpret_cast<const void*>(t.activation_backward),
                           reinterpret_cast<const void*>(t.matmul),
                           reinterpret_cast<const void*>(t.conv2d_forward),
                           reinterpret_cast<const void*>(t.conv2d_backward_data),
                           reinterpret_cast<const void*>(t.conv2d_backward_filter),
                           reinterpret_cast<const void*>(t.maxpool2d_forward),
                           reinterpret_cast<const void*>(t.maxpool2d_backward),
                           reinterpret_cast<const void*>(t.global_avgpool_forward),
                           reinterpret_cast<const void*>(t.global_avgpool_backward),
                           reinterpret_cast<const void*>(t.dropout_forward),
                           reinterpret_cast<const void*>(t.dropout_backward),
                           reinterpret_cast<const void*>(t.dropout_mask),
                           reinterpret_cast<const void*>(t.spatial_dropout_forward),
                           reinterpret_cast<const void*>(t.spatial_dropout_backward),
                           reinterpret_cast<const void*>(t.lstm_cell_forward),
                           reinterpret_cast<const void*>(t.lstm_cell_backward),
                           reinterpret_cast<const void*>(t.batchnorm_forward_train),
                           reinterpret_cast<const void*>(t.batchnorm_forward_infer),
                           reinterpret_cast<const void*>(t.batchnorm_backward),
                           reinterpret_cast<const void*>(t.batchnorm_update_moving),
                           reinterpret_cast<const void*>(t.softmax_forward),
                           reinterpret_cast<const void*>(t.softmax_backward),
                           reinterpret_cast<const void*>(t.softmax_xent_forward),
                           reinterpret_cast<const void*>(t.softmax_xent_backward),
                           reinterpret_cast<const void*>(t.accuracy_count),
                           reinterpret_cast<const void*>(t.sigmoid_xent_forward),
                           reinterpret_cast<const void*>(t.sigmoid_xent_backward),
                           reinterpret_cast<const void*>(t.binary_accuracy_count),
                           reinterpret_cast<const void*>(t.sum_all),
                           reinterpret_cast<const void*>(t.copy_block),
                           reinterpret_cast<const void*>(t.adam_update),
                           reinterpret_cast<const void*>(t.rmsprop_update),
                           reinterpret_cast<const void*>(t.sgd_update)};
  static_assert(sizeof(KernelTable<float>) == sizeof(entries), "list every KernelTable entry here");
  for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); ++i)
    EXPECT_NE(entries[i], nullptr) << "entry " << i;
#endif
}

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
    expect_close("parameter " + std::to_string(i + 1) + " after Adam", gpu.weights[i], cpu.weights[i], kModelStep);
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
