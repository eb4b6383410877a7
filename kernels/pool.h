// kernels/pool.h — 2-D max pooling, channels-last, Keras semantics. Padded positions never
// win (they count as -infinity). MaxPooling3D with pool (1,PH,PW) is this over (N*T,H,W,C).
// Global average pooling (GlobalAveragePooling1D/2D/3D): the mean over every axis between the
// batch and the channels, those axes flattened into S (H*W, or T*H*W).
#pragma once

#include <cstdint>

#include "kernels/common.h"

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid {

struct Pool2dGeometry {
  int N, H, W, C;  // input (N,H,W,C)
  int PH, PW;      // pool window
  int SH, SW;      // strides
  int HO, WO;      // output (N,HO,WO,C)
  int pad_top, pad_left;
};

HISVID_HD Pool2dGeometry pool2d_geometry(int N, int H, int W, int C, int PH, int PW, int SH, int SW,
                                         Padding padding) {
  const Window1d h = window_1d(H, PH, SH, padding), w = window_1d(W, PW, SW, padding);
  return Pool2dGeometry{N, H, W, C, PH, PW, SH, SW, h.out, w.out, h.pad_before, w.pad_before};
}

// out (N,HO,WO,C) = max over each window of inp (N,H,W,C); argmax (N,HO,WO,C) receives the
// flat index (h*W + w) inside the image of the first maximum in row-major window order.
template <typename T>
struct Maxpool2dForward {
  static constexpr const char* kName = "maxpool2d_forward";
  T* out = nullptr;
  int32_t* argmax = nullptr;
  const T* inp = nullptr;
  Pool2dGeometry g{};
  template <typename V>
  void buffers(V& v) {
    v.out("out", out, int64_t(g.N) * g.HO * g.WO * g.C);
    v.out("argmax", argmax, int64_t(g.N) * g.HO * g.WO * g.C);
    v.in("inp", inp, int64_t(g.N) * g.H * g.W * g.C);
  }
};

// dinp (N,H,W,C) (=): each dout (N,HO,WO,C) element goes to the position its argmax names.
template <typename T>
struct Maxpool2dBackward {
  static constexpr const char* kName = "maxpool2d_backward";
  T* dinp = nullptr;
  const T* dout = nullptr;
  const int32_t* argmax = nullptr;
  Pool2dGeometry g{};
  template <typename V>
  void buffers(V& v) {
    v.out("dinp", dinp, int64_t(g.N) * g.H * g.W * g.C);
    v.in("dout", dout, int64_t(g.N) * g.HO * g.WO * g.C);
    v.in("argmax", argmax, int64_t(g.N) * g.HO * g.WO * g.C);
  }
};

// out (N,C) = sum over s of inp (N,S,C) / S, the sum taken in double in s order.
template <typename T>
struct GlobalAvgpoolForward {
  static constexpr const char* kName = "global_avgpool_forward";
  T* out = nullptr;
  const T* inp = nullptr;
  int64_t N = 0, S = 0, C = 0;
  template <typename V>
  void buffers(V& v) {
    v.out("out", out, N * C);
    v.in("inp", inp, N * S * C);
  }
};

// dinp (N,S,C) (=) dout (N,C) / S.
template <typename T>
struct GlobalAvgpoolBackward {
  static constexpr const char* kName = "global_avgpool_backward";
  T* dinp = nullptr;
  const T* dout = nullptr;
  int64_t N = 0, S = 0, C = 0;
  template <typename V>
  void buffers(V& v) {
    v.out("dinp", dinp, N * S * C);
    v.in("dout", dout, N * C);
  }
};

}  // namespace hisvid

namespace hisvid::naive {

template <typename T>
void maxpool2d_forward(const Maxpool2dForward<T>& k);
template <typename T>
void maxpool2d_backward(const Maxpool2dBackward<T>& k);
template <typename T>
void global_avgpool_forward(const GlobalAvgpoolForward<T>& k);
template <typename T>
void global_avgpool_backward(const GlobalAvgpoolBackward<T>& k);

}  // namespace hisvid::naive

namespace hisvid::cpu {
// Branch-free over the channels, so the window scan vectorises: rows cpu.portable (the
// processor's baseline), cpu.avx2 and cpu.avx512 (where the processor has them), the same bits
// (a selection); `cpu` takes the widest the processor has.
void maxpool2d_forward(const Maxpool2dForward<float>& k);
void maxpool2d_forward_portable(const Maxpool2dForward<float>& k);
void maxpool2d_forward_avx2(const Maxpool2dForward<float>& k);
void maxpool2d_forward_avx512(const Maxpool2dForward<float>& k);
}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void maxpool2d_forward(const Maxpool2dForward<float>& k, cudaStream_t stream);
// Where windows do not overlap, one thread per output writes its band of the input; else (and in
// the `cuda.gather` row always) one thread per input element gathers from its windows.
void maxpool2d_backward(const Maxpool2dBackward<float>& k, cudaStream_t stream);
void maxpool2d_backward_gather(const Maxpool2dBackward<float>& k, cudaStream_t stream);
void global_avgpool_forward(const GlobalAvgpoolForward<float>& k, cudaStream_t stream);
void global_avgpool_backward(const GlobalAvgpoolBackward<float>& k, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
