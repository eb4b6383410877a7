// kernels/conv2d.cpp — CPU reference of kernels/conv2d.h: Keras Conv2D (channels-last
// cross-correlation) lowered to im2col + one OpenBLAS GEMM per chunk of images.
// Dimension letters as in kernels/common.h; R = N*HO*WO rows of the im2col matrix and
// KK = KH*KW*C the length of one patch.
//
// Channels-last makes row r = (n, ho, wo) of the im2col matrix the KH*KW*C patch under
// output pixel (ho, wo) of image n, in (kh, kw, c) order, zero where the window hangs over
// the padding. The kernel (KH,KW,C,F) is then a (KK,F) matrix, and
//   forward          out (R,F)   = col (R,KK) x weight (KK,F) + bias
//   backward data    dcol (R,KK) = dout (R,F) x weight^T, scattered back onto dinp (col2im)
//   backward filter  dweight    += col^T x dout,  dbias += column sums of dout
// A 1x1 kernel with stride 1 and no padding needs no im2col: col is the input itself.
#include "kernels/conv2d.h"

#include <algorithm>
#include <vector>

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
// Below this many copied elements im2col / col2im run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

// One buffer per thread and type, kept between calls, so the chunk buffer is allocated
// and page-faulted once rather than on every convolution.
template <typename T>
T* col_buffer(int64_t n) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < static_cast<size_t>(n)) buffer.resize(static_cast<size_t>(n));
  return buffer.data();
}

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

}  // namespace

template <typename T>
void conv2d_forward(T* out,           // (N,HO,WO,F)
                    const T* inp,     // (N,H,W,C)
                    const T* weight,  // (KH,KW,C,F), as (KK,F)
                    const T* bias,    // (F) or null
                    const Conv2dGeometry& g) {
  const int64_t KK = patch_size(g), F = g.F;
  const int64_t rows_per_image = int64_t(g.HO) * g.WO;
  if (is_pointwise(g)) {
    matmul(out, inp, weight, g.N * rows_per_image, F, KK, false, false, false);
    if (bias) bias_add_forward(out, out, bias, g.N * rows_per_image, F);
    return;
  }
  const int64_t chunk = images_per_chunk<T>(g);
  T* col = col_buffer<T>(chunk * rows_per_image * KK);  // (chunk*HO*WO, KK)
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.N - n0);
    const int64_t rows = nb * rows_per_image;
    T* out_chunk = out + n0 * rows_per_image * F;  // (nb*HO*WO, F)
    im2col(col, inp + n0 * int64_t(g.H) * g.W * g.C, nb, g);
    matmul(out_chunk, col, weight, rows, F, KK, false, false, false);
    if (bias) bias_add_forward(out_chunk, out_chunk, bias, rows, F);
  }
}

template <typename T>
void conv2d_backward_data(T* dinp,          // (N,H,W,C)
                          const T* dout,    // (N,HO,WO,F)
                          const T* weight,  // (KH,KW,C,F), as (KK,F)
                          const Conv2dGeometry& g) {
  const int64_t KK = patch_size(g), F = g.F;
  const int64_t rows_per_image = int64_t(g.HO) * g.WO;
  if (is_pointwise(g)) {
    matmul(dinp, dout, weight, g.N * rows_per_image, KK, F, false, true, false);
    return;
  }
  const int64_t chunk = images_per_chunk<T>(g);
  T* dcol = col_buffer<T>(chunk * rows_per_image * KK);  // (chunk*HO*WO, KK)
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.N - n0);
    matmul(dcol, dout + n0 * rows_per_image * F, weight, nb * rows_per_image, KK, F, false, true, false);
    col2im(dinp + n0 * int64_t(g.H) * g.W * g.C, dcol, nb, g);
  }
}

template <typename T>
void conv2d_backward_filter(T* dweight,     // (KH,KW,C,F), as (KK,F)
                            T* dbias,       // (F) or null
                            const T* dout,  // (N,HO,WO,F)
                            const T* inp,   // (N,H,W,C)
                            const Conv2dGeometry& g) {
  const int64_t KK = patch_size(g), F = g.F;
  const int64_t rows_per_image = int64_t(g.HO) * g.WO;
  if (is_pointwise(g)) {
    matmul(dweight, inp, dout, KK, F, g.N * rows_per_image, true, false, true);
    if (dbias) bias_add_backward(dbias, dout, g.N * rows_per_image, F);
    return;
  }
  const int64_t chunk = images_per_chunk<T>(g);
  T* col = col_buffer<T>(chunk * rows_per_image * KK);  // (chunk*HO*WO, KK)
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, g.N - n0);
    const int64_t rows = nb * rows_per_image;
    const T* dout_chunk = dout + n0 * rows_per_image * F;  // (nb*HO*WO, F)
    im2col(col, inp + n0 * int64_t(g.H) * g.W * g.C, nb, g);
    matmul(dweight, col, dout_chunk, KK, F, rows, true, false, true);
    // The column sums while the chunk of dout is still in cache.
    if (dbias) bias_add_backward(dbias, dout_chunk, rows, F);
  }
}

template void conv2d_forward<float>(float*, const float*, const float*, const float*, const Conv2dGeometry&);
template void conv2d_backward_data<float>(float*, const float*, const float*, const Conv2dGeometry&);
template void conv2d_backward_filter<float>(float*, float*, const float*, const float*,
                                            const Conv2dGeometry&);

template void conv2d_forward<double>(double*, const double*, const double*, const double*,
                                     const Conv2dGeometry&);
template void conv2d_backward_data<double>(double*, const double*, const double*, const Conv2dGeometry&);
template void conv2d_backward_filter<double>(double*, double*, const double*, const double*,
                                             const Conv2dGeometry&);

}  // namespace hisvid::cpu
