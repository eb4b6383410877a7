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

// Input channels the kernel stages at a time (0: not even one fits).
inline int64_t tiled_channels(const Conv2dGeometry& g) {
  const int64_t TIH = int64_t(kTileH - 1) * g.SH + g.KH, TIW = int64_t(kTileW - 1) * g.SW + g.KW;
  const int64_t per_channel = TIH * TIW + int64_t(g.KH) * g.KW * kBlockFilters;  // floats
  return int64_t(kSharedBytes / sizeof(float)) / per_channel;
}

// Where a thread's sums belong: image n, the block's tile (tile_y, tile_x) of 8x8 output
// pixels, the thread's pixel (py, px) in it and output pixel (ho, wo) (possibly past the
// output's edge, in a partial tile), its 4 filters f .. f+3 (those >= f_end do not exist),
// which of the block's 4 filter groups they are, and the block's first filter f0.
struct TileAt {
  int64_t n;
  int tile_y, tile_x, py, px, ho, wo;
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

// Writes the sums to out (N,HO,WO,F).
struct StoreOutput {
  float* out;
  static constexpr int kSharedFloats = 0;
  __device__ void operator()(const Conv2dGeometry& g, const TileAt& at, const float (&acc)[kThreadFilters],
                             float* /*shared*/) const {
    if (at.ho >= g.HO || at.wo >= g.WO) return;
    float* dst = out + ((at.n * g.HO + at.ho) * g.WO + at.wo) * g.F;
#pragma unroll
    for (int j = 0; j < kThreadFilters; ++j) {
      if (at.f + j < at.f_end) dst[at.f + j] = acc[j];
    }
  }
};

// The convolution of source's input (N,H,W,C) with weight (KH,KW,C/G,F) (+ bias (F), or
// null), each thread's sums handed to sink. Grid: x the output tiles of an image, y the tiles
// of 16 filters (per group, group-major), z images (looping when N > gridDim.z).
// Dynamic shared memory: weights (KH*KW*CC, 16) then input planes (CC, TIH, TIW).
template <typename Source, typename Sink>
__global__ void __launch_bounds__(kThreads) conv2d_tiled_kernel(Source source, Sink sink, const float* weight,
                                                                const float* bias, Conv2dGeometry g, int CC) {
  extern __shared__ float4 shared4[];
  float* s_w = reinterpret_cast<float*>(shared4);  // (KH*KW*CC, 16)
  const int TIH = (kTileH - 1) * g.SH + g.KH, TIW = (kTileW - 1) * g.SW + g.KW;
  float* s_in = s_w + g.KH * g.KW * CC * kBlockFilters;  // (CC, TIH, TIW)

  const int tiles_w = (g.WO + kTileW - 1) / kTileW;
  const int tile_y = blockIdx.x / tiles_w, tile_x = blockIdx.x % tiles_w;
  const int CG = g.group_channels(), FG = g.group_filters(),
            per_group = (FG + kBlockFilters - 1) / kBlockFilters;
  const int conv_group = blockIdx.y / per_group, c_base = conv_group * CG;  // the block's input channels
  const int f0 = conv_group * FG + (blockIdx.y % per_group) * kBlockFilters, f_end = (conv_group + 1) * FG;
  const int group = threadIdx.x % (kBlockFilters / kThreadFilters);  // which 4 filters
  const int pixel = threadIdx.x / (kBlockFilters / kThreadFilters);
  const int py = pixel / kTileW, px = pixel % kTileW;
  const int ho = tile_y * kTileH + py, wo = tile_x * kTileW + px;
  const int ih0 = tile_y * kTileH * g.SH - g.pad_top, iw0 = tile_x * kTileW * g.SW - g.pad_left;
  const int taps = g.KH * g.KW;

  for (int n = blockIdx.z; n < g.N; n += gridDim.z) {
    float acc[kThreadFilters];
#pragma unroll
    for (int j = 0; j < kThreadFilters; ++j) {
      const int f = f0 + group * kThreadFilters + j;
      acc[j] = (bias != nullptr && f < f_end) ? bias[f] : 0.0f;
    }
    for (int c0 = 0; c0 < CG; c0 += CC) {
      const int cn = min(CC, CG - c0);
      __syncthreads();  // the previous chunk (or image, or sink) is no longer reading
      for (int i = threadIdx.x; i < taps * cn * kBlockFilters; i += blockDim.x) {
        const int fl = i % kBlockFilters, rest = i / kBlockFilters;
        const int cc = rest % cn, tap = rest / cn;
        const int f = f0 + fl;
        s_w[(tap * CC + cc) * kBlockFilters + fl] =
            f < f_end ? weight[(int64_t(tap) * CG + c0 + cc) * g.F + f] : 0.0f;
      }
      for (int i = threadIdx.x; i < TIH * TIW * cn; i += blockDim.x) {
        const int cc = i % cn, rest = i / cn;
        const int col = rest % TIW, row = rest / TIW;
        const int ih = ih0 + row, iw = iw0 + col;
        s_in[(cc * TIH + row) * TIW + col] =
            (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) ? source(n, ih, iw, c_base + c0 + cc) : 0.0f;
      }
      __syncthreads();
      if (ho < g.HO && wo < g.WO) {
        for (int kh = 0; kh < g.KH; ++kh) {
          for (int kw = 0; kw < g.KW; ++kw) {
            const int tap = kh * g.KW + kw;
            for (int cc = 0; cc < cn; ++cc) {
              const float v = s_in[(cc * TIH + py * g.SH + kh) * TIW + px * g.SW + kw];
              const float4 w = shared4[(tap * CC + cc) * (kBlockFilters / 4) + group];
              acc[0] += v * w.x;
              acc[1] += v * w.y;
              acc[2] += v * w.z;
              acc[3] += v * w.w;
            }
          }
        }
      }
    }
    const TileAt at{n, tile_y, tile_x, py, px, ho, wo, f0 + group * kThreadFilters, f_end, group, f0};
    sink(g, at, acc, s_w);
  }
}

// Launches conv2d_tiled_kernel over g (tiled_channels(g) >= 1, else std::runtime_error): the
// block has at least the sink's Sink::kSharedFloats floats of shared memory.
template <typename Source, typename Sink>
void launch_tiled(const Source& source, const Sink& sink, const float* weight, const float* bias,
                  const Conv2dGeometry& g, cudaStream_t stream, const char* op) {
  const int64_t fit = tiled_channels(g);
  if (fit < 1)
    throw std::runtime_error(std::string("hisvid::cuda::") + op + ": the kernel is too large to tile");
  const int64_t TIH = int64_t(kTileH - 1) * g.SH + g.KH, TIW = int64_t(kTileW - 1) * g.SW + g.KW;
  const int64_t per_channel = TIH * TIW + int64_t(g.KH) * g.KW * kBlockFilters;  // floats
  const int CC = static_cast<int>(std::min<int64_t>(fit, g.group_channels()));
  const int64_t tiles = int64_t((g.HO + kTileH - 1) / kTileH) * ((g.WO + kTileW - 1) / kTileW);
  if (tiles > 0x7fffffff) throw std::runtime_error(std::string("hisvid::cuda::") + op + ": output too large");
  const int filter_tiles = g.G * ((g.group_filters() + kBlockFilters - 1) / kBlockFilters);
  const dim3 grid(static_cast<unsigned int>(tiles), static_cast<unsigned int>(filter_tiles),
                  static_cast<unsigned int>(std::min(g.N, 65535)));
  if (grid.y > 65535) throw std::runtime_error(std::string("hisvid::cuda::") + op + ": too many filters");
  const size_t floats = std::max<size_t>(size_t(CC) * size_t(per_channel), size_t(Sink::kSharedFloats));
  conv2d_tiled_kernel<Source, Sink>
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
