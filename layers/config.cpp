#include "layers/config.h"

#include <algorithm>
#include <cctype>

namespace hisvid::layers {

std::string activation_name(const ActivationSpec& spec) {
  if (spec.softmax) return "softmax";
  switch (spec.elementwise) {
    case Activation::Relu: return "relu";
    case Activation::Tanh: return "tanh";
    case Activation::Sigmoid: return "sigmoid";
    case Activation::HardSigmoid: return "hard_sigmoid";
    case Activation::Linear: break;
  }
  return "linear";
}

std::string padding_name(Padding padding) { return padding == Padding::Same ? "same" : "valid"; }

ConfigReader::ConfigReader(const nlohmann::json& config, std::string where)
    : config_(config), where_(std::move(where)) {
  if (!config_.is_object()) error("the config must be a JSON object, got {}", config_.dump());
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
  if (!v->is_number_integer()) error("argument '{}' must be an integer, got {}", key, v->dump());
  return v->get<int>();
}

double ConfigReader::number(const char* key, double fallback) {
  const nlohmann::json* v = take(key);
  if (v == nullptr) return fallback;
  if (!v->is_number()) error("argument '{}' must be a number, got {}", key, v->dump());
  return v->get<double>();
}

bool ConfigReader::boolean(const char* key, bool fallback) {
  const nlohmann::json* v = take(key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) error("argument '{}' must be true or false, got {}", key, v->dump());
  return v->get<bool>();
}

std::string ConfigReader::string(const char* key, const std::string& fallback) {
  const nlohmann::json* v = take(key);
  if (v == nullptr || v->is_null()) return fallback;
  if (!v->is_string()) error("argument '{}' must be a string, got {}", key, v->dump());
  return v->get<std::string>();
}

std::vector<int> ConfigReader::ints(const char* key, const std::vector<int>& fallback, size_t size) {
  const nlohmann::json* v = take(key);
  if (v == nullptr || v->is_null()) return fallback;
  if (v->is_number_integer()) return std::vector<int>(size, v->get<int>());
  if (!v->is_array() || v->size() != size ||
      !std::all_of(v->begin(), v->end(), [](const nlohmann::json& e) { return e.is_number_integer(); })) {
    error("argument '{}' must be an integer or a list of {} integers, got {}", key, size, v->dump());
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
  const std::string name = string(key, fallback);
  if (name == "linear") return {Activation::Linear, false};
  if (name == "relu") return {Activation::Relu, false};
  if (name == "tanh") return {Activation::Tanh, false};
  if (name == "sigmoid") return {Activation::Sigmoid, false};
  if (name == "hard_sigmoid") return {Activation::HardSigmoid, false};
  if (name == "softmax") return {Activation::Linear, true};
  error("unknown activation '{}' for '{}' (expected linear, relu, tanh, sigmoid, hard_sigmoid or softmax)", name,
        key);
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
    error("argument '{}' = {} is not supported by hisvid (supported: {})", key, v->dump(),
          nlohmann::json(allowed).dump());
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
