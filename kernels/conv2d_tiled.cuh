// kernels/conv2d_tiled.cuh — the tiled direct convolution of kernels/conv2d_direct.cu as a
// template, for the .cu files that run it with another input or another epilogue:
//   Source  where the convolution's input comes from: source(n, ih, iw, c) is the value of
//           input (N,H,W,C) at a position inside the image (the kernel puts the zeros of the
//           padding itself). InputSource reads a tensor; kernels/conv2d_pool.cu gathers the
//           gradient of a fused convolution's output from the pooled gradients.
//   Sink    what happens to each thread's sums: sink(g, at, acc, shared), called by every
//           thread of the block once per image (so a sink may synchronise the block), with the
//           thread's 4 sums (bias included) and the block's shared memory, free to reuse once
//           the sink has synchronised. StoreOutput writes them to out (N,HO,WO,F);
//           kernels/conv2d_pool.cu pools them.
// One block computes an 8x8 tile of output pixels of one image for 16 filters; each of its
// 256 threads computes one pixel for 4 filters (the accumulators stay in registers). The
// block stages in shared memory, a chunk of input channels at a time:
//   the input window of the tile, (7*SH + KH) x (7*SW + KW) per channel, one plane per
//   channel so that neighbouring pixels read neighbouring words, zeros where it falls in
//   the padding (so the larger bottom/right padding of 'same' needs no special case);
//   the weights of the chunk for the block's 16 filters, (KH*KW*CC, 16), read as float4.
// With groups a block's 16 filters stay within one group (the last tile of a group may be
// short), so it stages only that group's input channels. The channel chunk CC is the largest
// that fits in 48 KiB; tiled_channels(g) < 1 (kernels of several dozen pixels a side) means
// the tiled kernel cannot run and the caller takes another path.
//
// Strips (version 2, 3x3 stride-1 convolutions, the seeds' every layer): a block computes a
// 16x16 tile for 16 filters; each thread a strip of 4 output rows in one column for 4 filters,
// 16 sums in registers. Per staged channel and kernel column kw it reads the 6 input values its
// strip's 3 taps down need and the 3 weights float4s of that column, for 48 multiply-adds
// (the tiled kernel: 2 shared loads per 4). Same staging, sources and sinks as the tiled kernel.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/conv2d.h"
#include "kernels/cuda_context.h"

namespace hisvid::cuda::tiled {

constexpr int kTileH = 8, kTileW = 8;  // output pixels per block
constexpr int kBlockFilters = 16;      // filters per block
constexpr int kThreadFilters = 4;      // filters per thread: 64 pixels x 4 groups = 256 threads
constexpr int kThreads = kTileH * kTileW * (kBlockFilters / kThreadFilters);
constexpr size_t kSharedBytes = 48 * 1024;

static_assert(kThreads == 256, "one thread per (pixel, filter group)");

// The tiled kernel's shared floats per staged channel: its input window and its weights.
inline int64_t tiled_channel_floats(const Conv2dGeometry& g) {
  const int64_t TIH = int64_t(kTileH - 1) * g.SH + g.KH, TIW = int64_t(kTileW - 1) * g.SW + g.KW;
  return TIH * TIW + int64_t(g.KH) * g.KW * kBlockFilters;
}

// Input channels the kernel stages at a time (0: not even one fits).
inline int64_t tiled_channels(const Conv2dGeometry& g) {
  return int64_t(kSharedBytes / sizeof(float)) / tiled_channel_floats(g);
}

// Where a thread's sums belong: image n, the block's tile (tile_y, tile_x) of tile_h x tile_w
// output pixels, the thread's first pixel (py, px) in it and output pixel (ho, wo) (its pixels
// go down from there: rows py, py+1, ... of one column; possibly past the output's edge, in a
// partial tile), its 4 filters f .. f+3 (those >= f_end do not exist), which of the block's 4
// filter groups they are, and the block's first filter f0.
struct TileAt {
  int64_t n;
  int tile_y, tile_x, tile_h, tile_w, py, px, ho, wo;
  int f, f_end, group, f0;
};

// The convolution's input read from inp (N,H,W,C).
struct InputSource {
  const float* inp;
  int H, W, C;
  __device__ float operator()(int64_t n, int ih, int iw, int c) const {
    return inp[((n * H + ih) * W + iw) * C + c];
  }
};

// Writes the sums, acc[p][j] for pixel (ho + p, wo) and filter f + j, to out (N,HO,WO,F).
struct StoreOutput {
  float* out;
  static constexpr int kSharedFloats = 0;
  template <int Rows>
  __device__ void operator()(const Conv2dGeometry& g, const TileAt& at,
                             const float (&acc)[Rows][kThreadFilters], float* /*shared*/) const {
    if (at.wo >= g.WO) return;
#pragma unroll
    for (int p = 0; p < Rows; ++p) {
      if (at.ho + p >= g.HO) return;
      float* dst = out + ((at.n * g.HO + at.ho + p) * g.WO + at.wo) * g.F;
#pragma unroll
      for (int j = 0; j < kThreadFilters; ++j) {
        if (at.f + j < at.f_end) dst[at.f + j] = acc[p][j];
      }
    }
  }
};

// Where a block of a tiled launch works: its output tile (tile_y, tile_x) (blockIdx.x over tiles
// tile_w wide), its group's CG input channels from c_base, its filters f0 .. f_end-1 (16 at
// most: blockIdx.y over 16-filter tiles of each group, group-major, so that a block's filters
// stay in one group), and for this thread its filter group (filters f0 + 4*group ..) and its
// slot (which pixel or strip of the tile).
struct BlockPlace {
  int tile_y, tile_x, CG, c_base, f0, f_end, group, slot;
};

__device__ __forceinline__ BlockPlace block_place(const Conv2dGeometry& g, int tile_w) {
  const int tiles_w = (g.WO + tile_w - 1) / tile_w;
  const int CG = g.group_channels(), FG = g.group_filters(),
            per_group = (FG + kBlockFilters - 1) / kBlockFilters;
  const int conv_group = blockIdx.y / per_group;
  return BlockPlace{static_cast<int>(blockIdx.x) / tiles_w,
                    static_cast<int>(blockIdx.x) % tiles_w,
                    CG,
                    conv_group * CG,
                    conv_group * FG + static_cast<int>(blockIdx.y % per_group) * kBlockFilters,
                    (conv_group + 1) * FG,
                    static_cast<int>(threadIdx.x) % (kBlockFilters / kThreadFilters),
                    static_cast<int>(threadIdx.x) / (kBlockFilters / kThreadFilters)};
}

// Stages the weights of channels c0 .. c0+cn-1 of the block's group for its 16 filters
// f0 .. f0+15 (zeros from f_end on): s_w (taps*CC, 16), tap-major.
__device__ __forceinline__ void stage_weights(float* s_w, const float* weight, int taps, int CG, int F,
                                              int CC, int c0, int cn, int f0, int f_end) {
  for (int i = threadIdx.x; i < taps * cn * kBlockFilters; i += blockDim.x) {
    const int fl = i % kBlockFilters, rest = i / kBlockFilters;
    const int cc = rest % cn, tap = rest / cn;
    const int f = f0 + fl;
    s_w[(tap * CC + cc) * kBlockFilters + fl] =
        f < f_end ? weight[(int64_t(tap) * CG + c0 + cc) * F + f] : 0.0f;
  }
}

// Stages the input window rows ih0 .. ih0+TIH-1, columns iw0 .. iw0+TIW-1 of channels
// c .. c+cn-1 of image n: s_in (cn, TIH, TIW), zeros outside the image.
template <typename Source>
__device__ __forceinline__ void stage_input(float* s_in, const Source& source, const Conv2dGeometry& g,
                                            int64_t n, int ih0, int iw0, int TIH, int TIW, int c, int cn) {
  for (int i = threadIdx.x; i < TIH * TIW * cn; i += blockDim.x) {
    const int cc = i % cn, rest = i / cn;
    const int col = rest % TIW, row = rest / TIW;
    const int ih = ih0 + row, iw = iw0 + col;
    s_in[(cc * TIH + row) * TIW + col] =
        (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) ? source(n, ih, iw, c + cc) : 0.0f;
  }
}

// The convolution of source's input (N,H,W,C) with weight (KH,KW,C/G,F) (+ bias (F), or
// null), each thread's sums handed to sink. Grid: x the output tiles of an image, y the tiles
// of 16 filters (per group, group-major), z images (looping when N > gridDim.z).
// Dynamic shared memory: weights (KH*KW*CC, 16) then input planes (CC, TIH, TIW).
// At least 6 blocks per multiprocessor (40 registers): what ptxas gave the kernel before it
// became a template (measured on the H100); without the bound it gave the PooledGradSource
// instance 40 registers and spilled.
template <typename Source, typename Sink>
__global__ void __launch_bounds__(kThreads, 6)
    conv2d_tiled_kernel(Source source, Sink sink, const float* weight, const float* bias, Conv2dGeometry g,
                        int CC) {
  extern __shared__ float4 shared4[];
  float* s_w = reinterpret_cast<float*>(shared4);  // (KH*KW*CC, 16)
  const int TIH = (kTileH - 1) * g.SH + g.KH, TIW = (kTileW - 1) * g.SW + g.KW;
  float* s_in = s_w + g.KH * g.KW * CC * kBlockFilters;  // (CC, TIH, TIW)

  const BlockPlace b = block_place(g, kTileW);
  const int tile_y = b.tile_y, tile_x = b.tile_x, CG = b.CG, c_base = b.c_base, f0 = b.f0, f_end = b.f_end,
            group = b.group;
  const int py = b.slot / kTileW, px = b.slot % kTileW;  // the thread's pixel
  const int ho = tile_y * kTileH + py, wo = tile_x * kTileW + px;
  const int ih0 = tile_y * kTileH * g.SH - g.pad_top, iw0 = tile_x * kTileW * g.SW - g.pad_left;
  const int taps = g.KH * g.KW;

  for (int n = blockIdx.z; n < g.N; n += gridDim.z) {
    float acc[1][kThreadFilters];
#pragma unroll
    for (int j = 0; j < kThreadFilters; ++j) {
      const int f = f0 + group * kThreadFilters + j;
      acc[0][j] = (bias != nullptr && f < f_end) ? bias[f] : 0.0f;
    }
    for (int c0 = 0; c0 < CG; c0 += CC) {
      const int cn = min(CC, CG - c0);
      __syncthreads();  // the previous chunk (or image, or sink) is no longer reading
      stage_weights(s_w, weight, taps, CG, g.F, CC, c0, cn, f0, f_end);
      stage_input(s_in, source, g, n, ih0, iw0, TIH, TIW, c_base + c0, cn);
      __syncthreads();
      if (ho < g.HO && wo < g.WO) {
        for (int kh = 0; kh < g.KH; ++kh) {
          for (int kw = 0; kw < g.KW; ++kw) {
            const int tap = kh * g.KW + kw;
            for (int cc = 0; cc < cn; ++cc) {
              const float v = s_in[(cc * TIH + py * g.SH + kh) * TIW + px * g.SW + kw];
              const float4 w = shared4[(tap * CC + cc) * (kBlockFilters / 4) + group];
              acc[0][0] += v * w.x;
              acc[0][1] += v * w.y;
              acc[0][2] += v * w.z;
              acc[0][3] += v * w.w;
            }
          }
        }
      }
    }
    const TileAt at{n,     tile_y, tile_x, kTileH, kTileW, py, px, ho, wo, f0 + group * kThreadFilters,
                    f_end, group,  f0};
    sink(g, at, acc, s_w);
  }
}

// The grid of a tiled launch over g with tile_h x tile_w output tiles (see the kernels).
inline dim3 tile_grid(const Conv2dGeometry& g, int tile_h, int tile_w, const char* op) {
  const int64_t tiles = int64_t((g.HO + tile_h - 1) / tile_h) * ((g.WO + tile_w - 1) / tile_w);
  if (tiles > 0x7fffffff) throw std::runtime_error(std::string("hisvid::cuda::") + op + ": output too large");
  const int filter_tiles = g.G * ((g.group_filters() + kBlockFilters - 1) / kBlockFilters);
  if (filter_tiles > 65535)
    throw std::runtime_error(std::string("hisvid::cuda::") + op + ": too many filters");
  return dim3(static_cast<unsigned int>(tiles), static_cast<unsigned int>(filter_tiles),
              static_cast<unsigned int>(std::min(g.N, 65535)));
}

// Launches conv2d_tiled_kernel over g (tiled_channels(g) >= 1, else std::runtime_error): the
// block has at least the sink's Sink::kSharedFloats floats of shared memory.
template <typename Source, typename Sink>
void launch_tiled(const Source& source, const Sink& sink, const float* weight, const float* bias,
                  const Conv2dGeometry& g, cudaStream_t stream, const char* op) {
  const int64_t fit = tiled_channels(g);
  if (fit < 1)
    throw std::runtime_error(std::string("hisvid::cuda::") + op + ": the kernel is too large to tile");
  const int64_t per_channel = tiled_channel_floats(g);
  const int CC = static_cast<int>(std::min<int64_t>(fit, g.group_channels()));
  const dim3 grid = tile_grid(g, kTileH, kTileW, op);
  const size_t floats = std::max<size_t>(size_t(CC) * size_t(per_channel), size_t(Sink::kSharedFloats));
  conv2d_tiled_kernel<Source, Sink>
      <<<grid, kThreads, sizeof(float) * floats, stream>>>(source, sink, weight, bias, g, CC);
  HISVID_CHECK_LAUNCH();
}

// --- strips ---------------------------------------------------------------------------------

constexpr int kStripTile = 16;  // output pixels per block side
constexpr int kStripRows = 4;   // output rows per thread: 16 columns x 4 strips x 4 filter groups

static_assert(kStripTile * (kStripTile / kStripRows) * (kBlockFilters / kThreadFilters) == kThreads,
              "one thread per (strip, filter group)");

// The strips kernel's per-channel shared floats for a KH x KW kernel: input window and weights.
constexpr int strip_channel_floats(int KH, int KW) {
  return (kStripTile + KH - 1) * (kStripTile + KW - 1) + KH * KW * kBlockFilters;
}

// Whether the strips kernel runs g: a 3x3 kernel at stride 1 (any padding, groups, sizes).
inline bool strips_apply(const Conv2dGeometry& g) { return g.KH == 3 && g.KW == 3 && g.SH == 1 && g.SW == 1; }

// The share of the strips kernel's threads whose pixels exist: its 16x16 tiles over HO x WO.
inline double strip_tile_use(const Conv2dGeometry& g) {
  return double(g.HO) * g.WO /
         (double((g.HO + kStripTile - 1) / kStripTile * kStripTile) *
          ((g.WO + kStripTile - 1) / kStripTile * kStripTile));
}

// The convolution of source's input (N,H,W,C) with weight (KH,KW,C/G,F) (+ bias (F), or null)
// at stride 1, each thread's 4 x 4 sums handed to sink. Grid as conv2d_tiled_kernel's over
// 16x16 tiles. Dynamic shared memory: weights (KH*KW*CC, 16) then input planes (CC, 16+KH-1,
// 16+KW-1). At least 2 blocks per multiprocessor: without that bound ptxas gave the
// PooledGradSource instance 48 registers and spilled (with it, 71 and no spills).
template <int KH, int KW, typename Source, typename Sink>
__global__ void __launch_bounds__(kThreads, 2)
    conv2d_strips_kernel(Source source, Sink sink, const float* weight, const float* bias, Conv2dGeometry g,
                         int CC) {
  constexpr int TIH = kStripTile + KH - 1, TIW = kStripTile + KW - 1, kSpan = kStripRows + KH - 1;
  extern __shared__ float4 shared4[];
  float* s_w = reinterpret_cast<float*>(shared4);    // (KH*KW*CC, 16)
  float* s_in = s_w + KH * KW * CC * kBlockFilters;  // (CC, TIH, TIW)

  const BlockPlace b = block_place(g, kStripTile);
  const int tile_y = b.tile_y, tile_x = b.tile_x, CG = b.CG, c_base = b.c_base, f0 = b.f0, f_end = b.f_end,
            group = b.group;
  const int px = b.slot % kStripTile, py = b.slot / kStripTile * kStripRows;  // the strip's first pixel
  const int ho = tile_y * kStripTile + py, wo = tile_x * kStripTile + px;
  const int ih0 = tile_y * kStripTile - g.pad_top, iw0 = tile_x * kStripTile - g.pad_left;

  for (int n = blockIdx.z; n < g.N; n += gridDim.z) {
    float acc[kStripRows][kThreadFilters];
#pragma unroll
    for (int j = 0; j < kThreadFilters; ++j) {
      const int f = f0 + group * kThreadFilters + j;
      const float b = (bias != nullptr && f < f_end) ? bias[f] : 0.0f;
#pragma unroll
      for (int p = 0; p < kStripRows; ++p) acc[p][j] = b;
    }
    for (int c0 = 0; c0 < CG; c0 += CC) {
      const int cn = min(CC, CG - c0);
      __syncthreads();  // the previous chunk (or image, or sink) is no longer reading
      stage_weights(s_w, weight, KH * KW, CG, g.F, CC, c0, cn, f0, f_end);
      stage_input(s_in, source, g, n, ih0, iw0, TIH, TIW, c_base + c0, cn);
      __syncthreads();
      if (ho < g.HO && wo < g.WO) {
        for (int cc = 0; cc < cn; ++cc) {
          const float* in = s_in + (cc * TIH + py) * TIW + px;
#pragma unroll
          for (int kw = 0; kw < KW; ++kw) {
            float v[kSpan];
#pragma unroll
            for (int r = 0; r < kSpan; ++r) v[r] = in[r * TIW + kw];
#pragma unroll
            for (int kh = 0; kh < KH; ++kh) {
              const float4 w = shared4[((kh * KW + kw) * CC + cc) * (kBlockFilters / 4) + group];
#pragma unroll
              for (int p = 0; p < kStripRows; ++p) {
                acc[p][0] += v[p + kh] * w.x;
                acc[p][1] += v[p + kh] * w.y;
                acc[p][2] += v[p + kh] * w.z;
                acc[p][3] += v[p + kh] * w.w;
              }
            }
          }
        }
      }
    }
    const TileAt at{n,     tile_y, tile_x, kStripTile, kStripTile,
                    py,    px,     ho,     wo,         f0 + group * kThreadFilters,
                    f_end, group,  f0};
    sink(g, at, acc, s_w);
  }
}

// Launches conv2d_strips_kernel over g (strips_apply(g), else std::runtime_error): the block
// has at least the sink's Sink::kSharedFloats floats of shared memory.
template <typename Source, typename Sink>
void launch_strips(const Source& source, const Sink& sink, const float* weight, const float* bias,
                   const Conv2dGeometry& g, cudaStream_t stream, const char* op) {
  if (!strips_apply(g))
    throw std::runtime_error(std::string("hisvid::cuda::") + op + ": not a 3x3 stride-1 kernel");
  constexpr int per_channel = strip_channel_floats(3, 3);
  const int CC = std::min(static_cast<int>(kSharedBytes / sizeof(float)) / per_channel, g.group_channels());
  const dim3 grid = tile_grid(g, kStripTile, kStripTile, op);
  const size_t floats = std::max<size_t>(size_t(CC) * per_channel, size_t(Sink::kSharedFloats));
  conv2d_strips_kernel<3, 3, Source, Sink>
      <<<grid, kThreads, sizeof(float) * floats, stream>>>(source, sink, weight, bias, g, CC);
  HISVID_CHECK_LAUNCH();
}

// With stride 1 the gradient of the input is itself a forward convolution: of dout
// (N,HO,WO,F) with the kernel flipped in both spatial axes and its channel axes swapped,
// (KH,KW,F,C), padded by KH-1-pad_top above and KW-1-pad_left on the left. Its geometry:
inline Conv2dGeometry transposed_geometry(const Conv2dGeometry& g) {
  return Conv2dGeometry{
      g.N, g.HO, g.WO, g.F, g.C, g.KH, g.KW, 1, 1, g.H, g.W, g.KH - 1 - g.pad_top, g.KW - 1 - g.pad_left,
      g.G};
}

// Writes the flipped kernel of g's weight (KH,KW,C/G,F) to the workspace of stream's context
// and returns it: flipped (KH,KW,F/G,C)[kh][kw][f][c] = weight[KH-1-kh][KW-1-kw][c mod C/G][f'],
// f' = filter f of c's group, the kernel of the transposed convolution (F -> C channels, same
// G). It stays valid for the work enqueued on `stream` before the next workspace call.
// Defined in kernels/conv2d_direct.cu.
float* flipped_weight(const float* weight, const Conv2dGeometry& g, cudaStream_t stream, const char* op);

}  // namespace hisvid::cuda::tiled
