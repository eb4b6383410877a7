// bench/step.h — one training step and one evaluation step of a zoo model on synthetic input,
// shared by the Google Benchmark suite and `hisvid bench`, so both time the same code.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "engine/kernel_profile.h"
#include "engine/optimizer.h"
#include "engine/random.h"
#include "models/inference_step.h"
#include "models/sequential.h"
#include "models/training_step.h"

namespace hisvid::bench {

using Clock = std::chrono::steady_clock;
double ms_between(Clock::time_point a, Clock::time_point b);
// The median of the timings (the upper one of an even count; 0 when there are none).
double median(std::vector<double> values);

class StepRunner {
 public:
  // A zoo model (or spec file) built for `classes` classes on `device`, inputs of `batch` clips.
  StepRunner(const std::string& model, int classes, int batch, Device device, uint64_t seed = 1);

  // forward (training mode) + softmax cross-entropy + backward + Adam step.
  void train_step();
  // The step of models/training_step.h replayed from a CUDA graph: the same work from uint8
  // clips already on the device (scaled there) plus the step's metrics; steps 1 and 2 run
  // directly, step 3 is captured. Throws when the capture fails, with CUDA's reason.
  void graph_train_step();
  // forward in inference mode, no tape.
  void eval_step();
  // The step of models/inference_step.h replayed from a CUDA graph: the same forward from uint8
  // clips already on the device (scaled there), to the class probabilities; steps 1 and 2 run
  // directly, step 3 is captured. Throws when the capture fails, with CUDA's reason.
  void graph_eval_step();
  // Waits for the device (timing boundaries).
  void sync() const;

  models::Sequential& model() { return model_; }
  const Tensor& input() const { return x_; }
  const Tensor& targets() const { return y_; }
  Generator& rng() { return rng_; }
  int batch() const { return batch_; }

 private:
  // The benchmark's clips as uint8 pixels, what the graph steps stage (made once).
  const std::vector<uint8_t>& pixels();

  models::Sequential model_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<models::TrainingStep> graph_step_;
  std::unique_ptr<models::InferenceStep> graph_eval_;
  std::vector<uint8_t> pixels_;  // the graph steps' clips
  std::vector<int> labels_;
  std::vector<Tensor> weights_;
  Tensor x_, y_;
  Generator rng_;
  int batch_;
  Device device_;
};

// Where a training step's time goes, Caffe's `caffe time`: each layer's forward timed around
// its call, its backward as the sum of the backward nodes it recorded (TapeLabel), then the
// loss and the Adam step. The device is synchronised around every layer and every backward
// node, so on a GPU the total exceeds the plain step time (launch overlap is lost).
struct LayerTime {
  std::string name;  // "time_distributed (Conv2D)"
  double forward_ms = 0.0, backward_ms = 0.0;
};
struct LayerProfile {
  std::vector<LayerTime> rows;  // the layers in order, then the loss, then the Adam step
  double total_ms = 0.0;
  int batch = 0, steps = 0;
  Device device;
};

// Medians over `steps` training steps of runner's model after `warmup` untimed ones.
LayerProfile profile_training_step(StepRunner& runner, int steps, int warmup);
// The profile as a table with each row's share of the total.
std::string format_layer_profile(const LayerProfile& profile);

// Where a step's device time goes kernel by kernel (engine/kernel_profile.h): `steps` training
// steps (train) or evaluation steps of runner's model after `warmup` unprofiled ones, each
// kernel's calls and milliseconds per step, the most time first. Unlike the per-layer profile
// nothing is synchronised between calls: the steps run as they do unprofiled, plus the events.
struct KernelTimes {
  std::vector<KernelProfile::Row> rows;  // calls over all the steps, ms per step
  double total_ms = 0.0;                 // the rows' sum, per step
  int batch = 0, steps = 0;
  bool train = true;
  Device device;
};
KernelTimes profile_kernels(StepRunner& runner, bool train, int steps, int warmup);
// The profile as a table: kernel, calls per step, ms per step, share.
std::string format_kernel_profile(const KernelTimes& times);

}  // namespace hisvid::bench
