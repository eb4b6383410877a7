// kernels/reduce.h — reductions and the strided block copy behind slice / concat.
#pragma once

#include <cstdint>

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid::cpu {

// out (1) = sum of inp (n), accumulated in double on the CPU.
template <typename T> void sum_all(T* out, const T* inp, int64_t n);

// Views src as (outer, src_dim, inner) and dst as (outer, dst_dim, inner) and copies the
// block src[:, src_start : src_start + len, :] to dst[:, dst_start : dst_start + len, :];
// adds instead of copying when accumulate. Slice, concat and their gradients are all this.
template <typename T>
void copy_block(T* dst, int64_t dst_dim, int64_t dst_start, const T* src, int64_t src_dim,
                int64_t src_start, int64_t outer, int64_t len, int64_t inner, bool accumulate);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void sum_all(float* out, const float* inp, int64_t n, cudaStream_t stream);
void copy_block(float* dst, int64_t dst_dim, int64_t dst_start, const float* src, int64_t src_dim,
                int64_t src_start, int64_t outer, int64_t len, int64_t inner, bool accumulate,
                cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
