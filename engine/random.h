// engine/random.h — the Generator hands out Philox draws: each random op call takes the next
// offset, and every bit of that call is philox(seed, offset, element index) (kernels/philox.h).
// Saving (seed, offset) in a checkpoint is enough to resume the exact random stream.
#pragma once

#include <cstdint>

#include "engine/tensor.h"

namespace hisvid {

// The identity of one random draw.
struct RandomDraw {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

class Generator {
 public:
  explicit Generator(uint64_t seed = 0, uint64_t offset = 0) : seed_(seed), offset_(offset) {}

  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t offset) { offset_ = offset; }
  RandomDraw next() { return RandomDraw{seed_, offset_++}; }

  // Host-side draws (initializers, shuffling, augmentation); each call consumes one offset.
  Tensor uniform(const Shape& shape, double low, double high, DType dtype = DType::Float32);
  Tensor normal(const Shape& shape, double mean, double stddev, DType dtype = DType::Float32);
  // An integer in [0, bound) from one offset (bound > 0).
  uint64_t below(uint64_t bound);

 private:
  uint64_t seed_;
  uint64_t offset_;
};

}  // namespace hisvid
