// models/inference_step.h — one evaluation step of a Sequential model from the clips' uint8
// pixels, reading nothing back on the host; run directly, or replayed from a CUDA graph.
//
// A step: the clips' pixels (and, with labels, their one-hot targets) are staged into device
// memory (models/batch_staging.h); there the pixels are scaled (kernels/clips.h, no
// augmentation), the model runs forward in inference mode and the class probabilities
// (class_probabilities) land in the step's output; with labels, the batch's loss and correct
// count go into sums() (ops::step_sums, as a training step's; the failed-loss flag is left
// alone: an evaluation has no update to halt).
//
// CUDA graphs (cuda_graphs on a CUDA device), as the training step: the first kWarmupSteps
// steps of the first batch size (with or without labels) run directly, the next is captured,
// and from then on each step of that size and kind replays the graph: one launch instead of
// one per layer. Another batch size or kind runs directly. If the capture fails,
// graph_status() says why and every step runs directly, with the same results. An inference
// step draws nothing at random, so a replay is the direct step bit for bit.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/cuda_device.h"
#include "engine/tensor.h"
#include "models/batch_staging.h"
#include "models/sequential.h"

namespace hisvid::models {

class InferenceStep {
 public:
  static constexpr int kWarmupSteps = 2;

  // clip: the (T, H, W, C) of one clip, the model's input.
  InferenceStep(Sequential& model, const Shape& clip, bool cuda_graphs);
  InferenceStep(const InferenceStep&) = delete;
  InferenceStep& operator=(const InferenceStep&) = delete;

  // The class probabilities (B, num_classes) of B clips: pixels holds their (T, H, W, C) uint8
  // values one after the other (host memory); labels is empty (no loss) or B model classes (the
  // loss and the correct count added to sums()). The tensor is the step's own, on the model's
  // device: the next step of the same batch size and kind writes over it.
  const Tensor& run(const std::vector<uint8_t>& pixels, const std::vector<int>& labels);
  // One more step of the clips of the previous run() (a benchmark's: the clips stay staged).
  const Tensor& run_again();

  // Loss and correct-count sums (float64 (kStepSums) on the model's device) of the labelled steps.
  const Tensor& sums() const { return sums_; }
  void zero_sums();

  Sequential& model() const { return model_; }

  // "" while no capture was tried; "replaying" once one succeeded; otherwise why it failed.
  const std::string& graph_status() const { return graph_status_; }

 private:
  // The step's work on the staged clips of `batch` (recorded into the graph, or run directly).
  void record(size_t batch, bool labelled);
  const Tensor& step(size_t batch, bool labelled);

  Sequential& model_;
  Shape clip_;
  bool cuda_graphs_;
  Device device_;
  Tensor sums_;
  Tensor output_;  // the last step's probabilities
  BatchStaging staging_;
  size_t last_batch_ = 0;
  bool last_labelled_ = false;
  size_t graph_batch_ = 0;  // the batch size of the graph (the first one run)
  bool graph_labelled_ = false;
  int direct_steps_ = 0;  // of that size and kind, before the capture
  std::unique_ptr<CudaGraph> graph_;
  Tensor graph_output_;  // the graph's probabilities (in its pool: each replay writes them)
  std::string graph_status_;
};

}  // namespace hisvid::models
