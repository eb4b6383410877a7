// kernels/clips.h — uint8 video clips into the float batch a model reads, with the training
// augmentations, on the device the batch is for (so that a GPU receives a quarter of the
// bytes: the clips' uint8 pixels, not their floats).
//
// For clip b of B, each of its E = T*H*W*C values (rows of W pixels of C channels):
//   out[b][e] = inp[b][e'] / 255   (e' the same value with the row's pixels reversed when the
//                                   clip is flipped: philox_uniform(choice, 4b) < 0.5)
//   + brightness * (2 u1 - 1)      (u1 = philox_uniform(choice, 4b + 1); when brightness > 0)
//   contrast: (x - mean) * (1 + contrast * (2 u2 - 1)) + mean, mean over the clip's values
//                                  (u2 = philox_uniform(choice, 4b + 2); when contrast > 0)
//   + noise * philox_normal(noise draw, b*E + e)   (when noise > 0)
//   clipped to [0, 1] when any augmentation is on.
// p / 255 is a division (equal, for every p, to numpy's np.float32(p / 255); multiplying by
// 1/255 is not).
#pragma once

#include <cstdint>

#include "kernels/common.h"

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid {

template <typename T>
struct ClipsToBatch {
  static constexpr const char* kName = "clips_to_batch";
  T* out = nullptr;              // (B, E)
  const uint8_t* inp = nullptr;  // (B, E)
  int64_t B = 0, E = 0;          // clips, values per clip
  int64_t W = 1, C = 1;          // a row: W pixels of C channels (E is a multiple of W*C)
  bool flip = false;
  double brightness = 0.0, contrast = 0.0, noise = 0.0;
  uint64_t choice_seed = 0, choice_offset = 0;  // the per-clip draws
  uint64_t noise_seed = 0, noise_offset = 0;    // the per-value draws
  const int64_t* offset_base = nullptr;         // (1) optional, added to both offsets
  HISVID_HD bool any() const { return flip || brightness > 0 || contrast > 0 || noise > 0; }
  // These arguments with offset_base added to the offsets (read where the kernel runs).
  HISVID_HD ClipsToBatch with_base() const {
    ClipsToBatch k = *this;
    k.choice_offset = based_offset(choice_offset, offset_base);
    k.noise_offset = based_offset(noise_offset, offset_base);
    k.offset_base = nullptr;
    return k;
  }
  template <typename V>
  void buffers(V& v) {
    v.in("offset_base", offset_base, 1);
    v.out("out", out, B * E);
    v.in("inp", inp, B * E);
  }
};

}  // namespace hisvid

namespace hisvid::naive {

template <typename T>
void clips_to_batch(const ClipsToBatch<T>& k);

}  // namespace hisvid::naive

namespace hisvid::cpu {

void clips_to_batch(const ClipsToBatch<float>& k);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void clips_to_batch(const ClipsToBatch<float>& k, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
