// layers/config.h — reading a Keras layer config (`{"filters": 16, "kernel_size": [3, 3], ...}`).
//
// A ConfigReader hands out arguments by Keras name with Keras's default when absent, checks each
// value's type, and at finish() rejects any argument nobody asked for: a misspelt or unknown
// argument is an error naming it and the layer's position, never a silent default.
#pragma once

#include <array>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "kernels/common.h"

namespace hisvid::layers {

// A Keras activation name: the elementwise ones plus softmax (which only Dense accepts).
struct ActivationSpec {
  Activation elementwise = Activation::Linear;
  bool softmax = false;
};

std::string activation_name(const ActivationSpec& spec);
// "valid" / "same"
std::string padding_name(Padding padding);

class ConfigReader {
 public:
  // `where` prefixes every error, e.g. "layer 3 (Conv2D 'conv2d_1')".
  ConfigReader(const nlohmann::json& config, std::string where);

  bool has(const char* key) const;
  int integer(const char* key);  // required
  int integer(const char* key, int fallback);
  double number(const char* key, double fallback);
  bool boolean(const char* key, bool fallback);
  std::string string(const char* key, const std::string& fallback);
  // An int n (meaning (n, n)) or a list of two ints.
  std::array<int, 2> pair(const char* key);  // required
  std::array<int, 2> pair(const char* key, std::array<int, 2> fallback);
  // A list of ints (or one int, repeated `size` times).
  std::vector<int> ints(const char* key, const std::vector<int>& fallback, size_t size);
  ActivationSpec activation(const char* key, const std::string& fallback);
  Padding padding(const char* key, const std::string& fallback);
  // The raw JSON of an argument (initializer objects, wrapped layers), or null when absent.
  nlohmann::json raw(const char* key);
  // Accepts the argument only when absent or equal to one of `allowed` (features hisvid does
  // not implement, kept at their Keras defaults).
  void require_default(const char* key, const std::vector<nlohmann::json>& allowed);
  // Marks arguments that carry no meaning here (name, dtype, trainable, batch_input_shape...).
  void ignore(const char* key);
  // Throws when an argument was never read.
  void finish() const;

  const std::string& where() const { return where_; }
  template <typename... Args>
  [[noreturn]] void error(fmt::format_string<Args...> format, Args&&... args) const {
    fail("{}: {}", where_, fmt::format(format, std::forward<Args>(args)...));
  }

 private:
  const nlohmann::json* take(const char* key);

  const nlohmann::json& config_;
  std::string where_;
  std::vector<std::string> taken_;
};

}  // namespace hisvid::layers
