// kernels/clips_table.cpp — the rows of clips_to_batch and their harness cases.
#include <string>

#include "kernels/clips.h"
#include "kernels/harness.h"
#include "kernels/philox.h"

namespace hisvid {
namespace {

using harness::Cases;

const bool rows = register_rows(host_row<naive::clips_to_batch<float>>(Backend::Naive, "naive"),
                                host_row<naive::clips_to_batch<double>>(Backend::Naive, "naive"),
                                host_row<cpu::clips_to_batch>(Backend::Cpu, "cpu"));
#ifdef HISVID_WITH_CUDA
const bool cuda_rows = register_rows(cuda_row<cuda::clips_to_batch>("cuda"));
#endif

struct Shape {
  int64_t B, T, H, W, C;
  bool flip;
  double brightness, contrast, noise;
  const char* name;
};

// clang-format off
const Shape kShapes[] = {
    {1, 1, 1, 1, 1, false, 0, 0, 0, "one_value"},
    {3, 2, 5, 7, 3, false, 0, 0, 0, "scale_only"},
    {5, 2, 4, 6, 3, true, 0, 0, 0, "flip"},
    {3, 2, 5, 7, 3, false, 0.2, 0, 0, "brightness"},
    {3, 2, 5, 7, 3, false, 0, 0.3, 0, "contrast"},
    {3, 1, 3, 5, 3, false, 0, 0, 0.05, "noise_odd_clip_length"},
    {6, 3, 5, 9, 3, true, 0.2, 0.3, 0.05, "everything"},
    {2, 4, 3, 1, 2, true, 0.1, 0.1, 0.1, "one_pixel_rows"},
    {4, 20, 64, 64, 3, true, 0.2, 0.2, 0.02, "seed_batch_4"},
};
// clang-format on

const bool cases = [] {
  Cases<ClipsToBatch> to_batch;
  for (const Shape& s : kShapes) {
    const int64_t E = s.T * s.H * s.W * s.C;
    const bool augmented = s.flip || s.brightness > 0 || s.contrast > 0 || s.noise > 0;
    // Scaling and flips are exact (p / 255 rounds the same in float from the division as from
    // float64); the augmentations add a few roundings of values in [0, 1].
    const bool only_exact = !(s.brightness > 0 || s.contrast > 0 || s.noise > 0);
    to_batch
        .add(s.name,
             [s, E](auto& a) {
               a.B = s.B, a.E = E, a.W = s.W, a.C = s.C, a.flip = s.flip;
               a.brightness = s.brightness, a.contrast = s.contrast, a.noise = s.noise;
               a.choice_seed = 11, a.choice_offset = 3, a.noise_seed = 12, a.noise_offset = 5;
             })
        .tol(only_exact ? harness::kExact : harness::kElementwise)
        .with_flops(double(s.B * E) * (augmented ? 6.0 : 1.0))
        .prepare_with([s, E](ClipsToBatch<double>& a) {
          for (int64_t i = 0; i < s.B * E; ++i) {
            harness::writable(a.inp)[i] =
                static_cast<uint8_t>(philox_uniform(0xC11B, 0, uint64_t(i)) * 256.0f);
          }
        });
  }
  // Offsets relative to a base in memory (a captured step's): both draws move with it.
  to_batch
      .add("everything_based",
           [](auto& a) {
             a.B = 6, a.E = 3 * 5 * 9 * 3, a.W = 9, a.C = 3, a.flip = true;
             a.brightness = 0.2, a.contrast = 0.3, a.noise = 0.05;
             a.choice_seed = 11, a.choice_offset = 3, a.noise_seed = 12, a.noise_offset = 5;
           })
      .tol(harness::kElementwise)
      .prepare_with([](ClipsToBatch<double>& a) {
        for (int64_t i = 0; i < a.B * a.E; ++i) {
          harness::writable(a.inp)[i] = static_cast<uint8_t>(philox_uniform(0xC11B, 0, uint64_t(i)) * 256.0f);
        }
        harness::writable(a.offset_base)[0] = 977;
      });
  return harness::add_cases(to_batch);
}();

}  // namespace
}  // namespace hisvid
