// models/batch_staging.h — where a step's clips and targets wait on the device: one pair of
// buffers per batch size, at addresses that stay put (what a CUDA graph replays reads), filled
// from the host through pinned memory on CUDA (engine/cuda_device.h UploadStaging: the host
// does not wait for the stream). Shared by the training step (models/training_step.h) and the
// inference step (models/inference_step.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "engine/cuda_device.h"
#include "engine/tensor.h"

namespace hisvid::models {

class BatchStaging {
 public:
  // What one batch size stages: the pixels (B * clip values, uint8) and the targets (B, K).
  struct Staged {
    std::unique_ptr<Storage> pixels;
    Tensor targets;
  };
  // clip_values: T*H*W*C of one clip; classes: K.
  BatchStaging(Device device, size_t clip_values, int classes);
  // The buffers of `batch` clips, allocated on first use.
  Staged& at(size_t batch);
  // Copies `pixels` (batch clips) and `targets` (batch * K floats, or empty to leave the
  // targets as they are) into the buffers of `batch` clips; returns them.
  Staged& fill(size_t batch, const std::vector<uint8_t>& pixels, const std::vector<float>& targets);

 private:
  Device device_;
  size_t clip_values_;
  int classes_;
  std::map<size_t, Staged> staged_;
  std::unique_ptr<UploadStaging> uploads_;  // on CUDA: the pinned buffers the inputs go up from
};

}  // namespace hisvid::models
