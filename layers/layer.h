// layers/layer.h — the Layer interface and the Keras layers hisvid implements.
//
// A layer is created from its Keras config (class name + arguments, Keras defaults for what is
// missing), built for an input shape (which creates its weights with Keras's initializers), and
// run forward in training or inference mode; the ops it calls record their backward.
// Shapes passed to build() and returned by it exclude the batch axis, as in Keras's summary.
#pragma once

#include <array>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/random.h"
#include "engine/recurrent.h"
#include "engine/tensor.h"
#include "layers/config.h"
#include "layers/initializers.h"
#include "layers/regularizers.h"

namespace hisvid::layers {

struct Weight {
  std::string name;  // Keras short name: kernel, recurrent_kernel, bias, gamma, beta, moving_mean, ...
  Tensor value;
  bool trainable = true;
  Regularizer regularizer;  // its penalty joins the loss (Sequential::weight_penalties)
};

struct ForwardContext {
  bool training = false;
  Generator* rng = nullptr;  // dropout draws; required when training a layer with dropout
  // When set, layers with an activity regularizer append their penalty here (Keras's add_loss).
  std::vector<Tensor>* losses = nullptr;
};

class Layer {
 public:
  explicit Layer(std::string name) : name_(std::move(name)) {}
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  const std::string& name() const { return name_; }
  virtual const char* class_name() const = 0;
  // Creates the weights for inputs of input_shape (no batch axis) and returns the output shape.
  // Throws naming the layer when the input does not fit.
  virtual Shape build(const Shape& input_shape, Generator& init) = 0;
  virtual Tensor forward(const Tensor& x, const ForwardContext& ctx) = 0;
  // forward() and the layer's activity regularization (Keras's __call__ around call()).
  Tensor apply(const Tensor& x, const ForwardContext& ctx);
  // The complete Keras config, defaults included (what model.to_json() holds).
  virtual nlohmann::json config() const = 0;
  // The prefix of this layer's weights in a Keras .h5 file, e.g. "lstm/lstm_cell".
  virtual std::string weight_scope() const { return name_; }
  // Where a .keras file keeps this layer's weights below its group: "" (its own vars), "layer/"
  // (a wrapper's inner layer) or "cell/" (a recurrent layer's cell).
  virtual std::string keras_state_path() const { return ""; }
  // True when the layer ends in a softmax (forward then returns probabilities).
  virtual bool has_softmax() const { return false; }
  // The pre-softmax output, for the fused softmax cross-entropy; only when has_softmax().
  virtual Tensor forward_logits(const Tensor& x, const ForwardContext& ctx);
  // True when the layer ends in a sigmoid (forward then returns probabilities).
  virtual bool has_sigmoid() const { return false; }
  // The activity regularizer's penalty of this layer's output y (divided by y's batch size
  // for Keras 2) appended to ctx.losses, when the layer has one and ctx collects losses.
  void add_activity_loss(const Tensor& y, const ForwardContext& ctx) const;
  const KerasVersion& keras_version() const { return version_; }

  // Weights in Keras order (a TimeDistributed layer answers with its inner layer's).
  virtual std::vector<Weight>& weights() { return weights_; }
  const std::vector<Weight>& weights() const { return const_cast<Layer*>(this)->weights(); }
  Shape input_shape() const { return input_shape_; }  // no batch axis; set by build()
  Shape output_shape() const { return output_shape_; }
  bool built() const { return built_; }
  // Moves every weight to device, or converts it to dtype (float64 for gradient checks).
  void to(Device device);
  void to(DType dtype);
  bool has_activity_regularizer() const { return activity_regularizer_.active(); }

 protected:
  // `where` for errors: "layer 'conv2d_1' (Conv2D)".
  std::string where() const;
  Tensor& add_weight(const std::string& name, const Initializer& init, const Shape& shape, Generator& rng,
                     bool trainable = true, const Regularizer& regularizer = {});
  // Keras's common config keys: name, trainable, dtype (float32 only), the input shape keys
  // (batch_input_shape, batch_shape, input_shape: read by Sequential), activity_regularizer.
  void read_common(ConfigReader& reader);
  // name, trainable, dtype, and activity_regularizer when the layer has one.
  nlohmann::json common_config() const;
  Shape finish_build(const Shape& output_shape);

  std::string name_;
  bool trainable_ = true;
  KerasVersion version_;
  Regularizer activity_regularizer_;
  std::vector<Weight> weights_;
  Shape input_shape_, output_shape_;
  bool built_ = false;
};

class MaxPooling;

class Conv2D final : public Layer {
 public:
  Conv2D(std::string name, ConfigReader& config);
  const char* class_name() const override { return "Conv2D"; }
  Shape build(const Shape& input_shape, Generator& init) override;
  Tensor forward(const Tensor& x, const ForwardContext& ctx) override;
  nlohmann::json config() const override;
  // pool.forward(forward(x)) as one kernel (ops::conv2d_act_pool), for a MaxPooling2D.
  // With dropout_rate > 0, the Dropout after the pool too (ops::conv2d_act_pool).
  Tensor forward_pooled(const Tensor& x, const MaxPooling& pool, float dropout_rate = 0.0f,
                        RandomDraw dropout_draw = {}) const;
  Activation activation() const { return activation_.elementwise; }

 private:
  int filters_;
  std::array<int, 2> kernel_size_, strides_;
  Padding padding_;
  ActivationSpec activation_;
  bool use_bias_;
  Initializer kernel_initializer_, bias_initializer_;
  Regularizer kernel_regularizer_, bias_regularizer_;
};

// MaxPooling2D, and MaxPooling3D with pool (1, ph, pw) over (T, H, W, C).
class MaxPooling final : public Layer {
 public:
  MaxPooling(std::string name, ConfigReader& config, bool three_d);
  const char* class_name() const override { return three_d_ ? "MaxPooling3D" : "MaxPooling2D"; }
  Shape build(const Shape& input_shape, Generator& init) override;
  Tensor forward(const Tensor& x, const ForwardContext& ctx) override;
  nlohmann::json config() const override;
  bool three_d() const { return three_d_; }
  // The pool over (H, W) as ops::conv2d_act_pool takes it.
  ops::PoolSpec spec() const { return {pool_[0], pool_[1], strides_[0], strides_[1], padding_}; }

 private:
  bool three_d_;
  std::array<int, 2> pool_, strides_;
  Padding padding_;
};

class Dropout final : public Layer {
 public:
  Dropout(std::string name, ConfigReader& config);
  const char* class_name() const override { return "Dropout"; }
  Shape build(const Shape& input_shape, Generator& init) override;
  Tensor forward(const Tensor& x, const ForwardContext& ctx) override;
  nlohmann::json config() const override;
  double rate() const { return rate_; }

 private:
  double rate_;  // kept as the config's number so the spec round-trips exactly
};

class Flatten final : public Layer {
 public:
  Flatten(std::string name, ConfigReader& config);
  const char* class_name() const override { return "Flatten"; }
  Shape build(const Shape& input_shape, Generator& init) override;
  Tensor forward(const Tensor& x, const ForwardContext& ctx) override;
  nlohmann::json config() const override;
};

class BatchNormalization final : public Layer {
 public:
  BatchNormalization(std::string name, ConfigReader& config);
  const char* class_name() const override { return "BatchNormalization"; }
  Shape build(const Shape& input_shape, Generator& init) override;
  Tensor forward(const Tensor& x, const ForwardContext& ctx) override;
  nlohmann::json config() const override;
  // Whether training updates the moving variance with the unbiased batch variance (Keras 2's
  // fused path, standalone Keras; decided by build).
  bool unbiased_moving_variance() const {
    return moving_update_ == MovingUpdate::Fused || version_.standalone();
  }

 private:
  int axis_;        // -1, or Keras's saved form: the channel axis counting the batch axis
  int fused_ = -1;  // the config's `fused`: -1 null (Keras decides), 0 false, 1 true
  // How training updates the moving statistics: the Keras path's expression (build).
  MovingUpdate moving_update_ = MovingUpdate::Fused;
  double momentum_, epsilon_;
  bool center_, scale_;
  Initializer beta_initializer_, gamma_initializer_, moving_mean_initializer_, moving_variance_initializer_;
  Regularizer beta_regularizer_, gamma_regularizer_;
};

class Dense final : public Layer {
 public:
  Dense(std::string name, ConfigReader& config);
  const char* class_name() const override { return "Dense"; }
  Shape build(const Shape& input_shape, Generator& init) override;
  Tensor forward(const Tensor& x, const ForwardContext& ctx) override;
  Tensor forward_logits(const Tensor& x, const ForwardContext& ctx) override;
  bool has_softmax() const override { return activation_.softmax; }
  // A sigmoid head: forward_logits then returns what the sigmoid maps.
  bool has_sigmoid() const override { return activation_.elementwise == Activation::Sigmoid; }
  // No activation at all: the outputs are the affine map's (Keras's 'linear').
  bool linear() const { return !activation_.softmax && activation_.elementwise == Activation::Linear; }
  nlohmann::json config() const override;
  int units() const { return units_; }
  // Changes the number of units before build (the zoo's class count).
  void set_units(int units) { units_ = units; }

 private:
  int units_;
  ActivationSpec activation_;
  bool use_bias_;
  Initializer kernel_initializer_, bias_initializer_;
  Regularizer kernel_regularizer_, bias_regularizer_;
};

// LSTM and ConvLSTM2D (engine/recurrent.h holds the math).
class Recurrent final : public Layer {
 public:
  Recurrent(std::string name, ConfigReader& config, bool convolutional);
  const char* class_name() const override { return convolutional_ ? "ConvLSTM2D" : "LSTM"; }
  Shape build(const Shape& input_shape, Generator& init) override;
  Tensor forward(const Tensor& x, const ForwardContext& ctx) override;
  nlohmann::json config() const override;
  std::string weight_scope() const override { return convolutional_ ? name_ : name_ + "/lstm_cell"; }
  std::string keras_state_path() const override { return "cell/"; }
  // How an LSTM's input dropout draws its masks, as the Keras that wrote the config does.
  InputDropout input_dropout_masks() const;
  bool convolutional() const { return convolutional_; }
  // A ConvLSTM2D of Keras 3.0-3.4, whose cell applies neither dropout (its mask code is
  // commented out): it trains without them, as those versions did.
  bool trains_without_dropout() const { return convolutional_ && version_.major == 3 && version_.minor <= 4; }
  double dropout() const { return dropout_; }
  double recurrent_dropout() const { return recurrent_dropout_; }

 private:
  bool convolutional_;
  int units_;  // LSTM units or ConvLSTM2D filters
  std::array<int, 2> kernel_size_{1, 1};
  Padding padding_ = Padding::Valid;
  ActivationSpec activation_, recurrent_activation_;
  bool use_bias_, unit_forget_bias_, return_sequences_;
  double dropout_, recurrent_dropout_;
  int implementation_ = 2;  // LSTM: Keras 2's implementation (1 or 2), which decides its dropout masks
  bool unroll_ = false;
  Initializer kernel_initializer_, recurrent_initializer_, bias_initializer_;
  Regularizer kernel_regularizer_, recurrent_regularizer_, bias_regularizer_;
};

// GlobalAveragePooling1D/2D/3D: the mean over every axis but the channels, (..., C) -> (C), or
// (1, ..., 1, C) with keepdims.
class GlobalAveragePooling final : public Layer {
 public:
  GlobalAveragePooling(std::string name, ConfigReader& config, int spatial_rank);
  const char* class_name() const override { return class_name_.c_str(); }
  Shape build(const Shape& input_shape, Generator& init) override;
  Tensor forward(const Tensor& x, const ForwardContext& ctx) override;
  nlohmann::json config() const override;

 private:
  int spatial_rank_;  // 1, 2 or 3 axes averaged
  std::string class_name_;
  bool keepdims_;
};

// SpatialDropout1D/2D/3D: dropout of whole feature maps, one Philox draw per (sample, channel)
// kept or dropped over every other axis (Keras's noise_shape (N, 1, ..., 1, C)).
class SpatialDropout final : public Layer {
 public:
  SpatialDropout(std::string name, ConfigReader& config, int spatial_rank);
  const char* class_name() const override { return class_name_.c_str(); }
  Shape build(const Shape& input_shape, Generator& init) override;
  Tensor forward(const Tensor& x, const ForwardContext& ctx) override;
  nlohmann::json config() const override;

 private:
  int spatial_rank_;
  std::string class_name_;
  double rate_;
};

class TimeDistributed final : public Layer {
 public:
  // `config` holds the wrapper's own arguments (name, trainable, dtype...), not "layer".
  TimeDistributed(std::string name, ConfigReader& config, std::unique_ptr<Layer> inner);
  const char* class_name() const override { return "TimeDistributed"; }
  Shape build(const Shape& input_shape, Generator& init) override;
  Tensor forward(const Tensor& x, const ForwardContext& ctx) override;
  nlohmann::json config() const override;
  using Layer::weights;
  std::vector<Weight>& weights() override { return inner_->weights(); }
  const Layer& inner() const { return *inner_; }
  std::string keras_state_path() const override { return "layer/"; }

 private:
  std::unique_ptr<Layer> inner_;
};

// A Conv2D directly followed by a MaxPooling2D, both bare or both inside TimeDistributed, with
// no activity regularizer on the way (its penalty would need the convolution's output): the
// pair can run as one kernel, with the values of the two layers one after the other.
// A Dropout right after the pair (TimeDistributed or not: it drops the same elements) folds in
// as well when the convolution's activation is relu or linear (kernels/conv2d_pool.h).
struct ConvPool {
  const Conv2D* conv = nullptr;
  const MaxPooling* pool = nullptr;
  bool time_distributed = false;
  const Dropout* dropout = nullptr;  // set by fold_dropout
  int layers() const { return conv == nullptr ? 0 : dropout != nullptr ? 3 : 2; }
};
// The pair that `first` then `second` form, or conv == nullptr when they form none.
ConvPool conv_pool_pair(const Layer& first, const Layer& second);
// `pair` with `next` folded in when `next` is a Dropout that can be; else `pair` as it is.
ConvPool fold_dropout(ConvPool pair, const Layer& next);
// The layers' output for x, (N, H, W, C) or (N, T, H, W, C) under TimeDistributed; a folded
// dropout draws from ctx.rng in training, as the Dropout layer would at that point.
Tensor forward_conv_pool(const ConvPool& pair, const Tensor& x, const ForwardContext& ctx);

}  // namespace hisvid::layers
