// io/keras_h5.h — model files in the Keras 2 `.h5` layout, as plain data (io/ knows Tensor but
// not layers or models; models/ maps a Sequential model to and from this).
//
// The layout written and read (what Keras 2.x `model.save("m.h5")` produces):
//   /                       attrs: model_config (JSON), keras_version, backend,
//                                  training_config (JSON, optional)
//   /model_weights          attrs: layer_names (string array), keras_version, backend
//   /model_weights/<layer>  attrs: weight_names (string array, e.g. "lstm/lstm_cell/kernel:0";
//                                  an empty float64 array when the layer has no weights)
//   /model_weights/<layer>/<weight name path>   float32 dataset in the Keras shape
//   /optimizer_weights      attrs: weight_names; datasets at each name, e.g. "Adam/iter:0",
//                                  "Adam/dense/kernel/m:0"
// plus hisvid's own root attribute `hisvid` (a JSON string: class names, input shape, training
// state), which Keras ignores.
//
// Writes go to a temporary file in the same directory, flushed and renamed over the target:
// a crash or a failed write never leaves a half-written model, and the previous file stays.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hisvid::io {

struct NamedTensor {
  std::string name;  // full Keras weight name, e.g. "time_distributed_3/kernel:0"
  Tensor value;      // float32 CPU tensor in the Keras shape
};

struct LayerWeights {
  std::string layer_name;
  std::vector<NamedTensor> weights;  // in Keras weight order
};

struct KerasModelFile {
  std::string format = "h5";    // "h5" (this layout) or "keras" (io/keras_archive.h)
  std::string model_config;     // JSON text of {"class_name": "Sequential", "config": {...}}
  std::string training_config;  // JSON text, may be empty
  std::string keras_version = "2.8.0";
  std::string backend = "tensorflow";
  std::vector<LayerWeights> layers;  // "h5": every layer in model order, weightless ones too
  // "keras": the variables of model.weights.h5 below layers/ (or Keras 2's
  // _layer_checkpoint_dependencies/) by path, for models/ to map by class order.
  std::map<std::string, Tensor> layer_vars;
  // Empty when no optimizer state is saved. "keras": optimizer/vars/<i> named "vars/<i>".
  std::vector<NamedTensor> optimizer_weights;
  std::string hisvid;  // JSON text of hisvid's metadata, may be empty
};

struct WriteOptions {
  // Called before each dataset is written with its path; a test makes a write fail by
  // throwing from here.
  std::function<void(const std::string& dataset_path)> before_dataset;
};

// Reads a Keras 2 .h5 model file. Throws hisvid::Error naming the file and the problem: missing,
// not HDF5, truncated, no model_config, a weight group missing or malformed.
KerasModelFile read_keras_model(const std::string& path);

// Reads a model file of either format, told apart by content, not by name: an HDF5 file (this
// layout, whatever its extension) or a .keras zip archive (whatever its extension).
KerasModelFile read_model_file(const std::string& path);

// As read_model_file, and a weights-only HDF5 file too (Keras 2's model.save_weights or
// ModelCheckpoint(save_weights_only=True); Keras 3's .weights.h5), whose model_config is then
// empty: the caller gives the architecture.
KerasModelFile read_weights_file(const std::string& path);

// Writes atomically (temporary file + rename). On any failure the target is untouched and the
// temporary file removed; the error names the file.
void write_keras_model(const std::string& path, const KerasModelFile& model,
                       const WriteOptions& options = {});

}  // namespace hisvid::io
