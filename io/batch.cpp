#include "io/batch.h"

#include "engine/dispatch.h"
#include "engine/error.h"
#include "kernels/clips.h"

namespace hisvid::io {

void Augmentation::validate(const char* who, const Generator* rng) const {
  if (any() && rng == nullptr) fail("{}: augmentation needs a random generator (rng is null)", who);
  if (brightness < 0 || contrast < 0 || noise < 0) {
    fail("{}: augmentation strengths must be >= 0, got brightness {}, contrast {}, noise {}", who, brightness,
         contrast, noise);
  }
}

Tensor clips_to_batch(const uint8_t* pixels, const Shape& shape, const Augmentation& augmentation,
                      Generator* rng, Device device) {
  if (shape.rank() != 5) fail("clips_to_batch: the batch must be (B, T, H, W, C), got {}", shape.str());
  Tensor x = Tensor::empty(shape, DType::Float32, device);  // (B,T,H,W,C)
  ClipsToBatch<float> k;
  k.out = x.data<float>(), k.inp = pixels, k.B = shape[0], k.E = shape.numel() / shape[0];
  k.W = shape[3], k.C = shape[4];
  k.flip = augmentation.flip, k.brightness = augmentation.brightness, k.contrast = augmentation.contrast;
  k.noise = augmentation.noise;
  if (augmentation.any()) {
    const RandomDraw choices = rng->next(), noise = rng->next();
    k.choice_seed = choices.seed, k.choice_offset = choices.offset;
    k.noise_seed = noise.seed, k.noise_offset = noise.offset, k.offset_base = choices.base;
  }
  run_kernel(k, device);
  return x;
}

}  // namespace hisvid::io
