// engine/random.h — the Generator hands out Philox draws: each random op call takes the next
// offset, and every bit of that call is philox(seed, offset, element index) (kernels/philox.h).
// Saving (seed, offset) in a checkpoint is enough to resume the exact random stream.
#pragma once

#include <cstdint>

#include "engine/tensor.h"

namespace hisvid {

// The identity of one random draw. With base, the offset is relative: kernels draw at
// offset + *base, base read where they run (kernels/common.h based_offset).
struct RandomDraw {
  uint64_t seed = 0;
  uint64_t offset = 0;
  const int64_t* base = nullptr;
};

class Generator {
 public:
  explicit Generator(uint64_t seed = 0, uint64_t offset = 0) : seed_(seed), offset_(offset) {}

  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t offset) { offset_ = offset; }
  RandomDraw next() {
    const uint64_t offset = offset_++;
    return base_ == nullptr ? RandomDraw{seed_, offset} : RandomDraw{seed_, offset - relative_from_, base_};
  }

  // Relative draws, for a step captured once and replayed (a CUDA graph): between
  // begin_relative(base) and end_relative(), next() returns offsets counted from the offset at
  // begin_relative, with base; the step's kernels then draw at those offsets plus *base, and the
  // caller writes the generator's offset at *base (in the memory the kernels run on) before
  // every run of the step, so that each run draws what direct draws would have. end_relative
  // returns the number of draws the step took. Host-side draws (uniform, normal, below) are
  // absolute, and refused while relative.
  void begin_relative(const int64_t* base);
  uint64_t end_relative();
  bool relative() const { return base_ != nullptr; }
  // Host-side draws (initializers, shuffling, augmentation); each call consumes one offset.
  Tensor uniform(const Shape& shape, double low, double high, DType dtype = DType::Float32);
  Tensor normal(const Shape& shape, double mean, double stddev, DType dtype = DType::Float32);
  // An integer in [0, bound) from one offset (bound > 0).
  uint64_t below(uint64_t bound);

 private:
  uint64_t seed_;
  uint64_t offset_;
  const int64_t* base_ = nullptr;
  uint64_t relative_from_ = 0;
};

}  // namespace hisvid
