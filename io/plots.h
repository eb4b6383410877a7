// io/plots.h — the seeds' figures drawn with OpenCV and written as PNG (atomically):
// a confusion-matrix heatmap with class names and counts, and the loss / accuracy curves of
// training against validation per epoch (seed 000's figures 12 and 13).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hisvid::io {

// counts[true][predicted]; rows and columns labelled with the class names.
void write_confusion_png(const std::string& path, const std::vector<std::vector<int64_t>>& counts,
                         const std::vector<std::string>& class_names, const std::string& title);

struct Curve {
  std::string label;           // "training", "validation"
  std::vector<double> values;  // one per epoch; NaN where there is none
};

// Two panels side by side: loss curves and accuracy curves, x = epoch.
void write_curves_png(const std::string& path, const std::vector<Curve>& loss,
                      const std::vector<Curve>& accuracy, const std::string& title);

// hisvid explain's figure: the frames (each (height, width, 3) BGR, heatmaps already laid
// over them) in a grid, each captioned with captions[t], then two bar charts, one bar per
// frame: `weights` (the Grad-CAM share of each frame, >= 0) and `drops` (the fall of the class's
// probability when the frame is blacked out; negative when it rises).
void write_explanation_png(const std::string& path, const std::vector<std::vector<uint8_t>>& frames,
                           int height, int width, const std::vector<std::string>& captions,
                           const std::vector<double>& weights, const std::vector<double>& drops,
                           const std::string& title);

}  // namespace hisvid::io
