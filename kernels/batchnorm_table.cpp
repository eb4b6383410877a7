// kernels/batchnorm_table.cpp — the rows of the batch-normalisation kernels and their cases.
#include <string>

#include "kernels/batchnorm.h"
#include "kernels/harness.h"

namespace hisvid {
namespace {

using harness::Cases;

const bool rows = register_rows(host_row<naive::batchnorm_forward_train<float>>(Backend::Naive, "naive"),
                                host_row<naive::batchnorm_forward_train<double>>(Backend::Naive, "naive"),
                                host_row<naive::batchnorm_forward_infer<float>>(Backend::Naive, "naive"),
                                host_row<naive::batchnorm_forward_infer<double>>(Backend::Naive, "naive"),
                                host_row<naive::batchnorm_backward<float>>(Backend::Naive, "naive"),
                                host_row<naive::batchnorm_backward<double>>(Backend::Naive, "naive"),
                                host_row<naive::batchnorm_update_moving<float>>(Backend::Naive, "naive"),
                                host_row<naive::batchnorm_update_moving<double>>(Backend::Naive, "naive"));
#ifdef HISVID_WITH_CUDA
const bool cuda_rows = register_rows(
    cuda_row<cuda::batchnorm_forward_train>("cuda"), cuda_row<cuda::batchnorm_forward_infer>("cuda"),
    cuda_row<cuda::batchnorm_backward>("cuda"), cuda_row<cuda::batchnorm_update_moving>("cuda"));
#endif

// x in [a, b) from the harness's [-1, 1).
void remap(const double* x, int64_t n, double a, double b) {
  for (int64_t i = 0; i < n; ++i) harness::writable(x)[i] = a + (b - a) * (x[i] + 1.0) / 2.0;
}

const bool cases = [] {
  Cases<BatchnormForwardTrain> train;
  Cases<BatchnormForwardInfer> infer;
  Cases<BatchnormBackward> backward;
  Cases<BatchnormUpdateMoving> update;
  struct Sizes {
    int64_t M, C;
  };
  for (Sizes z : {Sizes{1, 3}, Sizes{2, 1}, Sizes{7, 5}, Sizes{1000, 16}, Sizes{20001, 17},
                  Sizes{4 * 20 * 32 * 32, 16}}) {
    const int64_t M = z.M, C = z.C;
    const std::string name = "M" + std::to_string(M) + "_C" + std::to_string(C);
    auto sizes = [M, C](auto& a) { a.M = M, a.C = C; };
    // Inputs of mean 0.5 (the mean matters) and scales around 1. The statistics are sums of M
    // terms, and they feed every output.
    train.add(name, sizes)
        .tol(harness::kFused + harness::sum_tolerance(M))
        .with_flops(8.0 * M * C)
        .prepare_with([M, C](BatchnormForwardTrain<double>& a) {
          remap(a.inp, M * C, -1.5, 2.5);
          remap(a.gamma, C, 0.5, 1.5);
        });
    infer.add(name, sizes)
        .tol(harness::kFused)
        .with_flops(4.0 * M * C)
        .prepare_with([M, C](BatchnormForwardInfer<double>& a) {
          remap(a.inp, M * C, -1.5, 2.5);
          remap(a.gamma, C, 0.5, 1.5);
          remap(a.moving_var, C, 0.1, 2.0);
        });
    backward.add(name, sizes)
        .tol(harness::kFused + harness::sum_tolerance(M))
        .with_flops(10.0 * M * C)
        .prepare_with([M, C](BatchnormBackward<double>& a) {
          remap(a.inp, M * C, -1.5, 2.5);
          remap(a.invstd, C, 0.5, 1.5);
          remap(a.gamma, C, 0.5, 1.5);
        });
    // Each Keras path's expression: Keras 2's fused kernel with M / (M - 1) (1 for M = 1: one
    // row has no unbiased variance), its other path and Keras 3's blend with the biased one.
    struct Rule {
      const char* suffix;
      MovingUpdate update;
      bool unbiased;
    };
    for (const Rule rule :
         {Rule{"", MovingUpdate::Fused, true}, Rule{"_assign_sub", MovingUpdate::AssignSub, false},
          Rule{"_blend", MovingUpdate::Blend, false}}) {
      const float factor = rule.unbiased && M > 1 ? float(M) / float(M - 1) : 1.0f;
      update
          .add(name + rule.suffix,
               [M, C, rule, factor](auto& a) {
                 a.M = M, a.C = C, a.momentum = 0.99f, a.decay = 0.01f, a.update = rule.update;
                 a.variance_factor = factor;
               })
          .tol(harness::kFused)
          .prepare_with([C](BatchnormUpdateMoving<double>& a) {
            remap(a.moving_var, C, 0.1, 2.0);
            remap(a.var, C, 0.1, 2.0);
          });
    }
  }
  return harness::add_cases(train) && harness::add_cases(infer) && harness::add_cases(backward) &&
         harness::add_cases(update);
}();

}  // namespace
}  // namespace hisvid
