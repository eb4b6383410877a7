// kernels/conv2d_table.cpp — the rows of the convolution kernels and their harness cases.
#include <iterator>
#include <string>
#include <vector>

#include "kernels/conv2d.h"
#include "kernels/conv2d_avx2.h"
#include "kernels/conv2d_avx512.h"
#include "kernels/harness.h"

namespace hisvid {
namespace {

using harness::Cases;

// A predicate of the geometry as one of a row's arguments (Implementation::where).
template <bool (*Applies)(const Conv2dGeometry&), typename Args>
bool on_geometry(const Args& k) {
  return Applies(k.g);
}

const bool rows =
    register_rows(host_row<naive::conv2d_forward<float>>(Backend::Naive, "naive"),
                  host_row<naive::conv2d_forward<double>>(Backend::Naive, "naive"),
                  host_row<naive::conv2d_backward_data<float>>(Backend::Naive, "naive"),
                  host_row<naive::conv2d_backward_data<double>>(Backend::Naive, "naive"),
                  host_row<naive::conv2d_backward_filter<float>>(Backend::Naive, "naive"),
                  host_row<naive::conv2d_backward_filter<double>>(Backend::Naive, "naive"),
                  host_row<cpu::conv2d_forward>(Backend::Cpu, "cpu"),
                  host_row<cpu::conv2d_backward_data>(Backend::Cpu, "cpu"),
                  host_row<cpu::conv2d_backward_filter>(Backend::Cpu, "cpu"),
                  host_row<cpu::conv2d_forward_gemm>(Backend::Cpu, "cpu.gemm", Role::Alternative),
                  host_row<cpu::conv2d_backward_data_gemm>(Backend::Cpu, "cpu.gemm", Role::Alternative),
                  host_row<cpu::conv2d_backward_filter_gemm>(Backend::Cpu, "cpu.gemm", Role::Alternative),
                  host_row<cpu::conv2d_forward_direct>(Backend::Cpu, "cpu.direct", Role::Alternative)
                      .where(on_geometry<cpu::conv2d_direct_applies>),
                  host_row<cpu::conv2d_backward_data_direct>(Backend::Cpu, "cpu.direct", Role::Alternative)
                      .where(on_geometry<cpu::conv2d_direct_applies>),
                  host_row<cpu::conv2d_backward_filter_direct>(Backend::Cpu, "cpu.direct", Role::Alternative)
                      .where(on_geometry<cpu::conv2d_direct_applies>));

// The AVX2 rows exist on processors that can run them.
const bool avx2_rows =
    !cpu::avx2::available() ||
    register_rows(host_row<cpu::conv2d_forward_avx2>(Backend::Cpu, "cpu.avx2", Role::Alternative)
                      .where(on_geometry<cpu::conv2d_direct_applies>),
                  host_row<cpu::conv2d_backward_data_avx2>(Backend::Cpu, "cpu.avx2", Role::Alternative)
                      .where(on_geometry<cpu::conv2d_backward_data_avx2_applies>),
                  host_row<cpu::conv2d_backward_filter_avx2>(Backend::Cpu, "cpu.avx2", Role::Alternative)
                      .where(on_geometry<cpu::conv2d_direct_applies>));
const bool avx512_rows =
    !cpu::avx512::available() ||
    register_rows(host_row<cpu::conv2d_forward_avx512>(Backend::Cpu, "cpu.avx512", Role::Alternative)
                      .where(on_geometry<cpu::conv2d_avx512_applies>),
                  host_row<cpu::conv2d_backward_data_avx512>(Backend::Cpu, "cpu.avx512", Role::Alternative)
                      .where(on_geometry<cpu::conv2d_backward_data_avx512_applies>),
                  host_row<cpu::conv2d_backward_filter_avx512>(Backend::Cpu, "cpu.avx512", Role::Alternative)
                      .where(on_geometry<cpu::conv2d_avx512_applies>));

#ifdef HISVID_WITH_CUDA
const bool cuda_rows =
    register_rows(cuda_row<cuda::conv2d_forward>("cuda"), cuda_row<cuda::conv2d_backward_data>("cuda"),
                  cuda_row<cuda::conv2d_backward_filter>("cuda"),
                  cuda_row<cuda::conv2d_forward_cudnn>("cuda.cudnn", Role::Alternative),
                  cuda_row<cuda::conv2d_backward_data_cudnn>("cuda.cudnn", Role::Alternative),
                  cuda_row<cuda::conv2d_backward_filter_cudnn>("cuda.cudnn", Role::Alternative),
                  cuda_row<cuda::conv2d_forward_cudnn_nchw>("cuda.cudnn_nchw", Role::Alternative),
                  cuda_row<cuda::conv2d_backward_data_cudnn_nchw>("cuda.cudnn_nchw", Role::Alternative),
                  cuda_row<cuda::conv2d_backward_filter_cudnn_nchw>("cuda.cudnn_nchw", Role::Alternative),
                  cuda_row<cuda::conv2d_forward_direct_v1>("cuda.direct_v1", Role::Alternative),
                  cuda_row<cuda::conv2d_backward_data_direct_v1>("cuda.direct_v1", Role::Alternative),
                  cuda_row<cuda::conv2d_backward_filter_direct_v1>("cuda.direct_v1", Role::Alternative),
                  cuda_row<cuda::conv2d_forward_direct_v2>("cuda.direct_v2", Role::Alternative)
                      .where(on_geometry<cuda::conv2d_strips_apply>),
                  cuda_row<cuda::conv2d_backward_data_direct_v2>("cuda.direct_v2", Role::Alternative)
                      .where(on_geometry<cuda::conv2d_backward_data_strips_apply>),
                  cuda_row<cuda::conv2d_backward_filter_direct_v2>("cuda.direct_v2", Role::Alternative)
                      .where(on_geometry<cuda::conv2d_filter_small_applies>),
                  cuda_row<cuda::conv2d_forward_lanes>("cuda.lanes", Role::Alternative),
                  cuda_row<cuda::conv2d_backward_data_lanes>("cuda.lanes", Role::Alternative),
                  cuda_row<cuda::conv2d_forward_const>("cuda.const", Role::Alternative)
                      .where(on_geometry<cuda::conv2d_const_applies>),
                  cuda_row<cuda::conv2d_backward_data_const>("cuda.const", Role::Alternative)
                      .where(on_geometry<cuda::conv2d_backward_data_const_applies>),
                  cuda_row<cuda::conv2d_forward_timed>("cuda.timed", Role::Alternative),
                  cuda_row<cuda::conv2d_backward_data_timed>("cuda.timed", Role::Alternative),
                  cuda_row<cuda::conv2d_backward_filter_timed>("cuda.timed", Role::Alternative));
#endif

struct Shape {
  int N, H, W, C, F, KH, KW, SH, SW;
  Padding padding;
  bool bias;
  const char* why;
  int G = 1;  // groups
};

// clang-format off
const Shape kShapes[] = {
    {1, 5, 7, 3, 4, 3, 3, 1, 1, Padding::Same, true, "symmetric padding, batch 1"},
    {2, 8, 8, 3, 16, 3, 3, 2, 2, Padding::Same, true, "stride 2: padding 0 above, 1 below"},
    {3, 9, 6, 5, 7, 2, 2, 1, 1, Padding::Same, false, "even kernel: 0 above, 1 below; no bias"},
    {2, 10, 11, 4, 6, 3, 5, 2, 3, Padding::Valid, true, "valid, unequal strides, unused rows"},
    {1, 13, 13, 2, 5, 4, 4, 3, 3, Padding::Same, true, "padding 1 above, 2 below"},
    {2, 1, 1, 2, 3, 1, 1, 1, 1, Padding::Valid, true, "1x1 image and kernel"},
    {1, 6, 5, 1, 1, 3, 3, 1, 1, Padding::Same, true, "C = F = 1"},
    {2, 7, 7, 33, 17, 3, 3, 1, 1, Padding::Same, true, "odd channel counts"},
    {2, 64, 64, 3, 16, 3, 3, 1, 1, Padding::Same, true, "the LRCN's first layer"},
    {4, 32, 32, 16, 32, 3, 3, 1, 1, Padding::Same, true, "the LRCN's second layer"},
    {1, 11, 12, 33, 5, 5, 5, 2, 2, Padding::Same, true, "channels in 3 chunks of the direct CUDA kernel"},
    {2, 7, 6, 3, 4, 1, 1, 2, 2, Padding::Same, true, "stride > kernel: no padding at all"},
    {3, 6, 6, 8, 5, 1, 1, 1, 1, Padding::Valid, true, "pointwise: no im2col"},
    {1, 40, 40, 2, 3, 40, 40, 1, 1, Padding::Valid, true, "too large for the direct CUDA kernel's tiles"},
    {2, 5, 5, 2, 2, 1, 1, 2, 2, Padding::Valid, true, "1x1 kernel with stride: not pointwise"},
    {3, 1, 1, 4, 2, 3, 3, 1, 1, Padding::Same, true, "1x1 image, 3x3 kernel (the LRCN's last pool)"},
    {3, 64, 64, 16, 2, 3, 3, 1, 1, Padding::Same, true, "one image per im2col chunk"},
    {17, 32, 32, 8, 4, 3, 3, 1, 1, Padding::Same, true, "several images per im2col chunk, a short last one"},
    {1, 5, 5, 1, 1, 5, 5, 1, 1, Padding::Same, true, "kernel as large as the image"},
    {1, 3, 2, 3, 4, 4, 4, 3, 3, Padding::Same, true, "kernel larger than the image"},
    {3, 7, 6, 4, 5, 3, 3, 1, 1, Padding::Same, true, "AVX2: F not a multiple of 8"},
    {1, 8, 9, 5, 13, 3, 2, 1, 1, Padding::Valid, true, "AVX2: two vectors of filters, the last masked"},
    {2, 10, 7, 2, 24, 3, 3, 2, 2, Padding::Same, true, "AVX2 with strides (backward data runs direct)"},
    {1, 3, 3, 6, 8, 3, 3, 1, 1, Padding::Same, true, "AVX2: narrower than one pixel tile"},
    {4, 13, 13, 14, 56, 3, 3, 1, 1, Padding::Same, true, "a ConvLSTM recurrent convolution"},
    {2, 7, 6, 8, 12, 3, 3, 1, 1, Padding::Same, true, "2 groups", 2},
    {1, 9, 8, 6, 9, 3, 2, 2, 2, Padding::Valid, false, "3 groups, strides (plain backward data), odd groups", 3},
    {2, 6, 7, 20, 20, 3, 3, 1, 1, Padding::Same, false, "4 groups of 5: a masked ConvLSTM(5) recurrence", 4},
    {1, 10, 9, 6, 40, 3, 3, 1, 1, Padding::Same, true, "2 groups of 20 filters: a short second tile of 16", 2},
    {1, 6, 6, 4, 70, 3, 3, 1, 1, Padding::Same, true, "2 groups of 35 filters: short column tiles of 32", 2},
    {1, 40, 40, 4, 2, 40, 40, 1, 1, Padding::Valid, true, "groups with a kernel too large for the tiles", 2},
    {3, 5, 5, 4, 4, 3, 3, 1, 1, Padding::Same, true, "one channel and one filter per group", 4},
    {3, 9, 11, 8, 8, 3, 3, 1, 1, Padding::Valid, true, "the CUDA const kernel both ways: 8 channels, 8 filters"},
    {2, 7, 5, 16, 64, 2, 3, 1, 1, Padding::Same, false, "the CUDA const kernel's most filters, an even kernel"},
    {2, 7, 8, 40, 12, 3, 3, 1, 1, Padding::Same, true, "2 groups of 20 channels: AVX2 backward data's 16 + 4 in a group", 2},
    {2, 7, 9, 12, 36, 2, 4, 1, 1, Padding::Same, true, "3 groups, even kernel: grouped AVX2 backward data, uneven padding", 3},
    {2, 9, 9, 8, 32, 3, 3, 1, 1, Padding::Same, false, "2 groups of 16 filters: rows of 9 in AVX2 tiles of 5, two full vectors", 2},
    {2, 3, 1, 5, 20, 3, 3, 1, 1, Padding::Same, true, "rows of one pixel, 20 filters: AVX-512 tiles of 1 pixel, 2 vectors"},
    {2, 12, 12, 5, 13, 3, 3, 1, 1, Padding::Same, true, "AVX-512: one full 12-pixel tile; kernel rows of 15 values as 8 + 7"},
    {2, 11, 13, 6, 24, 3, 3, 2, 1, Padding::Same, true, "AVX-512 with unequal strides, 24 filters"},
    {1, 9, 10, 8, 36, 3, 3, 2, 2, Padding::Valid, true, "2 groups of 18 filters with strides", 2},
    {1, 5, 6, 50, 12, 3, 3, 1, 1, Padding::Same, false, "50 channels: AVX-512 backward data's 4th vector masked"},
};
// clang-format on

// The convolutions of the seeds' LRCN and ConvLSTM at training batch 4: 4 x 20 frames, or 4 clips
// for one recurrent step of a ConvLSTM (the lab times these; the thresholds of
// conv2d_cpu_algorithm come from them).
// clang-format off
const Shape kSeedShapes[] = {
    {17, 31, 31, 3, 16, 3, 3, 1, 1, Padding::Same, true, "positions not a multiple of 16: chunks of several stagings, the last short"},
    {80, 64, 64, 3, 16, 3, 3, 1, 1, Padding::Same, true, "seed_lrcn_conv1"},
    {80, 16, 16, 16, 32, 3, 3, 1, 1, Padding::Same, true, "seed_lrcn_conv2"},
    {80, 4, 4, 32, 64, 3, 3, 1, 1, Padding::Same, true, "seed_lrcn_conv3"},
    {80, 2, 2, 64, 64, 3, 3, 1, 1, Padding::Same, true, "seed_lrcn_conv4"},
    {80, 64, 64, 3, 16, 3, 3, 1, 1, Padding::Valid, true, "seed_convlstm1_input"},
    {4, 62, 62, 4, 16, 3, 3, 1, 1, Padding::Same, false, "seed_convlstm1_recurrent"},
    {80, 31, 31, 4, 32, 3, 3, 1, 1, Padding::Valid, true, "seed_convlstm2_input"},
    {4, 29, 29, 8, 32, 3, 3, 1, 1, Padding::Same, false, "seed_convlstm2_recurrent"},
    {80, 15, 15, 8, 56, 3, 3, 1, 1, Padding::Valid, true, "seed_convlstm3_input"},
    {4, 13, 13, 14, 56, 3, 3, 1, 1, Padding::Same, false, "seed_convlstm3_recurrent"},
    {80, 7, 7, 14, 64, 3, 3, 1, 1, Padding::Valid, true, "seed_convlstm4_input"},
    {4, 5, 5, 16, 64, 3, 3, 1, 1, Padding::Same, false, "seed_convlstm4_recurrent"},
    // With recurrent dropout (training): the 4 gates' masked states as one convolution of 4 groups.
    {4, 62, 62, 16, 16, 3, 3, 1, 1, Padding::Same, false, "seed_convlstm1_recurrent_masked", 4},
    {4, 29, 29, 32, 32, 3, 3, 1, 1, Padding::Same, false, "seed_convlstm2_recurrent_masked", 4},
    {4, 13, 13, 56, 56, 3, 3, 1, 1, Padding::Same, false, "seed_convlstm3_recurrent_masked", 4},
    {4, 5, 5, 64, 64, 3, 3, 1, 1, Padding::Same, false, "seed_convlstm4_recurrent_masked", 4},
};
// clang-format on

std::string shape_name(const Shape& s) {
  if (std::string(s.why).rfind("seed_", 0) == 0) return s.why;
  return "N" + std::to_string(s.N) + "_H" + std::to_string(s.H) + "_W" + std::to_string(s.W) + "_C" +
         std::to_string(s.C) + "_F" + std::to_string(s.F) + "_K" + std::to_string(s.KH) + "x" +
         std::to_string(s.KW) + "_S" + std::to_string(s.SH) + "x" + std::to_string(s.SW) +
         (s.padding == Padding::Same ? "_same" : "_valid") + (s.bias ? "_bias" : "") +
         (s.G > 1 ? "_G" + std::to_string(s.G) : "");
}

const bool cases = [] {
  Cases<Conv2dForward> forward;
  Cases<Conv2dBackwardData> backward_data;
  Cases<Conv2dBackwardFilter> backward_filter;
  std::vector<Shape> shapes(std::begin(kShapes), std::end(kShapes));
  shapes.insert(shapes.end(), std::begin(kSeedShapes), std::end(kSeedShapes));
  for (const Shape& s : shapes) {
    const Conv2dGeometry g = conv2d_geometry(s.N, s.H, s.W, s.C, s.F, s.KH, s.KW, s.SH, s.SW, s.padding, s.G);
    const int64_t outputs = int64_t(g.N) * g.HO * g.WO * g.F;
    const double flops = 2.0 * double(outputs) * g.KH * g.KW * g.group_channels();
    const bool bias = s.bias;
    forward
        .add(shape_name(s),
             [g, bias](auto& a) {
               a.g = g;
               if (!bias) a.bias = nullptr;
             })
        .tol(harness::sum_tolerance(int64_t(g.KH) * g.KW * g.group_channels() + 1))
        .tol_cuda(harness::conv_tolerance(int64_t(g.KH) * g.KW * g.group_channels() + 1))
        .with_flops(flops);
    backward_data.add(shape_name(s), [g](auto& a) { a.g = g; })
        .tol(harness::sum_tolerance(int64_t(g.KH) * g.KW * g.group_filters()))
        .tol_cuda(harness::conv_tolerance(int64_t(g.KH) * g.KW * g.group_filters()))
        .with_flops(flops);
    const int64_t positions = int64_t(g.N) * g.HO * g.WO;
    backward_filter
        .add(shape_name(s),
             [g, bias](auto& a) {
               a.g = g;
               if (!bias) a.dbias = nullptr;
             })
        .tol(harness::sum_tolerance(positions + 1))
        .tol_cuda(harness::conv_tolerance(positions + 1))
        .tol("dbias", harness::sum_tolerance(positions + 1))
        .with_flops(flops);
  }
  return harness::add_cases(forward) && harness::add_cases(backward_data) &&
         harness::add_cases(backward_filter);
}();

}  // namespace
}  // namespace hisvid
