// kernels/dropout.cpp — the rows of kernels/dropout.h on the host: Keras inverted dropout with the
// Philox mask of kernels/philox.h. Element i is kept iff philox_uniform(seed, offset, i) >= rate,
// and a kept element is scaled by 1 / (1 - rate); spatial dropout draws element n*C + c for
// every position of channel c of sample n.
#include "kernels/dropout.h"

#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/philox.h"

namespace hisvid::naive {

namespace {

// Below this many elements the loops run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

// out (n) = in (n) * mask, mask = scale where kept and 0 elsewhere; in null means ones.
// One Philox block yields the uniforms of four consecutive elements, so the loop walks
// blocks of four instead of calling philox_uniform once per element (same numbers, a
// quarter of the work); the conversion is philox_uniform's: 24 high bits times 2^-24.
template <typename T>
void apply_mask(T* out, const T* in, int64_t n, float rate, uint64_t seed, uint64_t offset) {
  const T scale = dropout_scale<T>(rate);
  const int64_t blocks = (n + 3) / 4;
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const Philox4x32 bits = philox_block(seed, offset, static_cast<uint64_t>(4 * b));
    for (int64_t i = 4 * b; i < 4 * b + 4 && i < n; ++i) {
      const float u = static_cast<float>(bits.v[i & 3] >> 8) * (1.0f / 16777216.0f);
      out[i] = dropout_element(in ? in[i] : T(1), u, rate, scale);
    }
  }
}

template <typename T>
void copy(T* out, const T* in, int64_t n) {
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = in[i];
}

}  // namespace

template <typename T>
void dropout_forward(const DropoutForward<T>& k) {
  if (k.rate == 0.0f) return copy(k.out, k.inp, k.n);
  apply_mask(k.out, k.inp, k.n, k.rate, k.seed, based_offset(k.offset, k.offset_base));
}

template <typename T>
void dropout_backward(const DropoutBackward<T>& k) {
  if (k.rate == 0.0f) return copy(k.dinp, k.dout, k.n);
  apply_mask(k.dinp, k.dout, k.n, k.rate, k.seed, based_offset(k.offset, k.offset_base));
}

template <typename T>
void dropout_mask(const DropoutMask<T>& k) {
  apply_mask<T>(k.mask, nullptr, k.n, k.rate, k.seed, based_offset(k.offset, k.offset_base));
}

// out (N,S,C) = in (N,S,C) * mask (N,C), the mask drawn once per (n, c).
template <typename T>
void apply_channel_mask(T* out, const T* in, int64_t N, int64_t S, int64_t C, float rate, uint64_t seed,
                        uint64_t offset) {
  std::vector<T> mask(static_cast<size_t>(N * C));
  apply_mask<T>(mask.data(), nullptr, N * C, rate, seed, offset);
#pragma omp parallel for if (N * S * C > kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const T* m = mask.data() + n * C;  // (C)
    for (int64_t s = 0; s < S; ++s) {
      const int64_t row = (n * S + s) * C;
      for (int64_t c = 0; c < C; ++c) out[row + c] = in[row + c] * m[c];
    }
  }
}

template <typename T>
void spatial_dropout_forward(const SpatialDropoutForward<T>& k) {
  if (k.rate == 0.0f) return copy(k.out, k.inp, k.N * k.S * k.C);
  apply_channel_mask(k.out, k.inp, k.N, k.S, k.C, k.rate, k.seed, based_offset(k.offset, k.offset_base));
}

template <typename T>
void spatial_dropout_backward(const SpatialDropoutBackward<T>& k) {
  if (k.rate == 0.0f) return copy(k.dinp, k.dout, k.N * k.S * k.C);
  apply_channel_mask(k.dinp, k.dout, k.N, k.S, k.C, k.rate, k.seed, based_offset(k.offset, k.offset_base));
}

#define HISVID_INSTANTIATE(T)                                                \
  template void dropout_forward<T>(const DropoutForward<T>&);                \
  template void dropout_backward<T>(const DropoutBackward<T>&);              \
  template void dropout_mask<T>(const DropoutMask<T>&);                      \
  template void spatial_dropout_forward<T>(const SpatialDropoutForward<T>&); \
  template void spatial_dropout_backward<T>(const SpatialDropoutBackward<T>&);
HISVID_INSTANTIATE(float)
HISVID_INSTANTIATE(double)
#undef HISVID_INSTANTIATE

}  // namespace hisvid::naive

namespace hisvid::cpu {

namespace {

constexpr int64_t kParallelMin = int64_t(1) << 15;
constexpr int kBlocks = 8;  // Philox counters per step: one per AVX2 lane

// The high 32 bits of the 8 lane products a * b (unsigned): the even lanes' products from one
// _mm256_mul_epu32, the odd lanes' from another on the operands shifted down.
__attribute__((target("avx2"))) inline __m256i mulhi(__m256i a, __m256i b) {
  const __m256i even = _mm256_srli_epi64(_mm256_mul_epu32(a, b), 32);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), _mm256_srli_epi64(b, 32));
  return _mm256_blend_epi32(even, odd, 0xAA);
}

// philox_block for blocks first .. first + 7 of draw (seed, offset), in element order: bits[q]
// holds elements 8q .. 8q + 7 of the 32 (blocks 2q and 2q + 1, words 0-3 each).
__attribute__((target("avx2"))) void philox8(uint64_t seed, uint64_t offset, uint64_t first,
                                             __m256i bits[4]) {
  alignas(32) uint32_t lo[kBlocks], hi[kBlocks];
  for (int j = 0; j < kBlocks; ++j) {
    lo[j] = static_cast<uint32_t>(first + j);
    hi[j] = static_cast<uint32_t>((first + j) >> 32);
  }
  // c_w holds word w of the 8 counters, lane j for block first + j.
  __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo));
  __m256i c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
  __m256i c2 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(offset)));
  __m256i c3 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(offset >> 32)));
  uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += 0x9E3779B9u;
      key1 += 0xBB67AE85u;
    }
    const __m256i hi0 = mulhi(m0, c0), lo0 = _mm256_mullo_epi32(m0, c0);
    const __m256i hi1 = mulhi(m1, c2), lo1 = _mm256_mullo_epi32(m1, c2);
    const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(key0)));
    const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(key1)));
    c0 = n0, c1 = lo1, c2 = n2, c3 = lo0;
  }
  // Transpose (word, block) to (block, word): blocks j and j + 4 share a 128-bit half.
  const __m256i lo01 = _mm256_unpacklo_epi32(c0, c1), hi01 = _mm256_unpackhi_epi32(c0, c1);
  const __m256i lo23 = _mm256_unpacklo_epi32(c2, c3), hi23 = _mm256_unpackhi_epi32(c2, c3);
  const __m256i b04 = _mm256_unpacklo_epi64(lo01, lo23), b15 = _mm256_unpackhi_epi64(lo01, lo23);
  const __m256i b26 = _mm256_unpacklo_epi64(hi01, hi23), b37 = _mm256_unpackhi_epi64(hi01, hi23);
  bits[0] = _mm256_permute2x128_si256(b04, b15, 0x20);
  bits[1] = _mm256_permute2x128_si256(b26, b37, 0x20);
  bits[2] = _mm256_permute2x128_si256(b04, b15, 0x31);
  bits[3] = _mm256_permute2x128_si256(b26, b37, 0x31);
}

// out (n) = in (n) * mask as the naive apply_mask: u = (bits >> 8) * 2^-24 (exact in float),
// kept when u >= rate, a kept element x * scale, a dropped one +0; in null means ones.
__attribute__((target("avx2"))) void apply_mask(float* out, const float* in, int64_t n, float rate,
                                                uint64_t seed, uint64_t offset) {
  const float scale = dropout_scale<float>(rate);
  constexpr int64_t kStep = 4 * kBlocks;
  const int64_t steps = (n + kStep - 1) / kStep;
  const __m256 vrate = _mm256_set1_ps(rate), vscale = _mm256_set1_ps(scale);
  const __m256 unit = _mm256_set1_ps(1.0f / 16777216.0f), ones = _mm256_set1_ps(1.0f);
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t s = 0; s < steps; ++s) {
    __m256i bits[4];
    philox8(seed, offset, static_cast<uint64_t>(s * kBlocks), bits);
    const int64_t base = s * kStep;
    if (base + kStep <= n) {
      for (int q = 0; q < 4; ++q) {
        const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(bits[q], 8)), unit);
        const __m256 x = in ? _mm256_loadu_ps(in + base + 8 * q) : ones;
        const __m256 kept = _mm256_cmp_ps(u, vrate, _CMP_GE_OQ);
        _mm256_storeu_ps(out + base + 8 * q, _mm256_and_ps(kept, _mm256_mul_ps(x, vscale)));
      }
      continue;
    }
    alignas(32) uint32_t words[kStep];
    for (int q = 0; q < 4; ++q) _mm256_store_si256(reinterpret_cast<__m256i*>(words + 8 * q), bits[q]);
    for (int64_t i = base; i < n; ++i) {
      const float u = static_cast<float>(words[i - base] >> 8) * (1.0f / 16777216.0f);
      const float x = in ? in[i] : 1.0f;
      out[i] = dropout_element(x, u, rate, scale);
    }
  }
}

void copy(float* out, const float* in, int64_t n) {
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = in[i];
}

}  // namespace

bool dropout_cpu_available() { return __builtin_cpu_supports("avx2"); }

void dropout_forward(const DropoutForward<float>& k) {
  if (k.rate == 0.0f) return copy(k.out, k.inp, k.n);
  apply_mask(k.out, k.inp, k.n, k.rate, k.seed, based_offset(k.offset, k.offset_base));
}

void dropout_backward(const DropoutBackward<float>& k) {
  if (k.rate == 0.0f) return copy(k.dinp, k.dout, k.n);
  apply_mask(k.dinp, k.dout, k.n, k.rate, k.seed, based_offset(k.offset, k.offset_base));
}

void dropout_mask(const DropoutMask<float>& k) {
  apply_mask(k.mask, nullptr, k.n, k.rate, k.seed, based_offset(k.offset, k.offset_base));
}

}  // namespace hisvid::cpu
