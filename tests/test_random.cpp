// Philox4x32-10: known-answer vectors, determinism by (seed, offset), and the moments of the
// uniform and normal draws.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/random.h"
#include "kernels/philox.h"

namespace hisvid {
namespace {

TEST(Philox, KnownAnswerVectors) {
  // The Philox4x32-10 vectors published with Random123 (kat_vectors).
  struct Kat {
    Philox4x32 ctr;
    uint32_t key0, key1;
    Philox4x32 expected;
  };
  const Kat kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
      {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
       0xffffffffu,
       0xffffffffu,
       {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
      {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
       0xa4093822u,
       0x299f31d0u,
       {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
  };
  for (const Kat& k : kats) {
    const Philox4x32 got = philox4x32_10(k.ctr, k.key0, k.key1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got.v[i], k.expected.v[i]) << "word " << i;
  }
}

TEST(Philox, SameSeedAndOffsetSameBits) {
  for (uint64_t i = 0; i < 1000; ++i) {
    EXPECT_EQ(philox_bits(42, 7, i), philox_bits(42, 7, i));
  }
  int differ_offset = 0, differ_seed = 0;
  for (uint64_t i = 0; i < 1000; ++i) {
    differ_offset += philox_bits(42, 7, i) != philox_bits(42, 8, i);
    differ_seed += philox_bits(42, 7, i) != philox_bits(43, 7, i);
  }
  // Two independent 32-bit words collide with probability 2^-32 each.
  EXPECT_EQ(differ_offset, 1000);
  EXPECT_EQ(differ_seed, 1000);
}

TEST(Philox, GeneratorOffsetsAdvance) {
  Generator a(5), b(5);
  EXPECT_EQ(a.next().offset, 0u);
  EXPECT_EQ(a.next().offset, 1u);
  const Tensor ua = a.uniform({16}, 0, 1), ub = Generator(5, 2).uniform({16}, 0, 1);
  EXPECT_EQ(ua.to_vector(), ub.to_vector());
  EXPECT_NE(b.uniform({16}, 0, 1).to_vector(), ua.to_vector());
}

// Sample of 1e6 draws: the standard error of the mean of U(0,1) is 0.289/1000 ~ 3e-4 and of
// its variance ~ 9e-5; 5 standard errors keeps the test deterministic-safe yet meaningful.
constexpr int64_t kDraws = 1000000;
constexpr double kUniformMeanTol = 1.5e-3, kUniformVarTol = 5e-4;
// Normal: standard error of the mean 1e-3, of the variance sqrt(2)/1000 ~ 1.4e-3.
constexpr double kNormalMeanTol = 5e-3, kNormalVarTol = 7e-3;

TEST(Philox, UniformMoments) {
  const std::vector<double> u = Generator(11).uniform({kDraws}, 0.0, 1.0, DType::Float64).to_vector();
  double mean = 0, var = 0, lo = 1, hi = 0;
  for (double x : u) {
    mean += x;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  mean /= kDraws;
  for (double x : u) var += (x - mean) * (x - mean);
  var /= kDraws;
  EXPECT_NEAR(mean, 0.5, kUniformMeanTol);
  EXPECT_NEAR(var, 1.0 / 12.0, kUniformVarTol);
  EXPECT_GE(lo, 0.0);
  EXPECT_LT(hi, 1.0);
}

TEST(Philox, NormalMoments) {
  const std::vector<double> z = Generator(12).normal({kDraws}, 0.0, 1.0, DType::Float64).to_vector();
  double mean = 0, var = 0;
  for (double x : z) mean += x;
  mean /= kDraws;
  for (double x : z) var += (x - mean) * (x - mean);
  var /= kDraws;
  EXPECT_NEAR(mean, 0.0, kNormalMeanTol);
  EXPECT_NEAR(var, 1.0, kNormalVarTol);
  for (double x : z) ASSERT_TRUE(std::isfinite(x));
}

TEST(Philox, BelowStaysInRange) {
  Generator g(13);
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 7000; ++i) {
    const uint64_t v = g.below(7);
    ASSERT_LT(v, 7u);
    ++counts[v];
  }
  for (int c : counts) EXPECT_GT(c, 800);  // expected 1000 each; 800 is > 6 standard deviations away
}

}  // namespace
}  // namespace hisvid
