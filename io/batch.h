// io/batch.h — the clips' uint8 values into the float batch a model reads, on the device the
// batch is for (kernels/clips.h), with the training augmentations: what io::make_batch and the
// training step (models/training_step.h) share. No video or HDF5 code lives here, so a program
// that links only this part of io/ (the GPU kit's tests) needs neither library.
#pragma once

#include <cstdint>

#include "engine/random.h"
#include "engine/tensor.h"

namespace hisvid::io {

struct Augmentation {
  bool flip = false;        // horizontal flip with probability 1/2, per clip
  double brightness = 0.0;  // add U(-b, b) to every pixel (after /255), per clip
  double contrast = 0.0;    // scale around the clip mean by U(1-c, 1+c), per clip
  double noise = 0.0;       // Gaussian noise of this standard deviation, per pixel
  bool any() const { return flip || brightness > 0 || contrast > 0 || noise > 0; }
  // Errors naming `who`: a strength below 0, or an augmentation without a generator.
  void validate(const char* who, const Generator* rng) const;
};

// The batch (B,T,H,W,C) float32 on `device` of B clips whose uint8 values (T,H,W,C) lie one
// after the other at `pixels`, in that device's memory: pixels / 255, augmented with two draws
// from rng when any augmentation is on (the per-clip choices, then the noise; relative draws
// give kernels that draw relative to the generator's base).
Tensor clips_to_batch(const uint8_t* pixels, const Shape& shape, const Augmentation& augmentation,
                      Generator* rng, Device device);

}  // namespace hisvid::io
