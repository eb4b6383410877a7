// io/synthetic.h — hisvid's built-in dataset: synthetic action videos in the UCF50 layout
// (OUT/<Class>/<clip>.avi), deterministic by seed.
//
// Classes come in pairs that differ only in the direction of time (moving left / moving right,
// up / down, growing / shrinking, ...), drawn over varied backgrounds with varied colours, sizes,
// speeds and start positions: any single frame of one class is as likely under its partner, so
// classifying frames one by one cannot beat chance within a pair, and what is measured is the
// temporal model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/dataset.h"

namespace hisvid::io {

struct SyntheticSpec {
  std::string out_dir;
  int clips_per_class = 40;
  int frames_per_clip = 40;  // >= the 20 frames a model samples
  int width = 96, height = 96;
  double fps = 25.0;
  uint64_t seed = 1;
  // Class names to generate (each must be one of synthetic_class_names()); empty = all.
  std::vector<std::string> classes;
};

// Every class the generator knows, partners adjacent: {"MoveLeft", "MoveRight", ...}.
const std::vector<std::string>& synthetic_class_names();

// Where the moving object is in each frame of clip `clip` (0-based, as in the file names'
// order) of class `class_name` of the dataset `spec` describes: the axis-aligned bounding box of
// its outline in pixels of the written frames, [x0, x1) x [y0, y1), frame by frame in file order
// (frames_per_clip boxes). The generator's own geometry, so a test can ask where a model should
// look; no file is read or written.
struct ObjectBox {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};
std::vector<ObjectBox> synthetic_object_boxes(const SyntheticSpec& spec, const std::string& class_name,
                                              int clip);

// Writes the dataset; returns the files written. An existing non-empty out_dir that was not
// written by make_synthetic_dataset is an error (nothing is overwritten by surprise).
std::vector<std::string> make_synthetic_dataset(const SyntheticSpec& spec,
                                                const ProgressFn& progress = nullptr);

}  // namespace hisvid::io
