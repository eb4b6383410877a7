#include "layers/registry.h"

namespace hisvid::layers {

namespace {

// Keras's snake_case prefix of automatic layer names.
const std::map<std::string, std::string>& name_prefixes() {
  static const std::map<std::string, std::string> prefixes = {
      {"Conv2D", "conv2d"},
      {"MaxPooling2D", "max_pooling2d"},
      {"MaxPooling3D", "max_pooling3d"},
      {"Dropout", "dropout"},
      {"Flatten", "flatten"},
      {"BatchNormalization", "batch_normalization"},
      {"LSTM", "lstm"},
      {"ConvLSTM2D", "conv_lstm2d"},
      {"Dense", "dense"},
      {"TimeDistributed", "time_distributed"},
      {"GlobalAveragePooling1D", "global_average_pooling1d"},
      {"GlobalAveragePooling2D", "global_average_pooling2d"},
      {"GlobalAveragePooling3D", "global_average_pooling3d"},
      {"SpatialDropout1D", "spatial_dropout1d"},
      {"SpatialDropout2D", "spatial_dropout2d"},
      {"SpatialDropout3D", "spatial_dropout3d"}};
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

std::string snake_case_prefix(const std::string& class_name) { return name_prefixes().at(class_name); }

std::unique_ptr<Layer> LayerFactory::make(const nlohmann::json& spec, const std::string& where) {
  const KerasObject object = read_keras_object(spec, where);
  const std::string& cls = object.class_name;
  if (supported_layer_classes().count(cls) == 0) {
    std::string known;
    for (const std::string& c : supported_layer_classes()) known += (known.empty() ? "" : ", ") + c;
    fail("{}: unknown layer class '{}' (hisvid implements {})", where, cls, known);
  }
  const nlohmann::json& config = object.config;
  std::string name;
  if (config.contains("name")) {
    if (!config["name"].is_string())
      fail("{} ({}): name must be a string, got {}", where, cls, brief(config["name"]));
    name = config["name"].get<std::string>();
    // A layer's name is its group in a model file (Keras 3 refuses '/' in names too).
    if (name.empty() || name == "." || name.find('/') != std::string::npos) {
      fail("{} ({}): the name '{}' cannot name a layer (not empty, not '.', no '/')", where, cls, name);
    }
    if (!used_.insert(name).second) fail("{} ({}): the name '{}' is used twice", where, cls, name);
  } else {
    name = unique_name(cls);
  }
  ConfigReader reader(config, fmt::format("{} ({} '{}')", where, cls, name), version_);
  std::unique_ptr<Layer> layer;
  const auto rank_of = [&cls] { return cls[cls.size() - 2] - '0'; };  // "...2D" -> 2
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
  } else if (cls.rfind("GlobalAveragePooling", 0) == 0) {
    layer = std::make_unique<GlobalAveragePooling>(name, reader, rank_of());
  } else if (cls.rfind("SpatialDropout", 0) == 0) {
    layer = std::make_unique<SpatialDropout>(name, reader, rank_of());
  } else {  // TimeDistributed
    const nlohmann::json inner_spec = reader.raw("layer");
    if (inner_spec.is_null()) reader.error("missing required argument 'layer'");
    // Checked before the inner layer is made, so that nested wrappers fail at the first level.
    const std::string inner_class = read_keras_object(inner_spec, reader.where() + " wrapping").class_name;
    if (inner_class == "TimeDistributed" || inner_class == "LSTM" || inner_class == "ConvLSTM2D" ||
        inner_class == "MaxPooling3D" || inner_class == "GlobalAveragePooling3D" ||
        inner_class == "SpatialDropout3D") {
      reader.error("TimeDistributed cannot wrap {}", inner_class);
    }
    std::unique_ptr<Layer> inner = make(inner_spec, reader.where() + " wrapping");
    layer = std::make_unique<TimeDistributed>(name, reader, std::move(inner));
  }
  reader.finish();
  return layer;
}

}  // namespace hisvid::layers
