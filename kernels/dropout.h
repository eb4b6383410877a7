// kernels/dropout.h — inverted dropout (Keras): an element is kept when its Philox uniform
// u(seed, offset, i) >= rate, and kept elements are scaled by 1 / (1 - rate). The mask is a
// pure function of (seed, offset, i), so backward regenerates it instead of storing it, and
// the CPU and CUDA masks are the same bits.
#pragma once

#include <cstdint>

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid::cpu {

// out (n) = inp (n) * mask
template <typename T>
void dropout_forward(T* out, const T* inp, int64_t n, float rate, uint64_t seed, uint64_t offset);
// dinp (n) (=) dout (n) * mask
template <typename T>
void dropout_backward(T* dinp, const T* dout, int64_t n, float rate, uint64_t seed, uint64_t offset);
// mask (n) = 1 / (1 - rate) where kept, 0 elsewhere (for masks broadcast over time, such as
// recurrent_dropout's one mask per gate per sequence).
template <typename T>
void dropout_mask(T* mask, int64_t n, float rate, uint64_t seed, uint64_t offset);

// Spatial dropout (SpatialDropout1D/2D/3D): whole feature maps dropped. out (N,S,C) =
// inp (N,S,C) * mask (N,C) broadcast over S, where mask(n, c) is dropout_mask's element n*C + c.
template <typename T>
void spatial_dropout_forward(T* out, const T* inp, int64_t N, int64_t S, int64_t C, float rate, uint64_t seed,
                             uint64_t offset);
// dinp (N,S,C) (=) dout (N,S,C) * mask (N,C) broadcast over S.
template <typename T>
void spatial_dropout_backward(T* dinp, const T* dout, int64_t N, int64_t S, int64_t C, float rate,
                              uint64_t seed, uint64_t offset);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void dropout_forward(float* out, const float* inp, int64_t n, float rate, uint64_t seed, uint64_t offset,
                     cudaStream_t stream);
void dropout_backward(float* dinp, const float* dout, int64_t n, float rate, uint64_t seed,
                      uint64_t offset, cudaStream_t stream);
void dropout_mask(float* mask, int64_t n, float rate, uint64_t seed, uint64_t offset, cudaStream_t stream);
void spatial_dropout_forward(float* out, const float* inp, int64_t N, int64_t S, int64_t C, float rate,
                             uint64_t seed, uint64_t offset, cudaStream_t stream);
void spatial_dropout_backward(float* dinp, const float* dout, int64_t N, int64_t S, int64_t C, float rate,
                              uint64_t seed, uint64_t offset, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
