// kernels/philox.h — Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC'11), the counter-based generator behind every random bit in hisvid.
//
// A draw is a pure function of (seed, offset, index): the same call on the CPU and in a
// CUDA kernel gives the same bits, so a dropout mask is identical on both backends and a run
// is reproducible from its seed. hisvid's mapping:
//   key     = (seed low 32 bits, seed high 32 bits)
//   counter = (block low, block high, offset low, offset high), block = index / 4
//   word    = output word index % 4 of that counter
// "offset" is the per-draw number handed out by the engine's Generator (one per random op
// call), "index" the element index inside that draw.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace hisvid {

struct Philox4x32 {
  uint32_t v[4];
};

HISVID_HD uint32_t philox_mulhi(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

// The raw Philox4x32-10 bijection: 10 rounds over a 128-bit counter under a 64-bit key.
HISVID_HD Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t key0, uint32_t key1) {
  const uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  const uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key0 += kW0;
      key1 += kW1;
    }
    const uint32_t hi0 = philox_mulhi(kM0, ctr.v[0]), lo0 = kM0 * ctr.v[0];
    const uint32_t hi1 = philox_mulhi(kM1, ctr.v[2]), lo1 = kM1 * ctr.v[2];
    ctr = Philox4x32{{hi1 ^ ctr.v[1] ^ key0, lo1, hi0 ^ ctr.v[3] ^ key1, lo0}};
  }
  return ctr;
}

// All four 32-bit words of the block holding element `index` of draw `offset`.
HISVID_HD Philox4x32 philox_block(uint64_t seed, uint64_t offset, uint64_t index) {
  const uint64_t block = index >> 2;
  Philox4x32 ctr{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                  static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)}};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

HISVID_HD uint32_t philox_bits(uint64_t seed, uint64_t offset, uint64_t index) {
  return philox_block(seed, offset, index).v[index & 3];
}

// 24 random bits as a float in [0, 1): exact in float and in double, so the CPU float64
// path (gradient checks) and float32 paths see the very same numbers.
HISVID_HD float philox_uniform(uint64_t seed, uint64_t offset, uint64_t index) {
  return static_cast<float>(philox_bits(seed, offset, index) >> 8) * (1.0f / 16777216.0f);
}

// Standard normal by Box-Muller on the uniforms of elements 2*index and 2*index + 1.
HISVID_HD float philox_normal(uint64_t seed, uint64_t offset, uint64_t index) {
  const float kTwoPi = 6.28318530717958647692f;
  const float u1 = 1.0f - philox_uniform(seed, offset, 2 * index);  // (0, 1]: log is finite
  const float u2 = philox_uniform(seed, offset, 2 * index + 1);
  return sqrtf(-2.0f * logf(u1)) * cosf(kTwoPi * u2);
}

}  // namespace hisvid
