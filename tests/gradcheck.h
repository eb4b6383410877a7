// tests/gradcheck.h — the gradient checker every op and model goes through (Caffe's design):
// central differences in float64 against the tape's analytic gradients, error scaled by
// max(|analytic|, |numeric|, 1), with a kink guard for points where the function is not
// differentiable (ReLU at 0, max-pool ties, hard_sigmoid's corners).
//
// The function under test may return any shape; the checked scalar is sum(f(x) * R) with a
// fixed random projection R, so every output element contributes with its own weight.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hisvid::testing {

// Central-difference step: small enough that the O(h^2) truncation error (~1e-12) is far
// below the tolerance, large enough that float64 round-off (~1e-16 * |L| / h) stays ~1e-10.
constexpr double kGradStep = 1e-6;
// Maximum scaled error |analytic - numeric| / max(|analytic|, |numeric|, 1) in float64.
constexpr double kGradTolerance = 1e-6;
// One-sided differences that disagree by more than this (scaled) mean the step crossed a
// kink; smooth functions keep them within O(h) ~ 1e-6 of each other.
constexpr double kKinkThreshold = 1e-3;
// A check that skips more than this fraction of its elements as kinks fails: it would have
// stopped testing anything.
constexpr double kMaxKinkFraction = 0.05;

struct GradCheckResult {
  double max_error = 0.0;
  std::string worst;  // "input 1 element 7: analytic ..., numeric ..."
  int checked = 0;
  int kinks = 0;
};

using TensorFunction = std::function<Tensor(const std::vector<Tensor>& inputs)>;

// Checks d sum(f(inputs) * R) / d inputs[i] for every element of every input that requires
// grad. Inputs must be float64 CPU tensors. `max_elements` caps how many elements per input
// are probed (chosen evenly), 0 meaning all.
GradCheckResult grad_check(const TensorFunction& f, const std::vector<Tensor>& inputs, int max_elements = 0);

// The probe grad_check makes of one input, for gradients computed another way: central
// differences of value() at the probed elements of x (float64 on the CPU, perturbed in place
// and restored) against `analytic` (x's shape; undefined means zeros), with the kink guard.
// Adds to `result`; `label` names x in result.worst ("input 1", "activation"). A gradient or a
// value that is not finite is an infinite error.
void compare_with_differences(const std::function<double()>& value, const Tensor& x, const Tensor& analytic,
                              int max_elements, const std::string& label, GradCheckResult& result);

// A float64 CPU tensor of the given shape with uniform values in [low, high), requiring grad.
Tensor random_input(const Shape& shape, uint64_t seed, double low = -1.0, double high = 1.0);

}  // namespace hisvid::testing

// gtest assertion: the check probed something and stayed within kGradTolerance.
#define EXPECT_GRAD_OK(result)                                                         \
  do {                                                                                 \
    const hisvid::testing::GradCheckResult r_ = (result);                              \
    EXPECT_GT(r_.checked, 0);                                                          \
    EXPECT_LE(r_.max_error, hisvid::testing::kGradTolerance) << "worst: " << r_.worst; \
  } while (0)
