// kernels/conv2d_avx512.cpp — the direct convolution of kernels/conv2d_vector.inc in AVX-512F:
// vectors of 16 filters in the 32 zmm registers. Every element is the same sum in the same
// order as kernels/conv2d_avx2.cpp's, so the two give the same bits.
#include "kernels/conv2d_avx512.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/conv2d_avx2.h"

namespace hisvid::cpu::avx512 {

namespace {

#define HISVID_VECTOR_TARGET __attribute__((target("avx2,fma,avx512f")))
#define HISVID_VECTOR_LANE_OP __attribute__((target("avx2,fma,avx512f"), always_inline)) static inline

// 16 filters a register; a masked load reads, and a masked store writes, only the lanes enabled.
struct Vec {
  using Reg = __m512;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  // Forward tiles: 12 pixels x 1 vector, 8 x 2, 6 x 4 (12, 16 and 24 accumulators; 16 x 1, 8 x 1,
  // 12 x 2, 6 x 2 and 4 x 4 measured no faster on the seeds' layers, kernel lab, 2-core Xeon with
  // AVX-512, 2026-11-28).
  static constexpr int kNarrowPixels = 12, kMiddlePixels = 8, kWidePixels = 6, kWideVectors = 4;
  HISVID_VECTOR_LANE_OP Mask first(int count) { return static_cast<Mask>((1u << count) - 1); }
  HISVID_VECTOR_LANE_OP Reg zero() { return _mm512_setzero_ps(); }
  HISVID_VECTOR_LANE_OP Reg load(const float* p) { return _mm512_loadu_ps(p); }
  HISVID_VECTOR_LANE_OP Reg load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  HISVID_VECTOR_LANE_OP void store(float* p, Reg x) { _mm512_storeu_ps(p, x); }
  HISVID_VECTOR_LANE_OP void store(float* p, Mask m, Reg x) { _mm512_mask_storeu_ps(p, m, x); }
  HISVID_VECTOR_LANE_OP Reg broadcast(const float* p) { return _mm512_set1_ps(*p); }
  HISVID_VECTOR_LANE_OP Reg fmadd(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  HISVID_VECTOR_LANE_OP Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
};

}  // namespace

#include "kernels/conv2d_vector.inc"

#undef HISVID_VECTOR_LANE_OP
#undef HISVID_VECTOR_TARGET

// AVX2 and FMA too: this file is compiled for them, and hands narrow passes to the AVX2 kernels.
bool available() { return avx2::available() && __builtin_cpu_supports("avx512f"); }

}  // namespace hisvid::cpu::avx512
