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
#include <vector>

#include "kernels/conv2d_pool.h"
#include "kernels/harness.h"
#include "kernels/philox.h"

namespace hisvid {
namespace {

using harness::Cases;

const bool rows = register_rows(host_row<naive::conv2d_act_pool_forward<float>>(Backend::Naive, "naive"),
                                host_row<naive::conv2d_act_pool_forward<double>>(Backend::Naive, "naive"),
                                host_row<naive::conv2d_act_pool_backward<float>>(Backend::Naive, "naive"),
                                host_row<naive::conv2d_act_pool_backward<double>>(Backend::Naive, "naive"),
                                host_row<cpu::conv2d_act_pool_forward>(Backend::Cpu, "cpu"),
                                host_row<cpu::conv2d_act_pool_backward>(Backend::Cpu, "cpu"));
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
    // The LRCN's four blocks at training batch 4 (4 x 20 frames).
    {80, 64, 64, 3, 16, 3, 3, 1, 1, Padding::Same, 4, 4, 4, 4, Padding::Valid, Activation::Relu, true, "seed_lrcn_block1"},
    {80, 16, 16, 16, 32, 3, 3, 1, 1, Padding::Same, 4, 4, 4, 4, Padding::Valid, Activation::Relu, true, "seed_lrcn_block2"},
    {80, 4, 4, 32, 64, 3, 3, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Valid, Activation::Relu, true, "seed_lrcn_block3"},
    {80, 2, 2, 64, 64, 3, 3, 1, 1, Padding::Same, 2, 2, 2, 2, Padding::Valid, Activation::Relu, true, "seed_lrcn_block4"},
};
// clang-format on

const bool cases = [] {
  Cases<Conv2dActPoolForward> forward;
  Cases<Conv2dActPoolBackward> backward;
  for (const Shape& s : kShapes) {
    const Conv2dGeometry g = conv2d_geometry(s.N, s.H, s.W, s.C, s.F, s.KH, s.KW, s.SH, s.SW, s.padding);
    const Pool2dGeometry p = pool_over(g, s.PH, s.PW, s.PSH, s.PSW, s.pool_padding);
    const Activation act = s.act;
    const bool bias = s.bias;
    const int64_t in_n = int64_t(g.N) * g.H * g.W * g.C, w_n = int64_t(g.KH) * g.KW * g.C * g.F;
    const double pooled = double(p.N) * p.HO * p.WO * p.C;
    const double conv_flops = 2.0 * double(g.N) * g.HO * g.WO * g.F * g.KH * g.KW * g.C;
    const auto set = [g, p, act](auto& a) { a.g = g, a.p = p, a.act = act; };
    forward
        .add(s.name,
             [set, bias](auto& a) {
               set(a);
               if (!bias) a.bias = nullptr;
             })
        .tol(harness::conv_tolerance(int64_t(g.KH) * g.KW * g.C + 1))
        .with_flops(conv_flops)
        .prepare_with([in_n, w_n, g](Conv2dActPoolForward<double>& a) {
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
          .add(std::string(s.name) + (with_dinp ? "" : "_no_dinp"),
               [set, bias, with_dinp](auto& a) {
                 set(a);
                 if (!bias) a.dbias = nullptr;
                 if (!with_dinp) a.dinp = nullptr;
               })
          .tol("dinp", harness::conv_tolerance(int64_t(g.KH) * g.KW * g.F))
          .tol("dweight", harness::conv_tolerance(positions + 1))
          .tol("dbias", harness::sum_tolerance(positions + 1))
          .with_flops(4.0 * pooled * g.KH * g.KW * g.C)
          .prepare_with([in_n, w_n, g, p, act, bias](Conv2dActPoolBackward<double>& a) {
            double* inp = harness::writable(a.inp);
            double* weight = harness::writable(a.weight);
            for (int64_t i = 0; i < in_n; ++i) inp[i] = on_grid(1, i);
            for (int64_t i = 0; i < w_n; ++i) weight[i] = on_grid(2, i);
            std::vector<double> b(static_cast<size_t>(g.F));
            for (int f = 0; f < g.F; ++f) b[size_t(f)] = on_grid(3, f);
            Conv2dActPoolForward<double> f;
            f.out = harness::writable(a.out), f.argmax = harness::writable(a.argmax), f.inp = inp,
            f.weight = weight, f.bias = bias ? b.data() : nullptr, f.g = g, f.p = p, f.act = act;
            naive::conv2d_act_pool_forward(f);
          });
    }
  }
  return harness::add_cases(forward) && harness::add_cases(backward);
}();

}  // namespace
}  // namespace hisvid
