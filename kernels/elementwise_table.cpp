// kernels/elementwise_table.cpp — the rows of the kernels in kernels/elementwise.h and the
// cases the harness checks and times them on (kernels/harness.h).
#include <limits>
#include <string>

#include "kernels/elementwise.h"
#include "kernels/harness.h"

namespace hisvid {
namespace {

using harness::Cases;

const bool rows = register_rows(host_row<naive::fill<float>>(Backend::Naive, "naive"),
                                host_row<naive::fill<double>>(Backend::Naive, "naive"),
                                host_row<naive::add<float>>(Backend::Naive, "naive"),
                                host_row<naive::add<double>>(Backend::Naive, "naive"),
                                host_row<naive::sub<float>>(Backend::Naive, "naive"),
                                host_row<naive::sub<double>>(Backend::Naive, "naive"),
                                host_row<naive::mul<float>>(Backend::Naive, "naive"),
                                host_row<naive::mul<double>>(Backend::Naive, "naive"),
                                host_row<naive::scale<float>>(Backend::Naive, "naive"),
                                host_row<naive::scale<double>>(Backend::Naive, "naive"),
                                host_row<naive::axpy<float>>(Backend::Naive, "naive"),
                                host_row<naive::axpy<double>>(Backend::Naive, "naive"),
                                host_row<naive::bias_add_forward<float>>(Backend::Naive, "naive"),
                                host_row<naive::bias_add_forward<double>>(Backend::Naive, "naive"),
                                host_row<naive::bias_add_backward<float>>(Backend::Naive, "naive"),
                                host_row<naive::bias_add_backward<double>>(Backend::Naive, "naive"),
                                host_row<naive::activation_forward<float>>(Backend::Naive, "naive"),
                                host_row<naive::activation_forward<double>>(Backend::Naive, "naive"),
                                host_row<naive::activation_backward<float>>(Backend::Naive, "naive"),
                                host_row<naive::activation_backward<double>>(Backend::Naive, "naive"));

#ifdef HISVID_WITH_CUDA
const bool cuda_rows =
    register_rows(cuda_row<cuda::fill>("cuda"), cuda_row<cuda::add>("cuda"), cuda_row<cuda::sub>("cuda"),
                  cuda_row<cuda::mul>("cuda"), cuda_row<cuda::scale>("cuda"), cuda_row<cuda::axpy>("cuda"),
                  cuda_row<cuda::bias_add_forward>("cuda"), cuda_row<cuda::bias_add_backward>("cuda"),
                  cuda_row<cuda::activation_forward>("cuda"), cuda_row<cuda::activation_backward>("cuda"));
#endif

// Sizes that are not multiples of any block size, one element, and more than a grid's worth.
constexpr int64_t kSizes[] = {1, 7, 1000, 65537};
constexpr Activation kActivations[] = {Activation::Linear,      Activation::Relu,
                                       Activation::Tanh,        Activation::Sigmoid,
                                       Activation::HardSigmoid, Activation::HardSigmoidKeras3};

std::string n_name(int64_t n) { return "n" + std::to_string(n); }

// Every tenth input NaN: what the activations make of it must agree everywhere.
template <typename A>
void with_nans(A& a) {
  for (int64_t i = 0; i < a.n; i += 10)
    harness::writable(a.inp)[i] = std::numeric_limits<double>::quiet_NaN();
}

const bool cases = [] {
  Cases<Fill> fill;
  Cases<Add> add;
  Cases<Sub> sub;
  Cases<Mul> mul;
  Cases<Scale> scale;
  Cases<Axpy> axpy;
  Cases<ActivationForward> act_forward;
  Cases<ActivationBackward> act_backward;
  for (int64_t n : kSizes) {
    const double bytes_only = 0.0;
    fill.add(n_name(n), [n](auto& a) { a.n = n, a.value = -2.5; }).with_flops(bytes_only);
    add.add(n_name(n), [n](auto& a) { a.n = n; }).with_flops(double(n));
    sub.add(n_name(n), [n](auto& a) { a.n = n; }).with_flops(double(n));
    mul.add(n_name(n), [n](auto& a) { a.n = n; }).with_flops(double(n));
    scale.add(n_name(n), [n](auto& a) { a.n = n, a.alpha = -1.5; }).with_flops(double(n));
    // y + alpha * x rounds twice in float (or once, fused): not the correctly rounded result.
    axpy.add(n_name(n), [n](auto& a) { a.n = n, a.alpha = 0.75; })
        .tol(harness::kElementwise)
        .with_flops(2.0 * n);
    for (Activation act : kActivations) {
      const std::string name = n_name(n) + "_" + activation_label(act);
      act_forward.add(name, [n, act](auto& a) { a.n = n, a.act = act; }).tol(harness::kElementwise);
      act_backward.add(name, [n, act](auto& a) { a.n = n, a.act = act; }).tol(harness::kElementwise);
      if (n == 1000) {
        act_forward.add(name + "_nan", [n, act](auto& a) { a.n = n, a.act = act; })
            .tol(harness::kElementwise)
            .prepare_with(with_nans<ActivationForward<double>>);
      }
    }
  }
  Cases<BiasAddForward> bias_forward;
  Cases<BiasAddBackward> bias_backward;
  for (auto [M, C] : {std::pair<int64_t, int64_t>{1, 1}, {5, 3}, {33, 17}, {1000, 64}, {20483, 16}}) {
    const std::string name = "M" + std::to_string(M) + "_C" + std::to_string(C);
    bias_forward.add(name, [M = M, C = C](auto& a) { a.M = M, a.C = C; }).with_flops(double(M * C));
    bias_backward.add(name, [M = M, C = C](auto& a) { a.M = M, a.C = C; })
        .tol(harness::sum_tolerance(M))
        .with_flops(double(M * C));
  }
  return harness::add_cases(fill) && harness::add_cases(add) && harness::add_cases(sub) &&
         harness::add_cases(mul) && harness::add_cases(scale) && harness::add_cases(axpy) &&
         harness::add_cases(act_forward) && harness::add_cases(act_backward) &&
         harness::add_cases(bias_forward) && harness::add_cases(bias_backward);
}();

}  // namespace
}  // namespace hisvid
