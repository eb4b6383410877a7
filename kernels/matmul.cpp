// kernels/matmul.cpp — CPU GEMM of kernels/matmul.h through OpenBLAS (cblas, row-major).
// Dimension letters as in kernels/common.h.
#include "kernels/matmul.h"

#include <cblas.h>

#include <climits>
#include <stdexcept>
#include <string>

namespace hisvid::cpu {

namespace {

void check_blas_dims(int64_t M, int64_t P, int64_t K) {
  if (M > INT_MAX || P > INT_MAX || K > INT_MAX) {
    throw std::invalid_argument("matmul: dimensions M=" + std::to_string(M) + " P=" + std::to_string(P) +
                                " K=" + std::to_string(K) + " exceed the BLAS integer range");
  }
}

void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int P, int K, float beta, float* out, const float* a,
          int lda, const float* b, int ldb) {
  cblas_sgemm(CblasRowMajor, ta, tb, M, P, K, 1.0f, a, lda, b, ldb, beta, out, P);
}

void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int P, int K, double beta, double* out,
          const double* a, int lda, const double* b, int ldb) {
  cblas_dgemm(CblasRowMajor, ta, tb, M, P, K, 1.0, a, lda, b, ldb, beta, out, P);
}

}  // namespace

template <typename T>
void matmul(T* out,      // (M,P)
            const T* a,  // (M,K), or (K,M) when trans_a
            const T* b,  // (K,P), or (P,K) when trans_b
            int64_t M, int64_t P, int64_t K, bool trans_a, bool trans_b, bool accumulate) {
  if (M == 0 || P == 0) return;
  if (K == 0) {  // an empty sum: out = 0, or out unchanged when accumulating
    if (!accumulate) {
      for (int64_t i = 0; i < M * P; ++i) out[i] = T(0);
    }
    return;
  }
  check_blas_dims(M, P, K);
  const int lda = static_cast<int>(trans_a ? M : K);
  const int ldb = static_cast<int>(trans_b ? K : P);
  gemm(trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(M),
       static_cast<int>(P), static_cast<int>(K), accumulate ? T(1) : T(0), out, a, lda, b, ldb);
}

template void matmul<float>(float*, const float*, const float*, int64_t, int64_t, int64_t, bool, bool, bool);
template void matmul<double>(double*, const double*, const double*, int64_t, int64_t, int64_t, bool, bool,
                             bool);

}  // namespace hisvid::cpu
