// layers/registry.h — creates layers from Keras `{"class_name": ..., "config": {...}}` objects.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "layers/layer.h"

namespace hisvid::layers {

// The Keras layer classes hisvid implements.
const std::set<std::string>& supported_layer_classes();

// Keras 3's snake_case form of a supported class name ("ConvLSTM2D" -> "conv_lstm2d"): the
// prefix of automatic layer names, and the group name of a layer in a .keras weights file.
std::string snake_case_prefix(const std::string& class_name);

class LayerFactory {
 public:
  // Configs are read with the semantics of Keras `version` (the file's).
  explicit LayerFactory(KerasVersion version = {}) : version_(version) {}
  // `where` names the layer's position in the spec for errors, e.g. "layer 3". Layers without
  // a "name" get Keras's automatic ones (conv2d, conv2d_1, ..., time_distributed, ...).
  std::unique_ptr<Layer> make(const nlohmann::json& spec, const std::string& where);

 private:
  std::string unique_name(const std::string& class_name);

  KerasVersion version_;
  std::map<std::string, int> counts_;
  std::set<std::string> used_;
};

}  // namespace hisvid::layers
