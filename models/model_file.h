// models/model_file.h — a Sequential model and its training state in a Keras 2 `.h5` file.
//
// What is written: Keras's layout (io/keras_h5.h) with `model_config` = to_json(),
// `training_config` naming the loss and the optimizer in Keras's terms, the weights under the
// Keras weight names (e.g. "lstm/lstm_cell/kernel:0"), the optimizer's slots under
// "<Optimizer>/<weight path>/<slot>:0" and its step under "<Optimizer>/iter:0" (as Keras 2.8
// names them), and hisvid's attribute: class names, input shape and the training state.
// A file Keras wrote loads the same way: architecture from its model_config (read with the
// semantics of its keras_version), weights by layer order as Keras itself loads them, and the
// optimizer state when present, in any of the layouts Keras wrote it: Keras <= 2.10
// ("Adam/iter:0", "Adam/<weight>/m:0"), Keras 2.11-2.15 ("iteration:0", "Adam/m/<weight>:0"),
// Keras 3 ("iteration", "learning_rate", "<path>_momentum", ...), and the .keras format's
// numbered optimizer/vars.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

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
  // What the caller should tell the user: weights with non-finite values, an optimizer state
  // that could not be restored (and why).
  std::vector<std::string> warnings;
  // What the file's recorded loss asks of training that hisvid's cross-entropy does not do
  // ("label_smoothing 0.1"); empty when nothing. Said by train --weights, which continues the
  // model with hisvid's loss.
  std::string loss_options_not_applied;
};

struct LoadedModel {
  Sequential model;  // built, weights loaded, on the CPU
  ModelExtras extras;
  std::string keras_version;
  std::string format;  // "h5" or "keras" (the zip format)
};

// Saves atomically: a .keras archive (models/keras_format.h) when path ends in ".keras", else
// the .h5 layout (io::write_keras_model; `options` apply to it). The optimizer, when given,
// must have been stepped with model.trainable_weights() (or not at all).
void save_model(const std::string& path, const Sequential& model, const std::vector<std::string>& class_names,
                const Optimizer* optimizer, const nlohmann::json& training_state,
                const io::WriteOptions& options = {});

// Reads either format, told apart by the file's content.
LoadedModel load_model(const std::string& path);

// A weights-only file (Keras 2's model.save_weights or ModelCheckpoint(save_weights_only=True);
// Keras 3's .weights.h5) read into the architecture `spec` it was saved from (a zoo name or a
// JSON spec file, as load_spec): the final layer takes the file's class count, and the model
// computes as the Keras version that saved the weights (Keras 3 for a .weights.h5). A file with
// its own architecture is refused. format "weights"; no optimizer, no class names.
LoadedModel load_weights_file(const std::string& path, const std::string& spec);

// The loss a Keras file records for the model (training_config / compile_config): the name of
// its cross-entropy, or, for a head read as logits (Sequential::linear_head_as_logits), Keras's
// loss object with from_logits=True, in Keras 3's form where `keras3`.
nlohmann::json keras_loss_config(const Sequential& model, bool keras3);

// Keras's serialized optimizer config of one of hisvid's optimizers: Keras 2's training_config
// form, or Keras 3's (its base keys at their "off" values, module and registered_name).
nlohmann::json keras_optimizer_config(const Optimizer& opt, bool keras3);

// The model format `path` names by its ending, in any case (OUT.KERAS too): ".keras", ".h5" or
// ".hdf5"; "" for any other name.
std::string model_file_ending(const std::string& path);
// True when `path` names a .keras archive.
bool is_keras_archive_path(const std::string& path);

// Copies the file's weights into an already built model, by layer order (Keras's rule): the
// i-th layer with weights in the model takes the i-th layer with weights in the file. Errors
// name the file, both layers, the weight and the two shapes.
void load_weights(Sequential& model, const io::KerasModelFile& file, const std::string& path);

// An optimizer from a Keras training_config's "optimizer_config" (any Keras 2.x / 3.x form), or
// null when there is none or it uses what hisvid does not implement (*why then says what).
std::unique_ptr<Optimizer> optimizer_from_keras(const nlohmann::json& optimizer_config,
                                                const layers::KerasVersion& version, std::string* why);

}  // namespace hisvid::models
