// kernels/elementwise.h — fills, arithmetic, bias-add and the elementwise activations.
// n is the number of elements; every pointer is a contiguous array of n unless noted.
#pragma once

#include <cstdint>

#include "kernels/common.h"

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid::cpu {

template <typename T> void fill(T* out, T value, int64_t n);
// out = a + b, a - b, a * b (all (n)); out may alias a or b.
template <typename T> void add(T* out, const T* a, const T* b, int64_t n);
template <typename T> void sub(T* out, const T* a, const T* b, int64_t n);
template <typename T> void mul(T* out, const T* a, const T* b, int64_t n);
// out = alpha * a
template <typename T> void scale(T* out, const T* a, T alpha, int64_t n);
// y += alpha * x   (gradient accumulation)
template <typename T> void axpy(T* y, T alpha, const T* x, int64_t n);

// out (M,C) = inp (M,C) + bias (C)
template <typename T> void bias_add_forward(T* out, const T* inp, const T* bias, int64_t M, int64_t C);
// dbias (C) += sum over rows of dout (M,C). (dinp is dout itself.)
template <typename T> void bias_add_backward(T* dbias, const T* dout, int64_t M, int64_t C);

// out = act(inp)
template <typename T> void activation_forward(T* out, const T* inp, int64_t n, Activation act);
// dinp = dout * act'(x), with act' taken from the forward output out: dinp (=)
template <typename T>
void activation_backward(T* dinp, const T* dout, const T* out, int64_t n, Activation act);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void fill(float* out, float value, int64_t n, cudaStream_t stream);
void add(float* out, const float* a, const float* b, int64_t n, cudaStream_t stream);
void sub(float* out, const float* a, const float* b, int64_t n, cudaStream_t stream);
void mul(float* out, const float* a, const float* b, int64_t n, cudaStream_t stream);
void scale(float* out, const float* a, float alpha, int64_t n, cudaStream_t stream);
void axpy(float* y, float alpha, const float* x, int64_t n, cudaStream_t stream);
void bias_add_forward(float* out, const float* inp, const float* bias, int64_t M, int64_t C,
                      cudaStream_t stream);
void bias_add_backward(float* dbias, const float* dout, int64_t M, int64_t C, cudaStream_t stream);
void activation_forward(float* out, const float* inp, int64_t n, Activation act, cudaStream_t stream);
void activation_backward(float* dinp, const float* dout, const float* out, int64_t n, Activation act,
                         cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
