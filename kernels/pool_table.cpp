// kernels/pool_table.cpp — the rows of the pooling kernels and their harness cases.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/conv2d_avx2.h"
#include "kernels/conv2d_avx512.h"
#include "kernels/harness.h"
#include "kernels/philox.h"
#include "kernels/pool.h"

namespace hisvid {
namespace {

using harness::Cases;

const bool rows =
    register_rows(host_row<naive::maxpool2d_forward<float>>(Backend::Naive, "naive"),
                  host_row<naive::maxpool2d_forward<double>>(Backend::Naive, "naive"),
                  host_row<naive::maxpool2d_backward<float>>(Backend::Naive, "naive"),
                  host_row<naive::maxpool2d_backward<double>>(Backend::Naive, "naive"),
                  host_row<naive::global_avgpool_forward<float>>(Backend::Naive, "naive"),
                  host_row<naive::global_avgpool_forward<double>>(Backend::Naive, "naive"),
                  host_row<naive::global_avgpool_backward<float>>(Backend::Naive, "naive"),
                  host_row<naive::global_avgpool_backward<double>>(Backend::Naive, "naive"),
                  host_row<cpu::maxpool2d_forward>(Backend::Cpu, "cpu"),
                  host_row<cpu::maxpool2d_forward_portable>(Backend::Cpu, "cpu.portable", Role::Alternative));
// The AVX2 and AVX-512 forms exist on processors that can run them.
const bool avx2_rows = !cpu::avx2::available() || register_rows(host_row<cpu::maxpool2d_forward_avx2>(
                                                      Backend::Cpu, "cpu.avx2", Role::Alternative));
const bool avx512_rows = !cpu::avx512::available() || register_rows(host_row<cpu::maxpool2d_forward_avx512>(
                                                          Backend::Cpu, "cpu.avx512", Role::Alternative));
#ifdef HISVID_WITH_CUDA
const bool cuda_rows = register_rows(
    cuda_row<cuda::maxpool2d_forward>("cuda"), cuda_row<cuda::maxpool2d_backward>("cuda"),
    cuda_row<cuda::maxpool2d_backward_gather>("cuda.gather", Role::Alternative),
    cuda_row<cuda::global_avgpool_forward>("cuda"), cuda_row<cuda::global_avgpool_backward>("cuda"));
#endif

// Values on a grid of 1/8 in [-0.5, 0.5): ties are common, so "first maximum" is exercised.
double tied(uint64_t stream, int64_t i) {
  return std::floor(philox_uniform(0x71ED, stream, uint64_t(i)) * 8.0) / 8.0 - 0.5;
}

struct Shape {
  int N, H, W, C, PH, PW, SH, SW;
  Padding padding;
};

// clang-format off
const Shape kShapes[] = {
    {1, 4, 4, 1, 2, 2, 2, 2, Padding::Valid},   {2, 7, 9, 3, 2, 2, 2, 2, Padding::Same},
    {2, 9, 8, 5, 3, 3, 2, 2, Padding::Same},    {1, 5, 5, 17, 3, 3, 1, 1, Padding::Same},
    {2, 6, 7, 4, 3, 2, 3, 1, Padding::Valid},   {3, 64, 64, 16, 2, 2, 2, 2, Padding::Valid},
    {1, 1, 1, 2, 1, 1, 1, 1, Padding::Valid},
    // Registers: blocks of 16, 16, 4 and 1 channel left; 8, 4 and 2 (the ConvLSTM's third
    // layer); 16, 8, 4, 2 and 1; 8 alone; 16 and 8; windows cut by the padding.
    {2, 7, 9, 37, 3, 3, 2, 2, Padding::Same},
    {2, 13, 13, 14, 2, 2, 2, 2, Padding::Same},  {2, 5, 6, 31, 3, 3, 2, 2, Padding::Same},
    {1, 6, 6, 8, 2, 2, 2, 2, Padding::Valid},     {1, 5, 7, 24, 2, 3, 1, 2, Padding::Same},
    // windows that do not overlap (the CUDA backward's bands): rows and columns left over at the
    // end, strides longer than the window, padding on both sides
    {2, 11, 10, 3, 4, 4, 4, 4, Padding::Valid}, {1, 9, 7, 2, 2, 2, 3, 3, Padding::Valid},
    {2, 4, 7, 3, 3, 3, 3, 3, Padding::Same},
};
// clang-format on

std::string shape_name(const Shape& s) {
  return "N" + std::to_string(s.N) + "_H" + std::to_string(s.H) + "_W" + std::to_string(s.W) + "_C" +
         std::to_string(s.C) + "_P" + std::to_string(s.PH) + "x" + std::to_string(s.PW) + "_S" +
         std::to_string(s.SH) + "x" + std::to_string(s.SW) +
         (s.padding == Padding::Same ? "_same" : "_valid");
}

const bool cases = [] {
  Cases<Maxpool2dForward> forward;
  Cases<Maxpool2dBackward> backward;
  for (const Shape& s : kShapes) {
    const Pool2dGeometry g = pool2d_geometry(s.N, s.H, s.W, s.C, s.PH, s.PW, s.SH, s.SW, s.padding);
    const int64_t in_n = int64_t(g.N) * g.H * g.W * g.C;
    const double compares = double(g.N) * g.HO * g.WO * g.C * g.PH * g.PW;
    forward.add(shape_name(s), [g](auto& a) { a.g = g; })
        .with_flops(compares)
        .prepare_with([in_n](Maxpool2dForward<double>& a) {
          for (int64_t i = 0; i < in_n; ++i) harness::writable(a.inp)[i] = tied(1, i);
        });
    // A NaN in every seventh input: it wins where it comes first in its window, never after.
    forward.add(shape_name(s) + "_nan", [g](auto& a) { a.g = g; })
        .prepare_with([in_n](Maxpool2dForward<double>& a) {
          for (int64_t i = 0; i < in_n; ++i) {
            harness::writable(a.inp)[i] = i % 7 == 3 ? std::numeric_limits<double>::quiet_NaN() : tied(2, i);
          }
        });
    // The argmax of a forward pass on a tied input, so that the scatter targets are real.
    backward.add(shape_name(s), [g](auto& a) { a.g = g; })
        .tol(harness::kElementwise)
        .prepare_with([g, in_n](Maxpool2dBackward<double>& a) {
          std::vector<double> inp(static_cast<size_t>(in_n)),
              out(static_cast<size_t>(int64_t(g.N) * g.HO * g.WO * g.C));
          for (int64_t i = 0; i < in_n; ++i) inp[size_t(i)] = tied(3, i);
          Maxpool2dForward<double> f;
          f.out = out.data(), f.argmax = harness::writable(a.argmax), f.inp = inp.data(), f.g = g;
          naive::maxpool2d_forward(f);
        });
  }
  Cases<GlobalAvgpoolForward> avg_forward;
  Cases<GlobalAvgpoolBackward> avg_backward;
  struct Sizes {
    int64_t N, S, C;
  };
  // S = H*W or T*H*W; one element, odd sizes, a long S.
  for (Sizes z : {Sizes{1, 1, 1}, Sizes{3, 7, 5}, Sizes{2, 20 * 5 * 5, 16}, Sizes{4, 1000, 3},
                  Sizes{1, 65537, 2}, Sizes{40, 256, 33}}) {
    const std::string name =
        "N" + std::to_string(z.N) + "_S" + std::to_string(z.S) + "_C" + std::to_string(z.C);
    // Both sum in double: only the final rounding to float differs from the reference.
    avg_forward.add(name, [z](auto& a) { a.N = z.N, a.S = z.S, a.C = z.C; })
        .tol(harness::kElementwise)
        .with_flops(double(z.N * z.S * z.C));
    avg_backward.add(name, [z](auto& a) { a.N = z.N, a.S = z.S, a.C = z.C; })
        .tol(harness::kElementwise)
        .with_flops(double(z.N * z.S * z.C));
  }
  return harness::add_cases(forward) && harness::add_cases(backward) && harness::add_cases(avg_forward) &&
         harness::add_cases(avg_backward);
}();

}  // namespace
}  // namespace hisvid
