// kernels/pool.cpp — CPU reference of kernels/pool.h: Keras MaxPooling2D and global average
// pooling, channels-last.
// Dimension letters as in kernels/common.h.
//
// Each output pixel scans its window in row-major order (kh, then kw) over the positions that
// lie inside the image, so padded positions never win; a later position wins only when it is
// strictly greater, which keeps the first maximum.
#include "kernels/pool.h"

#include <algorithm>

namespace hisvid::cpu {

namespace {

// Below this many outputs the loops run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

}  // namespace

template <typename T>
void maxpool2d_forward(T* out,           // (N,HO,WO,C)
                       int32_t* argmax,  // (N,HO,WO,C) flat h*W + w inside the image
                       const T* inp,     // (N,H,W,C)
                       const Pool2dGeometry& g) {
  const int64_t C = g.C;
  const int64_t out_rows = int64_t(g.N) * g.HO;  // (n, ho) pairs
#pragma omp parallel for if (out_rows * g.WO * C > kParallelMin)
  for (int64_t nho = 0; nho < out_rows; ++nho) {
    const int64_t n = nho / g.HO;
    const int ho = static_cast<int>(nho % g.HO);
    const T* image = inp + n * g.H * g.W * C;  // (H,W,C)
    const int h0 = ho * g.SH - g.pad_top;
    const int kh_lo = std::max(0, -h0), kh_hi = std::min(g.PH, g.H - h0);
    for (int wo = 0; wo < g.WO; ++wo) {
      const int w0 = wo * g.SW - g.pad_left;
      const int kw_lo = std::max(0, -w0), kw_hi = std::min(g.PW, g.W - w0);
      // restrict: the three arrays never overlap, which lets the loops below vectorise.
      T* __restrict best = out + (nho * g.WO + wo) * C;              // (C)
      int32_t* __restrict best_at = argmax + (nho * g.WO + wo) * C;  // (C)
      // The first in-image position of the window starts the running maximum.
      const int32_t first = (h0 + kh_lo) * g.W + (w0 + kw_lo);
      for (int64_t c = 0; c < C; ++c) {
        best[c] = image[first * C + c];
        best_at[c] = first;
      }
      for (int kh = kh_lo; kh < kh_hi; ++kh) {
        for (int kw = kw_lo; kw < kw_hi; ++kw) {
          const int32_t at = (h0 + kh) * g.W + (w0 + kw);
          const T* __restrict x = image + at * C;  // (C)
          for (int64_t c = 0; c < C; ++c) {  // branch-free (masks, not ifs), so it vectorises over C
            const int32_t greater = -static_cast<int32_t>(x[c] > best[c]);  // all ones or zero
            best[c] = std::max(best[c], x[c]);                              // x[c] only when greater
            best_at[c] = (at & greater) | (best_at[c] & ~greater);
          }
        }
      }
    }
  }
}

template <typename T>
void maxpool2d_backward(T* dinp,                // (N,H,W,C)
                        const T* dout,          // (N,HO,WO,C)
                        const int32_t* argmax,  // (N,HO,WO,C)
                        const Pool2dGeometry& g) {
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
void global_avgpool_forward(T* out,        // (N,C)
                            const T* inp,  // (N,S,C)
                            int64_t N, int64_t S, int64_t C) {
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
void global_avgpool_backward(T* dinp,        // (N,S,C)
                             const T* dout,  // (N,C)
                             int64_t N, int64_t S, int64_t C) {
#pragma omp parallel for if (N * S * C > kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t c = 0; c < C; ++c) dinp[(n * S + s) * C + c] = dout[n * C + c] / static_cast<T>(S);
    }
  }
}

template void maxpool2d_forward<float>(float*, int32_t*, const float*, const Pool2dGeometry&);
template void maxpool2d_backward<float>(float*, const float*, const int32_t*, const Pool2dGeometry&);

template void maxpool2d_forward<double>(double*, int32_t*, const double*, const Pool2dGeometry&);
template void maxpool2d_backward<double>(double*, const double*, const int32_t*, const Pool2dGeometry&);

template void global_avgpool_forward<float>(float*, const float*, int64_t, int64_t, int64_t);
template void global_avgpool_backward<float>(float*, const float*, int64_t, int64_t, int64_t);
template void global_avgpool_forward<double>(double*, const double*, int64_t, int64_t, int64_t);
template void global_avgpool_backward<double>(double*, const double*, int64_t, int64_t, int64_t);

}  // namespace hisvid::cpu
