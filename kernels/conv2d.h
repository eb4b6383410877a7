// kernels/conv2d.h — 2-D convolution, channels-last, Keras semantics (cross-correlation,
// kernel (KH,KW,C,F), stride, padding valid/same with TensorFlow's split of the padding).
//
// The CPU reference computes it by im2col + GEMM or by a direct loop nest (see
// Conv2dAlgorithm below). The CUDA
// version calls cuDNN (NHWC); conv2d_direct_forward is a hand-written alternative for the
// small first layer that a researcher can select and compare.
#pragma once

#include <cstdint>

#include "kernels/common.h"

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid {

// Everything that fixes the arithmetic of one convolution.
struct Conv2dGeometry {
  int N, H, W, C;      // input (N,H,W,C); N counts images (batch * time under TimeDistributed)
  int F, KH, KW;       // kernel (KH,KW,C,F)
  int SH, SW;          // strides
  int HO, WO;          // output (N,HO,WO,F)
  int pad_top, pad_left;
};

// Output size and padding of a Keras Conv2D; HO or WO <= 0 means the input is too small.
HISVID_HD Conv2dGeometry conv2d_geometry(int N, int H, int W, int C, int F, int KH, int KW, int SH,
                                         int SW, Padding padding) {
  const Window1d h = window_1d(H, KH, SH, padding), w = window_1d(W, KW, SW, padding);
  return Conv2dGeometry{N, H, W, C, F, KH, KW, SH, SW, h.out, w.out, h.pad_before, w.pad_before};
}

}  // namespace hisvid

namespace hisvid::cpu {

// The CPU computes a convolution one of two ways: im2col + one OpenBLAS GEMM per chunk of
// images (large patches: the GEMM's register blocking wins), or a direct loop nest vectorised
// over the filters (small patches such as the 3 -> 16 first layer, where im2col copies 27
// values per pixel for a GEMM too thin to be efficient). Auto picks per pass and shape
// (conv2d_cpu_algorithm); bench/kernel_lab_conv2d.cpp times both on the seeds' layers.
enum class Conv2dAlgorithm { Auto, Gemm, Direct };
enum class Conv2dPass { Forward, BackwardData, BackwardFilter };
// What Auto runs for a float32 convolution on this processor (float64 always runs Gemm).
Conv2dAlgorithm conv2d_cpu_algorithm(const Conv2dGeometry& g, Conv2dPass pass);

template <typename T>
void conv2d_forward_with(Conv2dAlgorithm algorithm, T* out, const T* inp, const T* weight, const T* bias,
                         const Conv2dGeometry& g);
template <typename T>
void conv2d_backward_data_with(Conv2dAlgorithm algorithm, T* dinp, const T* dout, const T* weight,
                               const Conv2dGeometry& g);
template <typename T>
void conv2d_backward_filter_with(Conv2dAlgorithm algorithm, T* dweight, T* dbias, const T* dout, const T* inp,
                                 const Conv2dGeometry& g);

// out (N,HO,WO,F) = conv(inp (N,H,W,C), weight (KH,KW,C,F)) + bias (F); bias may be null.
template <typename T>
void conv2d_forward(T* out, const T* inp, const T* weight, const T* bias, const Conv2dGeometry& g);
// dinp (N,H,W,C) (=) from dout (N,HO,WO,F) and weight (KH,KW,C,F).
template <typename T>
void conv2d_backward_data(T* dinp, const T* dout, const T* weight, const Conv2dGeometry& g);
// dweight (KH,KW,C,F) (+=) and dbias (F) (+=, may be null) from dout (N,HO,WO,F), inp (N,H,W,C).
template <typename T>
void conv2d_backward_filter(T* dweight, T* dbias, const T* dout, const T* inp, const Conv2dGeometry& g);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void conv2d_forward(float* out, const float* inp, const float* weight, const float* bias,
                    const Conv2dGeometry& g, cudaStream_t stream);
void conv2d_backward_data(float* dinp, const float* dout, const float* weight, const Conv2dGeometry& g,
                          cudaStream_t stream);
void conv2d_backward_filter(float* dweight, float* dbias, const float* dout, const float* inp,
                            const Conv2dGeometry& g, cudaStream_t stream);
// Hand-written direct convolution (no cuDNN), same contract as conv2d_forward; meant for
// layers with few input channels such as the 3 -> 16 first layer of the LRCN.
void conv2d_direct_forward(float* out, const float* inp, const float* weight, const float* bias,
                           const Conv2dGeometry& g, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
