// kernels/conv2d_direct.cu — version 1 of hand-written direct convolutions (no cuDNN), the
// three passes: rows `cuda.direct_v1` of Conv2dForward, Conv2dBackwardData and
// Conv2dBackwardFilter (kernels/conv2d_table.cpp). The harness checks them against the naive
// loops and times them beside cuDNN; cuda::conv2d_* (kernels/conv2d.cu) runs them where the
// lab measured them faster (see direct_v1_suits there).
//
// Forward. The tiled kernel of kernels/conv2d_tiled.cuh (8x8 output pixels x 16 filters per
// block, the input window and weights of a chunk of channels in shared memory). When not even
// one channel fits (kernels of several dozen pixels a side), a plain kernel without shared
// memory, one thread per output element, computes the same sums. Version 2 (rows
// `cuda.direct_v2`): the strips kernel of the same header for 3x3 stride-1 convolutions (and
// backward data through it), and for backward filter the small-result kernel below.
//
// Backward data. With stride 1 the gradient of the input is itself a forward convolution: of
// dout (N,HO,WO,F) with the kernel flipped in both spatial axes and its channel axes swapped,
// (KH,KW,F,C), padded by KH-1-pad_top above and KW-1-pad_left on the left. The flipped kernel
// goes to the workspace and the forward kernels above compute the rest. Other strides: one
// thread per input element, summing over the output pixels that read it.
//
// Backward filter. dweight (KH*KW*C, F) = im2col(inp)^T (KH*KW*C, M) x dout (M, F), M =
// N*HO*WO, a product with a long inner dimension and a small result. Split-M: each block
// computes a 32x32 tile of the result over one chunk of M (staging 32 rows of both operands
// in shared memory at a time, each thread 2x2 results), into a partial of the workspace;
// a second kernel adds the chunks' partials in chunk order into dweight. Two passes rather
// than atomics: the sum is the same on every run.
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/conv2d.h"
#include "kernels/conv2d_tiled.cuh"
#include "kernels/cuda_context.h"
#include "kernels/elementwise.h"

namespace hisvid::cuda {

namespace {

using tiled::tiled_channels;

// The same convolution without shared memory, one thread per output element (N,HO,WO,F).
__global__ void conv2d_direct_plain_kernel(float* out, const float* inp, const float* weight,
                                           const float* bias, Conv2dGeometry g) {
  const int64_t total = int64_t(g.N) * g.HO * g.WO * g.F;
  for (const int64_t i : device::grid_stride(total)) {
    const int f = static_cast<int>(i % g.F);
    int64_t rest = i / g.F;
    const int wo = static_cast<int>(rest % g.WO);
    rest /= g.WO;
    const int ho = static_cast<int>(rest % g.HO);
    const int64_t n = rest / g.HO;
    out[i] = conv2d_at(inp, weight, bias, g, n, ho, wo, f);
  }
}

void check_geometry(const Conv2dGeometry& g, const char* op) {
  if (!conv2d_geometry_valid(g)) {
    throw std::runtime_error(std::string("hisvid::cuda::") + op + ": invalid geometry");
  }
}

// Launches the forward kernels: tiled when a channel's window fits in shared memory, else plain.
void launch_forward(float* out, const float* inp, const float* weight, const float* bias,
                    const Conv2dGeometry& g, cudaStream_t stream, const char* op) {
  check_geometry(g, op);
  if (g.N == 0) return;
  const int64_t fit = tiled_channels(g);
  if (fit < 1) {
    const int64_t total = int64_t(g.N) * g.HO * g.WO * g.F;
    conv2d_direct_plain_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(out, inp, weight, bias,
                                                                                      g);
    HISVID_CHECK_LAUNCH();
    return;
  }
  tiled::launch_tiled(tiled::InputSource{inp, g.H, g.W, g.C}, tiled::StoreOutput{out}, weight, bias, g,
                      stream, op);
}

// --- backward data ------------------------------------------------------------------------

// flipped (KH,KW,F/G,C) from weight (KH,KW,C/G,F): see tiled::flipped_weight.
__global__ void flip_kernel_kernel(float* flipped, const float* weight, Conv2dGeometry g) {
  const int CG = g.group_channels(), FG = g.group_filters();
  const int64_t total = int64_t(g.KH) * g.KW * FG * g.C;
  for (const int64_t i : device::grid_stride(total)) {
    const int c = static_cast<int>(i % g.C);
    const int64_t rest = i / g.C;
    const int f = static_cast<int>(rest % FG);
    const int tap = static_cast<int>(rest / FG);
    const int kh = tap / g.KW, kw = tap % g.KW;
    const int source = (g.KH - 1 - kh) * g.KW + (g.KW - 1 - kw);
    flipped[i] = weight[(int64_t(source) * CG + c % CG) * g.F + c / CG * FG + f];
  }
}

// dinp (N,H,W,C) = sum over the taps (kh,kw) and the filters f of c's group of
// dout[n][ho][wo][f] * weight[kh][kw][c mod C/G][f], where ho*SH - pad_top + kh = h (and likewise
// for w). One thread per element of dinp; any stride.
__global__ void conv2d_backward_data_plain_kernel(float* dinp, const float* dout, const float* weight,
                                                  Conv2dGeometry g) {
  const int64_t total = int64_t(g.N) * g.H * g.W * g.C;
  for (const int64_t i : device::grid_stride(total)) {
    const int c = static_cast<int>(i % g.C);
    int64_t rest = i / g.C;
    const int w = static_cast<int>(rest % g.W);
    rest /= g.W;
    const int h = static_cast<int>(rest % g.H);
    const int64_t n = rest / g.H;
    dinp[i] = conv2d_input_grad_at(dout, weight, g, n, h, w, c);
  }
}

// --- backward filter ----------------------------------------------------------------------

constexpr int kFilterTile = 32;  // rows of the result (KH*KW*C/G), its columns (F), and of M, per step

// Tiles of kFilterTile columns per group (a group's last tile may be short).
HISVID_HD int filter_column_tiles(const Conv2dGeometry& g) {
  return (g.group_filters() + kFilterTile - 1) / kFilterTile;
}

constexpr int kFilterThreads = 256;                               // threads of the partial kernel
constexpr int kFilterRowsPerPass = kFilterThreads / kFilterTile;  // rows of M it stages at once

// partial (chunks, R, F) with R = KH*KW*C/G: partial[z][r][f] = the sum over m in chunk z of
// im2col(inp)[m][r] * dout[m][f], im2col over f's group of input channels. Grid: x tiles of R,
// y tiles of F (filter_column_tiles per group, group-major), z chunks of M. Each thread stages
// one column j of both tiles (im2col's r0 + j, dout's f0 + j), its tap and channel found once,
// and rows j / 32, + 8, ...: the pixel (n, ho, wo) of each row by division in Index, uint32_t
// where M fits (64-bit division is a long software sequence, and the staging's index math
// outweighed its 128 multiply-adds per step: 0.18 ms for the LRCN's first layer at batch 4 on an
// H100, 1.6 TFLOP/s).
template <typename Index>
__global__ void __launch_bounds__(kFilterThreads)
    conv2d_filter_partial_kernel(float* partial, const float* dout, const float* inp, Conv2dGeometry g,
                                 int64_t chunk_m) {
  __shared__ float s_col[kFilterTile][kFilterTile + 1];
  __shared__ float s_dout[kFilterTile][kFilterTile + 1];
  const int CG = g.group_channels(), FG = g.group_filters(), R = g.KH * g.KW * CG;
  const int64_t M = int64_t(g.N) * g.HO * g.WO;
  const int per_group = filter_column_tiles(g), conv_group = blockIdx.y / per_group;
  const int r0 = blockIdx.x * kFilterTile, f0 = conv_group * FG + (blockIdx.y % per_group) * kFilterTile;
  const int f_end = (conv_group + 1) * FG, c_base = conv_group * CG;
  const int64_t m_begin = blockIdx.z * chunk_m, m_end = min(M, m_begin + chunk_m);
  const int tr = threadIdx.x / 16,
            tf = threadIdx.x % 16;  // this thread's rows 2tr, 2tr+1; columns 2tf, 2tf+1
  float acc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
  const int j = threadIdx.x % kFilterTile, first_row = threadIdx.x / kFilterTile;
  const int r = r0 + j, f = f0 + j;
  const bool r_in = r < R, f_in = f < f_end;
  const int c = c_base + (r_in ? r % CG : 0), tap = r_in ? r / CG : 0;
  const int kh = tap / g.KW, kw = tap % g.KW;
  const Index WO = g.WO, HO = g.HO;
  for (int64_t m0 = m_begin; m0 < m_end; m0 += kFilterTile) {
#pragma unroll
    for (int mm = first_row; mm < kFilterTile; mm += kFilterRowsPerPass) {
      const int64_t m = m0 + mm;
      float col = 0.0f, d = 0.0f;
      if (m < m_end) {
        const Index pixel = static_cast<Index>(m), image_row = pixel / WO;
        const int wo = static_cast<int>(pixel - image_row * WO);
        const Index n = image_row / HO;
        const int ho = static_cast<int>(image_row - n * HO);
        const int ih = ho * g.SH - g.pad_top + kh, iw = wo * g.SW - g.pad_left + kw;
        if (r_in && ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) {
          col = inp[((int64_t(n) * g.H + ih) * g.W + iw) * g.C + c];
        }
        if (f_in) d = dout[m * g.F + f];
      }
      s_col[mm][j] = col;
      s_dout[mm][j] = d;
    }
    __syncthreads();
#pragma unroll 8
    for (int mm = 0; mm < kFilterTile; ++mm) {
      const float a0 = s_col[mm][2 * tr], a1 = s_col[mm][2 * tr + 1];
      const float b0 = s_dout[mm][2 * tf], b1 = s_dout[mm][2 * tf + 1];
      acc[0][0] += a0 * b0;
      acc[0][1] += a0 * b1;
      acc[1][0] += a1 * b0;
      acc[1][1] += a1 * b1;
    }
    __syncthreads();
  }
  float* dst = partial + int64_t(blockIdx.z) * R * g.F;
#pragma unroll
  for (int a = 0; a < 2; ++a) {
#pragma unroll
    for (int b = 0; b < 2; ++b) {
      const int r = r0 + 2 * tr + a, f = f0 + 2 * tf + b;
      if (r < R && f < f_end) dst[int64_t(r) * g.F + f] = acc[a][b];
    }
  }
}

// dweight (n) += the sum of partial (chunks, n) over its chunks, in chunk order.
__global__ void sum_chunks_kernel(float* dweight, const float* partial, int chunks, int64_t n) {
  for (const int64_t i : device::grid_stride(n)) {
    float s = 0.0f;
    for (int z = 0; z < chunks; ++z) s += partial[z * n + i];
    dweight[i] += s;
  }
}

// --- backward filter, version 2: small results --------------------------------------------
//
// The seeds' first layers and the ConvLSTM layers' kernels have small results (R = KH*KW*C/G =
// 27, 36 or 72 rows, F/G = 16 or 32 columns; a recurrent kernel under recurrent dropout is 4
// groups of 36 x 4 up to 144 x 16), where version 1's 32x32 tiles leave threads idle (27 x 16
// fills 42% of one tile, 36 x 16 28% of two, a group's 36 x 4 7%). Here one block computes a
// group's whole result over a chunk of M: its threads are T 4x4 output tiles (T = ceil((R+1)/4) x
// ceil((F/G)/4) <= 256) times S = 256 / T slices of the staged rows of M. Row R is a column of ones
// in im2col, so the bias's gradient comes out as row R of the result, with no kernel of its own.
// Per staged row a thread adds the outer product of 4 im2col values and 4 dout values: two
// 16-byte shared loads per 16 multiply-adds (version 1: four 4-byte loads per 4). The slices meet
// in shared memory in slice order, the chunks' partials in a fixed order (device::sum_rows_kernel):
// the same sum on every run. R + 1 <= 256, F/G <= 64 and at most 256 tiles; version 1 elsewhere
// (the LRCN's other layers, the ConvLSTM's last two input kernels).

constexpr int kSmallRows = 16;     // rows of M staged at a time
constexpr int kSmallMinSteps = 4;  // stagings per chunk at least, where M allows

constexpr int kSmallMaxCols = 256, kSmallMaxF = 64;  // R+1 and F, each rounded up to 4

HISVID_HD int round4(int x) { return (x + 3) / 4 * 4; }

bool small_result(const Conv2dGeometry& g) {
  const int64_t R = int64_t(g.KH) * g.KW * g.group_channels();
  const int FG = g.group_filters();
  return g.G <= 65535 && R + 1 <= kSmallMaxCols && FG <= kSmallMaxF &&
         (round4(int(R) + 1) / 4) * (round4(FG) / 4) <= kFilterThreads;
}

// partial (chunks, R+1, F), R = KH*KW*C/G: rows r < R the chunk's share of dweight (KH,KW,C/G,F),
// row R of dbias. Grid: x one block per chunk of chunk_m rows of M, y the groups (block y takes
// its group's input channels and F/G filters: its columns of the result).
template <typename Index>
__global__ void __launch_bounds__(kFilterThreads)
    conv2d_filter_small_kernel(float* partial, const float* dout, const float* inp, Conv2dGeometry g,
                               int64_t chunk_m) {
  __shared__ float4 s_stage4[kSmallRows * (kSmallMaxCols + kSmallMaxF) / 4];
  __shared__ int s_kh[kSmallMaxCols], s_kw[kSmallMaxCols], s_c[kSmallMaxCols];  // column r's tap, channel
  __shared__ int64_t s_image[kSmallRows];                                       // row's image in inp
  __shared__ int s_ih0[kSmallRows], s_iw0[kSmallRows];                          // row's window corner
  const int CG = g.group_channels(), FG = g.group_filters(), R = g.KH * g.KW * CG, F = g.F;
  const int RP = round4(R + 1), FP = round4(FG);
  const int c0 = static_cast<int>(blockIdx.y) * CG, f0 = static_cast<int>(blockIdx.y) * FG;  // the group's
  const int tiles_f = FP / 4, tiles = (RP / 4) * tiles_f, slices = kFilterThreads / tiles;
  const int tile = threadIdx.x % tiles, slice = threadIdx.x / tiles;
  const int tr = tile / tiles_f, tf = tile % tiles_f;
  float* s_col = reinterpret_cast<float*>(s_stage4);  // (kSmallRows, RP)
  float* s_dout = s_col + kSmallRows * RP;            // (kSmallRows, FP), 16-byte aligned: RP % 4 == 0
  for (int r = threadIdx.x; r < RP; r += blockDim.x) {
    const int tap = r / CG;
    s_kh[r] = r < R ? tap / g.KW : (r == R ? -1 : -2);  // -1: the ones of the bias, -2: padding
    s_kw[r] = tap % g.KW;
    s_c[r] = c0 + r % CG;
  }
  float acc[4][4] = {};
  const int64_t M = int64_t(g.N) * g.HO * g.WO;
  const int64_t m_begin = int64_t(blockIdx.x) * chunk_m, m_end = min(M, m_begin + chunk_m);
  const Index WO = g.WO, HO = g.HO;
  for (int64_t m0 = m_begin; m0 < m_end; m0 += kSmallRows) {
    const int rows = static_cast<int>(min(int64_t(kSmallRows), m_end - m0));
    __syncthreads();  // the previous rows are no longer read (first time: the column table is written)
    if (threadIdx.x < rows) {
      const Index pixel = static_cast<Index>(m0 + threadIdx.x), image_row = pixel / WO;
      const Index n = image_row / HO;
      s_image[threadIdx.x] = int64_t(n) * g.H * g.W * g.C;
      s_ih0[threadIdx.x] = static_cast<int>(image_row - n * HO) * g.SH - g.pad_top;
      s_iw0[threadIdx.x] = static_cast<int>(pixel - image_row * WO) * g.SW - g.pad_left;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < kSmallRows * RP; i += blockDim.x) {
      const int mm = i / RP, r = i - mm * RP;
      float v = 0.0f;
      if (mm < rows) {
        const int kh = s_kh[r];
        if (kh >= 0) {
          const int ih = s_ih0[mm] + kh, iw = s_iw0[mm] + s_kw[r];
          if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W)
            v = inp[s_image[mm] + (int64_t(ih) * g.W + iw) * g.C + s_c[r]];
        } else if (kh == -1) {
          v = 1.0f;
        }
      }
      s_col[i] = v;
    }
    for (int i = threadIdx.x; i < kSmallRows * FP; i += blockDim.x) {
      const int mm = i / FP, f = i - mm * FP;
      s_dout[i] = mm < rows && f < FG ? dout[(m0 + mm) * F + f0 + f] : 0.0f;
    }
    __syncthreads();
    if (slice < slices) {
      for (int mm = slice; mm < rows; mm += slices) {
        const float4 a = reinterpret_cast<const float4*>(s_col + mm * RP)[tr];
        const float4 b = reinterpret_cast<const float4*>(s_dout + mm * FP)[tf];
        const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
        for (int x = 0; x < 4; ++x) {
#pragma unroll
          for (int y = 0; y < 4; ++y) acc[x][y] += av[x] * bv[y];
        }
      }
    }
  }
  __syncthreads();        // the staged rows are no longer read: their memory takes the slices' sums
  float* s_sums = s_col;  // (slices, tiles, 16) <= 256 * 16 floats
  if (slice < slices) {
#pragma unroll
    for (int e = 0; e < 16; ++e) s_sums[(slice * tiles + tile) * 16 + e] = acc[e / 4][e % 4];
  }
  __syncthreads();
  float* dst = partial + int64_t(blockIdx.x) * (R + 1) * F;
  for (int o = threadIdx.x; o < tiles * 16; o += blockDim.x) {
    const int t = o / 16, e = o % 16;
    const int r = (t / tiles_f) * 4 + e / 4, f = (t % tiles_f) * 4 + e % 4;
    if (r > R || f >= FG) continue;
    float s = 0.0f;
    for (int z = 0; z < slices; ++z) s += s_sums[(z * tiles + t) * 16 + e];
    dst[int64_t(r) * F + f0 + f] = s;
  }
}

// Adds column j of the chunks' sum (partial (chunks, R+1, F)) into dweight (R,F) (j < R*F) or
// dbias (F) (row R, when not null).
struct AddFilterSum {
  float* dweight;
  float* dbias;
  int64_t weights;  // R*F
  __device__ void operator()(int64_t j, float total) const {
    if (j < weights) {
      dweight[j] += total;
    } else if (dbias != nullptr) {
      dbias[j - weights] += total;
    }
  }
};

// --- lanes: S lanes of a warp per output element ------------------------------------------
//
// The tiled forward kernel's 8x8 tiles idle on small outputs: a 4x4 output keeps a quarter of
// their threads busy, 2x2 a sixteenth (the LRCN's third and fourth layers took 0.021 and
// 0.033 ms forward at batch 4 on an H100, 2.4 and 1.2 MFLOP: bench/results/2026-11-27-h100.md).
// Here S lanes share one output element, lane s summing the input channels s, s + S, ... of
// every tap (conv2d_at's parts); the parts meet through warp shuffles. Backward data likewise,
// each element of dinp from the filters s, s + S, ... (conv2d_input_grad_at's parts), any stride.
// S: a power of two up to 32 that leaves each lane at least two channels (filters) per tap.

// out (N,HO,WO,F) as conv2d_forward_direct_v1.
template <int S, typename Index>
__global__ void conv2d_forward_lanes_kernel(float* out, const float* inp, const float* weight,
                                            const float* bias, Conv2dGeometry g) {
  const int s = static_cast<int>(threadIdx.x % S);
  const unsigned lanes = device::lane_group_mask<S>();
  for (const int64_t e : device::group_stride<S>(int64_t(g.N) * g.HO * g.WO * g.F)) {
    const device::Coordinates o = device::coordinates<Index>(e, g.HO, g.WO, g.F);
    const float v =
        device::lane_group_sum<S>(conv2d_at(inp, weight, bias, g, o.n, o.y, o.x, o.c, s, S), lanes);
    if (s == 0) out[e] = v;
  }
}

// dinp (N,H,W,C) (=) as conv2d_backward_data_direct_v1.
template <int S, typename Index>
__global__ void conv2d_backward_data_lanes_kernel(float* dinp, const float* dout, const float* weight,
                                                  Conv2dGeometry g) {
  const int s = static_cast<int>(threadIdx.x % S);
  const unsigned lanes = device::lane_group_mask<S>();
  for (const int64_t e : device::group_stride<S>(int64_t(g.N) * g.H * g.W * g.C)) {
    const device::Coordinates i = device::coordinates<Index>(e, g.H, g.W, g.C);
    const float v =
        device::lane_group_sum<S>(conv2d_input_grad_at(dout, weight, g, i.n, i.y, i.x, i.c, s, S), lanes);
    if (s == 0) dinp[e] = v;
  }
}

// --- const: the weights in constant memory --------------------------------------------------
//
// Small layers at small batches are bound by latency, not arithmetic: the LRCN's 3x3 layers of
// 3 -> 16 and 16 -> 32 channels took 0.081 and 0.041 ms forward at batch 4 on an H100 for 0.28 and
// 0.19 GFLOP. Here the whole kernel (at most kConstWeights floats, one group) and the bias are
// copied into constant memory before the launch, and each thread computes every filter of one
// output pixel: the taps' C inputs are read once per pixel, and every multiply-add takes its
// weight from the constant cache at an address the whole warp shares (a broadcast). With the
// shape known at compile time (3x3 kernels of the seeds' channel counts, KC > 0) every loop
// unrolls and every weight's address is a compile-time constant, which the compiler can take as
// a constant-bank operand of its FMA (to confirm in the SASS on a GPU machine: this one has no
// disassembler); otherwise (KC == 0) the taps and channels are loops and the weights come
// through constant loads with a run-time index (seen in an earlier build's SASS, decoded by hand). A block's
// outputs are staged in shared memory and written as one contiguous run (F floats per pixel, pixels in
// order). Backward data (stride 1) runs the same kernel on the flipped weights of the transposed
// convolution. One launch at a time per device uses the symbols (the copies and the kernel are
// enqueued together under a lock, on the device's one stream).
constexpr int kConstWeights = 8192;  // 32 KB of the 64 KB constant space
constexpr int kConstMaxFilters = 64;
constexpr int kConstThreads = 128;
__constant__ float c_conv_weight[kConstWeights];   // (KH,KW,C,F) of the call in flight
__constant__ float c_conv_bias[kConstMaxFilters];  // (F), zeros without a bias

// The taps' multiply-adds of one pixel into sum (F): KC > 0 fixes a 3x3 kernel of KC channels.
template <int F, int KC>
__device__ __forceinline__ void const_taps(float (&sum)[F], const float* inp, const Conv2dGeometry& g,
                                           int64_t n, int ho, int wo) {
  constexpr int KK = KC > 0 ? 3 : 0;
  const int KH = KC > 0 ? KK : g.KH, KW = KC > 0 ? KK : g.KW, C = KC > 0 ? KC : g.C;
#pragma unroll
  for (int kh = 0; kh < (KC > 0 ? KK : KH); ++kh) {
    const int ih = ho * g.SH - g.pad_top + kh;
    if (ih < 0 || ih >= g.H) continue;
#pragma unroll
    for (int kw = 0; kw < (KC > 0 ? KK : KW); ++kw) {
      const int iw = wo * g.SW - g.pad_left + kw;
      if (iw < 0 || iw >= g.W) continue;
      const float* x = inp + ((n * g.H + ih) * g.W + iw) * C;
      const float* w = c_conv_weight + (kh * KW + kw) * C * F;
#pragma unroll
      for (int c = 0; c < (KC > 0 ? KC : C); ++c) {
        const float v = __ldg(x + c);
#pragma unroll
        for (int f = 0; f < F; ++f) sum[f] = fmaf(v, w[c * F + f], sum[f]);
      }
    }
  }
}

// out (N,HO,WO,F) = conv(inp (N,H,W,C), c_conv_weight (KH,KW,C,F)) + c_conv_bias (F): block b takes
// pixels [b * kConstThreads, ...) of each grid-wide round, one a thread.
template <int F, int KC, typename Index>
__global__ void __launch_bounds__(kConstThreads)
    conv2d_forward_const_kernel(float* out, const float* inp, Conv2dGeometry g) {
  __shared__ float staged[kConstThreads * (F + 1)];  // (pixel, F) with a pad: no bank conflicts
  const int64_t pixels = int64_t(g.N) * g.HO * g.WO;
  for (int64_t first = int64_t(blockIdx.x) * kConstThreads; first < pixels;
       first += int64_t(gridDim.x) * kConstThreads) {
    const int64_t p = first + threadIdx.x;
    if (p < pixels) {
      const Index flat = static_cast<Index>(p), columns = g.WO, rows = g.HO;
      const Index row = flat / columns, n = row / rows;
      float sum[F];
#pragma unroll
      for (int f = 0; f < F; ++f) sum[f] = c_conv_bias[f];
      const_taps<F, KC>(sum, inp, g, int64_t(n), static_cast<int>(row - n * rows),
                        static_cast<int>(flat - row * columns));
#pragma unroll
      for (int f = 0; f < F; ++f) staged[threadIdx.x * (F + 1) + f] = sum[f];
    }
    __syncthreads();
    const int count = static_cast<int>(min(int64_t(kConstThreads), pixels - first));
    float* dst = out + first * F;
    for (int i = threadIdx.x; i < count * F; i += kConstThreads) dst[i] = staged[i / F * (F + 1) + i % F];
    __syncthreads();  // the stage is refilled next round
  }
}

// Calls launch(std::integral_constant<int, F>{}) for the filter counts the const kernel is built
// for; false for any other.
constexpr int kConstFilters[] = {8, 16, 32, 64};
template <typename Launch>
bool with_const_filters(int F, const Launch& launch) {
  switch (F) {
    case 8:
      return launch(std::integral_constant<int, 8>{}), true;
    case 16:
      return launch(std::integral_constant<int, 16>{}), true;
    case 32:
      return launch(std::integral_constant<int, 32>{}), true;
    case 64:
      return launch(std::integral_constant<int, 64>{}), true;
    default:
      return false;
  }
}

// The (C, F) pairs of 3x3 kernels built with everything known at compile time: the seeds' LRCN
// (3 -> 16, 16 -> 32, and 32 -> 16 for the second layer's backward data) and ConvLSTM input
// convolutions (3 -> 16, 4 -> 32). Others, 14 -> 64 among them (it spilled), run the loops.
template <int F, typename Launch>
void with_const_channels(const Conv2dGeometry& g, const Launch& launch) {
  const bool k3 = g.KH == 3 && g.KW == 3;
  if constexpr (F == 16) {
    if (k3 && g.C == 3) return launch(std::integral_constant<int, 3>{});
    if (k3 && g.C == 32) return launch(std::integral_constant<int, 32>{});
  } else if constexpr (F == 32) {
    if (k3 && g.C == 16) return launch(std::integral_constant<int, 16>{});
    if (k3 && g.C == 4) return launch(std::integral_constant<int, 4>{});
  }
  launch(std::integral_constant<int, 0>{});
}

bool const_applies(const Conv2dGeometry& g) {
  const bool built =
      std::find(std::begin(kConstFilters), std::end(kConstFilters), g.F) != std::end(kConstFilters);
  return g.G == 1 && built && int64_t(g.KH) * g.KW * g.C * g.F <= kConstWeights;
}

// The device addresses of the constant symbols on the current device, looked up once per device
// (outside any capture: timing runs the kernel before a graph can hold it).
struct ConstSymbols {
  void* weight = nullptr;
  void* bias = nullptr;
  std::mutex launch;  // held from the copies to the launch
};

ConstSymbols& const_symbols(int device) {
  static std::mutex mutex;
  static std::map<int, ConstSymbols> symbols;
  std::lock_guard<std::mutex> lock(mutex);
  ConstSymbols& s = symbols[device];
  if (s.weight == nullptr) {
    CUDA_CHECK(cudaGetSymbolAddress(&s.weight, c_conv_weight));
    CUDA_CHECK(cudaGetSymbolAddress(&s.bias, c_conv_bias));
  }
  return s;
}

// out (N,HO,WO,F) = conv(inp, weight (KH,KW,C,F), on the device) + bias, g as const_applies allows:
// the weights and the bias go to constant memory in stream order (copy nodes in a captured
// graph), then the kernel.
void launch_const(float* out, const float* inp, const float* weight, const float* bias,
                  const Conv2dGeometry& g, cudaStream_t stream, const char* op) {
  Context& ctx = context_for_stream(stream, op);  // the stream's device is the current one
  ConstSymbols& symbols = const_symbols(ctx.device());
  std::lock_guard<std::mutex> lock(symbols.launch);
  CUDA_CHECK(cudaMemcpyAsync(symbols.weight, weight, sizeof(float) * size_t(g.KH) * g.KW * g.C * g.F,
                             cudaMemcpyDeviceToDevice, stream));
  if (bias != nullptr) {
    CUDA_CHECK(
        cudaMemcpyAsync(symbols.bias, bias, sizeof(float) * size_t(g.F), cudaMemcpyDeviceToDevice, stream));
  } else {
    CUDA_CHECK(cudaMemsetAsync(symbols.bias, 0, sizeof(float) * size_t(g.F), stream));
  }
  const int64_t pixels = int64_t(g.N) * g.HO * g.WO;
  with_const_filters(g.F, [&](auto filters) {
    constexpr int F = decltype(filters)::value;
    with_const_channels<F>(g, [&](auto channels) {
      with_index_type(pixels, [&](auto index) {
        conv2d_forward_const_kernel<F, decltype(channels)::value, decltype(index)>
            <<<grid_blocks(pixels, kConstThreads), kConstThreads, 0, stream>>>(out, inp, g);
      });
    });
  });
  HISVID_CHECK_LAUNCH();
}

}  // namespace

float* tiled::flipped_weight(const float* weight, const Conv2dGeometry& g, cudaStream_t stream,
                             const char* op) {
  Context& ctx = context_for_stream(stream, op);
  const int64_t taps = int64_t(g.KH) * g.KW * g.group_filters() * g.C;
  float* flipped = static_cast<float*>(ctx.workspace(sizeof(float) * size_t(taps)));  // (KH,KW,F/G,C)
  flip_kernel_kernel<<<grid_blocks(taps, cuda::kThreads), cuda::kThreads, 0, stream>>>(flipped, weight, g);
  HISVID_CHECK_LAUNCH();
  return flipped;
}

bool conv2d_direct_v1_tiles(const Conv2dGeometry& g) { return tiled_channels(g) >= 1; }
bool conv2d_strips_apply(const Conv2dGeometry& g) { return tiled::strips_apply(g); }
// The transposed convolution of a 3x3 stride-1 one is 3x3 stride 1 too.
bool conv2d_backward_data_strips_apply(const Conv2dGeometry& g) {
  return g.SH == 1 && g.SW == 1 && tiled::strips_apply(tiled::transposed_geometry(g));
}
bool conv2d_filter_small_applies(const Conv2dGeometry& g) { return small_result(g); }

void conv2d_forward_direct_v1(const Conv2dForward<float>& k, cudaStream_t stream) {
  launch_forward(k.out, k.inp, k.weight, k.bias, k.g, stream, "conv2d_forward_direct_v1");
}

void conv2d_backward_data_direct_v1(const Conv2dBackwardData<float>& k, cudaStream_t stream) {
  const Conv2dGeometry& g = k.g;
  check_geometry(g, "conv2d_backward_data_direct_v1");
  if (g.N == 0) return;
  if (g.SH != 1 || g.SW != 1) {
    const int64_t total = int64_t(g.N) * g.H * g.W * g.C;
    conv2d_backward_data_plain_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(k.dinp, k.dout,
                                                                                             k.weight, g);
    HISVID_CHECK_LAUNCH();
    return;
  }
  const float* flipped = tiled::flipped_weight(k.weight, g, stream, "conv2d_backward_data_direct_v1");
  launch_forward(k.dinp, k.dout, flipped, nullptr, tiled::transposed_geometry(g), stream,
                 "conv2d_backward_data_direct_v1");
}

void conv2d_forward_direct_v2(const Conv2dForward<float>& k, cudaStream_t stream) {
  const Conv2dGeometry& g = k.g;
  check_geometry(g, "conv2d_forward_direct_v2");
  if (!conv2d_strips_apply(g)) return conv2d_forward_direct_v1(k, stream);
  if (g.N == 0) return;
  tiled::launch_strips(tiled::InputSource{k.inp, g.H, g.W, g.C}, tiled::StoreOutput{k.out}, k.weight, k.bias,
                       g, stream, "conv2d_forward_direct_v2");
}

void conv2d_backward_data_direct_v2(const Conv2dBackwardData<float>& k, cudaStream_t stream) {
  const Conv2dGeometry& g = k.g;
  check_geometry(g, "conv2d_backward_data_direct_v2");
  if (!conv2d_backward_data_strips_apply(g)) return conv2d_backward_data_direct_v1(k, stream);
  const Conv2dGeometry t = tiled::transposed_geometry(g);
  if (g.N == 0) return;
  const float* flipped = tiled::flipped_weight(k.weight, g, stream, "conv2d_backward_data_direct_v2");
  tiled::launch_strips(tiled::InputSource{k.dout, t.H, t.W, t.C}, tiled::StoreOutput{k.dinp}, flipped,
                       nullptr, t, stream, "conv2d_backward_data_direct_v2");
}

void conv2d_backward_filter_direct_v2(const Conv2dBackwardFilter<float>& k, cudaStream_t stream) {
  const Conv2dGeometry& g = k.g;
  check_geometry(g, "conv2d_backward_filter_direct_v2");
  if (!conv2d_filter_small_applies(g)) return conv2d_backward_filter_direct_v1(k, stream);
  const int64_t M = int64_t(g.N) * g.HO * g.WO;
  if (M == 0) return;
  Context& ctx = context_for_stream(stream, "conv2d_backward_filter_direct_v2");
  // About 4 blocks per multiprocessor over all groups, each at least kSmallMinSteps stagings of
  // rows (fewer would write more partials than they read).
  const int64_t steps = (M + kSmallRows - 1) / kSmallRows;
  int64_t chunks = std::min<int64_t>(std::max<int64_t>(1, 4 * int64_t(multiprocessors()) / g.G),
                                     (steps + kSmallMinSteps - 1) / kSmallMinSteps);
  const int64_t chunk_m = (steps + chunks - 1) / chunks * kSmallRows;
  chunks = (M + chunk_m - 1) / chunk_m;
  const int64_t n = (int64_t(g.KH) * g.KW * g.group_channels() + 1) * g.F;
  float* partial =
      static_cast<float*>(ctx.workspace(sizeof(float) * size_t(chunks * n)));  // (chunks, R+1, F)
  with_index_type(M, [&](auto index) {
    conv2d_filter_small_kernel<decltype(index)>
        <<<dim3(static_cast<unsigned int>(chunks), static_cast<unsigned int>(g.G)), kFilterThreads, 0,
           stream>>>(partial, k.dout, k.inp, g, chunk_m);
  });
  HISVID_CHECK_LAUNCH();
  const int64_t weights = n - g.F;
  device::sum_rows_kernel<<<device::sum_rows_blocks(n), dim3(device::kSumRowsColumns, device::kSumRowsLanes),
                            0, stream>>>(partial, chunks, n, AddFilterSum{k.dweight, k.dbias, weights});
  HISVID_CHECK_LAUNCH();
}

void conv2d_forward_lanes(const Conv2dForward<float>& k, cudaStream_t stream) {
  const Conv2dGeometry& g = k.g;
  check_geometry(g, "conv2d_forward_lanes");
  const int64_t total = int64_t(g.N) * g.HO * g.WO * g.F;
  if (total == 0) return;
  const int S = lane_parts(g.group_channels(), 32);
  with_power_of_two<32>(S, [&](auto lanes) {
    with_index_type(total, [&](auto index) {
      conv2d_forward_lanes_kernel<decltype(lanes)::value, decltype(index)>
          <<<grid_blocks(total * S, kThreads), kThreads, 0, stream>>>(k.out, k.inp, k.weight, k.bias, g);
    });
  });
  HISVID_CHECK_LAUNCH();
}

void conv2d_backward_data_lanes(const Conv2dBackwardData<float>& k, cudaStream_t stream) {
  const Conv2dGeometry& g = k.g;
  check_geometry(g, "conv2d_backward_data_lanes");
  const int64_t total = int64_t(g.N) * g.H * g.W * g.C;
  if (total == 0) return;
  const int S = lane_parts(g.group_filters(), 32);
  with_power_of_two<32>(S, [&](auto lanes) {
    with_index_type(total, [&](auto index) {
      conv2d_backward_data_lanes_kernel<decltype(lanes)::value, decltype(index)>
          <<<grid_blocks(total * S, kThreads), kThreads, 0, stream>>>(k.dinp, k.dout, k.weight, g);
    });
  });
  HISVID_CHECK_LAUNCH();
}

void conv2d_backward_filter_direct_v1(const Conv2dBackwardFilter<float>& k, cudaStream_t stream) {
  const Conv2dGeometry& g = k.g;
  check_geometry(g, "conv2d_backward_filter_direct_v1");
  if (g.N == 0) return;
  Context& ctx = context_for_stream(stream, "conv2d_backward_filter_direct_v1");
  const int R = g.KH * g.KW * g.group_channels();
  const int64_t M = int64_t(g.N) * g.HO * g.WO;
  const int column_tiles = g.G * filter_column_tiles(g);
  const int64_t tiles = int64_t((R + kFilterTile - 1) / kFilterTile) * column_tiles;
  // Enough chunks of M for two blocks per multiprocessor, each at least one step of 32 rows.
  const int64_t steps = (M + kFilterTile - 1) / kFilterTile;
  int64_t chunks =
      std::min<int64_t>(std::max<int64_t>(1, (2 * multiprocessors() + tiles - 1) / tiles), steps);
  chunks = std::min<int64_t>(chunks, 65535);
  const int64_t chunk_m = ((steps + chunks - 1) / chunks) * kFilterTile;
  chunks = (M + chunk_m - 1) / chunk_m;
  const int64_t n = int64_t(R) * g.F;
  float* partial = static_cast<float*>(ctx.workspace(sizeof(float) * size_t(chunks * n)));  // (chunks, R, F)
  const dim3 grid(static_cast<unsigned int>((R + kFilterTile - 1) / kFilterTile),
                  static_cast<unsigned int>(column_tiles), static_cast<unsigned int>(chunks));
  if (grid.y > 65535)
    throw std::runtime_error("hisvid::cuda::conv2d_backward_filter_direct_v1: too many filters");
  with_index_type(M, [&](auto index) {
    conv2d_filter_partial_kernel<decltype(index)>
        <<<grid, kFilterThreads, 0, stream>>>(partial, k.dout, k.inp, g, chunk_m);
  });
  HISVID_CHECK_LAUNCH();
  sum_chunks_kernel<<<grid_blocks(n, kThreads), kThreads, 0, stream>>>(k.dweight, partial,
                                                                       static_cast<int>(chunks), n);
  HISVID_CHECK_LAUNCH();
  // Asks for workspace again, after every use of the partials has been enqueued.
  if (k.dbias != nullptr) {
    BiasAddBackward<float> sum_columns;
    sum_columns.dbias = k.dbias, sum_columns.dout = k.dout, sum_columns.M = M, sum_columns.C = g.F;
    bias_add_backward(sum_columns, stream);
  }
}

bool conv2d_const_applies(const Conv2dGeometry& g) { return const_applies(g); }

bool conv2d_backward_data_const_applies(const Conv2dGeometry& g) {
  return g.SH == 1 && g.SW == 1 && const_applies(tiled::transposed_geometry(g));
}

void conv2d_forward_const(const Conv2dForward<float>& k, cudaStream_t stream) {
  const Conv2dGeometry& g = k.g;
  check_geometry(g, "conv2d_forward_const");
  if (!conv2d_const_applies(g)) return conv2d_forward_direct_v1(k, stream);
  if (g.N == 0) return;
  launch_const(k.out, k.inp, k.weight, k.bias, g, stream, "conv2d_forward_const");
}

void conv2d_backward_data_const(const Conv2dBackwardData<float>& k, cudaStream_t stream) {
  const Conv2dGeometry& g = k.g;
  check_geometry(g, "conv2d_backward_data_const");
  if (!conv2d_backward_data_const_applies(g)) return conv2d_backward_data_direct_v1(k, stream);
  if (g.N == 0) return;
  const float* flipped = tiled::flipped_weight(k.weight, g, stream, "conv2d_backward_data_const");
  launch_const(k.dinp, k.dout, flipped, nullptr, tiled::transposed_geometry(g), stream,
               "conv2d_backward_data_const");
}

}  // namespace hisvid::cuda
