#include "models/keras_format.h"

#include <fmt/format.h>

#include <ctime>
#include <map>

#include "engine/error.h"
#include "layers/registry.h"
#include "models/model_file.h"

namespace hisvid::models {

namespace {

// Keras 2.13-2.15 (tf.keras) spell a class's snake_case name with their own rule, which differs
// from Keras 3's for ConvLSTM2D only among the classes hisvid implements.
std::string tf_keras_snake_case(const std::string& class_name) {
  return class_name == "ConvLSTM2D" ? "conv_lst_m2d" : layers::snake_case_prefix(class_name);
}

bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

// [null, 20, 64, 64, 3] of a shape without the batch axis.
nlohmann::json batch_shape(const Shape& shape) {
  nlohmann::json dims = nlohmann::json::array({nullptr});
  for (int i = 0; i < shape.rank(); ++i) dims.push_back(shape[i]);
  return dims;
}

// A serialized object in Keras 3's form.
nlohmann::json keras3_object(const std::string& module, const std::string& class_name,
                             nlohmann::json config) {
  return {{"module", module},
          {"class_name", class_name},
          {"config", std::move(config)},
          {"registered_name", nullptr}};
}

// A layer as Keras 3 serializes it: hisvid's (Keras 2 style) config with the keys Keras 3 has for
// that class, nested initializers and regularizers in Keras 3's form, and its build_config.
nlohmann::json keras3_layer(const layers::Layer& layer) {
  const std::string cls = layer.class_name();
  nlohmann::json c = layer.config();
  for (auto& item : c.items()) {
    nlohmann::json& v = item.value();
    if (!v.is_object() || !v.contains("class_name") || item.key() == "layer") continue;
    const bool regularizer = item.key().find("regularizer") != std::string::npos;
    v = keras3_object(regularizer ? "keras.regularizers" : "keras.initializers",
                      v["class_name"].get<std::string>(), v.value("config", nlohmann::json::object()));
  }
  if (cls == "LSTM" || cls == "ConvLSTM2D") {
    c.erase("time_major");
    c.erase("implementation");
    c["zero_output_for_mask"] = false;
    c["seed"] = nullptr;
  }
  if (cls == "BatchNormalization") {
    c["synchronized"] = false;
    c.erase("fused");  // Keras 2 only: Keras 3's layer refuses the argument
  }
  // Keras 3's Dense writes no activity_regularizer key unless it has one.
  if (cls == "Dense" && c.contains("activity_regularizer") && c["activity_regularizer"].is_null()) {
    c.erase("activity_regularizer");
  }
  if (starts_with(cls, "SpatialDropout")) c.erase("noise_shape");
  if (const auto* wrapper = dynamic_cast<const layers::TimeDistributed*>(&layer))
    c["layer"] = keras3_layer(wrapper->inner());
  nlohmann::json object = keras3_object("keras.layers", cls, std::move(c));
  object["build_config"] = {{"input_shape", batch_shape(layer.input_shape())}};
  return object;
}

// What a Keras 3 file of a model with Keras 2 semantics would silently change.
void require_same_meaning_in_keras3(const Sequential& model, const std::string& path) {
  for (const layers::Layer* layer : model.layers()) {
    const layers::Layer* inner = layer;
    if (const auto* wrapper = dynamic_cast<const layers::TimeDistributed*>(layer)) inner = &wrapper->inner();
    for (const layers::Layer* l : {layer, inner}) {
      const nlohmann::json c = l->config();
      for (const char* key : {"activation", "recurrent_activation"}) {
        if (c.contains(key) && c[key] == "hard_sigmoid") {
          fail(
              "{}: layer '{}' uses Keras 2's hard_sigmoid (clip(0.2x + 0.5, 0, 1)); a .keras file is read by "
              "Keras 3, whose hard_sigmoid is clip(x/6 + 0.5, 0, 1): save this model as .h5",
              path, l->name());
        }
      }
      if (c.contains("activity_regularizer") && !c["activity_regularizer"].is_null()) {
        fail(
            "{}: layer '{}' has an activity regularizer, which Keras 3 applies differently from Keras 2 (no "
            "division by the batch size): save this model as .h5",
            path, l->name());
      }
    }
  }
}

std::string now_text() {
  const std::time_t t = std::time(nullptr);
  std::tm local{};
  localtime_r(&t, &local);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d@%H:%M:%S", &local);
  return text;
}

}  // namespace

std::vector<io::LayerWeights> keras_layer_weights(const Sequential& model, const io::KerasModelFile& file,
                                                  const std::string& path) {
  bool keras3_groups = false;
  for (const auto& [name, tensor] : file.layer_vars)
    keras3_groups = keras3_groups || starts_with(name, "layers/");
  const std::string top = keras3_groups ? "layers/" : "_layer_checkpoint_dependencies/";
  std::map<std::string, int> seen;  // per snake_case name: how many layers took it so far
  std::map<std::string, bool> claimed;
  for (const auto& [name, tensor] : file.layer_vars) claimed[name] = false;
  std::vector<io::LayerWeights> out;
  for (const layers::Layer* layer : model.layers()) {
    const std::string snake = keras3_groups ? layers::snake_case_prefix(layer->class_name())
                                            : tf_keras_snake_case(layer->class_name());
    const int n = seen[snake]++;
    const std::string group = top + (n == 0 ? snake : snake + "_" + std::to_string(n)) + "/";
    const std::string vars = group + layer->keras_state_path() + "vars/";
    io::LayerWeights lw{group.substr(0, group.size() - 1), {}};
    for (size_t i = 0; i < layer->weights().size(); ++i) {
      const std::string var = vars + std::to_string(i);
      const auto it = file.layer_vars.find(var);
      if (it == file.layer_vars.end()) {
        fail("{}: layer '{}' ({}) has {} weights, the file has no '{}' in model.weights.h5", path,
             layer->name(), layer->class_name(), layer->weights().size(), var);
      }
      claimed[var] = true;
      lw.weights.push_back({var, it->second});
    }
    out.push_back(std::move(lw));
  }
  for (const auto& [name, used] : claimed) {
    if (!used)
      fail("{}: model.weights.h5 holds '{}', which no layer of the model '{}' takes", path, name,
           model.name());
  }
  return out;
}

io::KerasArchive keras_archive(const Sequential& model, const Optimizer* optimizer,
                               const std::string& hisvid_meta, const std::string& path) {
  const bool keras3 = model.keras_version().keras3();
  if (!keras3) require_same_meaning_in_keras3(model, path);
  const std::string version = keras3 ? model.keras_version().str() : kKeras3WriteVersion;

  nlohmann::json layer_list = nlohmann::json::array();
  layer_list.push_back(keras3_object("keras.layers", "InputLayer",
                                     {{"batch_shape", batch_shape(model.input_shape())},
                                      {"dtype", "float32"},
                                      {"sparse", false},
                                      {"name", "input_layer"}}));
  io::KerasArchive archive;
  std::map<std::string, int> seen;
  for (const layers::Layer* layer : model.layers()) {
    layer_list.push_back(keras3_layer(*layer));
    const std::string snake = layers::snake_case_prefix(layer->class_name());
    const int n = seen[snake]++;
    const std::string group = "layers/" + (n == 0 ? snake : snake + "_" + std::to_string(n)) + "/";
    // Every saveable Keras visits gets a vars group: the layer, and its wrapped layer or cell.
    archive.empty_groups.push_back(group + "vars");
    if (!layer->keras_state_path().empty())
      archive.empty_groups.push_back(group + layer->keras_state_path() + "vars");
    for (size_t i = 0; i < layer->weights().size(); ++i) {
      archive.vars[group + layer->keras_state_path() + "vars/" + std::to_string(i)] =
          layer->weights()[i].value.to(Device::cpu()).to(DType::Float32);
    }
  }
  archive.empty_groups.push_back("vars");  // the model's own

  nlohmann::json config = keras3_object("keras", "Sequential",
                                        {{"name", model.name()},
                                         {"trainable", true},
                                         {"dtype", "float32"},
                                         {"layers", layer_list},
                                         {"build_input_shape", batch_shape(model.input_shape())}});
  config["build_config"] = {{"input_shape", batch_shape(model.input_shape())}};
  if (optimizer != nullptr) {
    config["compile_config"] = {{"optimizer", keras_optimizer_config(*optimizer, true)},
                                {"loss", keras_loss_config(model, true)},
                                {"loss_weights", nullptr},
                                {"metrics", {"accuracy"}},
                                {"weighted_metrics", nullptr},
                                {"run_eagerly", false},
                                {"steps_per_execution", 1},
                                {"jit_compile", false}};
    archive.empty_groups.push_back("optimizer/vars");
    archive.int64_scalars.push_back({"optimizer/vars/0", optimizer->iterations()});
    archive.vars["optimizer/vars/1"] = Tensor::scalar(optimizer->learning_rate()).to(DType::Float32);
    int index = 2;
    for (const std::vector<Tensor>& slots : optimizer->slots()) {
      for (const Tensor& slot : slots) {
        archive.vars["optimizer/vars/" + std::to_string(index++)] = slot.to(Device::cpu()).to(DType::Float32);
      }
    }
  }
  archive.config = config.dump();
  nlohmann::json metadata = {{"keras_version", version}, {"date_saved", now_text()}};
  if (!hisvid_meta.empty()) metadata["hisvid"] = hisvid_meta;
  archive.metadata = metadata.dump();
  return archive;
}

}  // namespace hisvid::models
