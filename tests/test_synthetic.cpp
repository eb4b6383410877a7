// io/synthetic.h: the UCF50 layout, determinism by seed, resuming and replacing its own output,
// refusing foreign directories and bad specs; and the point of the dataset, measured on the
// decoded files: the two classes of a pair hold the same frames (their per-frame statistics
// agree), while the order of the frames carries the class (frame 0 and the last frame differ, and
// the motion is large and in the class's direction in the 20 frames a model samples at 64 x 64).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#include <string>
#include <vector>

#include "engine/error.h"
#include "io/dataset.h"
#include "io/synthetic.h"
#include "tests/test_support.h"

namespace hisvid::io {
namespace {

using hisvid::testing::directory_entries;
using hisvid::testing::error_of;
using hisvid::testing::file_bytes;

namespace fs = std::filesystem;

fs::path fresh_directory() { return hisvid::testing::fresh_directory("hisvid_synthetic_tests"); }

// Every frame of a video, decoded in order.
std::vector<cv::Mat> decode(const std::string& path) {
  cv::VideoCapture capture(path);
  std::vector<cv::Mat> frames;
  cv::Mat frame;
  while (capture.read(frame)) frames.push_back(frame.clone());
  return frames;
}

// The seeds' frames_extraction: skip = max(frame_count / 20, 1), frame i * skip for i < 20,
// resized to 64 x 64 with cv2.resize's default (bilinear) interpolation.
std::vector<cv::Mat> sampled_frames(const std::string& path) {
  cv::VideoCapture capture(path);
  const int count = static_cast<int>(capture.get(cv::CAP_PROP_FRAME_COUNT));
  const int skip = std::max(count / 20, 1);
  std::vector<cv::Mat> frames;
  for (int i = 0; i < 20; ++i) {
    capture.set(cv::CAP_PROP_POS_FRAMES, i * skip);
    cv::Mat frame, resized;
    if (!capture.read(frame)) break;
    cv::resize(frame, resized, cv::Size(64, 64), 0, 0, cv::INTER_LINEAR);
    frames.push_back(resized);
  }
  return frames;
}

// The object, found without knowing the scene: the pixels whose luminance is more than
// kForegroundLevels from the frame's median. The generator keeps every background pixel within
// a luminance band of width <= 0.24 (61 levels), which holds the median (the object covers well
// under half the frame), and the object >= 0.30 (77 levels) beyond the band on one side; 69
// levels is halfway, leaving 8 levels either way for camera noise and compression.
constexpr int kForegroundLevels = 69;
constexpr double kPi = 3.14159265358979323846;

struct Blob {
  double area = 0, x = 0, y = 0;  // pixels, centroid
};

cv::Mat1b foreground(const cv::Mat& frame) {
  cv::Mat1b gray;
  cv::cvtColor(frame, gray, cv::COLOR_BGR2GRAY);
  std::vector<uint8_t> values(gray.begin(), gray.end());
  std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
  const int median = values[values.size() / 2];
  cv::Mat1b mask(gray.size());
  for (int y = 0; y < gray.rows; ++y) {
    for (int x = 0; x < gray.cols; ++x) {
      mask(y, x) = std::abs(gray(y, x) - median) > kForegroundLevels ? 1 : 0;
    }
  }
  return mask;
}

Blob measure(const cv::Mat& frame) {
  const cv::Mat1b mask = foreground(frame);
  Blob blob;
  for (int y = 0; y < mask.rows; ++y) {
    for (int x = 0; x < mask.cols; ++x) {
      if (!mask(y, x)) continue;
      blob.area += 1;
      blob.x += x;
      blob.y += y;
    }
  }
  if (blob.area > 0) {
    blob.x /= blob.area;
    blob.y /= blob.area;
  }
  return blob;
}

SyntheticSpec small_spec(const fs::path& directory) {
  SyntheticSpec spec;
  spec.out_dir = directory.string();
  spec.clips_per_class = 2;
  spec.frames_per_clip = 20;
  spec.width = 48;
  spec.height = 40;
  return spec;
}

// A fresh output directory per test, removed afterwards.
class SyntheticTest : public ::testing::Test {
 protected:
  void SetUp() override { directory_ = fresh_directory(); }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(directory_, ignored);
  }
  fs::path directory_;
};

TEST(SyntheticClasses, ComeInTimeReversedPairs) {
  const std::vector<std::string> expected = {
      "MoveLeft", "MoveRight", "MoveUp",         "MoveDown",
      "Grow",     "Shrink",    "OrbitClockwise", "OrbitCounterclockwise"};
  EXPECT_EQ(synthetic_class_names(), expected);
}

TEST_F(SyntheticTest, WritesTheUcf50Layout) {
  SyntheticSpec spec;
  spec.out_dir = (directory_ / "nested" / "synthetic").string();  // parents are created
  spec.clips_per_class = 5;
  spec.frames_per_clip = 23;
  spec.width = 58;  // not square
  spec.height = 34;
  spec.fps = 30;
  std::vector<Progress> reports;
  const std::vector<std::string> files =
      make_synthetic_dataset(spec, [&](const Progress& progress) { reports.push_back(progress); });

  const std::vector<std::string>& classes = synthetic_class_names();
  ASSERT_EQ(files.size(), classes.size() * 5);
  ASSERT_EQ(reports.size(), files.size());
  for (size_t i = 0; i < reports.size(); ++i) {
    EXPECT_EQ(reports[i].done, i + 1);
    EXPECT_EQ(reports[i].total, files.size());
    EXPECT_EQ(reports[i].current, files[i]);
  }

  std::vector<std::string> top = classes;
  top.push_back(".hisvid-synthetic.json");
  std::sort(top.begin(), top.end());
  EXPECT_EQ(directory_entries(spec.out_dir), top);
  const std::vector<std::string> groups = {"g01_c01", "g01_c02", "g01_c03", "g01_c04", "g02_c01"};
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<std::string> names;
    for (const std::string& group : groups) names.push_back("v_" + classes[c] + "_" + group + ".avi");
    EXPECT_EQ(directory_entries(fs::path(spec.out_dir) / classes[c]), names);
    for (size_t k = 0; k < names.size(); ++k) {
      EXPECT_EQ(files[c * 5 + k], (fs::path(spec.out_dir) / classes[c] / names[k]).string());
    }
  }

  for (const std::string& file : files) {
    cv::VideoCapture capture(file);
    ASSERT_TRUE(capture.isOpened()) << file;
    EXPECT_EQ(capture.get(cv::CAP_PROP_FRAME_COUNT), 23) << file;
    EXPECT_NEAR(capture.get(cv::CAP_PROP_FPS), 30.0, 1e-6) << file;
    EXPECT_EQ(capture.get(cv::CAP_PROP_FOURCC), cv::VideoWriter::fourcc('M', 'J', 'P', 'G')) << file;
    capture.release();
    const std::vector<cv::Mat> frames = decode(file);
    ASSERT_EQ(frames.size(), 23u) << file;
    for (const cv::Mat& frame : frames) {
      EXPECT_EQ(frame.cols, 58);
      EXPECT_EQ(frame.rows, 34);
      EXPECT_EQ(frame.type(), CV_8UC3);
    }
  }
}

// synthetic_object_boxes says where the object is: between two frames of a clip (the
// background is static), every pixel that changed by more than kChanged levels lies in the union
// of the two frames' boxes grown by kBoxSlack pixels, and changed pixels exist in every pair.
// kChanged = 40: camera noise (sigma <= 2 levels, at most ~5 per frame) and MJPG error (a few
// levels, ~20 at worst on sharp edges) stay below it; the object differs from every background
// pixel by >= 0.30 * 255 = 77 levels. kBoxSlack = 2: anti-aliasing touches the pixel beyond an
// edge, and JPEG's 8x8 blocks smear an edge by a pixel or two.
TEST_F(SyntheticTest, ObjectBoxesHoldTheMovingObject) {
  constexpr int kChanged = 40;
  constexpr double kBoxSlack = 2.0;
  SyntheticSpec spec = small_spec(directory_ / "boxes");
  spec.frames_per_clip = 24;
  spec.width = 80;
  spec.height = 64;
  const std::vector<std::string> files = make_synthetic_dataset(spec);
  const std::vector<std::string>& classes = synthetic_class_names();
  for (size_t c = 0; c < classes.size(); ++c) {
    for (int clip = 0; clip < spec.clips_per_class; ++clip) {
      const std::string& file =
          files[c * static_cast<size_t>(spec.clips_per_class) + static_cast<size_t>(clip)];
      SCOPED_TRACE(file);
      const std::vector<ObjectBox> boxes = synthetic_object_boxes(spec, classes[c], clip);
      const std::vector<cv::Mat> frames = decode(file);
      ASSERT_EQ(boxes.size(), frames.size());
      for (const ObjectBox& box : boxes) {
        EXPECT_GE(box.x0, 0.0);
        EXPECT_GE(box.y0, 0.0);
        EXPECT_LE(box.x1, spec.width);
        EXPECT_LE(box.y1, spec.height);
      }
      for (size_t a = 0; a + 8 < frames.size(); a += 4) {
        const size_t b = a + 8;
        int changed = 0, stray = 0;
        for (int y = 0; y < spec.height; ++y) {
          for (int x = 0; x < spec.width; ++x) {
            const cv::Vec3b p = frames[a].at<cv::Vec3b>(y, x), q = frames[b].at<cv::Vec3b>(y, x);
            int most = 0;
            for (int k = 0; k < 3; ++k) most = std::max(most, std::abs(p[k] - q[k]));
            if (most <= kChanged) continue;
            ++changed;
            auto near = [&](const ObjectBox& box) {
              return x + 0.5 >= box.x0 - kBoxSlack && x + 0.5 < box.x1 + kBoxSlack &&
                     y + 0.5 >= box.y0 - kBoxSlack && y + 0.5 < box.y1 + kBoxSlack;
            };
            if (!near(boxes[a]) && !near(boxes[b])) ++stray;
          }
        }
        EXPECT_GT(changed, 0) << "frames " << a << " and " << b;
        EXPECT_EQ(stray, 0) << "frames " << a << " and " << b;
      }
    }
  }
  hisvid::testing::expect_error([&] { synthetic_object_boxes(spec, "Jump", 0); }, {"unknown class 'Jump'"});
  hisvid::testing::expect_error([&] { synthetic_object_boxes(spec, "Grow", 2); },
                                {"clip 2", "clips_per_class 2"});
}

TEST_F(SyntheticTest, DeterministicBySeed) {
  const std::vector<std::string> first = make_synthetic_dataset(small_spec(directory_ / "first"));
  const std::vector<std::string> again = make_synthetic_dataset(small_spec(directory_ / "again"));
  SyntheticSpec other_seed = small_spec(directory_ / "other");
  other_seed.seed = 2;
  const std::vector<std::string> other = make_synthetic_dataset(other_seed);
  // A class asked for alone gets the same clips as in the full set: a clip's random stream is
  // (seed, pair, clip), whatever else is generated.
  SyntheticSpec alone = small_spec(directory_ / "alone");
  alone.classes = {"Shrink"};
  const std::vector<std::string> shrink = make_synthetic_dataset(alone);

  ASSERT_EQ(first.size(), again.size());
  ASSERT_EQ(first.size(), other.size());
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(file_bytes(first[i]), file_bytes(again[i])) << first[i] << " vs " << again[i];
    const std::vector<cv::Mat> a = decode(first[i]), b = decode(other[i]);
    ASSERT_EQ(a.size(), b.size());
    double difference = 0;  // mean absolute pixel difference over the clip, in levels
    for (size_t t = 0; t < a.size(); ++t) difference += cv::norm(a[t], b[t], cv::NORM_L1) / a[t].total() / 3;
    EXPECT_GT(difference / a.size(), 5.0)
        << first[i] << " vs " << other[i] << ": another seed, another scene";
  }
  const size_t shrink_index = 5 * 2;  // class 5, first clip
  ASSERT_EQ(shrink.size(), 2u);
  EXPECT_EQ(file_bytes(shrink[0]), file_bytes(first[shrink_index]));
  EXPECT_EQ(file_bytes(shrink[1]), file_bytes(first[shrink_index + 1]));
}

TEST_F(SyntheticTest, SameSpecAgainKeepsItsClipsAndRestoresMissingOnes) {
  const SyntheticSpec spec = small_spec(directory_);
  const std::vector<std::string> files = make_synthetic_dataset(spec);
  std::map<std::string, std::string> bytes;
  std::map<std::string, fs::file_time_type> times;
  for (const std::string& file : files) {
    bytes[file] = file_bytes(file);
    times[file] = fs::last_write_time(file);
  }
  // An interrupted run: one clip missing, a partial one left behind.
  fs::remove(files[3]);
  const fs::path partial =
      fs::path(files[3]).parent_path() / (".partial-" + fs::path(files[3]).filename().string());
  std::ofstream(partial) << "half a clip";

  EXPECT_EQ(make_synthetic_dataset(spec), files);
  EXPECT_FALSE(fs::exists(partial));
  EXPECT_EQ(file_bytes(files[3]), bytes[files[3]]);
  for (const std::string& file : files) {
    if (file != files[3]) {
      EXPECT_EQ(fs::last_write_time(file), times[file]) << file << " was rewritten";
    }
  }
}

// Other settings replace a dataset only when asked (spec.replace, make-dataset --overwrite), and
// then only its own clips.
TEST_F(SyntheticTest, ChangedSpecReplacesOnlyItsOwnClips) {
  SyntheticSpec spec = small_spec(directory_);
  spec.clips_per_class = 3;
  make_synthetic_dataset(spec);
  std::ofstream(directory_ / "notes.txt") << "mine";

  spec.clips_per_class = 2;
  spec.classes = {"MoveRight", "MoveLeft"};
  // Not without being asked: the error names the differences, and every clip stays.
  const std::vector<std::string> before = directory_entries(directory_ / "Grow");
  const std::string message = error_of([&] { make_synthetic_dataset(spec); });
  EXPECT_NE(message.find("other settings (classes "), std::string::npos) << message;
  EXPECT_NE(message.find("clips_per_class 3 -> 2"), std::string::npos) << message;
  EXPECT_NE(message.find("--overwrite"), std::string::npos) << message;
  EXPECT_EQ(directory_entries(directory_ / "Grow"), before);
  ASSERT_EQ(before.size(), 3u);
  spec.replace = true;
  const std::vector<std::string> files = make_synthetic_dataset(spec);
  EXPECT_EQ(files.size(), 4u);
  EXPECT_EQ(directory_entries(directory_),
            (std::vector<std::string>{".hisvid-synthetic.json", "MoveLeft", "MoveRight", "notes.txt"}));
  EXPECT_EQ(directory_entries(directory_ / "MoveLeft"),
            (std::vector<std::string>{"v_MoveLeft_g01_c01.avi", "v_MoveLeft_g01_c02.avi"}));
  EXPECT_EQ(file_bytes(directory_ / "notes.txt"), "mine");

  const nlohmann::json marker = nlohmann::json::parse(file_bytes(directory_ / ".hisvid-synthetic.json"));
  EXPECT_EQ(marker["spec"]["clips_per_class"], 2);
  EXPECT_EQ(marker["spec"]["classes"], (nlohmann::json{"MoveLeft", "MoveRight"}));  // canonical order
  EXPECT_EQ(marker["clips"].size(), 4u);
}

TEST_F(SyntheticTest, RefusesADirectoryItDidNotWrite) {
  fs::create_directories(directory_);
  std::ofstream(directory_ / "holiday.avi") << "not ours";
  const std::string message = error_of([&] { make_synthetic_dataset(small_spec(directory_)); });
  EXPECT_NE(message.find(directory_.string()), std::string::npos) << message;
  EXPECT_NE(message.find("not empty"), std::string::npos) << message;
  EXPECT_EQ(directory_entries(directory_), std::vector<std::string>{"holiday.avi"});
  EXPECT_EQ(file_bytes(directory_ / "holiday.avi"), "not ours");

  // A marker that is not ours.
  std::ofstream(directory_ / ".hisvid-synthetic.json") << R"({"generator": "someone else"})";
  const std::string marker_message = error_of([&] { make_synthetic_dataset(small_spec(directory_)); });
  EXPECT_NE(marker_message.find(".hisvid-synthetic.json"), std::string::npos) << marker_message;

  // A file where the directory should be.
  const std::string file_message =
      error_of([&] { make_synthetic_dataset(small_spec(directory_ / "holiday.avi")); });
  EXPECT_NE(file_message.find("not a directory"), std::string::npos) << file_message;
}

// A second writer on the directory (here this process's own lock, as another make-dataset holds
// it) is turned away before it writes anything.
TEST_F(SyntheticTest, OneWriterAtATime) {
  fs::create_directories(directory_ / "busy");
  const int held = ::open((directory_ / "busy").c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(held, 0);
  ASSERT_EQ(::flock(held, LOCK_EX | LOCK_NB), 0);
  const std::string message = error_of([&] { make_synthetic_dataset(small_spec(directory_ / "busy")); });
  EXPECT_NE(message.find("another hisvid is writing"), std::string::npos) << message;
  EXPECT_TRUE(directory_entries(directory_ / "busy").empty());
  ::close(held);
  EXPECT_EQ(make_synthetic_dataset(small_spec(directory_ / "busy")).size(), 16u);
}

TEST_F(SyntheticTest, AcceptsAnEmptyDirectoryOrOneWithAnInterruptedMarker) {
  fs::create_directories(directory_ / "empty");
  EXPECT_EQ(make_synthetic_dataset(small_spec(directory_ / "empty")).size(), 16u);
  fs::create_directories(directory_ / "interrupted");
  std::ofstream(directory_ / "interrupted" / ".partial-.hisvid-synthetic.json") << "{\"gener";
  EXPECT_EQ(make_synthetic_dataset(small_spec(directory_ / "interrupted")).size(), 16u);
  EXPECT_FALSE(fs::exists(directory_ / "interrupted" / ".partial-.hisvid-synthetic.json"));
}

// synthetic_clip_set is what load_clips decodes from the files, less the MJPG round trip: the
// same classes, paths and labels in the same order (the classes here are listed out of name
// order, and 5 clips per class make a second group), and each clip's pixels within the codec's
// error of the decoded ones, in BGR and in gray; the wrong frames would be far outside it.
// Tolerances (measured 2026-11-27 on this test's 15 clips in brackets). MJPG at FFmpeg's default
// quality moves a value by 1-2 levels on average, after the bilinear resize to 64 x 64:
// kCodecMeanLevels = 3 per clip (at most 2.5 BGR, 1.1 gray). Values more than kChanged = 40
// levels apart (the object differs from every background pixel by >= 77): none in gray, a few
// in BGR, where the 2x2 chroma subsampling smears a saturated edge (at most 7 of 245,760 per
// clip): kCodecFarValues = 16. A frame off by one, generator frame f against file frame f + 1,
// has the object's moving edge apart by that much: kLeastMoved = 100 values per clip (at least
// 1,106 BGR, 257 gray).
TEST_F(SyntheticTest, ClipSetIsTheFilesClipsWithoutTheCodec) {
  constexpr double kCodecMeanLevels = 3.0;
  constexpr int kChanged = 40;
  constexpr size_t kCodecFarValues = 16, kLeastMoved = 100;
  SyntheticSpec spec;
  spec.out_dir = directory_.string();
  spec.clips_per_class = 5;
  spec.classes = {"Shrink", "MoveLeft", "Grow"};
  make_synthetic_dataset(spec);
  for (int channels : {3, 1}) {
    const ExtractionSettings extraction{20, 64, 64, channels};
    DatasetSpec data;
    data.root = spec.out_dir;
    data.cache_path = "none";
    data.extraction = extraction;
    const ClipSet decoded = load_clips(data);
    std::vector<Progress> reports;
    const ClipSet generated =
        synthetic_clip_set(spec, extraction, [&](const Progress& progress) { reports.push_back(progress); });
    ASSERT_EQ(generated.class_names, (std::vector<std::string>{"Grow", "MoveLeft", "Shrink"}));
    EXPECT_EQ(generated.class_names, decoded.class_names);
    EXPECT_EQ(generated.paths, decoded.paths);
    EXPECT_EQ(generated.labels, decoded.labels);
    ASSERT_EQ(generated.pixels.size(), decoded.pixels.size());
    ASSERT_EQ(reports.size(), generated.size());
    EXPECT_EQ(reports.back().done, generated.size());
    EXPECT_EQ(reports.back().current, generated.paths.back());

    const size_t clip_bytes = extraction.clip_bytes(), frame_bytes = extraction.frame_bytes();
    double worst = 0;
    size_t most_far = 0, least_far_shifted = clip_bytes;
    for (size_t i = 0; i < generated.size(); ++i) {
      const uint8_t* g = generated.clip(i);
      const uint8_t* d = decoded.clip(i);
      double same = 0;
      size_t far = 0, far_shifted = 0;
      for (size_t b = 0; b < clip_bytes; ++b) {
        same += std::abs(g[b] - d[b]);
        far += std::abs(g[b] - d[b]) > kChanged;
      }
      // Sampled frame f of the generator against sampled frame f + 1 of the file.
      for (size_t b = 0; b + frame_bytes < clip_bytes; ++b)
        far_shifted += std::abs(g[b] - d[b + frame_bytes]) > kChanged;
      same /= static_cast<double>(clip_bytes);
      worst = std::max(worst, same);
      most_far = std::max(most_far, far);
      least_far_shifted = std::min(least_far_shifted, far_shifted);
      EXPECT_LE(same, kCodecMeanLevels) << generated.paths[i] << " (" << channels << " channels)";
      EXPECT_LE(far, kCodecFarValues) << generated.paths[i] << " (" << channels << " channels)";
      EXPECT_GE(far_shifted, kLeastMoved) << generated.paths[i] << " (" << channels << " channels)";
    }
    std::printf(
        "[ measured ] %d channels: mean |generated - decoded| at most %.3f levels, at most %zu values "
        "apart by more than %d; shifted by a frame, at least %zu\n",
        channels, worst, most_far, kChanged, least_far_shifted);
  }
}

TEST_F(SyntheticTest, RejectsBadSpecs) {
  struct Case {
    std::string expected;  // part of the message
    std::function<void(SyntheticSpec&)> change;
  };
  const std::vector<Case> cases = {
      {"clips per class", [](SyntheticSpec& s) { s.clips_per_class = 0; }},
      {"clips per class", [](SyntheticSpec& s) { s.clips_per_class = -3; }},
      {"frames per clip", [](SyntheticSpec& s) { s.frames_per_clip = 19; }},
      {"GiB in memory",  // 20,000 frames of 4096 x 4096: far more than a clip may hold
       [](SyntheticSpec& s) {
         s.frames_per_clip = 20000;
         s.width = s.height = 4096;
       }},
      {"width and height", [](SyntheticSpec& s) { s.width = 8; }},
      {"width and height", [](SyntheticSpec& s) { s.height = 30; }},
      {"even", [](SyntheticSpec& s) { s.width = 97; }},
      {"width and height", [](SyntheticSpec& s) { s.width = 5000; }},
      {"fps", [](SyntheticSpec& s) { s.fps = 0; }},
      {"fps", [](SyntheticSpec& s) { s.fps = std::nan(""); }},
      {"unknown class 'Jump'",
       [](SyntheticSpec& s) {
         s.classes.assign({"MoveLeft", "Jump"});
       }},
      {"'Grow' is listed twice",
       [](SyntheticSpec& s) {
         s.classes.assign({"Grow", "Shrink", "Grow"});
       }},
      {"no output directory given", [](SyntheticSpec& s) { s.out_dir.clear(); }},
  };
  for (const Case& c : cases) {
    SyntheticSpec spec = small_spec(directory_);
    c.change(spec);
    const std::string message = error_of([&] { make_synthetic_dataset(spec); });
    EXPECT_NE(message.find(c.expected), std::string::npos)
        << "expected '" << c.expected << "' in: " << message;
    EXPECT_FALSE(fs::exists(directory_)) << "a rejected spec wrote " << directory_;
  }
}

// ---------------------------------------------------------------------------------------------
// The dataset's design, measured on one generated dataset: the default spec (96 x 96, 40 frames
// at 25 fps), 20 clips per class.

class SyntheticDataset : public ::testing::Test {
 protected:
  static constexpr int kClips = 20;
  static void SetUpTestSuite() {
    directory_ = new fs::path(fresh_directory());
    SyntheticSpec spec;
    spec.out_dir = directory_->string();
    spec.clips_per_class = kClips;
    files_ = new std::vector<std::string>(make_synthetic_dataset(spec));
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    fs::remove_all(*directory_, ignored);
    delete files_;
    delete directory_;
  }
  static const std::string& file(size_t class_index, int clip) {
    return (*files_)[class_index * kClips + clip];
  }

  static fs::path* directory_;
  static std::vector<std::string>* files_;
};
fs::path* SyntheticDataset::directory_ = nullptr;
std::vector<std::string>* SyntheticDataset::files_ = nullptr;

// Per-pixel means over a set of frames, in levels.
class MeanFrame {
 public:
  void add(const cv::Mat& frame) {
    if (sums_.empty()) sums_.assign(frame.total() * 3, 0.0);
    const uint8_t* pixels = frame.ptr<uint8_t>();
    for (size_t i = 0; i < sums_.size(); ++i) sums_[i] += pixels[i];
    ++count_;
  }
  void add_foreground(const cv::Mat& frame) {
    const cv::Mat1b mask = foreground(frame);
    if (sums_.empty()) sums_.assign(mask.total(), 0.0);
    const uint8_t* covered = mask.ptr<uint8_t>();
    for (size_t i = 0; i < sums_.size(); ++i) sums_[i] += covered[i];
    ++count_;
  }
  // Largest and mean absolute difference of the means.
  std::pair<double, double> distance(const MeanFrame& other) const {
    double largest = 0, total = 0;
    for (size_t i = 0; i < sums_.size(); ++i) {
      const double d = std::abs(sums_[i] / count_ - other.sums_[i] / other.count_);
      largest = std::max(largest, d);
      total += d;
    }
    return {largest, total / sums_.size()};
  }

 private:
  std::vector<double> sums_;
  int count_ = 0;
};

// Within a pair, the mean frame over all clips and frames agrees, and so does the mean of each
// frame position with the partner's mirrored position (frame 0 of A with the last frame of B),
// in raw pixels and in the object's foreground map (the probability that a pixel is covered).
// Within a class, the mean of frame 0 differs clearly from the mean of the last frame.
//
// Tolerances. The partner class is the forward clip played backwards, from the same Philox
// stream, and MJPG codes every frame on its own with a fixed quantiser, so the partner's frames
// decode to exactly the forward clip's frames and the means agree exactly. The slack is for an
// encoder whose quantiser would follow the neighbouring frames (rate control), which changes a
// frame by a few levels and flips a few threshold pixels without changing the frames'
// distribution: over the 800 frames of a class that is kPairLevels = 0.25 of a level and
// kPairCoverage = 0.005 (a pixel flipping in 4 of the 800 frames).
// The time structure must stand well above both and above what no motion at all would give:
// with a static scene, frame 0 and the last frame still differ by camera noise (sigma <= 2
// levels) and JPEG error (sigma ~2 levels), at most 0.8 * sqrt(2) * 2.8 / sqrt(20) = 0.7 levels
// of mean absolute difference over 20 clips (0.25 measured with the motion frozen, 2026-11);
// kTimeLevels = 2 is three times the bound (the raw signal, 3.7-6.6 levels measured, is modest
// because object colours are darker or brighter than the background at random and partly cancel
// in a mean). In the foreground map nothing cancels: kTimeCoverage = 0.02, four times
// kPairCoverage (0.07-0.11 measured; 0 with the motion frozen).
TEST_F(SyntheticDataset, PairsDifferOnlyInTheDirectionOfTime) {
  constexpr double kPairLevels = 0.25, kPairCoverage = 0.005, kTimeLevels = 2.0, kTimeCoverage = 0.02;
  const std::vector<std::string>& classes = synthetic_class_names();
  for (size_t a = 0; a < classes.size(); a += 2) {
    const size_t b = a + 1;
    MeanFrame all[2], first[2], last[2], first_objects[2], last_objects[2], all_objects[2];
    for (int side = 0; side < 2; ++side) {
      for (int clip = 0; clip < kClips; ++clip) {
        const std::vector<cv::Mat> frames = decode(file(a + side, clip));
        ASSERT_EQ(frames.size(), 40u);
        for (const cv::Mat& frame : frames) {
          all[side].add(frame);
          all_objects[side].add_foreground(frame);
        }
        first[side].add(frames.front());
        last[side].add(frames.back());
        first_objects[side].add_foreground(frames.front());
        last_objects[side].add_foreground(frames.back());
      }
    }
    const std::string pair = classes[a] + "/" + classes[b];
    const double pair_levels = std::max(
        {all[0].distance(all[1]).first, first[0].distance(last[1]).first, last[0].distance(first[1]).first});
    const double pair_coverage = std::max({all_objects[0].distance(all_objects[1]).first,
                                           first_objects[0].distance(last_objects[1]).first,
                                           last_objects[0].distance(first_objects[1]).first});
    EXPECT_LE(pair_levels, kPairLevels) << pair << ": the frames of the two classes differ";
    EXPECT_LE(pair_coverage, kPairCoverage) << pair << ": the objects of the two classes differ";
    for (int side = 0; side < 2; ++side) {
      const double time_levels = first[side].distance(last[side]).second;
      const double time_coverage = first_objects[side].distance(last_objects[side]).second;
      EXPECT_GE(time_levels, kTimeLevels) << classes[a + side] << ": frame 0 and the last frame look alike";
      EXPECT_GE(time_coverage, kTimeCoverage) << classes[a + side] << ": the object starts and ends alike";
      std::printf(
          "[ measured ] %-21s vs partner: max %.3f levels, %.4f coverage; frame 0 vs last: mean %.2f "
          "levels, %.3f coverage\n",
          classes[a + side].c_str(), pair_levels, pair_coverage, time_levels, time_coverage);
    }
  }
}

// In the 20 frames the seeds sample (skip = 2 here) at 64 x 64, the object is visible in every
// frame and moves in its class's direction by a clear amount. The design's lower bounds, at the
// last sampled frame (frame 38 of 39: at least 96% of the way, with the easing):
//   Move*: travel >= 0.35 * 0.96 * 64 = 21.6 px; required 18 px (centroids of a thresholded,
//     bilinearly resized object are good to a pixel or two), and at most 2 px across.
//   Grow/Shrink: radius from <= 0.09 S to >= 0.18 S at the ends, >= 0.174 S at frame 38: an area
//     ratio >= 3.7; required 3 (the threshold trims small objects' edges more, which only helps).
//   Orbit*: sweep >= 180 * 0.96 = 173 degrees about the orbit centre, which is within 0.04 S of
//     the frame centre used here while the orbit radius is >= 0.17 S: the angle seen from the frame
//     centre is off by at most asin(0.04 / 0.17) = 14 degrees at each end; required 140 degrees.
//   Visible: the smallest object, a star of radius 0.06 S = 3.8 px, covers 36 px; the threshold
//     and the resize trim its thin arms, so the requirement is a sixth of that, 6 px, in every
//     sampled frame.
TEST_F(SyntheticDataset, MotionIsClearInTheSampledFrames) {
  constexpr double kMinTravel = 18, kMaxDrift = 2, kMinAreaRatio = 3, kMinSweepDegrees = 140, kMinArea = 6;
  const std::vector<std::string>& classes = synthetic_class_names();
  for (size_t c = 0; c < classes.size(); ++c) {
    const std::string& name = classes[c];
    const bool horizontal = name == "MoveLeft" || name == "MoveRight",
               vertical = name == "MoveUp" || name == "MoveDown";
    const bool scale = name == "Grow" || name == "Shrink";
    const int sign =
        (name == "MoveLeft" || name == "MoveUp" || name == "Shrink" || name == "OrbitCounterclockwise") ? -1
                                                                                                        : 1;
    const double required = horizontal || vertical ? kMinTravel : scale ? kMinAreaRatio : kMinSweepDegrees;
    double least_motion = 1e9, least_area = 1e9, most_drift = 0;
    for (int clip = 0; clip < kClips; ++clip) {
      const std::string& path = file(c, clip);
      const std::vector<cv::Mat> frames = sampled_frames(path);
      ASSERT_EQ(frames.size(), 20u) << path;
      std::vector<Blob> blobs;
      double smallest = 1e9;
      for (const cv::Mat& frame : frames) {
        blobs.push_back(measure(frame));
        smallest = std::min(smallest, blobs.back().area);
      }
      least_area = std::min(least_area, smallest);
      EXPECT_GE(smallest, kMinArea) << path << ": the object vanishes in a sampled frame";
      if (smallest < kMinArea) continue;

      // The motion in the class's direction: pixels, area ratio or degrees clockwise (y down).
      const Blob& start = blobs.front();
      const Blob& end = blobs.back();
      double motion = 0;
      if (horizontal || vertical) {
        motion = sign * (horizontal ? end.x - start.x : end.y - start.y);
        const double drift = std::abs(horizontal ? end.y - start.y : end.x - start.x);
        most_drift = std::max(most_drift, drift);
        EXPECT_LE(drift, kMaxDrift) << path << ": the object drifts across its direction";
      } else if (scale) {
        motion = sign > 0 ? end.area / start.area : start.area / end.area;
      } else {
        for (size_t t = 1; t < blobs.size(); ++t) {
          const double before = std::atan2(blobs[t - 1].y - 31.5, blobs[t - 1].x - 31.5);
          const double after = std::atan2(blobs[t].y - 31.5, blobs[t].x - 31.5);
          motion += sign * std::remainder(after - before, 2 * kPi) * 180 / kPi;
        }
      }
      least_motion = std::min(least_motion, motion);
      EXPECT_GE(motion, required) << path << ": too little motion in the class's direction";
    }
    std::printf("[ measured ] %-21s least motion %.1f (required %.0f), smallest object %.0f px", name.c_str(),
                least_motion, required, least_area);
    if (horizontal || vertical) std::printf(", most drift %.1f px", most_drift);
    std::printf("\n");
  }
}

}  // namespace
}  // namespace hisvid::io
