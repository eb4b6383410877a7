// tests/test_kernel_table.cpp — every row of the kernel table (kernels/registry.h) against the
// float64 naive reference on every case its kernel registered (kernels/harness.h), one test per
// kernel and row. Built twice: with HISVID_TABLE_CUDA_ROWS=0 the host rows (naive float,
// tuned CPU), with 1 the CUDA rows, which skip with the reason where no GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "kernels/harness.h"

#if HISVID_TABLE_CUDA_ROWS && defined(HISVID_WITH_CUDA)
#include "engine/cuda_device.h"
#endif

namespace hisvid {
namespace {

struct RowCase {
  const harness::KernelSpec* spec;
  harness::RowInfo row;
};

void PrintTo(const RowCase& c, std::ostream* os) { *os << c.spec->name() << " " << c.row.name; }

std::vector<RowCase> rows_under_test() {
  std::vector<RowCase> out;
  for (const harness::KernelSpec* spec : harness::kernel_specs()) {
    for (const harness::RowInfo& row : spec->rows()) {
      if ((row.backend == Backend::Cuda) == bool(HISVID_TABLE_CUDA_ROWS)) out.push_back({spec, row});
    }
  }
  return out;
}

std::string test_name(const ::testing::TestParamInfo<RowCase>& info) {
  std::string name = std::string(info.param.spec->name()) + "_" + info.param.row.name;
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

class TableRow : public ::testing::TestWithParam<RowCase> {
 protected:
  void SetUp() override {
    const std::string reason = harness::unavailable_reason(GetParam().row.backend);
    if (!reason.empty()) GTEST_SKIP() << reason;
#if HISVID_TABLE_CUDA_ROWS && defined(HISVID_WITH_CUDA)
    // Creating the engine's allocator installs it as the context's workspace provider, as in
    // the engine; the kernels then take their scratch memory from it.
    (void)cuda_allocator(Device::cuda(0));
#endif
  }
};

// HISVID_KERNEL_CASE_MAX_FLOPS, where set, leaves out the larger cases (the sanitizer build
// runs ten times slower).
double max_case_flops() {
  const char* limit = std::getenv("HISVID_KERNEL_CASE_MAX_FLOPS");
  return limit == nullptr ? std::numeric_limits<double>::infinity() : std::atof(limit);
}

// A row is checked on the cases where it runs its own code (Implementation::applies); one that
// runs on none of them would pass having tested nothing, and fails.
TEST_P(TableRow, MatchesTheNaiveReference) {
  const harness::KernelSpec& spec = *GetParam().spec;
  const std::string& row = GetParam().row.name;
  int checked = 0, elsewhere = 0, too_large = 0;
  double error_used = 0.0;  // the largest error as a fraction of its tolerance, over the cases
  for (size_t i = 0; i < spec.case_count(); ++i) {
    if (!spec.applies(i, row)) {
      ++elsewhere;
      continue;
    }
    if (spec.case_flops(i) > max_case_flops()) {
      ++too_large;
      continue;
    }
    ++checked;
    double used = 0.0;
    const std::string failures = spec.check(i, row, &used);
    error_used = std::max(error_used, used);
    EXPECT_TRUE(failures.empty()) << spec.name() << " " << row << " on " << spec.case_name(i) << ":\n"
                                  << failures;
  }
  RecordProperty("cases_checked", checked);
  RecordProperty("cases_handed_to_another_row", elsewhere);
  RecordProperty("largest_error_used", std::to_string(error_used));
  if (checked == 0 && too_large > 0)
    GTEST_SKIP() << "every case " << row << " applies to is over HISVID_KERNEL_CASE_MAX_FLOPS";
  EXPECT_GT(checked, 0) << spec.name() << " " << row << " runs its own code on none of the "
                        << spec.case_count() << " cases: add a case it applies to";
}

INSTANTIATE_TEST_SUITE_P(Kernels, TableRow, ::testing::ValuesIn(rows_under_test()), test_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(TableRow);  // a build without CUDA has no CUDA rows

#if !HISVID_TABLE_CUDA_ROWS

// Every kernel with a table has cases, a naive row in float and in float64, and, in a CUDA
// build, a default CUDA row.
TEST(KernelTable, EveryKernelHasCasesANaiveRowAndACudaRow) {
  std::set<std::string> with_cases;
  for (const harness::KernelSpec* spec : harness::kernel_specs()) {
    with_cases.insert(spec->name());
    EXPECT_GT(spec->case_count(), 0u) << spec->name();
    bool naive = false, cuda = false;
    for (const harness::RowInfo& row : spec->rows()) {
      naive = naive || (row.backend == Backend::Naive && row.is_default);
      cuda = cuda || (row.backend == Backend::Cuda && row.is_default);
    }
    EXPECT_TRUE(naive) << spec->name() << " has no naive float row";
#ifdef HISVID_WITH_CUDA
    EXPECT_TRUE(cuda) << spec->name() << " has no default CUDA row";
#endif
  }
  for (const std::string& name : kernel_names()) {
    if (name == "harness_self_test") continue;  // the test below's own kernel
    EXPECT_EQ(with_cases.count(name), 1u) << name << " has rows but no harness cases";
  }
  EXPECT_GE(with_cases.size(), 51u) << "kernels with cases";
}

// Rows that promise the same bits as another (the same float operations in the same order,
// vectorised by hand) give them on every case of their kernel.
TEST(KernelTable, RowsThatPromiseTheSameBitsGiveThem) {
  struct Promise {
    std::string kernel, row, other;
  };
  const std::vector<Promise> promises = {{"convlstm_step_forward", "cpu.avx2", "cpu.portable"},
                                         {"convlstm_step_backward", "cpu.avx2", "cpu.portable"},
                                         {"conv2d_forward", "cpu.avx512", "cpu.avx2"},
                                         {"conv2d_backward_data", "cpu.avx512", "cpu.avx2"},
                                         {"conv2d_backward_filter", "cpu.avx512", "cpu.avx2"},
                                         {"maxpool2d_forward", "cpu.avx2", "cpu.portable"},
                                         {"maxpool2d_forward", "cpu.avx512", "cpu.portable"}};
  int compared = 0;
  for (const Promise& promise : promises) {
    const auto found =
        std::find_if(harness::kernel_specs().begin(), harness::kernel_specs().end(),
                     [&](const harness::KernelSpec* spec) { return spec->name() == promise.kernel; });
    ASSERT_NE(found, harness::kernel_specs().end()) << promise.kernel;
    const harness::KernelSpec& spec = **found;
    const std::vector<harness::RowInfo> rows = spec.rows();
    const auto has = [&](const std::string& name) {
      return std::any_of(rows.begin(), rows.end(), [&](const harness::RowInfo& r) { return r.name == name; });
    };
    if (!has(promise.row)) {  // not on this processor (cpu.avx2, cpu.avx512)
      std::cout << promise.kernel << " has no row " << promise.row << " on this processor: not compared\n";
      continue;
    }
    ASSERT_TRUE(has(promise.other)) << promise.kernel << " has no row " << promise.other;
    for (size_t i = 0; i < spec.case_count(); ++i, ++compared) {
      EXPECT_EQ(spec.same_bits(i, promise.row, promise.other), "")
          << promise.kernel << " " << promise.row << " against " << promise.other << " on "
          << spec.case_name(i);
    }
  }
  if (compared == 0) GTEST_SKIP() << "no row that promises the same bits runs on this processor";
}

// The harness itself: a kernel out (n) = -inp (n) with a correct row, a row that forgets an
// element, a row off by more than its tolerance, and one that turns a NaN into a number. Each
// wrong row must fail, the right one pass.
template <typename T>
struct SelfTest {
  static constexpr const char* kName = "harness_self_test";
  T* out = nullptr;
  const T* inp = nullptr;
  int64_t n = 0;
  template <typename V>
  void buffers(V& v) {
    v.out("out", out, n);
    v.in("inp", inp, n);
  }
};

template <typename T>
void negate(const SelfTest<T>& k) {
  for (int64_t i = 0; i < k.n; ++i) k.out[i] = -k.inp[i];
}
void forgets_one(const SelfTest<float>& k) {
  for (int64_t i = 1; i < k.n; ++i) k.out[i] = -k.inp[i];
}
void a_little_off(const SelfTest<float>& k) {
  for (int64_t i = 0; i < k.n; ++i) k.out[i] = -k.inp[i] * (1.0f + 1e-4f);
}
void hides_nan(const SelfTest<float>& k) {
  for (int64_t i = 0; i < k.n; ++i) k.out[i] = std::isnan(k.inp[i]) ? 0.0f : -k.inp[i];
}
bool odd_sizes(const SelfTest<float>& k) { return k.n % 2 == 1; }

TEST(Harness, FailsEveryWrongRowAndPassesTheRightOne) {
  static const bool registered = register_rows(
      host_row<negate<float>>(Backend::Naive, "naive"), host_row<negate<double>>(Backend::Naive, "naive"),
      host_row<forgets_one>(Backend::Cpu, "forgets_one", Role::Alternative),
      host_row<a_little_off>(Backend::Cpu, "a_little_off", Role::Alternative),
      host_row<hides_nan>(Backend::Cpu, "hides_nan", Role::Alternative),
      host_row<negate<float>>(Backend::Cpu, "odd_sizes_only", Role::Alternative).where(odd_sizes));
  ASSERT_TRUE(registered);
  harness::Cases<SelfTest> cases;
  cases.add("n37", [](auto& a) { a.n = 37; }).tol(harness::kElementwise);
  cases.add("n37_nan", [](auto& a) { a.n = 37; }).prepare_with([](SelfTest<double>& a) {
    harness::writable(a.inp)[5] = std::numeric_limits<double>::quiet_NaN();
  });
  cases.add("n38", [](auto& a) { a.n = 38; });
  const harness::KernelCases<SelfTest> spec(cases.all());
  EXPECT_EQ(spec.check(0, "naive"), "");
  EXPECT_EQ(spec.check(1, "naive"), "");
  EXPECT_NE(spec.check(0, "forgets_one").find("out (real): 1 of 37"), std::string::npos)
      << spec.check(0, "forgets_one");
  EXPECT_NE(spec.check(0, "a_little_off"), "");
  EXPECT_EQ(spec.check(0, "hides_nan"), "");
  EXPECT_NE(spec.check(1, "hides_nan"), "");
  // A row registered .where(predicate) runs its own code only where the predicate holds.
  EXPECT_TRUE(spec.applies(0, "odd_sizes_only"));
  EXPECT_FALSE(spec.applies(2, "odd_sizes_only"));
  EXPECT_TRUE(spec.applies(2, "naive"));
  // Tolerances: per output before per backend, the CUDA rows' where set.
  harness::Case<SelfTest> c;
  c.tol(1.0).tol("b", 2.0).tol_cuda(3.0).tol_cuda("c", 4.0);
  EXPECT_EQ(c.tolerance_for(Backend::Cpu, "a"), 1.0);
  EXPECT_EQ(c.tolerance_for(Backend::Cuda, "a"), 3.0);
  EXPECT_EQ(c.tolerance_for(Backend::Cuda, "b"), 2.0);
  EXPECT_EQ(c.tolerance_for(Backend::Cuda, "c"), 4.0);
  EXPECT_EQ(c.tolerance_for(Backend::Naive, "c"), 1.0);
  // Bit for bit between rows: the same row (as another name), and one off by 1e-4.
  EXPECT_EQ(spec.same_bits(0, "naive", "odd_sizes_only"), "");
  EXPECT_NE(spec.same_bits(0, "naive", "a_little_off").find("out: 37 of 37 elements differ"),
            std::string::npos)
      << spec.same_bits(0, "naive", "a_little_off");
  EXPECT_NE(spec.same_bits(0, "naive", "forgets_one").find("out: 1 of 37"), std::string::npos);
  const harness::Timing timing = spec.time(0, "naive", 0.001);
  EXPECT_GT(timing.calls, 0);
  EXPECT_GT(timing.seconds, 0.0);
  EXPECT_EQ(timing.bytes, 2.0 * 37 * sizeof(float));
}

#endif  // !HISVID_TABLE_CUDA_ROWS

}  // namespace
}  // namespace hisvid
