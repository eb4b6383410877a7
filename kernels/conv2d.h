// kernels/conv2d.h — 2-D convolution, channels-last, Keras semantics (cross-correlation,
// kernel (KH,KW,C,F), stride, padding valid/same with TensorFlow's split of the padding).
//
// Rows: the naive loop nest (the definition); on the CPU im2col + GEMM or direct loops (see
// Conv2dAlgorithm below); on CUDA cuDNN (NHWC) or hand-written direct kernels, whichever the lab
// measured faster for the geometry.
#pragma once

#include <cstdint>

#include "kernels/common.h"

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid {

// Everything that fixes the arithmetic of one convolution.
//
// Groups (Keras's `groups`, cuDNN's group count): the C input and F output channels fall into G
// groups of C/G and F/G consecutive channels, and output channel f reads only the input
// channels of its group, f / (F/G). The kernel then holds C/G input channels, (KH,KW,C/G,F):
// weight[kh][kw][c][f] multiplies input channel (f / (F/G)) * (C/G) + c. G = 1 is the ordinary
// convolution; the ConvLSTM's recurrent convolution with dropout masks is G = 4 (one group per
// gate, engine/ops_nn.cpp).
struct Conv2dGeometry {
  int N, H, W, C;  // input (N,H,W,C); N counts images (batch * time under TimeDistributed)
  int F, KH, KW;   // kernel (KH,KW,C/G,F)
  int SH, SW;      // strides
  int HO, WO;      // output (N,HO,WO,F)
  int pad_top, pad_left;
  int G = 1;  // groups; divides C and F

  HISVID_HD int group_channels() const { return C / G; }  // C/G: input channels per group
  HISVID_HD int group_filters() const { return F / G; }   // F/G: output channels per group
};

// Output size and padding of a Keras Conv2D; HO or WO <= 0 means the input is too small.
HISVID_HD Conv2dGeometry conv2d_geometry(int N, int H, int W, int C, int F, int KH, int KW, int SH, int SW,
                                         Padding padding, int groups = 1) {
  const Window1d h = window_1d(H, KH, SH, padding), w = window_1d(W, KW, SW, padding);
  return Conv2dGeometry{N, H, W, C, F, KH, KW, SH, SW, h.out, w.out, h.pad_before, w.pad_before, groups};
}

// Whether every row can run g: positive extents, strides and output, padding >= 0, and channel
// counts that split into the groups.
HISVID_HD bool conv2d_geometry_valid(const Conv2dGeometry& g) {
  return g.N >= 0 && g.H >= 1 && g.W >= 1 && g.C >= 1 && g.F >= 1 && g.KH >= 1 && g.KW >= 1 && g.SH >= 1 &&
         g.SW >= 1 && g.HO >= 1 && g.WO >= 1 && g.pad_top >= 0 && g.pad_left >= 0 && g.G >= 1 &&
         g.C % g.G == 0 && g.F % g.G == 0;
}

// One output value of the convolution, the definition: bias[f] (0 when bias is null) plus the
// products of the window under (ho, wo) in (kh, kw, c) order over f's group of input channels,
// the padding skipped. With parts > 1, only the channels c = part, part + parts, ... of each
// tap (and the bias in part 0): the parts, summed, are the value (rows that split one output's
// sum over several threads).
template <typename T>
HISVID_HD T conv2d_at(const T* inp, const T* weight, const T* bias, const Conv2dGeometry& g, int64_t n,
                      int ho, int wo, int f, int part = 0, int parts = 1) {
  const int CG = g.group_channels(), c0 = f / g.group_filters() * CG;  // f's group of input channels
  T sum = bias != nullptr && part == 0 ? bias[f] : T(0);
  for (int kh = 0; kh < g.KH; ++kh) {
    const int ih = ho * g.SH - g.pad_top + kh;
    if (ih < 0 || ih >= g.H) continue;
    for (int kw = 0; kw < g.KW; ++kw) {
      const int iw = wo * g.SW - g.pad_left + kw;
      if (iw < 0 || iw >= g.W) continue;
      const T* x = inp + ((n * g.H + ih) * g.W + iw) * g.C + c0;
      const T* w = weight + (int64_t(kh) * g.KW + kw) * CG * g.F + f;
      for (int c = part; c < CG; c += parts) sum += x[c] * w[int64_t(c) * g.F];
    }
  }
  return sum;
}

// One element of the input's gradient, gathered: the sum over the taps (kh, kw) whose output
// pixel (ho, wo) reads input pixel (h, w), and over the filters f of c's group, of
// dout[n,ho,wo,f] * weight[kh,kw,c mod C/G,f]. The same sums as the naive backward-data loops,
// for rows that need one element at a time. With parts > 1, only the filters part, part + parts,
// ... of c's group (counted from the group's first), as conv2d_at's parts.
template <typename T>
HISVID_HD T conv2d_input_grad_at(const T* dout, const T* weight, const Conv2dGeometry& g, int64_t n, int h,
                                 int w, int c, int part = 0, int parts = 1) {
  const int CG = g.group_channels(), FG = g.group_filters(), f0 = c / CG * FG;
  T sum = T(0);
  for (int kh = 0; kh < g.KH; ++kh) {
    const int th = h + g.pad_top - kh;
    if (th < 0 || th % g.SH != 0 || th / g.SH >= g.HO) continue;
    for (int kw = 0; kw < g.KW; ++kw) {
      const int tw = w + g.pad_left - kw;
      if (tw < 0 || tw % g.SW != 0 || tw / g.SW >= g.WO) continue;
      const T* d = dout + ((n * g.HO + th / g.SH) * g.WO + tw / g.SW) * g.F;
      const T* k = weight + ((int64_t(kh) * g.KW + kw) * CG + c % CG) * g.F;
      for (int f = f0 + part; f < f0 + FG; f += parts) sum += d[f] * k[f];
    }
  }
  return sum;
}

// out (N,HO,WO,F) = conv(inp (N,H,W,C), weight (KH,KW,C/G,F)) + bias (F); bias may be null.
template <typename T>
struct Conv2dForward {
  static constexpr const char* kName = "conv2d_forward";
  T* out = nullptr;
  const T* inp = nullptr;
  const T* weight = nullptr;
  const T* bias = nullptr;
  Conv2dGeometry g{};
  template <typename V>
  void buffers(V& v) {
    v.out("out", out, int64_t(g.N) * g.HO * g.WO * g.F);
    v.in("inp", inp, int64_t(g.N) * g.H * g.W * g.C);
    v.in("weight", weight, int64_t(g.KH) * g.KW * g.group_channels() * g.F);
    v.in("bias", bias, g.F);
  }
};

// dinp (N,H,W,C) (=) from dout (N,HO,WO,F) and weight (KH,KW,C/G,F).
template <typename T>
struct Conv2dBackwardData {
  static constexpr const char* kName = "conv2d_backward_data";
  T* dinp = nullptr;
  const T* dout = nullptr;
  const T* weight = nullptr;
  Conv2dGeometry g{};
  template <typename V>
  void buffers(V& v) {
    v.out("dinp", dinp, int64_t(g.N) * g.H * g.W * g.C);
    v.in("dout", dout, int64_t(g.N) * g.HO * g.WO * g.F);
    v.in("weight", weight, int64_t(g.KH) * g.KW * g.group_channels() * g.F);
  }
};

// dweight (KH,KW,C/G,F) (+=) and dbias (F) (+=, may be null) from dout (N,HO,WO,F), inp (N,H,W,C).
template <typename T>
struct Conv2dBackwardFilter {
  static constexpr const char* kName = "conv2d_backward_filter";
  T* dweight = nullptr;
  T* dbias = nullptr;
  const T* dout = nullptr;
  const T* inp = nullptr;
  Conv2dGeometry g{};
  template <typename V>
  void buffers(V& v) {
    v.inout("dweight", dweight, int64_t(g.KH) * g.KW * g.group_channels() * g.F);
    v.inout("dbias", dbias, g.F);
    v.in("dout", dout, int64_t(g.N) * g.HO * g.WO * g.F);
    v.in("inp", inp, int64_t(g.N) * g.H * g.W * g.C);
  }
};

}  // namespace hisvid

// The definition: one loop nest per pass, float and double.
namespace hisvid::naive {

template <typename T>
void conv2d_forward(const Conv2dForward<T>& k);
template <typename T>
void conv2d_backward_data(const Conv2dBackwardData<T>& k);
template <typename T>
void conv2d_backward_filter(const Conv2dBackwardFilter<T>& k);

}  // namespace hisvid::naive

// The CPU computes a convolution one of two ways: im2col + one OpenBLAS GEMM per chunk of
// images (large patches: the GEMM's register blocking wins), or a direct loop nest vectorised
// over the filters (small patches such as the 3 -> 16 first layer, where im2col copies 27
// values per pixel for a GEMM too thin to be efficient), with AVX2 + FMA intrinsics where the
// processor has them (kernels/conv2d_avx2.h), in AVX-512 where it has that too
// (kernels/conv2d_avx512.h). The default row picks per pass and shape
// (conv2d_cpu_algorithm); the fixed-algorithm rows are there for the harness and the lab.
// With groups (G > 1) the AVX2 and AVX-512 kernels (cpu.avx2, cpu.avx512, and cpu where it picks
// them) run every group in place, each group's filters reading its channels; the other rows run
// one group at a time through their G = 1 code, over copies of the group's channels.
namespace hisvid::cpu {

enum class Conv2dAlgorithm { Gemm, Direct };
enum class Conv2dPass { Forward, BackwardData, BackwardFilter };
// What the default row runs for this shape and pass on this processor.
Conv2dAlgorithm conv2d_cpu_algorithm(const Conv2dGeometry& g, Conv2dPass pass);

// Default rows (float).
void conv2d_forward(const Conv2dForward<float>& k);
void conv2d_backward_data(const Conv2dBackwardData<float>& k);
void conv2d_backward_filter(const Conv2dBackwardFilter<float>& k);
// Fixed algorithms: im2col + GEMM; the portable direct loops; the AVX2 direct kernels
// (processors with AVX2 and FMA only).
void conv2d_forward_gemm(const Conv2dForward<float>& k);
void conv2d_backward_data_gemm(const Conv2dBackwardData<float>& k);
void conv2d_backward_filter_gemm(const Conv2dBackwardFilter<float>& k);
void conv2d_forward_direct(const Conv2dForward<float>& k);
void conv2d_backward_data_direct(const Conv2dBackwardData<float>& k);
void conv2d_backward_filter_direct(const Conv2dBackwardFilter<float>& k);
void conv2d_forward_avx2(const Conv2dForward<float>& k);
void conv2d_backward_data_avx2(const Conv2dBackwardData<float>& k);  // stride 1; others run direct
void conv2d_backward_filter_avx2(const Conv2dBackwardFilter<float>& k);
// The AVX2 rows' loops over vectors of 16 filters, with the same bits (processors with AVX-512F
// only; the default row's direct choice where the processor has it).
void conv2d_forward_avx512(const Conv2dForward<float>& k);
void conv2d_backward_data_avx512(const Conv2dBackwardData<float>& k);  // stride 1; others run direct
void conv2d_backward_filter_avx512(const Conv2dBackwardFilter<float>& k);
// Where the direct and AVX2 rows run their own loops: at most 256 filters per group (one
// pixel's sums on the stack; GEMM elsewhere), and for the AVX2 backward data stride 1 (the
// portable direct loops elsewhere).
bool conv2d_direct_applies(const Conv2dGeometry& g);
bool conv2d_backward_data_avx2_applies(const Conv2dGeometry& g);
// Where the AVX-512 rows run their own loops: the AVX2 rows' shapes with more than 8 filters per
// group (backward data: input channels per group); they hand the others to the AVX2 rows.
bool conv2d_avx512_applies(const Conv2dGeometry& g);
bool conv2d_backward_data_avx512_applies(const Conv2dGeometry& g);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

// The default rows: each pass runs the direct kernels below where the lab measured them faster
// than cuDNN (small work on their tiled path), else the timed choice (see "which implementation
// runs" in conv2d.cu). Both paths take groups: cuDNN through its group count, the direct kernels
// with tiles of filters that stay within one group. The environment variable HISVID_CUDA_CONV
// changes the choice for every convolution: `rule` the fixed rule without timing, `timed` the
// timed choice everywhere, `cudnn`, `cudnn_nchw` or `direct_v1` one path (to measure one against the other in
// the same run), `direct_v2` the direct path with version 2's kernels (version
// 1's filter gradient where version 2's does not apply); unset or `auto`, as above.
void conv2d_forward(const Conv2dForward<float>& k, cudaStream_t stream);
void conv2d_backward_data(const Conv2dBackwardData<float>& k, cudaStream_t stream);
void conv2d_backward_filter(const Conv2dBackwardFilter<float>& k, cudaStream_t stream);

// The timed choice: at a geometry's first call outside a graph capture, the direct kernels and
// cuDNN's first few algorithms (in NHWC, and on NCHW copies) are timed with CUDA events on the
// call's own buffers (scratch for the accumulated filter gradient); the fastest is kept for that
// geometry and pass.
void conv2d_forward_timed(const Conv2dForward<float>& k, cudaStream_t stream);
void conv2d_backward_data_timed(const Conv2dBackwardData<float>& k, cudaStream_t stream);
void conv2d_backward_filter_timed(const Conv2dBackwardFilter<float>& k, cudaStream_t stream);

// cuDNN (NHWC), legacy convolution API.
void conv2d_forward_cudnn(const Conv2dForward<float>& k, cudaStream_t stream);
void conv2d_backward_data_cudnn(const Conv2dBackwardData<float>& k, cudaStream_t stream);
void conv2d_backward_filter_cudnn(const Conv2dBackwardFilter<float>& k, cudaStream_t stream);
// cuDNN on NCHW copies of the activations and gradients (and an (F,C/G,KH,KW) filter), made in the
// workspace around each call, as TensorFlow runs FP32 convolutions; heuristic-first algorithm.
void conv2d_forward_cudnn_nchw(const Conv2dForward<float>& k, cudaStream_t stream);
void conv2d_backward_data_cudnn_nchw(const Conv2dBackwardData<float>& k, cudaStream_t stream);
void conv2d_backward_filter_cudnn_nchw(const Conv2dBackwardFilter<float>& k, cudaStream_t stream);

// Version 1 of hand-written direct convolutions (kernels/conv2d_direct.cu), every geometry.
void conv2d_forward_direct_v1(const Conv2dForward<float>& k, cudaStream_t stream);
void conv2d_backward_data_direct_v1(const Conv2dBackwardData<float>& k, cudaStream_t stream);
void conv2d_backward_filter_direct_v1(const Conv2dBackwardFilter<float>& k, cudaStream_t stream);
// Whether the forward pass of g runs the shared-memory tiled kernel (else one thread per output).
bool conv2d_direct_v1_tiles(const Conv2dGeometry& g);
// Version 2 (kernels/conv2d_direct.cu): the strips kernel of kernels/conv2d_tiled.cuh (16x16
// tiles, 4 x 4 sums per thread) for 3x3 kernels at stride 1 (backward data: its transposed
// convolution); version 1 for every other geometry. Backward filter:
void conv2d_forward_direct_v2(const Conv2dForward<float>& k, cudaStream_t stream);
void conv2d_backward_data_direct_v2(const Conv2dBackwardData<float>& k, cudaStream_t stream);
// One block per chunk of positions and group computing the group's whole (R+1) x F/G result (the
// bias as row R), for layers with R = KH*KW*C/G < 256, F/G <= 64 and at most 256 4x4 tiles of it;
// version 1 elsewhere.
void conv2d_backward_filter_direct_v2(const Conv2dBackwardFilter<float>& k, cudaStream_t stream);
// Where version 2's kernels apply: the strips kernel (3x3, stride 1), the small-result filter
// gradient (R = KH*KW*C/G < 256, F/G <= 64, at most 256 of its 4x4 tiles per group).
bool conv2d_strips_apply(const Conv2dGeometry& g);
bool conv2d_backward_data_strips_apply(const Conv2dGeometry& g);
bool conv2d_filter_small_applies(const Conv2dGeometry& g);
// Small outputs: S lanes of a warp per output element, splitting its channels (backward data:
// its filters), every geometry (kernels/conv2d_direct.cu).
void conv2d_forward_lanes(const Conv2dForward<float>& k, cudaStream_t stream);
// The whole kernel in constant memory, each thread every filter of one output pixel (backward
// data: of one input pixel, stride 1, through the flipped kernel), for one group of F in
// {8, 16, 32, 64} filters and at most 8192 weights (kernels/conv2d_direct.cu); version 1
// elsewhere.
void conv2d_forward_const(const Conv2dForward<float>& k, cudaStream_t stream);
void conv2d_backward_data_const(const Conv2dBackwardData<float>& k, cudaStream_t stream);
bool conv2d_const_applies(const Conv2dGeometry& g);
bool conv2d_backward_data_const_applies(const Conv2dGeometry& g);
void conv2d_backward_data_lanes(const Conv2dBackwardData<float>& k, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
