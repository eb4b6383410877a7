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

}  // namespace hisvid

namespace hisvid::cpu {

// out (N,HO,WO,C) = max over each window of inp (N,H,W,C); argmax (N,HO,WO,C) receives the
// flat index (h*W + w) inside the image of the first maximum in row-major window order.
template <typename T>
void maxpool2d_forward(T* out, int32_t* argmax, const T* inp, const Pool2dGeometry& g);
// dinp (N,H,W,C) (=): each dout element goes to the position its argmax names.
template <typename T>
void maxpool2d_backward(T* dinp, const T* dout, const int32_t* argmax, const Pool2dGeometry& g);

// out (N,C) = sum over s of inp (N,S,C) / S, the sum taken in double in s order.
template <typename T>
void global_avgpool_forward(T* out, const T* inp, int64_t N, int64_t S, int64_t C);
// dinp (N,S,C) (=) dout (N,C) / S.
template <typename T>
void global_avgpool_backward(T* dinp, const T* dout, int64_t N, int64_t S, int64_t C);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const Pool2dGeometry& g,
                       cudaStream_t stream);
void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, const Pool2dGeometry& g,
                        cudaStream_t stream);
void global_avgpool_forward(float* out, const float* inp, int64_t N, int64_t S, int64_t C,
                            cudaStream_t stream);
void global_avgpool_backward(float* dinp, const float* dout, int64_t N, int64_t S, int64_t C,
                             cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
