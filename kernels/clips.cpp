// kernels/clips.cpp — clips_to_batch on the host: the naive row (the definition, value by
// value) and the CPU row (a table of the 256 scaled values, the noise's Philox blocks shared
// by pairs of values). See kernels/clips.h.
#include "kernels/clips.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels/philox.h"

namespace hisvid {

namespace {

// Clip b's brightness shift and contrast stretch, in place on its E scaled values.
template <typename T>
void brighten_and_stretch(T* dst, const ClipsToBatch<T>& k, uint64_t slot) {
  if (k.brightness > 0) {
    const double u = philox_uniform(k.choice_seed, k.choice_offset, slot + 1);
    const T delta = static_cast<T>(k.brightness * (2.0 * u - 1.0));
    for (int64_t e = 0; e < k.E; ++e) dst[e] += delta;
  }
  if (k.contrast > 0) {
    const double u = philox_uniform(k.choice_seed, k.choice_offset, slot + 2);
    const T factor = static_cast<T>(1.0 + k.contrast * (2.0 * u - 1.0));
    double sum = 0;
    for (int64_t e = 0; e < k.E; ++e) sum += dst[e];
    const T mean = static_cast<T>(sum / static_cast<double>(k.E));
    for (int64_t e = 0; e < k.E; ++e) dst[e] = (dst[e] - mean) * factor + mean;
  }
}

// Every value of the clip into [0, 1], when any augmentation is on.
template <typename T>
void clip_to_unit(T* dst, const ClipsToBatch<T>& k) {
  if (!k.any()) return;
  for (int64_t e = 0; e < k.E; ++e) dst[e] = std::min(std::max(dst[e], T(0)), T(1));
}

}  // namespace

namespace naive {

template <typename T>
void clips_to_batch(const ClipsToBatch<T>& args) {
  const ClipsToBatch<T> k = args.with_base();
  const int64_t row = k.W * k.C;  // values per row of pixels
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < k.B; ++b) {
    const uint8_t* src = k.inp + b * k.E;
    T* dst = k.out + b * k.E;
    const uint64_t slot = 4 * static_cast<uint64_t>(b);
    const bool flip = k.flip && philox_uniform(k.choice_seed, k.choice_offset, slot) < 0.5f;
    for (int64_t e = 0; e < k.E; ++e) {
      const int64_t r = e / row, w = (e % row) / k.C, c = e % k.C;
      const int64_t from = r * row + (flip ? k.W - 1 - w : w) * k.C + c;
      dst[e] = static_cast<T>(src[from]) / static_cast<T>(255);
    }
    brighten_and_stretch(dst, k, slot);
    if (k.noise > 0) {
      const T sigma = static_cast<T>(k.noise);
      for (int64_t e = 0; e < k.E; ++e) {
        dst[e] += sigma * static_cast<T>(philox_normal(k.noise_seed, k.noise_offset, uint64_t(b * k.E + e)));
      }
    }
    clip_to_unit(dst, k);
  }
}

template void clips_to_batch(const ClipsToBatch<float>&);
template void clips_to_batch(const ClipsToBatch<double>&);

}  // namespace naive

namespace cpu {

namespace {

// philox_normal(seed, offset, 2k) and (2k + 1) from the one Philox block they share: the same
// expressions as kernels/philox.h, half the Philox rounds.
void philox_normal_pair(uint64_t seed, uint64_t offset, uint64_t k, float& z0, float& z1) {
  const float kTwoPi = 6.28318530717958647692f;
  const float kScale = 1.0f / 16777216.0f;
  const Philox4x32 r = philox_block(seed, offset, 4 * k);
  const float u1a = 1.0f - static_cast<float>(r.v[0] >> 8) * kScale;
  const float u2a = static_cast<float>(r.v[1] >> 8) * kScale;
  const float u1b = 1.0f - static_cast<float>(r.v[2] >> 8) * kScale;
  const float u2b = static_cast<float>(r.v[3] >> 8) * kScale;
  z0 = sqrtf(-2.0f * logf(u1a)) * cosf(kTwoPi * u2a);
  z1 = sqrtf(-2.0f * logf(u1b)) * cosf(kTwoPi * u2b);
}

// x (n) += sigma * N(0,1) for values [first, first + n) of the noise draw.
void add_noise(float* x, int64_t n, uint64_t first, float sigma, uint64_t seed, uint64_t offset) {
  int64_t e = 0;
  if (first % 2 == 1 && n > 0) x[e++] += sigma * philox_normal(seed, offset, first);
  for (; e + 1 < n; e += 2) {
    float z0, z1;
    philox_normal_pair(seed, offset, (first + uint64_t(e)) / 2, z0, z1);
    x[e] += sigma * z0;
    x[e + 1] += sigma * z1;
  }
  if (e < n) x[e] += sigma * philox_normal(seed, offset, first + uint64_t(e));
}

}  // namespace

void clips_to_batch(const ClipsToBatch<float>& args) {
  const ClipsToBatch<float> k = args.with_base();
  float scale[256];
  for (int p = 0; p < 256; ++p) scale[p] = static_cast<float>(p) / 255.0f;
  const int64_t rows = k.E / (k.W * k.C);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < k.B; ++b) {
    const uint8_t* src = k.inp + b * k.E;  // (rows, W, C)
    float* dst = k.out + b * k.E;
    const uint64_t slot = 4 * static_cast<uint64_t>(b);
    const bool flip = k.flip && philox_uniform(k.choice_seed, k.choice_offset, slot) < 0.5f;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t w = 0; w < k.W; ++w) {
        const uint8_t* pixel = src + (r * k.W + (flip ? k.W - 1 - w : w)) * k.C;
        float* out = dst + (r * k.W + w) * k.C;
        for (int64_t c = 0; c < k.C; ++c) out[c] = scale[pixel[c]];
      }
    }
    brighten_and_stretch(dst, k, slot);
    if (k.noise > 0) {
      add_noise(dst, k.E, static_cast<uint64_t>(b) * uint64_t(k.E), static_cast<float>(k.noise), k.noise_seed,
                k.noise_offset);
    }
    clip_to_unit(dst, k);
  }
}

}  // namespace cpu

}  // namespace hisvid
