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

}  // namespace
}  // namespace hisvid

namespace hisvid::cpu {

namespace {

// W channels (W floats, a GCC vector) of one window, their running maxima and positions held in
// registers over it: best (W) and best_at (W) of an output pixel whose window's in-image
// positions are rows [h0 + kh_lo, h0 + kh_hi) x columns [w0 + kw_lo, w0 + kw_hi) of `image`
// (H,W,C), channels c0 .. c0 + W - 1.
template <int W>
__attribute__((always_inline)) inline void pool_block(float* best, int32_t* best_at, const float* image,
                                                      int64_t C, int64_t c0, int width, int h0, int kh_lo,
                                                      int kh_hi, int w0, int kw_lo, int kw_hi) {
  typedef float Floats __attribute__((vector_size(W * sizeof(float))));
  typedef int32_t Ints __attribute__((vector_size(W * sizeof(int32_t))));
  const int32_t first = (h0 + kh_lo) * width + (w0 + kw_lo);
  Floats b;
  std::memcpy(&b, image + first * C + c0, sizeof b);
  Ints a = Ints{} + first;
  for (int kh = kh_lo; kh < kh_hi; ++kh) {
    for (int kw = kw_lo; kw < kw_hi; ++kw) {
      const int32_t at = (h0 + kh) * width + (w0 + kw);
      Floats x;
      std::memcpy(&x, image + at * C + c0, sizeof x);
      const Ints greater = x > b;  // all ones or zero; false against a NaN
      b = greater ? x : b;
      a = greater ? Ints{} + at : a;
    }
  }
  std::memcpy(best + c0, &b, sizeof b);
  std::memcpy(best_at + c0, &a, sizeof a);
}

// Output row nho = (n, ho) of the max-pool, branch-free over the channels (pool_block's GCC
// vectors), compiled at the processor's baseline here and with AVX2 or AVX-512 where this body
// is inlined into the target functions below. Selecting, not computing, every form gives the
// same bits. The AVX-512 form pools three 64x64x16 images (2x2 windows) 2.8x faster on one
// thread than the earlier loop at the baseline's width, which kept the maxima in memory (kernel
// lab, 2-core Intel Xeon VM with AVX-512, 2026-11-28).
__attribute__((always_inline)) inline void pool_row(const Maxpool2dForward<float>& k, int64_t nho) {
  const Pool2dGeometry& g = k.g;
  const int64_t C = g.C;
  const int64_t n = nho / g.HO;
  const int ho = static_cast<int>(nho % g.HO);
  const float* image = k.inp + n * g.H * g.W * C;  // (H,W,C)
  const int h0 = ho * g.SH - g.pad_top;
  const int kh_lo = std::max(0, -h0), kh_hi = std::min(g.PH, g.H - h0);
  for (int wo = 0; wo < g.WO; ++wo) {
    const int w0 = wo * g.SW - g.pad_left;
    const int kw_lo = std::max(0, -w0), kw_hi = std::min(g.PW, g.W - w0);
    float* best = k.out + (nho * g.WO + wo) * C;          // (C)
    int32_t* best_at = k.argmax + (nho * g.WO + wo) * C;  // (C)
    // Blocks of 16 channels, then at most one each of 8, 4, 2 and 1, keep their maxima and
    // positions in registers over the window (GCC vectors: a zmm, ymm or xmm register, or two or
    // four narrower ones, as the function is compiled).
    int64_t c0 = 0;
    for (; c0 + 16 <= C; c0 += 16)
      pool_block<16>(best, best_at, image, C, c0, g.W, h0, kh_lo, kh_hi, w0, kw_lo, kw_hi);
    if (c0 + 8 <= C)
      pool_block<8>(best, best_at, image, C, c0, g.W, h0, kh_lo, kh_hi, w0, kw_lo, kw_hi), c0 += 8;
    if (c0 + 4 <= C)
      pool_block<4>(best, best_at, image, C, c0, g.W, h0, kh_lo, kh_hi, w0, kw_lo, kw_hi), c0 += 4;
    if (c0 + 2 <= C)
      pool_block<2>(best, best_at, image, C, c0, g.W, h0, kh_lo, kh_hi, w0, kw_lo, kw_hi), c0 += 2;
    if (c0 < C) pool_block<1>(best, best_at, image, C, c0, g.W, h0, kh_lo, kh_hi, w0, kw_lo, kw_hi);
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

namespace {

// The widest form the processor has, asked once (the fused forward pools image by image).
enum class Width { Portable, Avx2, Avx512 };
Width widest() {
  static const Width width = avx512::available() ? Width::Avx512
                             : avx2::available() ? Width::Avx2
                                                 : Width::Portable;
  return width;
}

}  // namespace

void maxpool2d_forward(const Maxpool2dForward<float>& k) {
  switch (widest()) {
    case Width::Avx512:
      return maxpool2d_forward_avx512(k);
    case Width::Avx2:
      return maxpool2d_forward_avx2(k);
    case Width::Portable:
      break;
  }
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
