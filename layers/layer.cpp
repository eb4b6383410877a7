// The Layer base and the feed-forward Keras layers: Conv2D, MaxPooling2D/3D, Dropout, Flatten,
// BatchNormalization, Dense, TimeDistributed.
#include "layers/layer.h"

#include <algorithm>
#include <array>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "kernels/conv2d.h"
#include "kernels/pool.h"

namespace hisvid::layers {

namespace {

nlohmann::json json_pair(const std::array<int, 2>& v) { return nlohmann::json::array({v[0], v[1]}); }

// Keras's constraint arguments: hisvid implements none, so only null is accepted.
void require_no_constraints(ConfigReader& reader, std::initializer_list<const char*> keys) {
  for (const char* key : keys) reader.require_default(key, {nullptr});
}

// A dropout layer's required rate, in [0, 1).
double read_rate(ConfigReader& c) {
  if (!c.has("rate")) c.error("missing required argument 'rate'");
  const double rate = c.number("rate", 0.0);
  if (!(rate >= 0.0 && rate < 1.0)) c.error("rate must be in [0, 1), got {}", rate);
  return rate;
}

// activation, use_bias, the initializers, the regularizers and the null constraints: the config
// Conv2D and Dense share.
void write_kernel_bias_config(nlohmann::json& c, const ActivationSpec& activation, bool use_bias,
                              const Initializer& kernel_initializer, const Initializer& bias_initializer,
                              const Regularizer& kernel_regularizer, const Regularizer& bias_regularizer) {
  c["activation"] = activation_name(activation);
  c["use_bias"] = use_bias;
  c["kernel_initializer"] = kernel_initializer.to_json();
  c["bias_initializer"] = bias_initializer.to_json();
  c["kernel_regularizer"] = kernel_regularizer.to_json();
  c["bias_regularizer"] = bias_regularizer.to_json();
  if (!c.contains("activity_regularizer")) c["activity_regularizer"] = nullptr;
  c["kernel_constraint"] = nullptr;
  c["bias_constraint"] = nullptr;
}

}  // namespace

// --- Layer ---------------------------------------------------------------------------------

Tensor Layer::forward_logits(const Tensor&, const ForwardContext&) {
  fail("{}: has no softmax output to take logits from", where());
}

void Layer::to(Device device) {
  for (Weight& w : weights()) {
    w.value = w.value.to(device);
    w.value.set_requires_grad(w.trainable);
  }
}

void Layer::to(DType dtype) {
  for (Weight& w : weights()) {
    w.value = w.value.to(dtype);
    w.value.set_requires_grad(w.trainable);
  }
}

std::string Layer::where() const { return fmt::format("layer '{}' ({})", name_, class_name()); }

Tensor Layer::apply(const Tensor& x, const ForwardContext& ctx) {
  Tensor y = forward(x, ctx);
  add_activity_loss(y, ctx);
  return y;
}

void Layer::add_activity_loss(const Tensor& y, const ForwardContext& ctx) const {
  if (ctx.losses == nullptr || !activity_regularizer_.active()) return;
  const Tensor penalty = activity_regularizer_.penalty(y);
  // tf.keras makes the activity penalty batch-size agnostic; Keras 3 adds it as it is.
  ctx.losses->push_back(version_.keras3()
                            ? penalty
                            : ops::scale(penalty, 1.0 / static_cast<double>(std::max<int64_t>(y.dim(0), 1))));
}

Tensor& Layer::add_weight(const std::string& name, const Initializer& init, const Shape& shape,
                          Generator& rng, bool trainable, const Regularizer& regularizer) {
  // One weight of 2^28 values is 1 GiB of float32 (the seeds' largest has 2.1M): a spec asking
  // for more (a typo, a hostile file) is an error here, not an allocation that takes the
  // machine down.
  constexpr int64_t kMaxWeightElements = int64_t(1) << 28;
  if (shape.numel() > kMaxWeightElements) {
    fail("{}: weight '{}' of shape {} has {} values, more than the {} a weight may have", where(), name,
         shape.str(), shape.numel(), kMaxWeightElements);
  }
  Tensor value = init.sample(shape, rng);
  value.set_requires_grad(trainable && trainable_);
  weights_.push_back(Weight{name, value, trainable && trainable_, regularizer});
  return weights_.back().value;
}

void Layer::read_common(ConfigReader& reader) {
  version_ = reader.version();
  reader.ignore("name");
  // The input shape of a first layer (Sequential reads it): Keras 2, Keras 3, and the
  // input_shape argument a hand-written spec may use.
  reader.ignore("batch_input_shape");
  reader.ignore("batch_shape");
  reader.ignore("input_shape");
  // Only the model's input shape matters; Keras 2 also writes batch_size beside it.
  reader.ignore("batch_size");
  trainable_ = reader.boolean("trainable", true);
  require_float32_dtype(reader.raw("dtype"), reader.where());
  activity_regularizer_ = read_regularizer(reader, "activity_regularizer");
}

nlohmann::json Layer::common_config() const {
  nlohmann::json c = {{"name", name_}, {"trainable", trainable_}, {"dtype", "float32"}};
  if (activity_regularizer_.active()) c["activity_regularizer"] = activity_regularizer_.to_json();
  return c;
}

Shape Layer::finish_build(const Shape& output_shape) {
  output_shape_ = output_shape;
  built_ = true;
  return output_shape;
}

// --- Conv2D --------------------------------------------------------------------------------

Conv2D::Conv2D(std::string name, ConfigReader& c) : Layer(std::move(name)) {
  read_common(c);
  filters_ = c.integer("filters");
  if (filters_ < 1) c.error("filters must be >= 1, got {}", filters_);
  kernel_size_ = c.pair("kernel_size");
  strides_ = c.pair("strides", {1, 1});
  padding_ = c.padding("padding", "valid");
  activation_ = c.activation("activation", "linear");
  if (activation_.softmax) c.error("softmax is only supported as the activation of Dense");
  use_bias_ = c.boolean("use_bias", true);
  kernel_initializer_ = read_initializer(c, "kernel_initializer", "glorot_uniform");
  bias_initializer_ = read_initializer(c, "bias_initializer", "zeros");
  kernel_regularizer_ = read_regularizer(c, "kernel_regularizer");
  bias_regularizer_ = read_regularizer(c, "bias_regularizer");
  c.require_default("data_format", {"channels_last"});
  c.require_default("dilation_rate", {1, nlohmann::json::array({1, 1})});
  c.require_default("groups", {1});
  require_no_constraints(c, {"kernel_constraint", "bias_constraint"});
}

Shape Conv2D::build(const Shape& in, Generator& init) {
  if (in.rank() != 3) fail("{}: expects (H, W, C) frames, got input shape {}", where(), in.str());
  const Conv2dGeometry g =
      conv2d_geometry(1, static_cast<int>(in[0]), static_cast<int>(in[1]), static_cast<int>(in[2]), filters_,
                      kernel_size_[0], kernel_size_[1], strides_[0], strides_[1], padding_);
  if (g.HO <= 0 || g.WO <= 0) fail("{}: input {} is smaller than the kernel", where(), in.str());
  input_shape_ = in;
  weights_.clear();
  add_weight("kernel", kernel_initializer_, {kernel_size_[0], kernel_size_[1], in[2], filters_}, init, true,
             kernel_regularizer_);
  if (use_bias_) add_weight("bias", bias_initializer_, {filters_}, init, true, bias_regularizer_);
  return finish_build({g.HO, g.WO, filters_});
}

Tensor Conv2D::forward(const Tensor& x, const ForwardContext&) {
  const Tensor y = ops::conv2d(x, weights_[0].value, use_bias_ ? weights_[1].value : Tensor(), strides_[0],
                               strides_[1], padding_);
  return activation_.elementwise == Activation::Linear ? y : ops::activation(y, activation_.elementwise);
}

Tensor Conv2D::forward_pooled(const Tensor& x, const MaxPooling& pool, float dropout_rate,
                              RandomDraw dropout_draw) const {
  return ops::conv2d_act_pool(x, weights_[0].value, use_bias_ ? weights_[1].value : Tensor(),
                              {strides_[0], strides_[1], padding_}, activation_.elementwise, pool.spec(),
                              dropout_rate, dropout_draw);
}

nlohmann::json Conv2D::config() const {
  nlohmann::json c = common_config();
  c["filters"] = filters_;
  c["kernel_size"] = json_pair(kernel_size_);
  c["strides"] = json_pair(strides_);
  c["padding"] = padding_name(padding_);
  c["data_format"] = "channels_last";
  c["dilation_rate"] = json_pair({1, 1});
  c["groups"] = 1;
  write_kernel_bias_config(c, activation_, use_bias_, kernel_initializer_, bias_initializer_,
                           kernel_regularizer_, bias_regularizer_);
  return c;
}

// --- MaxPooling2D / MaxPooling3D -----------------------------------------------------------

MaxPooling::MaxPooling(std::string name, ConfigReader& c, bool three_d)
    : Layer(std::move(name)), three_d_(three_d) {
  read_common(c);
  c.require_default("data_format", {"channels_last"});
  padding_ = c.padding("padding", "valid");
  const size_t n = three_d ? 3 : 2;
  const std::vector<int> pool = c.ints("pool_size", std::vector<int>(n, 2), n);
  const std::vector<int> strides = c.ints("strides", pool, n);
  for (size_t i = 0; i < n; ++i) {
    if (pool[i] < 1 || strides[i] < 1) c.error("pool_size and strides must be >= 1");
  }
  if (three_d && (pool[0] != 1 || strides[0] != 1)) {
    c.error(
        "MaxPooling3D pools over time only with pool_size and strides of 1 on the time axis (got {} and {})",
        pool[0], strides[0]);
  }
  pool_ = {pool[n - 2], pool[n - 1]};
  strides_ = {strides[n - 2], strides[n - 1]};
}

Shape MaxPooling::build(const Shape& in, Generator&) {
  const int frame_rank = 3;
  if (in.rank() != frame_rank + (three_d_ ? 1 : 0)) {
    fail("{}: expects {} input, got {}", where(), three_d_ ? "(T, H, W, C)" : "(H, W, C)", in.str());
  }
  const int h = in.rank() - 3;
  const Pool2dGeometry g =
      pool2d_geometry(1, static_cast<int>(in[h]), static_cast<int>(in[h + 1]), static_cast<int>(in[h + 2]),
                      pool_[0], pool_[1], strides_[0], strides_[1], padding_);
  if (g.HO <= 0 || g.WO <= 0) fail("{}: input {} is smaller than the pool", where(), in.str());
  input_shape_ = in;
  Shape out = in;
  out[h] = g.HO;
  out[h + 1] = g.WO;
  return finish_build(out);
}

Tensor MaxPooling::forward(const Tensor& x, const ForwardContext&) {
  if (!three_d_) return ops::max_pool2d(x, pool_[0], pool_[1], strides_[0], strides_[1], padding_);
  if (x.rank() != 5) fail("{}: expects (N, T, H, W, C), got {}", where(), x.shape().str());
  const Tensor y =
      ops::max_pool2d(ops::merge_time(x), pool_[0], pool_[1], strides_[0], strides_[1], padding_);
  return ops::split_time(y, x.dim(1));
}

nlohmann::json MaxPooling::config() const {
  nlohmann::json c = common_config();
  if (three_d_) {
    c["pool_size"] = {1, pool_[0], pool_[1]};
    c["strides"] = {1, strides_[0], strides_[1]};
  } else {
    c["pool_size"] = json_pair(pool_);
    c["strides"] = json_pair(strides_);
  }
  c["padding"] = padding_name(padding_);
  c["data_format"] = "channels_last";
  return c;
}

// --- Dropout -------------------------------------------------------------------------------

Dropout::Dropout(std::string name, ConfigReader& c) : Layer(std::move(name)) {
  read_common(c);
  rate_ = read_rate(c);
  c.require_default("noise_shape", {nullptr});
  c.ignore("seed");
}

Shape Dropout::build(const Shape& in, Generator&) {
  input_shape_ = in;
  return finish_build(in);
}

Tensor Dropout::forward(const Tensor& x, const ForwardContext& ctx) {
  if (!ctx.training || rate_ == 0.0) return x;
  if (ctx.rng == nullptr) fail("{}: training needs a random generator", where());
  return ops::dropout(x, static_cast<float>(rate_), ctx.rng->next());
}

nlohmann::json Dropout::config() const {
  nlohmann::json c = common_config();
  c["rate"] = rate_;
  c["noise_shape"] = nullptr;
  c["seed"] = nullptr;
  return c;
}

// --- Flatten -------------------------------------------------------------------------------

Flatten::Flatten(std::string name, ConfigReader& c) : Layer(std::move(name)) {
  read_common(c);
  c.require_default("data_format", {"channels_last"});
}

Shape Flatten::build(const Shape& in, Generator&) {
  input_shape_ = in;
  return finish_build({in.numel()});
}

Tensor Flatten::forward(const Tensor& x, const ForwardContext&) { return ops::flatten(x); }

nlohmann::json Flatten::config() const {
  nlohmann::json c = common_config();
  c["data_format"] = "channels_last";
  return c;
}

// --- BatchNormalization --------------------------------------------------------------------

BatchNormalization::BatchNormalization(std::string name, ConfigReader& c) : Layer(std::move(name)) {
  read_common(c);
  const nlohmann::json axis = c.raw("axis");
  // The channel axis only: an integer, or Keras 2's saved form [axis]; which axis it names (-1, or
  // rank - 1 counting the batch axis as Keras does) is checked in build, against the input.
  const nlohmann::json& value = axis.is_array() && axis.size() == 1 ? axis[0] : axis;
  if (!(axis.is_null() ||
        (value.is_number_integer() && value.get<int64_t>() >= -64 && value.get<int64_t>() <= 64))) {
    c.error("axis {} is not supported (one axis, the last)", brief(axis));
  }
  axis_ = axis.is_null() ? -1 : static_cast<int>(value.get<int64_t>());
  momentum_ = c.number("momentum", 0.99);
  epsilon_ = c.number("epsilon", 1e-3);
  center_ = c.boolean("center", true);
  scale_ = c.boolean("scale", true);
  beta_initializer_ = read_initializer(c, "beta_initializer", "zeros");
  gamma_initializer_ = read_initializer(c, "gamma_initializer", "ones");
  moving_mean_initializer_ = read_initializer(c, "moving_mean_initializer", "zeros");
  moving_variance_initializer_ = read_initializer(c, "moving_variance_initializer", "ones");
  beta_regularizer_ = read_regularizer(c, "beta_regularizer");
  gamma_regularizer_ = read_regularizer(c, "gamma_regularizer");
  require_no_constraints(c, {"beta_constraint", "gamma_constraint"});
  c.require_default("renorm", {false});
  c.require_default("virtual_batch_size", {nullptr});
  c.require_default("adjustment", {nullptr});
  c.require_default("fused", {nullptr, true, false});
  const nlohmann::json fused = c.raw("fused");
  fused_ = fused.is_boolean() ? (fused.get<bool>() ? 1 : 0) : -1;
  c.require_default("synchronized", {false});
}

Shape BatchNormalization::build(const Shape& in, Generator& init) {
  if (in.rank() < 1) fail("{}: needs a channel axis, got input shape {}", where(), in.str());
  // Keras counts the batch axis: the last axis of a (H, W, C) frame is 3, or -1 from the end.
  if ((axis_ < 0 ? axis_ + in.rank() + 1 : axis_) != in.rank()) {
    fail("{}: axis {} is not the channel axis of input {} (only the last axis is supported)", where(), axis_,
         in.str());
  }
  // Keras 2 trains a 4-D input (counting the batch axis; 5-D from Keras 2.6, which added 5-D
  // inputs to the fused kernel) on its fused path, unless the config says fused=False; that path
  // updates the moving variance with the unbiased batch variance, M / (M - 1) times the biased
  // one. Its other path (2-D and 3-D inputs, after a Dense or an LSTM) and Keras 3 take the
  // biased variance. (TimeDistributed hands the layer its frames: (H, W, C) is 4-D.) Standalone
  // Keras 2.0-2.3 unbiased it on every input, by assign_moving_average. Each path's own update
  // expression: kernels/batchnorm.h, moving_average.
  const int rank = in.rank() + 1;
  const bool fusable = rank == 4 || (rank == 5 && (version_.major > 2 || version_.minor >= 6));
  if (fused_ == 1 && !version_.keras3() && !fusable) {
    fail("{}: fused=True needs a 4-D input{} counting the batch axis, as Keras requires; got input {}",
         where(), version_.minor >= 6 ? " or a 5-D one" : "", in.str());
  }
  moving_update_ = version_.keras3()                                  ? MovingUpdate::Blend
                   : !version_.standalone() && fused_ != 0 && fusable ? MovingUpdate::Fused
                                                                      : MovingUpdate::AssignSub;
  input_shape_ = in;
  weights_.clear();
  const Shape channels{in.back()};
  if (scale_) add_weight("gamma", gamma_initializer_, channels, init, true, gamma_regularizer_);
  if (center_) add_weight("beta", beta_initializer_, channels, init, true, beta_regularizer_);
  add_weight("moving_mean", moving_mean_initializer_, channels, init, false);
  add_weight("moving_variance", moving_variance_initializer_, channels, init, false);
  return finish_build(in);
}

Tensor BatchNormalization::forward(const Tensor& x, const ForwardContext& ctx) {
  size_t next = 0;
  const int64_t C = input_shape_.back();
  const Tensor gamma = scale_ ? weights_[next++].value : Tensor::full({C}, 1.0, x.dtype(), x.device());
  const Tensor beta = center_ ? weights_[next++].value : Tensor::zeros({C}, x.dtype(), x.device());
  const Tensor& moving_mean = weights_[next].value;
  const Tensor& moving_var = weights_[next + 1].value;
  const float eps = static_cast<float>(epsilon_);
  // A frozen BatchNormalization runs in inference mode, training or not (Keras 2.x on TF2, Keras 3).
  if (!ctx.training || !trainable_)
    return ops::batch_norm_infer(x, gamma, beta, moving_mean, moving_var, eps);
  const ops::BatchNormBatch batch = ops::batch_norm_train(x, gamma, beta, eps);
  NoGradGuard no_grad;
  // The variance's factor on the unbiased paths, in float as each computes it: Keras 2's fused
  // kernel M / (M - 1), standalone Keras's n / (n - (1 + epsilon)). A single row keeps the biased
  // variance (a standalone Keras's factor would be negative).
  const int64_t M = x.numel() / C;
  float factor = 1.0f;
  if (M > 1 && moving_update_ == MovingUpdate::Fused) {
    factor = static_cast<float>(M) / static_cast<float>(M - 1);
  } else if (M > 1 && version_.standalone()) {
    factor = static_cast<float>(M) / (static_cast<float>(M) - (1.0f + static_cast<float>(epsilon_)));
  }
  ops::batch_norm_update_moving(moving_mean, moving_var, batch.mean, batch.var, M, momentum_, moving_update_,
                                factor);
  return batch.y;
}

nlohmann::json BatchNormalization::config() const {
  nlohmann::json c = common_config();
  c["axis"] = axis_ == -1 ? nlohmann::json(-1) : nlohmann::json::array({axis_});
  c["momentum"] = momentum_;
  c["epsilon"] = epsilon_;
  c["center"] = center_;
  c["scale"] = scale_;
  if (fused_ == 0) c["fused"] = false;  // it decides the moving variance's update (build)
  c["beta_initializer"] = beta_initializer_.to_json();
  c["gamma_initializer"] = gamma_initializer_.to_json();
  c["moving_mean_initializer"] = moving_mean_initializer_.to_json();
  c["moving_variance_initializer"] = moving_variance_initializer_.to_json();
  c["beta_regularizer"] = beta_regularizer_.to_json();
  c["gamma_regularizer"] = gamma_regularizer_.to_json();
  c["beta_constraint"] = nullptr;
  c["gamma_constraint"] = nullptr;
  return c;
}

// --- Dense ---------------------------------------------------------------------------------

Dense::Dense(std::string name, ConfigReader& c) : Layer(std::move(name)) {
  read_common(c);
  units_ = c.integer("units");
  if (units_ < 1) c.error("units must be >= 1, got {}", units_);
  activation_ = c.activation("activation", "linear");
  use_bias_ = c.boolean("use_bias", true);
  kernel_initializer_ = read_initializer(c, "kernel_initializer", "glorot_uniform");
  bias_initializer_ = read_initializer(c, "bias_initializer", "zeros");
  kernel_regularizer_ = read_regularizer(c, "kernel_regularizer");
  bias_regularizer_ = read_regularizer(c, "bias_regularizer");
  require_no_constraints(c, {"kernel_constraint", "bias_constraint"});
  // Keras 3 Dense may carry a LoRA rank; only its default, no LoRA, is implemented.
  c.require_default("lora_rank", {nullptr});
  c.require_default("lora_alpha", {nullptr});
}

Shape Dense::build(const Shape& in, Generator& init) {
  if (in.rank() < 1) fail("{}: needs a feature axis, got input shape {}", where(), in.str());
  if (activation_.softmax && in.rank() != 1) {
    fail("{}: softmax output needs (features,) input, got {}", where(), in.str());
  }
  input_shape_ = in;
  weights_.clear();
  add_weight("kernel", kernel_initializer_, {in.back(), units_}, init, true, kernel_regularizer_);
  if (use_bias_) add_weight("bias", bias_initializer_, {units_}, init, true, bias_regularizer_);
  Shape out = in;
  out[out.rank() - 1] = units_;
  return finish_build(out);
}

Tensor Dense::forward_logits(const Tensor& x, const ForwardContext&) {
  const int64_t D = weights_[0].value.dim(0);
  if (x.rank() < 2 || x.dim(-1) != D)
    fail("{}: expects (..., {}) input, got {}", where(), D, x.shape().str());
  std::vector<int64_t> out_dims = x.shape().vec();
  out_dims.back() = units_;
  Tensor y = ops::matmul(ops::reshape(x, {-1, D}), weights_[0].value);
  if (use_bias_) y = ops::bias_add(y, weights_[1].value);
  return ops::reshape(y, out_dims);
}

Tensor Dense::forward(const Tensor& x, const ForwardContext& ctx) {
  const Tensor y = forward_logits(x, ctx);
  if (activation_.softmax) return ops::softmax(y);
  return activation_.elementwise == Activation::Linear ? y : ops::activation(y, activation_.elementwise);
}

nlohmann::json Dense::config() const {
  nlohmann::json c = common_config();
  c["units"] = units_;
  write_kernel_bias_config(c, activation_, use_bias_, kernel_initializer_, bias_initializer_,
                           kernel_regularizer_, bias_regularizer_);
  return c;
}

// --- GlobalAveragePooling1D/2D/3D -----------------------------------------------------------

GlobalAveragePooling::GlobalAveragePooling(std::string name, ConfigReader& c, int spatial_rank)
    : Layer(std::move(name)),
      spatial_rank_(spatial_rank),
      class_name_(fmt::format("GlobalAveragePooling{}D", spatial_rank)) {
  read_common(c);
  c.require_default("data_format", {"channels_last"});
  keepdims_ = c.boolean("keepdims", false);
}

Shape GlobalAveragePooling::build(const Shape& in, Generator&) {
  if (in.rank() != spatial_rank_ + 1) {
    fail("{}: expects input of rank {} ({} averaged axes and the channels), got {}", where(),
         spatial_rank_ + 1, spatial_rank_, in.str());
  }
  input_shape_ = in;
  std::vector<int64_t> out =
      keepdims_ ? std::vector<int64_t>(static_cast<size_t>(spatial_rank_), 1) : std::vector<int64_t>{};
  out.push_back(in.back());
  return finish_build(Shape(out));
}

Tensor GlobalAveragePooling::forward(const Tensor& x, const ForwardContext&) {
  if (x.rank() != spatial_rank_ + 2)
    fail("{}: expects (N, {}), got {}", where(), input_shape_.str(), x.shape().str());
  const Tensor y = ops::global_average_pool(x);  // (N, C)
  if (!keepdims_) return y;
  std::vector<int64_t> dims = output_shape_.vec();
  dims.insert(dims.begin(), x.dim(0));
  return ops::reshape(y, dims);
}

nlohmann::json GlobalAveragePooling::config() const {
  nlohmann::json c = common_config();
  c["data_format"] = "channels_last";
  c["keepdims"] = keepdims_;
  return c;
}

// --- SpatialDropout1D/2D/3D ------------------------------------------------------------------

SpatialDropout::SpatialDropout(std::string name, ConfigReader& c, int spatial_rank)
    : Layer(std::move(name)),
      spatial_rank_(spatial_rank),
      class_name_(fmt::format("SpatialDropout{}D", spatial_rank)) {
  read_common(c);
  rate_ = read_rate(c);
  c.require_default("data_format", {"channels_last"});
  c.require_default("noise_shape", {nullptr});
  c.ignore("seed");
}

Shape SpatialDropout::build(const Shape& in, Generator&) {
  if (in.rank() != spatial_rank_ + 1) {
    fail("{}: expects input of rank {} ({} spatial axes and the channels), got {}", where(),
         spatial_rank_ + 1, spatial_rank_, in.str());
  }
  input_shape_ = in;
  return finish_build(in);
}

Tensor SpatialDropout::forward(const Tensor& x, const ForwardContext& ctx) {
  if (!ctx.training || rate_ == 0.0) return x;
  if (ctx.rng == nullptr) fail("{}: training needs a random generator", where());
  return ops::spatial_dropout(x, static_cast<float>(rate_), ctx.rng->next());
}

nlohmann::json SpatialDropout::config() const {
  nlohmann::json c = common_config();
  c["rate"] = rate_;
  c["noise_shape"] = nullptr;
  c["seed"] = nullptr;
  c["data_format"] = "channels_last";
  return c;
}

// --- TimeDistributed -----------------------------------------------------------------------

TimeDistributed::TimeDistributed(std::string name, ConfigReader& c, std::unique_ptr<Layer> inner)
    : Layer(std::move(name)), inner_(std::move(inner)) {
  read_common(c);
}

Shape TimeDistributed::build(const Shape& in, Generator& init) {
  if (in.rank() < 2) fail("{}: expects (T, ...) input, got {}", where(), in.str());
  std::vector<int64_t> frame = in.vec();
  const int64_t T = frame.front();
  frame.erase(frame.begin());
  std::vector<int64_t> out = inner_->build(Shape(frame), init).vec();
  out.insert(out.begin(), T);
  input_shape_ = in;
  if (!trainable_) {  // a frozen wrapper freezes what it wraps (Keras's trainable setter)
    for (Weight& w : inner_->weights()) {
      w.trainable = false;
      w.value.set_requires_grad(false);
    }
  }
  return finish_build(Shape(out));
}

Tensor TimeDistributed::forward(const Tensor& x, const ForwardContext& ctx) {
  if (x.rank() < 3) fail("{}: expects (N, T, ...) input, got {}", where(), x.shape().str());
  // Keras 2 calls the inner layer through __call__ (its activity regularizer applies, over N*T
  // rows); Keras 3 through call() (it does not).
  const Tensor merged = ops::merge_time(x);
  const Tensor y = version_.keras3() ? inner_->forward(merged, ctx) : inner_->apply(merged, ctx);
  return ops::split_time(y, x.dim(1));
}

nlohmann::json TimeDistributed::config() const {
  nlohmann::json c = common_config();
  c["layer"] = {{"class_name", inner_->class_name()}, {"config", inner_->config()}};
  return c;
}

// --- Conv2D + MaxPooling2D as one kernel ----------------------------------------------------

ConvPool conv_pool_pair(const Layer& first, const Layer& second) {
  const auto* td_first = dynamic_cast<const TimeDistributed*>(&first);
  const auto* td_second = dynamic_cast<const TimeDistributed*>(&second);
  if ((td_first == nullptr) != (td_second == nullptr)) return {};
  const Layer& a = td_first != nullptr ? td_first->inner() : first;
  const Layer& b = td_second != nullptr ? td_second->inner() : second;
  const auto* conv = dynamic_cast<const Conv2D*>(&a);
  const auto* pool = dynamic_cast<const MaxPooling*>(&b);
  if (conv == nullptr || pool == nullptr || pool->three_d()) return {};
  for (const Layer* layer : {&first, &second, &a, &b}) {
    if (layer->has_activity_regularizer()) return {};
  }
  return {conv, pool, td_first != nullptr};
}

ConvPool fold_dropout(ConvPool pair, const Layer& next) {
  const auto* td = dynamic_cast<const TimeDistributed*>(&next);
  const auto* dropout = dynamic_cast<const Dropout*>(td != nullptr ? &td->inner() : &next);
  if (pair.conv == nullptr || dropout == nullptr || next.has_activity_regularizer() ||
      dropout->has_activity_regularizer()) {
    return pair;
  }
  const Activation act = pair.conv->activation();
  if (act != Activation::Relu && act != Activation::Linear) return pair;  // act' from the dropped output
  pair.dropout = dropout;
  return pair;
}

Tensor forward_conv_pool(const ConvPool& pair, const Tensor& x, const ForwardContext& ctx) {
  // The Dropout layer's own draw, at the same point of the generator's sequence.
  float rate = 0.0f;
  RandomDraw draw;
  if (pair.dropout != nullptr && ctx.training && pair.dropout->rate() != 0.0) {
    if (ctx.rng == nullptr) fail("{}: training needs a random generator", pair.dropout->name());
    rate = static_cast<float>(pair.dropout->rate());
    draw = ctx.rng->next();
  }
  if (!pair.time_distributed) return pair.conv->forward_pooled(x, *pair.pool, rate, draw);
  if (x.rank() < 3) fail("{}: expects (N, T, ...) input, got {}", pair.conv->name(), x.shape().str());
  return ops::split_time(pair.conv->forward_pooled(ops::merge_time(x), *pair.pool, rate, draw), x.dim(1));
}

}  // namespace hisvid::layers
