// models/training_step.h — one training step of a Sequential model from the clips' uint8
// pixels, reading nothing back on the host; run directly, or replayed from a CUDA graph.
//
// A step: the clips' pixels and one-hot targets are staged into device memory (on CUDA from
// pinned buffers used in turn: models/batch_staging.h); there the
// pixels are scaled and augmented (kernels/clips.h), the model runs forward in training mode,
// the loss (models/loss.h) and its metrics go into the step sums (ops::step_sums: the loss,
// the accuracy, the first step whose loss was not finite), backward, the optimizer's update
// (which the sums halt once a loss was not finite), the gradients dropped. Every random draw
// of the step (augmentation, dropout) is relative to a base staged with the pixels (the
// generator's offset: engine/random.h), and the optimizer reads its step scalar from memory
// staged the same way (engine/optimizer.h): so the one recorded piece of work, run again, is
// the next step, drawing what direct draws would have.
//
// CUDA graphs (cuda_graphs on a CUDA device): the first kWarmupSteps steps of the run's first
// batch size run directly (cuDNN picks its algorithms, the caches and the workspace reach
// their sizes), the next one is captured, and from then on each step of that size replays the
// graph: one launch instead of hundreds. A batch of another size (an epoch's last) runs
// directly. If the capture fails, graph_status() says why and every step runs directly,
// with the same results. The graph step is the direct step bit for bit (the same kernels on
// the same inputs): tests/test_cuda_models.cpp checks it on a GPU.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/cuda_device.h"
#include "engine/optimizer.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "io/batch.h"
#include "models/batch_staging.h"
#include "models/sequential.h"

namespace hisvid::models {

class TrainingStep {
 public:
  // Direct steps before the capture: the first allocates the optimizer's slots and picks the
  // cuDNN algorithms, the second runs with every cache warm (a step allocates nothing from
  // the system from its third on: tests/test_models.cpp SteadyState).
  static constexpr int kWarmupSteps = 2;

  // clip: the (T, H, W, C) of one clip; classes: the model's classes (the one-hot width).
  TrainingStep(Sequential& model, Optimizer& optimizer, Generator& rng, const io::Augmentation& augmentation,
               const Shape& clip, int classes, bool cuda_graphs);
  ~TrainingStep();
  TrainingStep(const TrainingStep&) = delete;
  TrainingStep& operator=(const TrainingStep&) = delete;

  // One step of labels.size() clips: pixels holds their (T, H, W, C) uint8 values one after
  // the other (host memory); labels are model classes. Adds the step to sums().
  void run(const std::vector<uint8_t>& pixels, const std::vector<int>& labels);
  // One more step of the clips of the previous run() (a benchmark's: the clips stay staged).
  void run_again();

  // The step sums (float64 (kStepSums) on the model's device); zero_sums() starts an epoch.
  const Tensor& sums() const { return sums_; }
  void zero_sums();

  // "" while no capture was tried; "replaying" once one succeeded; otherwise why it failed
  // ("capturing a CUDA graph on cuda:0: ...").
  const std::string& graph_status() const { return graph_status_; }

 private:
  // Copies the base and the optimizer's scalar for the coming step.
  void stage_step_scalars();
  // The step's work on `staged` (recorded into the graph, or run directly).
  void record(BatchStaging::Staged& staged, size_t batch);
  // Runs the step of `batch` clips already staged: directly, by capturing, or by replaying.
  void step(size_t batch);

  Sequential& model_;
  Optimizer& optimizer_;
  Generator& rng_;
  io::Augmentation augmentation_;
  Shape clip_;
  int classes_;
  bool cuda_graphs_;
  Device device_;
  std::vector<Tensor> weights_;
  Tensor sums_;
  Tensor scalar_;                  // the optimizer's step scalar (1)
  std::unique_ptr<Storage> base_;  // the step's random base (one int64)
  BatchStaging staging_;           // the clips and targets, by batch size
  size_t last_batch_ = 0;
  size_t graph_batch_ = 0;       // the batch size of the graph (the first one run)
  int direct_steps_ = 0;         // of graph_batch_, before the capture
  uint64_t draws_per_step_ = 0;  // the random draws of one graph step
  std::unique_ptr<CudaGraph> graph_;
  std::string graph_status_;
};

}  // namespace hisvid::models
