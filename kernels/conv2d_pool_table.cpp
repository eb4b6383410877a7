// kernels/conv2d_pool_table.cpp — the rows of the fused convolution + activation + max-pool
// and their harness cases.
//
// Inputs, weights and biases are multiples of 1/8 in [-1/2, 1/2): every product is a multiple
// of 1/64 and every sum of a few thousand of them is exact in float, so the float rows compute
// the very convolution values of the float64 reference whatever their summation order. Ties
// (and the relu's zeros) are then the same on every row, and the argmax, which decides where
// the whole backward goes, can be compared exactly.
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "kernels/conv2d_avx2.h"
#include "kernels/conv2d_pool.h"
#include "kernels/harness.h"
#include "kernels/philox.h"

namespace hisvid {
namespace {

using harness::Cases;

const bool rows = register_rows(
    host_row<naive::conv2d_act_pool_forward<float>>(Backend::Naive, "naive"),
    host_row<naive::conv2d_act_pool_forward<double>>(Backend::Naive, "naive"),
    host_row<naive::conv2d_act_pool_backward<float>>(Backend::Naive, "naive"),
    host_row<naive::conv2d_act_pool_backward<double>>(Backend::Naive, "naive"),
    host_row<cpu::conv2d_act_pool_forward>(Backend::Cpu, "cpu"),
    host_row<cpu::conv2d_act_pool_backward>(Backend::Cpu, "cpu"),
    host_row<cpu::conv2d_act_pool_backward_portable>(Backend::Cpu, "cpu.portable", Role::Alternative));
// The AVX2 backward exists on processors that can run it.
const bool avx2_rows = !cpu::avx2::available() || register_rows(host_row<cpu::conv2d_act_pool_backward_avx2>(
                                                      Backend::Cpu, "cpu.avx2", Role::Alternative));
#ifdef HISVID_WITH_CUDA
const bool cuda_rows = register_rows(
    cuda_row<cuda::conv2d_act_pool_forward>("cuda"), cuda_row<cuda::conv2d_act_pool_backward>("cuda"),
    cuda_row<cuda::conv2d_act_pool_forward_v1>("cuda.v1", Role::Alternative),
    cuda_row<cuda::conv2d_act_pool_backward_v1>("cuda.v1", Role::Alternative));
#endif

double on_grid(uint64_t stream, int64_t i) {
  return std::floor(philox_uniform(0xC0F5, stream, uint64_t(i)) * 8.0) / 8.0 - 0.5;
}

struct Shape {
  int N, H, W, C, F, KH, KW, SH, SW;
  Padding padding;
  int PH, PW, PSH, PSW;
  Padding pool_padding;
  Activation act;
  bool bias;
  const char* name;
};

// clang-format off
const Shape kShapes[] = {
    {2, 16, 16, 3, 8, 3, 3, 1, 1, Padding::Same, 4, 4, 4, 4, Padding::Valid, Activation::Relu, true, "lrcn_like_relu"},
    {1, 7, 9, 2, 5, 3, 2, 1, 1, Padding::Valid, 2, 2, 2, 2, Padding::Same, Activation::Relu, true, "partial_pool_windows"},
    {2, 9, 9, 4, 6, 3, 3, 1, 1, Padding::Same, 3, 3, 2, 2, Padding::Same, Activation::Relu, true, "overlapping_pools"},
    {2, 9, 8, 4, 6, 3, 3, 2, 2, Padding::Same, 2, 2, 2, 2, Padding::Valid, Activation::Relu, false, "conv_stride2_no_bias"},
    {3, 5, 6, 3, 4, 3, 3, 1, 1, Padding::Same, 1, 1, 1, 1, Padding::Valid, Activation::Relu, true, "pool_1x1"},
    {2, 8, 8, 3, 5, 3, 3, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Valid, Activation::Tanh, true, "tanh"},
    {2, 8, 8, 3, 5, 3, 3, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Valid, Activation::Sigmoid, true, "sigmoid"},
    {2, 8, 8, 3, 5, 3, 3, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Valid, Activation::Linear, true, "linear"},
    {2, 8, 8, 3, 5, 3, 3, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Valid, Activation::HardSigmoid, true, "hard_sigmoid"},
    {1, 3, 3, 33, 17, 3, 3, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Same, Activation::Relu, true, "odd_channels_one_window"},
    // Partial last tiles with cut-short last windows: 11x11 (two of the CUDA rows' 8x8 tiles a
    // side, under half a 16x16 tile), 29x29 (two 16x16 strips tiles a side).
    {2, 11, 11, 3, 6, 3, 3, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Same, Activation::Relu, true, "partial_last_tile"},
    {2, 29, 29, 3, 6, 3, 3, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Same, Activation::Relu, true, "partial_last_strips_tile"},
    // A kernel too large for the CUDA rows' shared-memory tiles (their plain fallbacks).
    {1, 27, 27, 1, 2, 27, 27, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Valid, Activation::Relu, true, "kernel_too_large_to_tile"},
    // No pooled output at all: the convolution's 1x1 output is smaller than the window.
    {1, 3, 3, 2, 3, 3, 3, 1, 1, Padding::Valid, 2, 2, 2, 2, Padding::Valid, Activation::Relu, true, "no_pooled_output"},
    // The AVX2 backward's groups of 1, 2, 4, 5 and 7 patch segments (8-float pieces of the KH rows
    // of KW*C), and a thread's chunk of pooled pixels ending inside an image (2730 pixels a chunk
    // of 24 filters, 256 pixels an image).
    {2, 9, 12, 8, 9, 1, 5, 1, 1, Padding::Valid, 2, 2, 2, 2, Padding::Valid, Activation::Relu, true, "five_segments"},
    {2, 9, 9, 5, 7, 2, 2, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Same, Activation::Relu, true, "four_segments_even_kernel"},
    {2, 9, 9, 4, 7, 1, 3, 1, 1, Padding::Same, 3, 3, 2, 2, Padding::Same, Activation::Relu, true, "two_segments"},
    {2, 9, 9, 5, 7, 1, 1, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Valid, Activation::Relu, true, "one_segment_pointwise"},
    {2, 12, 12, 1, 7, 7, 3, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Valid, Activation::Relu, true, "seven_segments"},
    {30, 32, 32, 3, 24, 3, 3, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Valid, Activation::Relu, true, "chunk_mid_image"},
    // The LRCN's four blocks at training batch 4 (4 x 20 frames).
    {80, 64, 64, 3, 16, 3, 3, 1, 1, Padding::Same, 4, 4, 4, 4, Padding::Valid, Activation::Relu, true, "seed_lrcn_block1"},
    {80, 16, 16, 16, 32, 3, 3, 1, 1, Padding::Same, 4, 4, 4, 4, Padding::Valid, Activation::Relu, true, "seed_lrcn_block2"},
    {80, 4, 4, 32, 64, 3, 3, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Valid, Activation::Relu, true, "seed_lrcn_block3"},
    {80, 2, 2, 64, 64, 3, 3, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Valid, Activation::Relu, true, "seed_lrcn_block4"},
};
// clang-format on

// A folded dropout: both words of the seed and the offset in use; the based cases draw at
// offset + a base in memory (a captured step's), high bits included.
constexpr uint64_t kDropSeed = 0x9E3779B97F4A7C15ull, kDropOffset = (uint64_t(1) << 32) + 12345;
constexpr int64_t kDropBase = (int64_t(1) << 33) + 77;

struct Drop {
  const char* shape;  // a name of kShapes
  float rate;
  bool based;
};
// The LRCN's blocks with its Dropout(0.25) (block 4 has none in the seed; here it checks the
// 2x2 tiles), the tiled kernel's and version 1's paths, linear, and a based offset.
const Drop kDrops[] = {
    {"seed_lrcn_block1", 0.25f, false},
    {"seed_lrcn_block2", 0.25f, true},
    {"seed_lrcn_block3", 0.25f, false},
    {"seed_lrcn_block4", 0.5f, false},
    {"lrcn_like_relu", 0.5f, true},
    {"partial_last_tile", 0.25f, false},
    {"partial_last_strips_tile", 0.1f, false},
    {"overlapping_pools", 0.25f, false},
    {"conv_stride2_no_bias", 0.9f, false},
    {"linear", 0.5f, false},
    {"chunk_mid_image", 0.3f, false},
};

const bool cases = [] {
  Cases<Conv2dActPoolForward> forward;
  Cases<Conv2dActPoolBackward> backward;
  std::vector<std::pair<Shape, Drop>> all;
  for (const Shape& s : kShapes) all.push_back({s, Drop{s.name, 0.0f, false}});
  for (const Drop& d : kDrops) {
    for (const Shape& s : kShapes) {
      if (std::string(s.name) == d.shape) all.push_back({s, d});
    }
  }
  for (const auto& [s, d] : all) {
    const Conv2dGeometry g = conv2d_geometry(s.N, s.H, s.W, s.C, s.F, s.KH, s.KW, s.SH, s.SW, s.padding);
    const Pool2dGeometry p = pool_over(g, s.PH, s.PW, s.PSH, s.PSW, s.pool_padding);
    const Activation act = s.act;
    const bool bias = s.bias;
    const PoolDropout dropout{d.rate, kDropSeed, kDropOffset, nullptr};
    const bool based = d.based;
    const std::string name = std::string(s.name) +
                             (d.rate == 0.0f ? "" : "_dropout" + std::to_string(std::lround(d.rate * 100))) +
                             (based ? "_based" : "");
    // The base, when used, staged where the row runs; otherwise no base.
    const auto stage_base = [based](const int64_t* base) {
      if (based) harness::writable(base)[0] = kDropBase;
    };
    const int64_t in_n = int64_t(g.N) * g.H * g.W * g.C, w_n = int64_t(g.KH) * g.KW * g.C * g.F;
    const double pooled = double(p.N) * p.HO * p.WO * p.C;
    const double conv_flops = 2.0 * double(g.N) * g.HO * g.WO * g.F * g.KH * g.KW * g.C;
    const auto set = [g, p, act, dropout, based](auto& a) {
      const int64_t* base = a.dropout.offset_base;  // the harness's buffer
      a.g = g, a.p = p, a.act = act, a.dropout = dropout;
      a.dropout.offset_base = based ? base : nullptr;
    };
    forward
        .add(name,
             [set, bias](auto& a) {
               set(a);
               if (!bias) a.bias = nullptr;
             })
        // The sums exact on the grid: the activation's and the dropout scale's roundings.
        .tol(harness::kElementwise)
        .tol_cuda(harness::conv_tolerance(int64_t(g.KH) * g.KW * g.C + 1))
        .with_flops(conv_flops)
        .prepare_with([in_n, w_n, g, stage_base](Conv2dActPoolForward<double>& a) {
          stage_base(a.dropout.offset_base);
          for (int64_t i = 0; i < in_n; ++i) harness::writable(a.inp)[i] = on_grid(1, i);
          for (int64_t i = 0; i < w_n; ++i) harness::writable(a.weight)[i] = on_grid(2, i);
          if (a.bias != nullptr) {
            for (int f = 0; f < g.F; ++f) harness::writable(a.bias)[f] = on_grid(3, f);
          }
        });
    // The gradient reaches one position in PH*PW: dinp and dweight sum as many terms as the
    // unfused convolution's backward does at most.
    const int64_t positions = int64_t(g.N) * g.HO * g.WO;
    for (bool with_dinp : {true, false}) {
      backward
          .add(name + (with_dinp ? "" : "_no_dinp"),
               [set, bias, with_dinp](auto& a) {
                 set(a);
                 if (!bias) a.dbias = nullptr;
                 if (!with_dinp) a.dinp = nullptr;
               })
          .tol("dinp", harness::sum_tolerance(int64_t(g.KH) * g.KW * g.F))
          .tol("dweight", harness::sum_tolerance(positions + 1))
          .tol_cuda("dinp", harness::conv_tolerance(int64_t(g.KH) * g.KW * g.F))
          .tol_cuda("dweight", harness::conv_tolerance(positions + 1))
          .tol("dbias", harness::sum_tolerance(positions + 1))
          .with_flops(4.0 * pooled * g.KH * g.KW * g.C)
          .prepare_with([in_n, w_n, g, p, act, bias, stage_base](Conv2dActPoolBackward<double>& a) {
            stage_base(a.dropout.offset_base);
            double* inp = harness::writable(a.inp);
            double* weight = harness::writable(a.weight);
            for (int64_t i = 0; i < in_n; ++i) inp[i] = on_grid(1, i);
            for (int64_t i = 0; i < w_n; ++i) weight[i] = on_grid(2, i);
            std::vector<double> b(static_cast<size_t>(g.F));
            for (int f = 0; f < g.F; ++f) b[size_t(f)] = on_grid(3, f);
            Conv2dActPoolForward<double> f;
            f.out = harness::writable(a.out), f.argmax = harness::writable(a.argmax), f.inp = inp,
            f.weight = weight, f.bias = bias ? b.data() : nullptr, f.g = g, f.p = p, f.act = act;
            f.dropout = a.dropout;  // out: the dropped output, as the op keeps it
            naive::conv2d_act_pool_forward(f);
          });
    }
  }
  return harness::add_cases(forward) && harness::add_cases(backward);
}();

}  // namespace
}  // namespace hisvid
