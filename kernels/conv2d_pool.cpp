// kernels/conv2d_pool.cpp — the fused convolution + activation + max-pool on the host: the
// naive row (the three definitions, one after the other) and the tuned CPU row. See
// kernels/conv2d_pool.h for the arithmetic.
#include "kernels/conv2d_pool.h"

#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels/dropout.h"
#include "kernels/elementwise.h"

namespace hisvid {

namespace {

// The gradient reaching z at the maximum of pooled element i: dout * act'(out).
template <typename T>
T pooled_grad(const T* dout, const T* out, int64_t i, Activation act) {
  return dout[i] * activation_grad_from_output(out[i], act);
}

// The folded dropout as the Dropout layer's kernel runs it, over the n pooled elements: out =
// inp * mask, in place when out == inp. Backward sends dout through the same mask (the
// Dropout layer's backward is its forward on the gradient). On the host, the cpu rows' AVX2
// Philox where the processor has it, else the naive row: the same bits either way.
template <typename T>
void drop(T* out, const T* inp, int64_t n, const PoolDropout& d, bool tuned) {
  DropoutForward<T> k;
  k.out = out, k.inp = inp, k.n = n, k.rate = d.rate, k.seed = d.seed, k.offset = d.offset,
  k.offset_base = d.offset_base;
  if constexpr (std::is_same_v<T, float>) {
    if (tuned && cpu::dropout_cpu_available()) return cpu::dropout_forward(k);
  }
  naive::dropout_forward(k);
}

}  // namespace

// --- naive: the definitions composed ------------------------------------------------------

namespace naive {

template <typename T>
void conv2d_act_pool_forward(const Conv2dActPoolForward<T>& k) {
  require_fusable(k, "naive::conv2d_act_pool_forward");
  const Conv2dGeometry& g = k.g;
  std::vector<T> z(static_cast<size_t>(int64_t(g.N) * g.HO * g.WO * g.F));  // (N,HO,WO,F)
  Conv2dForward<T> conv;
  conv.out = z.data(), conv.inp = k.inp, conv.weight = k.weight, conv.bias = k.bias, conv.g = g;
  conv2d_forward(conv);
  ActivationForward<T> activation;
  activation.out = z.data(), activation.inp = z.data(), activation.n = int64_t(z.size()),
  activation.act = k.act;
  activation_forward(activation);
  std::vector<int32_t> unused;
  if (k.argmax == nullptr) unused.resize(static_cast<size_t>(int64_t(k.p.N) * k.p.HO * k.p.WO * k.p.C));
  Maxpool2dForward<T> pool;
  pool.out = k.out, pool.argmax = k.argmax != nullptr ? k.argmax : unused.data(), pool.inp = z.data(),
  pool.g = k.p;
  maxpool2d_forward(pool);
  if (k.dropout.rate != 0.0f) drop(k.out, k.out, int64_t(k.p.N) * k.p.HO * k.p.WO * k.p.C, k.dropout, false);
}

template <typename T>
void conv2d_act_pool_backward(const Conv2dActPoolBackward<T>& k) {
  require_fusable(k, "naive::conv2d_act_pool_backward");
  const Conv2dGeometry& g = k.g;
  const Pool2dGeometry& p = k.p;
  const int64_t per_image = int64_t(p.HO) * p.WO * p.C, pooled = int64_t(p.N) * per_image;
  // The dropout's backward first: the pool's output gradient.
  std::vector<T> masked;
  const T* dout = k.dout;
  if (k.dropout.rate != 0.0f) {
    masked.resize(static_cast<size_t>(pooled));
    drop(masked.data(), k.dout, pooled, k.dropout, false);
    dout = masked.data();
  }
  // dz (N,HO,WO,F): the pooled gradients, through the activation, at their maxima.
  std::vector<T> dz(static_cast<size_t>(int64_t(g.N) * g.HO * g.WO * g.F), T(0));
  for (int64_t i = 0; i < pooled; ++i) {
    const int64_t n = i / per_image, f = i % p.C;
    dz[static_cast<size_t>((n * g.HO * g.WO + k.argmax[i]) * g.F + f)] += pooled_grad(dout, k.out, i, k.act);
  }
  std::fill(k.dweight, k.dweight + int64_t(g.KH) * g.KW * g.C * g.F, T(0));  // the filter gradient adds
  if (k.dbias != nullptr) std::fill(k.dbias, k.dbias + g.F, T(0));
  Conv2dBackwardFilter<T> filter;
  filter.dweight = k.dweight, filter.dbias = k.dbias, filter.dout = dz.data(), filter.inp = k.inp,
  filter.g = g;
  conv2d_backward_filter(filter);
  if (k.dinp != nullptr) {
    Conv2dBackwardData<T> data;
    data.dinp = k.dinp, data.dout = dz.data(), data.weight = k.weight, data.g = g;
    conv2d_backward_data(data);
  }
}

template void conv2d_act_pool_forward(const Conv2dActPoolForward<float>&);
template void conv2d_act_pool_forward(const Conv2dActPoolForward<double>&);
template void conv2d_act_pool_backward(const Conv2dActPoolBackward<float>&);
template void conv2d_act_pool_backward(const Conv2dActPoolBackward<double>&);

}  // namespace naive

// --- cpu ----------------------------------------------------------------------------------

namespace cpu {

namespace {

// The forward convolves this many floats of output at a time (4 MiB): a chunk of whole images
// whose convolution output is still in cache when the activation and the pooling read it.
constexpr int64_t kChunkFloats = int64_t(1) << 20;

}  // namespace

void conv2d_act_pool_forward(const Conv2dActPoolForward<float>& k) {
  require_fusable(k, "cpu::conv2d_act_pool_forward");
  const Conv2dGeometry& g = k.g;
  const Pool2dGeometry& p = k.p;
  const int64_t z_per_image = int64_t(g.HO) * g.WO * g.F, pooled_per_image = int64_t(p.HO) * p.WO * p.C;
  const int chunk =
      static_cast<int>(std::clamp<int64_t>(kChunkFloats / std::max<int64_t>(1, z_per_image), 1, g.N));
  thread_local std::vector<float> z;
  thread_local std::vector<int32_t> unused;
  z.resize(static_cast<size_t>(chunk * z_per_image));
  if (k.argmax == nullptr) unused.resize(static_cast<size_t>(chunk * pooled_per_image));
  for (int n0 = 0; n0 < g.N; n0 += chunk) {
    const int nc = std::min(chunk, g.N - n0);
    Conv2dGeometry gc = g;
    gc.N = nc;
    Conv2dForward<float> conv;
    conv.out = z.data(), conv.inp = k.inp + int64_t(n0) * g.H * g.W * g.C, conv.weight = k.weight,
    conv.bias = k.bias, conv.g = gc;
    conv2d_forward(conv);
    ActivationForward<float> activation;
    activation.out = z.data(), activation.inp = z.data(), activation.n = nc * z_per_image,
    activation.act = k.act;
    naive::activation_forward(activation);
    Pool2dGeometry pc = p;
    pc.N = nc;
    Maxpool2dForward<float> pool;
    pool.out = k.out + n0 * pooled_per_image;
    pool.argmax = k.argmax != nullptr ? k.argmax + n0 * pooled_per_image : unused.data();
    pool.inp = z.data(), pool.g = pc;
    maxpool2d_forward(pool);
  }
  if (k.dropout.rate != 0.0f) drop(k.out, k.out, int64_t(g.N) * pooled_per_image, k.dropout, true);
}

// Only the maxima carry gradient, so the backward visits each pooled element once:
//   dweight[kh,kw,c,f] += g * inp[n, ho*SH - pad_top + kh, wo*SW - pad_left + kw, c]
//   dinp   [n, ih, iw, c] += g * weight[kh,kw,c,f]
//   dbias[f] += g
// for g = dout (through the folded dropout's mask) * act'(out) of pooled element (n,po,qo,f) whose maximum
// sat at (ho,wo): 1/(PH*PW) of the unfused backward's work. Within one kernel row the in-image columns of the
// window are KW*C consecutive floats of the input and of filter f's (transposed) weights alike
// (channels-last), so the inner loop runs over that whole span. Images are split among the
// threads: each thread adds its images' dweight terms into a private (F, KH*KW*C) buffer, and
// the buffers are added in thread order at the end (the result does not depend on
// scheduling); dinp rows belong to one image, hence to one thread. (Visiting a pooled pixel's
// F filters together instead, a loop over F per input, measured 2-5x slower on the LRCN's
// first layer in the lab, 2026-11-26.)
void conv2d_act_pool_backward(const Conv2dActPoolBackward<float>& k) {
  require_fusable(k, "cpu::conv2d_act_pool_backward");
  const Conv2dGeometry& g = k.g;
  const Pool2dGeometry& p = k.p;
  const int64_t C = g.C, F = g.F, R = int64_t(g.KH) * g.KW * C;
  const int64_t image = int64_t(g.H) * g.W * C, pooled_per_image = int64_t(p.HO) * p.WO * F;
  // The dropout's backward first (one vectorised pass): the pool's output gradient.
  std::vector<float> masked;
  const float* dout = k.dout;
  if (k.dropout.rate != 0.0f) {
    masked.resize(static_cast<size_t>(g.N * pooled_per_image));
    drop(masked.data(), k.dout, g.N * pooled_per_image, k.dropout, true);
    dout = masked.data();
  }
  std::vector<float> weight_t;  // (F, R): filter f's weights contiguous
  if (k.dinp != nullptr) {
    weight_t.resize(static_cast<size_t>(F * R));
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t f = 0; f < F; ++f) weight_t[size_t(f * R + r)] = k.weight[r * F + f];
    }
    std::fill(k.dinp, k.dinp + int64_t(g.N) * image, 0.0f);
  }
  const int threads = std::max(1, std::min<int>(omp_get_max_threads(), g.N));
  // Per thread: dweight (F, R), dbias (F) in double.
  std::vector<float> dweight(static_cast<size_t>(threads * F * R), 0.0f);
  std::vector<double> dbias(static_cast<size_t>(threads * F), 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    float* dw = dweight.data() + t * F * R;
    double* db = dbias.data() + t * F;
    std::vector<float> grads(static_cast<size_t>(F));
#pragma omp for schedule(static)
    for (int n = 0; n < g.N; ++n) {
      const float* x = k.inp + n * image;
      float* dx = k.dinp != nullptr ? k.dinp + n * image : nullptr;
      for (int64_t pix = 0; pix < int64_t(p.HO) * p.WO; ++pix) {
        const int64_t i0 = n * pooled_per_image + pix * F;  // pooled element (n, pix, 0)
        bool any = false;
        for (int64_t f = 0; f < F; ++f) {
          grads[size_t(f)] = pooled_grad(dout, k.out, i0 + f, k.act);
          db[f] += grads[size_t(f)];
          any = any || grads[size_t(f)] != 0.0f;
        }
        if (!any) continue;  // every filter's relu off here, or no gradient
        // Visits the input rows under output pixel `at` (flat ho*WO + wo): body(offset of the
        // row's first in-image column in the image, the same column's offset in a kernel, span).
        const auto rows_under = [&](int32_t at, auto&& body) {
          const int ho = at / g.WO, wo = at % g.WO;
          const int iw0 = wo * g.SW - g.pad_left;
          const int kw_lo = std::max(0, -iw0), kw_hi = std::min(g.KW, g.W - iw0);
          if (kw_lo >= kw_hi) return;
          for (int kh = 0; kh < g.KH; ++kh) {
            const int ih = ho * g.SH - g.pad_top + kh;
            if (ih < 0 || ih >= g.H) continue;
            body((int64_t(ih) * g.W + iw0 + kw_lo) * C, (int64_t(kh) * g.KW + kw_lo) * C,
                 int64_t(kw_hi - kw_lo) * C);
          }
        };
        for (int64_t f = 0; f < F; ++f) {
          const float gf = grads[size_t(f)];
          if (gf == 0.0f) continue;
          rows_under(k.argmax[i0 + f], [&](int64_t at, int64_t tap, int64_t span) {
            float* __restrict dw_row = dw + f * R + tap;
            const float* __restrict x_row = x + at;
            for (int64_t j = 0; j < span; ++j) dw_row[j] += gf * x_row[j];
            if (dx != nullptr) {
              float* __restrict dx_row = dx + at;
              const float* __restrict w_row = weight_t.data() + f * R + tap;
              for (int64_t j = 0; j < span; ++j) dx_row[j] += gf * w_row[j];
            }
          });
        }
      }
    }
  }
  std::fill(k.dweight, k.dweight + R * F, 0.0f);
  for (int t = 0; t < threads; ++t) {
    const float* dw = dweight.data() + t * F * R;
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t f = 0; f < F; ++f) k.dweight[r * F + f] += dw[f * R + r];
    }
  }
  if (k.dbias != nullptr) {
    for (int64_t f = 0; f < F; ++f) {
      double s = 0.0;
      for (int t = 0; t < threads; ++t) s += dbias[size_t(t * F + f)];
      k.dbias[f] = static_cast<float>(s);
    }
  }
}

}  // namespace cpu

}  // namespace hisvid
