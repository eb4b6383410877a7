// tests/test_support.h — small helpers the test files share.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "engine/error.h"

namespace hisvid::testing {

// The message of the exception of type E that `action` throws; a test failure when it throws
// none.
template <typename E = Error, typename Action>
std::string error_of(Action&& action) {
  try {
    action();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "the expected exception was not thrown";
  return "";
}

// Expects `action` to throw a hisvid::Error whose message contains every fragment.
template <typename Action>
void expect_error(Action&& action, const std::vector<std::string>& fragments) {
  const std::string message = error_of(std::forward<Action>(action));
  for (const std::string& fragment : fragments) {
    EXPECT_NE(message.find(fragment), std::string::npos) << "'" << fragment << "' missing from: " << message;
  }
}

// A path in the temporary directory that no other test, of this run or another, uses:
// <prefix>-<pid>-<n>. Not created.
inline std::filesystem::path fresh_directory(const std::string& prefix) {
  static std::atomic<int> counter{0};
  return std::filesystem::temp_directory_path() /
         (prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
}

// The larger of `worst` and `difference`, a NaN counting as infinitely large: std::max(worst,
// NaN) is `worst`, which would let a comparison pass on outputs that are not numbers.
inline double worse(double worst, double difference) {
  return std::isnan(difference) ? std::numeric_limits<double>::infinity() : std::max(worst, difference);
}

inline std::string file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The names in a directory, sorted.
inline std::vector<std::string> directory_entries(const std::filesystem::path& directory) {
  std::vector<std::string> names;
  for (const std::filesystem::directory_entry& entry : std::filesystem::directory_iterator(directory)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace hisvid::testing
