// models/keras_format.h — a Sequential model in the native Keras format (.keras; io/keras_archive.h
// holds the archive itself): weights found by layer class order, and the Keras 3 config.json.
//
// Reading takes the i-th layer of class C from layers/<snake_case C>[_i] (Keras 3's names;
// Keras 2.13-2.15's _layer_checkpoint_dependencies/ and their spelling conv_lst_m2d too).
// Writing produces what Keras 3 writes: config.json with module / registered_name /
// build_config on every object and compile_config when there is an optimizer; every layer's
// group (empty vars for weightless ones); optimizer/vars/0 the iteration count (int64),
// optimizer/vars/1 the learning rate, then each trainable weight's slots, interleaved as
// Keras 3.0-3.9 write them.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/optimizer.h"
#include "io/keras_archive.h"
#include "io/keras_h5.h"
#include "models/sequential.h"

namespace hisvid::models {

// The Keras version written into a .keras file of a model that follows Keras 2 semantics but
// uses nothing whose meaning changed (hard_sigmoid, activity regularizers): the newest Keras
// 3 release whose files hisvid was checked against (fixtures/keras-versions).
constexpr const char* kKeras3WriteVersion = "3.9.2";

// The weights of every layer of the built `model` from a .keras file's variables, one entry per
// layer in model order (weightless ones empty), named by their path in the file. Errors name
// the file and the missing path, or the variables that no layer of the model claims.
std::vector<io::LayerWeights> keras_layer_weights(const Sequential& model, const io::KerasModelFile& file,
                                                  const std::string& path);

// The archive of a built model: Keras 3 config.json, metadata.json (with hisvid's own record
// as a JSON string under "hisvid"), the weights and the optimizer state. Throws, naming the
// file, when the model uses what a Keras 3 file would read differently (Keras 2's hard_sigmoid,
// activity regularizers): such a model is saved as .h5.
io::KerasArchive keras_archive(const Sequential& model, const Optimizer* optimizer,
                               const std::string& hisvid_meta, const std::string& path);

}  // namespace hisvid::models
