// kernels/dropout.cpp — the naive rows of kernels/dropout.h: Keras inverted dropout with the
// Philox mask of kernels/philox.h. Element i is kept iff philox_uniform(seed, offset, i) >= rate,
// and a kept element is scaled by 1 / (1 - rate); spatial dropout draws element n*C + c for
// every position of channel c of sample n.
#include "kernels/dropout.h"

#include <vector>

#include "kernels/philox.h"

namespace hisvid::naive {

namespace {

// Below this many elements the loops run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

template <typename T>
T keep_scale(float rate) {
  return T(1) / (T(1) - T(rate));
}

// out (n) = in (n) * mask, mask = scale where kept and 0 elsewhere; in null means ones.
// One Philox block yields the uniforms of four consecutive elements, so the loop walks
// blocks of four instead of calling philox_uniform once per element (same numbers, a
// quarter of the work); the conversion is philox_uniform's: 24 high bits times 2^-24.
template <typename T>
void apply_mask(T* out, const T* in, int64_t n, float rate, uint64_t seed, uint64_t offset) {
  const T scale = keep_scale<T>(rate);
  const int64_t blocks = (n + 3) / 4;
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const Philox4x32 bits = philox_block(seed, offset, static_cast<uint64_t>(4 * b));
    for (int64_t i = 4 * b; i < 4 * b + 4 && i < n; ++i) {
      const float u = static_cast<float>(bits.v[i & 3] >> 8) * (1.0f / 16777216.0f);
      const T x = in ? in[i] : T(1);
      out[i] = u >= rate ? x * scale : T(0);
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
  apply_mask(k.out, k.inp, k.n, k.rate, k.seed, k.offset);
}

template <typename T>
void dropout_backward(const DropoutBackward<T>& k) {
  if (k.rate == 0.0f) return copy(k.dinp, k.dout, k.n);
  apply_mask(k.dinp, k.dout, k.n, k.rate, k.seed, k.offset);
}

template <typename T>
void dropout_mask(const DropoutMask<T>& k) {
  apply_mask<T>(k.mask, nullptr, k.n, k.rate, k.seed, k.offset);
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
  apply_channel_mask(k.out, k.inp, k.N, k.S, k.C, k.rate, k.seed, k.offset);
}

template <typename T>
void spatial_dropout_backward(const SpatialDropoutBackward<T>& k) {
  if (k.rate == 0.0f) return copy(k.dinp, k.dout, k.N * k.S * k.C);
  apply_channel_mask(k.dinp, k.dout, k.N, k.S, k.C, k.rate, k.seed, k.offset);
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
