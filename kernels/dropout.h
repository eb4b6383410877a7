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

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void dropout_forward(float* out, const float* inp, int64_t n, float rate, uint64_t seed, uint64_t offset,
                     cudaStream_t stream);
void dropout_backward(float* dinp, const float* dout, int64_t n, float rate, uint64_t seed,
                      uint64_t offset, cudaStream_t stream);
void dropout_mask(float* mask, int64_t n, float rate, uint64_t seed, uint64_t offset, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
