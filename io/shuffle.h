// io/shuffle.h — the one shuffle of io/: class choices (io/dataset.cpp), splits and epochs
// (io/clips.cpp).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "engine/random.h"
#include "kernels/philox.h"

namespace hisvid::io {

// Fisher-Yates over one Philox draw: step i swaps element i-1 with one of [0, i), chosen by
// 64 bits of block i-1 (modulo bias below i / 2^64, negligible).
template <typename T>
void shuffle_with(std::vector<T>& values, RandomDraw draw) {
  for (size_t i = values.size(); i > 1; --i) {
    const Philox4x32 r = philox_block(draw.seed, draw.offset, 4 * static_cast<uint64_t>(i - 1));
    const uint64_t bits = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
    std::swap(values[i - 1], values[bits % i]);
  }
}

}  // namespace hisvid::io
