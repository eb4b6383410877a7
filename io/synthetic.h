// io/synthetic.h — hisvid's built-in dataset: synthetic action videos in the UCF50 layout
// (OUT/<Class>/<clip>.avi), deterministic by seed.
//
// Classes come in pairs that differ only in the direction of time (moving left / moving right,
// up / down, growing / shrinking, ...), drawn over varied backgrounds with varied colours, sizes,
// speeds and start positions: any single frame of one class is as likely under its partner, so
// classifying frames one by one cannot beat chance within a pair, and what is measured is the
// temporal model.
//
// The generator (io/synthetic.cpp) needs OpenCV's core and imgproc only; the files
// (make_synthetic_dataset, io/synthetic_files.cpp) need its video I/O as well. A program that
// trains on the dataset without any video library takes its clips from synthetic_clip_set.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "io/dataset.h"

namespace hisvid::io {

// The limits of a SyntheticSpec.
constexpr int kMinFrames = 20;  // the SEQUENCE_LENGTH a model samples
constexpr int kMinSide = 32, kMaxSide = 4096;
constexpr int kMaxClipsPerClass = 100000;
constexpr int kMaxFrames = 100000;
// A clip's frames are drawn in memory before they are encoded: 4 GiB is 4,096 frames at 640x480.
constexpr size_t kMaxClipBytes = size_t(4) << 30;

struct SyntheticSpec {
  std::string out_dir;
  int clips_per_class = 40;
  int frames_per_clip = 40;  // >= the 20 frames a model samples
  int width = 96, height = 96;
  double fps = 25.0;
  uint64_t seed = 1;
  // Class names to generate (each must be one of synthetic_class_names()); empty = all.
  std::vector<std::string> classes;
  // A dataset already in out_dir made with other settings (or an older generator format) is
  // replaced, its clips deleted, only when true; else that is an error naming the differences.
  bool replace = false;
};

// The generator's format: bumped whenever a change to the generator changes the pixels of a clip,
// so that a dataset written by an older format is regenerated instead of being resumed with
// mixed clips.
constexpr int kSyntheticFormat = 1;

// Every class the generator knows, partners adjacent: {"MoveLeft", "MoveRight", ...}.
const std::vector<std::string>& synthetic_class_names();

// The classes `spec` asks for, in synthetic_class_names()'s order, after checking the spec: an
// unknown or repeated class, and sizes, frame counts or fps out of range, are errors naming the
// field. (out_dir is not looked at.)
std::vector<std::string> synthetic_classes(const SyntheticSpec& spec);

// The file name of clip `clip` (0-based) of `class_name`: v_<Class>_g<GG>_c<CC>.avi, four clips
// per group as in UCF50.
std::string synthetic_clip_name(const std::string& class_name, int clip);

// The frames of clip `clip` of class `class_name`, as make_synthetic_dataset encodes them into its
// file: (frames_per_clip, height, width, 3) BGR uint8, in file order. No file is read or written.
std::vector<uint8_t> synthetic_clip_frames(const SyntheticSpec& spec, const std::string& class_name,
                                           int clip);

// The dataset `spec` describes as load_clips gives it from the files (class folders and files in
// name order, label i = class_names[i], paths out_dir/<Class>/<file>, or <Class>/<file> when
// out_dir is empty), straight from the generator: each clip's frames sampled as frames_extraction
// samples the file (skip = max(frames_per_clip / T, 1)) and resized by the same code (io/frames.h).
// The one difference from the files' clips is the MJPG encoding and decoding they go through:
// a few levels per pixel (tests/test_synthetic.cpp measures it). Nothing is read or written;
// progress is called after each clip.
ClipSet synthetic_clip_set(const SyntheticSpec& spec, const ExtractionSettings& extraction,
                           const ProgressFn& progress = nullptr);

// Where the moving object is in each frame of clip `clip` (0-based, as in the file names'
// order) of class `class_name` of the dataset `spec` describes: the axis-aligned bounding box of
// its outline in pixels of the written frames, [x0, x1) x [y0, y1), frame by frame in file order
// (frames_per_clip boxes). The generator's own geometry, so a test can ask where a model should
// look; no file is read or written.
struct ObjectBox {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};
std::vector<ObjectBox> synthetic_object_boxes(const SyntheticSpec& spec, const std::string& class_name,
                                              int clip);

// Writes the dataset; returns the files written. An existing non-empty out_dir that was not
// written by make_synthetic_dataset is an error (nothing is overwritten by surprise).
std::vector<std::string> make_synthetic_dataset(const SyntheticSpec& spec,
                                                const ProgressFn& progress = nullptr);

// Where `root` holds the built-in dataset's record (.hisvid-synthetic.json) and clips it lists are
// missing (a make-dataset or demo ended before its last clip): a sentence saying how many and
// how to finish; "" otherwise (no record, a record hisvid cannot read, every clip there). Only
// the clips of `classes` count, where given (a run on some of the classes).
std::string synthetic_dataset_missing(const std::string& root, const std::vector<std::string>& classes = {});

}  // namespace hisvid::io
