#include "io/annotate.h"

#include <algorithm>

#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "engine/error.h"
#include "io/atomic_file.h"

namespace hisvid::io {

void write_annotated_video(const std::string& path, const std::vector<std::vector<uint8_t>>& frames, int height,
                           int width, double fps, const std::vector<std::string>& labels) {
  if (frames.empty()) fail("{}: no frames to write", path);
  if (labels.size() != frames.size()) fail("{}: {} labels for {} frames", path, labels.size(), frames.size());
  // Text sized to the frame: readable on 320x240 and on 1080p alike.
  const double scale = std::max(0.4, height / 480.0);
  const int thickness = std::max(1, static_cast<int>(scale * 2));
  write_atomically(path, [&](const std::string& temp) {
    cv::VideoWriter writer(temp, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), fps > 0 ? fps : 25.0,
                           cv::Size(width, height));
    if (!writer.isOpened()) {
      fail(
          "{}: OpenCV cannot open an MJPG writer for this file (the name must end in .avi, and its folder "
          "must be "
          "writable)",
          path);
    }
    for (size_t i = 0; i < frames.size(); ++i) {
      if (frames[i].size() != static_cast<size_t>(height) * width * 3) {
        fail("{}: frame {} has {} bytes, expected {}x{}x3", path, i, frames[i].size(), height, width);
      }
      cv::Mat frame(height, width, CV_8UC3, const_cast<uint8_t*>(frames[i].data()));
      cv::Mat out = frame.clone();
      if (!labels[i].empty()) {
        int baseline = 0;
        const cv::Size size = cv::getTextSize(labels[i], cv::FONT_HERSHEY_SIMPLEX, scale, thickness, &baseline);
        cv::rectangle(out, {5, 5}, {15 + size.width, 15 + size.height + baseline}, cv::Scalar(0, 0, 0), cv::FILLED);
        cv::putText(out, labels[i], {10, 10 + size.height}, cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar(0, 255, 0),
                    thickness, cv::LINE_AA);
      }
      writer.write(out);
    }
    writer.release();
  });
}

}  // namespace hisvid::io
