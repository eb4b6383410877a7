// io/annotate.h — writing a video with a label drawn on every frame (seed 004's result.avi;
// seed 003's per-frame labels), MJPG in an .avi container, written atomically; and a heatmap
// (hisvid explain's Grad-CAM) laid over a frame.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace hisvid::io {

// frames: each (height, width, 3) BGR uint8; labels: one per frame (an empty label draws
// nothing on that frame).
void write_annotated_video(const std::string& path, const std::vector<std::vector<uint8_t>>& frames,
                           int height, int width, double fps, const std::vector<std::string>& labels);

// The same, the frames handed over one at a time: `produce(emit)` calls emit(frame) for each
// (height, width, 3) BGR frame in order, so that a long video is never held whole in memory.
// Fails, the output left as it was, unless it emits exactly one frame per label.
using FrameSink = std::function<void(const uint8_t* frame)>;
void write_annotated_video(const std::string& path, int height, int width, double fps,
                           const std::vector<std::string>& labels,
                           const std::function<void(const FrameSink&)>& produce);

// `map` (map_height, map_width, row-major) enlarged to height x width with bilinear
// interpolation (cv::resize's INTER_LINEAR): the heatmap as overlay_heatmap draws it.
std::vector<float> enlarge_map(const std::vector<double>& map, int map_height, int map_width, int height,
                               int width);

// frame (height, width, 3) BGR with `map` (map_height, map_width, row-major, values in [0, 1])
// laid over it: the map enlarged to the frame bilinearly, coloured with the jet colour map (blue
// low, red high) and blended in with opacity kHeatmapOpacity * value, so where the map is 0 the
// frame shows as it is.
constexpr double kHeatmapOpacity = 0.6;
std::vector<uint8_t> overlay_heatmap(const std::vector<uint8_t>& frame, int height, int width,
                                     const std::vector<double>& map, int map_height, int map_width);

}  // namespace hisvid::io
