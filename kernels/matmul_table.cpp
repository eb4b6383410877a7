// kernels/matmul_table.cpp — the rows of Matmul and its harness cases.
#include <string>

#include "kernels/harness.h"
#include "kernels/matmul.h"

namespace hisvid {
namespace {

const bool rows = register_rows(host_row<naive::matmul<float>>(Backend::Naive, "naive"),
                                host_row<naive::matmul<double>>(Backend::Naive, "naive"),
                                host_row<cpu::matmul>(Backend::Cpu, "cpu"));
#ifdef HISVID_WITH_CUDA
const bool cuda_rows = register_rows(cuda_row<cuda::matmul>("cuda"));
#endif

struct Shape {
  int64_t M, P, K;
};

const bool cases = [] {
  harness::Cases<Matmul> cases;
  // One element, odd sizes, a row vector, a column result, a model-sized product, and K = 0.
  for (Shape s : {Shape{1, 1, 1}, Shape{7, 5, 3}, Shape{33, 17, 65}, Shape{1, 50, 300}, Shape{128, 96, 200},
                  Shape{20, 1, 33}, Shape{3, 4, 0}}) {
    for (int flags = 0; flags < 8; ++flags) {
      const bool ta = flags & 1, tb = flags & 2, acc = flags & 4;
      const std::string name = "M" + std::to_string(s.M) + "_P" + std::to_string(s.P) + "_K" +
                               std::to_string(s.K) + "_" + (ta ? "t" : "n") + (tb ? "t" : "n") +
                               (acc ? "_acc" : "");
      cases
          .add(name,
               [s, ta, tb, acc](auto& a) {
                 a.M = s.M, a.P = s.P, a.K = s.K;
                 a.trans_a = ta, a.trans_b = tb, a.accumulate = acc;
               })
          .tol(harness::sum_tolerance(s.K + (acc ? 1 : 0)))
          .with_flops(2.0 * s.M * s.P * s.K);
    }
  }
  return harness::add_cases(cases);
}();

}  // namespace
}  // namespace hisvid
