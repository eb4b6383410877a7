// kernels/conv2d_pool.h — Conv2D (+ bias) + activation + MaxPooling2D as one kernel: what a
// Keras Conv2D layer followed by a MaxPooling2D layer computes (TimeDistributed or not), with
// the same arithmetic as the three kernels one after the other:
//   z[n,ho,wo,f]   = bias[f] + sum_{kh,kw,c} inp[n, ho*SH - pad_top + kh, wo*SW - pad_left + kw, c]
//                                             * weight[kh,kw,c,f]          (kernels/conv2d.h)
//   y              = act(z)                                                (kernels/common.h)
//   out[n,po,qo,f] = the first maximum of y over the pool window of (po,qo) (kernels/pool.h)
// Backward needs only what forward kept: the pooled outputs and the position of each maximum.
// The gradient reaches z at those positions alone, dz = dout * act'(out) (act' from the
// output, as TensorFlow takes it), so the convolution's backward passes run on a dz that is
// nonzero at one position in PH*PW: the CPU row does 1/(PH*PW) of the work of the unfused
// backward (1/16 under the LRCN's 4x4 pools).
//
// A Keras Dropout right after the pool folds in (PoolDropout, rate 0: none): the pooled output
// is dropped as kernels/dropout.h drops a tensor, element i of out (N,PO,QO,F) kept iff
// philox_uniform(seed, offset, i) >= rate and then scaled by 1 / (1 - rate), the same bits as
// the Dropout layer's kernel on the pooled tensor. Backward multiplies dout by the same mask
// before the activation's derivative, which it takes from the dropped output: right for relu
// and linear alone (a kept element keeps its sign, a dropped one carries no gradient), so a
// rate > 0 with another activation is refused (std::invalid_argument), as is a grouped one.
// After a relu the CPU rows read the mask from the output instead (a dropped element's is +0):
// the same results but where dout * scale is not finite at a dropped element (see
// sparse_backward in kernels/conv2d_pool.cpp).
//
// Rows: naive (the three definitions composed), cpu (forward: convolution of an image, with the
// direct convolution, or of a chunk of images, with GEMM, into a scratch buffer that stays in
// cache, activation and pooling on it; backward: the sparse
// sums, cpu.avx2's where the processor has AVX2 and FMA, else cpu.portable's), cpu.portable
// (backward: pooled element by pooled element, each filter's patch added in place), cpu.avx2
// (backward: filter by filter, the patch sums held in registers), cuda (the tiled direct
// convolution pooling its tiles in shared memory; backward the sparse sums per chunk of pooled
// positions, and the input's gradient as the tiled transposed convolution reading dz from the
// pooled gradients), cuda.v1 (one thread per pooled output
// forward; backward per weight, per filter and per input element). No atomics anywhere.
// Ungrouped convolutions only (G = 1, what the engine's Conv2D layer makes): every row throws
// std::invalid_argument on a grouped geometry rather than read its kernel as (KH,KW,C,F).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/common.h"
#include "kernels/conv2d.h"
#include "kernels/dropout.h"
#include "kernels/philox.h"
#include "kernels/pool.h"

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid {

// Throws unless the convolution of a fused row is ungrouped.
inline void require_ungrouped(const Conv2dGeometry& g, const char* row) {
  if (g.G != 1) {
    throw std::invalid_argument(std::string(row) +
                                ": the fused convolution takes no groups, got G = " + std::to_string(g.G));
  }
}

// Inverted dropout of the pooled output (see above); rate 0 leaves it as it is.
struct PoolDropout {
  float rate = 0.0f;
  uint64_t seed = 0, offset = 0;
  const int64_t* offset_base = nullptr;  // (1), in the memory the row runs on: based_offset
  // x as element i of the dropped tensor, as the Dropout rows drop it (kernels/dropout.h).
  template <typename T>
  HISVID_HD T apply(T x, int64_t i) const {
    if (rate == 0.0f) return x;
    return dropout_element(x,
                           philox_uniform(seed, based_offset(offset, offset_base), static_cast<uint64_t>(i)),
                           rate, dropout_scale<T>(rate));
  }
};

// Throws unless a fused row can drop its output after activation `act` (relu or linear).
inline void require_droppable(Activation act, const PoolDropout& dropout, const char* row) {
  if (dropout.rate != 0.0f && act != Activation::Relu && act != Activation::Linear) {
    throw std::invalid_argument(std::string(row) +
                                ": a dropout after the pool folds in after a relu or linear activation only");
  }
}

// The pool's geometry over the convolution's output: p.N, p.H, p.W, p.C are g.N, g.HO, g.WO,
// g.F; the pooled output is (N, p.HO, p.WO, F).
HISVID_HD Pool2dGeometry pool_over(const Conv2dGeometry& g, int PH, int PW, int SH, int SW, Padding padding) {
  return pool2d_geometry(g.N, g.HO, g.WO, g.F, PH, PW, SH, SW, padding);
}

// out (N,PO,QO,F) = maxpool(act(conv(inp (N,H,W,C), weight (KH,KW,C,F)) + bias (F)));
// argmax (N,PO,QO,F) = the flat index ho*WO + wo of each window's first maximum in the
// convolution's output, or null when no backward follows. bias may be null. With a dropout,
// out is the dropped output (the Dropout layer's) and argmax stays the pool's.
template <typename T>
struct Conv2dActPoolForward {
  static constexpr const char* kName = "conv2d_act_pool_forward";
  T* out = nullptr;
  int32_t* argmax = nullptr;
  const T* inp = nullptr;
  const T* weight = nullptr;
  const T* bias = nullptr;
  Conv2dGeometry g{};
  Pool2dGeometry p{};
  Activation act = Activation::Linear;
  PoolDropout dropout{};
  template <typename V>
  void buffers(V& v) {
    const int64_t pooled = int64_t(p.N) * p.HO * p.WO * p.C;
    v.in("dropout.offset_base", dropout.offset_base, 1);
    v.out("out", out, pooled);
    v.out("argmax", argmax, pooled);
    v.in("inp", inp, int64_t(g.N) * g.H * g.W * g.C);
    v.in("weight", weight, int64_t(g.KH) * g.KW * g.C * g.F);
    v.in("bias", bias, g.F);
  }
};

// From dout (N,PO,QO,F) and what forward kept (out, argmax): dinp (N,H,W,C) (=, may be null
// when the input needs no gradient), dweight (KH,KW,C,F) (=), dbias (F) (=, may be null): every
// element written, so the op hands the rows fresh buffers with no fill before them.
template <typename T>
struct Conv2dActPoolBackward {
  static constexpr const char* kName = "conv2d_act_pool_backward";
  T* dinp = nullptr;
  T* dweight = nullptr;
  T* dbias = nullptr;
  const T* dout = nullptr;
  const T* out = nullptr;
  const int32_t* argmax = nullptr;
  const T* inp = nullptr;
  const T* weight = nullptr;
  Conv2dGeometry g{};
  Pool2dGeometry p{};
  Activation act = Activation::Linear;
  PoolDropout dropout{};  // forward's; out is then the dropped output
  template <typename V>
  void buffers(V& v) {
    const int64_t pooled = int64_t(p.N) * p.HO * p.WO * p.C;
    v.in("dropout.offset_base", dropout.offset_base, 1);
    v.out("dinp", dinp, int64_t(g.N) * g.H * g.W * g.C);
    v.out("dweight", dweight, int64_t(g.KH) * g.KW * g.C * g.F);
    v.out("dbias", dbias, g.F);
    v.in("dout", dout, pooled);
    v.in("out", out, pooled);
    v.in("argmax", argmax, pooled);
    v.in("inp", inp, int64_t(g.N) * g.H * g.W * g.C);
    v.in("weight", weight, int64_t(g.KH) * g.KW * g.C * g.F);
  }
};

// Throws unless a fused row can run k (Conv2dActPoolForward or Backward): an ungrouped
// convolution, the pool over exactly the convolution's output (pool_over, 'valid' or 'same'), and
// a dropout only after a relu or linear activation. Every row checks this before any work.
template <typename Args>
void require_fusable(const Args& k, const char* row) {
  require_ungrouped(k.g, row);
  require_droppable(k.act, k.dropout, row);
  const Pool2dGeometry& p = k.p;
  if (p.PH <= 0 || p.PW <= 0 || p.SH <= 0 || p.SW <= 0) {
    throw std::invalid_argument(std::string(row) + ": the pool's window " + std::to_string(p.PH) + "x" +
                                std::to_string(p.PW) + " and strides " + std::to_string(p.SH) + "x" +
                                std::to_string(p.SW) + " must be positive");
  }
  for (const Padding padding : {Padding::Valid, Padding::Same}) {
    const Pool2dGeometry q = pool_over(k.g, p.PH, p.PW, p.SH, p.SW, padding);
    if (q.N == p.N && q.H == p.H && q.W == p.W && q.C == p.C && q.HO == p.HO && q.WO == p.WO &&
        q.pad_top == p.pad_top && q.pad_left == p.pad_left)
      return;
  }
  throw std::invalid_argument(
      std::string(row) + ": the pool (input " + std::to_string(p.N) + "x" + std::to_string(p.H) + "x" +
      std::to_string(p.W) + "x" + std::to_string(p.C) + ", output " + std::to_string(p.HO) + "x" +
      std::to_string(p.WO) + ") is not a pooling of the convolution's output (" + std::to_string(k.g.N) +
      "x" + std::to_string(k.g.HO) + "x" + std::to_string(k.g.WO) + "x" + std::to_string(k.g.F) + ")");
}

}  // namespace hisvid

namespace hisvid::naive {

template <typename T>
void conv2d_act_pool_forward(const Conv2dActPoolForward<T>& k);
template <typename T>
void conv2d_act_pool_backward(const Conv2dActPoolBackward<T>& k);

}  // namespace hisvid::naive

namespace hisvid::cpu {

void conv2d_act_pool_forward(const Conv2dActPoolForward<float>& k);
void conv2d_act_pool_backward(const Conv2dActPoolBackward<float>& k);  // avx2 where it runs, else portable
// Backward's two forms, rows cpu.portable and cpu.avx2 (the latter on processors with AVX2 and FMA).
void conv2d_act_pool_backward_portable(const Conv2dActPoolBackward<float>& k);
void conv2d_act_pool_backward_avx2(const Conv2dActPoolBackward<float>& k);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

// Version 2, the `cuda` rows (see kernels/conv2d_pool.cu), and version 1, rows `cuda.v1`.
void conv2d_act_pool_forward(const Conv2dActPoolForward<float>& k, cudaStream_t stream);
void conv2d_act_pool_backward(const Conv2dActPoolBackward<float>& k, cudaStream_t stream);
void conv2d_act_pool_forward_v1(const Conv2dActPoolForward<float>& k, cudaStream_t stream);
void conv2d_act_pool_backward_v1(const Conv2dActPoolBackward<float>& k, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
