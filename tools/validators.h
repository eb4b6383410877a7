// tools/validators.h — checks of the commands' option values that CLI11's own do not make:
// CLI::Range lets "nan" through (every comparison with NaN is false) and takes "inf", reads
// "-1" as 2^64-1 for an unsigned seed, says "not in range" of "4x", and CLI::PositiveNumber
// prints DBL_MAX in full. Each check names the value and what it must be; CLI11 adds the option.
#pragma once

#include <CLI/CLI.hpp>

namespace hisvid::tools {

// A finite number (NaN and infinity refused) in [lo, hi], or in [lo, hi) with `below_hi`.
CLI::Validator finite_in(double lo, double hi, bool below_hi = false);
// A number > 0 that float32 holds as a normal number (from FLT_MIN to FLT_MAX): a value the
// engine computes with in float.
CLI::Validator float_positive();
// A whole number in [lo, hi] written in digits (an optional leading minus sign).
CLI::Validator integer_in(long long lo, long long hi);
// A seed: an unsigned 64-bit integer written in decimal digits.
CLI::Validator seed_value();
// A value that is not empty (an empty path must not fall back to a default location).
CLI::Validator non_empty();

}  // namespace hisvid::tools
