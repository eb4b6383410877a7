// io/video.h — reading videos with OpenCV: the seeds' frames_extraction, made robust.
//
// frames_extraction (seeds 000-004): skip = max(frame_count / T, 1); for i in 0..T-1 seek to
// frame i * skip, read it, resize it to H x W with cv2.resize's default (bilinear)
// interpolation, keep BGR — or, for a model of one input channel, convert it to gray as
// cv2.cvtColor(frame, COLOR_BGR2GRAY) does; the division by 255 happens when a batch is formed. Container
// frame counts lie (opencv-doc's tree.avi claims 444 frames and decodes 68): when a seek or read fails, or
// a read lands elsewhere than the frame sought (a faststart MP4 cut short repeats its last frame), the
// file is decoded sequentially and the T frames are taken with the seeds' stride over the n frames that
// really exist (max(n / T, 1)), those a truthful header would have given. A file that
// cannot be opened, is not a video, or holds fewer than T frames raises VideoError naming the file and the
// reason.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "engine/error.h"

namespace hisvid::io {

class VideoError : public Error {
 public:
  using Error::Error;
};

struct ExtractionSettings {
  int sequence_length = 20;  // T
  int height = 64;
  int width = 64;
  int channels = 3;  // C: 3 BGR as decoded, 1 gray
  size_t frame_bytes() const { return static_cast<size_t>(height) * width * channels; }
  size_t clip_bytes() const { return static_cast<size_t>(sequence_length) * frame_bytes(); }
};

// T frames of H x W x C uint8 (BGR or gray), contiguous (T,H,W,C).
struct Clip {
  std::vector<uint8_t> pixels;
  int frames = 0, height = 0, width = 0, channels = 3;
  // How the frames were obtained: "seek" (the seeds' path) or "sequential" (the fallback).
  std::string method;
  double fps = 25.0;  // the container's (25 when it reports none)
  // The index in the decoded stream of each of the T frames.
  std::vector<int64_t> frame_indices;
  // With keep_originals: the T frames at the video's own size, BGR (original_height,
  // original_width, 3) each (a stream changing resolution midway keeps its first frame's size).
  std::vector<std::vector<uint8_t>> originals;
  int original_height = 0, original_width = 0;
};

Clip extract_clip(const std::string& path, const ExtractionSettings& settings, bool keep_originals = false);

// Every decodable frame of a video, resized to H x W (BGR uint8, or gray when channels is 1),
// for per-frame prediction; fps is the container's (25 when it reports none).
struct DecodedVideo {
  std::vector<std::vector<uint8_t>> frames;     // each (H,W,C)
  std::vector<std::vector<uint8_t>> originals;  // each full size BGR, when keep_originals
  int height = 0, width = 0, channels = 3;      // of `frames`
  int original_height = 0, original_width = 0;
  double fps = 25.0;
};
// Calls visit(frame) for every decodable frame of `path` in order, each resized to height x width
// (BGR uint8, (height, width, 3)), holding one frame at a time; returns how many there were.
// Errors as decode_all_frames'.
int64_t for_each_frame(const std::string& path, int height, int width,
                       const std::function<void(const uint8_t* frame)>& visit);

DecodedVideo decode_all_frames(const std::string& path, int height, int width, bool keep_originals,
                               int channels = 3);

// How many frames of the video file `path` can be read back (0 when it cannot be opened): the
// check of a file just written, since OpenCV's writer reports no write error (a full disk or a
// file-size limit cuts the video short without a word).
int64_t count_readable_frames(const std::string& path);

// File extensions treated as videos when scanning a dataset folder (lower case, with the dot).
const std::vector<std::string>& video_extensions();

// Whether a folder entry is one that a scan for videos takes: not hidden, a video extension (any
// case), and a regular file or a broken link with a video's name (then skipped and named when it
// is decoded, not passed over in silence). Never a FIFO or a device, which a decoder could wait on
// forever.
bool is_video_entry(const std::filesystem::directory_entry& entry);

}  // namespace hisvid::io
