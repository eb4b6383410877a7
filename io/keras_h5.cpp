// io/keras_h5.cpp — reads and writes the Keras 2 `.h5` model layout described in keras_h5.h,
// through io/hdf5.h.
//
// Reading follows Keras's own loader: layers in `layer_names` order, weights in `weight_names`
// order, each dataset at `<layer>/<weight name>`. Optimizer weights are listed by the
// `weight_names` attribute of /optimizer_weights when it has one, else every dataset below the
// group in sorted path order. They are returned as float32 tensors whatever their stored type:
// Keras stores the Adam step "Adam/iter:0" as int64, exact in float32 up to 2^24 steps; we write
// every optimizer weight as float32 (Keras casts on load).
//
// Writing goes through io/atomic_file.h: a temporary file in the target's directory, flushed,
// closed, fsynced and renamed over the target; on any failure the temporary file is removed and the target is
// left as it was.
#include "io/keras_h5.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>

#include "engine/error.h"
#include "io/atomic_file.h"
#include "io/hdf5.h"
#include "io/isolated.h"
#include "io/keras_archive.h"

namespace hisvid::io {

namespace {

// Keras splits a name list too large for an HDF5 object header into attributes `name0`,
// `name1`, ... (load_attributes_from_hdf5_group); both forms are read.
std::vector<std::string> read_name_list(const h5::Object& object, const std::string& name) {
  if (object.has_attribute(name)) return object.read_string_list_attribute(name);
  if (!object.has_attribute(name + "0")) {
    fail("{}: {}: no attribute '{}'", object.filename(), object.path(), name);
  }
  std::vector<std::string> names;
  for (int chunk = 0; object.has_attribute(name + std::to_string(chunk)); ++chunk) {
    for (std::string& part : object.read_string_list_attribute(name + std::to_string(chunk))) {
      names.push_back(std::move(part));
    }
  }
  return names;
}

bool has_name_list(const h5::Object& object, const std::string& name) {
  return object.has_attribute(name) || object.has_attribute(name + "0");
}

std::string optional_string(const h5::Object& object, const std::string& name) {
  return object.has_attribute(name) ? object.read_string_attribute(name) : "";
}

// A layer name is one group name; a weight name is a relative path of plain components (no
// leading '/', no empty or "." parts) so that it cannot land outside its layer's group.
void check_name(const std::string& path, const std::string& what, const std::string& name, bool allow_slash) {
  bool ok = !name.empty() && name.front() != '/' && name.back() != '/';
  if (!allow_slash && name.find('/') != std::string::npos) ok = false;
  if (name.find("//") != std::string::npos || name == "." || name.rfind("./", 0) == 0 ||
      name.find("/./") != std::string::npos ||
      (name.size() >= 2 && name.compare(name.size() - 2, 2, "/.") == 0)) {
    ok = false;
  }
  if (!ok) fail("{}: cannot save the model: invalid {} '{}'", path, what, name);
}

void check_model(const std::string& path, const KerasModelFile& model) {
  if (model.model_config.empty()) fail("{}: cannot save the model: model_config is empty", path);
  for (const LayerWeights& layer : model.layers) {
    check_name(path, "layer name", layer.layer_name, false);
    for (const NamedTensor& weight : layer.weights) check_name(path, "weight name", weight.name, true);
  }
  for (const NamedTensor& weight : model.optimizer_weights) {
    check_name(path, "optimizer weight name", weight.name, true);
  }
}

std::vector<std::string> names_of(const std::vector<NamedTensor>& tensors) {
  std::vector<std::string> names;
  for (const NamedTensor& tensor : tensors) names.push_back(tensor.name);
  return names;
}

void write_tensors(h5::Group& group, const std::vector<NamedTensor>& tensors, const WriteOptions& options) {
  for (const NamedTensor& tensor : tensors) {
    const std::string dataset_path = group.path() + "/" + tensor.name;
    if (options.before_dataset) options.before_dataset(dataset_path);
    group.write_tensor(tensor.name, tensor.value);
  }
}

void write_model_file(const std::string& path, const KerasModelFile& model, const WriteOptions& options) {
  h5::File file = h5::File::create(path);
  {
    h5::Group root = file.root();
    root.write_string_attribute("keras_version", model.keras_version);
    root.write_string_attribute("backend", model.backend);
    root.write_string_attribute("model_config", model.model_config);
    if (!model.training_config.empty()) root.write_string_attribute("training_config", model.training_config);
    if (!model.hisvid.empty()) root.write_string_attribute("hisvid", model.hisvid);

    h5::Group weights = root.create_group("model_weights");
    std::vector<std::string> layer_names;
    for (const LayerWeights& layer : model.layers) layer_names.push_back(layer.layer_name);
    weights.write_string_list_attribute("layer_names", layer_names);
    weights.write_string_attribute("backend", model.backend);
    weights.write_string_attribute("keras_version", model.keras_version);
    for (const LayerWeights& layer : model.layers) {
      h5::Group group = weights.create_group(layer.layer_name);
      group.write_string_list_attribute("weight_names", names_of(layer.weights));
      write_tensors(group, layer.weights, options);
    }

    if (!model.optimizer_weights.empty()) {
      h5::Group optimizer = root.create_group("optimizer_weights");
      optimizer.write_string_list_attribute("weight_names", names_of(model.optimizer_weights));
      write_tensors(optimizer, model.optimizer_weights, options);
    }
  }
  file.flush();
  file.close();
}

}  // namespace

namespace {

// The layers of a Keras 2 weight group (a model file's /model_weights, or the root of a
// model.save_weights file): every layer of layer_names in order, its weights of weight_names.
std::vector<LayerWeights> read_layer_list(const h5::Group& weights) {
  std::vector<LayerWeights> layers;
  for (const std::string& layer_name : read_name_list(weights, "layer_names")) {
    const h5::Group group = weights.open_group(layer_name);
    LayerWeights layer{layer_name, {}};
    for (const std::string& weight_name : read_name_list(group, "weight_names")) {
      // Keras casts what it loads to its variables' float32: float16 and float64 weights are
      // read as it reads them; anything else (integers, strings) is an error naming it.
      const h5::Dataset weight = group.open_dataset(weight_name);
      layer.weights.push_back(
          {weight_name, weight.holds_floats() ? weight.read_tensor_converted() : weight.read_tensor()});
    }
    layers.push_back(std::move(layer));
  }
  return layers;
}

// A weights-only HDF5 file: Keras 2's model.save_weights layout (layer_names at the root, as in
// a model file's /model_weights), or Keras 3's .weights.h5 (the variables under layers/, as in a
// .keras archive's model.weights.h5). No architecture: model_config stays empty.
KerasModelFile read_keras_weights(const h5::Group& root, const std::string& path) {
  KerasModelFile model;
  if (root.has_attribute("layer_names")) {
    model.keras_version = optional_string(root, "keras_version");
    model.backend = optional_string(root, "backend");
    model.layers = read_layer_list(root);
    return model;
  }
  if (root.is_group("layers") || root.is_group("_layer_checkpoint_dependencies")) {
    model.format = "keras";
    model.keras_version.clear();
    for (const std::string& dataset : root.dataset_paths()) {
      if (dataset.rfind("optimizer/", 0) == 0) continue;  // a weights file's optimizer is not loaded
      model.layer_vars[dataset] = root.open_dataset(dataset).read_tensor_converted();
    }
    return model;
  }
  fail(
      "{}: an HDF5 file that is neither a Keras model (no model_config attribute) nor Keras weights (no "
      "layer_names attribute, no layers/ group)",
      path);
}

// A Keras .h5 model file, or with `weights_only_ok` a weights-only file too.
KerasModelFile read_keras_h5(const std::string& path, bool weights_only_ok) {
  const h5::File file = h5::File::open(path);
  const h5::Group root = file.root();
  if (!root.has_attribute("model_config")) {
    if (weights_only_ok) return read_keras_weights(root, path);
    fail(
        "{}: no model_config attribute: not a Keras model file (a file from model.save_weights, or "
        "ModelCheckpoint(save_weights_only=True), has weights only; give the architecture it was saved from, "
        "hisvid's --model, to read it)",
        path);
  }
  KerasModelFile model;
  model.model_config = root.read_string_attribute("model_config");
  model.training_config = optional_string(root, "training_config");
  model.keras_version = optional_string(root, "keras_version");
  model.backend = optional_string(root, "backend");
  model.hisvid = optional_string(root, "hisvid");

  if (!root.is_group("model_weights")) fail("{}: no /model_weights group", path);
  model.layers = read_layer_list(root.open_group("model_weights"));

  if (root.is_group("optimizer_weights")) {
    const h5::Group optimizer = root.open_group("optimizer_weights");
    const std::vector<std::string> names = has_name_list(optimizer, "weight_names")
                                               ? read_name_list(optimizer, "weight_names")
                                               : optimizer.dataset_paths();
    for (const std::string& name : names) {
      model.optimizer_weights.push_back({name, optimizer.open_dataset(name).read_tensor_converted()});
    }
  }
  return model;
}

KerasModelFile read_file(const std::string& path, bool weights_only_ok) {
  std::error_code error;
  const std::filesystem::file_status status = std::filesystem::status(path, error);
  if (!std::filesystem::exists(status)) fail("{}: {}", path, missing_reason(path));
  if (!std::filesystem::is_regular_file(status)) {
    fail("{}: not a regular file (a model file is expected)", path);
  }
  const bool zip = is_zip_file(path);
  // Read once where a crash inside libhdf5 cannot take hisvid down (io/isolated.h).
  probe_in_child(
      path, [&] { zip ? (void)read_keras_archive(path) : (void)read_keras_h5(path, weights_only_ok); },
      isolated_read_seconds(static_cast<int64_t>(std::filesystem::file_size(path, error))));
  if (!zip) return read_keras_h5(path, weights_only_ok);

  const KerasArchive archive = read_keras_archive(path);
  KerasModelFile model;
  model.format = "keras";
  model.model_config = archive.config;
  model.keras_version.clear();
  // metadata.json: {"keras_version": ..., "date_saved": ...}, and hisvid's own record as a
  // JSON string (parsed, with its limits, by models/).
  const nlohmann::json metadata = nlohmann::json::parse(archive.metadata, nullptr, false);
  if (!metadata.is_object()) fail("{}: metadata.json is not a JSON object", path);
  if (metadata.contains("keras_version") && metadata["keras_version"].is_string()) {
    model.keras_version = metadata["keras_version"].get<std::string>();
  }
  if (metadata.contains("hisvid") && metadata["hisvid"].is_string())
    model.hisvid = metadata["hisvid"].get<std::string>();
  const std::string optimizer_prefix = "optimizer/vars/";
  std::map<int, Tensor> optimizer_vars;
  for (const auto& [name, tensor] : archive.vars) {
    if (name.rfind(optimizer_prefix, 0) == 0) {
      const std::string index = name.substr(optimizer_prefix.size());
      if (index.empty() || index.size() > 6 || index.find_first_not_of("0123456789") != std::string::npos) {
        fail("{}: unexpected optimizer variable '{}' in model.weights.h5", path, name);
      }
      optimizer_vars[std::stoi(index)] = tensor;
    } else {
      model.layer_vars[name] = tensor;
    }
  }
  for (const auto& [index, tensor] : optimizer_vars)
    model.optimizer_weights.push_back({"vars/" + std::to_string(index), tensor});
  return model;
}

}  // namespace

KerasModelFile read_keras_model(const std::string& path) { return read_keras_h5(path, false); }

KerasModelFile read_model_file(const std::string& path) { return read_file(path, false); }

KerasModelFile read_weights_file(const std::string& path) { return read_file(path, true); }

void write_keras_model(const std::string& path, const KerasModelFile& model, const WriteOptions& options) {
  check_model(path, model);
  try {
    write_atomically(path, [&](const std::string& temp) { write_model_file(temp, model, options); });
  } catch (const std::exception& e) {
    fail("{}: cannot save the model: {}", path, e.what());
  } catch (...) {
    fail("{}: cannot save the model: a non-standard exception was thrown", path);
  }
}

}  // namespace hisvid::io
