#include "models/training_step.h"

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "kernels/softmax.h"
#include "models/loss.h"

namespace hisvid::models {

TrainingStep::TrainingStep(Sequential& model, Optimizer& optimizer, Generator& rng,
                           const io::Augmentation& augmentation, const Shape& clip, int classes,
                           bool cuda_graphs)
    : model_(model),
      optimizer_(optimizer),
      rng_(rng),
      augmentation_(augmentation),
      clip_(clip),
      classes_(classes),
      cuda_graphs_(cuda_graphs),
      device_(model.device()),
      weights_(model.trainable_weights()),
      staging_(device_, static_cast<size_t>(clip.numel() > 0 ? clip.numel() : 0), classes) {
  if (clip_.rank() != 4 || clip_.numel() <= 0)
    fail("training step: a clip must be (T, H, W, C), got {}", clip_.str());
  if (classes_ < 1) fail("training step: {} classes", classes_);
  if (weights_.empty()) fail("training step: model '{}' has no trainable weights", model_.name());
  for (const Tensor& w : weights_) {
    if (w.dtype() != weights_[0].dtype()) {
      fail("training step: model '{}' mixes {} and {} weights; one step scalar serves them all",
           model_.name(), dtype_name(weights_[0].dtype()), dtype_name(w.dtype()));
    }
  }
  augmentation_.validate("training step", &rng_);
  sums_ = ops::step_sums(device_);
  scalar_ = Tensor::zeros(Shape{1}, weights_[0].dtype(), device_);
  base_ = std::make_unique<Storage>(sizeof(int64_t), device_);
  optimizer_.read_scalar_from(scalar_);
}

TrainingStep::~TrainingStep() { optimizer_.read_scalar_from(Tensor()); }

void TrainingStep::zero_sums() { sums_.zero_(); }

void TrainingStep::run(const std::vector<uint8_t>& pixels, const std::vector<int>& labels) {
  const size_t batch = labels.size(), values = static_cast<size_t>(clip_.numel());
  if (batch == 0) fail("training step: no clips");
  if (pixels.size() != batch * values) {
    fail("training step: {} bytes of pixels for {} clips of {} values", pixels.size(), batch, values);
  }
  for (size_t b = 0; b < batch; ++b) {
    if (labels[b] < 0 || labels[b] >= classes_) {
      fail("training step: clip {} has label {}, but the model has {} classes", b, labels[b], classes_);
    }
  }
  staging_.fill(batch, pixels, one_hot_rows(labels, classes_));
  last_batch_ = batch;
  step(batch);
}

void TrainingStep::run_again() {
  if (last_batch_ == 0) fail("training step: run_again before any run");
  step(last_batch_);
}

void TrainingStep::stage_step_scalars() {
  const int64_t base = static_cast<int64_t>(rng_.offset());
  copy_bytes(base_->data, device_, &base, Device::cpu(), sizeof(base));
  optimizer_.stage_scalar();
}

void TrainingStep::record(BatchStaging::Staged& staged, size_t batch) {
  // Draws relative to base_ from here to the end of the step, even when the step throws.
  struct Relative {
    Generator& rng;
    bool open = true;
    ~Relative() {
      if (open) rng.end_relative();
    }
  } relative{rng_};
  rng_.begin_relative(static_cast<const int64_t*>(base_->data));

  const Tensor x =
      io::clips_to_batch(static_cast<const uint8_t*>(staged.pixels->data),
                         Shape{static_cast<int64_t>(batch), clip_[0], clip_[1], clip_[2], clip_[3]},
                         augmentation_, &rng_, device_);  // (B,T,H,W,C)

  const LossTerms terms = model_loss(model_, x, staged.targets, {true, &rng_});
  add_step_metrics(model_, terms, staged.targets, sums_, static_cast<double>(batch));
  backward(terms.loss);
  optimizer_.step(weights_, sums_);
  zero_grad(weights_);
  relative.open = false;
  rng_.end_relative();
}

void TrainingStep::step(size_t batch) {
  stage_step_scalars();
  const auto replay = [&] {
    graph_->replay();
    rng_.set_offset(rng_.offset() + draws_per_step_);
    optimizer_.set_iterations(optimizer_.iterations() + 1);
  };
  if (graph_ != nullptr && batch == graph_batch_) {
    replay();
    return;
  }
  const bool graphs = cuda_graphs_ && device_.is_cuda() && graph_status_.empty();
  if (graphs && graph_batch_ == 0) graph_batch_ = batch;
  if (graphs && batch == graph_batch_ && direct_steps_ >= kWarmupSteps) {
    // Capturing runs nothing: the host-side counters the recording advanced are set back, and
    // the graph's first replay is this step.
    const uint64_t offset = rng_.offset();
    const int64_t iterations = optimizer_.iterations();
    try {
      graph_ = cuda_capture(device_, [&] { record(staging_.at(batch), batch); });
      draws_per_step_ = rng_.offset() - offset;
      graph_status_ = "replaying";
    } catch (const std::exception& e) {
      graph_status_ = e.what();
      Tape::current().clear();  // what the failed recording left
      zero_grad(weights_);
    }
    rng_.set_offset(offset);
    optimizer_.set_iterations(iterations);
    if (graph_ != nullptr) {
      replay();
      return;
    }
  }
  record(staging_.at(batch), batch);
  if (batch == graph_batch_) ++direct_steps_;
}

}  // namespace hisvid::models
