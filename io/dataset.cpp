// io/dataset.cpp — scanning a UCF50-style folder, decoding it in parallel, and the HDF5 clip
// cache: load_clips. What is done with the loaded clips (reading, splits, batches) is in
// io/clips.cpp.
//
// Dimension letters: N clips, B batch, T frames, H height, W width, C channels (3 BGR or 1 gray),
// K classes.
//
// Decoding: `workers` threads take files by index and write each clip into its own slot of one
// (files,T,H,W,C) buffer, so the result does not depend on thread timing; the slots of skipped
// files are squeezed out afterwards. Progress is reported from the calling thread (workers queue
// what they finished; the caller drains the queue), only while decoding: a load from the cache
// reports none.
//
// Clip cache (HDF5): dataset "clips" uint8 (N,T,H,W,C), one clip per gzip chunk; "labels" int64
// (N,); root attributes format, key, class_names, paths and skipped ("path\treason", both
// relative to the dataset root), sequence_length, height, width, channels, opencv_version. The key is
// FNV-1a 64 of a canonical text: cache format, OpenCV version, absolute root, selected classes in
// label order, every file's relative path, size, mtime and whether it can be read, and the extraction
// settings. A cache whose key differs, or that cannot be read, is rebuilt (cache_note says why); it is
// written to a temporary file renamed into place, so a crash never leaves a half-written cache under the real
// name. The file's HDF5 user block starts with "hisvid clip cache": a file at the cache's path without that
// marker (a model, a text file) is never replaced, unless it is in hisvid's own cache folder under a name
// hisvid gave it.
//
// Randomness: the choice of num_classes classes is a shuffle of io/shuffle.h.
#include "io/dataset.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <opencv2/core/version.hpp>
#include <optional>
#include <set>
#include <thread>

#include "engine/dispatch.h"
#include "engine/error.h"
#include "engine/hash.h"
#include "io/atomic_file.h"
#include "io/clip_stream.h"
#include "io/hdf5.h"
#include "io/isolated.h"
#include "io/shuffle.h"

namespace hisvid::io {

namespace {

namespace fs = std::filesystem;

// Bumped whenever what the cache stores, or how a clip is extracted, changes.
constexpr int64_t kCacheFormat = 3;
// A cache file starts with this marker in its HDF5 user block, so that hisvid recognises its
// own caches (even truncated or damaged ones) and never replaces a file it did not write.
constexpr char kCacheMarker[] = "hisvid clip cache\n";
constexpr int64_t kCacheUserBlock = 512;
// Deflate level of the clip chunks. Measured on 34 clips (20x64x64x3) of opencv-doc's vtest,
// Megamind and tree videos, on this project's 2-core build machine: level 1 stores 63 % of the
// raw bytes, writes 6.3 ms and reads 2.2 ms per clip; level 4: 60 %, 8.4 ms, 1.8 ms; level 9:
// 60 %, 11 ms, 1.7 ms; uncompressed reads 0.24 ms. Level 4: writing is negligible next to
// decoding a video (50-800 ms), and it reads back faster than level 1.
constexpr int kCacheGzipLevel = 4;
// How many skipped files a "class has no usable video" error names before "and N more".
constexpr size_t kReasonsInError = 3;

struct Candidate {
  std::string path;      // as given (root joined with class and file name)
  std::string relative;  // Class/file, for the cache key
  int label = 0;
};

bool hidden(const fs::path& path) {
  const std::string name = path.filename().string();
  return name.empty() || name[0] == '.';
}

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string text;
  for (size_t i = 0; i < items.size(); ++i) text += (i ? separator : "") + items[i];
  return text;
}

// Sorted names of the entries of `directory` for which `keep` holds (hidden ones never).
template <typename Keep>
std::vector<std::string> sorted_entries(const fs::path& directory, Keep keep) {
  std::vector<std::string> names;
  std::error_code error;
  fs::directory_iterator it(directory, error);
  if (error) fail("{}: cannot list the directory: {}", directory.string(), error.message());
  for (; it != fs::directory_iterator(); it.increment(error)) {
    if (error) fail("{}: cannot list the directory: {}", directory.string(), error.message());
    if (!hidden(it->path()) && keep(*it)) names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

uint64_t fnv1a64(const std::string& text) { return hisvid::fnv1a64(text.data(), text.size()); }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::vector<std::string> dims;
  for (const int64_t d : shape) dims.push_back(std::to_string(d));
  return "(" + join(dims, ", ") + (shape.size() == 1 ? ",)" : ")");
}

std::string hex64(uint64_t value) { return fmt::format("{:016x}", value); }

// ---------------------------------------------------------------------------------------------
// Scanning and class selection

std::vector<std::string> select_classes(const DatasetSpec& spec, const std::vector<std::string>& available) {
  const std::string& root = spec.root;
  if (spec.num_classes < 0) fail("{}: num_classes must be >= 0, got {}", root, spec.num_classes);
  std::vector<std::string> selected;
  if (!spec.classes.empty()) {
    if (spec.num_classes > 0 && static_cast<size_t>(spec.num_classes) != spec.classes.size()) {
      fail("{}: {} classes asked for, but {} named ({})", root, spec.num_classes, spec.classes.size(),
           join(spec.classes, ", "));
    }
    std::set<std::string> seen;
    for (const std::string& name : spec.classes) {
      if (std::find(available.begin(), available.end(), name) == available.end()) {
        fail("{}: unknown class '{}'; the class folders are: {}", root, name, join(available, ", "));
      }
      if (!seen.insert(name).second) fail("{}: class '{}' is named twice", root, name);
      selected.push_back(name);
    }
  } else if (spec.num_classes > 0) {
    if (static_cast<size_t>(spec.num_classes) > available.size()) {
      fail("{}: {} classes asked for, but there are only {} class folders ({})", root, spec.num_classes,
           available.size(), join(available, ", "));
    }
    std::vector<std::string> shuffled = available;
    Generator generator(spec.seed);
    shuffle_with(shuffled, generator.next());
    selected.assign(shuffled.begin(), shuffled.begin() + spec.num_classes);
    std::sort(selected.begin(), selected.end());
  } else {
    selected = available;
  }
  if (selected.size() < static_cast<size_t>(std::max(spec.min_classes, 1))) {
    fail("{}: {} class selected ({}); at least {} are needed to classify", root, selected.size(),
         join(selected, ", "), spec.min_classes);
  }
  return selected;
}

// Whether `folder` itself holds a video file (one level: a class's subfolders of extracted frames
// are not walked on every load).
bool holds_videos(const fs::path& folder) {
  std::error_code error;
  for (fs::directory_iterator it(folder, error); !error && it != fs::directory_iterator();
       it.increment(error)) {
    if (!hidden(it->path()) && is_video_entry(*it)) return true;
  }
  return false;
}

std::vector<std::string> subfolders_of(const fs::path& folder) {
  return sorted_entries(folder, [](const fs::directory_entry& entry) {
    std::error_code error;
    return entry.is_directory(error);
  });
}

// The videos of every class, and in `notes` each class's subfolders that hold videos too (not
// read: silently they would leave part of a class out).
std::vector<Candidate> list_videos(const std::string& root, const std::vector<std::string>& classes,
                                   std::vector<std::string>* notes = nullptr) {
  std::vector<Candidate> candidates;
  for (size_t label = 0; label < classes.size(); ++label) {
    const fs::path folder = fs::path(root) / classes[label];
    const std::vector<std::string> files = sorted_entries(folder, is_video_entry);
    if (!files.empty() && notes != nullptr) {
      for (const std::string& sub : subfolders_of(folder)) {
        if (holds_videos(folder / sub)) {
          notes->push_back(
              fmt::format("{}: a subfolder of class '{}' with videos, which are not read (a class's videos "
                          "lie directly in "
                          "its folder: <root>/<Class>/<video>)",
                          (folder / sub).string(), classes[label]));
        }
      }
    }
    if (files.empty()) {
      const std::vector<std::string> subfolders = subfolders_of(folder);
      fail("{}: class '{}' has no video files (looked for {}){}", folder.string(), classes[label],
           join(video_extensions(), " "),
           subfolders.empty()
               ? ""
               : fmt::format("; its subfolders ({}) are not read: a class's videos lie directly "
                             "in its folder (<root>/<Class>/<video>)",
                             join(subfolders, ", ")));
    }
    for (const std::string& file : files) {
      candidates.push_back({(folder / file).string(), classes[label] + "/" + file, static_cast<int>(label)});
    }
  }
  return candidates;
}

// One clip's part of a split's fingerprint: "<class folder>/<file>\n<class>\n".
uint64_t fingerprint_step(uint64_t hash, const std::string& relative, const std::string& class_name) {
  const std::string entry = relative + '\n' + class_name + '\n';
  return hisvid::fnv1a64(entry.data(), entry.size(), hash);
}

// ---------------------------------------------------------------------------------------------
// Cache key and location

std::string settings_text(const ExtractionSettings& s) {
  // Keys of 3-channel caches stay those written before gray frames existed.
  return s.channels == 3
             ? fmt::format("T={} H={} W={}", s.sequence_length, s.height, s.width)
             : fmt::format("T={} H={} W={} C={}", s.sequence_length, s.height, s.width, s.channels);
}

std::string cache_key(const std::string& absolute_root, const std::vector<std::string>& classes,
                      const std::vector<Candidate>& candidates, const ExtractionSettings& settings) {
  std::string text =
      fmt::format("hisvid clip cache {}\nopencv {}\nroot {}\nclasses {}\nsettings {}\n", kCacheFormat,
                  CV_VERSION, absolute_root, join(classes, "\t"), settings_text(settings));
  for (const Candidate& candidate : candidates) {
    std::error_code error;
    const auto size = fs::file_size(candidate.path, error);
    const auto mtime = fs::last_write_time(candidate.path, error).time_since_epoch().count();
    // Whether this process may read it: a file skipped as unreadable and then made readable
    // (chmod changes neither size nor mtime) is decoded on the next load, not skipped again.
    const bool readable = ::access(candidate.path.c_str(), R_OK) == 0;
    text += fmt::format("{}\t{}\t{}{}\n", candidate.relative, error ? -1 : static_cast<int64_t>(size),
                        error ? 0 : static_cast<int64_t>(mtime), readable ? "" : "\tunreadable");
  }
  return hex64(fnv1a64(text));
}

// The default cache file, or "" with a note when no cache directory is known.
std::string default_cache_path(const std::string& absolute_root, const std::vector<std::string>& classes,
                               const ExtractionSettings& settings, std::string& note) {
  fs::path base;
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  if (xdg && *xdg && fs::path(xdg).is_absolute()) {
    base = fs::path(xdg);
  } else if (home && *home) {
    base = fs::path(home) / ".cache";
  } else {
    note = "no clip cache: neither XDG_CACHE_HOME nor HOME is set";
    return "";
  }
  const std::string identity = fmt::format("{}\n{}\n{}\n{}", kCacheFormat, absolute_root, join(classes, "\t"),
                                           settings_text(settings));
  return (base / "hisvid" / ("clips-" + hex64(fnv1a64(identity)) + ".h5")).string();
}

// ---------------------------------------------------------------------------------------------
// Reading and writing the cache

bool has_cache_marker(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[sizeof kCacheMarker - 1] = {};
  in.read(head, sizeof head);
  return in.gcount() == static_cast<std::streamsize>(sizeof head) &&
         std::memcmp(head, kCacheMarker, sizeof head) == 0;
}

// A cache of hisvid before the marker (format 1): an HDF5 file whose root holds the cache's
// format and key attributes. Read in a child process: the file may be anything.
bool older_hisvid_cache(const std::string& path) {
  bool found = false;
  try {
    probe_in_child(path, [&] { (void)h5::File::open(path).root().read_int64_attribute("format"); });
    const h5::Group root = h5::File::open(path).root();
    found = root.has_attribute("format") && root.has_attribute("key") && root.has_attribute("class_names");
  } catch (const std::exception&) {
    return false;
  }
  return found;
}

// The cache may replace what is at its path only when that is a hisvid cache (its marker says
// so, however damaged the rest, or it is an older hisvid cache), or a file in hisvid's own
// cache folder, named by hisvid.
void require_replaceable_cache(const std::string& path, bool default_location) {
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (!fs::exists(status)) return;
  if (fs::is_directory(status)) fail("--cache {}: is a directory, not a cache file", path);
  if (!fs::is_regular_file(status)) fail("--cache {}: is not a regular file", path);
  if (!default_location && !has_cache_marker(path) && !older_hisvid_cache(path)) {
    fail(
        "--cache {}: the file exists and is not a hisvid clip cache; hisvid does not replace it (choose "
        "another cache file, or remove this one)",
        path);
  }
}

enum class CacheRead { Loaded, Missing, OtherKey };

// Reads the cache into `out`; with pixels false, everything but the clips themselves (the
// check run in a child process, io/isolated.h).
CacheRead read_cache(const std::string& file, const std::string& key, const std::string& root,
                     const std::vector<std::string>& classes, const ExtractionSettings& settings,
                     ClipSet& out, bool pixels = true) {
  std::error_code error;
  if (!fs::exists(file, error)) return CacheRead::Missing;
  const h5::File h5file = h5::File::open(file);
  const h5::Group group = h5file.root();
  if (!group.has_attribute("format") || !group.has_attribute("key")) fail("no format or key attribute");
  if (group.read_int64_attribute("format") != kCacheFormat || group.read_string_attribute("key") != key) {
    return CacheRead::OtherKey;
  }
  if (group.read_string_list_attribute("class_names") != classes) {
    fail("its class names do not match its key");
  }
  const h5::Dataset clips = group.open_dataset("clips");
  const h5::Dataset labels = group.open_dataset("labels");
  if (!clips.has_element_type() || clips.element_type() != h5::ElementType::UInt8) {
    fail("/clips is {}, not uint8", clips.type_name());
  }
  const std::vector<int64_t> shape = clips.shape();
  const std::vector<int64_t> expected_tail = {settings.sequence_length, settings.height, settings.width,
                                              settings.channels};
  if (shape.size() != 5 || !std::equal(expected_tail.begin(), expected_tail.end(), shape.begin() + 1)) {
    fail("/clips has shape {} instead of (N, {}, {}, {}, {})", shape_text(shape), settings.sequence_length,
         settings.height, settings.width, settings.channels);
  }
  const int64_t n = shape[0];
  if (labels.shape() != std::vector<int64_t>{n}) {
    fail("/labels has shape {}, not ({},)", shape_text(labels.shape()), n);
  }
  std::vector<std::string> paths = group.read_string_list_attribute("paths");
  if (static_cast<int64_t>(paths.size()) != n) fail("{} paths for {} clips", paths.size(), n);
  for (std::string& path : paths) path = (fs::path(root) / path).string();
  const std::vector<int64_t> stored_labels = labels.read<int64_t>();
  for (const int64_t label : stored_labels) {
    if (label < 0 || label >= static_cast<int64_t>(classes.size())) fail("label {} is out of range", label);
  }
  std::vector<SkippedFile> skipped;
  for (const std::string& entry : group.read_string_list_attribute("skipped")) {
    const size_t tab = entry.find('\t');
    if (tab == std::string::npos) fail("a skipped entry has no tab: '{}'", entry);
    skipped.push_back({(fs::path(root) / entry.substr(0, tab)).string(), entry.substr(tab + 1)});
  }
  out.paths = std::move(paths);
  out.labels.assign(stored_labels.begin(), stored_labels.end());
  out.pixels = pixels ? clips.read<uint8_t>() : std::vector<uint8_t>{};
  out.skipped = std::move(skipped);
  return CacheRead::Loaded;
}

// A cache file being written: the clips appended block by block (a streamed load never holds
// more than a block), everything else by finish(). Paths are stored relative to the dataset
// root, so a cache found again through the same absolute root from another working directory
// names the files as the caller does.
class CacheWriter {
 public:
  CacheWriter(const std::string& path, const ExtractionSettings& s)
      : path_(path), file_(h5::File::create(path, kCacheUserBlock)) {
    h5::DatasetOptions options;
    options.chunk = {1, s.sequence_length, s.height, s.width, s.channels};
    options.gzip_level = kCacheGzipLevel;
    clips_.emplace(file_.root().create_dataset(
        "clips", h5::ElementType::UInt8, {0, s.sequence_length, s.height, s.width, s.channels}, options));
  }
  // count clips of (T,H,W,C) after those already written.
  void append(const uint8_t* pixels, size_t count) {
    if (count == 0) return;
    clips_->resize_rows(rows_ + static_cast<int64_t>(count));
    clips_->write_rows(rows_, static_cast<int64_t>(count), pixels);
    rows_ += static_cast<int64_t>(count);
  }
  // Labels and attributes of `clips` (whose clips were appended, in order), then the marker.
  void finish(const std::string& key, const std::string& dataset_root, const ClipSet& clips) {
    if (rows_ != static_cast<int64_t>(clips.size())) {
      fail("{}: {} clips written for {} listed", path_, rows_, clips.size());
    }
    const auto relative = [&dataset_root](const std::string& file) {
      return fs::path(file).lexically_relative(dataset_root).string();
    };
    {
      h5::Group root = file_.root();
      const ExtractionSettings& s = clips.extraction;
      const std::vector<int64_t> labels(clips.labels.begin(), clips.labels.end());
      root.write_array<int64_t>("labels", labels.data(), {static_cast<int64_t>(labels.size())});
      std::vector<std::string> skipped;
      for (const SkippedFile& file_skipped : clips.skipped) {
        skipped.push_back(relative(file_skipped.path) + "\t" + file_skipped.reason);
      }
      std::vector<std::string> paths;
      for (const std::string& clip_path : clips.paths) paths.push_back(relative(clip_path));
      root.write_int64_attribute("format", kCacheFormat);
      root.write_string_attribute("key", key);
      root.write_string_list_attribute("class_names", clips.class_names);
      root.write_string_list_attribute("paths", paths);
      root.write_string_list_attribute("skipped", skipped);
      root.write_int64_attribute("sequence_length", s.sequence_length);
      root.write_int64_attribute("height", s.height);
      root.write_int64_attribute("width", s.width);
      root.write_int64_attribute("channels", s.channels);
      root.write_string_attribute("opencv_version", CV_VERSION);
    }
    clips_.reset();
    file_.close();
    std::fstream marker(path_, std::ios::in | std::ios::out | std::ios::binary);
    marker.write(kCacheMarker, sizeof kCacheMarker - 1);
    marker.flush();
    if (!marker) fail("{}: cannot write the cache marker", path_);
  }

 private:
  std::string path_;
  h5::File file_;
  std::optional<h5::Dataset> clips_;
  int64_t rows_ = 0;
};

void write_cache_file(const std::string& path, const std::string& key, const std::string& dataset_root,
                      const ClipSet& clips) {
  CacheWriter writer(path, clips.extraction);
  writer.append(clips.pixels.data(), clips.size());
  writer.finish(key, dataset_root, clips);
}

// Writes the cache atomically; returns "" or why it could not be written.
std::string write_cache(const std::string& path, const std::string& key, const std::string& dataset_root,
                        const ClipSet& clips) {
  try {
    const fs::path parent = fs::path(path).parent_path();
    std::error_code error;
    if (!parent.empty() && !fs::create_directories(parent, error) && error) {
      fail("cannot create the directory {}: {}", parent.string(), error.message());
    }
    write_atomically(path,
                     [&](const std::string& temp) { write_cache_file(temp, key, dataset_root, clips); });
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// Parallel decoding

struct Decoded {
  std::vector<uint8_t> pixels;       // (files,T,H,W,C), the slots of skipped files unused
  std::vector<std::string> reasons;  // per file: "" when decoded
};

// Joins the workers whatever happens (a progress callback that throws included).
class WorkerThreads {
 public:
  explicit WorkerThreads(std::atomic<bool>& stop) : stop_(stop) {}
  ~WorkerThreads() {
    stop_ = true;
    for (std::thread& thread : threads_) thread.join();
  }
  WorkerThreads(const WorkerThreads&) = delete;
  WorkerThreads& operator=(const WorkerThreads&) = delete;
  template <typename Work>
  void start(Work work) {
    threads_.emplace_back(work);
  }

 private:
  std::atomic<bool>& stop_;
  std::vector<std::thread> threads_;
};

// The reason part of an extraction error, without the "<path>: " it starts with.
std::string reason_of(const std::string& message, const std::string& path) {
  const std::string prefix = path + ": ";
  return message.compare(0, prefix.size(), prefix) == 0 ? message.substr(prefix.size()) : message;
}

Decoded decode_all(const std::vector<Candidate>& candidates, const ExtractionSettings& settings, int workers,
                   const ProgressFn& progress) {
  const size_t total = candidates.size();
  const size_t clip_bytes = settings.clip_bytes();
  Decoded decoded;
  decoded.pixels.resize(total * clip_bytes);
  decoded.reasons.assign(total, "");

  std::mutex mutex;
  std::condition_variable finished_changed;
  std::deque<size_t> finished;  // indices done, in completion order
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};

  const auto work = [&] {
    for (size_t i = next++; i < total && !stop; i = next++) {
      std::string reason;
      try {
        const Clip clip = extract_clip(candidates[i].path, settings);
        std::memcpy(decoded.pixels.data() + i * clip_bytes, clip.pixels.data(), clip_bytes);
      } catch (const std::exception& e) {
        reason = reason_of(e.what(), candidates[i].path);
        if (reason.empty()) reason = "unknown decoding failure";
      }
      const std::lock_guard<std::mutex> lock(mutex);
      decoded.reasons[i] = std::move(reason);
      finished.push_back(i);
      finished_changed.notify_one();
    }
  };

  unsigned threads = workers > 0 ? static_cast<unsigned>(workers) : std::thread::hardware_concurrency();
  threads = std::max(1u, std::min<unsigned>(threads, static_cast<unsigned>(total)));
  {
    WorkerThreads pool(stop);
    for (unsigned t = 0; t < threads; ++t) pool.start(work);
    for (size_t done = 0; done < total;) {
      std::deque<size_t> batch;
      {
        std::unique_lock<std::mutex> lock(mutex);
        finished_changed.wait(lock, [&] { return !finished.empty(); });
        batch.swap(finished);
      }
      for (const size_t i : batch) {
        ++done;
        if (progress) progress(Progress{done, total, candidates[i].path});
      }
    }
  }
  return decoded;
}

// Fills clips.{paths,labels,pixels,skipped} from the decoded slots, squeezing out the skipped
// ones in place (the buffer is moved, never copied: it can be the whole dataset).
void gather(const std::vector<Candidate>& candidates, Decoded&& decoded, size_t clip_bytes, ClipSet& clips) {
  clips.pixels = std::move(decoded.pixels);
  size_t kept = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (!decoded.reasons[i].empty()) {
      clips.skipped.push_back({candidates[i].path, decoded.reasons[i]});
      continue;
    }
    if (kept != i) {
      std::memmove(clips.pixels.data() + kept * clip_bytes, clips.pixels.data() + i * clip_bytes, clip_bytes);
    }
    clips.paths.push_back(candidates[i].path);
    clips.labels.push_back(candidates[i].label);
    ++kept;
  }
  clips.pixels.resize(kept * clip_bytes);
}

void require_every_class(const ClipSet& clips, const std::string& root) {
  std::vector<size_t> per_class(clips.class_names.size(), 0);
  for (const int label : clips.labels) ++per_class[static_cast<size_t>(label)];
  for (size_t k = 0; k < per_class.size(); ++k) {
    if (per_class[k] > 0) continue;
    const std::string folder = (fs::path(root) / clips.class_names[k]).string();
    std::vector<std::string> reasons;
    size_t count = 0;
    for (const SkippedFile& skipped : clips.skipped) {
      if (fs::path(skipped.path).parent_path() != fs::path(folder)) continue;
      if (count++ < kReasonsInError) {
        reasons.push_back(fs::path(skipped.path).filename().string() + ": " + skipped.reason);
      }
    }
    const std::string more =
        count > kReasonsInError ? fmt::format("; and {} more", count - kReasonsInError) : "";
    fail("{}: class '{}' has no usable video: {}{}", folder, clips.class_names[k], join(reasons, "; "), more);
  }
}

// Clips of clip_bytes each that make one block of a streamed build or join (at least one).
size_t clips_per_block(size_t clip_bytes) {
  return std::max<size_t>(1, kStreamBlockBytes / std::max<size_t>(clip_bytes, 1));
}

// Appends what `part` lists (paths, labels, skipped files) to `clips`, in order.
void append_listing(ClipSet& clips, const ClipSet& part) {
  clips.paths.insert(clips.paths.end(), part.paths.begin(), part.paths.end());
  clips.labels.insert(clips.labels.end(), part.labels.begin(), part.labels.end());
  clips.skipped.insert(clips.skipped.end(), part.skipped.begin(), part.skipped.end());
}

// Decodes the candidates block by block (kStreamBlockBytes of clips at a time) into the cache at
// clips.cache_file, written atomically, and fills clips' paths, labels and skipped files: memory
// holds one block whatever the dataset's size.
// A part (whole == false) may lack classes: the whole cache is checked when the parts are joined.
void build_cache_streamed(const std::vector<Candidate>& candidates, const std::string& key,
                          const DatasetSpec& spec, const ProgressFn& progress, ClipSet& clips,
                          bool whole = true) {
  const size_t clip_bytes = clips.clip_elements();
  const size_t block = clips_per_block(clip_bytes);
  const fs::path parent = fs::path(clips.cache_file).parent_path();
  std::error_code error;
  if (!parent.empty() && !fs::create_directories(parent, error) && error) {
    fail("--cache {}: cannot create the directory {}: {}", clips.cache_file, parent.string(),
         error.message());
  }
  write_atomically(clips.cache_file, [&](const std::string& temp) {
    CacheWriter writer(temp, clips.extraction);
    for (size_t begin = 0; begin < candidates.size(); begin += block) {
      const std::vector<Candidate> part(
          candidates.begin() + static_cast<std::ptrdiff_t>(begin),
          candidates.begin() + static_cast<std::ptrdiff_t>(std::min(candidates.size(), begin + block)));
      ProgressFn shifted;
      if (progress) {
        shifted = [&](const Progress& p) {
          progress(Progress{begin + p.done, candidates.size(), p.current});
        };
      }
      ClipSet decoded;
      gather(part, decode_all(part, clips.extraction, spec.workers, shifted), clip_bytes, decoded);
      writer.append(decoded.pixels.data(), decoded.size());
      append_listing(clips, decoded);
    }
    if (whole) require_every_class(clips, spec.root);
    writer.finish(key, spec.root, clips);
  });
}

// `job` tells this run's parts from another's building the same cache path at the same time.
std::string part_path(const std::string& cache, const std::string& job, int rank, int ranks) {
  return fmt::format("{}.part-{}-{}-of-{}", cache, job, rank, ranks);
}
std::string part_key(const std::string& key, int rank) { return fmt::format("{} part {}", key, rank); }

// True when the cache at `file` holds this dataset (its metadata read in a child process first).
bool cache_serves(const std::string& file, const std::string& key, const std::string& root,
                  const std::vector<std::string>& classes, const ExtractionSettings& settings) {
  std::error_code error;
  if (!fs::exists(file, error)) return false;
  try {
    ClipSet probe;
    probe_in_child(file, [&] { read_cache(file, key, root, classes, settings, probe, /*pixels=*/false); });
    return read_cache(file, key, root, classes, settings, probe, /*pixels=*/false) == CacheRead::Loaded;
  } catch (const std::exception&) {
    return false;
  }
}

// Every rank decodes its contiguous share of the candidates into its part file (block by block),
// then rank 0 joins the parts, in rank order, into the cache (clips copied a block at a time)
// and removes them. Every rank returns once the cache is written.
void build_cache_by_ranks(const std::vector<Candidate>& candidates, const std::string& key,
                          const DatasetSpec& spec, const ProgressFn& progress, const ClipSet& like,
                          Communicator& comm) {
  const std::vector<Candidate> mine = share_of(candidates, comm);
  // Rank 0's process id names this build's parts on every rank (host and pid: unique among the
  // jobs sharing the directory).
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  std::string job = fmt::format("{}-{}", fnv1a64(std::string(host)) % 100000000, ::getpid());
  comm.broadcast(job, 0);
  ClipSet part;
  part.class_names = like.class_names;
  part.extraction = like.extraction;
  part.cache_file = part_path(like.cache_file, job, comm.rank(), comm.size());
  require_replaceable_cache(part.cache_file, /*default_location=*/false);  // only a part of ours is replaced
  build_cache_streamed(mine, part_key(key, comm.rank()), spec, progress, part, /*whole=*/false);
  comm.barrier();
  if (comm.rank() == 0) {
    ClipSet all;
    all.class_names = like.class_names;
    all.extraction = like.extraction;
    const size_t clip_bytes = all.clip_elements();
    const size_t block = clips_per_block(clip_bytes);
    write_atomically(like.cache_file, [&](const std::string& temp) {
      CacheWriter writer(temp, all.extraction);
      std::vector<uint8_t> buffer;
      for (int q = 0; q < comm.size(); ++q) {
        const std::string file = part_path(like.cache_file, job, q, comm.size());
        ClipSet listed;
        if (read_cache(file, part_key(key, q), spec.root, all.class_names, all.extraction, listed,
                       /*pixels=*/false) != CacheRead::Loaded) {
          fail("{}: the part of rank {} is missing or was written for other data", file, q);
        }
        const h5::File h5file = h5::File::open(file);
        const h5::Dataset rows = h5file.root().open_dataset("clips");
        for (size_t begin = 0; begin < listed.size(); begin += block) {
          const size_t count = std::min(block, listed.size() - begin);
          buffer.resize(count * clip_bytes);
          rows.read_rows(static_cast<int64_t>(begin), static_cast<int64_t>(count), buffer.data());
          writer.append(buffer.data(), count);
        }
        append_listing(all, listed);
      }
      require_every_class(all, spec.root);
      writer.finish(key, spec.root, all);
    });
    for (int q = 0; q < comm.size(); ++q) {
      std::error_code ignored;
      fs::remove(part_path(like.cache_file, job, q, comm.size()), ignored);
    }
  }
  comm.barrier();
}

}  // namespace

namespace {

// The cache's clips, opened for reading batch by batch; checks, on the handle that will stream
// them, that they are the clips of `key` (the file may have been replaced since it was read, by a
// run of other data sharing the --cache path) and the clips listed.
std::shared_ptr<ClipStream> open_stream(const ClipSet& clips, const std::string& key) {
  auto stream = std::make_shared<ClipStream>(h5::File::open(clips.cache_file));
  const h5::Group root = stream->file.root();
  if (!root.has_attribute("key") || root.read_string_attribute("key") != key) {
    fail(
        "--cache {}: the clip cache was replaced while it was being opened (another run with other data "
        "writing the same --cache?); run again, or give each dataset its own --cache",
        clips.cache_file);
  }
  const std::vector<int64_t> shape = stream->clips.shape();
  if (shape.empty() || shape[0] != static_cast<int64_t>(clips.size()) ||
      stream->clips.row_numel() != static_cast<int64_t>(clips.clip_elements())) {
    fail("{}: /clips has shape {}, not the {} clips of {} values listed", clips.cache_file, shape_text(shape),
         clips.size(), clips.clip_elements());
  }
  return stream;
}

}  // namespace

std::vector<std::string> dataset_classes(const DatasetSpec& spec) {
  if (spec.root.empty()) fail("dataset root is not set (empty path)");
  std::error_code error;
  const fs::file_status status = fs::status(spec.root, error);
  if (status.type() == fs::file_type::not_found) fail("{}: dataset root does not exist", spec.root);
  if (error) fail("{}: dataset root cannot be read: {}", spec.root, error.message());
  if (!fs::is_directory(status)) fail("{}: dataset root is not a directory", spec.root);

  const std::vector<std::string> available = sorted_entries(spec.root, [](const fs::directory_entry& entry) {
    std::error_code is_dir_error;
    return entry.is_directory(is_dir_error);
  });
  if (available.empty()) fail("{}: no class folders (expected {}/<Class>/<video>)", spec.root, spec.root);
  return select_classes(spec, available);
}

std::string class_and_file(const std::string& path) {
  const fs::path p(path);  // <root>/<class folder>/<video>
  return p.parent_path().filename().string() + '/' + p.filename().string();
}

std::string clips_fingerprint(const ClipSet& clips) {
  uint64_t hash = kFnv1a64Basis;
  for (size_t i = 0; i < clips.size(); ++i) {
    hash = fingerprint_step(hash, class_and_file(clips.paths[i]),
                            clips.class_names[static_cast<size_t>(clips.labels[i])]);
  }
  return hex64(hash);
}

std::string listing_fingerprint(const DatasetSpec& spec, const std::set<std::string>& skipped,
                                size_t* files) {
  const std::vector<std::string> classes = dataset_classes(spec);
  uint64_t hash = kFnv1a64Basis;
  size_t taken = 0;
  for (const Candidate& c : list_videos(spec.root, classes)) {
    if (skipped.count(c.relative) != 0) continue;
    hash = fingerprint_step(hash, c.relative, classes[static_cast<size_t>(c.label)]);
    ++taken;
  }
  if (files != nullptr) *files = taken;
  return hex64(hash);
}

ClipSet load_clips(const DatasetSpec& spec, const ProgressFn& progress) {
  const ExtractionSettings& settings = spec.extraction;
  if (settings.sequence_length < 1 || settings.height < 1 || settings.width < 1) {
    fail("{}: extraction settings must be positive, got sequence_length {}, height {}, width {}", spec.root,
         settings.sequence_length, settings.height, settings.width);
  }
  if (spec.workers < 0) fail("{}: workers must be >= 0, got {}", spec.root, spec.workers);
  const std::vector<std::string> classes = dataset_classes(spec);
  std::vector<std::string> notes;
  const std::vector<Candidate> candidates = list_videos(spec.root, classes, &notes);
  std::error_code error;

  fs::path absolute_path = fs::weakly_canonical(fs::absolute(spec.root, error), error);
  if (error) absolute_path = fs::absolute(spec.root, error);
  const std::string absolute_root = absolute_path.string();
  const std::string key = cache_key(absolute_root, classes, candidates, settings);

  ClipSet clips;
  clips.class_names = classes;
  clips.extraction = settings;
  clips.notes = std::move(notes);
  if (spec.cache_path != "none") {
    clips.cache_file = spec.cache_path.empty()
                           ? default_cache_path(absolute_root, classes, settings, clips.cache_note)
                           : spec.cache_path;
  }
  if (spec.stream && clips.cache_file.empty()) {
    fail("{}: streaming reads the clips from the clip cache, and there is none ({}): give --cache FILE",
         spec.root, spec.cache_path == "none" ? "--cache none" : clips.cache_note);
  }
  if (!clips.cache_file.empty()) {
    require_replaceable_cache(clips.cache_file, spec.cache_path.empty());
    // Half-written caches of killed runs (10 minutes idle: a build on another machine sharing the
    // directory writes its file every block).
    remove_stale_temporaries(clips.cache_file, std::chrono::minutes(10));
  }
  // Ranks of a data-parallel run build a missing cache together; rank 0 says whether it is missing.
  const bool by_ranks =
      spec.communicator != nullptr && spec.communicator->size() > 1 && !clips.cache_file.empty();
  if (by_ranks) {
    Communicator& comm = *spec.communicator;
    std::string verdict = "serves";
    if (comm.rank() == 0 && !cache_serves(clips.cache_file, key, spec.root, classes, settings))
      verdict = "build";
    comm.broadcast(verdict, 0);
    if (verdict == "build") {
      build_cache_by_ranks(candidates, key, spec, progress, clips, comm);
      clips.cache_note = fmt::format("built the clip cache {} with {} ranks, each decoding 1/{} of the files",
                                     clips.cache_file, comm.size(), comm.size());
    }
  }
  if (!clips.cache_file.empty()) {
    bool reading = true;  // an error while the file is read, not one of the checks after it
    try {
      // Everything but the clips is read first in a child process: a damaged file that would
      // crash libhdf5 becomes an unreadable cache, rebuilt.
      if (fs::exists(clips.cache_file, error)) {
        probe_in_child(clips.cache_file, [&] {
          ClipSet probe;
          read_cache(clips.cache_file, key, spec.root, classes, settings, probe, /*pixels=*/false);
        });
      }
      const CacheRead read =
          read_cache(clips.cache_file, key, spec.root, classes, settings, clips, /*pixels=*/!spec.stream);
      reading = false;
      if (by_ranks && read != CacheRead::Loaded) {
        fail(
            "--cache {}: rank {} finds no cache of this dataset there after rank 0 wrote it (every rank must "
            "see the same file: put it on a filesystem all machines share)",
            clips.cache_file, spec.communicator->rank());
      }
      switch (read) {
        case CacheRead::Loaded:
          clips.from_cache = true;
          if (spec.stream) clips.stream = open_stream(clips, key);
          return clips;
        case CacheRead::Missing:
          clips.cache_note = fmt::format("no clip cache at {} yet; built it", clips.cache_file);
          break;
        case CacheRead::OtherKey:
          clips.cache_note = fmt::format(
              "the clip cache {} was built from other files or settings (a video added, removed or changed, "
              "other classes, frames or size); rebuilt it",
              clips.cache_file);
          break;
      }
    } catch (const std::exception& e) {
      if (by_ranks) {  // the ranks would rebuild it one against the other
        if (!reading) throw;
        fail(
            "--cache {}: the clip cache cannot be read ({}); delete it and run again (the ranks rebuild it "
            "together)",
            clips.cache_file, e.what());
      }
      clips.paths.clear();
      clips.labels.clear();
      clips.pixels.clear();
      clips.skipped.clear();
      clips.cache_note = fmt::format("cache {} could not be read ({}); rebuilt", clips.cache_file, e.what());
    }
  }

  if (spec.stream) {
    build_cache_streamed(candidates, key, spec, progress, clips);
    clips.stream = open_stream(clips, key);
    return clips;
  }
  gather(candidates, decode_all(candidates, settings, spec.workers, progress), clips.clip_elements(), clips);
  require_every_class(clips, spec.root);

  if (!clips.cache_file.empty()) {
    const std::string problem = write_cache(clips.cache_file, key, spec.root, clips);
    if (!problem.empty()) {
      clips.cache_note += fmt::format("; the cache could not be written: {}", problem);
      clips.cache_file.clear();
    }
  }
  return clips;
}

}  // namespace hisvid::io
