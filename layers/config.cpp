#include "layers/config.h"

#include <algorithm>
#include <cctype>
#include <limits>

namespace hisvid::layers {

nlohmann::json parse_json_limited(const std::string& text) {
  const nlohmann::json::parser_callback_t limit = [](int depth, nlohmann::json::parse_event_t,
                                                     nlohmann::json&) {
    if (depth > kMaxJsonDepth) {
      throw nlohmann::json::out_of_range::create(
          406, fmt::format("nested deeper than {} levels (no Keras model config does)", kMaxJsonDepth),
          nullptr);
    }
    return true;
  };
  return nlohmann::json::parse(text, limit);
}

std::string brief(const nlohmann::json& value) {
  std::string text = value.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  if (text.size() > kBriefJsonChars) text = text.substr(0, kBriefJsonChars) + "...";
  return text;
}

KerasVersion KerasVersion::parse(const std::string& text, const std::string& where) {
  KerasVersion v;
  int* parts[] = {&v.major, &v.minor, &v.patch};
  size_t pos = 0;
  for (int i = 0; i < 3; ++i) {
    size_t end = pos;
    while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end])) && end - pos < 6) ++end;
    if (end == pos) {
      if (i == 0) fail("{}: keras_version '{}' is not a version number", where, text);
      *parts[i] = 0;
      continue;
    }
    *parts[i] = std::stoi(text.substr(pos, end - pos));
    pos = end;
    if (pos < text.size() && text[pos] == '.') ++pos;
  }
  if (v.major < 1 || v.major > 3) {
    fail("{}: keras_version '{}': hisvid reads files of Keras 2.x and 3.x", where, text);
  }
  v.tf_keras = text.find("-tf") != std::string::npos;
  return v;
}

std::string KerasVersion::str() const {
  return fmt::format("{}.{}.{}{}", major, minor, patch, tf_keras ? "-tf" : "");
}

KerasObject read_keras_object(const nlohmann::json& spec, const std::string& where) {
  if (!spec.is_object() || !spec.contains("class_name") || !spec["class_name"].is_string()) {
    fail("{}: expected {{\"class_name\": ..., \"config\": {{...}}}}, got {}", where, brief(spec));
  }
  KerasObject object{spec["class_name"].get<std::string>(), nlohmann::json::object()};
  for (const auto& item : spec.items()) {
    const std::string& key = item.key();
    if (key == "class_name") continue;
    if (key == "config") {
      if (!item.value().is_object() && !item.value().is_null()) {
        fail("{} ({}): config must be an object, got {}", where, object.class_name, item.value().type_name());
      }
      if (item.value().is_object()) object.config = item.value();
      continue;
    }
    // Metadata of Keras 2.13+ / 3.x serialization: where the class lives, how it was built or
    // compiled, and object sharing. None of it changes what the object computes.
    if (key == "module" || key == "build_config" || key == "compile_config" || key == "shared_object_id")
      continue;
    if (key == "registered_name") {
      const nlohmann::json& r = item.value();
      // Built-in classes have null (or their own name); "package>Name" marks a custom class.
      if (r.is_null() || (r.is_string() && r.get<std::string>() == object.class_name)) continue;
      fail("{} ({}): registered_name {} is a custom object, not a Keras built-in that hisvid implements",
           where, object.class_name, brief(r));
    }
    fail("{} ({}): unknown key '{}' beside class_name and config", where, object.class_name, key);
  }
  return object;
}

void require_float32_dtype(const nlohmann::json& dtype, const std::string& where) {
  if (dtype.is_null()) return;
  std::string name;
  if (dtype.is_string()) {
    name = dtype.get<std::string>();
  } else if (dtype.is_object()) {
    const KerasObject policy = read_keras_object(dtype, where + " dtype");
    if (policy.class_name != "DTypePolicy" && policy.class_name != "Policy" &&
        policy.class_name != "FloatDTypePolicy") {
      fail("{}: dtype {} is not a dtype policy", where, brief(dtype));
    }
    const nlohmann::json& n = policy.config.contains("name") ? policy.config["name"] : nlohmann::json();
    if (!n.is_string()) fail("{}: dtype policy without a name: {}", where, brief(dtype));
    name = n.get<std::string>();
  } else {
    fail("{}: dtype must be a string or a dtype policy, got {}", where, brief(dtype));
  }
  if (name != "float32") {
    fail(
        "{}: dtype '{}' is not supported: hisvid computes in float32 (mixed precision and other dtypes are "
        "not "
        "implemented)",
        where, name);
  }
}

std::string activation_name(const ActivationSpec& spec) {
  if (spec.softmax) return "softmax";
  // Keras writes one name for both hard_sigmoid formulas: the file's version tells them apart.
  if (spec.elementwise == Activation::HardSigmoidKeras3) return "hard_sigmoid";
  return activation_label(spec.elementwise);
}

std::string padding_name(Padding padding) { return padding == Padding::Same ? "same" : "valid"; }

ConfigReader::ConfigReader(const nlohmann::json& config, std::string where, KerasVersion version)
    : config_(config), where_(std::move(where)), version_(version) {
  if (!config_.is_object()) error("the config must be a JSON object, got {}", config_.type_name());
}

bool ConfigReader::has(const char* key) const { return config_.contains(key); }

const nlohmann::json* ConfigReader::take(const char* key) {
  taken_.emplace_back(key);
  const auto it = config_.find(key);
  return it == config_.end() ? nullptr : &*it;
}

int ConfigReader::integer(const char* key) {
  if (!has(key)) error("missing required argument '{}'", key);
  return integer(key, 0);
}

int ConfigReader::integer(const char* key, int fallback) {
  const nlohmann::json* v = take(key);
  if (v == nullptr) return fallback;
  if (!v->is_number_integer()) error("argument '{}' must be an integer, got {}", key, brief(*v));
  if (v->is_number_unsigned() ? v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int>::max())
                              : (v->get<int64_t>() > std::numeric_limits<int>::max() ||
                                 v->get<int64_t>() < std::numeric_limits<int>::min())) {
    error("argument '{}' = {} is out of range", key, brief(*v));
  }
  return v->get<int>();
}

double ConfigReader::number(const char* key, double fallback) {
  const nlohmann::json* v = take(key);
  if (v == nullptr) return fallback;
  if (!v->is_number()) error("argument '{}' must be a number, got {}", key, brief(*v));
  return v->get<double>();
}

bool ConfigReader::boolean(const char* key, bool fallback) {
  const nlohmann::json* v = take(key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) error("argument '{}' must be true or false, got {}", key, brief(*v));
  return v->get<bool>();
}

std::string ConfigReader::string(const char* key, const std::string& fallback) {
  const nlohmann::json* v = take(key);
  if (v == nullptr || v->is_null()) return fallback;
  if (!v->is_string()) error("argument '{}' must be a string, got {}", key, brief(*v));
  return v->get<std::string>();
}

std::vector<int> ConfigReader::ints(const char* key, const std::vector<int>& fallback, size_t size) {
  const nlohmann::json* v = take(key);
  if (v == nullptr || v->is_null()) return fallback;
  const auto fits = [](const nlohmann::json& e) {
    if (!e.is_number_integer()) return false;
    if (e.is_number_unsigned())
      return e.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int>::max());
    return e.get<int64_t>() >= std::numeric_limits<int>::min() &&
           e.get<int64_t>() <= std::numeric_limits<int>::max();
  };
  if (fits(*v)) return std::vector<int>(size, v->get<int>());
  if (!v->is_array() || v->size() != size || !std::all_of(v->begin(), v->end(), fits)) {
    error("argument '{}' must be an integer or a list of {} integers (each within int range), got {}", key,
          size, brief(*v));
  }
  return v->get<std::vector<int>>();
}

std::array<int, 2> ConfigReader::pair(const char* key) {
  if (!has(key)) error("missing required argument '{}'", key);
  return pair(key, {0, 0});
}

std::array<int, 2> ConfigReader::pair(const char* key, std::array<int, 2> fallback) {
  const std::vector<int> v = ints(key, {fallback[0], fallback[1]}, 2);
  if (v[0] < 1 || v[1] < 1) error("argument '{}' must be positive, got [{}, {}]", key, v[0], v[1]);
  return {v[0], v[1]};
}

ActivationSpec ConfigReader::activation(const char* key, const std::string& fallback) {
  // An explicit null is Keras's activations.get(None): linear, not the layer's default.
  const std::string name =
      has(key) && config_[key].is_null() ? (take(key), std::string("linear")) : string(key, fallback);
  if (name == "linear") return {Activation::Linear, false};
  if (name == "relu") return {Activation::Relu, false};
  if (name == "tanh") return {Activation::Tanh, false};
  if (name == "sigmoid") return {Activation::Sigmoid, false};
  // One name, two formulas: the file's Keras version says which.
  if (name == "hard_sigmoid")
    return {version_.keras3() ? Activation::HardSigmoidKeras3 : Activation::HardSigmoid, false};
  if (name == "softmax") return {Activation::Linear, true};
  error("unknown activation '{}' for '{}' (expected linear, relu, tanh, sigmoid, hard_sigmoid or softmax)",
        name, key);
}

Padding ConfigReader::padding(const char* key, const std::string& fallback) {
  std::string name = string(key, fallback);
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  if (name == "valid") return Padding::Valid;
  if (name == "same") return Padding::Same;
  error("argument '{}' must be \"valid\" or \"same\", got \"{}\"", key, name);
}

nlohmann::json ConfigReader::raw(const char* key) {
  const nlohmann::json* v = take(key);
  return v == nullptr ? nlohmann::json() : *v;
}

void ConfigReader::require_default(const char* key, const std::vector<nlohmann::json>& allowed) {
  const nlohmann::json* v = take(key);
  if (v == nullptr) return;
  if (std::find(allowed.begin(), allowed.end(), *v) == allowed.end()) {
    error("argument '{}' = {} is not supported by hisvid (supported: {})", key, brief(*v),
          brief(nlohmann::json(allowed)));
  }
}

void ConfigReader::ignore(const char* key) { taken_.emplace_back(key); }

void ConfigReader::finish() const {
  for (const auto& item : config_.items()) {
    if (std::find(taken_.begin(), taken_.end(), item.key()) == taken_.end()) {
      error("unknown argument '{}'", item.key());
    }
  }
}

}  // namespace hisvid::layers
