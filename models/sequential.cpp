#include "models/sequential.h"

#include <cstdlib>
#include <limits>

#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "layers/registry.h"

namespace hisvid::models {

using layers::brief;

namespace {

// "(None, 20, 64, 64, 3)"
std::string batch_shape_str(const Shape& shape) {
  std::string s = "(None";
  for (int i = 0; i < shape.rank(); ++i) s += ", " + std::to_string(shape[i]);
  return s + ")";
}

// batch_input_shape / batch_shape [null, 20, 64, 64, 3] -> (20, 64, 64, 3); with_batch false
// reads an input_shape without the batch axis ([20, 64, 64, 3]).
Shape read_input_shape(const nlohmann::json& value, const std::string& where, const char* key,
                       bool with_batch = true) {
  const size_t first = with_batch ? 1 : 0;
  if (!value.is_array() || value.size() < first + 1 ||
      (with_batch && !value[0].is_null() && !value[0].is_number_integer())) {
    fail("{}: {} must be {}, got {}", where, key, with_batch ? "[null, d1, ...]" : "[d1, ...]", brief(value));
  }
  if (value.size() - first >= static_cast<size_t>(Shape::kMaxRank)) {
    fail("{}: {} {} has more dimensions than hisvid supports", where, key, brief(value));
  }
  std::vector<int64_t> dims;
  for (size_t i = first; i < value.size(); ++i) {
    // A dimension is at most 2^31 - 1 here: shapes multiply, and no clip axis is near that.
    if (!value[i].is_number_integer() || value[i].get<int64_t>() < 1 ||
        value[i].get<int64_t>() > std::numeric_limits<int>::max()) {
      fail("{}: {} dimensions must be positive integers (a fixed input shape; null is not supported), got {}",
           where, key, brief(value));
    }
    dims.push_back(value[i].get<int64_t>());
  }
  return Shape(dims);
}

// The input shape a layer config declares, if any: Keras 2's batch_input_shape, Keras 3's
// batch_shape, or the input_shape argument of a hand-written spec.
bool declared_input_shape(const nlohmann::json& config, const std::string& where, Shape* shape) {
  if (!config.is_object()) return false;
  if (config.contains("batch_input_shape") && !config["batch_input_shape"].is_null()) {
    *shape = read_input_shape(config["batch_input_shape"], where, "batch_input_shape");
    return true;
  }
  if (config.contains("batch_shape") && !config["batch_shape"].is_null()) {
    *shape = read_input_shape(config["batch_shape"], where, "batch_shape");
    return true;
  }
  if (config.contains("input_shape") && !config["input_shape"].is_null()) {
    *shape = read_input_shape(config["input_shape"], where, "input_shape", false);
    return true;
  }
  return false;
}

// Keras's InputLayer: the input shape and metadata; sparse, ragged and optional inputs are not
// implemented.
Shape read_input_layer(const nlohmann::json& config, const std::string& where,
                       const layers::KerasVersion& version) {
  layers::ConfigReader reader(config, where, version);
  reader.ignore("name");
  reader.ignore("batch_input_shape");
  reader.ignore("batch_shape");
  reader.ignore("input_shape");
  reader.ignore("batch_size");
  // Keras 3's InputLayer(shape=...) as written by hand: the shape without the batch axis.
  Shape shape;
  const nlohmann::json given = reader.raw("shape");
  const bool by_shape = !given.is_null();
  if (by_shape) shape = read_input_shape(given, where, "shape", false);
  layers::require_float32_dtype(reader.raw("dtype"), where);
  for (const char* key : {"sparse", "ragged", "optional"}) reader.require_default(key, {false, nullptr});
  reader.ignore("input_tensor");  // only ever null in a saved config
  reader.finish();
  if (!declared_input_shape(config, where, &shape) && !by_shape)
    fail("{}: no input shape (batch_input_shape, batch_shape or shape)", where);
  return shape;
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

Sequential Sequential::from_json(const nlohmann::json& spec, const std::string& source,
                                 const layers::KerasVersion& version) {
  Sequential model;
  model.source_ = source;
  model.version_ = version;
  const nlohmann::json* layer_list = nullptr;
  nlohmann::json config;
  if (spec.is_array()) {
    layer_list = &spec;
  } else if (spec.is_object() && spec.contains("class_name")) {
    // model.to_json() puts keras_version and backend beside class_name and config.
    nlohmann::json object = spec;
    if (object.contains("keras_version")) {
      if (!object["keras_version"].is_string()) fail("{}: keras_version must be a string", source);
      model.version_ = layers::KerasVersion::parse(object["keras_version"].get<std::string>(), source);
      object.erase("keras_version");
    }
    object.erase("backend");
    // Keras 2.0 and 2.1 wrote a Sequential's config as the bare list of its layers (2.2 on:
    // an object with name and layers).
    if (object["class_name"] == "Sequential" && object.contains("config") && object["config"].is_array()) {
      object["config"] = nlohmann::json{{"layers", object["config"]}};
    }
    const layers::KerasObject wrapper = layers::read_keras_object(object, source);
    if (wrapper.class_name != "Sequential") {
      fail("{}: only Sequential models are supported, got class_name '{}'", source, wrapper.class_name);
    }
    config = wrapper.config;
    if (!config.contains("layers")) fail("{}: a Sequential spec needs config.layers", source);
  } else if (spec.is_object() && spec.contains("layers")) {
    config = spec;
  } else {
    fail(
        "{}: expected a Keras Sequential spec (an object with class_name/config or layers, or a list of "
        "layers)",
        source);
  }
  if (!config.is_null()) {
    layers::ConfigReader reader(config, source + " (Sequential)", model.version_);
    model.name_ = reader.string("name", model.name_);
    reader.require_default("trainable", {true});
    layers::require_float32_dtype(reader.raw("dtype"), source + " (Sequential)");
    const nlohmann::json build_shape = reader.raw("build_input_shape");
    if (!build_shape.is_null())
      model.input_shape_ = read_input_shape(build_shape, source, "build_input_shape");
    reader.ignore("layers");
    reader.finish();
    layer_list = &config["layers"];
  }
  if (!layer_list->is_array()) fail("{}: layers must be a list", source);

  layers::LayerFactory factory(model.version_);
  int position = 0;
  bool input_layer = false;  // its shape is the model's: Keras ignores a later batch_input_shape
  for (const nlohmann::json& entry : *layer_list) {
    ++position;
    const std::string where = fmt::format("{}: layer {}", source, position);
    if (entry.is_object() && entry.contains("class_name") && entry["class_name"] == "InputLayer") {
      if (position != 1) fail("{} (InputLayer): an InputLayer must come first", where);
      const layers::KerasObject input = layers::read_keras_object(entry, where);
      model.input_shape_ = read_input_layer(input.config, where + " (InputLayer)", model.version_);
      input_layer = true;
      continue;
    }
    Shape declared;
    if (entry.is_object() && entry.contains("config") &&
        declared_input_shape(entry["config"], where, &declared) && model.layers_.empty() && !input_layer) {
      model.input_shape_ = declared;
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
                          {"config",
                           {{"batch_input_shape", shape},
                            {"dtype", "float32"},
                            {"sparse", false},
                            {"ragged", false},
                            {"name", name_ + "_input"}}}});
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

Head Sequential::head() const {
  if (layers_.empty()) return Head::None;
  if (layers_.back()->has_softmax()) return Head::Softmax;
  if (layers_.back()->has_sigmoid()) return Head::Sigmoid;
  if (logits_head_) return final_dense(layers_)->units() == 1 ? Head::Sigmoid : Head::Softmax;
  return Head::None;
}

bool Sequential::read_linear_head_as_logits() {
  const layers::Dense* dense = final_dense(layers_);
  if (dense == nullptr || !dense->linear()) return false;
  logits_head_ = true;
  return true;
}

bool Sequential::binary() const {
  const layers::Dense* dense = final_dense(layers_);
  return dense != nullptr && head() == Head::Sigmoid && dense->units() == 1;
}

void Sequential::set_num_classes(int classes) {
  layers::Dense* dense = final_dense(layers_);
  if (dense == nullptr)
    fail("model '{}': the number of classes is set on a final Dense layer, which it lacks", name_);
  if (built_) fail("model '{}': cannot change the number of classes after build", name_);
  if (classes < 2) fail("model '{}': needs at least 2 classes, got {}", name_, classes);
  if (binary()) {
    if (classes != 2) {
      fail("model '{}' is a binary classifier (one sigmoid unit): it takes 2 classes, the data has {}", name_,
           classes);
    }
    return;
  }
  dense->set_units(classes);
}

int Sequential::num_classes() const {
  const layers::Dense* dense = final_dense(layers_);
  if (dense == nullptr) fail("model '{}': has no final Dense layer to count classes from", name_);
  return binary() ? 2 : dense->units();
}

void Sequential::build(uint64_t seed) {
  if (!has_input_shape()) {
    fail("model '{}': no input shape (give an InputLayer / batch_input_shape in the spec)", name_);
  }
  Generator init(seed);
  Shape shape = input_shape_;
  try {
    for (const auto& layer : layers_) shape = layer->build(shape, init);
  } catch (const Error& e) {  // a layer whose input does not fit it: which spec says so
    const std::string what = e.what();
    if (source_.empty() || what.rfind(source_, 0) == 0) throw;
    fail("{}: {}", source_, what);
  }
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
  layers::Layer& last = *layers_.back();
  if (output == Output::Logits && head() == Head::None) {
    fail(
        "model '{}': the last layer '{}' has no softmax or sigmoid to take logits from (training needs a "
        "final "
        "Dense(..., activation='softmax'), or Dense(1, activation='sigmoid') for two classes)",
        name_, last.name());
  }
  Tensor y = x;
  for (const Step& step : steps(x.device())) y = run_step(step, y, ctx);
  if (output == Output::Probabilities && !logits_head_) return last.apply(y, ctx);
  const Tensor logits = last.forward_logits(y, ctx);
  if (output == Output::Probabilities)
    return head() == Head::Softmax ? ops::softmax(logits) : ops::sigmoid(logits);
  if (ctx.losses != nullptr) {  // the activity regularizer sees the layer's output, not its logits
    last.add_activity_loss(logits_head_              ? logits
                           : head() == Head::Softmax ? ops::softmax(logits)
                                                     : ops::sigmoid(logits),
                           ctx);
  }
  return logits;
}

Sequential::Fusion Sequential::fusion_by_default() {
  static const Fusion fusion = [] {
    const char* v = std::getenv("HISVID_FUSE_CONV_POOL");
    const std::string value = v == nullptr ? "" : v;
    if (value.empty() || value == "1") return Fusion::Cpu;
    if (value == "all") return Fusion::Everywhere;
    if (value == "0") return Fusion::None;
    fail(
        "environment variable HISVID_FUSE_CONV_POOL='{}': expected 0 (layers one by one), 1 (fused on the "
        "CPU, the default) or all (fused on every device)",
        value);
  }();
  return fusion;
}

std::vector<Sequential::Step> Sequential::steps(Device device) const {
  std::vector<Step> out;
  const size_t body = layers_.empty() ? 0 : layers_.size() - 1;  // the last layer runs apart
  for (size_t i = 0; i < body; ++i) {
    Step step{i, 1, {}};
    const bool fuse = fusion_ == Fusion::Everywhere || (fusion_ == Fusion::Cpu && device.is_cpu());
    if (fuse && i + 1 < body) {
      step.pair = layers::conv_pool_pair(*layers_[i], *layers_[i + 1]);
      if (step.pair.conv != nullptr && i + 2 < body)
        step.pair = layers::fold_dropout(step.pair, *layers_[i + 2]);
      if (step.pair.conv != nullptr) step.count = static_cast<size_t>(step.pair.layers());
    }
    out.push_back(step);
    i += step.count - 1;
  }
  return out;
}

Tensor Sequential::run_step(const Step& step, const Tensor& x, const layers::ForwardContext& ctx) {
  return step.count > 1 ? layers::forward_conv_pool(step.pair, x, ctx) : layers_[step.first]->apply(x, ctx);
}

std::vector<Tensor> Sequential::weight_penalties() const {
  std::vector<Tensor> penalties;
  for (const auto& layer : layers_) {
    for (const layers::Weight& w : static_cast<const layers::Layer&>(*layer).weights()) {
      if (w.regularizer.active()) penalties.push_back(w.regularizer.penalty(w.value));
    }
  }
  return penalties;
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
  out +=
      fmt::format("{}\nTotal params: {}\nTrainable params: {}\nNon-trainable params: {}\n{}\n", double_rule,
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
