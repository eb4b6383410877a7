// io/frames.cpp — frames_extraction's sampling stride and resize (io/frames.h).
#include "io/frames.h"

#include <algorithm>
#include <cstring>
#include <opencv2/imgproc.hpp>

namespace hisvid::io {

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
