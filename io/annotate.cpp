#include "io/annotate.h"

#include <algorithm>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "engine/error.h"
#include "io/atomic_file.h"
#include "io/video.h"

namespace hisvid::io {

void write_annotated_video(const std::string& path, int height, int width, double fps,
                           const std::vector<std::string>& labels,
                           const std::function<void(const FrameSink&)>& produce) {
  if (labels.empty()) fail("{}: no frames to write", path);
  // Text sized to the frame: readable on 320x240 and on 1080p alike.
  const double scale = std::max(0.4, height / 480.0);
  const int thickness = std::max(1, static_cast<int>(scale * 2));
  write_atomically(path, [&](const std::string& temp) {
    cv::VideoWriter writer(temp, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), fps > 0 ? fps : 25.0,
                           cv::Size(width, height));
    if (!writer.isOpened()) {
      fail(
          "{}: OpenCV cannot open an MJPG writer for this file (the name must end in .avi, and its folder "
          "must be writable)",
          path);
    }
    size_t i = 0;
    cv::Mat out;
    produce([&](const uint8_t* frame) {
      if (i >= labels.size()) fail("{}: more frames than the {} labelled", path, labels.size());
      cv::Mat(height, width, CV_8UC3, const_cast<uint8_t*>(frame)).copyTo(out);
      if (!labels[i].empty()) {
        int baseline = 0;
        const cv::Size size =
            cv::getTextSize(labels[i], cv::FONT_HERSHEY_SIMPLEX, scale, thickness, &baseline);
        cv::rectangle(out, {5, 5}, {15 + size.width, 15 + size.height + baseline}, cv::Scalar(0, 0, 0),
                      cv::FILLED);
        cv::putText(out, labels[i], {10, 10 + size.height}, cv::FONT_HERSHEY_SIMPLEX, scale,
                    cv::Scalar(0, 255, 0), thickness, cv::LINE_AA);
      }
      writer.write(out);
      ++i;
    });
    if (i != labels.size()) fail("{}: {} frames for {} labels", path, i, labels.size());
    writer.release();
    // OpenCV's writer reports no write error: a full disk or a file-size limit cuts the video short
    // without a word. Read back before it replaces anything: every frame must be there.
    const int64_t readable = count_readable_frames(temp);
    if (readable != static_cast<int64_t>(labels.size())) {
      fail(
          "{}: not written: the video OpenCV wrote holds {} of its {} frames (a full disk or a file-size "
          "limit; OpenCV does not say which); the earlier file, if there was one, is as it was",
          path, readable, labels.size());
    }
  });
}

void write_annotated_video(const std::string& path, const std::vector<std::vector<uint8_t>>& frames,
                           int height, int width, double fps, const std::vector<std::string>& labels) {
  if (labels.size() != frames.size()) fail("{}: {} labels for {} frames", path, labels.size(), frames.size());
  write_annotated_video(path, height, width, fps, labels, [&](const FrameSink& emit) {
    for (size_t i = 0; i < frames.size(); ++i) {
      if (frames[i].size() != static_cast<size_t>(height) * width * 3) {
        fail("{}: frame {} has {} bytes, expected {}x{}x3", path, i, frames[i].size(), height, width);
      }
      emit(frames[i].data());
    }
  });
}

std::vector<float> enlarge_map(const std::vector<double>& map, int map_height, int map_width, int height,
                               int width) {
  if (map_height < 1 || map_width < 1 || map.size() != static_cast<size_t>(map_height) * map_width) {
    fail("heatmap: {} values, not {}x{}", map.size(), map_height, map_width);
  }
  if (height < 1 || width < 1) fail("heatmap: cannot enlarge to {}x{}", height, width);
  cv::Mat1f small(map_height, map_width);
  for (int y = 0; y < map_height; ++y) {
    for (int x = 0; x < map_width; ++x)
      small(y, x) = static_cast<float>(map[static_cast<size_t>(y) * map_width + x]);
  }
  cv::Mat1f large;
  cv::resize(small, large, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
  return std::vector<float>(large.begin(), large.end());
}

std::vector<uint8_t> overlay_heatmap(const std::vector<uint8_t>& frame, int height, int width,
                                     const std::vector<double>& map, int map_height, int map_width) {
  if (frame.size() != static_cast<size_t>(height) * width * 3) {
    fail("overlay_heatmap: the frame holds {} bytes, not {}x{}x3", frame.size(), height, width);
  }
  std::vector<float> large = enlarge_map(map, map_height, map_width, height, width);
  for (float& v : large) v = std::clamp(v, 0.0f, 1.0f);
  cv::Mat1b levels(height, width);
  for (size_t i = 0; i < large.size(); ++i)
    levels.ptr<uint8_t>()[i] = cv::saturate_cast<uint8_t>(255.0f * large[i]);
  cv::Mat3b colours;
  cv::applyColorMap(levels, colours, cv::COLORMAP_JET);
  std::vector<uint8_t> out(frame.size());
  for (size_t p = 0; p < large.size(); ++p) {
    const double a = kHeatmapOpacity * large[p];
    const cv::Vec3b c = colours.ptr<cv::Vec3b>()[p];  // continuous: applyColorMap allocates it
    for (size_t k = 0; k < 3; ++k) {
      out[3 * p + k] = cv::saturate_cast<uint8_t>((1.0 - a) * frame[3 * p + k] + a * c[static_cast<int>(k)]);
    }
  }
  return out;
}

}  // namespace hisvid::io
