// bench/step.h — one training step and one evaluation step of a zoo model on synthetic input,
// shared by the Google Benchmark suite and `hisvid bench`, so both time the same code.
#pragma once

#include <memory>
#include <string>

#include "engine/optimizer.h"
#include "engine/random.h"
#include "models/sequential.h"

namespace hisvid::bench {

class StepRunner {
 public:
  // A zoo model (or spec file) built for `classes` classes on `device`, inputs of `batch` clips.
  StepRunner(const std::string& model, int classes, int batch, Device device, uint64_t seed = 1);

  // forward (training mode) + softmax cross-entropy + backward + Adam step.
  void train_step();
  // forward in inference mode, no tape.
  void eval_step();
  // Waits for the device (timing boundaries).
  void sync() const;

  models::Sequential& model() { return model_; }
  const Tensor& input() const { return x_; }
  const Tensor& targets() const { return y_; }
  Generator& rng() { return rng_; }
  int batch() const { return batch_; }

 private:
  models::Sequential model_;
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<Tensor> weights_;
  Tensor x_, y_;
  Generator rng_;
  int batch_;
  Device device_;
};

}  // namespace hisvid::bench
