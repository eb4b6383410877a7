// kernels/reduce.h — reductions and the strided block copy behind slice / concat.
#pragma once

#include <cstdint>

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid {

// out (1) = sum of inp (n), accumulated in double.
template <typename T>
struct SumAll {
  static constexpr const char* kName = "sum_all";
  T* out = nullptr;
  const T* inp = nullptr;
  int64_t n = 0;
  template <typename V>
  void buffers(V& v) {
    v.out("out", out, 1);
    v.in("inp", inp, n);
  }
};

// Views src as (outer, src_dim, inner) and dst as (outer, dst_dim, inner) and copies the
// block src[:, src_start : src_start + len, :] to dst[:, dst_start : dst_start + len, :];
// adds instead of copying when accumulate. With repeat, the single slice src[:, src_start, :]
// goes to each of the len slices of the dst block. Slice, concat, their gradients and
// repeat_steps are all this.
template <typename T>
struct CopyBlock {
  static constexpr const char* kName = "copy_block";
  T* dst = nullptr;
  const T* src = nullptr;
  int64_t outer = 0, len = 0, inner = 0;
  int64_t dst_dim = 0, dst_start = 0;
  int64_t src_dim = 0, src_start = 0;
  bool accumulate = false;
  bool repeat = false;
  template <typename V>
  void buffers(V& v) {
    v.inout("dst", dst, outer * dst_dim * inner);  // outside the block: untouched
    v.in("src", src, outer * src_dim * inner);
  }
};

}  // namespace hisvid

namespace hisvid::naive {

template <typename T>
void sum_all(const SumAll<T>& k);
template <typename T>
void copy_block(const CopyBlock<T>& k);

}  // namespace hisvid::naive

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void sum_all(const SumAll<float>& k, cudaStream_t stream);
void copy_block(const CopyBlock<float>& k, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
