// kernels/conv2d_direct.cu — conv2d_forward_direct_v1, version 1 of a hand-written direct
// convolution for layers with few input channels (the LRCN's 3 -> 16 first layer on 64x64
// frames), where im2col-style GEMMs are mostly overhead. A lab row of Conv2dForward
// (kernels/conv2d_table.cpp): the harness checks it against the naive loops and times it
// beside cuDNN; the engine runs it only once measured faster (not yet, on no GPU so far).
//
// One block computes an 8x8 tile of output pixels of one image for 16 filters; each of its
// 256 threads computes one pixel for 4 filters (the accumulators stay in registers). The
// block stages in shared memory, a chunk of input channels at a time:
//   the input window of the tile, (7*SH + KH) x (7*SW + KW) per channel, one plane per
//   channel so that neighbouring pixels read neighbouring words, zeros where it falls in
//   the padding (so the larger bottom/right padding of 'same' needs no special case);
//   the weights of the chunk for the block's 16 filters, (KH*KW*CC, 16), read as float4.
// The channel chunk CC is the largest that fits in 48 KiB. When not even one channel fits
// (kernels of several dozen pixels a side), a plain kernel without shared memory, one
// thread per output element, computes the same sums.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/conv2d.h"
#include "kernels/cuda_context.h"

namespace hisvid::cuda {

namespace {

constexpr int kTileH = 8, kTileW = 8;  // output pixels per block
constexpr int kBlockFilters = 16;      // filters per block
constexpr int kThreadFilters = 4;      // filters per thread: 64 pixels x 4 groups = 256 threads
constexpr int kDirectThreads = kTileH * kTileW * (kBlockFilters / kThreadFilters);
constexpr size_t kSharedBytes = 48 * 1024;

static_assert(kDirectThreads == 256, "one thread per (pixel, filter group)");

// out (N,HO,WO,F) from inp (N,H,W,C), weight (KH,KW,C,F), bias (F) or null. Grid: x the
// output tiles of an image, y the groups of 16 filters, z images (looping when N > gridDim.z).
// Dynamic shared memory: weights (KH*KW*CC, 16) then input planes (CC, TIH, TIW).
__global__ void __launch_bounds__(kDirectThreads)
    conv2d_direct_tiled_kernel(float* out, const float* inp, const float* weight, const float* bias,
                               Conv2dGeometry g, int CC) {
  extern __shared__ float4 shared4[];
  float* s_w = reinterpret_cast<float*>(shared4);  // (KH*KW*CC, 16)
  const int TIH = (kTileH - 1) * g.SH + g.KH, TIW = (kTileW - 1) * g.SW + g.KW;
  float* s_in = s_w + g.KH * g.KW * CC * kBlockFilters;  // (CC, TIH, TIW)

  const int tiles_w = (g.WO + kTileW - 1) / kTileW;
  const int tile_y = blockIdx.x / tiles_w, tile_x = blockIdx.x % tiles_w;
  const int f0 = blockIdx.y * kBlockFilters;
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
      acc[j] = (bias != nullptr && f < g.F) ? bias[f] : 0.0f;
    }
    for (int c0 = 0; c0 < g.C; c0 += CC) {
      const int cn = min(CC, g.C - c0);
      __syncthreads();  // the previous chunk (or image) is no longer being read
      for (int i = threadIdx.x; i < taps * cn * kBlockFilters; i += blockDim.x) {
        const int fl = i % kBlockFilters, rest = i / kBlockFilters;
        const int cc = rest % cn, tap = rest / cn;
        const int f = f0 + fl;
        s_w[(tap * CC + cc) * kBlockFilters + fl] =
            f < g.F ? weight[(int64_t(tap) * g.C + c0 + cc) * g.F + f] : 0.0f;
      }
      for (int i = threadIdx.x; i < TIH * TIW * cn; i += blockDim.x) {
        const int cc = i % cn, rest = i / cn;
        const int col = rest % TIW, row = rest / TIW;
        const int ih = ih0 + row, iw = iw0 + col;
        s_in[(cc * TIH + row) * TIW + col] = (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W)
                                                 ? inp[((int64_t(n) * g.H + ih) * g.W + iw) * g.C + c0 + cc]
                                                 : 0.0f;
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
    if (ho < g.HO && wo < g.WO) {
      float* dst = out + ((int64_t(n) * g.HO + ho) * g.WO + wo) * g.F;
#pragma unroll
      for (int j = 0; j < kThreadFilters; ++j) {
        const int f = f0 + group * kThreadFilters + j;
        if (f < g.F) dst[f] = acc[j];
      }
    }
  }
}

// The same convolution without shared memory, one thread per output element (N,HO,WO,F).
__global__ void conv2d_direct_plain_kernel(float* out, const float* inp, const float* weight,
                                           const float* bias, Conv2dGeometry g) {
  const int64_t total = int64_t(g.N) * g.HO * g.WO * g.F;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int f = static_cast<int>(i % g.F);
    int64_t rest = i / g.F;
    const int wo = static_cast<int>(rest % g.WO);
    rest /= g.WO;
    const int ho = static_cast<int>(rest % g.HO);
    const int64_t n = rest / g.HO;
    float acc = bias != nullptr ? bias[f] : 0.0f;
    for (int kh = 0; kh < g.KH; ++kh) {
      const int ih = ho * g.SH - g.pad_top + kh;
      if (ih < 0 || ih >= g.H) continue;
      for (int kw = 0; kw < g.KW; ++kw) {
        const int iw = wo * g.SW - g.pad_left + kw;
        if (iw < 0 || iw >= g.W) continue;
        const float* x = inp + ((n * g.H + ih) * g.W + iw) * g.C;
        const float* w = weight + (int64_t(kh) * g.KW + kw) * g.C * g.F + f;
        for (int c = 0; c < g.C; ++c) acc += x[c] * w[int64_t(c) * g.F];
      }
    }
    out[i] = acc;
  }
}

}  // namespace

void conv2d_forward_direct_v1(const Conv2dForward<float>& k, cudaStream_t stream) {
  float* out = k.out;
  const float *inp = k.inp, *weight = k.weight, *bias = k.bias;
  const Conv2dGeometry& g = k.g;
  if (g.N < 0 || g.H < 1 || g.W < 1 || g.C < 1 || g.F < 1 || g.KH < 1 || g.KW < 1 || g.SH < 1 || g.SW < 1 ||
      g.HO < 1 || g.WO < 1 || g.pad_top < 0 || g.pad_left < 0) {
    throw std::runtime_error("hisvid::cuda::conv2d_forward_direct_v1: invalid geometry");
  }
  if (g.N == 0) return;
  const int64_t TIH = int64_t(kTileH - 1) * g.SH + g.KH, TIW = int64_t(kTileW - 1) * g.SW + g.KW;
  const int64_t per_channel = TIH * TIW + int64_t(g.KH) * g.KW * kBlockFilters;  // floats
  const int64_t fit = int64_t(kSharedBytes / sizeof(float)) / per_channel;
  if (fit < 1) {
    const int64_t total = int64_t(g.N) * g.HO * g.WO * g.F;
    conv2d_direct_plain_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(out, inp, weight, bias,
                                                                                      g);
    HISVID_CHECK_LAUNCH();
    return;
  }
  const int CC = static_cast<int>(std::min<int64_t>(fit, g.C));
  const int64_t tiles = int64_t((g.HO + kTileH - 1) / kTileH) * ((g.WO + kTileW - 1) / kTileW);
  if (tiles > 0x7fffffff)
    throw std::runtime_error("hisvid::cuda::conv2d_forward_direct_v1: output too large");
  const dim3 grid(static_cast<unsigned int>(tiles), (g.F + kBlockFilters - 1) / kBlockFilters,
                  static_cast<unsigned int>(std::min(g.N, 65535)));
  if (grid.y > 65535) throw std::runtime_error("hisvid::cuda::conv2d_forward_direct_v1: too many filters");
  const size_t shared = sizeof(float) * size_t(CC) * size_t(per_channel);
  conv2d_direct_tiled_kernel<<<grid, kDirectThreads, shared, stream>>>(out, inp, weight, bias, g, CC);
  HISVID_CHECK_LAUNCH();
}

}  // namespace hisvid::cuda
