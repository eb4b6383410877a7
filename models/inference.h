// models/inference.h — classifying videos with a model: whole clips, and the per-frame labels of
// seed 003 (the mean of the last K predictions of a sliding window of T frames).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "io/video.h"
#include "models/sequential.h"

namespace hisvid::models {

// Clips (each (T,H,W,C) uint8 of `settings`' shape) as a model's input (N,T,H,W,C) float32,
// pixels / 255, on device.
Tensor clip_batch(const std::vector<std::vector<uint8_t>>& clips, const io::ExtractionSettings& settings,
                  Device device);

// Class probabilities (one row of num_classes per clip) of clips of `settings`' shape (each
// (T,H,W,C) uint8), in batches of batch_size, in inference mode.
std::vector<std::vector<double>> classify_clips(Sequential& model,
                                                const std::vector<std::vector<uint8_t>>& clips,
                                                const io::ExtractionSettings& settings, size_t batch_size);

// Per-frame predictions of a decoded video (frames of settings' H x W x C; T =
// settings.sequence_length): window j covers frames [j, j + T); frame f (f >= T - 1) gets the
// mean of the probabilities of the windows ending at frames f-K+1 .. f (fewer at the start).
// Windows are built batch by batch: memory stays batch_size clips whatever the video's length.
struct RollingPredictions {
  std::vector<std::vector<double>> windows;  // one row per window, in order
  std::vector<std::vector<double>> frames;   // one row per frame; empty rows before frame T - 1
};
RollingPredictions rolling_predictions(Sequential& model, const std::vector<std::vector<uint8_t>>& frames,
                                       const io::ExtractionSettings& settings, int rolling,
                                       size_t batch_size);

[[noreturn]] void fail_non_finite_outputs(size_t bad, size_t clips, const std::string& weights);
// Fails when any row of a model's outputs (one clip's class probabilities each) holds a NaN or
// an infinity, naming `weights` (the model file) and how many of the clips it gave them for: a
// model whose weights diverged gives NaN for every input, and its "predicted" classes (the argmax
// of NaN) would be made up.
template <typename Row>
void require_finite_outputs(const std::vector<Row>& rows, const std::string& weights) {
  size_t bad = 0;
  for (const Row& row : rows) {
    for (const auto value : row) {
      if (!std::isfinite(value)) {
        ++bad;
        break;
      }
    }
  }
  if (bad > 0) fail_non_finite_outputs(bad, rows.size(), weights);
}
}  // namespace hisvid::models
