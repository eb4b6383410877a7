// kernels/conv2d_avx512.h — the direct convolution of kernels/conv2d.cpp, float32, in AVX-512F
// (kernels/conv2d_avx512.cpp), chosen at run time on processors that have it: the AVX2 kernels'
// arguments and loops (kernels/conv2d_vector.inc) over vectors of 16 filters, with the same bits.
#pragma once

#include "kernels/conv2d.h"

namespace hisvid::cpu::avx512 {

// True when the processor (and the operating system) executes AVX-512F, AVX2 and FMA.
bool available();

// As avx2::forward, backward_data and backward_filter (kernels/conv2d_avx2.h).
void forward(float* out, const float* inp, const float* weight, const float* bias, const Conv2dGeometry& g);
void backward_data(float* dinp, const float* dout, const float* weight, const Conv2dGeometry& g);
void backward_filter(float* dweight, float* dbias, const float* dout, const float* inp,
                     const Conv2dGeometry& g);

}  // namespace hisvid::cpu::avx512
