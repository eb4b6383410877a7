// kernels/conv2d_avx2.h — the direct convolution of kernels/conv2d.cpp, float32, written with
// AVX2 + FMA intrinsics and chosen at run time on processors that have them. Same arguments
// and results as the portable direct loops (to float rounding); used by conv2d.cpp and the
// kernel lab only.
#pragma once

#include "kernels/conv2d.h"

namespace hisvid::cpu::avx2 {

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
