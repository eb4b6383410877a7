// kernels/optim_table.cpp — the rows of the optimizer updates and their harness cases.
#include <cmath>
#include <string>
#include <vector>

#include "kernels/harness.h"
#include "kernels/optim.h"

namespace hisvid {
namespace {

const bool rows = register_rows(host_row<naive::adam_update<float>>(Backend::Naive, "naive"),
                                host_row<naive::adam_update<double>>(Backend::Naive, "naive"),
                                host_row<naive::rmsprop_update<float>>(Backend::Naive, "naive"),
                                host_row<naive::rmsprop_update<double>>(Backend::Naive, "naive"),
                                host_row<naive::sgd_update<float>>(Backend::Naive, "naive"),
                                host_row<naive::sgd_update<double>>(Backend::Naive, "naive"),
                                host_row<naive::multi_tensor_update<float>>(Backend::Naive, "naive"),
                                host_row<naive::multi_tensor_update<double>>(Backend::Naive, "naive"));
#ifdef HISVID_WITH_CUDA
const bool cuda_rows =
    register_rows(cuda_row<cuda::adam_update>("cuda"), cuda_row<cuda::rmsprop_update>("cuda"),
                  cuda_row<cuda::sgd_update>("cuda"), cuda_row<cuda::multi_tensor_update>("cuda"));
#endif

// The hyperparameters as float values, so that the float64 reference uses the very same ones.
constexpr float kLr = 0.01f, kBeta1 = 0.9f, kBeta2 = 0.999f, kEps = 1e-7f, kRho = 0.9f;

// m small around 0, v small and non-negative: second moments of gradients of about 1.
void moments(const double* m, const double* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (m != nullptr) harness::writable(m)[i] *= 0.1;
    harness::writable(v)[i] = 0.005 * (v[i] + 1.0);
  }
}

const bool cases = [] {
  harness::Cases<AdamUpdate> adam;
  harness::Cases<RmspropUpdate> rmsprop;
  harness::Cases<SgdUpdate> sgd;
  // Step 3's bias correction.
  const float alpha =
      static_cast<float>(kLr * std::sqrt(1.0 - std::pow(0.999, 3)) / (1.0 - std::pow(0.9, 3)));
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(1000), int64_t(100003)}) {
    const std::string name = "n" + std::to_string(n);
    adam.add(name,
             [n, alpha](auto& a) {
               a.n = n, a.alpha = alpha, a.beta1 = kBeta1, a.beta2 = kBeta2, a.eps = kEps,
               a.scalar_at = nullptr;
             })
        .tol(harness::kFused)
        .with_flops(10.0 * n)
        .prepare_with([n](AdamUpdate<double>& a) { moments(a.m, a.v, n); });
    for (RmspropEpsilon form : {RmspropEpsilon::OutsideSqrt, RmspropEpsilon::InsideSqrt}) {
      rmsprop
          .add(name + (form == RmspropEpsilon::OutsideSqrt ? "_eps_outside" : "_eps_inside"),
               [n, form](auto& a) {
                 a.n = n, a.lr = kLr, a.rho = kRho, a.eps = kEps, a.form = form, a.scalar_at = nullptr;
               })
          .tol(harness::kFused)
          .with_flops(7.0 * n)
          .prepare_with([n](RmspropUpdate<double>& a) { moments(nullptr, a.v, n); });
    }
    sgd.add(name, [n](auto& a) { a.n = n, a.lr = kLr, a.scalar_at = nullptr; })
        .tol(harness::kElementwise)
        .with_flops(2.0 * n);
  }
  // The step scalar read from memory (a captured step's), the field left wrong.
  adam.add("n1000_scalar_in_memory", [](auto& a) { a.n = 1000, a.alpha = -1.0f; })
      .tol(harness::kFused)
      .prepare_with([alpha](AdamUpdate<double>& a) {
        moments(a.m, a.v, 1000);
        harness::writable(a.scalar_at)[0] = alpha;
      });
  rmsprop.add("n1000_scalar_in_memory", [](auto& a) { a.n = 1000, a.lr = -1.0f; })
      .tol(harness::kFused)
      .prepare_with([](RmspropUpdate<double>& a) {
        moments(nullptr, a.v, 1000);
        harness::writable(a.scalar_at)[0] = kLr;
      });
  sgd.add("n1000_scalar_in_memory", [](auto& a) { a.n = 1000, a.lr = -1.0f; })
      .tol(harness::kElementwise)
      .prepare_with([](SgdUpdate<double>& a) { harness::writable(a.scalar_at)[0] = kLr; });
  // halt set (a step whose loss was not finite): nothing moves. Absent, as above, or 0: the
  // update runs (the cases above leave it 0).
  const auto halt = [](const double* flag) { harness::writable(flag)[0] = 3.0; };
  adam.add("n1000_halted", [alpha](auto& a) { a.n = 1000, a.alpha = alpha, a.scalar_at = nullptr; })
      .prepare_with([halt](AdamUpdate<double>& a) { halt(a.halt); });
  rmsprop.add("n1000_halted", [](auto& a) { a.n = 1000, a.lr = kLr, a.scalar_at = nullptr; })
      .prepare_with([halt](RmspropUpdate<double>& a) { halt(a.halt); });
  sgd.add("n1000_halted", [](auto& a) { a.n = 1000, a.lr = kLr, a.scalar_at = nullptr; })
      .prepare_with([halt](SgdUpdate<double>& a) { halt(a.halt); });
  // No halt flag at all (the engine's updates outside a device-resident step).
  adam.add("n7_no_halt",
           [alpha](auto& a) {
             a.n = 7, a.alpha = alpha, a.beta1 = kBeta1, a.beta2 = kBeta2, a.eps = kEps;
             a.halt = nullptr, a.scalar_at = nullptr;
           })
      .tol(harness::kFused)
      .prepare_with([](AdamUpdate<double>& a) { moments(a.m, a.v, 7); });
  rmsprop
      .add("n7_no_halt",
           [](auto& a) {
             a.n = 7, a.lr = kLr, a.rho = kRho, a.eps = kEps, a.form = RmspropEpsilon::OutsideSqrt;
             a.halt = nullptr, a.scalar_at = nullptr;
           })
      .tol(harness::kFused)
      .prepare_with([](RmspropUpdate<double>& a) { moments(nullptr, a.v, 7); });
  sgd.add("n7_no_halt", [](auto& a) { a.n = 7, a.lr = kLr, a.halt = nullptr, a.scalar_at = nullptr; })
      .tol(harness::kElementwise);
  // Several tensors at once: sizes around the block size and the seeds' (a 1-value bias, a
  // 100003-value kernel), the most tensors one call takes, each rule, halted, the scalar in memory.
  harness::Cases<MultiTensorUpdate> multi;
  const std::vector<int64_t> sizes = {1, 7, 1000, 100003, 256, 257, 33, 5, 64, 1, 2, 3, 4, 4099, 12, 300};
  const auto tensors = [sizes](int count) {
    return [sizes, count](auto& a) {
      a.count = count;
      for (int t = 0; t < count; ++t) a.n[t] = sizes[static_cast<size_t>(t)];
    };
  };
  const auto prepared = [sizes](int count) {
    return [sizes, count](MultiTensorUpdate<double>& a) {
      for (int t = 0; t < count; ++t) {
        moments(a.rule == UpdateRule::Adam ? a.m[t] : nullptr, a.rule == UpdateRule::Sgd ? nullptr : a.v[t],
                sizes[static_cast<size_t>(t)]);
      }
    };
  };
  for (int count : {1, 4, MultiTensorUpdate<float>::kMaxTensors}) {
    const std::string name = "tensors" + std::to_string(count);
    multi
        .add(name + "_adam",
             [count, tensors, alpha](auto& a) {
               tensors(count)(a);
               a.rule = UpdateRule::Adam, a.scalar = alpha, a.beta1 = kBeta1, a.beta2 = kBeta2, a.eps = kEps;
               a.scalar_at = nullptr;
             })
        .tol(harness::kFused)
        .prepare_with(prepared(count));
    for (RmspropEpsilon form : {RmspropEpsilon::OutsideSqrt, RmspropEpsilon::InsideSqrt}) {
      multi
          .add(name + (form == RmspropEpsilon::OutsideSqrt ? "_rmsprop_eps_outside" : "_rmsprop_eps_inside"),
               [count, tensors, form](auto& a) {
                 tensors(count)(a);
                 a.rule = UpdateRule::Rmsprop, a.scalar = kLr, a.rho = kRho, a.eps = kEps, a.form = form;
                 a.scalar_at = nullptr;
               })
          .tol(harness::kFused)
          .prepare_with(prepared(count));
    }
    multi
        .add(name + "_sgd",
             [count, tensors](auto& a) {
               tensors(count)(a);
               a.rule = UpdateRule::Sgd, a.scalar = kLr, a.scalar_at = nullptr;
             })
        .tol(harness::kElementwise);
  }
  multi
      .add("tensors4_adam_halted",
           [tensors, alpha](auto& a) {
             tensors(4)(a);
             a.rule = UpdateRule::Adam, a.scalar = alpha, a.scalar_at = nullptr;
           })
      .prepare_with([halt](MultiTensorUpdate<double>& a) { halt(a.halt); });
  multi
      .add("tensors4_adam_scalar_in_memory",
           [tensors](auto& a) {
             tensors(4)(a);
             a.rule = UpdateRule::Adam, a.scalar = -1.0f;
           })
      .tol(harness::kFused)
      .prepare_with([prepared, alpha](MultiTensorUpdate<double>& a) {
        prepared(4)(a);
        harness::writable(a.scalar_at)[0] = alpha;
      });
  return harness::add_cases(adam) && harness::add_cases(rmsprop) && harness::add_cases(sgd) &&
         harness::add_cases(multi);
}();

}  // namespace
}  // namespace hisvid
