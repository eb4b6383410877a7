// kernels/dropout.h — inverted dropout (Keras): an element is kept when its Philox uniform
// u(seed, offset, i) >= rate, and kept elements are scaled by 1 / (1 - rate). The mask is a
// pure function of (seed, offset, i), so backward regenerates it instead of storing it, and
// the CPU and CUDA masks are the same bits. offset_base (optional, one int64 in the memory the
// kernel runs on) is added to offset: kernels/common.h based_offset.
#pragma once

#include <cstdint>

#include "kernels/common.h"

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid {

// The factor of a kept element: 1 / (1 - rate), in T.
template <typename T>
HISVID_HD T dropout_scale(float rate) {
  return T(1) / (T(1) - T(rate));
}

// x as an element of the dropped tensor, u its Philox uniform: x * scale where kept (u >= rate),
// +0 where dropped. Every dropout row, and the fused rows that fold a dropout in, go through it.
template <typename T>
HISVID_HD T dropout_element(T x, float u, float rate, T scale) {
  return u >= rate ? x * scale : T(0);
}

// out (n) = inp (n) * mask
template <typename T>
struct DropoutForward {
  static constexpr const char* kName = "dropout_forward";
  T* out = nullptr;
  const T* inp = nullptr;
  int64_t n = 0;
  float rate = 0.0f;
  uint64_t seed = 0, offset = 0;
  const int64_t* offset_base = nullptr;  // (1)
  template <typename V>
  void buffers(V& v) {
    v.in("offset_base", offset_base, 1);
    v.out("out", out, n);
    v.in("inp", inp, n);
  }
};

// dinp (n) (=) dout (n) * mask
template <typename T>
struct DropoutBackward {
  static constexpr const char* kName = "dropout_backward";
  T* dinp = nullptr;
  const T* dout = nullptr;
  int64_t n = 0;
  float rate = 0.0f;
  uint64_t seed = 0, offset = 0;
  const int64_t* offset_base = nullptr;  // (1)
  template <typename V>
  void buffers(V& v) {
    v.in("offset_base", offset_base, 1);
    v.out("dinp", dinp, n);
    v.in("dout", dout, n);
  }
};

// mask (n) = 1 / (1 - rate) where kept, 0 elsewhere (for masks broadcast over time, such as
// recurrent_dropout's one mask per gate per sequence).
template <typename T>
struct DropoutMask {
  static constexpr const char* kName = "dropout_mask";
  T* mask = nullptr;
  int64_t n = 0;
  float rate = 0.0f;
  uint64_t seed = 0, offset = 0;
  const int64_t* offset_base = nullptr;  // (1)
  template <typename V>
  void buffers(V& v) {
    v.in("offset_base", offset_base, 1);
    v.out("mask", mask, n);
  }
};

// Spatial dropout (SpatialDropout1D/2D/3D): whole feature maps dropped. out (N,S,C) =
// inp (N,S,C) * mask (N,C) broadcast over S, where mask(n, c) is DropoutMask's element n*C + c.
template <typename T>
struct SpatialDropoutForward {
  static constexpr const char* kName = "spatial_dropout_forward";
  T* out = nullptr;
  const T* inp = nullptr;
  int64_t N = 0, S = 0, C = 0;
  float rate = 0.0f;
  uint64_t seed = 0, offset = 0;
  const int64_t* offset_base = nullptr;  // (1)
  template <typename V>
  void buffers(V& v) {
    v.in("offset_base", offset_base, 1);
    v.out("out", out, N * S * C);
    v.in("inp", inp, N * S * C);
  }
};

// dinp (N,S,C) (=) dout (N,S,C) * mask (N,C) broadcast over S.
template <typename T>
struct SpatialDropoutBackward {
  static constexpr const char* kName = "spatial_dropout_backward";
  T* dinp = nullptr;
  const T* dout = nullptr;
  int64_t N = 0, S = 0, C = 0;
  float rate = 0.0f;
  uint64_t seed = 0, offset = 0;
  const int64_t* offset_base = nullptr;  // (1)
  template <typename V>
  void buffers(V& v) {
    v.in("offset_base", offset_base, 1);
    v.out("dinp", dinp, N * S * C);
    v.in("dout", dout, N * S * C);
  }
};

}  // namespace hisvid

namespace hisvid::naive {

template <typename T>
void dropout_forward(const DropoutForward<T>& k);
template <typename T>
void dropout_backward(const DropoutBackward<T>& k);
template <typename T>
void dropout_mask(const DropoutMask<T>& k);
template <typename T>
void spatial_dropout_forward(const SpatialDropoutForward<T>& k);
template <typename T>
void spatial_dropout_backward(const SpatialDropoutBackward<T>& k);

}  // namespace hisvid::naive

namespace hisvid::cpu {

// The naive rows' masks, the same bits, with Philox run on 8 counters at once in AVX2 registers
// (32 elements a step); registered only on processors with AVX2 (dropout_cpu_available()).
bool dropout_cpu_available();
void dropout_forward(const DropoutForward<float>& k);
void dropout_backward(const DropoutBackward<float>& k);
void dropout_mask(const DropoutMask<float>& k);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void dropout_forward(const DropoutForward<float>& k, cudaStream_t stream);
void dropout_backward(const DropoutBackward<float>& k, cudaStream_t stream);
void dropout_mask(const DropoutMask<float>& k, cudaStream_t stream);
void spatial_dropout_forward(const SpatialDropoutForward<float>& k, cudaStream_t stream);
void spatial_dropout_backward(const SpatialDropoutBackward<float>& k, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
