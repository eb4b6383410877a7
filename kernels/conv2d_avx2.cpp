// kernels/conv2d_avx2.cpp — the direct convolution of kernels/conv2d_vector.inc in AVX2 + FMA:
// vectors of 8 filters in the 16 ymm registers.
#include "kernels/conv2d_avx2.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <vector>

namespace hisvid::cpu::avx2 {

namespace {

#define HISVID_VECTOR_TARGET __attribute__((target("avx2,fma")))
#define HISVID_VECTOR_LANE_OP __attribute__((target("avx2,fma"), always_inline)) static inline

// 8 filters a register.
struct Vec {
  using Reg = __m256;
  using Mask = __m256i;
  static constexpr int kLanes = avx2::kLanes;
  // Forward tiles: 8 pixels with one vector of filters (8 accumulators); 6 with two (12
  // accumulators, 2 weight vectors and 1 broadcast input of the 16 registers: on the LRCN's first
  // layer, 64x64, 3 -> 16 filters, 2.6-2.9 ms against 3.0-4.4 for 4 pixels, kernel lab, 2-core AMD
  // EPYC, 2026-11-28); 4 with two for more than 16 filters, 16 at a time (6 measured no faster).
  static constexpr int kNarrowPixels = 8, kMiddlePixels = 6, kWidePixels = 4, kWideVectors = 2;
  HISVID_VECTOR_LANE_OP Mask first(int count) { return lane_mask(count); }
  HISVID_VECTOR_LANE_OP Reg zero() { return _mm256_setzero_ps(); }
  HISVID_VECTOR_LANE_OP Reg load(const float* p) { return _mm256_loadu_ps(p); }
  HISVID_VECTOR_LANE_OP Reg load(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
  HISVID_VECTOR_LANE_OP void store(float* p, Reg x) { _mm256_storeu_ps(p, x); }
  HISVID_VECTOR_LANE_OP void store(float* p, Mask m, Reg x) { _mm256_maskstore_ps(p, m, x); }
  HISVID_VECTOR_LANE_OP Reg broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  HISVID_VECTOR_LANE_OP Reg fmadd(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  HISVID_VECTOR_LANE_OP Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
};

}  // namespace

#include "kernels/conv2d_vector.inc"

#undef HISVID_VECTOR_LANE_OP
#undef HISVID_VECTOR_TARGET

bool available() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

}  // namespace hisvid::cpu::avx2
