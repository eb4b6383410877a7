// io/clips.cpp — a loaded ClipSet: reading its clips (from memory, or from the cache file when
// streamed), splitting it, cutting epochs into batches and making a batch's tensors.
//
// Randomness: every shuffle is a Fisher-Yates over one Philox draw (one Generator offset, step i
// taking 64 bits of block i: io/shuffle.h); augmentation takes two draws per batch (per-clip
// choices, per-pixel noise). Pixels stay uint8 until make_batch, which converts only the clips
// of one batch.
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "engine/error.h"
#include "io/clip_stream.h"
#include "io/dataset.h"
#include "io/shuffle.h"

namespace hisvid::io {

void ClipSet::read_clips(const std::vector<size_t>& indices, uint8_t* out) const {
  const size_t elements = clip_elements();
  for (const size_t index : indices) {
    if (index >= size()) fail("clip index {} is out of range (the set has {} clips)", index, size());
  }
  if (!stream) {
    if (pixels.size() != size() * elements) {
      fail("the clip set holds {} bytes of pixels for {} clips of {} values", pixels.size(), size(),
           elements);
    }
    for (size_t k = 0; k < indices.size(); ++k) std::memcpy(out + k * elements, clip(indices[k]), elements);
    return;
  }
  const std::lock_guard<std::mutex> lock(stream->mutex);
  for (size_t k = 0; k < indices.size(); ++k) {
    try {
      stream->clips.read_rows(static_cast<int64_t>(indices[k]), 1, out + k * elements);
    } catch (const std::exception& e) {
      // Streaming reads a clip only when a batch needs it: damage shows here, not when it opened.
      fail(
          "the clip cache {} is damaged: clip {} ({}) cannot be read ({}); delete the file, or give another "
          "--cache, and run again (it is rebuilt from the videos)",
          cache_file, indices[k], paths[indices[k]], e.what());
    }
  }
}

struct BatchReader::State {
  State(const ClipSet& c, std::vector<std::vector<size_t>> b, size_t d)
      : clips(c), batches(std::move(b)), depth(d) {}
  const ClipSet& clips;
  std::vector<std::vector<size_t>> batches;
  size_t depth;
  size_t returned = 0;  // batches handed out by next()
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<std::vector<uint8_t>> ready;
  bool stop = false;
  std::exception_ptr error;
  std::thread thread;

  std::vector<uint8_t> read(size_t b) const {
    std::vector<uint8_t> pixels(batches[b].size() * clips.clip_elements());
    clips.read_clips(batches[b], pixels.data());
    return pixels;
  }
  void run() {
    try {
      for (size_t b = 0; b < batches.size(); ++b) {
        {
          std::unique_lock<std::mutex> lock(mutex);
          changed.wait(lock, [&] { return stop || ready.size() < depth; });
          if (stop) return;
        }
        std::vector<uint8_t> pixels = read(b);
        const std::lock_guard<std::mutex> lock(mutex);
        ready.push_back(std::move(pixels));
        changed.notify_all();
      }
    } catch (...) {
      const std::lock_guard<std::mutex> lock(mutex);
      error = std::current_exception();
      changed.notify_all();
    }
  }
};

BatchReader::BatchReader(const ClipSet& clips, std::vector<std::vector<size_t>> batches, size_t depth)
    : state_(std::make_unique<State>(clips, std::move(batches), std::max<size_t>(depth, 1))) {
  if (clips.streamed()) state_->thread = std::thread([state = state_.get()] { state->run(); });
}

BatchReader::~BatchReader() {
  if (!state_->thread.joinable()) return;
  {
    const std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stop = true;
  }
  state_->changed.notify_all();
  state_->thread.join();
}

std::vector<uint8_t> BatchReader::next() {
  State& s = *state_;
  if (s.returned >= s.batches.size()) fail("BatchReader: all {} batches were read", s.batches.size());
  if (!s.thread.joinable()) return s.read(s.returned++);
  std::unique_lock<std::mutex> lock(s.mutex);
  s.changed.wait(lock, [&] { return !s.ready.empty() || s.error; });
  if (s.ready.empty()) std::rethrow_exception(s.error);
  std::vector<uint8_t> pixels = std::move(s.ready.front());
  s.ready.pop_front();
  ++s.returned;
  s.changed.notify_all();
  return pixels;
}

size_t ClipSet::clip_elements() const { return extraction.clip_bytes(); }

Split split_clips(size_t count, double test_fraction, double validation_fraction, uint64_t seed,
                  bool shuffle_validation, SplitRounding rounding) {
  if (!(test_fraction >= 0 && test_fraction < 1)) {
    fail("split_clips: test_fraction must be in [0, 1), got {}", test_fraction);
  }
  if (!(validation_fraction >= 0 && validation_fraction < 1)) {
    fail("split_clips: validation_fraction must be in [0, 1), got {}", validation_fraction);
  }
  if (count == 0) fail("split_clips: there are no clips to split");
  // The counts are computed in double exactly as sklearn and Keras compute them, rounding
  // included: 0.55 * 100 = 55.00000000000001 makes 56 test clips, 90 * (1 - 0.3) =
  // 62.99999999999999 makes 62 training clips. The forgiving rounding of older runs moved a
  // product within 1e-9 of a whole number onto it.
  const double slack = rounding == SplitRounding::Forgiving ? 1e-9 : 0.0;

  std::vector<size_t> order(count);
  for (size_t i = 0; i < count; ++i) order[i] = i;
  Generator generator(seed);
  shuffle_with(order, generator.next());

  // sklearn's train_test_split: ceil(test_size * n) test samples, first in the permutation;
  // at least one clip is left to train on.
  size_t n_test = static_cast<size_t>(std::ceil(test_fraction * static_cast<double>(count) - slack));
  n_test = count >= 2 ? std::min(n_test, count - 1) : 0;
  Split split;
  split.test.assign(order.begin(), order.begin() + n_test);
  std::vector<size_t> train(order.begin() + n_test, order.end());

  // Keras's validation_split: the first int(n * (1 - v)) train, the rest validation; both kept
  // non-empty when v > 0 and there are at least 2 clips to train on; one clip is trained on.
  const size_t n_train_all = train.size();
  size_t split_at =
      static_cast<size_t>(std::floor(static_cast<double>(n_train_all) * (1.0 - validation_fraction) + slack));
  if (validation_fraction > 0 && n_train_all >= 2) {
    split_at = std::clamp<size_t>(split_at, 1, n_train_all - 1);
  }
  split_at = std::clamp<size_t>(split_at, std::min<size_t>(n_train_all, 1), n_train_all);
  if (shuffle_validation) {
    std::vector<size_t> positions(n_train_all);
    for (size_t i = 0; i < n_train_all; ++i) positions[i] = i;
    shuffle_with(positions, generator.next());
    std::vector<bool> is_validation(n_train_all, false);
    for (size_t i = split_at; i < n_train_all; ++i) is_validation[positions[i]] = true;
    for (size_t i = 0; i < n_train_all; ++i)
      (is_validation[i] ? split.validation : split.train).push_back(train[i]);
  } else {
    split.train.assign(train.begin(), train.begin() + split_at);
    split.validation.assign(train.begin() + split_at, train.end());
  }
  return split;
}

Batch make_batch(const ClipSet& clips, const std::vector<size_t>& indices, const Augmentation& augmentation,
                 Generator* rng, Device device) {
  if (clips.size() == 0) fail("make_batch: the clip set is empty");
  if (indices.empty()) fail("make_batch: no clip indices given");
  for (const size_t index : indices) {
    if (index >= clips.size()) {
      fail("make_batch: clip index {} is out of range (the set has {} clips)", index, clips.size());
    }
  }
  std::vector<uint8_t> pixels(indices.size() * clips.clip_elements());
  clips.read_clips(indices, pixels.data());
  return make_batch(clips, indices, pixels, augmentation, rng, device);
}

Batch make_batch(const ClipSet& clips, const std::vector<size_t>& indices, const std::vector<uint8_t>& pixels,
                 const Augmentation& augmentation, Generator* rng, Device device) {
  if (clips.size() == 0) fail("make_batch: the clip set is empty");
  if (indices.empty()) fail("make_batch: no clip indices given");
  const size_t elements = clips.clip_elements();
  if (pixels.size() != indices.size() * elements) {
    fail("make_batch: {} bytes of pixels for {} clips of {} values", pixels.size(), indices.size(), elements);
  }
  const size_t classes = clips.class_names.size();
  for (const size_t index : indices) {
    if (index >= clips.size()) {
      fail("make_batch: clip index {} is out of range (the set has {} clips)", index, clips.size());
    }
    const int label = clips.labels[index];
    if (label < 0 || static_cast<size_t>(label) >= classes) {
      fail("make_batch: clip {} has label {}, but there are {} classes", index, label, classes);
    }
  }
  augmentation.validate("make_batch", rng);

  // The clips' uint8 values side by side (B, T*H*W*C), moved to the batch's device as they
  // are; kernels/clips.h scales and augments them there (a GPU receives a quarter of the bytes
  // floats would take).
  const int64_t batch = static_cast<int64_t>(indices.size());
  const ExtractionSettings& s = clips.extraction;
  std::unique_ptr<Storage> staged;  // the uint8 values on the device
  const uint8_t* on_device = pixels.data();
  if (!device.is_cpu()) {
    staged = std::make_unique<Storage>(pixels.size(), device);
    copy_bytes(staged->data, device, pixels.data(), Device::cpu(), pixels.size());
    on_device = static_cast<const uint8_t*>(staged->data);
  }
  const Tensor x = clips_to_batch(on_device, Shape{batch, s.sequence_length, s.height, s.width, s.channels},
                                  augmentation, rng, device);

  Tensor y = Tensor::zeros(Shape{batch, static_cast<int64_t>(classes)});  // (B,K) one-hot
  float* ys = y.data<float>();
  for (int64_t b = 0; b < batch; ++b) {
    ys[static_cast<size_t>(b) * classes +
       static_cast<size_t>(clips.labels[indices[static_cast<size_t>(b)]])] = 1.0f;
  }
  return Batch{x, device.is_cpu() ? y : y.to(device)};
}

std::vector<std::vector<size_t>> epoch_batches(const std::vector<size_t>& indices, size_t batch_size,
                                               bool shuffle, Generator& rng) {
  if (batch_size == 0) fail("epoch_batches: batch_size must be > 0");
  std::vector<size_t> order = indices;
  if (shuffle) shuffle_with(order, rng.next());
  std::vector<std::vector<size_t>> batches;
  for (size_t begin = 0; begin < order.size(); begin += batch_size) {
    const size_t end = std::min(order.size(), begin + batch_size);
    batches.emplace_back(order.begin() + begin, order.begin() + end);
  }
  return batches;
}

}  // namespace hisvid::io
