// kernels/reduce.cpp — CPU reference of kernels/reduce.h: the full sum and the strided block
// copy behind slice, concat and their gradients.
#include "kernels/reduce.h"

namespace hisvid::cpu {

namespace {

// Below this many elements the loops run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

}  // namespace

template <typename T>
void sum_all(T* out,        // (1)
             const T* inp,  // (n)
             int64_t n) {
  double sum = 0.0;
#pragma omp parallel for reduction(+ : sum) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) sum += inp[i];
  *out = static_cast<T>(sum);
}

template <typename T>
void copy_block(T* dst,  // (outer, dst_dim, inner)
                int64_t dst_dim, int64_t dst_start,
                const T* src,  // (outer, src_dim, inner)
                int64_t src_dim, int64_t src_start, int64_t outer, int64_t len, int64_t inner,
                bool accumulate) {
  const int64_t run = len * inner;  // contiguous elements per outer index
#pragma omp parallel for if (outer * run > kParallelMin)
  for (int64_t o = 0; o < outer; ++o) {
    const T* s = src + (o * src_dim + src_start) * inner;  // (len, inner)
    T* d = dst + (o * dst_dim + dst_start) * inner;        // (len, inner)
    if (accumulate) {
      for (int64_t i = 0; i < run; ++i) d[i] += s[i];
    } else {
      for (int64_t i = 0; i < run; ++i) d[i] = s[i];
    }
  }
}

template void sum_all<float>(float*, const float*, int64_t);
template void copy_block<float>(float*, int64_t, int64_t, const float*, int64_t, int64_t, int64_t, int64_t,
                                int64_t, bool);

template void sum_all<double>(double*, const double*, int64_t);
template void copy_block<double>(double*, int64_t, int64_t, const double*, int64_t, int64_t, int64_t, int64_t,
                                 int64_t, bool);

}  // namespace hisvid::cpu
