// models/explain.cpp — Grad-CAM per frame and the occlusion check of models/explain.h.
//
// Dimension letters: T frames, h x w the explained layer's spatial size, F its filters, K
// classes.
#include "models/explain.h"

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "models/inference.h"

namespace hisvid::models {

namespace {

// Clips per forward of the occlusion check: its memory stays a few clips whatever T is (the
// seeds' 20 frames of 64 x 64, or a Keras model's 160).
constexpr size_t kOcclusionBatch = 8;

bool is_convolution(const layers::Layer& layer) {
  const std::string name = layer.class_name();
  if (name == "Conv2D" || name == "ConvLSTM2D") return true;
  if (name != "TimeDistributed") return false;
  return std::string(static_cast<const layers::TimeDistributed&>(layer).inner().class_name()) == "Conv2D";
}

// Within its scope the model's weights record no gradient: backward then runs only the nodes
// between the explained layer and the score, and leaves the weights' gradients untouched.
class FrozenWeights {
 public:
  explicit FrozenWeights(const Sequential& model) : weights_(model.trainable_weights()) {
    for (Tensor& w : weights_) {
      was_.push_back(w.requires_grad());
      w.set_requires_grad(false);
    }
  }
  ~FrozenWeights() {
    for (size_t i = 0; i < weights_.size(); ++i) weights_[i].set_requires_grad(was_[i]);
  }
  FrozenWeights(const FrozenWeights&) = delete;
  FrozenWeights& operator=(const FrozenWeights&) = delete;

 private:
  std::vector<Tensor> weights_;
  std::vector<bool> was_;
};

void check_class(const Sequential& model, int class_index) {
  if (class_index < 0 || class_index >= model.num_classes()) {
    fail("model '{}': class {} does not exist (the model has {} classes)", model.name(), class_index,
         model.num_classes());
  }
}

}  // namespace

std::vector<int> explainable_layers(const Sequential& model) {
  const std::vector<layers::Layer*> all = model.layers();
  std::vector<int> found;
  for (size_t i = 0; i + 1 < all.size(); ++i) {
    if (is_convolution(*all[i]) && all[i]->output_shape().rank() == 4) found.push_back(static_cast<int>(i));
  }
  return found;
}

int default_explain_layer(const Sequential& model) {
  const std::vector<int> found = explainable_layers(model);
  if (found.empty()) {
    fail(
        "model '{}': no layer to explain: Grad-CAM needs a Conv2D (bare or in TimeDistributed) or a "
        "ConvLSTM2D "
        "returning sequences, whose output keeps the frames apart",
        model.name());
  }
  return found.back();
}

int explain_layer_by_name(const Sequential& model, const std::string& name) {
  const std::vector<layers::Layer*> all = model.layers();
  const std::vector<int> found = explainable_layers(model);
  std::string choices;
  for (int i : found) choices += (choices.empty() ? "" : ", ") + all[static_cast<size_t>(i)]->name();
  for (size_t i = 0; i < all.size(); ++i) {
    // A TimeDistributed layer answers to its own name and to its inner layer's (Keras names both).
    const auto* wrapper = dynamic_cast<const layers::TimeDistributed*>(all[i]);
    if (all[i]->name() != name && (wrapper == nullptr || wrapper->inner().name() != name)) continue;
    if (std::find(found.begin(), found.end(), static_cast<int>(i)) != found.end()) return static_cast<int>(i);
    fail(
        "--layer {}: a layer of class {} with output {}, not a convolution whose output keeps the frames "
        "apart "
        "(model '{}' can explain: {})",
        name, all[i]->class_name(), all[i]->output_shape().str(), model.name(),
        choices.empty() ? "none" : choices);
  }
  fail("--layer {}: model '{}' has no layer of that name (it can explain: {})", name, model.name(),
       choices.empty() ? "none" : choices);
}

Tensor class_score_from(Sequential& model, const Tensor& activation, int layer, int class_index) {
  check_class(model, class_index);
  const std::vector<layers::Layer*> all = model.layers();
  if (layer < 0 || layer + 1 >= static_cast<int>(all.size())) {
    fail("model '{}': layer {} is not followed by an output layer", model.name(), layer);
  }
  const layers::ForwardContext inference;
  Tensor y = activation;
  for (size_t i = static_cast<size_t>(layer) + 1; i + 1 < all.size(); ++i) y = all[i]->apply(y, inference);
  if (model.head() == Head::None) {
    fail("model '{}': the last layer '{}' has no softmax or sigmoid: there is no class score to explain",
         model.name(), all.back()->name());
  }
  const Tensor logits = all.back()->forward_logits(y, inference);  // (1, K), or (1, 1) for a sigmoid head
  if (model.binary()) return class_index == 1 ? ops::sum(logits) : ops::scale(ops::sum(logits), -1.0);
  return ops::sum(ops::slice(logits, 1, class_index, 1));
}

LayerGradient class_score_gradient(Sequential& model, const Tensor& x, int layer, int class_index) {
  if (x.rank() != 5 || x.dim(0) != 1)
    fail("explain: one clip (1, T, H, W, C) is explained, got {}", x.shape().str());
  const std::vector<layers::Layer*> all = model.layers();
  if (layer < 0 || layer >= static_cast<int>(all.size()))
    fail("model '{}': no layer {}", model.name(), layer);
  LayerGradient out;
  {
    NoGradGuard no_grad;
    Tensor y = x.to(model.device());
    for (int i = 0; i <= layer; ++i) y = all[static_cast<size_t>(i)]->apply(y, {});
    out.activation = y.detach();
  }
  FrozenWeights frozen(model);
  Tensor activation = out.activation;
  activation.set_requires_grad(true);
  const Tensor score = class_score_from(model, activation, layer, class_index);
  out.score = score.item();
  Tape::current().backward(score);
  out.gradient = activation.grad();
  activation.zero_grad();
  activation.set_requires_grad(false);
  if (!out.gradient.defined())
    out.gradient = Tensor::zeros(activation.shape(), activation.dtype(), activation.device());
  return out;
}

std::vector<std::vector<double>> grad_cam_maps(const LayerGradient& gradient) {
  const Shape& shape = gradient.activation.shape();  // (1, T, h, w, F)
  const int64_t T = shape[1], h = shape[2], w = shape[3], F = shape[4];
  const std::vector<double> a = gradient.activation.to_vector(), g = gradient.gradient.to_vector();
  std::vector<std::vector<double>> maps(static_cast<size_t>(T),
                                        std::vector<double>(static_cast<size_t>(h * w)));
  std::vector<double> weight(static_cast<size_t>(F));
  for (int64_t t = 0; t < T; ++t) {
    const size_t frame = static_cast<size_t>(t * h * w * F);
    std::fill(weight.begin(), weight.end(), 0.0);
    for (int64_t p = 0; p < h * w; ++p) {
      for (int64_t f = 0; f < F; ++f)
        weight[static_cast<size_t>(f)] += g[frame + static_cast<size_t>(p * F + f)];
    }
    for (double& v : weight) v /= static_cast<double>(h * w);
    for (int64_t p = 0; p < h * w; ++p) {
      double sum = 0.0;
      for (int64_t f = 0; f < F; ++f)
        sum += weight[static_cast<size_t>(f)] * a[frame + static_cast<size_t>(p * F + f)];
      maps[static_cast<size_t>(t)][static_cast<size_t>(p)] = std::max(sum, 0.0);
    }
  }
  return maps;
}

Explanation explain_clip(Sequential& model, const std::vector<uint8_t>& clip,
                         const io::ExtractionSettings& settings, int layer, int class_index) {
  if (layer < 0) layer = default_explain_layer(model);
  Explanation out;
  out.layer = model.layers()[static_cast<size_t>(layer)]->name();
  // One pass classifies the clip and, for the occlusion check, the clip with frame t black for
  // every t, kOcclusionBatch clips at a time.
  const size_t frame_bytes = settings.frame_bytes();
  std::vector<std::vector<uint8_t>> clips(static_cast<size_t>(settings.sequence_length) + 1, clip);
  for (size_t t = 0; t + 1 < clips.size(); ++t) {
    std::fill_n(clips[t + 1].begin() + static_cast<std::ptrdiff_t>(t * frame_bytes), frame_bytes, uint8_t{0});
  }
  const std::vector<std::vector<double>> probabilities =
      classify_clips(model, clips, settings, kOcclusionBatch);
  out.probabilities = probabilities[0];
  if (class_index < 0) {
    class_index = static_cast<int>(std::max_element(out.probabilities.begin(), out.probabilities.end()) -
                                   out.probabilities.begin());
  }
  check_class(model, class_index);
  out.class_index = class_index;

  const LayerGradient gradient =
      class_score_gradient(model, clip_batch({clip}, settings, model.device()), layer, class_index);
  out.maps = grad_cam_maps(gradient);
  out.frames = static_cast<int>(gradient.activation.dim(1));
  out.map_height = static_cast<int>(gradient.activation.dim(2));
  out.map_width = static_cast<int>(gradient.activation.dim(3));
  double total = 0.0;
  for (const std::vector<double>& map : out.maps) {
    double mass = 0.0;
    for (double v : map) mass += v;
    out.frame_weights.push_back(mass);
    total += mass;
  }
  for (double& v : out.frame_weights) v = total > 0.0 ? v / total : 0.0;

  for (size_t t = 1; t < probabilities.size(); ++t) {
    out.occluded.push_back(probabilities[t][static_cast<size_t>(class_index)]);
  }
  return out;
}

}  // namespace hisvid::models
