// io/video.cpp — frames_extraction with OpenCV's FFmpeg backend, and its sequential fallback.
//
// Dimension letters: T frames, H height, W width, C channels (3: BGR, 1: gray).
//
// Seek path (the seeds'): skip = max(floor(count / T), 1), frame i*skip for i in 0..T-1, each
// resized with cv::resize's default INTER_LINEAR. Sequential path, taken when the container
// reports no frame count or any seek or read fails: a first pass counts the frames that really
// decode (n), a second pass keeps frames floor(i * n / T). Two passes instead of one that keeps
// every frame: memory stays one clip whatever the length of the video.
//
// OpenCV's and FFmpeg's own logging is switched off once, before the first capture opens, so
// that a broken file is reported by the VideoError alone.
#include "io/video.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#include <opencv2/videoio/registry.hpp>

#include "io/atomic_file.h"
#include "io/frames.h"

namespace hisvid::io {

namespace {

namespace fs = std::filesystem;

// AV_LOG_QUIET: OpenCV 4.x hands OPENCV_FFMPEG_LOGLEVEL to av_log_set_level when the FFmpeg
// backend starts; without it FFmpeg prints its errors (a broken frame, a bad header) to stderr.
constexpr const char* kFfmpegQuiet = "-8";

void silence_video_logging() {
  static std::once_flag once;
  std::call_once(once, [] {
    ::setenv("OPENCV_FFMPEG_LOGLEVEL", kFfmpegQuiet, /*overwrite=*/0);
    cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
  });
}

[[noreturn]] void video_fail(const std::string& path, const std::string& reason) {
  throw VideoError(fmt::format("{}: {}", path, reason));
}

// strerror in lower case ("permission denied"), to read as part of a sentence.
std::string errno_text(int error) {
  std::string text = std::strerror(error);
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  return text;
}

// A precise reason before OpenCV gets the file: OpenCV itself only says "not opened".
void check_readable(const std::string& path) {
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (status.type() == fs::file_type::not_found) {
    const std::string target = broken_link_target(path);
    video_fail(path, target.empty() ? "does not exist" : "is " + missing_reason(path));
  }
  // Any other failure to stat it, e.g. a folder above it that may not be searched.
  if (error) video_fail(path, "is not readable: " + errno_text(error.value()));
  if (fs::is_directory(status)) video_fail(path, "is a directory, not a video file");
  // A FIFO, a socket or a device would block or never end: only regular files are videos.
  if (!fs::is_regular_file(status)) video_fail(path, "is not a regular file (a video file is expected)");
  if (::access(path.c_str(), R_OK) != 0) video_fail(path, "is not readable: " + errno_text(errno));
  std::ifstream in(path, std::ios::binary);
  if (!in) video_fail(path, "is not readable: " + errno_text(errno));
  if (in.peek() == std::ifstream::traits_type::eof()) video_fail(path, "is empty (0 bytes)");
}

cv::VideoCapture open_capture(const std::string& path) {
  silence_video_logging();
  // FFmpeg when OpenCV has it (as the seeds' cv2 does), so decoding does not depend on which
  // other backends happen to be installed.
  const int api = cv::videoio_registry::hasBackend(cv::CAP_FFMPEG) ? cv::CAP_FFMPEG : cv::CAP_ANY;
  cv::VideoCapture capture;
  if (!capture.open(path, api) || !capture.isOpened()) {
    video_fail(path,
               "cannot be opened as a video (no video stream FFmpeg can decode: an audio-only file, a "
               "download cut off before its index, or not a video)");
  }
  return capture;
}

// The frame rate the container reports, or `fallback` when it reports none (or nonsense).
double container_fps(cv::VideoCapture& capture, double fallback) {
  const double fps = capture.get(cv::CAP_PROP_FPS);
  return fps > 0 && std::isfinite(fps) ? fps : fallback;
}

// One decoded frame as 8-bit BGR; false when the read fails or gives nothing.
bool read_bgr(cv::VideoCapture& capture, cv::Mat& frame) {
  if (!capture.read(frame) || frame.empty()) return false;
  if (frame.depth() != CV_8U) return false;
  if (frame.channels() == 1) {
    cv::cvtColor(frame, frame, cv::COLOR_GRAY2BGR);
  } else if (frame.channels() == 4) {
    cv::cvtColor(frame, frame, cv::COLOR_BGRA2BGR);
  } else if (frame.channels() != 3) {
    return false;
  }
  return true;
}

// Frame i of the clip: resized into clip.pixels, its stream index noted, and its original kept
// when the clip keeps originals.
void take_frame(const cv::Mat& frame, int i, int64_t index, const ExtractionSettings& s, bool keep_originals,
                Clip& clip) {
  resize_frame(frame, s.height, s.width, s.channels, clip.pixels.data() + i * s.frame_bytes());
  clip.frame_indices[static_cast<size_t>(i)] = index;
  if (!keep_originals) return;
  if (clip.original_height == 0) {
    clip.original_height = frame.rows;
    clip.original_width = frame.cols;
  }
  std::vector<uint8_t>& original = clip.originals[static_cast<size_t>(i)];
  original.resize(static_cast<size_t>(clip.original_height) * clip.original_width * 3);
  resize_frame(frame, clip.original_height, clip.original_width, 3, original.data());
}

// The seeds' path; false when any seek or read fails, OpenCV exceptions included, or when a read
// does not land on the frame sought (the fallback then overwrites whatever frames were written).
// A file cut short after its index (a faststart MP4 half downloaded: the header claims every
// frame) seeks "successfully" past its end and reads the last real frame again each time; the
// decoder's position after the read, not that of the frame sought plus one, tells.
bool extract_by_seeking(cv::VideoCapture& capture, double frame_count, const ExtractionSettings& s,
                        bool keep_originals, Clip& clip) {
  if (!(frame_count > 0) || !std::isfinite(frame_count)) return false;
  const auto count = static_cast<int64_t>(std::floor(frame_count));
  const int64_t skip = sampling_stride(count, s.sequence_length);
  cv::Mat frame;
  try {
    for (int i = 0; i < s.sequence_length; ++i) {
      if (!capture.set(cv::CAP_PROP_POS_FRAMES, static_cast<double>(i * skip))) return false;
      if (!read_bgr(capture, frame)) return false;
      if (capture.get(cv::CAP_PROP_POS_FRAMES) != static_cast<double>(i * skip + 1)) return false;
      take_frame(frame, i, i * skip, s, keep_originals, clip);
    }
  } catch (const cv::Exception&) {
    return false;
  }
  return true;
}

void extract_sequentially(const std::string& path, const ExtractionSettings& s, bool keep_originals,
                          Clip& clip) {
  int64_t decodable = 0;
  {
    cv::VideoCapture capture = open_capture(path);
    cv::Mat frame;
    while (read_bgr(capture, frame)) ++decodable;
  }
  if (decodable < s.sequence_length) {
    video_fail(path, fmt::format("has {} decodable frame{}, fewer than the {} needed", decodable,
                                 decodable == 1 ? "" : "s", s.sequence_length));
  }
  cv::VideoCapture capture = open_capture(path);
  cv::Mat frame;
  int64_t index = -1;  // of the frame last read
  // The seeds' stride over the frames that really decode: the frames a true header would give.
  const int64_t skip = sampling_stride(decodable, s.sequence_length);
  for (int i = 0; i < s.sequence_length; ++i) {
    const int64_t wanted = i * skip;
    while (index < wanted) {
      if (!read_bgr(capture, frame)) {
        video_fail(path,
                   fmt::format("decoded {} frames, then only {} when read again", decodable, index + 1));
      }
      ++index;
    }
    take_frame(frame, i, wanted, s, keep_originals, clip);
  }
}

}  // namespace

Clip extract_clip(const std::string& path, const ExtractionSettings& settings, bool keep_originals) {
  check_extraction(path, settings);
  check_readable(path);
  Clip clip;
  clip.frames = settings.sequence_length;
  clip.height = settings.height;
  clip.width = settings.width;
  clip.channels = settings.channels;
  clip.pixels.resize(settings.clip_bytes());  // (T,H,W,C)
  clip.frame_indices.assign(static_cast<size_t>(settings.sequence_length), 0);
  if (keep_originals) clip.originals.assign(static_cast<size_t>(settings.sequence_length), {});
  try {
    bool seeked = false;
    {
      cv::VideoCapture capture = open_capture(path);
      clip.fps = container_fps(capture, clip.fps);
      seeked =
          extract_by_seeking(capture, capture.get(cv::CAP_PROP_FRAME_COUNT), settings, keep_originals, clip);
    }
    if (seeked) {
      clip.method = "seek";
    } else {
      extract_sequentially(path, settings, keep_originals, clip);
      clip.method = "sequential";
    }
  } catch (const cv::Exception& e) {
    video_fail(path, fmt::format("cannot be decoded: OpenCV: {}", e.err));
  }
  return clip;
}

int64_t for_each_frame(const std::string& path, int height, int width,
                       const std::function<void(const uint8_t* frame)>& visit) {
  if (height < 1 || width < 1) fail("{}: frame size must be positive, got {}x{}", path, height, width);
  check_readable(path);
  std::vector<uint8_t> buffer(static_cast<size_t>(height) * width * 3);
  int64_t count = 0;
  try {
    cv::VideoCapture capture = open_capture(path);
    cv::Mat frame;
    while (read_bgr(capture, frame)) {
      resize_frame(frame, height, width, 3, buffer.data());
      visit(buffer.data());
      ++count;
    }
  } catch (const cv::Exception& e) {
    video_fail(path, fmt::format("cannot be decoded: OpenCV: {}", e.err));
  }
  return count;
}

DecodedVideo decode_all_frames(const std::string& path, int height, int width, bool keep_originals,
                               int channels) {
  if (height < 1 || width < 1) fail("{}: frame size must be positive, got {}x{}", path, height, width);
  if (channels != 1 && channels != 3)
    fail("{}: frames are decoded with 1 or 3 channels, not {}", path, channels);
  check_readable(path);
  DecodedVideo video;
  video.height = height;
  video.width = width;
  video.channels = channels;
  try {
    cv::VideoCapture capture = open_capture(path);
    video.fps = container_fps(capture, video.fps);
    cv::Mat frame;
    while (read_bgr(capture, frame)) {
      if (video.frames.empty()) {
        video.original_height = frame.rows;
        video.original_width = frame.cols;
      }
      std::vector<uint8_t> small(static_cast<size_t>(height) * width * channels);  // (H,W,C)
      resize_frame(frame, height, width, channels, small.data());
      video.frames.push_back(std::move(small));
      if (keep_originals) {
        // A stream that changes resolution midway keeps the first frame's size throughout.
        std::vector<uint8_t> original(static_cast<size_t>(video.original_height) * video.original_width * 3);
        resize_frame(frame, video.original_height, video.original_width, 3, original.data());
        video.originals.push_back(std::move(original));
      }
    }
  } catch (const cv::Exception& e) {
    video_fail(path, fmt::format("cannot be decoded: OpenCV: {}", e.err));
  }
  if (video.frames.empty()) video_fail(path, "has no decodable frames");
  return video;
}

int64_t count_readable_frames(const std::string& path) {
  int64_t frames = 0;
  try {
    cv::VideoCapture capture = open_capture(path);
    while (capture.grab()) ++frames;
  } catch (const Error&) {          // not openable as a video: none
  } catch (const cv::Exception&) {  // what was read before the damage counts
  }
  return frames;
}

const std::vector<std::string>& video_extensions() {
  // Camcorders' .mts/.m2ts and broadcast .ts, older phones' .3gp, Ogg's .ogv beside the usual.
  static const std::vector<std::string> extensions = {".avi", ".mp4",  ".mkv",  ".mov", ".webm",
                                                      ".mpg", ".mpeg", ".m4v",  ".wmv", ".flv",
                                                      ".3gp", ".mts",  ".m2ts", ".ts",  ".ogv"};
  return extensions;
}

bool is_video_entry(const std::filesystem::directory_entry& entry) {
  const std::string name = entry.path().filename().string();
  if (name.empty() || name[0] == '.') return false;
  const std::string extension = lowercase_extension(entry.path().string());
  const std::vector<std::string>& known = video_extensions();
  if (std::find(known.begin(), known.end(), extension) == known.end()) return false;
  std::error_code error;
  const bool broken_link = entry.is_symlink(error) && !std::filesystem::exists(entry.path(), error);
  return entry.is_regular_file(error) || broken_link;
}

}  // namespace hisvid::io
