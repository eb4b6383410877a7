// kernels/conv2d_pool.cpp — the fused convolution + activation + max-pool on the host: the
// naive row (the three definitions, one after the other) and the tuned CPU rows (forward, and
// backward's portable and AVX2 forms). See kernels/conv2d_pool.h for the arithmetic.
#include "kernels/conv2d_pool.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels/conv2d_avx2.h"
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

// The forward through GEMM convolves this many floats of output at a time (4 MiB): a chunk of
// whole images whose convolution output is still in cache when the activation and the pooling
// read it.
constexpr int64_t kChunkFloats = int64_t(1) << 20;

// The activation on the convolution's output z (n floats, in place), then the max-pool of it.
void activate_and_pool(float* z, int64_t n, Activation act, Maxpool2dForward<float> pool) {
  ActivationForward<float> activation;
  activation.out = z, activation.inp = z, activation.n = n, activation.act = act;
  naive::activation_forward(activation);
  pool.inp = z;
  maxpool2d_forward(pool);
}

// The forward through the direct convolution: each thread takes whole images, one at a time,
// and convolves, activates and pools each in its own scratch (the LRCN's first block: 256 KiB an
// image, in the core's L2), so the convolution's output never goes out to memory. The
// convolution, the activation and the pooling of one image run on the thread that took it (its
// nested OpenMP regions get one thread, whatever OMP_MAX_ACTIVE_LEVELS says), each output the
// same sum as in the chunked form. The scratch is allocated before the threads start, so a
// failed allocation is the caller's exception.
void forward_image_by_image(const Conv2dActPoolForward<float>& k, int threads) {
  const Conv2dGeometry& g = k.g;
  const Pool2dGeometry& p = k.p;
  const int64_t image = int64_t(g.H) * g.W * g.C, z_per_image = int64_t(g.HO) * g.WO * g.F;
  const int64_t pooled_per_image = int64_t(p.HO) * p.WO * p.C;
  thread_local std::vector<float> z;         // (threads, HO,WO,F)
  thread_local std::vector<int32_t> unused;  // (threads, PO,QO,F) when no argmax is wanted
  z.resize(static_cast<size_t>(threads * z_per_image));
  if (k.argmax == nullptr) unused.resize(static_cast<size_t>(threads * pooled_per_image));
  // This thread's buffers, by pointer: inside the region a thread_local name is each thread's own.
  float* const scratch = z.data();
  int32_t* const spare = unused.data();
  Conv2dGeometry g1 = g;
  g1.N = 1;
  Pool2dGeometry p1 = p;
  p1.N = 1;
#pragma omp parallel num_threads(threads)
  {
    omp_set_num_threads(1);  // this thread's nested regions
    const int t = omp_get_thread_num();
    float* const mine = scratch + t * z_per_image;
#pragma omp for schedule(static)
    for (int n = 0; n < g.N; ++n) {
      Conv2dForward<float> conv;
      conv.out = mine, conv.inp = k.inp + n * image, conv.weight = k.weight, conv.bias = k.bias, conv.g = g1;
      conv2d_forward(conv);
      Maxpool2dForward<float> pool;
      pool.out = k.out + n * pooled_per_image;
      pool.argmax = k.argmax != nullptr ? k.argmax + n * pooled_per_image : spare + t * pooled_per_image;
      pool.g = p1;
      activate_and_pool(mine, z_per_image, k.act, pool);
    }
  }
}

}  // namespace

void conv2d_act_pool_forward(const Conv2dActPoolForward<float>& k) {
  require_fusable(k, "cpu::conv2d_act_pool_forward");
  const Conv2dGeometry& g = k.g;
  const Pool2dGeometry& p = k.p;
  const int64_t z_per_image = int64_t(g.HO) * g.WO * g.F, pooled_per_image = int64_t(p.HO) * p.WO * p.C;
  if (g.N == 0) return;
  // Image by image where every thread gets an image and an image's output is no larger than a
  // chunk; else in chunks, each convolution, activation and pooling on all the threads.
  const int threads = omp_get_max_threads();
  if (conv2d_cpu_algorithm(g, Conv2dPass::Forward) == Conv2dAlgorithm::Direct && g.N >= threads &&
      z_per_image <= kChunkFloats) {
    forward_image_by_image(k, threads);
    if (k.dropout.rate != 0.0f) drop(k.out, k.out, int64_t(g.N) * pooled_per_image, k.dropout, true);
    return;
  }
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
    Pool2dGeometry pc = p;
    pc.N = nc;
    Maxpool2dForward<float> pool;
    pool.out = k.out + n0 * pooled_per_image;
    pool.argmax = k.argmax != nullptr ? k.argmax + n0 * pooled_per_image : unused.data();
    pool.g = pc;
    activate_and_pool(z.data(), nc * z_per_image, k.act, pool);
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
// (channels-last), so the inner loops run over that whole span. Images are split among the
// threads: each thread adds its images' dweight terms into a private (F, KH*KW*C) buffer, and
// the buffers are added in thread order at the end (the result does not depend on
// scheduling); dinp rows belong to one image, hence to one thread. dbias is summed in double,
// per filter in pixel order, on both rows below.
namespace {

// What every image's backward reads: the gradients reaching the convolution's output at pooled
// elements' maxima (grads), and each filter's weights contiguous (weight_t (F, KH*KW*C), when
// dinp is wanted).
struct SparseBackward {
  const Conv2dActPoolBackward<float>& k;
  const float* dout;      // (N,PO,QO,F): k.dout through the dropout's mask, or times `scale`
  float scale;            // the dropout's 1 / (1 - rate) after a relu (see sparse_backward), else 1
  const float* weight_t;  // null without dinp

  // Filter f's weights (KH*KW*C), null when no input gradient is wanted.
  const float* weights_of(int64_t f) const {
    return weight_t == nullptr ? nullptr : weight_t + f * int64_t(k.g.KH) * k.g.KW * k.g.C;
  }

  // gr (F) = the gradients of pooled elements i .. i + F - 1.
  void grads(int64_t i, int64_t F, float* __restrict gr) const {
    const float* __restrict d = dout + i;
    const float* __restrict o = k.out + i;
    with_activation(k.act, [&](auto a) {
      for (int64_t f = 0; f < F; ++f) gr[f] = (d[f] * scale) * activation_grad_from_output(o[f], a.value);
    });
  }
};

// The patch of output pixel `at` (flat ho*WO + wo) row by row: body(offset of the row's first in-image
// column in the image, the same column's offset in a kernel (KH,KW,C), span in floats).
template <typename Body>
void rows_under(const Conv2dGeometry& g, int32_t at, Body&& body) {
  const int ho = at / g.WO, wo = at % g.WO;
  const int iw0 = wo * g.SW - g.pad_left;
  const int kw_lo = std::max(0, -iw0), kw_hi = std::min(g.KW, g.W - iw0);
  if (kw_lo >= kw_hi) return;
  for (int kh = 0; kh < g.KH; ++kh) {
    const int ih = ho * g.SH - g.pad_top + kh;
    if (ih < 0 || ih >= g.H) continue;
    body((int64_t(ih) * g.W + iw0 + kw_lo) * g.C, (int64_t(kh) * g.KW + kw_lo) * g.C,
         int64_t(kw_hi - kw_lo) * g.C);
  }
}

// One gradient g of filter f at output pixel `at` of image x (H,W,C): dw_f (KH*KW*C) += g * patch,
// dx (H,W,C) += g * wt_f (KH*KW*C) over the patch (dx null: no input gradient).
void add_patch(const Conv2dGeometry& g, int32_t at, float gf, const float* x, float* dw_f, float* dx,
               const float* wt_f) {
  rows_under(g, at, [&](int64_t in_image, int64_t tap, int64_t span) {
    float* __restrict dw_row = dw_f + tap;
    const float* __restrict x_row = x + in_image;
    for (int64_t j = 0; j < span; ++j) dw_row[j] += gf * x_row[j];
    if (dx != nullptr) {
      float* __restrict dx_row = dx + in_image;
      const float* __restrict w_row = wt_f + tap;
      for (int64_t j = 0; j < span; ++j) dx_row[j] += gf * w_row[j];
    }
  });
}

// The shared frame of both rows (k checked by require_fusable): the dropout's mask on dout, the
// transposed weights, dinp zeroed, the threads' private buffers, and their sums into dweight and
// dbias. images(s, n0, n1, dw (F,R), db (F)) adds the terms of images [n0, n1), a thread's
// consecutive share.
template <typename Images>
void sparse_backward(const Conv2dActPoolBackward<float>& k, Images&& images) {
  const Conv2dGeometry& g = k.g;
  const int64_t F = g.F, R = int64_t(g.KH) * g.KW * g.C;
  const int64_t pooled = int64_t(g.N) * k.p.HO * k.p.WO * F;
  // The dropout's backward first (one vectorised pass): the pool's output gradient. After a relu
  // the mask need not be drawn again: a dropped element's output is +0, where relu' is 0, and a
  // kept one's is its relu's output times the scale, so (dout * scale) * relu'(out) is the masked
  // gradient (a -0 where the mask gives +0 at a dropped element, which reaches no sum): every
  // output the same bits, unless dout * scale is not finite at a dropped element (inf or NaN
  // there, from a dout that is, or one over FLT_MAX / scale), where inf * 0 gives NaN, not the
  // mask's 0.
  std::vector<float> masked;
  const float* dout = k.dout;
  float scale = 1.0f;
  if (k.dropout.rate != 0.0f && k.act == Activation::Relu) {
    scale = dropout_scale<float>(k.dropout.rate);
  } else if (k.dropout.rate != 0.0f) {
    masked.resize(static_cast<size_t>(pooled));
    drop(masked.data(), k.dout, pooled, k.dropout, true);
    dout = masked.data();
  }
  std::vector<float> weight_t;  // (F, R): filter f's weights contiguous
  if (k.dinp != nullptr) {
    weight_t.resize(static_cast<size_t>(F * R));
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t f = 0; f < F; ++f) weight_t[size_t(f * R + r)] = k.weight[r * F + f];
    }
    std::fill(k.dinp, k.dinp + int64_t(g.N) * g.H * g.W * g.C, 0.0f);
  }
  const SparseBackward s{k, dout, scale, k.dinp != nullptr ? weight_t.data() : nullptr};
  const int threads = std::max(1, std::min<int>(omp_get_max_threads(), g.N));
  // Per thread: dweight (F, R), dbias (F) in double.
  std::vector<float> dweight(static_cast<size_t>(threads * F * R), 0.0f);
  std::vector<double> dbias(static_cast<size_t>(threads * F), 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), count = omp_get_num_threads();
    images(s, int64_t(g.N) * t / count, int64_t(g.N) * (t + 1) / count, dweight.data() + t * F * R,
           dbias.data() + t * F);
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
      double sum = 0.0;
      for (int t = 0; t < threads; ++t) sum += dbias[size_t(t * F + f)];
      k.dbias[f] = static_cast<float>(sum);
    }
  }
}

// --- AVX2: filter by filter, the patch sums in registers ---------------------------------
//
// A thread takes its pooled pixels a chunk at a time. One pass over the chunk's elements (in the
// portable row's order, so dbias sums alike) sorts the nonzero gradients by filter: an element
// whose maximum's patch lies wholly in the image becomes an item of filter f's list, the others
// (a window cut by the image's edge) take the portable add_patch at once. Then, filter by filter,
// the patch (KH rows of KW*C floats) is cut into segments of at most 8 floats, and a group of up
// to kGroup segments keeps its sums in ymm registers over all of f's items:
//   acc[s] += broadcast(g) * x[item's patch origin + segment s]
// added to the thread's dw_f once per chunk. The input gradient walks the same items and
// segments with filter f's weights held in registers: dx[origin + segment s] += g * wt_f[segment s].

using avx2::kLanes;
using avx2::lane_mask;
constexpr int kGroup = 6;  // segments per pass over the items: 6 sums + 6 lane masks in registers
// Items a chunk of pooled pixels may sort (16 bytes each): the chunk's lists stay in the cache.
constexpr int64_t kChunkItems = int64_t(1) << 16;

// Segment s of the patch: its offset from the patch's origin in the image (H,W,C) and in the
// kernel (KH,KW,C), and its floats (8, or fewer at the end of a row: loads and stores go through
// a lane mask).
struct Segment {
  int64_t in_image, in_kernel;
  int lanes;
};

struct Item {
  int64_t origin;  // offset of the patch's first float in inp / dinp (N,H,W,C)
  float g;
};

// dw_f[seg[s].in_kernel + lane] += sum over the items of g * x[origin + seg[s].in_image + lane],
// for the G segments seg[0..G).
template <int G>
__attribute__((target("avx2,fma"))) void filter_group(float* dw_f, const float* x, const Item* items,
                                                      int64_t count, const Segment* seg) {
  __m256i mask[G];
  __m256 acc[G];
  for (int s = 0; s < G; ++s) mask[s] = lane_mask(seg[s].lanes), acc[s] = _mm256_setzero_ps();
  for (int64_t i = 0; i < count; ++i) {
    const float* origin = x + items[i].origin;
    const __m256 gv = _mm256_set1_ps(items[i].g);
    for (int s = 0; s < G; ++s)
      acc[s] = _mm256_fmadd_ps(gv, _mm256_maskload_ps(origin + seg[s].in_image, mask[s]), acc[s]);
  }
  for (int s = 0; s < G; ++s) {
    float* d = dw_f + seg[s].in_kernel;
    _mm256_maskstore_ps(d, mask[s], _mm256_add_ps(_mm256_maskload_ps(d, mask[s]), acc[s]));
  }
}

// dx[origin + seg[s].in_image + lane] += g * wt_f[seg[s].in_kernel + lane] for every item and segment.
template <int G>
__attribute__((target("avx2,fma"))) void data_group(float* dx, const float* wt_f, const Item* items,
                                                    int64_t count, const Segment* seg) {
  __m256i mask[G];
  __m256 w[G];
  for (int s = 0; s < G; ++s)
    mask[s] = lane_mask(seg[s].lanes), w[s] = _mm256_maskload_ps(wt_f + seg[s].in_kernel, mask[s]);
  for (int64_t i = 0; i < count; ++i) {
    float* origin = dx + items[i].origin;
    const __m256 gv = _mm256_set1_ps(items[i].g);
    for (int s = 0; s < G; ++s) {
      float* d = origin + seg[s].in_image;
      const __m256 sum = _mm256_fmadd_ps(gv, w[s], _mm256_maskload_ps(d, mask[s]));
      if (seg[s].lanes == kLanes) {
        _mm256_storeu_ps(d, sum);
      } else {
        _mm256_maskstore_ps(d, mask[s], sum);  // a row's tail: the floats after it are not the patch's
      }
    }
  }
}

// Runs run(G) for G = count (1..kGroup) as a compile-time constant.
template <typename Run>
void with_group_size(int count, Run&& run) {
  static_assert(kGroup == 6, "one case per group size");
  switch (count) {
    case 1:
      return run(std::integral_constant<int, 1>{});
    case 2:
      return run(std::integral_constant<int, 2>{});
    case 3:
      return run(std::integral_constant<int, 3>{});
    case 4:
      return run(std::integral_constant<int, 4>{});
    case 5:
      return run(std::integral_constant<int, 5>{});
    default:
      return run(std::integral_constant<int, 6>{});
  }
}

// The patch's segments, row by row.
std::vector<Segment> patch_segments(const Conv2dGeometry& g) {
  const int64_t span = int64_t(g.KW) * g.C;
  std::vector<Segment> segments;
  for (int kh = 0; kh < g.KH; ++kh) {
    for (int64_t j = 0; j < span; j += kLanes)
      segments.push_back(
          {kh * int64_t(g.W) * g.C + j, kh * span + j, int(std::min<int64_t>(kLanes, span - j))});
  }
  return segments;
}

}  // namespace

void conv2d_act_pool_backward_portable(const Conv2dActPoolBackward<float>& k) {
  require_fusable(k, "cpu::conv2d_act_pool_backward_portable");
  sparse_backward(k, [](const SparseBackward& s, int64_t n0, int64_t n1, float* dw, double* db) {
    const Conv2dActPoolBackward<float>& k = s.k;
    const Conv2dGeometry& g = k.g;
    const int64_t F = g.F, R = int64_t(g.KH) * g.KW * g.C, image = int64_t(g.H) * g.W * g.C;
    const int64_t pixels = int64_t(k.p.HO) * k.p.WO;
    std::vector<float> gr(static_cast<size_t>(F));
    for (int64_t n = n0; n < n1; ++n) {
      const float* x = k.inp + n * image;
      float* dx = k.dinp != nullptr ? k.dinp + n * image : nullptr;
      for (int64_t i = n * pixels * F; i < (n + 1) * pixels * F; i += F) {  // pooled element (n, pixel, 0)
        s.grads(i, F, gr.data());
        for (int64_t f = 0; f < F; ++f) {
          db[f] += gr[size_t(f)];
          if (gr[size_t(f)] != 0.0f)
            add_patch(g, k.argmax[i + f], gr[size_t(f)], x, dw + f * R, dx, s.weights_of(f));
        }
      }
    }
  });
}

void conv2d_act_pool_backward_avx2(const Conv2dActPoolBackward<float>& k) {
  require_fusable(k, "cpu::conv2d_act_pool_backward_avx2");
  const Conv2dGeometry& g = k.g;
  const std::vector<Segment> segments = patch_segments(g);
  // Output pixel `at` (flat ho*WO + wo): its patch's origin in the image, or -1 when the image's
  // edge cuts the patch.
  std::vector<int64_t> origin(static_cast<size_t>(int64_t(g.HO) * g.WO));
  for (int64_t at = 0; at < int64_t(origin.size()); ++at) {
    const int ih = int(at / g.WO) * g.SH - g.pad_top, iw = int(at % g.WO) * g.SW - g.pad_left;
    const bool inside = ih >= 0 && iw >= 0 && ih + g.KH <= g.H && iw + g.KW <= g.W;
    origin[size_t(at)] = inside ? (int64_t(ih) * g.W + iw) * g.C : -1;
  }
  sparse_backward(k, [&](const SparseBackward& s, int64_t n0, int64_t n1, float* dw, double* db) {
    const int64_t F = g.F, R = int64_t(g.KH) * g.KW * g.C, image = int64_t(g.H) * g.W * g.C;
    const int64_t pixels = int64_t(k.p.HO) * k.p.WO;
    // The thread's pooled pixels (n, pixel) as one run q in [n0 * pixels, n1 * pixels), a chunk at a time.
    const int64_t per_filter = std::max<int64_t>(1, kChunkItems / F);  // a chunk's pixels: a list's capacity
    thread_local std::vector<Item> items;
    thread_local std::vector<int64_t> counts;
    thread_local std::vector<float> grads;  // (F): one pooled pixel's
    items.resize(size_t(F * per_filter));
    counts.resize(size_t(F));
    grads.resize(size_t(F));
    Item* const lists = items.data();
    int64_t* const __restrict listed = counts.data();
    float* const __restrict gr = grads.data();
    double* const __restrict dbias = db;
    for (int64_t q0 = n0 * pixels; q0 < n1 * pixels; q0 += per_filter) {
      std::fill(listed, listed + F, 0);
      for (int64_t q = q0; q < std::min(n1 * pixels, q0 + per_filter); ++q) {
        const int64_t n = q / pixels, i = q * F;  // element (n, pixel, 0)
        s.grads(i, F, gr);
        for (int64_t f = 0; f < F; ++f) dbias[f] += gr[f];
        for (int64_t f = 0; f < F; ++f) {
          if (gr[f] == 0.0f) continue;
          const int64_t at = origin[size_t(k.argmax[i + f])];
          if (at >= 0) {
            lists[f * per_filter + listed[f]++] = {n * image + at, gr[f]};
          } else {
            add_patch(g, k.argmax[i + f], gr[f], k.inp + n * image, dw + f * R,
                      k.dinp != nullptr ? k.dinp + n * image : nullptr, s.weights_of(f));
          }
        }
      }
      for (int64_t f = 0; f < F; ++f) {
        const Item* list = lists + f * per_filter;
        const int64_t count = listed[f];
        if (count == 0) continue;
        for (size_t s0 = 0; s0 < segments.size(); s0 += kGroup) {
          const Segment* seg = &segments[s0];
          with_group_size(int(std::min<size_t>(kGroup, segments.size() - s0)), [&](auto G) {
            constexpr int kG = decltype(G)::value;
            filter_group<kG>(dw + f * R, k.inp, list, count, seg);
            if (k.dinp != nullptr) data_group<kG>(k.dinp, s.weights_of(f), list, count, seg);
          });
        }
      }
    }
  });
}

void conv2d_act_pool_backward(const Conv2dActPoolBackward<float>& k) {
  require_fusable(k, "cpu::conv2d_act_pool_backward");
  if (avx2::available()) return conv2d_act_pool_backward_avx2(k);
  conv2d_act_pool_backward_portable(k);
}

}  // namespace cpu

}  // namespace hisvid
