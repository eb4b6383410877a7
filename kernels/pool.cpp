// kernels/pool.cpp — kernels/pool.h on the host: Keras MaxPooling2D and global average
// pooling, channels-last; the naive rows and the vectorised max-pool forward (portable, AVX2 and
// AVX-512 forms of one loop).
// Dimension letters as in kernels/common.h.
//
// Each output pixel scans its window in row-major order (kh, then kw) over the positions that
// lie inside the image, so padded positions never win; a later position wins only when it is
// strictly greater, which keeps the first maximum.
#include "kernels/pool.h"

#include <algorithm>
#include <cstring>

#include "kernels/conv2d_avx2.h"
#include "kernels/conv2d_avx512.h"

namespace hisvid {
namespace {

// Below this many outputs the loops run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;
// Channels whose running maxima the max-pool forward keeps in registers, as GCC vectors.
constexpr int kPoolBlock = 16;
typedef float Floats16 __attribute__((vector_size(kPoolBlock * sizeof(float))));
typedef int32_t Ints16 __attribute__((vector_size(kPoolBlock * sizeof(int32_t))));

}  // namespace
}  // namespace hisvid

namespace hisvid::cpu {

namespace {

// Output row nho = (n, ho) of the max-pool. The loops are branch-free over the channels (GCC
// vectors for whole blocks of 16, then a loop the compiler vectorises), compiled at the
// processor's baseline here and with AVX2 or AVX-512 where this body is inlined into the target
// functions below. Selecting, not computing, every form gives the same bits. The AVX-512 form
// pools three 64x64x16 images (2x2 windows) 2.8x faster on one thread than the earlier loop at
// the baseline's width, which kept the maxima in memory (kernel lab, 2-core Intel Xeon VM with
// AVX-512, 2026-11-28).
__attribute__((always_inline)) inline void pool_row(const Maxpool2dForward<float>& k, int64_t nho) {
  using T = float;
  const Pool2dGeometry& g = k.g;
  const int64_t C = g.C;
  const int64_t n = nho / g.HO;
  const int ho = static_cast<int>(nho % g.HO);
  const T* image = k.inp + n * g.H * g.W * C;  // (H,W,C)
  const int h0 = ho * g.SH - g.pad_top;
  const int kh_lo = std::max(0, -h0), kh_hi = std::min(g.PH, g.H - h0);
  for (int wo = 0; wo < g.WO; ++wo) {
    const int w0 = wo * g.SW - g.pad_left;
    const int kw_lo = std::max(0, -w0), kw_hi = std::min(g.PW, g.W - w0);
    // restrict: the three arrays never overlap, which lets the loops below vectorise.
    T* __restrict best = k.out + (nho * g.WO + wo) * C;              // (C)
    int32_t* __restrict best_at = k.argmax + (nho * g.WO + wo) * C;  // (C)
    // The first in-image position of the window starts the running maximum.
    const int32_t first = (h0 + kh_lo) * g.W + (w0 + kw_lo);
    // Blocks of 16 channels keep their maxima and positions in registers over the window (GCC
    // vectors: one zmm, two ymm or four xmm registers, as the function is compiled).
    int64_t c0 = 0;
    for (; c0 + kPoolBlock <= C; c0 += kPoolBlock) {
      Floats16 b;
      std::memcpy(&b, image + first * C + c0, sizeof b);
      Ints16 a = Ints16{} + first;
      for (int kh = kh_lo; kh < kh_hi; ++kh) {
        for (int kw = kw_lo; kw < kw_hi; ++kw) {
          const int32_t at = (h0 + kh) * g.W + (w0 + kw);
          Floats16 x;
          std::memcpy(&x, image + at * C + c0, sizeof x);
          const Ints16 greater = x > b;  // all ones or zero; false against a NaN
          b = greater ? x : b;
          a = greater ? Ints16{} + at : a;
        }
      }
      std::memcpy(best + c0, &b, sizeof b);
      std::memcpy(best_at + c0, &a, sizeof a);
    }
    if (c0 == C) continue;
    best += c0, best_at += c0;  // the channels left, as before
    for (int64_t c = 0; c < C - c0; ++c) {
      best[c] = image[first * C + c0 + c];
      best_at[c] = first;
    }
    for (int kh = kh_lo; kh < kh_hi; ++kh) {
      for (int kw = kw_lo; kw < kw_hi; ++kw) {
        const int32_t at = (h0 + kh) * g.W + (w0 + kw);
        const T* __restrict x = image + at * C + c0;                      // (C - c0)
        for (int64_t c = 0; c < C - c0; ++c) {                            // masks, not ifs
          const int32_t greater = -static_cast<int32_t>(x[c] > best[c]);  // all ones or zero
          best[c] = std::max(best[c], x[c]);                              // x[c] only when greater
          best_at[c] = (at & greater) | (best_at[c] & ~greater);
        }
      }
    }
  }
}

void pool_row_portable(const Maxpool2dForward<float>& k, int64_t nho) { pool_row(k, nho); }
__attribute__((target("avx2,fma"))) void pool_row_avx2(const Maxpool2dForward<float>& k, int64_t nho) {
  pool_row(k, nho);
}
__attribute__((target("avx2,fma,avx512f"))) void pool_row_avx512(const Maxpool2dForward<float>& k,
                                                                 int64_t nho) {
  pool_row(k, nho);
}

template <void (*Row)(const Maxpool2dForward<float>&, int64_t)>
void pool_rows(const Maxpool2dForward<float>& k) {
  const int64_t out_rows = int64_t(k.g.N) * k.g.HO;  // (n, ho) pairs
#pragma omp parallel for if (out_rows * k.g.WO * k.g.C > kParallelMin)
  for (int64_t nho = 0; nho < out_rows; ++nho) Row(k, nho);
}

}  // namespace

void maxpool2d_forward_portable(const Maxpool2dForward<float>& k) { pool_rows<pool_row_portable>(k); }
void maxpool2d_forward_avx2(const Maxpool2dForward<float>& k) { pool_rows<pool_row_avx2>(k); }
void maxpool2d_forward_avx512(const Maxpool2dForward<float>& k) { pool_rows<pool_row_avx512>(k); }

void maxpool2d_forward(const Maxpool2dForward<float>& k) {
  if (avx512::available()) return maxpool2d_forward_avx512(k);
  if (avx2::available()) return maxpool2d_forward_avx2(k);
  maxpool2d_forward_portable(k);
}

}  // namespace hisvid::cpu

namespace hisvid::naive {

// out[n,ho,wo,c] = the first maximum of inp[n,ih,iw,c] over the window's positions inside the
// image, in row-major order (kh, then kw); a later position wins only when strictly greater.
template <typename T>
void maxpool2d_forward(const Maxpool2dForward<T>& k) {
  const Pool2dGeometry& g = k.g;
#pragma omp parallel for collapse(2) if (int64_t(g.N) * g.HO * g.WO * g.C > kParallelMin)
  for (int n = 0; n < g.N; ++n) {
    for (int ho = 0; ho < g.HO; ++ho) {
      for (int wo = 0; wo < g.WO; ++wo) {
        for (int c = 0; c < g.C; ++c) {
          bool found = false;
          T best = T(0);
          int32_t best_at = 0;
          for (int kh = 0; kh < g.PH; ++kh) {
            const int ih = ho * g.SH - g.pad_top + kh;
            if (ih < 0 || ih >= g.H) continue;
            for (int kw = 0; kw < g.PW; ++kw) {
              const int iw = wo * g.SW - g.pad_left + kw;
              if (iw < 0 || iw >= g.W) continue;
              const T x = k.inp[((int64_t(n) * g.H + ih) * g.W + iw) * g.C + c];
              if (!found || x > best) best = x, best_at = ih * g.W + iw;
              found = true;
            }
          }
          const int64_t o = ((int64_t(n) * g.HO + ho) * g.WO + wo) * g.C + c;
          k.out[o] = best;
          k.argmax[o] = best_at;
        }
      }
    }
  }
}

template <typename T>
void maxpool2d_backward(const Maxpool2dBackward<T>& k) {
  T* dinp = k.dinp;                  // (N,H,W,C)
  const T* dout = k.dout;            // (N,HO,WO,C)
  const int32_t* argmax = k.argmax;  // (N,HO,WO,C)
  const Pool2dGeometry& g = k.g;
  const int64_t C = g.C;
  const int64_t image = int64_t(g.H) * g.W * C;
  const int64_t outputs_per_image = int64_t(g.HO) * g.WO;
  // Parallel over images: windows overlap when stride < pool, so two outputs of one image
  // may add into the same input.
#pragma omp parallel for if (g.N * image > kParallelMin)
  for (int64_t n = 0; n < g.N; ++n) {
    T* dimg = dinp + n * image;  // (H,W,C)
    std::fill(dimg, dimg + image, T(0));
    for (int64_t p = 0; p < outputs_per_image; ++p) {
      const T* d = dout + (n * outputs_per_image + p) * C;           // (C)
      const int32_t* at = argmax + (n * outputs_per_image + p) * C;  // (C)
      for (int64_t c = 0; c < C; ++c) dimg[at[c] * C + c] += d[c];
    }
  }
}

template <typename T>
void global_avgpool_forward(const GlobalAvgpoolForward<T>& k) {
  T* out = k.out;        // (N,C)
  const T* inp = k.inp;  // (N,S,C)
  const int64_t N = k.N, S = k.S, C = k.C;
#pragma omp parallel for if (N * S * C > kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      double sum = 0.0;
      for (int64_t s = 0; s < S; ++s) sum += inp[(n * S + s) * C + c];
      out[n * C + c] = static_cast<T>(sum / static_cast<double>(S));
    }
  }
}

template <typename T>
void global_avgpool_backward(const GlobalAvgpoolBackward<T>& k) {
  T* dinp = k.dinp;        // (N,S,C)
  const T* dout = k.dout;  // (N,C)
  const int64_t N = k.N, S = k.S, C = k.C;
#pragma omp parallel for if (N * S * C > kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t c = 0; c < C; ++c) dinp[(n * S + s) * C + c] = dout[n * C + c] / static_cast<T>(S);
    }
  }
}

#define HISVID_INSTANTIATE(T)                                              \
  template void maxpool2d_forward<T>(const Maxpool2dForward<T>&);          \
  template void maxpool2d_backward<T>(const Maxpool2dBackward<T>&);        \
  template void global_avgpool_forward<T>(const GlobalAvgpoolForward<T>&); \
  template void global_avgpool_backward<T>(const GlobalAvgpoolBackward<T>&);
HISVID_INSTANTIATE(float)
HISVID_INSTANTIATE(double)
#undef HISVID_INSTANTIATE

}  // namespace hisvid::naive
