// io/frames.h — how frames_extraction samples a clip's frames and sizes them, whatever gives
// the frames: io/video.cpp applies it to decoded video, io/synthetic.cpp to the built-in
// dataset's frames straight from its generator. Needs OpenCV's core and imgproc only.
#pragma once

#include <cstdint>
#include <opencv2/core.hpp>
#include <string>

#include "io/video.h"

namespace hisvid::io {

// Fails, naming `where`, unless the settings sample a positive number of frames of a positive
// size with 1 (gray) or 3 (BGR) channels.
void check_extraction(const std::string& where, const ExtractionSettings& s);

// frames_extraction's stride (seeds 000-004): skip = max(floor(count / T), 1), and frame i * skip
// is sampled for i in 0..T-1.
int64_t sampling_stride(int64_t frame_count, int sequence_length);

// `frame` (any size, BGR uint8) resized to height x width with cv::resize's INTER_LINEAR
// (cv2.resize's default) into out (H,W,C), converted to gray with COLOR_BGR2GRAY when channels
// is 1.
void resize_frame(const cv::Mat& frame, int height, int width, int channels, uint8_t* out);

}  // namespace hisvid::io
