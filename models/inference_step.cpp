#include "models/inference_step.h"

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "io/batch.h"
#include "models/loss.h"

namespace hisvid::models {

InferenceStep::InferenceStep(Sequential& model, const Shape& clip, bool cuda_graphs)
    : model_(model),
      clip_(clip),
      cuda_graphs_(cuda_graphs),
      device_(model.device()),
      staging_(device_, static_cast<size_t>(clip.numel() > 0 ? clip.numel() : 0), model.num_classes()) {
  if (clip_.rank() != 4 || clip_.numel() <= 0)
    fail("inference step: a clip must be (T, H, W, C), got {}", clip_.str());
  if (model_.num_classes() < 1) fail("inference step: model '{}' has no classes", model_.name());
  sums_ = ops::step_sums(device_);
}

void InferenceStep::zero_sums() { sums_.zero_(); }

const Tensor& InferenceStep::run(const std::vector<uint8_t>& pixels, const std::vector<int>& labels) {
  const size_t values = static_cast<size_t>(clip_.numel());
  if (pixels.empty() || pixels.size() % values != 0) {
    fail("inference step: {} bytes of pixels are not whole clips of {} values", pixels.size(), values);
  }
  const size_t batch = pixels.size() / values;
  const int K = model_.num_classes();
  if (!labels.empty() && labels.size() != batch) {
    fail("inference step: {} labels for {} clips", labels.size(), batch);
  }
  for (size_t b = 0; b < labels.size(); ++b) {
    if (labels[b] < 0 || labels[b] >= K) {
      fail("inference step: clip {} has label {}, but the model has {} classes", b, labels[b], K);
    }
  }
  staging_.fill(batch, pixels, labels.empty() ? std::vector<float>{} : one_hot_rows(labels, K));
  last_batch_ = batch;
  last_labelled_ = !labels.empty();
  return step(batch, last_labelled_);
}

const Tensor& InferenceStep::run_again() {
  if (last_batch_ == 0) fail("inference step: run_again before any run");
  return step(last_batch_, last_labelled_);
}

void InferenceStep::record(size_t batch, bool labelled) {
  NoGradGuard no_grad;
  BatchStaging::Staged& staged = staging_.at(batch);
  const Tensor x = io::clips_to_batch(
      static_cast<const uint8_t*>(staged.pixels->data),
      Shape{static_cast<int64_t>(batch), clip_[0], clip_[1], clip_[2], clip_[3]}, {}, nullptr,
      device_);  // (B,T,H,W,C)
  if (labelled) {
    const LossTerms terms = model_loss(model_, x, staged.targets, {});
    add_step_metrics(model_, terms, staged.targets, sums_, static_cast<double>(batch));
    output_ = class_probabilities(model_, terms.probs);
  } else {
    output_ = class_probabilities(model_, model_.forward(x, {}));
  }
}

const Tensor& InferenceStep::step(size_t batch, bool labelled) {
  if (graph_ != nullptr && batch == graph_batch_ && labelled == graph_labelled_) {
    graph_->replay();
    return graph_output_;
  }
  const bool graphs = cuda_graphs_ && device_.is_cuda() && graph_status_.empty();
  if (graphs && graph_batch_ == 0) graph_batch_ = batch, graph_labelled_ = labelled;
  const bool graph_kind = batch == graph_batch_ && labelled == graph_labelled_;
  if (graphs && graph_kind && direct_steps_ >= kWarmupSteps) {
    // Capturing runs nothing: the graph's first replay is this step.
    try {
      graph_ = cuda_capture(device_, [&] { record(batch, labelled); });
      graph_output_ = output_;
      graph_status_ = "replaying";
    } catch (const std::exception& e) {
      graph_status_ = e.what();
    }
    output_ = Tensor();
    if (graph_ != nullptr) {
      graph_->replay();
      return graph_output_;
    }
  }
  record(batch, labelled);
  if (graph_kind) ++direct_steps_;
  return output_;
}

}  // namespace hisvid::models
