#include "layers/registry.h"

namespace hisvid::layers {

namespace {

// Keras's snake_case prefix of automatic layer names.
const std::map<std::string, std::string>& name_prefixes() {
  static const std::map<std::string, std::string> prefixes = {
      {"Conv2D", "conv2d"},           {"MaxPooling2D", "max_pooling2d"},
      {"MaxPooling3D", "max_pooling3d"}, {"Dropout", "dropout"},
      {"Flatten", "flatten"},         {"BatchNormalization", "batch_normalization"},
      {"LSTM", "lstm"},               {"ConvLSTM2D", "conv_lstm2d"},
      {"Dense", "dense"},             {"TimeDistributed", "time_distributed"}};
  return prefixes;
}

}  // namespace

const std::set<std::string>& supported_layer_classes() {
  static const std::set<std::string> classes = [] {
    std::set<std::string> names;
    for (const auto& [cls, prefix] : name_prefixes()) names.insert(cls);
    return names;
  }();
  return classes;
}

std::string LayerFactory::unique_name(const std::string& class_name) {
  const std::string& prefix = name_prefixes().at(class_name);
  for (;;) {
    const int n = counts_[prefix]++;
    std::string name = n == 0 ? prefix : prefix + "_" + std::to_string(n);
    if (used_.insert(name).second) return name;
  }
}

std::unique_ptr<Layer> LayerFactory::make(const nlohmann::json& spec, const std::string& where) {
  if (!spec.is_object() || !spec.contains("class_name") || !spec["class_name"].is_string()) {
    fail("{}: expected {{\"class_name\": ..., \"config\": {{...}}}}, got {}", where, spec.dump());
  }
  const std::string cls = spec["class_name"].get<std::string>();
  if (supported_layer_classes().count(cls) == 0) {
    std::string known;
    for (const std::string& c : supported_layer_classes()) known += (known.empty() ? "" : ", ") + c;
    fail("{}: unknown layer class '{}' (hisvid implements {})", where, cls, known);
  }
  for (const auto& item : spec.items()) {
    if (item.key() != "class_name" && item.key() != "config") {
      fail("{} ({}): unknown key '{}' beside class_name and config", where, cls, item.key());
    }
  }
  const nlohmann::json config = spec.contains("config") ? spec["config"] : nlohmann::json::object();
  std::string name;
  if (config.is_object() && config.contains("name")) {
    if (!config["name"].is_string()) fail("{} ({}): name must be a string, got {}", where, cls, config["name"].dump());
    name = config["name"].get<std::string>();
    if (!used_.insert(name).second) fail("{} ({}): the name '{}' is used twice", where, cls, name);
  } else {
    name = unique_name(cls);
  }
  ConfigReader reader(config, fmt::format("{} ({} '{}')", where, cls, name));
  std::unique_ptr<Layer> layer;
  if (cls == "Conv2D") {
    layer = std::make_unique<Conv2D>(name, reader);
  } else if (cls == "MaxPooling2D" || cls == "MaxPooling3D") {
    layer = std::make_unique<MaxPooling>(name, reader, cls == "MaxPooling3D");
  } else if (cls == "Dropout") {
    layer = std::make_unique<Dropout>(name, reader);
  } else if (cls == "Flatten") {
    layer = std::make_unique<Flatten>(name, reader);
  } else if (cls == "BatchNormalization") {
    layer = std::make_unique<BatchNormalization>(name, reader);
  } else if (cls == "Dense") {
    layer = std::make_unique<Dense>(name, reader);
  } else if (cls == "LSTM" || cls == "ConvLSTM2D") {
    layer = std::make_unique<Recurrent>(name, reader, cls == "ConvLSTM2D");
  } else {  // TimeDistributed
    reader.ignore("name");
    reader.ignore("batch_input_shape");
    reader.require_default("trainable", {true});
    reader.require_default("dtype", {"float32"});
    const nlohmann::json inner_spec = reader.raw("layer");
    if (inner_spec.is_null()) reader.error("missing required argument 'layer'");
    std::unique_ptr<Layer> inner = make(inner_spec, reader.where() + " wrapping");
    const std::string inner_class = inner->class_name();
    if (inner_class == "TimeDistributed" || inner_class == "LSTM" || inner_class == "ConvLSTM2D" ||
        inner_class == "MaxPooling3D") {
      reader.error("TimeDistributed cannot wrap {}", inner_class);
    }
    layer = std::make_unique<TimeDistributed>(name, std::move(inner));
  }
  reader.finish();
  return layer;
}

}  // namespace hisvid::layers
