// io/frames.cpp — frames_extraction's sampling stride and resize (io/frames.h).
#include "io/frames.h"

#include <algorithm>
#include <cstring>
#include <opencv2/imgproc.hpp>

#include "engine/error.h"

namespace hisvid::io {

void check_extraction(const std::string& where, const ExtractionSettings& s) {
  if (s.sequence_length < 1 || s.height < 1 || s.width < 1) {
    fail("{}: extraction settings must be positive, got sequence_length {}, height {}, width {}", where,
         s.sequence_length, s.height, s.width);
  }
  if (s.channels != 1 && s.channels != 3) {
    fail("{}: frames are extracted with 1 (gray) or 3 (BGR) channels, not {}", where, s.channels);
  }
}

int64_t sampling_stride(int64_t frame_count, int sequence_length) {
  return std::max<int64_t>(frame_count / sequence_length, 1);
}

void resize_frame(const cv::Mat& frame, int height, int width, int channels, uint8_t* out) {
  cv::Mat resized;
  cv::resize(frame, resized, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
  if (channels == 1) cv::cvtColor(resized, resized, cv::COLOR_BGR2GRAY);
  const size_t row_bytes = static_cast<size_t>(width) * channels;
  for (int y = 0; y < height; ++y) std::memcpy(out + y * row_bytes, resized.ptr<uint8_t>(y), row_bytes);
}

}  // namespace hisvid::io
