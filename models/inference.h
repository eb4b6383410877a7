// models/inference.h — classifying videos with a model: whole clips, and the per-frame labels of
// seed 003 (the mean of the last K predictions of a sliding window of T frames).
#pragma once

#include <cstdint>
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

}  // namespace hisvid::models
