#include "models/inference.h"

#include <algorithm>

#include "engine/error.h"
#include "io/dataset.h"
#include "models/trainer.h"

namespace hisvid::models {

namespace {

// A ClipSet of `count` unlabelled clips of settings' shape, pixels zero (to be filled).
io::ClipSet unlabelled_clips(const io::ExtractionSettings& settings, size_t count) {
  io::ClipSet set;
  set.extraction = settings;
  set.pixels.resize(count * settings.clip_bytes());
  set.labels.assign(count, 0);
  set.paths.assign(count, "");
  return set;
}

std::vector<size_t> all_indices(size_t count) {
  std::vector<size_t> indices(count);
  for (size_t i = 0; i < count; ++i) indices[i] = i;
  return indices;
}

// The probabilities of clips [begin, end) given by `fill(i, out)` writing clip i's pixels.
template <typename Fill>
std::vector<std::vector<double>> classify_range(Sequential& model, size_t count,
                                                const io::ExtractionSettings& settings, size_t batch_size,
                                                Fill fill) {
  if (batch_size < 1) fail("classify: batch size must be >= 1");
  const int K = model.num_classes();
  std::vector<std::vector<double>> rows;
  for (size_t begin = 0; begin < count; begin += batch_size) {
    const size_t end = std::min(count, begin + batch_size);
    io::ClipSet set = unlabelled_clips(settings, end - begin);
    set.class_names.assign(static_cast<size_t>(K), "");
    for (size_t i = begin; i < end; ++i) fill(i, set.pixels.data() + (i - begin) * settings.clip_bytes());
    const io::Batch batch = io::make_batch(set, all_indices(end - begin), {}, nullptr, Device::cpu());
    const std::vector<double> p = predict(model, batch.x, batch_size).to_vector();
    for (size_t i = 0; i < end - begin; ++i) rows.emplace_back(p.begin() + i * K, p.begin() + (i + 1) * K);
  }
  return rows;
}

}  // namespace

Tensor clip_batch(const std::vector<std::vector<uint8_t>>& clips, const io::ExtractionSettings& settings,
                  Device device) {
  io::ClipSet set = unlabelled_clips(settings, clips.size());
  set.class_names.assign(1, "");
  for (size_t i = 0; i < clips.size(); ++i) {
    if (clips[i].size() != settings.clip_bytes()) {
      fail("a clip holds {} bytes, the model takes {}", clips[i].size(), settings.clip_bytes());
    }
    std::copy(clips[i].begin(), clips[i].end(), set.pixels.begin() + i * settings.clip_bytes());
  }
  return io::make_batch(set, all_indices(clips.size()), {}, nullptr, device).x;
}

std::vector<std::vector<double>> classify_clips(Sequential& model,
                                                const std::vector<std::vector<uint8_t>>& clips,
                                                const io::ExtractionSettings& settings, size_t batch_size) {
  for (const std::vector<uint8_t>& clip : clips) {
    if (clip.size() != settings.clip_bytes()) {
      fail("classify: a clip holds {} bytes, the model takes {}", clip.size(), settings.clip_bytes());
    }
  }
  return classify_range(model, clips.size(), settings, batch_size,
                        [&](size_t i, uint8_t* out) { std::copy(clips[i].begin(), clips[i].end(), out); });
}

RollingPredictions rolling_predictions(Sequential& model, const std::vector<std::vector<uint8_t>>& frames,
                                       const io::ExtractionSettings& settings, int rolling,
                                       size_t batch_size) {
  const size_t T = static_cast<size_t>(settings.sequence_length), n = frames.size();
  if (rolling < 1) fail("rolling predictions: the window count K must be >= 1, got {}", rolling);
  if (n < T) fail("rolling predictions: {} frames, fewer than the {} the model takes", n, T);
  for (const std::vector<uint8_t>& frame : frames) {
    if (frame.size() != settings.frame_bytes()) {
      fail("rolling predictions: a frame holds {} bytes, the model takes {}", frame.size(),
           settings.frame_bytes());
    }
  }
  RollingPredictions out;
  out.windows = classify_range(model, n - T + 1, settings, batch_size, [&](size_t w, uint8_t* clip) {
    for (size_t t = 0; t < T; ++t)
      std::copy(frames[w + t].begin(), frames[w + t].end(), clip + t * settings.frame_bytes());
  });
  out.frames.assign(n, {});
  const size_t K = static_cast<size_t>(rolling);
  for (size_t w = 0; w < out.windows.size(); ++w) {
    const size_t first = w + 1 >= K ? w + 1 - K : 0;
    std::vector<double> mean(out.windows[w].size(), 0.0);
    for (size_t q = first; q <= w; ++q) {
      for (size_t k = 0; k < mean.size(); ++k) mean[k] += out.windows[q][k];
    }
    for (double& m : mean) m /= static_cast<double>(w - first + 1);
    out.frames[w + T - 1] = std::move(mean);
  }
  return out;
}

void fail_non_finite_outputs(size_t bad, size_t clips, const std::string& weights) {
  fail(
      "{}: the model's outputs are NaN or infinite for {} of {} clip{}: its weights have diverged (a "
      "learning "
      "rate too high?) or are damaged, so it predicts nothing",
      weights, bad, clips, clips == 1 ? "" : "s");
}

}  // namespace hisvid::models
