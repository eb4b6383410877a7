// kernels/conv2d_avx2.cpp — AVX2 + FMA direct convolution (float32), channels-last.
//
// Each image is first copied into a zero-padded (HP,WP,C) buffer, HP = (HO-1)*SH + KH and
// WP = (WO-1)*SW + KW, so the inner loops never test bounds. The forward micro-kernel keeps a
// tile of P output pixels x V vectors of 8 filters in ymm registers and walks the KH*KW*C/G
// patch once:
//   acc[p][v] += broadcast(x[p][kh,kw,c]) * w[kh,kw,c, 8v : 8v+8]
// The tile follows the filters of a group (FG = F/G) and the row's WO pixels: P = 8, V = 1 for
// FG <= 8 on rows of 8 pixels or more; else P = 6 (12 accumulators, 2 weight vectors and 1
// broadcast input of the 16 registers) for FG <= 16 on rows of 6 or more; else P = 4, filters 16
// at a time (6 pixels measured no faster for more than 16 filters); P = 1 on rows under 4.
// The last vector of a group's filters is loaded and stored through a lane mask when FG is not
// a multiple of 8. Groups run in place: group q's filters read channels q*C/G .. (q+1)*C/G - 1
// of every padded pixel. Backward data is that same forward on dout, with the kernel flipped in
// space and its channel axes swapped within each group, and padding KH-1-pad_top /
// KW-1-pad_left (stride 1). Backward filter keeps a tile of CB input channels x V vectors of
// filters of one kernel tap (kh, kw) in registers while it walks every output pixel of an image,
//   acc[j][v] += broadcast(x[pixel][kh, kw, c0 + j]) * dout[pixel][8v : 8v + 8],
// then adds the tile to the thread's private (KH,KW,C/G,F) buffer; the buffers are added in
// thread order at the end (deterministic for a given thread count).
#include "kernels/conv2d_avx2.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <vector>

namespace hisvid::cpu::avx2 {

namespace {

constexpr int kTilePixels = 4;  // output pixels per micro-kernel tile
// Pixels per tile of two filter vectors: 12 accumulators. On the LRCN's first layer (64x64, 3 -> 16
// filters) 2.6-2.9 ms against 3.0-4.4 for 4 pixels (kernel lab, 2-core AMD EPYC, 2026-11-28).
constexpr int kWideTilePixels = 6;
// Below this many multiply-adds a call runs on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 16;

struct Padded {
  int HP, WP;  // padded extent
  int pad_top, pad_left;
};

Padded padded_extent(const Conv2dGeometry& g) {
  return {(g.HO - 1) * g.SH + g.KH, (g.WO - 1) * g.SW + g.KW, g.pad_top, g.pad_left};
}

// dst (HP,WP,C) = image (H,W,C) placed at (pad_top, pad_left), zeros around it.
void pad_image(float* dst, const float* image, const Conv2dGeometry& g, const Padded& p) {
  std::fill(dst, dst + int64_t(p.HP) * p.WP * g.C, 0.0f);
  for (int hp = 0; hp < p.HP; ++hp) {
    const int h = hp - p.pad_top;
    if (h < 0 || h >= g.H) continue;
    const int w0 = std::max(0, p.pad_left),
              w1 = std::min(p.WP, p.pad_left + g.W);  // padded columns holding data
    if (w1 <= w0) continue;
    std::copy(image + (int64_t(h) * g.W + (w0 - p.pad_left)) * g.C,
              image + (int64_t(h) * g.W + (w1 - p.pad_left)) * g.C, dst + (int64_t(hp) * p.WP + w0) * g.C);
  }
}

// out[p, f0 : f0 + 8V] for the P pixels whose patches start at x + p * pixel_stride.
// x: padded input (XC channels a pixel) at the patch origin of pixel 0 and the first channel of
// the group; w: weight (KH,KW,C,F) + f0, C the group's channels; the last of the V vectors goes
// through `last` (a lane mask).
template <int P, int V>
__attribute__((target("avx2,fma"))) inline void forward_tile(float* out, const float* x, int64_t pixel_stride,
                                                             int64_t row_stride, const float* w,
                                                             const float* bias, int KH, int KW, int C, int XC,
                                                             int F, __m256i last) {
  __m256 acc[P][V];
  for (int v = 0; v < V; ++v) {
    const __m256 b = bias == nullptr ? _mm256_setzero_ps()
                                     : (v + 1 == V ? _mm256_maskload_ps(bias + v * kLanes, last)
                                                   : _mm256_loadu_ps(bias + v * kLanes));
    for (int p = 0; p < P; ++p) acc[p][v] = b;
  }
  for (int kh = 0; kh < KH; ++kh) {
    for (int kw = 0; kw < KW; ++kw) {
      const float* xk = x + kh * row_stride + int64_t(kw) * XC;
      const float* wk = w + (int64_t(kh) * KW + kw) * C * F;
      for (int c = 0; c < C; ++c) {
        __m256 wv[V];
        for (int v = 0; v < V; ++v) {
          wv[v] = v + 1 == V ? _mm256_maskload_ps(wk + int64_t(c) * F + v * kLanes, last)
                             : _mm256_loadu_ps(wk + int64_t(c) * F + v * kLanes);
        }
        for (int p = 0; p < P; ++p) {
          const __m256 xv = _mm256_broadcast_ss(xk + p * pixel_stride + c);
          for (int v = 0; v < V; ++v) acc[p][v] = _mm256_fmadd_ps(xv, wv[v], acc[p][v]);
        }
      }
    }
  }
  for (int p = 0; p < P; ++p) {
    for (int v = 0; v < V; ++v) {
      float* o = out + int64_t(p) * F + v * kLanes;
      if (v + 1 == V) {
        _mm256_maskstore_ps(o, last, acc[p][v]);
      } else {
        _mm256_storeu_ps(o, acc[p][v]);
      }
    }
  }
}

// P output pixels (x F filters) of one image's row ho from its padded copy, group by group: group
// q's filters [q*FG, (q+1)*FG) read its channels [q*CG, (q+1)*CG) of every padded pixel.
template <int P>
__attribute__((target("avx2,fma"))) void forward_pixels(float* out, const float* padded, int ho, int wo0,
                                                        const float* weight, const float* bias,
                                                        const Conv2dGeometry& g, const Padded& p) {
  const int CG = g.group_channels(), FG = g.group_filters();
  const int64_t pixel_stride = int64_t(g.SW) * g.C, row_stride = int64_t(p.WP) * g.C;
  for (int q = 0; q < g.G; ++q) {
    const float* x = padded + (int64_t(ho) * g.SH * p.WP + int64_t(wo0) * g.SW) * g.C + int64_t(q) * CG;
    for (int f0 = q * FG; f0 < (q + 1) * FG; f0 += 2 * kLanes) {
      const int left = (q + 1) * FG - f0;
      const float* w = weight + f0;
      const float* b = bias == nullptr ? nullptr : bias + f0;
      float* o = out + f0;
      if (left > kLanes) {
        forward_tile<P, 2>(o, x, pixel_stride, row_stride, w, b, g.KH, g.KW, CG, g.C, g.F,
                           lane_mask(std::min(left - kLanes, kLanes)));
      } else {
        forward_tile<P, 1>(o, x, pixel_stride, row_stride, w, b, g.KH, g.KW, CG, g.C, g.F, lane_mask(left));
      }
    }
  }
}

// dw[kh, kw, c0 : c0+CB, f0 : f0 + 8V] += the sum over every output pixel of one image of
// x[pixel][kh, kw, c0 + j] * dout[pixel][f0 + 8v ...]; the last vector through `last`.
template <int CB, int V>
__attribute__((target("avx2,fma"))) void filter_tile(float* dw, const float* padded, const float* dout,
                                                     int kh, int kw, int c0, int f0, const Conv2dGeometry& g,
                                                     const Padded& p, __m256i last) {
  const int CG = g.group_channels(), cg0 = c0 % CG;  // c0's place in its group
  __m256 acc[CB][V];
  for (int j = 0; j < CB; ++j) {
    for (int v = 0; v < V; ++v) acc[j][v] = _mm256_setzero_ps();
  }
  for (int ho = 0; ho < g.HO; ++ho) {
    const float* x = padded + ((int64_t(ho) * g.SH + kh) * p.WP + kw) * g.C + c0;  // pixel (ho, 0)
    const float* d = dout + int64_t(ho) * g.WO * g.F + f0;                         // (WO,F)
    for (int wo = 0; wo < g.WO; ++wo, x += int64_t(g.SW) * g.C, d += g.F) {
      __m256 dv[V];
      for (int v = 0; v < V; ++v) {
        dv[v] = v + 1 == V ? _mm256_maskload_ps(d + v * kLanes, last) : _mm256_loadu_ps(d + v * kLanes);
      }
      for (int j = 0; j < CB; ++j) {
        const __m256 xv = _mm256_broadcast_ss(x + j);
        for (int v = 0; v < V; ++v) acc[j][v] = _mm256_fmadd_ps(xv, dv[v], acc[j][v]);
      }
    }
  }
  for (int j = 0; j < CB; ++j) {
    float* w = dw + ((int64_t(kh) * g.KW + kw) * CG + cg0 + j) * g.F + f0;
    for (int v = 0; v < V; ++v) {
      float* wv = w + v * kLanes;
      if (v + 1 == V) {
        _mm256_maskstore_ps(wv, last, _mm256_add_ps(_mm256_maskload_ps(wv, last), acc[j][v]));
      } else {
        _mm256_storeu_ps(wv, _mm256_add_ps(_mm256_loadu_ps(wv), acc[j][v]));
      }
    }
  }
}

// Filters f0 .. f0 + 8V of group q against the group's channels, 4 at a time.
template <int V>
void filter_tiles(float* dw, const float* padded, const float* dout, int kh, int kw, int q, int f0,
                  const Conv2dGeometry& g, const Padded& p, __m256i last) {
  constexpr int kMaxChannels = 4;  // CB x V accumulators + V gradients + 1 input within 16 registers
  const int c_end = (q + 1) * g.group_channels();
  int c0 = q * g.group_channels();
  for (; c0 + kMaxChannels <= c_end; c0 += kMaxChannels)
    filter_tile<4, V>(dw, padded, dout, kh, kw, c0, f0, g, p, last);
  switch (c_end - c0) {
    case 3:
      filter_tile<3, V>(dw, padded, dout, kh, kw, c0, f0, g, p, last);
      break;
    case 2:
      filter_tile<2, V>(dw, padded, dout, kh, kw, c0, f0, g, p, last);
      break;
    case 1:
      filter_tile<1, V>(dw, padded, dout, kh, kw, c0, f0, g, p, last);
      break;
    default:
      break;
  }
}

// One image's contribution to dw (KH,KW,C/G,F) and db (F), group by group.
__attribute__((target("avx2,fma"))) void accumulate_filter_image(float* dw, float* db, const float* padded,
                                                                 const float* dout, const Conv2dGeometry& g,
                                                                 const Padded& p) {
  const int FG = g.group_filters();
  for (int q = 0; q < g.G; ++q) {
    for (int f0 = q * FG; f0 < (q + 1) * FG; f0 += 2 * kLanes) {
      const int left = (q + 1) * FG - f0;
      for (int kh = 0; kh < g.KH; ++kh) {
        for (int kw = 0; kw < g.KW; ++kw) {
          if (left > kLanes) {
            filter_tiles<2>(dw, padded, dout, kh, kw, q, f0, g, p,
                            lane_mask(std::min(left - kLanes, kLanes)));
          } else {
            filter_tiles<1>(dw, padded, dout, kh, kw, q, f0, g, p, lane_mask(left));
          }
        }
      }
    }
  }
  const int64_t pixels = int64_t(g.HO) * g.WO;
  for (int64_t i = 0; i < pixels; ++i) {
    for (int f = 0; f < g.F; ++f) db[f] += dout[i * g.F + f];
  }
}

// The WO pixels of output row ho in tiles of P (WO >= P); the last tile ends at WO and may
// overlap the one before it, which then writes the same values twice.
template <int P>
void forward_row(float* row, const float* padded, int ho, const float* weight, const float* bias,
                 const Conv2dGeometry& g, const Padded& p) {
  for (int wo = 0; wo < g.WO; wo += P) {
    const int start = std::min(wo, g.WO - P);
    forward_pixels<P>(row + int64_t(start) * g.F, padded, ho, start, weight, bias, g, p);
  }
}

// The tag of the per-thread padded copy of an image (thread_buffer).
struct PaddedImage;

}  // namespace

bool available() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

void forward(float* out,           // (N,HO,WO,F)
             const float* inp,     // (N,H,W,C)
             const float* weight,  // (KH,KW,C/G,F)
             const float* bias,    // (F) or null
             const Conv2dGeometry& g) {
  const Padded p = padded_extent(g);
  const int64_t image = int64_t(g.H) * g.W * g.C, out_image = int64_t(g.HO) * g.WO * g.F;
  const int64_t work = int64_t(g.N) * g.HO * g.WO * g.KH * g.KW * g.group_channels() * g.F;
#pragma omp parallel for schedule(static) if (work > kParallelMin)
  for (int64_t n = 0; n < g.N; ++n) {
    float* padded = thread_buffer<float, PaddedImage>(int64_t(p.HP) * p.WP * g.C);  // (HP,WP,C)
    pad_image(padded, inp + n * image, g, p);
    for (int ho = 0; ho < g.HO; ++ho) {
      float* row = out + n * out_image + int64_t(ho) * g.WO * g.F;  // (WO,F)
      if (g.group_filters() <= kLanes &&
          g.WO >= 2 * kTilePixels) {  // one vector of filters: a wider tile fills the registers
        forward_row<2 * kTilePixels>(row, padded, ho, weight, bias, g, p);
      } else if (g.group_filters() <= 2 * kLanes && g.WO >= kWideTilePixels) {
        forward_row<kWideTilePixels>(row, padded, ho, weight, bias, g, p);
      } else if (g.WO >= kTilePixels) {
        forward_row<kTilePixels>(row, padded, ho, weight, bias, g, p);
      } else {
        forward_row<1>(row, padded, ho, weight, bias, g, p);
      }
    }
  }
}

void backward_data(float* dinp,          // (N,H,W,C)
                   const float* dout,    // (N,HO,WO,F)
                   const float* weight,  // (KH,KW,C/G,F)
                   const Conv2dGeometry& g) {
  // dinp[ih,iw,c] = sum_{kh,kw,f} dout[ih + pad_top - kh, iw + pad_left - kw, f] * w[kh,kw,c,f]
  // over the filters f of c's group: a stride-1 forward over dout, grouped alike, with
  // w'[kh,kw,f,c] = w[KH-1-kh, KW-1-kw, c, f] (f and c counted within their group in the kernels).
  const int CG = g.group_channels(), FG = g.group_filters();
  std::vector<float> flipped(size_t(g.KH) * g.KW * FG * g.C);  // (KH,KW,F/G,C)
  for (int kh = 0; kh < g.KH; ++kh) {
    for (int kw = 0; kw < g.KW; ++kw) {
      const float* src = weight + (int64_t(g.KH - 1 - kh) * g.KW + (g.KW - 1 - kw)) * CG * g.F;  // (C/G,F)
      float* dst = flipped.data() + (int64_t(kh) * g.KW + kw) * FG * g.C;                        // (F/G,C)
      for (int q = 0; q < g.G; ++q) {
        for (int c = 0; c < CG; ++c) {
          for (int f = 0; f < FG; ++f)
            dst[int64_t(f) * g.C + q * CG + c] = src[int64_t(c) * g.F + q * FG + f];
        }
      }
    }
  }
  Conv2dGeometry t{};
  t.N = g.N;
  t.H = g.HO;
  t.W = g.WO;
  t.C = g.F;
  t.F = g.C;
  t.KH = g.KH;
  t.KW = g.KW;
  t.SH = t.SW = 1;
  t.HO = g.H;
  t.WO = g.W;
  t.pad_top = g.KH - 1 - g.pad_top;
  t.pad_left = g.KW - 1 - g.pad_left;
  t.G = g.G;
  forward(dinp, dout, flipped.data(), nullptr, t);
}

void backward_filter(float* dweight,     // (KH,KW,C/G,F)
                     float* dbias,       // (F) or null
                     const float* dout,  // (N,HO,WO,F)
                     const float* inp,   // (N,H,W,C)
                     const Conv2dGeometry& g) {
  const Padded p = padded_extent(g);
  const int64_t KKF = int64_t(g.KH) * g.KW * g.group_channels() * g.F;
  const int64_t image = int64_t(g.H) * g.W * g.C, out_image = int64_t(g.HO) * g.WO * g.F;
  const int64_t work = int64_t(g.N) * g.HO * g.WO * KKF;
  const int threads = work > kParallelMin ? omp_get_max_threads() : 1;
  // One (KH,KW,C/G,F) + (F) partial sum per thread.
  const int64_t stride = (KKF + g.F + kLanes - 1) / kLanes * kLanes;
  std::vector<float> partial(size_t(threads) * stride, 0.0f);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    float* dw = partial.data() + t * stride;  // (KH,KW,C/G,F)
    float* db = dw + KKF;                     // (F)
    float* padded = thread_buffer<float, PaddedImage>(int64_t(p.HP) * p.WP * g.C);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.N; ++n) {
      pad_image(padded, inp + n * image, g, p);
      accumulate_filter_image(dw, db, padded, dout + n * out_image, g, p);
    }
  }
  for (int t = 0; t < threads; ++t) {
    const float* dw = partial.data() + t * stride;
    for (int64_t i = 0; i < KKF; ++i) dweight[i] += dw[i];
    if (dbias != nullptr) {
      for (int f = 0; f < g.F; ++f) dbias[f] += dw[KKF + f];
    }
  }
}

}  // namespace hisvid::cpu::avx2
