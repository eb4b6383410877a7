// kernels/reduce.cpp — the naive rows of kernels/reduce.h: the full sum and the strided block
// copy behind slice, concat and their gradients.
#include "kernels/reduce.h"

namespace hisvid::naive {

namespace {

// Below this many elements the loops run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

}  // namespace

template <typename T>
void sum_all(const SumAll<T>& k) {
  const T* inp = k.inp;  // (n)
  const int64_t n = k.n;
  double sum = 0.0;
#pragma omp parallel for reduction(+ : sum) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) sum += inp[i];
  *k.out = static_cast<T>(sum);  // (1)
}

template <typename T>
void copy_block(const CopyBlock<T>& k) {
  T* dst = k.dst;        // (outer, dst_dim, inner)
  const T* src = k.src;  // (outer, src_dim, inner)
  const int64_t outer = k.outer, len = k.len, inner = k.inner;
  const int64_t dst_dim = k.dst_dim, dst_start = k.dst_start, src_dim = k.src_dim, src_start = k.src_start;
  const bool accumulate = k.accumulate;
  const int64_t run = len * inner;  // contiguous elements per outer index
#pragma omp parallel for if (outer * run > kParallelMin)
  for (int64_t o = 0; o < outer; ++o) {
    const T* s = src + (o * src_dim + src_start) * inner;  // (len, inner), or (1, inner) repeated
    T* d = dst + (o * dst_dim + dst_start) * inner;        // (len, inner)
    for (int64_t i = 0; i < run; ++i) {
      const T v = s[k.repeat ? i % inner : i];
      d[i] = accumulate ? d[i] + v : v;
    }
  }
}

template void sum_all<float>(const SumAll<float>&);
template void sum_all<double>(const SumAll<double>&);
template void copy_block<float>(const CopyBlock<float>&);
template void copy_block<double>(const CopyBlock<double>&);

}  // namespace hisvid::naive
