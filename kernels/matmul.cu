// CUDA version of kernels/matmul.h: cuBLAS SGEMM in the math mode of the context (full FP32
// unless TF32 was allowed).
//
// cuBLAS is column-major. A row-major (R,S) matrix is the same memory as a column-major
// (S,R) matrix, its transpose. So the row-major product out (M,P) = op(a) (M,K) op(b) (K,P)
// is computed as the column-major product out^T (P,M) = op(b)^T (P,K) op(a)^T (K,M):
//   b not transposed: row-major (K,P) = column-major (P,K) = op(b)^T, ld P  -> CUBLAS_OP_N
//   b transposed:     row-major (P,K) = column-major (K,P) = op(b),   ld K  -> CUBLAS_OP_T
// and the same for a with (M,K): ld K not transposed, ld M transposed.
#include <climits>
#include <stdexcept>
#include <string>

#include "kernels/cuda_context.h"
#include "kernels/matmul.h"

namespace hisvid::cuda {

namespace {

int checked_int(int64_t value, const char* name) {
  if (value < 0 || value > INT_MAX) {
    throw std::runtime_error(std::string("hisvid::cuda::matmul: ") + name + " = " + std::to_string(value) +
                             " does not fit cuBLAS's int dimensions");
  }
  return static_cast<int>(value);
}

}  // namespace

// out (M,P) (= or += when accumulate) op(a) (M,K) op(b) (K,P); a is (K,M) when trans_a, b is
// (P,K) when trans_b.
void matmul(const Matmul<float>& args, cudaStream_t stream) {
  float* out = args.out;
  const float *a = args.a, *b = args.b;
  const int64_t M = args.M, P = args.P, K = args.K;
  const bool trans_a = args.trans_a, trans_b = args.trans_b, accumulate = args.accumulate;
  if (M <= 0 || P <= 0) return;
  Context& ctx = context_for_stream(stream, "matmul");
  const int m = checked_int(P, "P"), n = checked_int(M, "M"), k = checked_int(K, "K");
  const int ldb = checked_int(trans_b ? K : P, "ldb");
  const int lda = checked_int(trans_a ? M : K, "lda");
  if (K == 0) {  // an empty sum: out = 0, or out unchanged when accumulating
    if (!accumulate) CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float) * size_t(M) * size_t(P), stream));
    return;
  }
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  CUBLAS_CHECK(cublasSetWorkspace(ctx.cublas(), ctx.workspace(kCublasWorkspaceBytes), kCublasWorkspaceBytes));
  CUBLAS_CHECK(cublasSgemm(ctx.cublas(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                           trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, b, ldb, a, lda, &beta, out,
                           m));
}

}  // namespace hisvid::cuda
