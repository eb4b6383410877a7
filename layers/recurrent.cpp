// LSTM and ConvLSTM2D layers: Keras arguments and weights around engine/recurrent.h.
//   LSTM       input (T, D)        kernel (D, 4U)        recurrent_kernel (U, 4U)        bias (4U)
//   ConvLSTM2D input (T, H, W, C)  kernel (KH, KW, C, 4F) recurrent_kernel (KH, KW, F, 4F) bias (4F)
// unit_forget_bias initialises the forget-gate slice [U, 2U) of the bias to ones.
#include "engine/recurrent.h"

#include "engine/ops.h"
#include "kernels/conv2d.h"
#include "kernels/pool.h"
#include "layers/layer.h"

namespace hisvid::layers {

Recurrent::Recurrent(std::string name, ConfigReader& c, bool convolutional)
    : Layer(std::move(name)), convolutional_(convolutional) {
  read_common(c);
  if (convolutional) {
    units_ = c.integer("filters");
    kernel_size_ = c.pair("kernel_size");
    padding_ = c.padding("padding", "valid");
    c.require_default("strides", {1, nlohmann::json::array({1, 1})});
    c.require_default("dilation_rate", {1, nlohmann::json::array({1, 1})});
    c.require_default("data_format", {"channels_last"});
  } else {
    units_ = c.integer("units");
    c.require_default("implementation", {1, 2});
    implementation_ = c.integer("implementation", 2);
  }
  if (units_ < 1) c.error("{} must be >= 1, got {}", convolutional ? "filters" : "units", units_);
  activation_ = c.activation("activation", "tanh");
  // ConvLSTM2D's default gate activation changed: hard_sigmoid in Keras 2, sigmoid in Keras 3.
  recurrent_activation_ = c.activation("recurrent_activation",
                                       convolutional && !c.version().keras3() ? "hard_sigmoid" : "sigmoid");
  if (activation_.softmax || recurrent_activation_.softmax) c.error("softmax is not a recurrent activation");
  use_bias_ = c.boolean("use_bias", true);
  unit_forget_bias_ = c.boolean("unit_forget_bias", true);
  return_sequences_ = c.boolean("return_sequences", false);
  dropout_ = c.number("dropout", 0.0);
  recurrent_dropout_ = c.number("recurrent_dropout", 0.0);
  for (double rate : {dropout_, recurrent_dropout_}) {
    if (!(rate >= 0.0 && rate < 1.0)) c.error("dropout rates must be in [0, 1), got {}", rate);
  }
  kernel_initializer_ = read_initializer(c, "kernel_initializer", "glorot_uniform");
  recurrent_initializer_ = read_initializer(c, "recurrent_initializer", "orthogonal");
  bias_initializer_ = read_initializer(c, "bias_initializer", "zeros");
  kernel_regularizer_ = read_regularizer(c, "kernel_regularizer");
  recurrent_regularizer_ = read_regularizer(c, "recurrent_regularizer");
  bias_regularizer_ = read_regularizer(c, "bias_regularizer");
  for (const char* key : {"kernel_constraint", "recurrent_constraint", "bias_constraint"}) {
    c.require_default(key, {nullptr});
  }
  for (const char* key : {"return_state", "go_backwards", "stateful", "time_major"}) {
    c.require_default(key, {false});
  }
  // unroll: how TensorFlow builds the loop (a Python loop instead of a while op); what it
  // computes but for an LSTM's input dropout masks in Keras 2, whose cuDNN-compatible path it
  // turns off (input_dropout_masks).
  unroll_ = c.boolean("unroll", false);
  // Keras 3: the seed of its dropout masks (hisvid draws its own from the run's seed) and what
  // masked steps output (no masking here, so either value computes the same).
  c.ignore("seed");
  c.boolean("zero_output_for_mask", false);
}

Shape Recurrent::build(const Shape& in, Generator& init) {
  const int64_t G = 4, U = units_;
  input_shape_ = in;
  weights_.clear();
  Shape out;
  if (convolutional_) {
    if (in.rank() != 4) fail("{}: expects (T, H, W, C) input, got {}", where(), in.str());
    const Conv2dGeometry g =
        conv2d_geometry(1, static_cast<int>(in[1]), static_cast<int>(in[2]), static_cast<int>(in[3]), units_,
                        kernel_size_[0], kernel_size_[1], 1, 1, padding_);
    if (g.HO <= 0 || g.WO <= 0) fail("{}: frames {} are smaller than the kernel", where(), in.str());
    add_weight("kernel", kernel_initializer_, {kernel_size_[0], kernel_size_[1], in[3], G * U}, init, true,
               kernel_regularizer_);
    add_weight("recurrent_kernel", recurrent_initializer_, {kernel_size_[0], kernel_size_[1], U, G * U}, init,
               true, recurrent_regularizer_);
    out = return_sequences_ ? Shape{in[0], g.HO, g.WO, U} : Shape{g.HO, g.WO, U};
  } else {
    if (in.rank() != 2) fail("{}: expects (T, features) input, got {}", where(), in.str());
    add_weight("kernel", kernel_initializer_, {in[1], G * U}, init, true, kernel_regularizer_);
    add_weight("recurrent_kernel", recurrent_initializer_, {U, G * U}, init, true, recurrent_regularizer_);
    out = return_sequences_ ? Shape{in[0], U} : Shape{U};
  }
  if (use_bias_) {
    Tensor& bias = add_weight("bias", bias_initializer_, {G * U}, init, true, bias_regularizer_);
    if (unit_forget_bias_) {
      float* b = bias.data<float>();
      for (int64_t u = U; u < 2 * U; ++u) b[u] = 1.0f;
    }
  }
  return finish_build(out);
}

// How the LSTM's input dropout draws its masks in the Keras that wrote the config (Keras 2.4-2.15's
// LSTM: recurrent_dropout forces implementation 1; else the cuDNN-compatible path, which every
// device takes, multiplies the whole input sequence by one mask of its shape; else the cell's
// implementation 2 shares one mask. Keras 3 shares one mask without recurrent_dropout.)
InputDropout Recurrent::input_dropout_masks() const {
  if (convolutional_) return InputDropout::PerGate;
  // Keras 3.0-3.7's cell shares one input and one recurrent mask, recurrent_dropout or not; 3.8
  // on takes one per gate under recurrent_dropout (implementation 1). Standalone Keras 2.0-2.3
  // follows the implementation alone (1: per gate; 2: shared, the recurrent mask too).
  if (version_.keras3()) {
    return recurrent_dropout_ > 0.0 && version_.minor >= 8 ? InputDropout::PerGate : InputDropout::Shared;
  }
  if (version_.standalone()) return implementation_ == 1 ? InputDropout::PerGate : InputDropout::Shared;
  if (recurrent_dropout_ > 0.0) return InputDropout::PerGate;
  const bool cudnn_path = activation_.elementwise == Activation::Tanh && !activation_.softmax &&
                          recurrent_activation_.elementwise == Activation::Sigmoid && use_bias_ && !unroll_;
  if (cudnn_path) return InputDropout::PerStep;
  return implementation_ == 1 ? InputDropout::PerGate : InputDropout::Shared;
}

Tensor Recurrent::forward(const Tensor& x, const ForwardContext& ctx) {
  RecurrentOptions options;
  options.activation = activation_.elementwise;
  options.recurrent_activation = recurrent_activation_.elementwise;
  options.return_sequences = return_sequences_;
  options.dropout = trains_without_dropout() ? 0.0f : static_cast<float>(dropout_);
  options.recurrent_dropout = trains_without_dropout() ? 0.0f : static_cast<float>(recurrent_dropout_);
  options.input_dropout = input_dropout_masks();
  options.training = ctx.training;
  options.rng = ctx.rng;
  options.padding = padding_;
  const RecurrentWeights w{weights_[0].value, weights_[1].value, use_bias_ ? weights_[2].value : Tensor()};
  return convolutional_ ? convlstm2d_sequence(x, w, options) : lstm_sequence(x, w, options);
}

nlohmann::json Recurrent::config() const {
  nlohmann::json c = common_config();
  c["return_sequences"] = return_sequences_;
  for (const char* key : {"return_state", "go_backwards", "stateful", "time_major"}) c[key] = false;
  c["unroll"] = unroll_;
  if (convolutional_) {
    c["filters"] = units_;
    c["kernel_size"] = {kernel_size_[0], kernel_size_[1]};
    c["strides"] = {1, 1};
    c["padding"] = padding_name(padding_);
    c["data_format"] = "channels_last";
    c["dilation_rate"] = {1, 1};
  } else {
    c["units"] = units_;
  }
  c["activation"] = activation_name(activation_);
  c["recurrent_activation"] = activation_name(recurrent_activation_);
  c["use_bias"] = use_bias_;
  c["kernel_initializer"] = kernel_initializer_.to_json();
  c["recurrent_initializer"] = recurrent_initializer_.to_json();
  c["bias_initializer"] = bias_initializer_.to_json();
  c["unit_forget_bias"] = unit_forget_bias_;
  c["kernel_regularizer"] = kernel_regularizer_.to_json();
  c["recurrent_regularizer"] = recurrent_regularizer_.to_json();
  c["bias_regularizer"] = bias_regularizer_.to_json();
  if (!c.contains("activity_regularizer")) c["activity_regularizer"] = nullptr;
  for (const char* key : {"kernel_constraint", "recurrent_constraint", "bias_constraint"}) c[key] = nullptr;
  c["dropout"] = dropout_;
  c["recurrent_dropout"] = recurrent_dropout_;
  if (!convolutional_) c["implementation"] = implementation_;
  return c;
}

}  // namespace hisvid::layers
