// layers/config.h — reading a Keras layer config (`{"filters": 16, "kernel_size": [3, 3], ...}`).
//
// A ConfigReader hands out arguments by Keras name with Keras's default when absent, checks each
// value's type, and at finish() rejects any argument nobody asked for: a misspelt or unknown
// argument is an error naming it and the layer's position, never a silent default.
//
// Every Keras version is the input. Keras 2.13+ and 3.x wrap each serialized object in metadata
// ("module", "registered_name", "build_config", ...) that carries no meaning for the
// computation: read_keras_object() accepts and drops it at every level. Where a meaning changed
// between versions (hard_sigmoid, ConvLSTM2D's default recurrent_activation, activity
// regularization), the reader follows the KerasVersion of the file that holds the config.
#pragma once

#include <array>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/common.h"

namespace hisvid::layers {

// The Keras version that wrote a config ("2.8.0", "3.3.3"). Specs without one (the zoo, a
// hand-written JSON file) are read as Keras 2.8, the seeds' version.
struct KerasVersion {
  int major = 2, minor = 8, patch = 0;
  // "-tf": the tf.keras of TensorFlow 1.x to 2.3 ("2.2.4-tf", "2.3.0-tf"), not standalone Keras.
  bool tf_keras = false;
  // Parses "X.Y.Z" (trailing parts such as "-tf" or ".dev0" are ignored); `where` names the
  // file in the error.
  static KerasVersion parse(const std::string& text, const std::string& where);
  std::string str() const;
  bool keras3() const { return major >= 3; }
  // Standalone Keras before it became tf.keras (2.0-2.3 without "-tf"): its own LSTM cell and
  // BatchNormalization rules.
  bool standalone() const { return major == 2 && minor < 4 && !tf_keras; }
};

// A serialized Keras object, {"class_name": ..., "config": {...}}, with the metadata newer
// Keras versions write beside them dropped. `where` prefixes errors.
struct KerasObject {
  std::string class_name;
  nlohmann::json config;  // an object ({} when absent)
};
KerasObject read_keras_object(const nlohmann::json& spec, const std::string& where);

// Keras's `dtype` argument: "float32", or a DTypePolicy / Policy object naming float32. A
// mixed-precision or other policy is an error naming it (hisvid computes in float32).
void require_float32_dtype(const nlohmann::json& dtype, const std::string& where);

// Parses JSON text of a model spec with a nesting limit: a Keras model config nests about ten
// levels (model, layer, wrapped layer, initializer, config, list), so kMaxJsonDepth leaves wide
// room while a hostile file ("[[[[...") fails at once instead of exhausting the stack. Throws
// nlohmann::json::exception (parse_error, or out_of_range for the depth).
constexpr int kMaxJsonDepth = 64;
nlohmann::json parse_json_limited(const std::string& text);

// A JSON value for an error message: compact, non-ASCII escaped, and cut after
// kBriefJsonChars characters so that a huge value cannot flood the message.
constexpr size_t kBriefJsonChars = 120;
std::string brief(const nlohmann::json& value);

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
  ConfigReader(const nlohmann::json& config, std::string where, KerasVersion version = {});

  bool has(const char* key) const;
  // Integers must fit an int (a larger one is an error, never a wrapped value).
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
  const KerasVersion& version() const { return version_; }
  template <typename... Args>
  [[noreturn]] void error(fmt::format_string<Args...> format, Args&&... args) const {
    fail("{}: {}", where_, fmt::format(format, std::forward<Args>(args)...));
  }

 private:
  const nlohmann::json* take(const char* key);

  const nlohmann::json& config_;
  std::string where_;
  KerasVersion version_;
  std::vector<std::string> taken_;
};

}  // namespace hisvid::layers
