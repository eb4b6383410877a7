#include "tools/validators.h"

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

namespace hisvid::tools {

namespace {

// The number `text` spells in full, or false.
bool parse_number(const std::string& text, double& value) {
  if (text.empty()) return false;
  char* end = nullptr;
  value = std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size();
}

}  // namespace

CLI::Validator finite_in(double lo, double hi, bool below_hi) {
  return CLI::Validator(
      [lo, hi, below_hi](std::string& text) {
        double v = 0;
        if (parse_number(text, v) && std::isfinite(v) && v >= lo && (below_hi ? v < hi : v <= hi))
          return std::string();
        return fmt::format("'{}' is not a number from {:g} to {}{:g}", text, lo, below_hi ? "below " : "",
                           hi);
      },
      fmt::format("NUMBER in [{:g}, {:g}{}", lo, hi, below_hi ? ")" : "]"));
}

CLI::Validator float_positive() {
  return CLI::Validator(
      [](std::string& text) {
        double v = 0;
        if (parse_number(text, v) && std::isfinite(v) && v > 0) {
          const double most = std::numeric_limits<float>::max();  // above it the cast is undefined
          const float f = v > most ? 0.0f : static_cast<float>(v);
          if (v <= most && f >= std::numeric_limits<float>::min()) return std::string();
          return fmt::format(
              "'{}' is {} in float32, which the training computes in: give a number from {:g} to {:g}", text,
              v > most ? "infinite" : (f == 0.0f ? "0" : "a denormal"),
              double(std::numeric_limits<float>::min()), most);
        }
        return fmt::format("'{}' is not a finite number above 0", text);
      },
      "NUMBER > 0");
}

CLI::Validator integer_in(long long lo, long long hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) {
        const size_t digits = text.find_first_not_of("0123456789", text.rfind('-', 0) == 0 ? 1 : 0);
        if (!text.empty() && text != "-" && digits == std::string::npos) {
          errno = 0;
          const long long v = std::strtoll(text.c_str(), nullptr, 10);
          if (errno == 0 && v >= lo && v <= hi) return std::string();
        }
        return fmt::format("'{}' is not a whole number from {} to {}", text, lo, hi);
      },
      fmt::format("INT in [{}, {}]", lo, hi));
}

CLI::Validator seed_value() {
  return CLI::Validator(
      [](std::string& text) {
        if (!text.empty() && text.find_first_not_of("0123456789") == std::string::npos) {
          errno = 0;
          (void)std::strtoull(text.c_str(), nullptr, 10);
          if (errno == 0) return std::string();
        }
        return fmt::format("'{}' is not a seed (a whole number from 0 to 18446744073709551615)", text);
      },
      "SEED");
}

CLI::Validator non_empty() {
  return CLI::Validator(
      [](std::string& text) { return text.empty() ? std::string("the value is empty") : std::string(); },
      "NONEMPTY");
}

}  // namespace hisvid::tools
