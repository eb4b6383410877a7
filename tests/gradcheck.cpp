#include "tests/gradcheck.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"

namespace hisvid::testing {

Tensor random_input(const Shape& shape, uint64_t seed, double low, double high) {
  Generator rng(seed);
  Tensor t = rng.uniform(shape, low, high, DType::Float64);
  t.set_requires_grad(true);
  return t;
}

void compare_with_differences(const std::function<double()>& value, const Tensor& x, const Tensor& analytic,
                              int max_elements, const std::string& label, GradCheckResult& result) {
  const int64_t n = x.numel();
  const int64_t probes = max_elements > 0 ? std::min<int64_t>(n, max_elements) : n;
  double* data = x.data<double>();
  for (int64_t p = 0; p < probes; ++p) {
    const int64_t e = probes == n ? p : p * n / probes;
    const double original = data[e];
    data[e] = original + kGradStep;
    const double plus = value();
    data[e] = original - kGradStep;
    const double minus = value();
    data[e] = original;
    const double center = value();
    const double numeric = (plus - minus) / (2 * kGradStep);
    const double forward_diff = (plus - center) / kGradStep, backward_diff = (center - minus) / kGradStep;
    const double derivative = analytic.defined() ? analytic.data<double>()[e] : 0.0;
    if (!std::isfinite(derivative) || !std::isfinite(plus) || !std::isfinite(minus) ||
        !std::isfinite(center)) {
      // A NaN would pass every comparison below: it is the worst error there is.
      ++result.checked;
      result.max_error = std::numeric_limits<double>::infinity();
      result.worst = fmt::format("{} element {}: analytic {}, values {} / {} / {} (not finite)", label, e,
                                 derivative, minus, center, plus);
      continue;
    }
    const double scale = std::max({std::fabs(derivative), std::fabs(numeric), 1.0});
    if (std::fabs(forward_diff - backward_diff) / scale > kKinkThreshold) {
      ++result.kinks;
      continue;
    }
    ++result.checked;
    const double error = std::fabs(derivative - numeric) / scale;
    if (error > result.max_error) {
      result.max_error = error;
      result.worst =
          fmt::format("{} element {}: analytic {:.12g}, numeric {:.12g}", label, e, derivative, numeric);
    }
  }
}

GradCheckResult grad_check(const TensorFunction& f, const std::vector<Tensor>& inputs, int max_elements) {
  for (const Tensor& t : inputs) {
    if (t.defined() && (t.dtype() != DType::Float64 || !t.device().is_cpu())) {
      fail("grad_check: inputs must be float64 on the CPU, got {}", t.describe());
    }
  }
  // The projection that turns f's output into a scalar.
  Tensor projection;
  auto objective = [&]() -> Tensor {
    Tensor out = f(inputs);
    if (!projection.defined()) {
      Generator rng(0x9E3779B97F4A7C15ull);
      projection = rng.uniform(out.shape(), 0.5, 1.5, DType::Float64);
    }
    return ops::sum(ops::mul(out, projection));
  };

  // Analytic gradients from one recorded forward + backward.
  for (const Tensor& t : inputs) {
    if (t.defined()) t.impl()->grad.reset();
  }
  Tape::current().clear();
  backward(objective());

  auto value = [&]() {
    NoGradGuard no_grad;
    return objective().item();
  };

  GradCheckResult result;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined() || !x.requires_grad()) continue;
    compare_with_differences(value, x, x.grad(), max_elements, fmt::format("input {}", i), result);
  }
  for (const Tensor& t : inputs) {
    if (t.defined()) t.impl()->grad.reset();
  }
  const int total = result.checked + result.kinks;
  if (total == 0) fail("grad_check: no input requires grad, nothing was checked");
  if (result.kinks > kMaxKinkFraction * total) {
    fail("grad_check: {} of {} probes sat on kinks; the check would test nothing", result.kinks, total);
  }
  return result;
}

}  // namespace hisvid::testing
