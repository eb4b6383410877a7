// kernels/conv2d.cpp — kernels/conv2d.h on the host: Keras Conv2D (channels-last
// cross-correlation) as the naive loop nest (the definition, at the end of this file) and two
// tuned ways.
// Dimension letters as in kernels/common.h; R = N*HO*WO rows of the im2col matrix and
// KK = KH*KW*C the length of one patch.
//
// 1. im2col + one OpenBLAS GEMM per chunk of images.
// Channels-last makes row r = (n, ho, wo) of the im2col matrix the KH*KW*C patch under
// output pixel (ho, wo) of image n, in (kh, kw, c) order, zero where the window hangs over
// the padding. The kernel (KH,KW,C,F) is then a (KK,F) matrix, and
//   forward          out (R,F)   = col (R,KK) x weight (KK,F) + bias
//   backward data    dcol (R,KK) = dout (R,F) x weight^T, scattered back onto dinp (col2im)
//   backward filter  dweight    += col^T x dout,  dbias += column sums of dout
// A 1x1 kernel with stride 1 and no padding needs no im2col: col is the input itself.
//
// 2. Direct: the definition itself, with the innermost loop over the F filters (contiguous in
// the kernel and in the output, so it vectorises):
//   forward          out[n,ho,wo,f] = bias[f] + sum_{kh,kw,c} inp[n,ih,iw,c] * w[kh,kw,c,f]
//   backward filter  dw[kh,kw,c,f] += sum_{n,ho,wo} inp[n,ih,iw,c] * dout[n,ho,wo,f]
//   backward data    dinp[n,ih,iw,c] = sum_{kh,kw,f} dout[n,ho,wo,f] * w[kh,kw,c,f]
// with ih = ho*SH - pad_top + kh and iw = wo*SW - pad_left + kw. Backward data gathers per
// input pixel (no two threads write one element) over a (KH,KW,F,C) copy of the kernel so its
// innermost loop runs over C. Backward filter sums each thread's rows in a private buffer and
// adds the buffers in thread order, so the result does not depend on scheduling.
#include "kernels/conv2d.h"

#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels/conv2d_avx2.h"
#include "kernels/conv2d_avx512.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"

namespace hisvid::cpu {

namespace {

// Upper bound on the im2col buffer; images are processed in chunks that fit in it. A few MiB
// keeps a chunk's im2col rows and output rows in cache between im2col, the GEMM and the bias
// pass (the 64x64 3->16 layer ran ~1.5x faster than with 32 MiB on the 2-core benchmark
// machine) while keeping the number of im2col / GEMM alternations small; an image larger than
// this still gets a chunk of its own.
constexpr int64_t kColBufferBytes = int64_t(4) << 20;
// Below this many copied elements (or multiply-adds) a loop runs on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;
// Patches up to this many values (KH*KW*C) are convolved directly in the forward pass.
constexpr int64_t kDirectMaxPatch = 160;

// The tags of this file's per-thread buffers (thread_buffer): the im2col chunk, and the group
// copies of a grouped convolution (its inputs, kernel and result at once).
struct Im2colBuffer;
template <int I>
struct GroupBuffer;

bool is_pointwise(const Conv2dGeometry& g) {
  return g.KH == 1 && g.KW == 1 && g.SH == 1 && g.SW == 1 && g.pad_top == 0 && g.pad_left == 0 &&
         g.HO == g.H && g.WO == g.W;
}

int64_t patch_size(const Conv2dGeometry& g) { return int64_t(g.KH) * g.KW * g.C; }

template <typename T>
int64_t images_per_chunk(const Conv2dGeometry& g) {
  const int64_t bytes_per_image = int64_t(g.HO) * g.WO * patch_size(g) * int64_t(sizeof(T));
  return std::max<int64_t>(1,
                           std::min<int64_t>(g.N, kColBufferBytes / std::max<int64_t>(bytes_per_image, 1)));
}

// The kernel columns kw in [lo, hi) of output column wo that fall inside the input:
// 0 <= wo*SW - pad_left + kw < W.
struct KwRange {
  int lo, hi;
};

KwRange valid_kw(int wo, const Conv2dGeometry& g) {
  const int iw0 = wo * g.SW - g.pad_left;
  const int lo = std::max(0, -iw0);
  const int hi = std::min(g.KW, g.W - iw0);
  return {lo, std::max(lo, hi)};
}

// The GEMM and bias passes of the im2col path: OpenBLAS and the naive bias loops.
void gemm(float* out, const float* a, const float* b, int64_t M, int64_t P, int64_t K, bool trans_a,
          bool trans_b, bool accumulate) {
  Matmul<float> m;
  m.out = out, m.a = a, m.b = b, m.M = M, m.P = P, m.K = K;
  m.trans_a = trans_a, m.trans_b = trans_b, m.accumulate = accumulate;
  matmul(m);
}

void add_bias(float* out, const float* bias, int64_t M, int64_t F) {  // out (M,F) += bias (F)
  BiasAddForward<float> b;
  b.out = out, b.inp = out, b.bias = bias, b.M = M, b.C = F;
  naive::bias_add_forward(b);
}

void sum_columns(float* dbias, const float* dout, int64_t M, int64_t F) {  // dbias (F) += sums of dout (M,F)
  BiasAddBackward<float> b;
  b.dbias = dbias, b.dout = dout, b.M = M, b.C = F;
  naive::bias_add_backward(b);
}

// col (n_img*HO*WO, KK) = the patches of inp (n_img,H,W,C), one output row (n, ho) per iteration.
template <typename T>
void im2col(T* col, const T* inp, int64_t n_img, const Conv2dGeometry& g) {
  const int64_t KK = patch_size(g), C = g.C;
  const int64_t out_rows = n_img * g.HO;
#pragma omp parallel for if (out_rows * g.WO * KK > kParallelMin)
  for (int64_t nho = 0; nho < out_rows; ++nho) {
    const int64_t n = nho / g.HO;
    const int ho = static_cast<int>(nho % g.HO);
    for (int wo = 0; wo < g.WO; ++wo) {
      T* patch = col + (nho * g.WO + wo) * KK;  // (KH,KW,C)
      const KwRange kw = valid_kw(wo, g);
      const int iw0 = wo * g.SW - g.pad_left;
      for (int kh = 0; kh < g.KH; ++kh) {
        T* dst = patch + int64_t(kh) * g.KW * C;  // (KW,C) of this kernel row
        const int ih = ho * g.SH - g.pad_top + kh;
        if (ih < 0 || ih >= g.H) {
          for (int64_t i = 0; i < g.KW * C; ++i) dst[i] = T(0);
          continue;
        }
        for (int64_t i = 0; i < kw.lo * C; ++i) dst[i] = T(0);
        if (kw.hi > kw.lo) {
          const T* src = inp + ((n * g.H + ih) * g.W + iw0 + kw.lo) * C;  // (kw.hi-kw.lo, C)
          for (int64_t i = 0; i < (kw.hi - kw.lo) * C; ++i) dst[kw.lo * C + i] = src[i];
        }
        for (int64_t i = kw.hi * C; i < g.KW * C; ++i) dst[i] = T(0);
      }
    }
  }
}

// dinp (n_img,H,W,C) (=) the sum of every patch of dcol (n_img*HO*WO, KK) at the place it was
// taken from. Parallel over images, so no two threads write the same image.
template <typename T>
void col2im(T* dinp, const T* dcol, int64_t n_img, const Conv2dGeometry& g) {
  const int64_t KK = patch_size(g), C = g.C;
  const int64_t image = int64_t(g.H) * g.W * C;
  const int64_t rows_per_image = int64_t(g.HO) * g.WO;
#pragma omp parallel for if (n_img * rows_per_image * KK > kParallelMin)
  for (int64_t n = 0; n < n_img; ++n) {
    T* dimg = dinp + n * image;  // (H,W,C)
    std::fill(dimg, dimg + image, T(0));
    for (int ho = 0; ho < g.HO; ++ho) {
      for (int wo = 0; wo < g.WO; ++wo) {
        const T* patch = dcol + (n * rows_per_image + int64_t(ho) * g.WO + wo) * KK;  // (KH,KW,C)
        const KwRange kw = valid_kw(wo, g);
        const int iw0 = wo * g.SW - g.pad_left;
        for (int kh = 0; kh < g.KH; ++kh) {
          const int ih = ho * g.SH - g.pad_top + kh;
          if (ih < 0 || ih >= g.H || kw.hi == kw.lo) continue;
          const T* src = patch + (int64_t(kh) * g.KW + kw.lo) * C;
          T* dst = dimg + (int64_t(ih) * g.W + iw0 + kw.lo) * C;
          for (int64_t i = 0; i < (kw.hi - kw.lo) * C; ++i) dst[i] += src[i];
        }
      }
    }
  }
}

template <typename T>
void forward_gemm(T* out,           // (N,HO,WO,F)
                  const T* inp,     // (N,H,W,C)
                  const T* weight,  // (KH,KW,C,F), as (KK,F)
                  const T* bias,    // (F) or null
                  const Conv2dGeometry& g) {
  const int64_t KK = patch_size(g), F = g.F;
  const int64_t rows_per_image = int64_t(g.HO) * g.WO;
  if (is_pointwise(g)) {
    gemm(out, inp, weight, g.N * rows_per_image, F, KK, false, false, false);
    if (bias) add_bias(out, bias, g.N * rows_per_image, F);
    return;
  }
  const int64_t chunk = images_per_chunk<T>(g);
  T* col = thread_buffer<T, Im2colBuffer>(chunk * rows_per_image * KK);  // (chunk*HO*WO, KK)
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.N - n0);
    const int64_t rows = nb * rows_per_image;
    T* out_chunk = out + n0 * rows_per_image * F;  // (nb*HO*WO, F)
    im2col(col, inp + n0 * int64_t(g.H) * g.W * g.C, nb, g);
    gemm(out_chunk, col, weight, rows, F, KK, false, false, false);
    if (bias) add_bias(out_chunk, bias, rows, F);
  }
}

template <typename T>
void backward_data_gemm(T* dinp,          // (N,H,W,C)
                        const T* dout,    // (N,HO,WO,F)
                        const T* weight,  // (KH,KW,C,F), as (KK,F)
                        const Conv2dGeometry& g) {
  const int64_t KK = patch_size(g), F = g.F;
  const int64_t rows_per_image = int64_t(g.HO) * g.WO;
  if (is_pointwise(g)) {
    gemm(dinp, dout, weight, g.N * rows_per_image, KK, F, false, true, false);
    return;
  }
  const int64_t chunk = images_per_chunk<T>(g);
  T* dcol = thread_buffer<T, Im2colBuffer>(chunk * rows_per_image * KK);  // (chunk*HO*WO, KK)
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.N - n0);
    gemm(dcol, dout + n0 * rows_per_image * F, weight, nb * rows_per_image, KK, F, false, true, false);
    col2im(dinp + n0 * int64_t(g.H) * g.W * g.C, dcol, nb, g);
  }
}

template <typename T>
void backward_filter_gemm(T* dweight,     // (KH,KW,C,F), as (KK,F)
                          T* dbias,       // (F) or null
                          const T* dout,  // (N,HO,WO,F)
                          const T* inp,   // (N,H,W,C)
                          const Conv2dGeometry& g) {
  const int64_t KK = patch_size(g), F = g.F;
  const int64_t rows_per_image = int64_t(g.HO) * g.WO;
  if (is_pointwise(g)) {
    gemm(dweight, inp, dout, KK, F, g.N * rows_per_image, true, false, true);
    if (dbias) sum_columns(dbias, dout, g.N * rows_per_image, F);
    return;
  }
  const int64_t chunk = images_per_chunk<T>(g);
  T* col = thread_buffer<T, Im2colBuffer>(chunk * rows_per_image * KK);  // (chunk*HO*WO, KK)
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.N - n0);
    const int64_t rows = nb * rows_per_image;
    const T* dout_chunk = dout + n0 * rows_per_image * F;  // (nb*HO*WO, F)
    im2col(col, inp + n0 * int64_t(g.H) * g.W * g.C, nb, g);
    gemm(dweight, col, dout_chunk, KK, F, rows, true, false, true);
    // The column sums while the chunk of dout is still in cache.
    if (dbias) sum_columns(dbias, dout_chunk, rows, F);
  }
}

// --- direct ----------------------------------------------------------------------------

// The direct loops keep one output pixel's F accumulators on the stack.
constexpr int kDirectMaxFilters = 256;

// The kernel rows kh in [lo, hi) of output row ho that fall inside the input.
KwRange valid_kh(int ho, const Conv2dGeometry& g) {
  const int ih0 = ho * g.SH - g.pad_top;
  const int lo = std::max(0, -ih0);
  const int hi = std::min(g.KH, g.H - ih0);
  return {lo, std::max(lo, hi)};
}

template <typename T>
void forward_direct(T* out,           // (N,HO,WO,F)
                    const T* inp,     // (N,H,W,C)
                    const T* weight,  // (KH,KW,C,F)
                    const T* bias,    // (F) or null
                    const Conv2dGeometry& g) {
  const int C = g.C, F = g.F;
  const int64_t rows = int64_t(g.N) * g.HO;
#pragma omp parallel for if (rows * g.WO * patch_size(g) * F > kParallelMin)
  for (int64_t nho = 0; nho < rows; ++nho) {
    const int64_t n = nho / g.HO;
    const int ho = static_cast<int>(nho % g.HO);
    const KwRange kh = valid_kh(ho, g);
    alignas(64) T acc[kDirectMaxFilters];
    for (int wo = 0; wo < g.WO; ++wo) {
      for (int f = 0; f < F; ++f) acc[f] = bias ? bias[f] : T(0);
      const KwRange kw = valid_kw(wo, g);
      for (int i = kh.lo; i < kh.hi; ++i) {
        const int ih = ho * g.SH - g.pad_top + i;
        for (int j = kw.lo; j < kw.hi; ++j) {
          const int iw = wo * g.SW - g.pad_left + j;
          const T* x = inp + ((n * g.H + ih) * g.W + iw) * C;     // (C)
          const T* w = weight + (int64_t(i) * g.KW + j) * C * F;  // (C,F)
          for (int c = 0; c < C; ++c) {
            const T xc = x[c];
            const T* wc = w + int64_t(c) * F;
            for (int f = 0; f < F; ++f) acc[f] += xc * wc[f];
          }
        }
      }
      T* o = out + (nho * g.WO + wo) * F;  // (F)
      for (int f = 0; f < F; ++f) o[f] = acc[f];
    }
  }
}

template <typename T>
void backward_data_direct(T* dinp,          // (N,H,W,C)
                          const T* dout,    // (N,HO,WO,F)
                          const T* weight,  // (KH,KW,C,F)
                          const Conv2dGeometry& g) {
  const int C = g.C, F = g.F;
  // (KH,KW,F,C): the innermost loop below then reads the kernel contiguously.
  std::vector<T> wt(static_cast<size_t>(patch_size(g) * F));
  for (int k = 0; k < g.KH * g.KW; ++k) {
    for (int c = 0; c < C; ++c) {
      for (int f = 0; f < F; ++f) wt[(int64_t(k) * F + f) * C + c] = weight[(int64_t(k) * C + c) * F + f];
    }
  }
  const int64_t rows = int64_t(g.N) * g.H;
#pragma omp parallel for if (int64_t(g.N) * g.HO * g.WO * patch_size(g) * F > kParallelMin)
  for (int64_t nih = 0; nih < rows; ++nih) {
    const int64_t n = nih / g.H;
    const int ih = static_cast<int>(nih % g.H);
    for (int iw = 0; iw < g.W; ++iw) {
      T* dx = dinp + (nih * g.W + iw) * C;  // (C)
      for (int c = 0; c < C; ++c) dx[c] = T(0);
      for (int i = 0; i < g.KH; ++i) {
        const int h = ih + g.pad_top - i;  // = ho * SH
        if (h < 0 || h % g.SH != 0 || h / g.SH >= g.HO) continue;
        const int ho = h / g.SH;
        for (int j = 0; j < g.KW; ++j) {
          const int w = iw + g.pad_left - j;  // = wo * SW
          if (w < 0 || w % g.SW != 0 || w / g.SW >= g.WO) continue;
          const T* d = dout + ((n * g.HO + ho) * g.WO + w / g.SW) * F;  // (F)
          const T* k = wt.data() + (int64_t(i) * g.KW + j) * F * C;     // (F,C)
          for (int f = 0; f < F; ++f) {
            const T df = d[f];
            const T* kf = k + int64_t(f) * C;
            for (int c = 0; c < C; ++c) dx[c] += df * kf[c];
          }
        }
      }
    }
  }
}

template <typename T>
void backward_filter_direct(T* dweight,     // (KH,KW,C,F)
                            T* dbias,       // (F) or null
                            const T* dout,  // (N,HO,WO,F)
                            const T* inp,   // (N,H,W,C)
                            const Conv2dGeometry& g) {
  const int C = g.C, F = g.F;
  const int64_t KKF = patch_size(g) * F;
  const int64_t rows = int64_t(g.N) * g.HO;
  const bool parallel = rows * g.WO * KKF > kParallelMin;
  const int threads = parallel ? omp_get_max_threads() : 1;
  // One (KH,KW,C,F) + (F) partial sum per thread.
  std::vector<T> partial(static_cast<size_t>(threads) * (KKF + F), T(0));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    T* dw = partial.data() + t * (KKF + F);  // (KH,KW,C,F)
    T* db = dw + KKF;                        // (F)
#pragma omp for schedule(static)
    for (int64_t nho = 0; nho < rows; ++nho) {
      const int64_t n = nho / g.HO;
      const int ho = static_cast<int>(nho % g.HO);
      const KwRange kh = valid_kh(ho, g);
      for (int wo = 0; wo < g.WO; ++wo) {
        const T* d = dout + (nho * g.WO + wo) * F;  // (F)
        for (int f = 0; f < F; ++f) db[f] += d[f];
        const KwRange kw = valid_kw(wo, g);
        for (int i = kh.lo; i < kh.hi; ++i) {
          const int ih = ho * g.SH - g.pad_top + i;
          for (int j = kw.lo; j < kw.hi; ++j) {
            const int iw = wo * g.SW - g.pad_left + j;
            const T* x = inp + ((n * g.H + ih) * g.W + iw) * C;  // (C)
            T* w = dw + (int64_t(i) * g.KW + j) * C * F;         // (C,F)
            for (int c = 0; c < C; ++c) {
              const T xc = x[c];
              T* wc = w + int64_t(c) * F;
              for (int f = 0; f < F; ++f) wc[f] += xc * d[f];
            }
          }
        }
      }
    }
  }
  for (int t = 0; t < threads; ++t) {
    const T* dw = partial.data() + t * (KKF + F);
    for (int64_t i = 0; i < KKF; ++i) dweight[i] += dw[i];
    if (dbias) {
      for (int f = 0; f < F; ++f) dbias[f] += dw[KKF + f];
    }
  }
}

// --- groups: one group at a time through the G = 1 code ------------------------------------
//
// With G > 1 every CPU row runs group by group on group-major copies: the input channels,
// kernel columns and output gradient are split by group in one pass each ((rows, G*n) to
// (G, rows, n)), the G = 1 row computes on each group's contiguous block, and the results are
// joined back in one pass. The kernel's gradient is split from dweight first and joined back
// whole, which keeps its += contract.

// to (B, A, n) = from (A, B, n) with its two outer axes swapped: (rows, G, n) -> (G, rows, n)
// splits a channels-last array by group, (G, rows, n) -> (rows, G, n) joins it back.
void swap_outer_axes(float* to, const float* from, int64_t A, int64_t B, int64_t n) {
#pragma omp parallel for collapse(2) if (A * B * n > kParallelMin)
  for (int64_t a = 0; a < A; ++a) {
    for (int64_t b = 0; b < B; ++b) {  // runs of a few floats: a loop, not memmove
      const float* __restrict src = from + (a * B + b) * n;
      float* __restrict dst = to + (b * A + a) * n;
      for (int64_t j = 0; j < n; ++j) dst[j] = src[j];
    }
  }
}
void split_groups(float* to, const float* from, int64_t rows, int64_t G, int64_t n) {
  swap_outer_axes(to, from, rows, G, n);
}
void join_groups(float* to, const float* from, int64_t rows, int64_t G, int64_t n) {
  swap_outer_axes(to, from, G, rows, n);
}

// The geometry of one group on its own: C/G input and F/G output channels.
Conv2dGeometry one_group(const Conv2dGeometry& g) {
  Conv2dGeometry s = g;
  s.C = g.group_channels(), s.F = g.group_filters(), s.G = 1;
  return s;
}

// Rows of the (rows, channels) views: input pixels, output pixels, kernel taps x C/G.
int64_t input_rows(const Conv2dGeometry& g) { return int64_t(g.N) * g.H * g.W; }
int64_t output_rows(const Conv2dGeometry& g) { return int64_t(g.N) * g.HO * g.WO; }
int64_t kernel_rows(const Conv2dGeometry& g) { return int64_t(g.KH) * g.KW * g.group_channels(); }

template <typename Row>
void forward_per_group(const Conv2dForward<float>& k, Row row) {
  const Conv2dGeometry& g = k.g;
  Conv2dForward<float> one;
  one.g = one_group(g);
  const int64_t CG = one.g.C, FG = one.g.F, G = g.G;
  float* inp = thread_buffer<float, GroupBuffer<0>>(input_rows(g) * g.C);
  float* weight = thread_buffer<float, GroupBuffer<1>>(kernel_rows(g) * g.F);
  float* out = thread_buffer<float, GroupBuffer<2>>(output_rows(g) * g.F);
  split_groups(inp, k.inp, input_rows(g), G, CG);
  split_groups(weight, k.weight, kernel_rows(g), G, FG);
  for (int64_t group = 0; group < G; ++group) {
    one.inp = inp + group * input_rows(g) * CG, one.weight = weight + group * kernel_rows(g) * FG;
    one.out = out + group * output_rows(g) * FG, one.bias = k.bias != nullptr ? k.bias + group * FG : nullptr;
    row(one);
  }
  join_groups(k.out, out, output_rows(g), G, FG);
}

template <typename Row>
void backward_data_per_group(const Conv2dBackwardData<float>& k, Row row) {
  const Conv2dGeometry& g = k.g;
  Conv2dBackwardData<float> one;
  one.g = one_group(g);
  const int64_t CG = one.g.C, FG = one.g.F, G = g.G;
  float* dout = thread_buffer<float, GroupBuffer<0>>(output_rows(g) * g.F);
  float* weight = thread_buffer<float, GroupBuffer<1>>(kernel_rows(g) * g.F);
  float* dinp = thread_buffer<float, GroupBuffer<2>>(input_rows(g) * g.C);
  split_groups(dout, k.dout, output_rows(g), G, FG);
  split_groups(weight, k.weight, kernel_rows(g), G, FG);
  for (int64_t group = 0; group < G; ++group) {
    one.dout = dout + group * output_rows(g) * FG, one.weight = weight + group * kernel_rows(g) * FG;
    one.dinp = dinp + group * input_rows(g) * CG;
    row(one);
  }
  join_groups(k.dinp, dinp, input_rows(g), G, CG);
}

template <typename Row>
void backward_filter_per_group(const Conv2dBackwardFilter<float>& k, Row row) {
  const Conv2dGeometry& g = k.g;
  Conv2dBackwardFilter<float> one;
  one.g = one_group(g);
  const int64_t CG = one.g.C, FG = one.g.F, G = g.G;
  float* dout = thread_buffer<float, GroupBuffer<0>>(output_rows(g) * g.F);
  float* inp = thread_buffer<float, GroupBuffer<1>>(input_rows(g) * g.C);
  float* dweight = thread_buffer<float, GroupBuffer<2>>(kernel_rows(g) * g.F);
  split_groups(dout, k.dout, output_rows(g), G, FG);
  split_groups(inp, k.inp, input_rows(g), G, CG);
  split_groups(dweight, k.dweight, kernel_rows(g), G, FG);  // the rows add onto it
  for (int64_t group = 0; group < G; ++group) {
    one.dout = dout + group * output_rows(g) * FG, one.inp = inp + group * input_rows(g) * CG;
    one.dweight = dweight + group * kernel_rows(g) * FG;
    one.dbias = k.dbias != nullptr ? k.dbias + group * FG : nullptr;
    row(one);
  }
  join_groups(k.dweight, dweight, kernel_rows(g), G, FG);
}

// The direct kernels' widest form on this processor (AVX2 at least: conv2d_cpu_algorithm picks
// GEMM without it).
bool has_avx512() {
  static const bool has = avx512::available();
  return has;
}

}  // namespace

// The thresholds come from the kernel lab (bench/kernel_lab) on the seeds' layers (2-core
// AVX-512 Xeon, batch 4): the AVX2 direct kernels win where the GEMM is thin (few channels,
// large images), OpenBLAS wins on large patches and on tiny images (the padded copy then
// dominates). The AVX-512 forms, where they run (more than 8 filters, or input channels for
// backward data, per group), beat OpenBLAS on every seed layer the AVX2 thresholds left to it
// (2-core Intel Xeon VM, two threads, min of 3 runs, 2026-11-28): the LRCN's 4x4 32 -> 64
// forward 0.24 ms against 1.05, backward filter 0.35 against 1.30; its 2x2 64 -> 64 forward
// 0.30 against 0.54, backward data 0.31 against 0.52; the ConvLSTM's last input convolution's
// backward filter 0.23 against 0.92. There they run whatever the patch or the image.
Conv2dAlgorithm conv2d_cpu_algorithm(const Conv2dGeometry& g, Conv2dPass pass) {
  if (!avx2::available() || g.F > kDirectMaxFilters) return Conv2dAlgorithm::Gemm;
  const int64_t pixels = int64_t(g.HO) * g.WO;
  const bool same_like = g.SH == 1 && g.SW == 1 && 2 * g.pad_top + 1 >= g.KH && 2 * g.pad_left + 1 >= g.KW;
  if (has_avx512()) {
    if (pass == Conv2dPass::BackwardData && same_like && conv2d_backward_data_avx512_applies(g))
      return Conv2dAlgorithm::Direct;
    if (pass != Conv2dPass::BackwardData && conv2d_avx512_applies(g)) return Conv2dAlgorithm::Direct;
  }
  bool direct = false;
  switch (pass) {
    case Conv2dPass::Forward:  // e.g. 64x64 3->16: 5 ms direct, 14 ms GEMM; 4x4 32->64: 0.45 vs 0.41
      direct = patch_size(g) <= kDirectMaxPatch;
      break;
    case Conv2dPass::BackwardData:  // a stride-1 forward over dout: wins with 'same'-like padding
      direct = same_like && pixels >= 16;
      break;
    case Conv2dPass::BackwardFilter:  // e.g. 64x64 3->16: 6 ms direct, 26 ms GEMM; 4x4: 1.0 vs 0.5
      direct = pixels >= 100;
      break;
  }
  return direct ? Conv2dAlgorithm::Direct : Conv2dAlgorithm::Gemm;
}

void conv2d_forward_gemm(const Conv2dForward<float>& k) {
  if (k.g.G > 1) return forward_per_group(k, conv2d_forward_gemm);
  forward_gemm(k.out, k.inp, k.weight, k.bias, k.g);
}
void conv2d_backward_data_gemm(const Conv2dBackwardData<float>& k) {
  if (k.g.G > 1) return backward_data_per_group(k, conv2d_backward_data_gemm);
  backward_data_gemm(k.dinp, k.dout, k.weight, k.g);
}
void conv2d_backward_filter_gemm(const Conv2dBackwardFilter<float>& k) {
  if (k.g.G > 1) return backward_filter_per_group(k, conv2d_backward_filter_gemm);
  backward_filter_gemm(k.dweight, k.dbias, k.dout, k.inp, k.g);
}

// The direct loops hold one output pixel's F accumulators on the stack: wider layers run GEMM.
bool conv2d_direct_applies(const Conv2dGeometry& g) { return g.F / g.G <= kDirectMaxFilters; }
bool conv2d_backward_data_avx2_applies(const Conv2dGeometry& g) {
  return g.SH == 1 && g.SW == 1 && conv2d_direct_applies(g);
}

void conv2d_forward_direct(const Conv2dForward<float>& k) {
  if (!conv2d_direct_applies(k.g)) return conv2d_forward_gemm(k);
  if (k.g.G > 1) return forward_per_group(k, conv2d_forward_direct);
  forward_direct(k.out, k.inp, k.weight, k.bias, k.g);
}
void conv2d_backward_data_direct(const Conv2dBackwardData<float>& k) {
  if (!conv2d_direct_applies(k.g)) return conv2d_backward_data_gemm(k);
  if (k.g.G > 1) return backward_data_per_group(k, conv2d_backward_data_direct);
  backward_data_direct(k.dinp, k.dout, k.weight, k.g);
}
void conv2d_backward_filter_direct(const Conv2dBackwardFilter<float>& k) {
  if (!conv2d_direct_applies(k.g)) return conv2d_backward_filter_gemm(k);
  if (k.g.G > 1) return backward_filter_per_group(k, conv2d_backward_filter_direct);
  backward_filter_direct(k.dweight, k.dbias, k.dout, k.inp, k.g);
}

void conv2d_forward_avx2(const Conv2dForward<float>& k) {
  if (!conv2d_direct_applies(k.g)) return conv2d_forward_gemm(k);
  avx2::forward(k.out, k.inp, k.weight, k.bias, k.g);  // groups in place, from one padded copy
}
void conv2d_backward_data_avx2(const Conv2dBackwardData<float>& k) {
  if (!conv2d_direct_applies(k.g)) return conv2d_backward_data_gemm(k);
  if (!conv2d_backward_data_avx2_applies(k.g)) return conv2d_backward_data_direct(k);
  avx2::backward_data(k.dinp, k.dout, k.weight, k.g);  // groups in place
}
void conv2d_backward_filter_avx2(const Conv2dBackwardFilter<float>& k) {
  if (!conv2d_direct_applies(k.g)) return conv2d_backward_filter_gemm(k);
  avx2::backward_filter(k.dweight, k.dbias, k.dout, k.inp, k.g);  // groups in place
}

// A pass whose groups have at most 8 filters (backward data: input channels) fills half of a
// 16-lane register at most: the AVX2 kernels run it (the same bits), measured faster there.
bool conv2d_avx512_applies(const Conv2dGeometry& g) {
  return conv2d_direct_applies(g) && g.group_filters() > avx2::kLanes;
}
bool conv2d_backward_data_avx512_applies(const Conv2dGeometry& g) {
  return conv2d_backward_data_avx2_applies(g) && g.group_channels() > avx2::kLanes;
}

void conv2d_forward_avx512(const Conv2dForward<float>& k) {
  if (!conv2d_avx512_applies(k.g)) return conv2d_forward_avx2(k);
  avx512::forward(k.out, k.inp, k.weight, k.bias, k.g);
}
void conv2d_backward_data_avx512(const Conv2dBackwardData<float>& k) {
  if (!conv2d_backward_data_avx512_applies(k.g)) return conv2d_backward_data_avx2(k);
  avx512::backward_data(k.dinp, k.dout, k.weight, k.g);
}
void conv2d_backward_filter_avx512(const Conv2dBackwardFilter<float>& k) {
  if (!conv2d_avx512_applies(k.g)) return conv2d_backward_filter_avx2(k);
  avx512::backward_filter(k.dweight, k.dbias, k.dout, k.inp, k.g);
}

namespace {}  // namespace

void conv2d_forward(const Conv2dForward<float>& k) {
  if (conv2d_cpu_algorithm(one_group(k.g), Conv2dPass::Forward) == Conv2dAlgorithm::Direct)
    return has_avx512() ? conv2d_forward_avx512(k) : conv2d_forward_avx2(k);
  conv2d_forward_gemm(k);
}
void conv2d_backward_data(const Conv2dBackwardData<float>& k) {
  if (conv2d_cpu_algorithm(one_group(k.g), Conv2dPass::BackwardData) == Conv2dAlgorithm::Direct)
    return has_avx512() ? conv2d_backward_data_avx512(k) : conv2d_backward_data_avx2(k);
  conv2d_backward_data_gemm(k);
}
void conv2d_backward_filter(const Conv2dBackwardFilter<float>& k) {
  if (conv2d_cpu_algorithm(one_group(k.g), Conv2dPass::BackwardFilter) == Conv2dAlgorithm::Direct)
    return has_avx512() ? conv2d_backward_filter_avx512(k) : conv2d_backward_filter_avx2(k);
  conv2d_backward_filter_gemm(k);
}

}  // namespace hisvid::cpu

namespace hisvid::naive {

// out[n,ho,wo,f] = bias[f] + sum over kh, kw, c of inp[n,ih,iw,c'] * weight[kh,kw,c,f], with
// ih = ho*SH - pad_top + kh and iw = wo*SW - pad_left + kw, c' = input channel c of f's group
// (conv2d_at); positions outside the image are the zero padding.
template <typename T>
void conv2d_forward(const Conv2dForward<T>& k) {
  const Conv2dGeometry& g = k.g;
#pragma omp parallel for collapse(2)
  for (int n = 0; n < g.N; ++n) {
    for (int ho = 0; ho < g.HO; ++ho) {
      for (int wo = 0; wo < g.WO; ++wo) {
        for (int f = 0; f < g.F; ++f) {
          k.out[((int64_t(n) * g.HO + ho) * g.WO + wo) * g.F + f] =
              conv2d_at(k.inp, k.weight, k.bias, g, n, ho, wo, f);
        }
      }
    }
  }
}

// dinp[n,h,w,c] = the sum over every (ho, wo, kh, kw) whose window reads (h, w) and every filter
// f of c's group of dout[n,ho,wo,f] * weight[kh,kw,c mod C/G,f]: the forward's products, sent
// back (conv2d_input_grad_at).
template <typename T>
void conv2d_backward_data(const Conv2dBackwardData<T>& k) {
  const Conv2dGeometry& g = k.g;
#pragma omp parallel for collapse(2)
  for (int n = 0; n < g.N; ++n) {
    for (int h = 0; h < g.H; ++h) {
      for (int w = 0; w < g.W; ++w) {
        for (int c = 0; c < g.C; ++c) {
          k.dinp[((int64_t(n) * g.H + h) * g.W + w) * g.C + c] =
              conv2d_input_grad_at(k.dout, k.weight, g, n, h, w, c);
        }
      }
    }
  }
}

// dweight[kh,kw,c,f] += sum over n, ho, wo of inp[n,ih,iw,c'] * dout[n,ho,wo,f], c' = input
// channel c of f's group; dbias[f] += sum over n, ho, wo of dout[n,ho,wo,f].
template <typename T>
void conv2d_backward_filter(const Conv2dBackwardFilter<T>& k) {
  const Conv2dGeometry& g = k.g;
  const int CG = g.group_channels(), FG = g.group_filters();
#pragma omp parallel for collapse(2)
  for (int kh = 0; kh < g.KH; ++kh) {
    for (int kw = 0; kw < g.KW; ++kw) {
      for (int c = 0; c < CG; ++c) {
        for (int f = 0; f < g.F; ++f) {
          const int channel = f / FG * CG + c;
          T sum = T(0);
          for (int n = 0; n < g.N; ++n) {
            for (int ho = 0; ho < g.HO; ++ho) {
              const int ih = ho * g.SH - g.pad_top + kh;
              if (ih < 0 || ih >= g.H) continue;
              for (int wo = 0; wo < g.WO; ++wo) {
                const int iw = wo * g.SW - g.pad_left + kw;
                if (iw < 0 || iw >= g.W) continue;
                sum += k.inp[((int64_t(n) * g.H + ih) * g.W + iw) * g.C + channel] *
                       k.dout[((int64_t(n) * g.HO + ho) * g.WO + wo) * g.F + f];
              }
            }
          }
          k.dweight[((int64_t(kh) * g.KW + kw) * CG + c) * g.F + f] += sum;
        }
      }
    }
  }
  if (k.dbias == nullptr) return;
  for (int f = 0; f < g.F; ++f) {
    T sum = T(0);
    for (int64_t p = 0; p < int64_t(g.N) * g.HO * g.WO; ++p) sum += k.dout[p * g.F + f];
    k.dbias[f] += sum;
  }
}

template void conv2d_forward<float>(const Conv2dForward<float>&);
template void conv2d_forward<double>(const Conv2dForward<double>&);
template void conv2d_backward_data<float>(const Conv2dBackwardData<float>&);
template void conv2d_backward_data<double>(const Conv2dBackwardData<double>&);
template void conv2d_backward_filter<float>(const Conv2dBackwardFilter<float>&);
template void conv2d_backward_filter<double>(const Conv2dBackwardFilter<double>&);

}  // namespace hisvid::naive
