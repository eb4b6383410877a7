// models/model_file.h — a Sequential model and its training state in a Keras 2 `.h5` file.
//
// What is written: Keras's layout (io/keras_h5.h) with `model_config` = to_json(),
// `training_config` naming the loss and the optimizer in Keras's terms, the weights under the
// Keras weight names (e.g. "lstm/lstm_cell/kernel:0"), the optimizer's slots under
// "<Optimizer>/<weight path>/<slot>:0" and its step under "<Optimizer>/iter:0" (as Keras 2.8
// names them), and hisvid's attribute: class names, input shape and the training state.
// A file Keras wrote loads the same way: architecture from its model_config, weights by layer
// order as Keras itself loads them, optimizer state when present.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/optimizer.h"
#include "io/keras_h5.h"
#include "models/sequential.h"

namespace hisvid::models {

// Everything a model file holds besides the model itself.
struct ModelExtras {
  std::vector<std::string> class_names;  // empty when unknown (e.g. a Keras file)
  // Training state written by fit (epoch, RNG offset, callbacks...), null when none.
  nlohmann::json training_state;
  // The optimizer with its slots and iteration count; null when the file holds none.
  std::unique_ptr<Optimizer> optimizer;
};

struct LoadedModel {
  Sequential model;  // built, weights loaded, on the CPU
  ModelExtras extras;
  std::string keras_version;
};

// Saves atomically (see io::write_keras_model). The optimizer, when given, must have been
// stepped with model.trainable_weights() (or not at all).
void save_model(const std::string& path, const Sequential& model, const std::vector<std::string>& class_names,
                const Optimizer* optimizer, const nlohmann::json& training_state,
                const io::WriteOptions& options = {});

LoadedModel load_model(const std::string& path);

// Copies the file's weights into an already built model, by layer order (Keras's rule): the
// i-th layer with weights in the model takes the i-th layer with weights in the file. Errors
// name the file, both layers, the weight and the two shapes.
void load_weights(Sequential& model, const io::KerasModelFile& file, const std::string& path);

}  // namespace hisvid::models
