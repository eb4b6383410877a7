// kernels/matmul.cpp — kernels/matmul.h on the host: the naive loop nest and OpenBLAS (cblas,
// row-major). Dimension letters as in kernels/common.h.
#include "kernels/matmul.h"

#include <cblas.h>

#include <climits>
#include <stdexcept>
#include <string>

namespace hisvid::naive {

template <typename T>
void matmul(const Matmul<T>& k) {
  const int64_t M = k.M, P = k.P, K = k.K;
#pragma omp parallel for if (M * P * K > (int64_t(1) << 15))
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t p = 0; p < P; ++p) {
      T sum = T(0);
      for (int64_t i = 0; i < K; ++i) {
        const T a = k.trans_a ? k.a[i * M + m] : k.a[m * K + i];  // op(a) (M,K)
        const T b = k.trans_b ? k.b[p * K + i] : k.b[i * P + p];  // op(b) (K,P)
        sum += a * b;
      }
      T& out = k.out[m * P + p];  // (M,P)
      out = k.accumulate ? out + sum : sum;
    }
  }
}

template void matmul<float>(const Matmul<float>&);
template void matmul<double>(const Matmul<double>&);

}  // namespace hisvid::naive

namespace hisvid::cpu {

void matmul(const Matmul<float>& k) {
  const int64_t M = k.M, P = k.P, K = k.K;
  if (M == 0 || P == 0) return;
  if (K == 0) {  // an empty sum: out = 0, or out unchanged when accumulating
    if (!k.accumulate) {
      for (int64_t i = 0; i < M * P; ++i) k.out[i] = 0.0f;
    }
    return;
  }
  if (M > INT_MAX || P > INT_MAX || K > INT_MAX) {
    throw std::invalid_argument("matmul: dimensions M=" + std::to_string(M) + " P=" + std::to_string(P) +
                                " K=" + std::to_string(K) + " exceed the BLAS integer range");
  }
  const int lda = static_cast<int>(k.trans_a ? M : K);
  const int ldb = static_cast<int>(k.trans_b ? K : P);
  cblas_sgemm(CblasRowMajor, k.trans_a ? CblasTrans : CblasNoTrans, k.trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(M), static_cast<int>(P), static_cast<int>(K), 1.0f, k.a, lda, k.b, ldb,
              k.accumulate ? 1.0f : 0.0f, k.out, static_cast<int>(P));
}

}  // namespace hisvid::cpu
