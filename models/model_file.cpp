#include "models/model_file.h"

#include <map>

#include "engine/autograd.h"
#include "engine/error.h"

namespace hisvid::models {

namespace {

constexpr int kFormatVersion = 1;

// "lstm/lstm_cell/kernel:0" -> "lstm/lstm_cell/kernel"
std::string strip_index(const std::string& weight_name) {
  const size_t colon = weight_name.rfind(':');
  return colon == std::string::npos ? weight_name : weight_name.substr(0, colon);
}

// Keras's optimizer_config for the optimizers hisvid has.
nlohmann::json keras_optimizer_config(const Optimizer& opt) {
  const std::map<std::string, double> h = opt.hyper_parameters();
  nlohmann::json config = {{"name", opt.name()}, {"learning_rate", h.at("learning_rate")}, {"decay", 0.0}};
  if (opt.name() == "Adam") {
    config["beta_1"] = h.at("beta_1");
    config["beta_2"] = h.at("beta_2");
    config["epsilon"] = h.at("epsilon");
    config["amsgrad"] = false;
  } else if (opt.name() == "RMSprop") {
    config["rho"] = h.at("rho");
    config["momentum"] = 0.0;
    config["epsilon"] = h.at("epsilon");
    config["centered"] = false;
  } else {
    config["momentum"] = 0.0;
    config["nesterov"] = false;
  }
  return {{"class_name", opt.name()}, {"config", config}};
}

// An optimizer from a Keras training_config's optimizer_config, or null when it uses options
// hisvid does not implement (then training resumes with a fresh optimizer).
std::unique_ptr<Optimizer> optimizer_from_keras(const nlohmann::json& optimizer_config) {
  if (!optimizer_config.is_object() || !optimizer_config.contains("class_name")) return nullptr;
  const std::string name = optimizer_config["class_name"].get<std::string>();
  const nlohmann::json config = optimizer_config.value("config", nlohmann::json::object());
  auto is = [&](const char* key, const nlohmann::json& value) { return !config.contains(key) || config[key] == value; };
  if (!is("decay", 0.0) || !is("amsgrad", false) || !is("momentum", 0.0) || !is("centered", false) ||
      !is("nesterov", false)) {
    return nullptr;
  }
  std::map<std::string, double> hyper;
  for (const char* key : {"learning_rate", "beta_1", "beta_2", "epsilon", "rho"}) {
    if (config.contains(key) && config[key].is_number()) hyper[key] = config[key].get<double>();
  }
  if (name != "Adam" && name != "RMSprop" && name != "SGD") return nullptr;
  if (name == "SGD") hyper = {{"learning_rate", hyper.count("learning_rate") ? hyper["learning_rate"] : 0.01}};
  return make_optimizer(name, hyper);
}

// The file weight name of every trainable model weight (model order), filled by load_weights.
std::vector<std::string> load_weights_mapped(Sequential& model, const io::KerasModelFile& file,
                                             const std::string& path) {
  std::vector<layers::Layer*> model_layers;
  for (layers::Layer* layer : model.layers()) {
    if (!layer->weights().empty()) model_layers.push_back(layer);
  }
  std::vector<const io::LayerWeights*> file_layers;
  for (const io::LayerWeights& lw : file.layers) {
    if (!lw.weights.empty()) file_layers.push_back(&lw);
  }
  if (model_layers.size() != file_layers.size()) {
    fail("{}: the file has {} layers with weights, the model '{}' has {}", path, file_layers.size(), model.name(),
         model_layers.size());
  }
  std::vector<std::string> trainable_names;
  NoGradGuard no_grad;
  for (size_t i = 0; i < model_layers.size(); ++i) {
    layers::Layer& layer = *model_layers[i];
    const io::LayerWeights& source = *file_layers[i];
    std::vector<layers::Weight>& weights = layer.weights();
    if (weights.size() != source.weights.size()) {
      fail("{}: layer '{}' in the file has {} weights, the model's layer '{}' ({}) has {}", path, source.layer_name,
           source.weights.size(), layer.name(), layer.class_name(), weights.size());
    }
    for (size_t w = 0; w < weights.size(); ++w) {
      const io::NamedTensor& src = source.weights[w];
      if (src.value.shape() != weights[w].value.shape()) {
        fail("{}: weight '{}' of layer '{}' has shape {}, the model's layer '{}' ({}) expects {} for its {}", path,
             src.name, source.layer_name, src.value.shape().str(), layer.name(), layer.class_name(),
             weights[w].value.shape().str(), weights[w].name);
      }
      Tensor value = src.value.to(weights[w].value.dtype()).to(weights[w].value.device());
      weights[w].value.copy_from(value);
      if (weights[w].trainable) trainable_names.push_back(src.name);
    }
  }
  return trainable_names;
}

}  // namespace

void load_weights(Sequential& model, const io::KerasModelFile& file, const std::string& path) {
  load_weights_mapped(model, file, path);
}

void save_model(const std::string& path, const Sequential& model, const std::vector<std::string>& class_names,
                const Optimizer* optimizer, const nlohmann::json& training_state, const io::WriteOptions& options) {
  if (!model.built()) fail("save_model {}: model '{}' is not built", path, model.name());
  io::KerasModelFile file;
  file.model_config = model.to_json().dump();

  std::vector<std::string> trainable_paths;  // "<scope>/<weight>" of each trainable weight
  for (const layers::Layer* layer : model.layers()) {
    io::LayerWeights lw;
    lw.layer_name = layer->name();
    for (const layers::Weight& w : layer->weights()) {
      const std::string path_in_file = layer->weight_scope() + "/" + w.name;
      lw.weights.push_back({path_in_file + ":0", w.value.to(Device::cpu()).to(DType::Float32)});
      if (w.trainable) trainable_paths.push_back(path_in_file);
    }
    file.layers.push_back(std::move(lw));
  }

  nlohmann::json meta = {{"format", kFormatVersion}, {"class_names", class_names}, {"training", training_state}};
  meta["input_shape"] = model.input_shape().vec();
  if (optimizer != nullptr) {
    nlohmann::json training_config = {{"loss", "categorical_crossentropy"},
                                      {"metrics", {{{{"class_name", "MeanMetricWrapper"},
                                                     {"config", {{"name", "accuracy"}, {"dtype", "float32"},
                                                                 {"fn", "categorical_accuracy"}}}}}}},
                                      {"weighted_metrics", nullptr},
                                      {"loss_weights", nullptr},
                                      {"optimizer_config", keras_optimizer_config(*optimizer)}};
    file.training_config = training_config.dump();
    meta["optimizer"] = {{"name", optimizer->name()},
                         {"hyper_parameters", optimizer->hyper_parameters()},
                         {"iterations", optimizer->iterations()}};
    const std::string prefix = optimizer->name() + "/";
    file.optimizer_weights.push_back(
        {prefix + "iter:0", Tensor::scalar(static_cast<double>(optimizer->iterations()))});
    const auto& slots = optimizer->slots();
    if (!slots.empty()) {
      if (slots.size() != trainable_paths.size()) {
        fail("save_model {}: the optimizer holds slots for {} weights, the model has {} trainable weights", path,
             slots.size(), trainable_paths.size());
      }
      const std::vector<std::string> slot_names = optimizer->slot_names();
      for (size_t i = 0; i < slots.size(); ++i) {
        for (size_t s = 0; s < slot_names.size(); ++s) {
          file.optimizer_weights.push_back({prefix + trainable_paths[i] + "/" + slot_names[s] + ":0",
                                            slots[i][s].to(Device::cpu()).to(DType::Float32)});
        }
      }
    }
  }
  file.hisvid = meta.dump();
  io::write_keras_model(path, file, options);
}

LoadedModel load_model(const std::string& path) {
  const io::KerasModelFile file = io::read_keras_model(path);
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(file.model_config);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: model_config is not valid JSON: {}", path, e.what());
  }
  LoadedModel loaded{Sequential::from_json(config, path), ModelExtras{}, file.keras_version};
  Sequential& model = loaded.model;
  nlohmann::json meta;
  if (!file.hisvid.empty()) {
    try {
      meta = nlohmann::json::parse(file.hisvid);
    } catch (const nlohmann::json::parse_error& e) {
      fail("{}: the hisvid attribute is not valid JSON: {}", path, e.what());
    }
  }
  if (!model.has_input_shape() && meta.contains("input_shape")) {
    model.set_input_shape(Shape(meta["input_shape"].get<std::vector<int64_t>>()));
  }
  model.build(0);
  const std::vector<std::string> trainable_names = load_weights_mapped(model, file, path);

  ModelExtras& extras = loaded.extras;
  if (meta.contains("class_names")) extras.class_names = meta["class_names"].get<std::vector<std::string>>();
  if (meta.contains("training")) extras.training_state = meta["training"];

  // The optimizer: hisvid's own record first (it knows the RMSprop epsilon form), else Keras's.
  if (meta.contains("optimizer")) {
    const nlohmann::json& o = meta["optimizer"];
    extras.optimizer = make_optimizer(o["name"].get<std::string>(),
                                      o["hyper_parameters"].get<std::map<std::string, double>>());
  } else if (!file.training_config.empty()) {
    const nlohmann::json training_config = nlohmann::json::parse(file.training_config, nullptr, false);
    if (!training_config.is_discarded() && training_config.contains("optimizer_config")) {
      extras.optimizer = optimizer_from_keras(training_config["optimizer_config"]);
    }
  }
  if (extras.optimizer) {
    std::map<std::string, Tensor> by_name;
    for (const io::NamedTensor& t : file.optimizer_weights) by_name[t.name] = t.value;
    const std::string prefix = extras.optimizer->name() + "/";
    if (by_name.count(prefix + "iter:0")) {
      extras.optimizer->set_iterations(static_cast<int64_t>(by_name[prefix + "iter:0"].item()));
    }
    std::vector<std::vector<Tensor>> slots;
    size_t found = 0, expected = 0;
    for (size_t i = 0; i < trainable_names.size(); ++i) {
      std::vector<Tensor> param_slots;
      for (const std::string& slot : extras.optimizer->slot_names()) {
        ++expected;
        const auto it = by_name.find(prefix + strip_index(trainable_names[i]) + "/" + slot + ":0");
        if (it == by_name.end()) continue;
        ++found;
        param_slots.push_back(it->second);
      }
      slots.push_back(std::move(param_slots));
    }
    if (found > 0 && found != expected) {
      fail("{}: the optimizer state holds {} of the {} slot tensors of {} ({})", path, found, expected,
           extras.optimizer->name(), "a partial optimizer state cannot be resumed");
    }
    if (found > 0) extras.optimizer->set_slots(std::move(slots));
  }
  return loaded;
}

}  // namespace hisvid::models
