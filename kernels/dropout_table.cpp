// kernels/dropout_table.cpp — the rows of the dropout kernels and their harness cases.
#include <cmath>
#include <string>

#include "kernels/dropout.h"
#include "kernels/harness.h"

namespace hisvid {
namespace {

using harness::Cases;

const bool rows = register_rows(host_row<naive::dropout_forward<float>>(Backend::Naive, "naive"),
                                host_row<naive::dropout_forward<double>>(Backend::Naive, "naive"),
                                host_row<naive::dropout_backward<float>>(Backend::Naive, "naive"),
                                host_row<naive::dropout_backward<double>>(Backend::Naive, "naive"),
                                host_row<naive::dropout_mask<float>>(Backend::Naive, "naive"),
                                host_row<naive::dropout_mask<double>>(Backend::Naive, "naive"),
                                host_row<naive::spatial_dropout_forward<float>>(Backend::Naive, "naive"),
                                host_row<naive::spatial_dropout_forward<double>>(Backend::Naive, "naive"),
                                host_row<naive::spatial_dropout_backward<float>>(Backend::Naive, "naive"),
                                host_row<naive::spatial_dropout_backward<double>>(Backend::Naive, "naive"));
const bool cpu_rows =
    !cpu::dropout_cpu_available() || register_rows(host_row<cpu::dropout_forward>(Backend::Cpu, "cpu"),
                                                   host_row<cpu::dropout_backward>(Backend::Cpu, "cpu"),
                                                   host_row<cpu::dropout_mask>(Backend::Cpu, "cpu"));
#ifdef HISVID_WITH_CUDA
const bool cuda_rows =
    register_rows(cuda_row<cuda::dropout_forward>("cuda"), cuda_row<cuda::dropout_backward>("cuda"),
                  cuda_row<cuda::dropout_mask>("cuda"), cuda_row<cuda::spatial_dropout_forward>("cuda"),
                  cuda_row<cuda::spatial_dropout_backward>("cuda"));
#endif

// Both words of the seed and of the offset in use.
constexpr uint64_t kSeed = 0x9E3779B97F4A7C15ull;
constexpr uint64_t kOffset = (uint64_t(1) << 32) + 12345;
constexpr int64_t kBase = (int64_t(1) << 33) + 77;  // a staged base: high bits too

std::string rate_name(float rate) { return "_rate" + std::to_string(std::lround(rate * 100)) + "pct"; }

// The kept set is the same bits everywhere (the same float compare of the same Philox
// uniform); a kept value is x / (1 - rate), rounded once or twice.
const bool cases = [] {
  Cases<DropoutForward> forward;
  Cases<DropoutBackward> backward;
  Cases<DropoutMask> mask;
  // Around the blocks of four uniforms and the AVX2 row's steps of 32; 327,680 is the LRCN's
  // first dropout at batch 4 (4 x 20 x 16 x 16 x 16), where the rows are timed.
  for (int64_t n : {1, 3, 4, 5, 31, 33, 1000, 4099, 327680}) {
    for (float rate : {0.0f, 0.1f, 0.5f, 0.9f}) {
      const std::string name = "n" + std::to_string(n) + rate_name(rate);
      // No offset_base: the engine's direct steps (the based cases below: a captured step's).
      auto setup = [n, rate](auto& a) {
        a.n = n, a.rate = rate, a.seed = kSeed, a.offset = kOffset, a.offset_base = nullptr;
      };
      forward.add(name, setup).tol(harness::kElementwise);
      backward.add(name, setup).tol(harness::kElementwise);
      mask.add(name, setup).tol(harness::kElementwise);
    }
  }
  // Offsets relative to a base in memory (a captured step's): the draws at offset + base.
  const auto based = [](const int64_t* base) { harness::writable(base)[0] = kBase; };
  auto based_setup = [](auto& a) { a.n = 4099, a.rate = 0.5f, a.seed = kSeed, a.offset = 2; };
  forward.add("n4099_rate50pct_based", based_setup).tol(harness::kElementwise).prepare_with([based](auto& a) {
    based(a.offset_base);
  });
  backward.add("n4099_rate50pct_based", based_setup)
      .tol(harness::kElementwise)
      .prepare_with([based](auto& a) { based(a.offset_base); });
  mask.add("n4099_rate50pct_based", based_setup).tol(harness::kElementwise).prepare_with([based](auto& a) {
    based(a.offset_base);
  });
  Cases<SpatialDropoutForward> spatial_forward;
  Cases<SpatialDropoutBackward> spatial_backward;
  struct Sizes {
    int64_t N, S, C;
    float rate;
  };
  for (Sizes z : {Sizes{1, 1, 1, 0.0f}, Sizes{3, 7, 5, 0.2f}, Sizes{2, 20 * 5 * 5, 16, 0.5f},
                  Sizes{4, 1000, 3, 0.3f}, Sizes{1, 65537, 2, 0.9f}, Sizes{40, 256, 33, 0.25f}}) {
    const std::string name = "N" + std::to_string(z.N) + "_S" + std::to_string(z.S) + "_C" +
                             std::to_string(z.C) + rate_name(z.rate);
    auto setup = [z](auto& a) {
      a.N = z.N, a.S = z.S, a.C = z.C, a.rate = z.rate, a.seed = kSeed, a.offset = kOffset;
      a.offset_base = nullptr;
    };
    spatial_forward.add(name, setup).tol(harness::kElementwise);
    spatial_backward.add(name, setup).tol(harness::kElementwise);
  }
  auto spatial_based = [](auto& a) {
    a.N = 3, a.S = 7, a.C = 5, a.rate = 0.2f, a.seed = kSeed, a.offset = 2;
  };
  spatial_forward.add("N3_S7_C5_based", spatial_based)
      .tol(harness::kElementwise)
      .prepare_with([based](auto& a) { based(a.offset_base); });
  spatial_backward.add("N3_S7_C5_based", spatial_based)
      .tol(harness::kElementwise)
      .prepare_with([based](auto& a) { based(a.offset_base); });
  return harness::add_cases(forward) && harness::add_cases(backward) && harness::add_cases(mask) &&
         harness::add_cases(spatial_forward) && harness::add_cases(spatial_backward);
}();

}  // namespace
}  // namespace hisvid
