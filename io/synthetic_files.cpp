// io/synthetic_files.cpp — the built-in dataset written as videos (make_synthetic_dataset in
// io/synthetic.h), the frames coming from the generator of io/synthetic.cpp.
//
// Files: OUT/<Class>/v_<Class>_g<GG>_c<CC>.avi, four clips per group like UCF50's groups (the
// group means nothing else here), MJPG in AVI through OpenCV's FFmpeg writer (byte-identical
// output for the same frames and FFmpeg version; ~47 KB for 40 frames of 96 x 96). OpenCV's
// built-in Motion-JPEG writer (CAP_OPENCV_MJPEG) is not used: OpenCV 4.6's emits JPEG data that
// libjpeg reports as truncated on some frames (opencv/opencv#24171). Each clip is written to
// OUT/<Class>/.partial-<name> and renamed when complete, so a final name always holds a whole
// clip; the writer picks the container by the .avi ending, hence a prefix rather than a suffix.
//
// The marker OUT/.hisvid-synthetic.json holds the generator format, the spec (classes in the
// canonical order, sizes, fps, seed; not out_dir, so a dataset can be moved) and the clip list.
// A call finding its own marker with the same format and spec keeps every clip already present
// (clips are complete by the rename rule and deterministic by seed) and writes only the missing
// ones: a repeated call is nearly free and an interrupted run resumes. With a different spec or
// format the call is refused, naming the differences, unless spec.replace: then the clips the
// marker lists are deleted first (other files are left alone), the new marker is written and
// every clip generated. A non-empty OUT without a marker is refused.
// The returned list is every clip of the dataset (class by class, clip by clip), whether this
// call wrote it or found it.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>
#include <string>
#include <system_error>
#include <vector>

#include "engine/error.h"
#include "io/synthetic.h"
#include "io/video.h"

namespace hisvid::io {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kMarkerName = ".hisvid-synthetic.json";
constexpr const char* kGeneratorName = "hisvid make_synthetic_dataset";
constexpr const char* kPartialPrefix = ".partial-";

json spec_json(const SyntheticSpec& spec, const std::vector<std::string>& classes) {
  return json{{"classes", classes},
              {"clips_per_class", spec.clips_per_class},
              {"frames_per_clip", spec.frames_per_clip},
              {"width", spec.width},
              {"height", spec.height},
              {"fps", spec.fps},
              {"seed", spec.seed}};
}

// A path from the marker, relative and inside the dataset directory.
fs::path inside(const fs::path& out, const fs::path& marker, const json& entry) {
  if (!entry.is_string()) fail("{}: holds a path that is not a string: {}", marker.string(), entry.dump());
  const fs::path relative(entry.get<std::string>());
  bool ok = !relative.empty() && relative.is_relative();
  for (const fs::path& part : relative) {
    if (part == ".." || part == ".") ok = false;
  }
  if (!ok) {
    fail("{}: holds the path '{}', which is not inside the dataset directory", marker.string(),
         relative.string());
  }
  return out / relative;
}

void remove_partials(const fs::path& directory) {
  if (!fs::is_directory(directory)) return;
  std::vector<fs::path> partials;
  for (const fs::directory_entry& entry : fs::directory_iterator(directory)) {
    if (entry.path().filename().string().rfind(kPartialPrefix, 0) == 0) partials.push_back(entry.path());
  }
  for (const fs::path& path : partials) fs::remove(path);
}

// Reads the marker. Returns null when there is none; throws when it is not ours or unreadable.
json read_marker(const fs::path& marker) {
  if (!fs::exists(marker)) return nullptr;
  std::ifstream in(marker);
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (!in) fail("{}: cannot read the marker", marker.string());
  json parsed = json::parse(text, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object() || parsed.value("generator", "") != kGeneratorName ||
      !parsed.contains("spec") || !parsed["spec"].is_object() || !parsed.contains("clips") ||
      !parsed["clips"].is_array()) {
    fail("{}: not a marker written by {}; remove the directory or choose another one", marker.string(),
         kGeneratorName);
  }
  return parsed;
}

// Deletes what the previous marker lists: its clips, partial clips in its class folders, and
// those folders when that leaves them empty. Anything else stays.
void remove_previous(const fs::path& out, const fs::path& marker, const json& previous) {
  for (const json& entry : previous["clips"]) fs::remove(inside(out, marker, entry));
  const json classes = previous["spec"].value("classes", json::array());
  for (const json& name : classes) {
    const fs::path folder = inside(out, marker, name);
    remove_partials(folder);
    if (fs::is_directory(folder) && fs::is_empty(folder)) fs::remove(folder);
  }
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  const fs::path partial = path.parent_path() / (kPartialPrefix + path.filename().string());
  {
    std::ofstream file(partial, std::ios::binary | std::ios::trunc);
    file << text;
    file.close();
    if (!file) {
      fs::remove(partial);
      fail("{}: cannot write the file", partial.string());
    }
  }
  fs::rename(partial, path);
}

// Writes clip `clip` of `class_name` to `.partial-<name>` beside `path`, then renames it to `path`.
void write_clip(const fs::path& path, const SyntheticSpec& spec, const std::string& class_name, int clip) {
  const fs::path partial = path.parent_path() / (kPartialPrefix + path.filename().string());
  try {
    std::vector<uint8_t> frames = synthetic_clip_frames(spec, class_name, clip);
    cv::VideoWriter writer;
    if (!writer.open(partial.string(), cv::CAP_FFMPEG, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), spec.fps,
                     cv::Size(spec.width, spec.height), true)) {
      fail("{}: OpenCV's FFmpeg writer cannot open it for MJPG in AVI", partial.string());
    }
    const size_t frame_bytes = static_cast<size_t>(spec.height) * spec.width * 3;
    for (int t = 0; t < spec.frames_per_clip; ++t) {
      writer.write(cv::Mat(spec.height, spec.width, CV_8UC3, frames.data() + t * frame_bytes));
    }
    writer.release();
    // The writer reports no write error: a clip cut short by a full disk or a file-size limit is
    // found by reading it back, before it takes its name.
    const int64_t readable = count_readable_frames(partial.string());
    if (readable != spec.frames_per_clip) {
      std::error_code error;
      const std::string why =
          !fs::is_regular_file(partial, error) || fs::file_size(partial, error) == 0
              ? "it holds no data"
              : fmt::format("it holds {} of its {} frames", readable, spec.frames_per_clip);
      fail("{}: not written: {} (a full disk, or a file-size limit?)", path.string(), why);
    }
    fs::rename(partial, path);
  } catch (const cv::Exception& e) {
    std::error_code ignored;
    fs::remove(partial, ignored);
    fail("{}: OpenCV: {}", partial.string(), e.what());
  } catch (...) {
    std::error_code ignored;
    fs::remove(partial, ignored);
    throw;
  }
}

std::vector<std::string> make_dataset(const SyntheticSpec& spec, const ProgressFn& progress) {
  if (spec.out_dir.empty()) fail("built-in dataset: no output directory given (an empty path)");
  const std::vector<std::string> classes = synthetic_classes(spec);
  const fs::path out(spec.out_dir);
  const fs::path marker = out / kMarkerName;

  if (fs::exists(out) && !fs::is_directory(out)) fail("{}: exists and is not a directory", out.string());
  // One writer at a time: a second make-dataset (or demo) on the directory is turned away at once
  // (both would write the same .partial- files). The lock is the directory's own, released by the
  // kernel however the process ends; no file is added.
  fs::create_directories(out);
  struct Lock {
    int fd;
    ~Lock() {
      if (fd >= 0) ::close(fd);
    }
  } const lock{::open(out.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (lock.fd < 0) fail("{}: cannot open the directory: {}", out.string(), std::strerror(errno));
  if (::flock(lock.fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) fail("{}: cannot lock the directory: {}", out.string(), std::strerror(errno));
    fail("{}: another hisvid is writing a dataset into this directory; wait for it, or choose another",
         out.string());
  }
  // A marker whose writing was interrupted is ours too: it does not make the directory foreign.
  const fs::path partial_marker = out / (kPartialPrefix + std::string(kMarkerName));
  if (fs::exists(partial_marker)) fs::remove(partial_marker);  // (a read-only out is then named below)
  const bool had_content = fs::exists(out) && !fs::is_empty(out);
  const json previous = fs::exists(out) ? read_marker(marker) : json(nullptr);
  if (had_content && previous.is_null()) {
    fail(
        "{}: the directory is not empty and holds no {}, so it is not a built-in dataset that hisvid "
        "(make-dataset or demo) wrote; refusing to write into it (choose a new or empty directory)",
        out.string(), kMarkerName);
  }

  const json spec_now = spec_json(spec, classes);
  std::vector<fs::path> paths;
  json clip_list = json::array();
  for (const std::string& name : classes) {
    for (int clip = 0; clip < spec.clips_per_class; ++clip) {
      const std::string relative = name + "/" + synthetic_clip_name(name, clip);
      paths.push_back(out / relative);
      clip_list.push_back(relative);
    }
  }

  const bool resume =
      !previous.is_null() && previous.value("format", 0) == kSyntheticFormat && previous["spec"] == spec_now;
  if (!previous.is_null() && !resume) {
    if (!spec.replace) {
      std::vector<std::string> changes;
      const json& before = previous.contains("spec") ? previous["spec"] : json::object();
      for (const auto& [key, value] : spec_now.items()) {
        if (!before.contains(key) || before[key] != value)
          changes.push_back(key + " " + (before.contains(key) ? before[key].dump() : "unset") + " -> " +
                            value.dump());
      }
      if (previous.value("format", 0) != kSyntheticFormat) changes.push_back("an older generator format");
      fail(
          "{}: holds the built-in dataset made with other settings ({}); add --overwrite to replace it (its "
          "{} "
          "clips are deleted, other files kept), or choose another directory",
          out.string(), fmt::format("{}", fmt::join(changes, ", ")), previous["clips"].size());
    }
    remove_previous(out, marker, previous);
  }
  fs::create_directories(out);
  if (!resume) {
    const json marker_now{{"generator", kGeneratorName},
                          {"format", kSyntheticFormat},
                          {"spec", spec_now},
                          {"clips", clip_list}};
    write_text_atomically(marker, marker_now.dump(2) + "\n");
  }

  std::vector<std::string> written;
  Progress state;
  state.total = paths.size();
  size_t next = 0;
  for (const std::string& name : classes) {
    const fs::path folder = out / name;
    fs::create_directories(folder);
    remove_partials(folder);
    for (int clip = 0; clip < spec.clips_per_class; ++clip, ++next) {
      const fs::path& path = paths[next];
      // Run again, a clip already there is kept when it is whole (one cut short by an older
      // hisvid, which did not read its clips back, is written again).
      if (!resume || !fs::exists(path) || count_readable_frames(path.string()) != spec.frames_per_clip) {
        write_clip(path, spec, name, clip);
      }
      written.push_back(path.string());
      state.done = written.size();
      state.current = path.string();
      if (progress) progress(state);
    }
  }
  return written;
}

}  // namespace

std::vector<std::string> make_synthetic_dataset(const SyntheticSpec& spec, const ProgressFn& progress) {
  try {
    return make_dataset(spec, progress);
  } catch (const fs::filesystem_error& e) {  // making, renaming or removing its files and folders
    fail("built-in dataset {}: cannot write {}: {}", spec.out_dir,
         e.path1().empty() ? spec.out_dir : e.path1().string(), e.code().message());
  } catch (const json::exception& e) {
    fail("built-in dataset {}/{}: unexpected content: {}", spec.out_dir, kMarkerName, e.what());
  }
}

std::string synthetic_dataset_missing(const std::string& root, const std::vector<std::string>& classes) {
  try {
    const json marker = read_marker(fs::path(root) / kMarkerName);
    if (marker.is_null()) return "";
    size_t missing = 0, listed = 0;
    std::error_code error;
    for (const json& clip : marker["clips"]) {
      if (!clip.is_string()) continue;
      const std::string relative = clip.get<std::string>();  // <Class>/<file>
      const std::string class_name = relative.substr(0, relative.find('/'));
      if (!classes.empty() && std::find(classes.begin(), classes.end(), class_name) == classes.end())
        continue;
      ++listed;
      if (!fs::exists(fs::path(root) / relative, error)) ++missing;
    }
    if (missing == 0) return "";
    return fmt::format(
        "{} of the {} clips its record ({}) lists{} are missing: a make-dataset that ended early? Run it "
        "again "
        "with the same settings to finish the dataset",
        missing, listed, kMarkerName, classes.empty() ? "" : " for these classes");
  } catch (const std::exception&) {  // hisvid's Error, or the file system's (a folder it cannot read)
    return "";                       // not a record this function can judge; the dataset is read as it is
  }
}

}  // namespace hisvid::io
