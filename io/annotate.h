// io/annotate.h — writing a video with a label drawn on every frame (seed 004's result.avi;
// seed 003's per-frame labels), MJPG in an .avi container, written atomically.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hisvid::io {

// frames: each (height, width, 3) BGR uint8; labels: one per frame (an empty label draws
// nothing on that frame).
void write_annotated_video(const std::string& path, const std::vector<std::vector<uint8_t>>& frames, int height,
                           int width, double fps, const std::vector<std::string>& labels);

}  // namespace hisvid::io
