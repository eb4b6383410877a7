// kernels/matmul.h — GEMM: OpenBLAS on the CPU, cuBLAS on CUDA (full FP32, no TF32 unless
// the engine enables it). Row-major throughout.
#pragma once

#include <cstdint>

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid::cpu {

// out (M,P) = op(a) op(b), or out += op(a) op(b) when accumulate.
// op(a) is (M,K): a is (M,K), or (K,M) when trans_a. op(b) is (K,P): b is (K,P), or (P,K)
// when trans_b.
template <typename T>
void matmul(T* out, const T* a, const T* b, int64_t M, int64_t P, int64_t K, bool trans_a,
            bool trans_b, bool accumulate);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void matmul(float* out, const float* a, const float* b, int64_t M, int64_t P, int64_t K, bool trans_a,
            bool trans_b, bool accumulate, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
