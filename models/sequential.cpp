#include "models/sequential.h"

#include "engine/error.h"
#include "engine/random.h"
#include "layers/registry.h"

namespace hisvid::models {

namespace {

// "(None, 20, 64, 64, 3)"
std::string batch_shape_str(const Shape& shape) {
  std::string s = "(None";
  for (int i = 0; i < shape.rank(); ++i) s += ", " + std::to_string(shape[i]);
  return s + ")";
}

// batch_input_shape [null, 20, 64, 64, 3] -> (20, 64, 64, 3).
Shape read_batch_input_shape(const nlohmann::json& value, const std::string& where) {
  if (!value.is_array() || value.size() < 2 || !value[0].is_null()) {
    fail("{}: batch_input_shape must be [null, d1, ...], got {}", where, value.dump());
  }
  std::vector<int64_t> dims;
  for (size_t i = 1; i < value.size(); ++i) {
    if (!value[i].is_number_integer() || value[i].get<int64_t>() < 1) {
      fail("{}: batch_input_shape dimensions must be positive integers, got {}", where, value.dump());
    }
    dims.push_back(value[i].get<int64_t>());
  }
  if (dims.size() >= static_cast<size_t>(Shape::kMaxRank)) {
    fail("{}: batch_input_shape {} has more dimensions than hisvid supports", where, value.dump());
  }
  return Shape(dims);
}

}  // namespace

std::string with_commas(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

Sequential Sequential::from_json(const nlohmann::json& spec, const std::string& source) {
  Sequential model;
  const nlohmann::json* layer_list = nullptr;
  if (spec.is_array()) {
    layer_list = &spec;
  } else if (spec.is_object() && spec.contains("class_name")) {
    if (spec["class_name"] != "Sequential") {
      fail("{}: only Sequential models are supported, got class_name {}", source, spec["class_name"].dump());
    }
    if (!spec.contains("config") || !spec["config"].is_object() || !spec["config"].contains("layers")) {
      fail("{}: a Sequential spec needs config.layers", source);
    }
    const nlohmann::json& config = spec["config"];
    if (config.contains("name") && config["name"].is_string()) model.name_ = config["name"].get<std::string>();
    layer_list = &config["layers"];
  } else if (spec.is_object() && spec.contains("layers")) {
    if (spec.contains("name") && spec["name"].is_string()) model.name_ = spec["name"].get<std::string>();
    layer_list = &spec["layers"];
  } else {
    fail("{}: expected a Keras Sequential spec (an object with class_name/config or layers, or a list of layers)",
         source);
  }
  if (!layer_list->is_array()) fail("{}: layers must be a list", source);

  layers::LayerFactory factory;
  int position = 0;
  for (const nlohmann::json& entry : *layer_list) {
    ++position;
    const std::string where = fmt::format("{}: layer {}", source, position);
    if (entry.is_object() && entry.value("class_name", "") == "InputLayer") {
      if (position != 1) fail("{} (InputLayer): an InputLayer must come first", where);
      const nlohmann::json config = entry.value("config", nlohmann::json::object());
      for (const auto& item : config.items()) {
        const std::string& key = item.key();
        if (key != "batch_input_shape" && key != "dtype" && key != "sparse" && key != "ragged" && key != "name") {
          fail("{} (InputLayer): unknown argument '{}'", where, key);
        }
      }
      if (!config.contains("batch_input_shape")) fail("{} (InputLayer): missing batch_input_shape", where);
      model.input_shape_ = read_batch_input_shape(config["batch_input_shape"], where);
      continue;
    }
    if (entry.is_object() && entry.contains("config") && entry["config"].is_object() &&
        entry["config"].contains("batch_input_shape") && !model.has_input_shape()) {
      model.input_shape_ = read_batch_input_shape(entry["config"]["batch_input_shape"], where);
    }
    model.layers_.push_back(factory.make(entry, where));
  }
  if (model.layers_.empty()) fail("{}: the model has no layers", source);
  return model;
}

nlohmann::json Sequential::to_json() const {
  nlohmann::json layer_list = nlohmann::json::array();
  if (has_input_shape()) {
    nlohmann::json shape = nlohmann::json::array({nullptr});
    for (int i = 0; i < input_shape_.rank(); ++i) shape.push_back(input_shape_[i]);
    layer_list.push_back({{"class_name", "InputLayer"},
                          {"config", {{"batch_input_shape", shape}, {"dtype", "float32"}, {"sparse", false},
                                      {"ragged", false}, {"name", name_ + "_input"}}}});
  }
  for (const auto& layer : layers_) {
    layer_list.push_back({{"class_name", layer->class_name()}, {"config", layer->config()}});
  }
  return {{"class_name", "Sequential"}, {"config", {{"name", name_}, {"layers", layer_list}}}};
}

void Sequential::set_input_shape(const Shape& shape) {
  if (built_) fail("model '{}': cannot change the input shape after build", name_);
  input_shape_ = shape;
}

namespace {
layers::Dense* final_dense(const std::vector<std::unique_ptr<layers::Layer>>& layers) {
  return layers.empty() ? nullptr : dynamic_cast<layers::Dense*>(layers.back().get());
}
}  // namespace

void Sequential::set_num_classes(int classes) {
  layers::Dense* dense = final_dense(layers_);
  if (dense == nullptr) fail("model '{}': the number of classes is set on a final Dense layer, which it lacks", name_);
  if (built_) fail("model '{}': cannot change the number of classes after build", name_);
  if (classes < 2) fail("model '{}': needs at least 2 classes, got {}", name_, classes);
  dense->set_units(classes);
}

int Sequential::num_classes() const {
  const layers::Dense* dense = final_dense(layers_);
  if (dense == nullptr) fail("model '{}': has no final Dense layer to count classes from", name_);
  return dense->units();
}

void Sequential::build(uint64_t seed) {
  if (!has_input_shape()) {
    fail("model '{}': no input shape (give an InputLayer / batch_input_shape in the spec)", name_);
  }
  Generator init(seed);
  Shape shape = input_shape_;
  for (const auto& layer : layers_) shape = layer->build(shape, init);
  built_ = true;
  if (device_.is_cuda()) to(device_);
}

Shape Sequential::output_shape() const {
  if (!built_) fail("model '{}': output shape asked before build", name_);
  return layers_.back()->output_shape();
}

Tensor Sequential::forward(const Tensor& x, const layers::ForwardContext& ctx, Output output) {
  if (!built_) fail("model '{}': forward before build", name_);
  bool fits = x.rank() == input_shape_.rank() + 1;
  for (int i = 0; fits && i < input_shape_.rank(); ++i) fits = x.dim(i + 1) == input_shape_[i];
  if (!fits) {
    fail("model '{}': input {} does not match the model's input {}", name_, x.shape().str(),
         batch_shape_str(input_shape_));
  }
  if (output == Output::Logits && !layers_.back()->has_softmax()) {
    fail("model '{}': the last layer '{}' has no softmax to take logits from (training needs a final "
         "Dense(..., activation='softmax'))",
         name_, layers_.back()->name());
  }
  Tensor y = x;
  for (size_t i = 0; i + 1 < layers_.size(); ++i) y = layers_[i]->forward(y, ctx);
  return output == Output::Logits ? layers_.back()->forward_logits(y, ctx) : layers_.back()->forward(y, ctx);
}

std::vector<layers::Layer*> Sequential::layers() const {
  std::vector<layers::Layer*> out;
  for (const auto& layer : layers_) out.push_back(layer.get());
  return out;
}

std::vector<Tensor> Sequential::trainable_weights() const {
  std::vector<Tensor> out;
  for (const auto& layer : layers_) {
    for (const layers::Weight& w : static_cast<const layers::Layer&>(*layer).weights()) {
      if (w.trainable) out.push_back(w.value);
    }
  }
  return out;
}

ParamCounts Sequential::count_params() const {
  ParamCounts counts;
  for (const auto& layer : layers_) {
    for (const layers::Weight& w : static_cast<const layers::Layer&>(*layer).weights()) {
      counts.total += w.value.numel();
      (w.trainable ? counts.trainable : counts.non_trainable) += w.value.numel();
    }
  }
  return counts;
}

std::string Sequential::summary() const {
  if (!built_) fail("model '{}': summary before build", name_);
  const std::string rule(84, '_'), double_rule(84, '=');
  std::string out = fmt::format("Model: \"{}\"\n{}\n {:<42}{:<28}{:>12}\n{}\n", name_, rule, "Layer (type)",
                                "Output Shape", "Param #", double_rule);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const layers::Layer& layer = *layers_[i];
    int64_t params = 0;
    for (const layers::Weight& w : layer.weights()) params += w.value.numel();
    out += fmt::format(" {:<42}{:<28}{:>12}\n", fmt::format("{} ({})", layer.name(), layer.class_name()),
                       batch_shape_str(layer.output_shape()), with_commas(params));
    out += (i + 1 < layers_.size() ? "\n" : "");
  }
  const ParamCounts c = count_params();
  out += fmt::format("{}\nTotal params: {}\nTrainable params: {}\nNon-trainable params: {}\n{}\n", double_rule,
                     with_commas(c.total), with_commas(c.trainable), with_commas(c.non_trainable), rule);
  return out;
}

void Sequential::to(Device device) {
  device_ = device;
  for (const auto& layer : layers_) layer->to(device);
}

void Sequential::to(DType dtype) {
  for (const auto& layer : layers_) layer->to(dtype);
}

}  // namespace hisvid::models
