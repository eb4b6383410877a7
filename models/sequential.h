// models/sequential.h — a Keras Sequential model built from a JSON spec in the Keras schema.
//
// Accepted specs: Keras's `model.to_json()` / the `model_config` attribute of a Keras .h5 file /
// the config.json of a .keras file ({"class_name": "Sequential", "config": {"name": ...,
// "layers": [...]}}, with the metadata of any Keras 2.x or 3.x), the same without the wrapper
// ({"layers": [...]}), or a bare list of layers. The input shape (T, H, W, C) comes from an
// InputLayer (batch_input_shape, or Keras 3's batch_shape), the first layer's
// batch_input_shape / input_shape, the model's build_input_shape (Keras 3), or is set before
// build().
//
// The output head decides the loss: a final Dense with softmax (categorical cross-entropy over
// its units) or a final one-unit Dense with sigmoid (a binary classifier: binary
// cross-entropy, the unit giving the probability of class 1 of 2).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "layers/layer.h"

namespace hisvid::models {

enum class Output { Probabilities, Logits };

// What the final layer computes, and so which loss trains it.
enum class Head { None, Softmax, Sigmoid };

struct ParamCounts {
  int64_t total = 0, trainable = 0, non_trainable = 0;
};

class Sequential {
 public:
  // `source` names the spec in errors (a file path or a zoo name). `version` is the Keras
  // version of the file holding the spec (its semantics where Keras changed them); a
  // "keras_version" key beside class_name and config (model.to_json() writes one) overrides it.
  static Sequential from_json(const nlohmann::json& spec, const std::string& source,
                              const layers::KerasVersion& version = {});
  // {"class_name": "Sequential", "config": {"name", "layers": [InputLayer, ...]}}, every
  // layer's config complete with Keras defaults.
  nlohmann::json to_json() const;

  const std::string& name() const { return name_; }
  // The Keras version whose semantics the model follows (written back into saved files).
  const layers::KerasVersion& keras_version() const { return version_; }
  bool has_input_shape() const { return input_shape_.rank() > 0; }
  const Shape& input_shape() const { return input_shape_; }  // no batch axis
  void set_input_shape(const Shape& shape);

  // Sets the units of the final Dense layer (the number of classes) before build(); a binary
  // head keeps its one unit and accepts 2 classes only.
  void set_num_classes(int classes);
  // The classes the model tells apart: the units of the final Dense layer, or 2 for a binary
  // (one-unit sigmoid) head.
  int num_classes() const;
  Head head() const;
  bool binary() const;  // a one-unit sigmoid head

  // A final Dense layer without activation (a Keras model compiled with from_logits=True) read
  // as a classifier's logits: head() is then softmax (sigmoid for one unit), the probabilities
  // are that of the Dense layer's outputs, and training's loss takes them as logits. The layer
  // itself stays linear (saved as it was loaded). Returns false, changing nothing, unless the
  // last layer is such a Dense layer.
  bool read_linear_head_as_logits();
  bool linear_head_as_logits() const { return logits_head_; }

  // Builds every layer for the input shape, drawing initial weights from seed. Errors name the
  // layer whose input does not fit.
  void build(uint64_t seed);
  bool built() const { return built_; }
  Shape output_shape() const;  // no batch axis

  // x (N, input_shape...) -> (N, output...). Logits requires a final softmax or sigmoid layer
  // and returns what it would map to probabilities. With ctx.losses set, every activity
  // regularizer's penalty is appended there.
  Tensor forward(const Tensor& x, const layers::ForwardContext& ctx, Output output = Output::Probabilities);

  // The layers before the last as forward runs them: each step one layer, or a Conv2D and the
  // MaxPooling2D after it as one kernel (layers::conv_pool_pair), with the Dropout after them
  // folded in when there is one and the activation allows (layers::fold_dropout: it draws the
  // same mask as the layer). Where pairs fuse:
  //   Fusion::Cpu (the default)  on the CPU, where the fused kernel measured faster
  //                              (bench/RESULTS.md); CUDA runs the layers one by one until
  //                              the fused CUDA rows (version 2) measure faster on a GPU
  //   Fusion::Everywhere         on every device (to measure the CUDA rows in the model)
  //   Fusion::None               nowhere
  // The environment variable HISVID_FUSE_CONV_POOL at start gives the default: 1 (Cpu), all
  // (Everywhere) or 0 (None). The values are the same within rounding either way: the backward
  // sums in another order.
  enum class Fusion { None, Cpu, Everywhere };
  struct Step {
    size_t first = 0, count = 1;
    layers::ConvPool pair;  // pair.conv set when count > 1 (2, or 3 with a folded Dropout)
  };
  std::vector<Step> steps(Device device) const;
  Tensor run_step(const Step& step, const Tensor& x, const layers::ForwardContext& ctx);
  void set_fuse_conv_pool(Fusion fusion) { fusion_ = fusion; }
  Fusion fuse_conv_pool() const { return fusion_; }
  // The weight regularizers' penalties, each a () tensor on the tape (Keras's weight losses).
  std::vector<Tensor> weight_penalties() const;

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
  std::string source_;  // the spec's file or zoo name (from_json's `source`), for build's errors
  layers::KerasVersion version_;
  Shape input_shape_;
  std::vector<std::unique_ptr<layers::Layer>> layers_;
  bool built_ = false;
  bool logits_head_ = false;  // read_linear_head_as_logits
  Device device_ = Device::cpu();
  Fusion fusion_ = fusion_by_default();

  static Fusion fusion_by_default();
};

// A number with thousands separators, as Keras prints parameter counts: 73,060.
std::string with_commas(int64_t n);

}  // namespace hisvid::models
