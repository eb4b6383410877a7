#include "bench/step.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "layers/layer.h"
#include "models/loss.h"
#include "models/zoo.h"

namespace hisvid::bench {

StepRunner::StepRunner(const std::string& model, int classes, int batch, Device device, uint64_t seed)
    : model_(models::load_spec(model, classes)), rng_(seed), batch_(batch), device_(device) {
  model_.build(seed);
  model_.to(device);
  optimizer_ = make_optimizer("adam");
  weights_ = model_.trainable_weights();
  std::vector<int64_t> dims = model_.input_shape().vec();
  dims.insert(dims.begin(), batch);
  x_ = Generator(seed + 1).uniform(Shape(dims), 0.0, 1.0).to(device);
  std::vector<float> onehot(static_cast<size_t>(batch) * classes, 0.0f);
  for (int i = 0; i < batch; ++i) onehot[static_cast<size_t>(i) * classes + i % classes] = 1.0f;
  y_ = Tensor::from_vector(onehot, {batch, classes}, DType::Float32, device);
}

void StepRunner::train_step() {
  if (model_.binary()) {  // one sigmoid unit: the trainer's binary cross-entropy against column 1
    backward(models::model_loss(model_, x_, y_, {true, &rng_}).loss);
  } else {
    const Tensor logits = model_.forward(x_, {true, &rng_}, models::Output::Logits);
    backward(ops::softmax_cross_entropy(logits, y_).loss);
  }
  optimizer_->step(weights_);
  zero_grad(weights_);
}

const std::vector<uint8_t>& StepRunner::pixels() {
  if (pixels_.empty()) {
    const std::vector<double> x = x_.to_vector();  // the benchmark's clips, back to pixels
    pixels_.resize(x.size());
    for (size_t i = 0; i < x.size(); ++i) pixels_[i] = static_cast<uint8_t>(x[i] * 255.0);
  }
  return pixels_;
}

void StepRunner::graph_train_step() {
  if (graph_step_ == nullptr) {
    const int classes = static_cast<int>(y_.dim(1));
    graph_step_ = std::make_unique<models::TrainingStep>(model_, *optimizer_, rng_, io::Augmentation{},
                                                         model_.input_shape(), classes, true);
    for (int i = 0; i < batch_; ++i) labels_.push_back(i % classes);
    graph_step_->run(pixels(), labels_);
    return;
  }
  graph_step_->run_again();
  const std::string& status = graph_step_->graph_status();
  if (!status.empty() && status != "replaying") fail("{}", status);
}

void StepRunner::eval_step() {
  NoGradGuard no_grad;
  model_.forward(x_, {});
}

void StepRunner::graph_eval_step() {
  if (graph_eval_ == nullptr) {
    graph_eval_ = std::make_unique<models::InferenceStep>(model_, model_.input_shape(), true);
    graph_eval_->run(pixels(), {});
    return;
  }
  graph_eval_->run_again();
  const std::string& status = graph_eval_->graph_status();
  if (!status.empty() && status != "replaying") fail("{}", status);
}

void StepRunner::sync() const { synchronize(device_); }

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

namespace {

// Backward time per node label (layer index), synchronising around each node.
class LayerProfiler final : public BackwardProfiler {
 public:
  explicit LayerProfiler(Device device) : device_(device) {}
  void before(const Node&) override {
    synchronize(device_);
    start_ = Clock::now();
  }
  void after(const Node& node) override {
    synchronize(device_);
    ms[node.label] += ms_between(start_, Clock::now());
  }
  std::map<int, double> ms;

 private:
  Device device_;
  Clock::time_point start_;
};

std::string layer_name(const layers::Layer& layer) {
  if (const auto* td = dynamic_cast<const layers::TimeDistributed*>(&layer)) {
    return fmt::format("{} ({})", layer.name(), td->inner().class_name());
  }
  return fmt::format("{} ({})", layer.name(), layer.class_name());
}

}  // namespace

LayerProfile profile_training_step(StepRunner& runner, int steps, int warmup) {
  for (int i = 0; i < warmup; ++i) runner.train_step();
  const std::vector<layers::Layer*> layers = runner.model().layers();
  const Device device = runner.input().device();
  // The steps forward runs (a fused Conv2D + MaxPooling2D is one), then the last layer.
  const std::vector<models::Sequential::Step> steps_run = runner.model().steps(device);
  const int last_label = static_cast<int>(steps_run.size()), loss_label = last_label + 1;
  std::map<int, std::vector<double>> forward_ms, backward_ms;
  std::vector<double> optimizer_ms;
  std::unique_ptr<Optimizer> adam = make_optimizer("adam");
  const std::vector<Tensor> weights = runner.model().trainable_weights();
  for (int step = 0; step < steps; ++step) {
    runner.sync();
    Tensor y = runner.input();
    const layers::ForwardContext ctx{true, &runner.rng()};
    for (int i = 0; i <= last_label; ++i) {
      const TapeLabel label(i);
      const Clock::time_point t0 = Clock::now();
      y = i == last_label ? layers.back()->forward_logits(y, ctx)
                          : runner.model().run_step(steps_run[static_cast<size_t>(i)], y, ctx);
      runner.sync();
      forward_ms[i].push_back(ms_between(t0, Clock::now()));
    }
    Tensor loss;
    {
      const TapeLabel label(loss_label);
      const Clock::time_point t0 = Clock::now();
      loss = ops::softmax_cross_entropy(y, runner.targets()).loss;
      runner.sync();
      forward_ms[loss_label].push_back(ms_between(t0, Clock::now()));
    }
    LayerProfiler profiler(device);
    Tape::current().set_profiler(&profiler);
    backward(loss);
    Tape::current().set_profiler(nullptr);
    for (int i = 0; i <= loss_label; ++i) backward_ms[i].push_back(profiler.ms[i]);
    const Clock::time_point t0 = Clock::now();
    adam->step(weights);
    zero_grad(weights);
    runner.sync();
    optimizer_ms.push_back(ms_between(t0, Clock::now()));
  }

  LayerProfile profile;
  profile.batch = runner.batch();
  profile.steps = steps;
  profile.device = device;
  for (int i = 0; i <= last_label; ++i) {
    std::string name = layer_name(*layers.back());
    if (i < last_label) {
      const models::Sequential::Step& s = steps_run[static_cast<size_t>(i)];
      name = layer_name(*layers[s.first]);
      for (size_t k = 1; k < s.count; ++k) name += " + " + layer_name(*layers[s.first + k]);
    }
    profile.rows.push_back({name, median(forward_ms[i]), median(backward_ms[i])});
  }
  profile.rows.push_back(
      {"softmax cross-entropy", median(forward_ms[loss_label]), median(backward_ms[loss_label])});
  profile.rows.push_back({"Adam step", median(optimizer_ms), 0.0});
  for (const LayerTime& row : profile.rows) profile.total_ms += row.forward_ms + row.backward_ms;
  return profile;
}

std::string format_layer_profile(const LayerProfile& profile) {
  std::string out = fmt::format("per layer, training step at batch {} on {} (median of {} steps):\n",
                                profile.batch, profile.device.str(), profile.steps);
  out += fmt::format("{:<64}{:>12}{:>12}{:>9}\n", "layer", "forward ms", "backward ms", "share");
  for (const LayerTime& row : profile.rows) {
    const double share =
        profile.total_ms > 0.0 ? 100.0 * (row.forward_ms + row.backward_ms) / profile.total_ms : 0.0;
    out +=
        fmt::format("{:<64}{:>12.3f}{:>12.3f}{:>8.1f}%\n", row.name, row.forward_ms, row.backward_ms, share);
  }
  out += fmt::format("{:<64}{:>24.3f}", "total (synchronised per layer)", profile.total_ms);
  return out;
}

KernelTimes profile_kernels(StepRunner& runner, bool train, int steps, int warmup) {
  for (int i = 0; i < warmup; ++i) train ? runner.train_step() : runner.eval_step();
  const Device device = runner.input().device();
  runner.sync();
  KernelTimes times;
  {
    KernelProfile profile(device);
    for (int i = 0; i < steps; ++i) train ? runner.train_step() : runner.eval_step();
    times.rows = profile.rows();
  }
  for (KernelProfile::Row& row : times.rows) {
    row.ms /= steps;
    times.total_ms += row.ms;
  }
  times.batch = runner.batch();
  times.steps = steps;
  times.train = train;
  times.device = device;
  return times;
}

std::string format_kernel_profile(const KernelTimes& times) {
  std::string out =
      fmt::format("per kernel, {} step at batch {} on {} (mean of {} steps):\n",
                  times.train ? "training" : "evaluation", times.batch, times.device.str(), times.steps);
  out += fmt::format("{:<40}{:>12}{:>12}{:>9}\n", "kernel", "calls/step", "ms/step", "share");
  for (const KernelProfile::Row& row : times.rows) {
    const double share = times.total_ms > 0.0 ? 100.0 * row.ms / times.total_ms : 0.0;
    out += fmt::format("{:<40}{:>12.1f}{:>12.3f}{:>8.1f}%\n", row.kernel, double(row.calls) / times.steps,
                       row.ms, share);
  }
  out += fmt::format("{:<40}{:>24.3f}", "total (each call between two events)", times.total_ms);
  return out;
}

}  // namespace hisvid::bench
