// models/sequential.h — a Keras Sequential model built from a JSON spec in the Keras schema.
//
// Accepted specs: Keras's `model.to_json()` / the `model_config` attribute of a Keras .h5 file
// ({"class_name": "Sequential", "config": {"name": ..., "layers": [...]}}), the same without
// the wrapper ({"layers": [...]}), or a bare list of layers. The input shape (T, H, W, C) comes
// from an InputLayer's or the first layer's batch_input_shape, or is set before build().
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/tensor.h"
#include "layers/layer.h"

namespace hisvid::models {

enum class Output { Probabilities, Logits };

struct ParamCounts {
  int64_t total = 0, trainable = 0, non_trainable = 0;
};

class Sequential {
 public:
  // `source` names the spec in errors (a file path or a zoo name).
  static Sequential from_json(const nlohmann::json& spec, const std::string& source);
  // {"class_name": "Sequential", "config": {"name", "layers": [InputLayer, ...]}}, every
  // layer's config complete with Keras defaults.
  nlohmann::json to_json() const;

  const std::string& name() const { return name_; }
  bool has_input_shape() const { return input_shape_.rank() > 0; }
  const Shape& input_shape() const { return input_shape_; }  // no batch axis
  void set_input_shape(const Shape& shape);

  // Sets the units of the final Dense layer (the number of classes) before build().
  void set_num_classes(int classes);
  // Units of the final Dense layer (its output width).
  int num_classes() const;

  // Builds every layer for the input shape, drawing initial weights from seed. Errors name the
  // layer whose input does not fit.
  void build(uint64_t seed);
  bool built() const { return built_; }
  Shape output_shape() const;  // no batch axis

  // x (N, input_shape...) -> (N, output...). Logits requires a final softmax layer and returns
  // what it would normalise.
  Tensor forward(const Tensor& x, const layers::ForwardContext& ctx, Output output = Output::Probabilities);

  std::vector<layers::Layer*> layers() const;
  // Trainable weights in Keras order (what an optimizer steps).
  std::vector<Tensor> trainable_weights() const;
  ParamCounts count_params() const;
  // Keras-style table: layer (type), output shape, params, then the totals.
  std::string summary() const;

  Device device() const { return device_; }
  void to(Device device);
  // Converts every weight (float64 on the CPU for gradient checks).
  void to(DType dtype);

 private:
  std::string name_ = "sequential";
  Shape input_shape_;
  std::vector<std::unique_ptr<layers::Layer>> layers_;
  bool built_ = false;
  Device device_ = Device::cpu();
};

// A number with thousands separators, as Keras prints parameter counts: 73,060.
std::string with_commas(int64_t n);

}  // namespace hisvid::models
