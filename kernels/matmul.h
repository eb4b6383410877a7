// kernels/matmul.h — GEMM, row-major throughout: a naive loop nest (the definition), OpenBLAS
// on the CPU, cuBLAS on CUDA (full FP32, no TF32 unless the engine enables it).
#pragma once

#include <cstdint>

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid {

// out (M,P) = op(a) op(b), or out += op(a) op(b) when accumulate.
// op(a) is (M,K): a is (M,K), or (K,M) when trans_a. op(b) is (K,P): b is (K,P), or (P,K)
// when trans_b. K = 0 is an empty sum: out = 0, or unchanged when accumulating.
template <typename T>
struct Matmul {
  static constexpr const char* kName = "matmul";
  T* out = nullptr;
  const T* a = nullptr;
  const T* b = nullptr;
  int64_t M = 0, P = 0, K = 0;
  bool trans_a = false, trans_b = false, accumulate = false;
  template <typename V>
  void buffers(V& v) {
    accumulate ? v.inout("out", out, M * P) : v.out("out", out, M * P);
    v.in("a", a, M * K);
    v.in("b", b, K * P);
  }
};

}  // namespace hisvid

namespace hisvid::naive {
template <typename T>
void matmul(const Matmul<T>& k);
}  // namespace hisvid::naive

namespace hisvid::cpu {
// OpenBLAS sgemm.
void matmul(const Matmul<float>& k);
}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {
// cuBLAS sgemm.
void matmul(const Matmul<float>& k, cudaStream_t stream);
}  // namespace hisvid::cuda
#endif
