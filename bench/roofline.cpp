// bench/roofline.cpp — the host's measured roofline and the share of it a row reaches
// (bench/roofline.h).
#include "bench/roofline.h"

#include <fmt/format.h>
#include <immintrin.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <fstream>
#include <memory>
#include <string>

namespace hisvid::bench {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kChains = 10;             // independent FMA chains: latency (4-5 cycles) x 2 ports
constexpr int64_t kFmaSteps = 1 << 22;  // per thread and run: 10 x 2^22 vector FMAs
constexpr int kRuns = 5;                // the best of these

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Each runs kChains chains of kFmaSteps FMAs and returns their sum (so that none is dropped).
__attribute__((target("avx512f"))) float fma_chains_avx512() {
  __m512 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps(1.0f + 1e-3f * static_cast<float>(j));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < kFmaSteps; ++i) {
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_fmadd_ps(acc[j], a, b);
  }
  alignas(64) float lanes[16];
  float sum = 0.0f;
  for (int j = 0; j < kChains; ++j) {
    _mm512_store_ps(lanes, acc[j]);  // (not _mm512_reduce_add_ps: GCC 12 warns inside it)
    for (float v : lanes) sum += v;
  }
  return sum;
}

__attribute__((target("avx2,fma"))) float fma_chains_avx2() {
  __m256 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm256_set1_ps(1.0f + 1e-3f * static_cast<float>(j));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < kFmaSteps; ++i) {
    for (int j = 0; j < kChains; ++j) acc[j] = _mm256_fmadd_ps(acc[j], a, b);
  }
  alignas(32) float lanes[8];
  float sum = 0.0f;
  for (int j = 0; j < kChains; ++j) {
    _mm256_store_ps(lanes, acc[j]);
    for (float v : lanes) sum += v;
  }
  return sum;
}

float mul_add_chains_scalar() {
  float acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = 1.0f + 1e-3f * static_cast<float>(j);
  for (int64_t i = 0; i < kFmaSteps; ++i) {
    for (int j = 0; j < kChains; ++j) acc[j] = acc[j] * 0.999999f + 1e-7f;
  }
  float sum = 0.0f;
  for (float v : acc) sum += v;
  return sum;
}

// The largest cache of cpu0 as sysfs lists it (glibc's sysconf reports a virtual machine's host
// cache on some machines: 320 MiB for a 32 MiB L3), else sysconf's; 0 when neither knows.
double last_level_cache_bytes() {
  double largest = 0.0;
  for (int index = 0; index < 8; ++index) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
    std::string size;
    if (!(in >> size) || size.empty()) continue;
    const char unit = size.back();
    const double scale = unit == 'K' ? 1024.0 : unit == 'M' ? 1048576.0 : 1.0;
    try {
      largest = std::max(largest, std::stod(size) * scale);
    } catch (const std::exception&) {
    }
  }
  if (largest > 0.0) return largest;
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  return static_cast<double>(std::max(0L, l3 > 0 ? l3 : l2));
}

}  // namespace

Roofline measure_host_roofline(int threads) {
  Roofline r;
  int lanes = 1;
  float (*chains)() = mul_add_chains_scalar;
  const char* isa = "scalar multiply and add";
  if (__builtin_cpu_supports("avx512f")) {
    chains = fma_chains_avx512, lanes = 16, isa = "AVX-512 FMA";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    chains = fma_chains_avx2, lanes = 8, isa = "AVX2 FMA";
  }
  volatile float sink = 0.0f;
  double best = 0.0;
  for (int run = 0; run < kRuns; ++run) {
    const Clock::time_point start = Clock::now();
    float sum = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : sum)
    sum += chains();
    best = std::max(best, 2.0 * kChains * kFmaSteps * lanes * threads / seconds_since(start) * 1e-9);
    sink = sink + sum;
  }
  r.gflops = best;

  // Triad over arrays much larger than the caches (each at least 128 MiB and the last-level
  // cache's size), first touched by the threads that use them.
  r.cache_bytes = last_level_cache_bytes();
  const int64_t n = std::max(int64_t(32) << 20, static_cast<int64_t>(r.cache_bytes) / 4);  // floats
  std::unique_ptr<float[]> a(new float[n]), b(new float[n]), c(new float[n]);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) a[i] = 0.0f, b[i] = 1.0f, c[i] = 2.0f;
  best = 0.0;
  for (int run = 0; run < kRuns; ++run) {
    const Clock::time_point start = Clock::now();
    const float s = 0.5f + 1e-3f * static_cast<float>(run);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
    best = std::max(best, 12.0 * static_cast<double>(n) / seconds_since(start) * 1e-9);
  }
  sink = sink + a[n / 2];
  r.gbs = best;
  r.basis = fmt::format("{} threads; {} chains; triad over 3 x {} MiB; best of {}; last-level cache {}",
                        threads, isa, n * 4 >> 20, kRuns,
                        r.cache_bytes > 0 ? fmt::format("{} KiB", r.cache_bytes / 1024) : "unknown");
  return r;
}

std::string roofline_share(const Roofline& roofline, double flops, double bytes, double seconds) {
  if (seconds <= 0.0 || bytes <= 0.0 || roofline.gbs <= 0.0) return "";
  const bool computes = flops > 0.0 && roofline.gflops > 0.0;
  const bool bandwidth_bound = !computes || flops / bytes * roofline.gbs < roofline.gflops;
  if (bandwidth_bound && bytes < roofline.cache_bytes) return "in cache";
  const double share = computes
                           ? flops / seconds * 1e-9 / std::min(roofline.gflops, flops / bytes * roofline.gbs)
                           : bytes / seconds * 1e-9 / roofline.gbs;
  return fmt::format("{:.1f}%", 100.0 * share);
}

}  // namespace hisvid::bench
