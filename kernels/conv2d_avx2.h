// kernels/conv2d_avx2.h — the direct convolution of kernels/conv2d.cpp, float32, written with
// AVX2 + FMA intrinsics (kernels/conv2d_vector.inc over 8-lane vectors, kernels/conv2d_avx2.cpp)
// and chosen at run time on processors that have them. Same arguments and results as the
// portable direct loops (to float rounding); used by conv2d.cpp, the fused Conv2D + MaxPool
// backward (kernels/conv2d_pool.cpp, which shares lane_mask), the ConvLSTM step's gate rows and
// the kernel lab.
#pragma once

#include <immintrin.h>

#include "kernels/conv2d.h"

namespace hisvid::cpu::avx2 {

constexpr int kLanes = 8;  // floats per ymm register

// Lanes [0, count) of a ymm register enabled.
__attribute__((target("avx2"))) inline __m256i lane_mask(int count) {
  alignas(32) int m[kLanes];
  for (int i = 0; i < kLanes; ++i) m[i] = i < count ? -1 : 0;
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
}

// True when the processor executes AVX2 and FMA.
bool available();

// out (N,HO,WO,F) = conv(inp (N,H,W,C), weight (KH,KW,C/G,F)) + bias (F) (bias may be null);
// grouped convolutions too, each group's filters reading its channels of one padded copy.
void forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dGeometry& g);
// dinp (N,H,W,C) (=); stride 1 only (the flipped-kernel forward on dout); grouped too.
void backward_data(float* dinp, const float* dout, const float* weight, const Conv2dGeometry& g);
// dweight (KH,KW,C/G,F) (+=), dbias (F) (+=, may be null); grouped convolutions too.
void backward_filter(float* dweight, float* dbias, const float* dout, const float* inp,
                     const Conv2dGeometry& g);

}  // namespace hisvid::cpu::avx2
