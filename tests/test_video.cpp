// io/video: extract_clip (the seeds' frames_extraction and its sequential fallback),
// decode_all_frames and the errors for bad files — on videos written here with cv::VideoWriter
// and on opencv-doc's sample videos ($HISVID_SAMPLE_VIDEOS, see scripts/fetch-sample-videos).
//
// Generated videos carry their frame index in their pixels: frame k is flat, blue =
// 16 * (k % 16) + 8, green = 16 * (k / 16) + 8, red = kRed. Reading the index back tolerates
// MJPG's error on a flat frame (a few levels) up to kIndexTolerance.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#include <string>
#include <vector>

#include "io/annotate.h"
#include "io/video.h"
#include "tests/test_support.h"

namespace hisvid::io {
namespace {

namespace fs = std::filesystem;

constexpr int kRed = 200;           // constant red: tells BGR from RGB
constexpr int kIndexTolerance = 7;  // half of the 16-level step between encoded indices
constexpr int kWriteWidth = 96;     // written frame size, resized to 64x64 on extraction
constexpr int kWriteHeight = 80;
constexpr double kFps = 25.0;

// The message of the VideoError `action` throws; a test failure when it throws none.
template <typename Action>
std::string video_error_of(Action&& action) {
  return hisvid::testing::error_of<VideoError>(std::forward<Action>(action));
}

cv::Mat index_frame(int k) {
  return cv::Mat(kWriteHeight, kWriteWidth, CV_8UC3, cv::Scalar(16 * (k % 16) + 8, 16 * (k / 16) + 8, kRed));
}

// Writes `frames` frames with the given fourcc; false when this OpenCV cannot write it.
bool write_video(const std::string& path, int frames, const char* fourcc = "MJPG",
                 cv::Mat (*frame_of)(int) = index_frame) {
  cv::VideoWriter writer(path, cv::VideoWriter::fourcc(fourcc[0], fourcc[1], fourcc[2], fourcc[3]), kFps,
                         cv::Size(kWriteWidth, kWriteHeight));
  if (!writer.isOpened()) return false;
  for (int k = 0; k < frames; ++k) writer.write(frame_of(k));
  writer.release();
  return true;
}

// A frame with fine texture (so that resizing matters) plus the index in its corner.
cv::Mat textured_frame(int k) {
  cv::Mat frame(kWriteHeight, kWriteWidth, CV_8UC3);
  for (int y = 0; y < kWriteHeight; ++y) {
    for (int x = 0; x < kWriteWidth; ++x) {
      frame.at<cv::Vec3b>(y, x) =
          cv::Vec3b(static_cast<uint8_t>((x * 37 + y * 11 + k * 5) % 256),
                    static_cast<uint8_t>((x * x + y * 3) % 256), static_cast<uint8_t>(k * 7 % 256));
    }
  }
  return frame;
}

// The frame index encoded in pixel (y, x) of frame t of a clip, or -1 when it does not decode.
int decoded_index(const uint8_t* clip, int height, int width, int t, int y = 32, int x = 32) {
  const uint8_t* p = clip + ((static_cast<size_t>(t) * height + y) * width + x) * 3;
  const int blue = p[0], green = p[1], red = p[2];
  const int low = blue / 16, high = green / 16;  // 16 * k + 8 +- 7 lies in [16 * k, 16 * k + 16)
  if (std::abs(blue - (16 * low + 8)) > kIndexTolerance ||
      std::abs(green - (16 * high + 8)) > kIndexTolerance || std::abs(red - kRed) > kIndexTolerance) {
    return -1;
  }
  return high * 16 + low;
}

std::vector<int> clip_indices(const Clip& clip) {
  std::vector<int> indices;
  for (int t = 0; t < clip.frames; ++t)
    indices.push_back(decoded_index(clip.pixels.data(), clip.height, clip.width, t));
  return indices;
}

class VideoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = testing::fresh_directory("hisvid_video_tests");
    fs::create_directories(directory_);
  }
  void TearDown() override {
    std::error_code ignored;
    fs::permissions(directory_, fs::perms::owner_all, fs::perm_options::add, ignored);
    for (const auto& entry : fs::directory_iterator(directory_, ignored)) {
      fs::permissions(entry.path(), fs::perms::owner_all, fs::perm_options::add, ignored);
    }
    fs::remove_all(directory_, ignored);
  }
  std::string file(const std::string& name) const { return (directory_ / name).string(); }

  fs::path directory_;
};

ExtractionSettings settings(int frames = 20, int size = 64) { return ExtractionSettings{frames, size, size}; }

std::vector<int> expected_seek_indices(int count, int frames) {
  const int skip = std::max(count / frames, 1);
  std::vector<int> indices;
  for (int i = 0; i < frames; ++i) indices.push_back(i * skip);
  return indices;
}

// --- the seek path on generated videos ---------------------------------------------------

TEST_F(VideoTest, ThirtyFramesGiveSkipOneFramesZeroToNineteen) {
  ASSERT_TRUE(write_video(file("v.avi"), 30));
  const Clip clip = extract_clip(file("v.avi"), settings());
  EXPECT_EQ(clip.method, "seek");
  EXPECT_EQ(clip.frames, 20);
  EXPECT_EQ(clip.height, 64);
  EXPECT_EQ(clip.width, 64);
  EXPECT_EQ(clip.pixels.size(), 20u * 64 * 64 * 3);
  EXPECT_EQ(clip_indices(clip), expected_seek_indices(30, 20));  // 0..19
}

TEST_F(VideoTest, HundredFramesGiveSkipFive) {
  ASSERT_TRUE(write_video(file("v.avi"), 100));
  const Clip clip = extract_clip(file("v.avi"), settings());
  EXPECT_EQ(clip.method, "seek");
  const std::vector<int> expected = expected_seek_indices(100, 20);  // 0, 5, ..., 95
  EXPECT_EQ(expected[1], 5);
  EXPECT_EQ(clip_indices(clip), expected);
}

TEST_F(VideoTest, SkipIsTheFloorOfCountOverT) {
  ASSERT_TRUE(write_video(file("v.avi"), 59));  // 59 / 20 = 2.95 -> skip 2
  const Clip clip = extract_clip(file("v.avi"), settings());
  EXPECT_EQ(clip_indices(clip), expected_seek_indices(59, 20));
  EXPECT_EQ(clip_indices(clip).back(), 38);
}

TEST_F(VideoTest, KeepsBgrOrder) {
  ASSERT_TRUE(write_video(file("v.avi"), 30));
  const Clip clip = extract_clip(file("v.avi"), settings());
  const uint8_t* pixel = clip.pixels.data() + ((3 * 64 + 10) * 64 + 10) * 3;  // frame 3, (10, 10)
  EXPECT_NEAR(pixel[0], 16 * 3 + 8, kIndexTolerance);                         // blue
  EXPECT_NEAR(pixel[1], 8, kIndexTolerance);                                  // green
  EXPECT_NEAR(pixel[2], kRed, kIndexTolerance);                               // red last
}

// Each clip frame is exactly cv::resize(INTER_LINEAR) of decoded frame i*skip, as in the seeds.
TEST_F(VideoTest, FramesAreTheBilinearResizeOfTheSeekedFrames) {
  ASSERT_TRUE(write_video(file("v.avi"), 45, "MJPG", textured_frame));
  const Clip clip = extract_clip(file("v.avi"), settings(20, 64));
  ASSERT_EQ(clip.method, "seek");
  cv::VideoCapture capture(file("v.avi"), cv::CAP_FFMPEG);
  std::vector<cv::Mat> decoded;
  for (cv::Mat frame; capture.read(frame);) decoded.push_back(frame.clone());
  ASSERT_EQ(decoded.size(), 45u);
  const int skip = 45 / 20;
  for (int i = 0; i < 20; ++i) {
    cv::Mat expected;
    cv::resize(decoded[static_cast<size_t>(i * skip)], expected,
               cv::Size(64, 64));  // INTER_LINEAR by default
    const cv::Mat got(64, 64, CV_8UC3, const_cast<uint8_t*>(clip.pixels.data()) + i * 64 * 64 * 3);
    EXPECT_EQ(cv::norm(expected, got, cv::NORM_INF), 0) << "frame " << i;
  }
}

// A gray model's clip: each frame is cv::cvtColor(COLOR_BGR2GRAY) of the BGR clip's frame.
TEST_F(VideoTest, GrayFramesAreOpenCvsBgr2GrayOfTheResizedFrames) {
  ASSERT_TRUE(write_video(file("v.avi"), 45, "MJPG", textured_frame));
  const Clip bgr = extract_clip(file("v.avi"), settings(20, 48));
  ExtractionSettings gray_settings = settings(20, 48);
  gray_settings.channels = 1;
  const Clip gray = extract_clip(file("v.avi"), gray_settings);
  EXPECT_EQ(gray.channels, 1);
  ASSERT_EQ(gray.pixels.size(), 20u * 48 * 48);
  for (int i = 0; i < 20; ++i) {
    const cv::Mat frame(48, 48, CV_8UC3, const_cast<uint8_t*>(bgr.pixels.data()) + i * 48 * 48 * 3);
    cv::Mat expected;
    cv::cvtColor(frame, expected, cv::COLOR_BGR2GRAY);
    const cv::Mat got(48, 48, CV_8UC1, const_cast<uint8_t*>(gray.pixels.data()) + i * 48 * 48);
    EXPECT_EQ(cv::norm(expected, got, cv::NORM_INF), 0) << "frame " << i;
  }
  gray_settings.channels = 2;
  EXPECT_THROW(extract_clip(file("v.avi"), gray_settings), Error);
}

// predict --out writes the labelled video a frame at a time as it decodes it again: the frames
// for_each_frame hands over are decode_all_frames' originals, one at a time; the writer takes
// them as they come, and a source that gives other frames than labels leaves no output.
TEST_F(VideoTest, LabelledVideosAreWrittenAFrameAtATime) {
  ASSERT_TRUE(write_video(file("v.avi"), 30, "MJPG", textured_frame));
  const DecodedVideo all = decode_all_frames(file("v.avi"), 64, 64, true);
  size_t i = 0;
  const int64_t n =
      for_each_frame(file("v.avi"), all.original_height, all.original_width, [&](const uint8_t* f) {
        ASSERT_LT(i, all.originals.size());
        EXPECT_TRUE(std::equal(all.originals[i].begin(), all.originals[i].end(), f)) << "frame " << i;
        ++i;
      });
  EXPECT_EQ(n, 30);
  const std::vector<std::string> labels(30, "a label");
  const auto from_file = [&](const FrameSink& emit) {
    for_each_frame(file("v.avi"), all.original_height, all.original_width, emit);
  };
  write_annotated_video(file("out.avi"), all.original_height, all.original_width, 25.0, labels, from_file);
  cv::VideoCapture written(file("out.avi"), cv::CAP_FFMPEG);
  EXPECT_EQ(written.get(cv::CAP_PROP_FRAME_COUNT), 30);
  const std::vector<std::string> more(31, "a label");
  EXPECT_THROW(write_annotated_video(file("short.avi"), all.original_height, all.original_width, 25.0, more,
                                     from_file),
               Error);
  EXPECT_FALSE(fs::exists(file("short.avi")));
}

TEST_F(VideoTest, OtherSizesAndLengths) {
  ASSERT_TRUE(write_video(file("v.avi"), 40));
  const Clip clip = extract_clip(file("v.avi"), ExtractionSettings{8, 24, 40});
  EXPECT_EQ(clip.frames, 8);
  EXPECT_EQ(clip.height, 24);
  EXPECT_EQ(clip.width, 40);
  EXPECT_EQ(clip.pixels.size(), 8u * 24 * 40 * 3);
  std::vector<int> indices;
  for (int t = 0; t < 8; ++t) indices.push_back(decoded_index(clip.pixels.data(), 24, 40, t, 12, 20));
  EXPECT_EQ(indices, expected_seek_indices(40, 8));
}

TEST_F(VideoTest, Mp4vMp4) {
  if (!write_video(file("v.mp4"), 60, "mp4v")) GTEST_SKIP() << "this OpenCV build cannot write mp4v .mp4";
  const Clip clip = extract_clip(file("v.mp4"), settings());
  EXPECT_EQ(clip.method, "seek");
  EXPECT_EQ(clip_indices(clip), expected_seek_indices(60, 20));
}

// --- the sequential fallback ----------------------------------------------------------------

// A file cut short keeps its header's frame count, so seeking past the cut fails: the frames
// come from a sequential decode, with the seeds' stride max(n / T, 1) over the n that really
// decode (the frames a truthful header would have given).
// Checks a file cut short (its header or index still claiming `claimed` frames) against the
// sequential fallback: the frames come from the ones that really decode, with the seeds' stride.
void expect_sequential_frames(const std::string& path, double claimed) {
  std::vector<cv::Mat> decoded;
  {
    cv::VideoCapture capture(path, cv::CAP_FFMPEG);
    ASSERT_TRUE(capture.isOpened());
    EXPECT_EQ(capture.get(cv::CAP_PROP_FRAME_COUNT), claimed) << "the header still claims every frame";
    for (cv::Mat frame; capture.read(frame) && !frame.empty();) decoded.push_back(frame.clone());
  }
  const int n = static_cast<int>(decoded.size());
  ASSERT_GE(n, 20);
  ASSERT_LT(n, claimed);
  const Clip clip = extract_clip(path, settings());
  EXPECT_EQ(clip.method, "sequential");
  for (int i = 0; i < 20; ++i) {
    const int index = i * std::max(n / 20, 1);
    EXPECT_EQ(clip.frame_indices[static_cast<size_t>(i)], index);
    cv::Mat expected;
    cv::resize(decoded[static_cast<size_t>(index)], expected, cv::Size(64, 64));
    const cv::Mat got(64, 64, CV_8UC3, const_cast<uint8_t*>(clip.pixels.data()) + i * 64 * 64 * 3);
    EXPECT_EQ(cv::norm(expected, got, cv::NORM_INF), 0) << "frame " << i << " of " << n << " decodable";
  }
}

TEST_F(VideoTest, TruncatedFileFallsBackToSequentialDecoding) {
  ASSERT_TRUE(write_video(file("full.avi"), 100, "MJPG", textured_frame));
  const auto size = fs::file_size(file("full.avi"));
  fs::copy_file(file("full.avi"), file("cut.avi"));
  fs::resize_file(file("cut.avi"), size * 6 / 10);
  expect_sequential_frames(file("cut.avi"), 100);
}

// An MP4 as the web serves it ("faststart": the moov index before the media data) made from
// OpenCV's output (moov last): moov moved ahead of mdat and every chunk offset in it (stco, co64)
// shifted by moov's size. False where the file is not laid out as expected.
bool make_faststart(const std::string& in, const std::string& out) {
  std::string b = hisvid::testing::file_bytes(in);
  const auto be = [&](size_t at, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = v << 8 | uint8_t(b[at + size_t(i)]);
    return v;
  };
  size_t moov_at = 0, moov_size = 0, mdat_at = 0;
  for (size_t at = 0; at + 8 <= b.size();) {
    const uint64_t size = be(at, 4);
    if (size < 8 || at + size > b.size()) return false;
    if (b.compare(at + 4, 4, "moov") == 0) moov_at = at, moov_size = size;
    if (b.compare(at + 4, 4, "mdat") == 0) mdat_at = at;
    at += size;
  }
  if (moov_size == 0 || mdat_at == 0 || moov_at < mdat_at) return false;
  std::string moov = b.substr(moov_at, moov_size);
  const auto put = [&](size_t at, uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i, v >>= 8) moov[at + size_t(i)] = char(v & 0xff);
  };
  const auto get = [&](size_t at, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = v << 8 | uint8_t(moov[at + size_t(i)]);
    return v;
  };
  // Walks the boxes in [begin, end) of moov, into the containers down to stbl.
  std::function<void(size_t, size_t)> shift = [&](size_t begin, size_t end) {
    for (size_t at = begin; at + 8 <= end;) {
      const uint64_t size = get(at, 4);
      if (size < 8) return;
      const std::string type = moov.substr(at + 4, 4);
      if (type == "trak" || type == "mdia" || type == "minf" || type == "stbl") shift(at + 8, at + size);
      const int width = type == "stco" ? 4 : type == "co64" ? 8 : 0;
      for (uint64_t e = 0; width > 0 && e < get(at + 12, 4); ++e) {
        const size_t entry = at + 16 + size_t(e) * size_t(width);
        put(entry, get(entry, width) + moov_size, width);
      }
      at += size;
    }
  };
  shift(8, moov.size());
  std::ofstream(out, std::ios::binary) << b.substr(0, mdat_at) << moov << b.substr(mdat_at, moov_at - mdat_at)
                                       << b.substr(moov_at + moov_size);
  return true;
}

// A faststart MP4 cut short (a download stopped at 75%) keeps its index of every frame: OpenCV
// seeks past the cut without an error and reads the last real frame again and again. The
// decoder's position gives it away; the frames then come from the sequential fallback, never a
// repeated frame standing in for ones the file lacks.
TEST_F(VideoTest, ATruncatedFaststartMp4IsNotPaddedWithItsLastFrame) {
  // H.264, as the web's MP4s: its decoder, past the cut, hands back the last frame it holds.
  if (!write_video(file("full.mp4"), 100, "avc1", textured_frame))
    GTEST_SKIP() << "this OpenCV build cannot write H.264 .mp4";
  ASSERT_TRUE(make_faststart(file("full.mp4"), file("fast.mp4")));
  ASSERT_EQ(extract_clip(file("fast.mp4"), settings()).method, "seek");  // whole, the seeds' path
  const std::string bytes = hisvid::testing::file_bytes(file("fast.mp4"));
  std::ofstream(file("cut.mp4"), std::ios::binary) << bytes.substr(0, bytes.size() * 3 / 4);

  expect_sequential_frames(file("cut.mp4"), 100);
}

// --- bad input --------------------------------------------------------------------------------

TEST_F(VideoTest, MissingFile) {
  const std::string message = video_error_of([&] { extract_clip(file("nope.avi"), settings()); });
  EXPECT_NE(message.find(file("nope.avi")), std::string::npos) << message;
  EXPECT_NE(message.find("does not exist"), std::string::npos) << message;
}

TEST_F(VideoTest, DirectoryInsteadOfFile) {
  fs::create_directories(file("dir.avi"));
  const std::string message = video_error_of([&] { extract_clip(file("dir.avi"), settings()); });
  EXPECT_NE(message.find("is a directory"), std::string::npos) << message;
}

TEST_F(VideoTest, EmptyFile) {
  std::ofstream(file("empty.avi")).close();
  const std::string message = video_error_of([&] { extract_clip(file("empty.avi"), settings()); });
  EXPECT_NE(message.find(file("empty.avi")), std::string::npos) << message;
  EXPECT_NE(message.find("is empty"), std::string::npos) << message;
}

TEST_F(VideoTest, TextFileWithVideoExtension) {
  std::ofstream(file("x.avi")) << "this is not a video, only text with a video's name\n";
  const std::string message = video_error_of([&] { extract_clip(file("x.avi"), settings()); });
  EXPECT_NE(message.find(file("x.avi")), std::string::npos) << message;
  EXPECT_NE(message.find("cannot be opened as a video"), std::string::npos) << message;
}

// The first KB of a real video: the header survives, no frame does.
TEST_F(VideoTest, VideoCutToOneKilobyte) {
  ASSERT_TRUE(write_video(file("full.avi"), 30));
  fs::copy_file(file("full.avi"), file("cut.avi"));
  fs::resize_file(file("cut.avi"), 1024);
  const std::string message = video_error_of([&] { extract_clip(file("cut.avi"), settings()); });
  EXPECT_NE(message.find(file("cut.avi")), std::string::npos) << message;
  const bool unopenable = message.find("cannot be opened as a video") != std::string::npos;
  const bool no_frames =
      message.find("has 0 decodable frames, fewer than the 20 needed") != std::string::npos;
  EXPECT_TRUE(unopenable || no_frames) << message;
  RecordProperty("reason", message);
}

TEST_F(VideoTest, FewerFramesThanNeeded) {
  ASSERT_TRUE(write_video(file("short.avi"), 12));
  const std::string message = video_error_of([&] { extract_clip(file("short.avi"), settings()); });
  EXPECT_NE(message.find(file("short.avi")), std::string::npos) << message;
  EXPECT_NE(message.find("has 12 decodable frames, fewer than the 20 needed"), std::string::npos) << message;
  // Exactly T frames is enough.
  ASSERT_TRUE(write_video(file("exact.avi"), 20));
  EXPECT_EQ(clip_indices(extract_clip(file("exact.avi"), settings())), expected_seek_indices(20, 20));
}

TEST_F(VideoTest, UnreadableFile) {
  ASSERT_TRUE(write_video(file("locked.avi"), 30));
  fs::permissions(file("locked.avi"), fs::perms::none);
  const std::string path = file("locked.avi");
  // True when extract_clip refuses the file with the expected message.
  auto refused = [&] {
    try {
      extract_clip(path, settings());
    } catch (const VideoError& e) {
      const std::string message = e.what();
      return message.find(path) != std::string::npos &&
             message.find("is not readable: permission denied") != std::string::npos;
    }
    return false;
  };
  if (::geteuid() != 0) {
    EXPECT_TRUE(refused());
    return;
  }
  // Root reads a chmod 000 file anyway (CI runs as root): check as the unprivileged user
  // 'nobody' (65534) in a child process.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
    ::_exit(refused() ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: not refused as expected, 2: could not become nobody";
}

TEST_F(VideoTest, BadSettings) {
  ASSERT_TRUE(write_video(file("v.avi"), 30));
  EXPECT_THROW(extract_clip(file("v.avi"), ExtractionSettings{0, 64, 64}), Error);
  EXPECT_THROW(extract_clip(file("v.avi"), ExtractionSettings{20, 64, -1}), Error);
}

// --- decode_all_frames, extensions --------------------------------------------------------

TEST_F(VideoTest, DecodeAllFrames) {
  ASSERT_TRUE(write_video(file("v.avi"), 30));
  const DecodedVideo video = decode_all_frames(file("v.avi"), 32, 48, /*keep_originals=*/true);
  ASSERT_EQ(video.frames.size(), 30u);
  ASSERT_EQ(video.originals.size(), 30u);
  EXPECT_EQ(video.height, 32);
  EXPECT_EQ(video.width, 48);
  EXPECT_EQ(video.original_height, kWriteHeight);
  EXPECT_EQ(video.original_width, kWriteWidth);
  EXPECT_NEAR(video.fps, kFps, 1e-6);
  for (int k = 0; k < 30; ++k) {
    ASSERT_EQ(video.frames[static_cast<size_t>(k)].size(), 32u * 48 * 3);
    ASSERT_EQ(video.originals[static_cast<size_t>(k)].size(),
              static_cast<size_t>(kWriteHeight) * kWriteWidth * 3);
    EXPECT_EQ(decoded_index(video.frames[static_cast<size_t>(k)].data(), 32, 48, 0, 16, 24), k);
    EXPECT_EQ(
        decoded_index(video.originals[static_cast<size_t>(k)].data(), kWriteHeight, kWriteWidth, 0, 40, 48),
        k);
  }
  const DecodedVideo small = decode_all_frames(file("v.avi"), 16, 16, /*keep_originals=*/false);
  EXPECT_EQ(small.frames.size(), 30u);
  EXPECT_TRUE(small.originals.empty());
  EXPECT_EQ(small.original_width, kWriteWidth);
}

TEST_F(VideoTest, DecodeAllFramesOfBadFiles) {
  std::ofstream(file("x.avi")) << "not a video";
  const std::string message = video_error_of([&] { decode_all_frames(file("x.avi"), 64, 64, false); });
  EXPECT_NE(message.find("cannot be opened as a video"), std::string::npos) << message;
  EXPECT_NE(
      video_error_of([&] { decode_all_frames(file("nope.avi"), 64, 64, false); }).find("does not exist"),
      std::string::npos);
  fs::create_symlink(file("gone.avi"), file("link.avi"));
  const std::string broken = video_error_of([&] { extract_clip(file("link.avi"), settings()); });
  EXPECT_NE(broken.find("is a symbolic link to " + file("gone.avi") + ", which does not exist"),
            std::string::npos)
      << broken;
}

TEST(VideoExtensions, LowerCaseWithDot) {
  const std::vector<std::string>& extensions = video_extensions();
  for (const char* wanted :
       {".avi", ".mp4", ".mkv", ".mov", ".webm", ".3gp", ".mts", ".m2ts", ".ts", ".ogv"}) {
    EXPECT_NE(std::find(extensions.begin(), extensions.end(), wanted), extensions.end()) << wanted;
  }
  for (const std::string& extension : extensions) {
    ASSERT_FALSE(extension.empty());
    EXPECT_EQ(extension[0], '.');
    for (const char c : extension) EXPECT_FALSE(std::isupper(static_cast<unsigned char>(c))) << extension;
  }
}

// --- opencv-doc's sample videos ----------------------------------------------------------------

// The path of a sample video, or "" with the reason it is unavailable.
std::string sample_video(const std::string& name, std::string& why_not) {
  const char* directory = std::getenv("HISVID_SAMPLE_VIDEOS");
  if (directory == nullptr || *directory == '\0') {
    why_not = "HISVID_SAMPLE_VIDEOS is not set (export HISVID_SAMPLE_VIDEOS=$(scripts/fetch-sample-videos))";
    return "";
  }
  const std::string path = (fs::path(directory) / name).string();
  if (!fs::is_regular_file(path)) {
    why_not =
        path + " not found (HISVID_SAMPLE_VIDEOS=" + directory + "; scripts/fetch-sample-videos fetches it)";
    return "";
  }
  return path;
}

// vtest.avi: 795 frames at 10 fps, 768x576, XVID; the seek path takes frames 0, 39, ..., 741.
TEST(SampleVideos, VtestGivesAClipBySeeking) {
  std::string why_not;
  const std::string path = sample_video("vtest.avi", why_not);
  if (path.empty()) GTEST_SKIP() << why_not;
  const Clip clip = extract_clip(path, settings());
  EXPECT_EQ(clip.method, "seek");
  EXPECT_EQ(clip.frames, 20);
  EXPECT_EQ(clip.height, 64);
  EXPECT_EQ(clip.width, 64);
  EXPECT_EQ(clip.pixels.size(), 20u * 64 * 64 * 3);
  // Every seeked frame equals the same frame reached by decoding from the start.
  const DecodedVideo all = decode_all_frames(path, 64, 64, false);
  EXPECT_EQ(all.frames.size(), 795u);
  const int skip = static_cast<int>(all.frames.size()) / 20;
  for (int i = 0; i < 20; ++i) {
    EXPECT_TRUE(std::equal(all.frames[static_cast<size_t>(i * skip)].begin(),
                           all.frames[static_cast<size_t>(i * skip)].end(),
                           clip.pixels.begin() + i * 64 * 64 * 3))
        << "frame " << i * skip;
  }
}

// tree.avi claims 444 frames and decodes 68: seeking past frame 68 fails, the fallback takes
// frames i * max(68 / 20, 1) = 3i of those that decode.
TEST(SampleVideos, TreeFallsBackToSequential) {
  std::string why_not;
  const std::string path = sample_video("tree.avi", why_not);
  if (path.empty()) GTEST_SKIP() << why_not;
  cv::VideoCapture capture(path, cv::CAP_FFMPEG);
  ASSERT_TRUE(capture.isOpened());
  EXPECT_EQ(capture.get(cv::CAP_PROP_FRAME_COUNT), 444);
  const Clip clip = extract_clip(path, settings());
  EXPECT_EQ(clip.method, "sequential");
  EXPECT_EQ(clip.pixels.size(), 20u * 64 * 64 * 3);
  const DecodedVideo all = decode_all_frames(path, 64, 64, false);
  const size_t n = all.frames.size();
  EXPECT_EQ(n, 68u);
  for (size_t i = 0; i < 20; ++i) {
    const size_t index = i * std::max<size_t>(n / 20, 1);
    EXPECT_TRUE(
        std::equal(all.frames[index].begin(), all.frames[index].end(), clip.pixels.begin() + i * 64 * 64 * 3))
        << "clip frame " << i << " should be decoded frame " << index;
  }
}

TEST(SampleVideos, MegamindGivesAClip) {
  std::string why_not;
  const std::string path = sample_video("Megamind.avi", why_not);
  if (path.empty()) GTEST_SKIP() << why_not;
  const Clip clip = extract_clip(path, settings());
  EXPECT_EQ(clip.method, "seek");
  EXPECT_EQ(clip.pixels.size(), 20u * 64 * 64 * 3);
}

// The deliberately damaged Megamind_bugy.avi: a clip or a VideoError, never a crash. With
// Debian's OpenCV 4.6 / FFmpeg 5.1 it gives a clip by seeking; the outcome is recorded.
TEST(SampleVideos, MegamindBugyGivesAClipOrAVideoError) {
  std::string why_not;
  const std::string path = sample_video("Megamind_bugy.avi", why_not);
  if (path.empty()) GTEST_SKIP() << why_not;
  try {
    const Clip clip = extract_clip(path, settings());
    EXPECT_EQ(clip.pixels.size(), 20u * 64 * 64 * 3);
    ::testing::Test::RecordProperty("megamind_bugy", "clip (" + clip.method + ")");
  } catch (const VideoError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    ::testing::Test::RecordProperty("megamind_bugy", std::string("VideoError: ") + e.what());
  }
  try {
    const DecodedVideo all = decode_all_frames(path, 64, 64, false);
    ::testing::Test::RecordProperty("megamind_bugy_decoded_frames", static_cast<int>(all.frames.size()));
  } catch (const VideoError& e) {
    ::testing::Test::RecordProperty("megamind_bugy_decode_all", std::string("VideoError: ") + e.what());
  }
}

}  // namespace
}  // namespace hisvid::io
