#include "models/model_file.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstddef>
#include <limits>
#include <map>

#include "engine/autograd.h"
#include "engine/error.h"
#include "models/keras_format.h"
#include "models/zoo.h"

namespace hisvid::models {

namespace {

constexpr int kFormatVersion = 1;

// "lstm/lstm_cell/kernel:0" -> "lstm/lstm_cell/kernel"
std::string strip_index(const std::string& weight_name) {
  const size_t colon = weight_name.rfind(':');
  return colon == std::string::npos ? weight_name : weight_name.substr(0, colon);
}

// The slot names of each optimizer in the layouts Keras writes, in hisvid's slot order.
struct SlotNames {
  std::vector<std::string> keras2_11;  // "Adam/m/<weight>:0"
  std::vector<std::string> keras3;     // "<path>_momentum"
};
SlotNames keras_slot_names(const Optimizer& opt) {
  if (opt.name() == "Adam") return {{"m", "v"}, {"momentum", "velocity"}};
  if (opt.name() == "RMSprop") return {{"velocity"}, {"velocity"}};
  return {};
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// slots[i][s] for parameter i from the slot tensors in file order: interleaved (each parameter's
// slots together, Keras <= 3.x's order) or grouped (every parameter's first slot, then every
// second...: newer Keras 3). The shapes tell them apart; when both fit, the shapes are all equal
// and interleaved is taken.
bool assign_by_order(const std::vector<Tensor>& ordered, const std::vector<Shape>& shapes, size_t n_slots,
                     std::vector<std::vector<Tensor>>* slots) {
  const size_t P = shapes.size();
  if (ordered.size() != P * n_slots) return false;
  for (const bool interleaved : {true, false}) {
    std::vector<std::vector<Tensor>> out(P);
    bool fits = true;
    for (size_t i = 0; i < P && fits; ++i) {
      for (size_t s = 0; s < n_slots && fits; ++s) {
        const Tensor& t = ordered[interleaved ? i * n_slots + s : s * P + i];
        fits = t.shape() == shapes[i];
        out[i].push_back(t);
      }
    }
    if (fits) {
      *slots = std::move(out);
      return true;
    }
  }
  return false;
}

// Restores iteration count and slots from the optimizer weights of a file in any Keras layout.
// Returns false, with the reason in *why, when the file's state does not fit the model.
bool restore_optimizer_state(Optimizer& opt, const std::vector<io::NamedTensor>& saved,
                             const std::vector<std::string>& trainable_names,
                             const std::vector<Shape>& shapes, std::string* why) {
  if (saved.empty()) return true;
  std::map<std::string, Tensor> by_name;
  for (const io::NamedTensor& t : saved) by_name[t.name] = t.value;
  const std::vector<std::string> slot_names = opt.slot_names();
  const size_t n_slots = slot_names.size();
  const std::string prefix = opt.name() + "/";
  std::vector<std::vector<Tensor>> slots;
  auto scalar = [&](const std::string& name, double* value) {
    const auto it = by_name.find(name);
    if (it == by_name.end() || it->second.numel() != 1) return false;
    *value = it->second.item();
    return true;
  };
  double iterations = 0.0;

  if (scalar(prefix + "iter:0", &iterations)) {
    // hisvid and Keras <= 2.10: "<Opt>/iter:0", "<Opt>/<weight>/<slot>:0".
    for (const std::string& name : trainable_names) {
      std::vector<Tensor> param_slots;
      for (const std::string& slot : slot_names) {
        const auto it = by_name.find(prefix + strip_index(name) + "/" + slot + ":0");
        if (it == by_name.end()) {
          *why = fmt::format("no slot '{}' for weight '{}'", slot, name);
          return false;
        }
        param_slots.push_back(it->second);
      }
      slots.push_back(std::move(param_slots));
    }
  } else if (scalar("iteration:0", &iterations)) {
    // Keras 2.11-2.15: "iteration:0", "<Opt>/<slot>/<weight>:0".
    const std::vector<std::string> names = keras_slot_names(opt).keras2_11;
    for (const std::string& name : trainable_names) {
      std::vector<Tensor> param_slots;
      for (const std::string& slot : names) {
        const auto it = by_name.find(prefix + slot + "/" + strip_index(name) + ":0");
        if (it == by_name.end()) {
          *why = fmt::format("no slot '{}' for weight '{}'", slot, name);
          return false;
        }
        param_slots.push_back(it->second);
      }
      slots.push_back(std::move(param_slots));
    }
  } else if (by_name.count("vars/0")) {
    // The .keras format: vars/0 the iteration count, vars/1 the learning rate, then the slots.
    scalar("vars/0", &iterations);
    std::vector<Tensor> ordered;
    for (size_t i = 2; by_name.count("vars/" + std::to_string(i)); ++i)
      ordered.push_back(by_name["vars/" + std::to_string(i)]);
    if (!assign_by_order(ordered, shapes, n_slots, &slots)) {
      *why = fmt::format("its {} slot variables do not match the {} trainable weights of the model",
                         ordered.size(), shapes.size());
      return false;
    }
  } else {
    // Keras 3's .h5: "[<opt>/]iteration", "[<opt>/]learning_rate", "<path>_<slot>" in order.
    bool found = false;
    for (const io::NamedTensor& t : saved) {
      if (t.name == "iteration" || ends_with(t.name, "/iteration")) found = scalar(t.name, &iterations);
    }
    if (!found) {
      *why = "its layout is not one Keras writes";
      return false;
    }
    const std::vector<std::string> names = keras_slot_names(opt).keras3;
    std::vector<std::vector<Tensor>> per_slot(names.size());
    for (const io::NamedTensor& t : saved) {
      for (size_t s = 0; s < names.size(); ++s) {
        if (ends_with(t.name, "_" + names[s])) per_slot[s].push_back(t.value);
      }
    }
    std::vector<Tensor> ordered;  // grouped: every parameter's first slot, then the second
    for (const std::vector<Tensor>& list : per_slot) ordered.insert(ordered.end(), list.begin(), list.end());
    std::vector<std::vector<Tensor>> grouped(shapes.size());
    bool fits = ordered.size() == shapes.size() * names.size();
    for (size_t s = 0; fits && s < names.size(); ++s) {
      for (size_t i = 0; fits && i < shapes.size(); ++i) {
        const Tensor& t = per_slot[s][i];
        fits = t.shape() == shapes[i];
        grouped[i].push_back(t);
      }
    }
    if (!fits) {
      *why =
          fmt::format("its slot variables do not match the {} trainable weights of the model", shapes.size());
      return false;
    }
    slots = std::move(grouped);
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    for (const Tensor& t : slots[i]) {
      if (t.shape() != shapes[i]) {
        *why = fmt::format("the slot of weight '{}' has shape {}, the weight {}", trainable_names[i],
                           t.shape().str(), shapes[i].str());
        return false;
      }
    }
  }
  if (!(iterations >= 0.0 && iterations < 9.0e15)) {
    *why = fmt::format("its iteration count {} is not a step number", iterations);
    return false;
  }
  opt.set_iterations(static_cast<int64_t>(iterations));
  if (n_slots > 0) opt.set_slots(std::move(slots));
  return true;
}

// The file weight name of every trainable model weight (model order), filled by load_weights.
std::vector<std::string> load_weights_mapped(Sequential& model, const io::KerasModelFile& file,
                                             const std::string& path) {
  std::vector<layers::Layer*> model_layers;
  for (layers::Layer* layer : model.layers()) {
    if (!layer->weights().empty()) model_layers.push_back(layer);
  }
  // A .keras file addresses weights by layer class and position: gathered here in model order.
  const std::vector<io::LayerWeights> archive_layers =
      file.format == "keras" ? keras_layer_weights(model, file, path) : std::vector<io::LayerWeights>{};
  std::vector<const io::LayerWeights*> file_layers;
  for (const io::LayerWeights& lw : file.format == "keras" ? archive_layers : file.layers) {
    if (!lw.weights.empty()) file_layers.push_back(&lw);
  }
  if (model_layers.size() != file_layers.size()) {
    fail("{}: the file has {} layers with weights, the model '{}' has {}", path, file_layers.size(),
         model.name(), model_layers.size());
  }
  std::vector<std::string> trainable_names;
  NoGradGuard no_grad;
  for (size_t i = 0; i < model_layers.size(); ++i) {
    layers::Layer& layer = *model_layers[i];
    const io::LayerWeights& source = *file_layers[i];
    std::vector<layers::Weight>& weights = layer.weights();
    if (weights.size() != source.weights.size()) {
      fail("{}: layer '{}' in the file has {} weights, the model's layer '{}' ({}) has {}", path,
           source.layer_name, source.weights.size(), layer.name(), layer.class_name(), weights.size());
    }
    for (size_t w = 0; w < weights.size(); ++w) {
      const io::NamedTensor& src = source.weights[w];
      if (src.value.shape() != weights[w].value.shape()) {
        fail("{}: weight '{}' of layer '{}' has shape {}, the model's layer '{}' ({}) expects {} for its {}",
             path, src.name, source.layer_name, src.value.shape().str(), layer.name(), layer.class_name(),
             weights[w].value.shape().str(), weights[w].name);
      }
      Tensor value = src.value.to(weights[w].value.dtype()).to(weights[w].value.device());
      weights[w].value.copy_from(value);
      if (weights[w].trainable) trainable_names.push_back(src.name);
    }
  }
  return trainable_names;
}

// JSON text of a file (model_config, the hisvid attribute), with a nesting limit: a hostile or
// broken file cannot exhaust the stack.
nlohmann::json parse_json_text(const std::string& text, const std::string& what) {
  try {
    return layers::parse_json_limited(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{} is not valid JSON: {}", what, e.what());
  }
}

Shape read_shape_list(const nlohmann::json& value, const std::string& what) {
  if (!value.is_array() || value.empty() || value.size() >= static_cast<size_t>(Shape::kMaxRank)) {
    fail("{} is not a shape: {}", what, layers::brief(value));
  }
  std::vector<int64_t> dims;
  for (const nlohmann::json& d : value) {
    if (!d.is_number_integer() || d.get<int64_t>() < 1 ||
        d.get<int64_t>() > std::numeric_limits<int>::max()) {
      fail("{} is not a shape: {}", what, layers::brief(value));
    }
    dims.push_back(d.get<int64_t>());
  }
  return Shape(dims);
}

// The loss a model file records (an .h5 file's training_config, a .keras file's compile_config):
// a cross-entropy taking logits (from_logits=True), one taking probabilities, another loss (a
// regressor's mse...), or none recorded (a model saved uncompiled, a weights-only file).
enum class SavedLoss { None, CrossentropyFromLogits, Crossentropy, Other };

SavedLoss saved_loss(const nlohmann::json& loss) {
  if (loss.is_string()) {
    return loss.get<std::string>().find("crossentropy") != std::string::npos ? SavedLoss::Crossentropy
                                                                             : SavedLoss::Other;
  }
  if (!loss.is_object() || !loss.contains("class_name") || !loss["class_name"].is_string())
    return SavedLoss::None;
  const std::string name = loss["class_name"].get<std::string>();
  if (name.find("Crossentropy") == std::string::npos && name.find("crossentropy") == std::string::npos)
    return SavedLoss::Other;
  const nlohmann::json config = loss.value("config", nlohmann::json::object());
  const bool logits = config.is_object() && config.value("from_logits", false) == true;
  return logits ? SavedLoss::CrossentropyFromLogits : SavedLoss::Crossentropy;
}

// The loss a file records (training_config's, or a .keras file's compile_config's); null when none.
nlohmann::json saved_loss_config(const io::KerasModelFile& file, const nlohmann::json& config) {
  nlohmann::json record;
  try {
    if (!file.training_config.empty()) record = layers::parse_json_limited(file.training_config);
  } catch (const nlohmann::json::exception&) {
    return nullptr;
  }
  if (record.is_null() && config.is_object()) record = config.value("compile_config", nlohmann::json());
  return record.is_object() && record.contains("loss") ? record["loss"] : nlohmann::json();
}

// What a recorded loss asks of training that hisvid's cross-entropy does not do: label
// smoothing, a reduction other than the batch mean; empty when nothing.
std::string loss_options_not_applied(const nlohmann::json& loss) {
  const nlohmann::json config =
      loss.is_object() ? loss.value("config", nlohmann::json::object()) : nlohmann::json();
  if (!config.is_object()) return "";
  std::vector<std::string> options;
  const nlohmann::json smoothing = config.value("label_smoothing", nlohmann::json(0.0));
  if (!(smoothing.is_number() && smoothing.get<double>() == 0.0))
    options.push_back("label_smoothing " + layers::brief(smoothing));
  const nlohmann::json reduction = config.value("reduction", nlohmann::json());
  if (!(reduction.is_null() || reduction == "auto" || reduction == "sum_over_batch_size"))
    options.push_back("reduction " + layers::brief(reduction));
  std::string text;
  for (const std::string& o : options) text += (text.empty() ? "" : ", ") + o;
  return text;
}

// A final Dense layer without activation is read as a classifier's logits
// (Sequential::read_linear_head_as_logits), and the user told so, unless the file's loss is not a
// classifier's (a regressor's outputs are no class scores: the commands then refuse the model).
void note_linear_head(Sequential& model, const std::string& path, SavedLoss loss,
                      std::vector<std::string>* warnings) {
  if (loss == SavedLoss::Other || !model.read_linear_head_as_logits()) return;
  warnings->push_back(fmt::format(
      "{}: the last layer '{}' is a Dense layer without activation ({}): its outputs are read as logits, and "
      "their {} as the class probabilities",
      path, model.layers().back()->name(),
      loss == SavedLoss::CrossentropyFromLogits ? "compiled with from_logits=True"
      : loss == SavedLoss::Crossentropy
          ? "though its loss was compiled to take probabilities"
          : "no loss recorded: read as a classifier compiled with from_logits=True",
      model.head() == Head::Sigmoid ? "sigmoid" : "softmax"));
}

// A warning per weight holding NaN or infinity (a diverged run saved as it was).
void warn_non_finite(const Sequential& model, const std::string& path, std::vector<std::string>* warnings) {
  for (const layers::Layer* layer : model.layers()) {
    for (const layers::Weight& w : layer->weights()) {
      const std::vector<double> values = w.value.to_vector();
      const auto bad =
          std::count_if(values.begin(), values.end(), [](double v) { return !std::isfinite(v); });
      if (bad > 0) {
        warnings->push_back(
            fmt::format("{}: layer '{}' ({}): weight '{}' holds {} non-finite values (NaN or "
                        "infinity) of {}; its outputs will not be numbers",
                        path, layer->name(), layer->class_name(), w.name, bad, values.size()));
      }
    }
  }
}

}  // namespace

nlohmann::json keras_optimizer_config(const Optimizer& opt, bool keras3) {
  const std::map<std::string, double> h = opt.hyper_parameters();
  nlohmann::json config;
  if (keras3) {  // Keras 3's base keys, each at its "off" value
    config = {{"name", opt.name() == "Adam"      ? "adam"
                       : opt.name() == "RMSprop" ? "rmsprop"
                                                 : "SGD"},
              {"learning_rate", h.at("learning_rate")},
              {"weight_decay", nullptr},
              {"clipnorm", nullptr},
              {"global_clipnorm", nullptr},
              {"clipvalue", nullptr},
              {"use_ema", false},
              {"ema_momentum", 0.99},
              {"ema_overwrite_frequency", nullptr},
              {"loss_scale_factor", nullptr},
              {"gradient_accumulation_steps", nullptr}};
  } else {
    config = {{"name", opt.name()}, {"learning_rate", h.at("learning_rate")}, {"decay", 0.0}};
  }
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
  nlohmann::json object = {{"class_name", opt.name()}, {"config", config}};
  if (keras3) {
    object["module"] = "keras.optimizers";
    object["registered_name"] = nullptr;
  }
  return object;
}

std::string model_file_ending(const std::string& path) {
  for (const std::string ending : {".keras", ".h5", ".hdf5"}) {
    if (path.size() > ending.size() &&
        std::equal(ending.begin(), ending.end(), path.end() - static_cast<std::ptrdiff_t>(ending.size()),
                   [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); })) {
      return ending;
    }
  }
  return "";
}

nlohmann::json keras_loss_config(const Sequential& model, bool keras3) {
  const bool binary = model.binary();
  const std::string name = binary ? "binary_crossentropy" : "categorical_crossentropy";
  if (!model.linear_head_as_logits()) return name;
  // The head's outputs are logits: Keras's loss object with from_logits, in each version's form.
  nlohmann::json config = {{"name", name},
                           {"reduction", keras3 ? "sum_over_batch_size" : "auto"},
                           {"from_logits", true},
                           {"label_smoothing", 0.0}};
  config["axis"] = -1;
  nlohmann::json loss = {{"class_name", binary ? "BinaryCrossentropy" : "CategoricalCrossentropy"},
                         {"config", config}};
  if (keras3) loss["module"] = "keras.losses", loss["registered_name"] = nullptr;
  return loss;
}

bool is_keras_archive_path(const std::string& path) { return model_file_ending(path) == ".keras"; }

std::unique_ptr<Optimizer> optimizer_from_keras(const nlohmann::json& given,
                                                const layers::KerasVersion& version, std::string* why) {
  // compile(optimizer="adam") leaves the bare name in a .keras file's compile_config.
  const nlohmann::json optimizer_config =
      given.is_string() ? nlohmann::json{{"class_name", given}, {"config", nlohmann::json::object()}} : given;
  if (!optimizer_config.is_object() || !optimizer_config.contains("class_name") ||
      !optimizer_config["class_name"].is_string()) {
    *why = "the file names no optimizer";
    return nullptr;
  }
  std::string name = optimizer_config["class_name"].get<std::string>();
  if (name.rfind("Custom>", 0) == 0) name = name.substr(7);  // how Keras 2.11-2.15 register their own
  std::string key = name;
  std::transform(key.begin(), key.end(), key.begin(), [](unsigned char ch) { return std::tolower(ch); });
  if (key != "adam" && key != "rmsprop" && key != "sgd") {
    *why = fmt::format("optimizer '{}' is not implemented (Adam, RMSprop, SGD are)", name);
    return nullptr;
  }
  const nlohmann::json config = optimizer_config.value("config", nlohmann::json::object());
  if (!config.is_object()) {
    *why = fmt::format("its optimizer config is not an object: {}", layers::brief(config));
    return nullptr;
  }
  // Options that change the update and that hisvid does not implement, at their "off" values.
  const std::vector<std::pair<const char*, nlohmann::json>> off = {{"decay", 0.0},
                                                                   {"amsgrad", false},
                                                                   {"momentum", 0.0},
                                                                   {"centered", false},
                                                                   {"nesterov", false},
                                                                   {"weight_decay", nullptr},
                                                                   {"clipnorm", nullptr},
                                                                   {"global_clipnorm", nullptr},
                                                                   {"clipvalue", nullptr},
                                                                   {"use_ema", false},
                                                                   {"loss_scale_factor", nullptr},
                                                                   {"gradient_accumulation_steps", nullptr}};
  for (const auto& [option, value] : off) {
    if (config.contains(option) && config[option] != value && !(value.is_number() && config[option] == 0)) {
      *why = fmt::format("its {} uses {} = {}, which hisvid does not implement", name, option,
                         layers::brief(config[option]));
      return nullptr;
    }
  }
  std::map<std::string, double> hyper;
  const nlohmann::json lr =
      config.contains("learning_rate") ? config["learning_rate"] : config.value("lr", nlohmann::json());
  if (!lr.is_null()) {
    if (!lr.is_number()) {
      *why = fmt::format("its learning rate is a schedule ({}), which hisvid does not implement",
                         layers::brief(lr));
      return nullptr;
    }
    hyper["learning_rate"] = lr.get<double>();
  }
  for (const char* h : {"beta_1", "beta_2", "epsilon", "rho"}) {
    if (config.contains(h) && config[h].is_number()) hyper[h] = config[h].get<double>();
  }
  if (key == "sgd") {
    hyper = {{"learning_rate", hyper.count("learning_rate") ? hyper["learning_rate"] : 0.01}};
  } else if (key == "rmsprop") {
    // The optimizers of Keras >= 2.11 (and Keras 3) put epsilon inside the square root.
    const bool legacy = config.contains("is_legacy_optimizer")
                            ? config["is_legacy_optimizer"] == true
                            : !(version.keras3() || (version.major == 2 && version.minor >= 11));
    hyper["epsilon_inside_sqrt"] = legacy ? 0.0 : 1.0;
  } else {
    hyper.erase("rho");
  }
  try {
    return make_optimizer(key, hyper);
  } catch (const Error& e) {
    *why = e.what();
    return nullptr;
  }
}

void load_weights(Sequential& model, const io::KerasModelFile& file, const std::string& path) {
  load_weights_mapped(model, file, path);
}

namespace {

// The units of the file's last layer with weights (its first weight's last axis: a Dense
// kernel's outputs), found in the model's layer order for a Keras 3 weights file; 0 if none.
int64_t final_units(const Sequential& model, const io::KerasModelFile& file, const std::string& path) {
  const std::vector<io::LayerWeights> layers =
      file.format == "keras" ? keras_layer_weights(model, file, path) : file.layers;
  for (auto it = layers.rbegin(); it != layers.rend(); ++it) {
    if (!it->weights.empty())
      return it->weights.front().value.shape().rank() > 0 ? it->weights.front().value.dim(-1) : 0;
  }
  return 0;
}

// The architecture `spec` (load_spec) with `classes` outputs (0: its own), read as the Keras
// `version` that saved the weights reads it where the spec states no version (empty: Keras 2.8's
// defaults): its defaults are that version's (a ConvLSTM2D's gates sigmoid in Keras 3).
Sequential architecture(const std::string& spec, int64_t classes, const std::string& version,
                        const std::string& path) {
  return load_spec(spec, static_cast<int>(classes), "--model",
                   version.empty() ? layers::KerasVersion{} : layers::KerasVersion::parse(version, path));
}

}  // namespace

LoadedModel load_weights_file(const std::string& path, const std::string& spec) {
  const io::KerasModelFile file = io::read_weights_file(path);
  if (!file.model_config.empty()) {
    fail("{}: the file holds its own architecture; an architecture is given only to a file of weights only",
         path);
  }
  // Keras 3's .weights.h5 records no version: Keras 3 wrote it.
  const std::string version = file.format == "keras" ? kKeras3WriteVersion : file.keras_version;
  Sequential model = architecture(spec, 0, version, path);
  if (!model.has_input_shape()) {
    fail("{}: the architecture {} declares no input shape (a weights file has none either)", path, spec);
  }
  model.build(0);
  const int64_t units = final_units(model, file, path);
  if (units > 1 && units != model.num_classes()) {  // the file's class count, not the spec's
    model = architecture(spec, units, version, path);
    model.build(0);
  }
  load_weights_mapped(model, file, path);
  LoadedModel loaded{std::move(model), ModelExtras{}, version, "weights"};
  warn_non_finite(loaded.model, path, &loaded.extras.warnings);
  note_linear_head(loaded.model, path, SavedLoss::None, &loaded.extras.warnings);
  return loaded;
}

void save_model(const std::string& path, const Sequential& model, const std::vector<std::string>& class_names,
                const Optimizer* optimizer, const nlohmann::json& training_state,
                const io::WriteOptions& options) {
  if (!model.built()) fail("save_model {}: model '{}' is not built", path, model.name());
  io::KerasModelFile file;
  file.model_config = model.to_json().dump();
  file.keras_version = model.keras_version().str();

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

  nlohmann::json meta = {
      {"format", kFormatVersion}, {"class_names", class_names}, {"training", training_state}};
  meta["input_shape"] = model.input_shape().vec();
  if (optimizer != nullptr) {
    nlohmann::json training_config = {
        {"loss", keras_loss_config(model, false)},
        {"metrics",
         {{{{"class_name", "MeanMetricWrapper"},
            {"config",
             {{"name", "accuracy"},
              {"dtype", "float32"},
              {"fn", model.binary() ? "binary_accuracy" : "categorical_accuracy"}}}}}}},
        {"weighted_metrics", nullptr},
        {"loss_weights", nullptr},
        {"optimizer_config", keras_optimizer_config(*optimizer, false)}};
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
        fail("save_model {}: the optimizer holds slots for {} weights, the model has {} trainable weights",
             path, slots.size(), trainable_paths.size());
      }
      // Slot by slot, as Keras 2 creates them and sets them back by position: every weight's
      // m, then every weight's v (interleaved, Keras 2 refuses them and starts a fresh optimizer).
      const std::vector<std::string> slot_names = optimizer->slot_names();
      for (size_t s = 0; s < slot_names.size(); ++s) {
        for (size_t i = 0; i < slots.size(); ++i) {
          file.optimizer_weights.push_back({prefix + trainable_paths[i] + "/" + slot_names[s] + ":0",
                                            slots[i][s].to(Device::cpu()).to(DType::Float32)});
        }
      }
    }
  }
  file.hisvid = meta.dump();
  // The output's extension chooses the format, as Keras's model.save does.
  if (is_keras_archive_path(path)) {
    io::write_keras_archive(path, keras_archive(model, optimizer, file.hisvid, path));
    return;
  }
  io::write_keras_model(path, file, options);
}

LoadedModel load_model(const std::string& path) {
  const io::KerasModelFile file = io::read_model_file(path);
  if (file.backend == "theano") {
    fail("{}: saved with Keras's Theano backend, whose convolution kernels are flipped: not supported", path);
  }
  // A .keras archive that states no Keras version (no metadata.json, or none in it) is read as
  // Keras 3 reads it, whatever wrote it; an .h5 file without one as Keras 2 (KerasVersion{}).
  const std::string stated = !file.keras_version.empty() ? file.keras_version
                             : file.format == "keras"    ? kKeras3WriteVersion
                                                         : "";
  const layers::KerasVersion version =
      stated.empty() ? layers::KerasVersion{} : layers::KerasVersion::parse(stated, path);
  const nlohmann::json config = parse_json_text(
      file.model_config, path + (file.format == "keras" ? ": config.json" : ": model_config"));
  LoadedModel loaded{Sequential::from_json(config, path, version), ModelExtras{}, stated, file.format};
  Sequential& model = loaded.model;
  nlohmann::json meta;
  if (!file.hisvid.empty()) meta = parse_json_text(file.hisvid, path + ": the hisvid attribute");
  if (!meta.is_null() && !meta.is_object()) fail("{}: the hisvid attribute is not a JSON object", path);
  if (!model.has_input_shape() && meta.contains("input_shape")) {
    model.set_input_shape(read_shape_list(meta["input_shape"], path + ": the hisvid input_shape"));
  }
  if (!model.has_input_shape()) fail("{}: the model declares no input shape", path);
  model.build(0);  // a layer whose input does not fit it names the file (Sequential::build)
  const std::vector<std::string> trainable_names = load_weights_mapped(model, file, path);
  ModelExtras& extras = loaded.extras;
  warn_non_finite(model, path, &extras.warnings);
  const nlohmann::json loss = saved_loss_config(file, config);
  note_linear_head(model, path, loss.is_null() ? SavedLoss::None : saved_loss(loss), &extras.warnings);
  extras.loss_options_not_applied = loss_options_not_applied(loss);

  if (meta.contains("class_names")) {
    if (!meta["class_names"].is_array() ||
        !std::all_of(meta["class_names"].begin(), meta["class_names"].end(),
                     [](const nlohmann::json& n) { return n.is_string(); })) {
      fail("{}: the hisvid class_names are not a list of strings", path);
    }
    extras.class_names = meta["class_names"].get<std::vector<std::string>>();
  }
  if (meta.contains("training")) extras.training_state = meta["training"];

  // The optimizer: hisvid's own record first (it knows the RMSprop epsilon form), else Keras's.
  std::string why;
  if (meta.contains("optimizer")) {
    const nlohmann::json& o = meta["optimizer"];
    try {
      extras.optimizer = make_optimizer(o.at("name").get<std::string>(),
                                        o.at("hyper_parameters").get<std::map<std::string, double>>());
    } catch (const nlohmann::json::exception& e) {
      fail("{}: the hisvid optimizer record is malformed ({})", path, e.what());
    }
  } else {
    // Keras's record: training_config.optimizer_config in an .h5 file, compile_config.optimizer
    // in a .keras file's config.
    nlohmann::json optimizer_config;
    if (!file.training_config.empty()) {
      nlohmann::json training_config;
      try {
        training_config = layers::parse_json_limited(file.training_config);
      } catch (const nlohmann::json::exception&) {
        extras.warnings.push_back(path +
                                  ": training_config is not valid JSON; the optimizer state is not restored");
      }
      if (training_config.is_object() && training_config.contains("optimizer_config")) {
        optimizer_config = training_config["optimizer_config"];
      }
    } else if (config.is_object() && config.contains("compile_config") &&
               config["compile_config"].is_object()) {
      optimizer_config = config["compile_config"].value("optimizer", nlohmann::json());
    }
    if (!optimizer_config.is_null()) {
      extras.optimizer = optimizer_from_keras(optimizer_config, version, &why);
      if (!extras.optimizer)
        extras.warnings.push_back(fmt::format("{}: optimizer not restored: {}", path, why));
    }
  }
  if (extras.optimizer) {
    std::vector<Shape> shapes;
    for (const Tensor& w : model.trainable_weights()) shapes.push_back(w.shape());
    if (!restore_optimizer_state(*extras.optimizer, file.optimizer_weights, trainable_names, shapes, &why)) {
      if (meta.contains("optimizer")) fail("{}: the optimizer state cannot be resumed: {}", path, why);
      extras.warnings.push_back(fmt::format(
          "{}: the {} state in the file was not restored ({}); training continues with fresh optimizer slots",
          path, extras.optimizer->name(), why));
      extras.optimizer->set_iterations(0);
      extras.optimizer->set_slots({});
    }
  }
  return loaded;
}

}  // namespace hisvid::models
