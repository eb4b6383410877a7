// kernels/reduce_table.cpp — the rows of the full sum and the block copy, and their cases.
#include <string>

#include "kernels/harness.h"
#include "kernels/reduce.h"

namespace hisvid {
namespace {

const bool rows = register_rows(host_row<naive::sum_all<float>>(Backend::Naive, "naive"),
                                host_row<naive::sum_all<double>>(Backend::Naive, "naive"),
                                host_row<naive::copy_block<float>>(Backend::Naive, "naive"),
                                host_row<naive::copy_block<double>>(Backend::Naive, "naive"));
#ifdef HISVID_WITH_CUDA
const bool cuda_rows = register_rows(cuda_row<cuda::sum_all>("cuda"), cuda_row<cuda::copy_block>("cuda"));
#endif

struct Block {
  int64_t outer, src_dim, src_start, dst_dim, dst_start, len, inner;
  bool accumulate;
  bool repeat = false;  // src[:, src_start, :] to every slice of the block
};

const bool cases = [] {
  harness::Cases<SumAll> sum;
  // Every row sums in double: only the final rounding to float differs from the reference.
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(1000), int64_t(1 << 20) + 3}) {
    sum.add("n" + std::to_string(n), [n](auto& a) { a.n = n; })
        .tol(harness::kElementwise)
        .with_flops(double(n));
  }
  harness::Cases<CopyBlock> copy;
  // clang-format off
  for (Block b : {Block{1, 1, 0, 1, 0, 1, 1, false},    Block{3, 10, 2, 7, 4, 3, 5, false},
                  Block{3, 10, 2, 7, 4, 3, 5, true},    Block{4, 6, 0, 20, 14, 6, 33, false},
                  Block{2, 20, 5, 5, 0, 5, 1, true},    Block{20, 3, 1, 3, 1, 1, 64, false},
                  Block{3, 1, 0, 7, 0, 7, 5, false, true},  Block{2, 4, 2, 9, 3, 5, 3, true, true}}) {
    // clang-format on
    const std::string name = "outer" + std::to_string(b.outer) + "_src" + std::to_string(b.src_dim) + "at" +
                             std::to_string(b.src_start) + "_dst" + std::to_string(b.dst_dim) + "at" +
                             std::to_string(b.dst_start) + "_len" + std::to_string(b.len) + "_inner" +
                             std::to_string(b.inner) + (b.accumulate ? "_acc" : "") +
                             (b.repeat ? "_repeat" : "");
    // A copy is exact; an accumulation is one add of two floats, correctly rounded.
    copy.add(name, [b](auto& a) {
      a.outer = b.outer, a.len = b.len, a.inner = b.inner, a.accumulate = b.accumulate, a.repeat = b.repeat;
      a.src_dim = b.src_dim, a.src_start = b.src_start, a.dst_dim = b.dst_dim, a.dst_start = b.dst_start;
    });
  }
  return harness::add_cases(sum) && harness::add_cases(copy);
}();

}  // namespace
}  // namespace hisvid
