// io/dataset.h — UCF50-style video datasets: ROOT/<Class>/<video>, decoded once into uint8
// clips (N,T,H,W,3), kept in an HDF5 clip cache, split, shuffled, augmented and batched.
//
// Nothing here prints: progress and the files that were skipped are reported to the caller
// (the CLI draws the progress bar and names the skipped files at the end).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/distributed.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "io/batch.h"
#include "io/video.h"

namespace hisvid::io {

struct DatasetSpec {
  std::string root;
  // Classes to use, by folder name; empty means every class folder, or num_classes of them.
  std::vector<std::string> classes;
  int num_classes = 0;  // > 0: that many classes chosen with `seed` from the sorted folder list
  uint64_t seed = 27;
  // The fewest classes accepted: 2 to train a classifier; 1 to score a model on one class's videos.
  int min_classes = 2;
  ExtractionSettings extraction;
  // The clip cache file; empty means the default, ~/.cache/hisvid/<hash of root and settings>.h5
  // ($XDG_CACHE_HOME honoured). "none" disables the cache.
  std::string cache_path;
  int workers = 0;  // decoding threads; 0 = hardware concurrency
  // Leave the clips in the cache file and read each batch's clips when it is needed (training
  // and evaluation then hold a few batches, whatever the dataset's size); a cache that must be
  // built is decoded and written block by block (kStreamBlockBytes at a time). Needs a cache.
  bool stream = false;
  // The ranks of a data-parallel run (engine/distributed.h), all loading the same dataset: when
  // the cache must be built, each rank decodes its contiguous share of the files into a part
  // file beside it and rank 0 joins the parts into the cache, which every rank then reads (on a
  // filesystem they all share). Null or one rank: this process decodes everything.
  Communicator* communicator = nullptr;
};

// The most clip bytes a streamed load decodes before writing them to the cache.
constexpr size_t kStreamBlockBytes = size_t(32) << 20;

struct SkippedFile {
  std::string path;
  std::string reason;
};

struct Progress {
  size_t done = 0, total = 0;
  std::string current;  // file just finished
};
// Called from the thread that called load_clips, while videos are decoded (not on a cache hit);
// an exception thrown from it stops the workers and propagates.
using ProgressFn = std::function<void(const Progress&)>;

// The open cache file a streamed ClipSet reads its clips from (io/dataset.cpp).
struct ClipStream;

class ClipSet {
 public:
  std::vector<std::string> class_names;  // label i is class_names[i]
  std::vector<std::string> paths;        // one per clip
  std::vector<int> labels;               // one per clip
  ExtractionSettings extraction;
  std::vector<uint8_t> pixels;       // (N,T,H,W,C) BGR or gray; empty when streamed
  std::vector<SkippedFile> skipped;  // files that gave no clip, with the reason
  bool from_cache = false;
  std::string cache_file;  // the cache used ("" when disabled)
  std::string cache_note;  // why the cache was (re)built, if it was
  // What the caller should tell the user about the dataset's layout: subfolders of a class
  // folder that hold videos, which are not read (a class's videos lie directly in its folder).
  std::vector<std::string> notes;

  std::shared_ptr<ClipStream> stream;  // set when the clips stay in cache_file

  size_t size() const { return labels.size(); }
  size_t clip_elements() const;  // T*H*W*C
  bool streamed() const { return stream != nullptr; }
  // In memory only.
  const uint8_t* clip(size_t i) const { return pixels.data() + i * clip_elements(); }
  // Copies the clips `indices`, one after the other, into out (indices.size() * clip_elements()
  // bytes): from memory, or read from the cache file when streamed (any thread; reads are
  // serialised).
  void read_clips(const std::vector<size_t>& indices, uint8_t* out) const;
};

// The clips of each batch of `batches`, in order. For a streamed set a background thread reads
// ahead, holding at most `depth` batches besides the one returned; in memory, next() copies.
class BatchReader {
 public:
  BatchReader(const ClipSet& clips, std::vector<std::vector<size_t>> batches, size_t depth = 2);
  ~BatchReader();
  BatchReader(const BatchReader&) = delete;
  BatchReader& operator=(const BatchReader&) = delete;
  // The pixels of the next batch (B * clip_elements() bytes); rethrows a read error.
  std::vector<uint8_t> next();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The classes load_clips would take from spec (sorted folder names, or those named, or
// num_classes of them), found without decoding anything; the same errors about the root and the
// class selection.
std::vector<std::string> dataset_classes(const DatasetSpec& spec);

// What a run's split depends on, as 16 hex digits: the clips in order, each named by its class
// folder and file (so that a moved dataset keeps it), with their classes.
std::string clips_fingerprint(const ClipSet& clips);
// The same fingerprint from the video files load_clips would take from spec, found without
// opening any, leaving out `skipped` ("<class>/<file>" names: the files that gave no clip when
// the run was loaded): equal to clips_fingerprint of the clips a load would give, unless a file
// was added, removed or renamed since (an added file that gives no clip included), so a run can
// tell before any decoding. `files`, when given, receives the count of files it took. The same
// errors as dataset_classes and a class without video files.
std::string listing_fingerprint(const DatasetSpec& spec, const std::set<std::string>& skipped,
                                size_t* files = nullptr);
// A skipped file's "<class>/<file>" name, as listing_fingerprint's `skipped` takes it.
std::string class_and_file(const std::string& path);

// Scans the root, decodes every video (workers in parallel) or reads the cache, and returns the
// clips. Errors (each naming the path): missing or empty root, an unknown class name, fewer than
// min_classes classes, a class with no usable video. Unusable individual files are skipped and listed.
ClipSet load_clips(const DatasetSpec& spec, const ProgressFn& progress = nullptr);

struct Split {
  std::vector<size_t> train, validation, test;  // clip indices
};

// Shuffles all clips with `seed` and holds out test_fraction of them (the tutorial:
// train_test_split(test_size=0.25, shuffle=True, random_state=27)); the validation part is the
// LAST validation_fraction of the training part, as Keras's validation_split takes it, or a
// random part of it when shuffle_validation. The counts round as Python computes them
// (SplitRounding::Python); runs recorded before 2026-11-27 forgave a product a hair below a whole
// number (SplitRounding::Forgiving: 90 * (1 - 0.3) made 63, not 62), and keep their split.
enum class SplitRounding { Python, Forgiving };
Split split_clips(size_t count, double test_fraction, double validation_fraction, uint64_t seed,
                  bool shuffle_validation = false, SplitRounding rounding = SplitRounding::Python);

struct Batch {
  Tensor x;  // (B,T,H,W,3) float32, pixels / 255 (augmented, clipped to [0,1])
  Tensor y;  // (B,K) one-hot float32
};

// The batch of the given clips on `device`; augmentation draws come from rng.
Batch make_batch(const ClipSet& clips, const std::vector<size_t>& indices, const Augmentation& augmentation,
                 Generator* rng, Device device);
// The same from the clips' pixels already read (what BatchReader::next() returns).
Batch make_batch(const ClipSet& clips, const std::vector<size_t>& indices, const std::vector<uint8_t>& pixels,
                 const Augmentation& augmentation, Generator* rng, Device device);

// Each epoch's batches: `indices` shuffled with rng (when shuffle), cut into batch_size pieces
// (the last one smaller, as Keras does).
std::vector<std::vector<size_t>> epoch_batches(const std::vector<size_t>& indices, size_t batch_size,
                                               bool shuffle, Generator& rng);

}  // namespace hisvid::io
