#include "tools/outputs.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/error.h"
#include "io/atomic_file.h"
#include "io/keras_h5.h"

namespace hisvid::tools {

namespace fs = std::filesystem;

namespace {
// Where an earlier run's files wait while a new run in the directory saves its first epoch.
const char* const kEarlier = ".hisvid-earlier";
}  // namespace

namespace {

// Fails, naming `option` and `what`, when `dir` is the directory of a training run in progress
// (its .hisvid-lock held): that run rewrites its files at every epoch.
void require_no_run_in_progress(const fs::path& dir, const std::string& option, const std::string& what) {
  const std::string lock_path = (dir / ".hisvid-lock").string();
  const int fd = ::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // releases the shared lock when it was had
  if (held)
    fail("{} {}: a hisvid training run is writing that directory; choose another place", option, what);
}

}  // namespace

void require_output_directory(const std::string& output, const std::string& option) {
  const fs::path parent = fs::path(output).parent_path();
  std::error_code error;
  if (!parent.empty()) {  // else the working directory
    const fs::file_status status = fs::status(parent, error);
    if (!fs::exists(status)) fail("{} {}: the directory {} does not exist", option, output, parent.string());
    if (!fs::is_directory(status)) fail("{} {}: {} is not a directory", option, output, parent.string());
  }
  // The file is written as a new one beside it and renamed (io/atomic_file.h): its directory
  // must take new files.
  const std::string dir = parent.empty() ? "." : parent.string();
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    fail("{} {}: cannot write into {}: {}", option, output, parent.empty() ? "the working directory" : dir,
         std::strerror(errno));
  }
}

void require_writable_output(const std::string& output, const std::string& option) {
  require_output_directory(output, option);
  const fs::path parent = fs::path(output).parent_path();
  require_no_run_in_progress(parent.empty() ? fs::path(".") : parent, option, output);
  std::error_code error;
  const fs::file_status status = fs::status(output, error);
  if (fs::exists(status) && !fs::is_regular_file(status))
    fail("{} {}: exists and is not a regular file (a directory, device or pipe is never replaced)", option,
         output);
}

void require_new_output(const std::string& output, const std::vector<std::string>& inputs, bool overwrite,
                        const std::string& option) {
  require_writable_output(output, option);
  std::error_code error;
  const fs::file_status status = fs::status(output, error);
  if (!fs::exists(status)) {
    if (!overwrite) io::expect_new_file(output);  // one another command makes meanwhile is kept
    return;
  }
  for (const std::string& input : inputs) {
    if (!input.empty() && fs::equivalent(input, output, error)) {
      fail("{} {}: that is an input of this command; hisvid does not write over its inputs", option, output);
    }
  }
  if (!fs::is_regular_file(status)) fail("{} {}: exists and is not a regular file", option, output);
  if (!overwrite) fail("{} {}: the file exists (add --overwrite to replace it)", option, output);
}

const std::vector<std::string>& report_files() {
  static const std::vector<std::string> files = {"report.txt", "report.json", "predictions.csv",
                                                 "confusion.png"};
  return files;
}

const std::vector<std::string>& run_files() {
  static const std::vector<std::string> files = [] {
    std::vector<std::string> all = {"last.h5", "best.h5", "model.h5", "history.csv"};
    all.insert(all.end(), report_files().begin(), report_files().end());
    all.push_back("curves.png");
    return all;
  }();
  return files;
}

void require_new_reports(const std::string& dir, const std::vector<std::string>& inputs, bool overwrite) {
  std::error_code error;
  const fs::file_status status = fs::status(dir, error);
  if (!fs::exists(status)) return;
  if (!fs::is_directory(status))
    fail("--out {}: is a file, not a directory (the reports go into a directory)", dir);
  for (const std::string& file : report_files()) {
    require_new_output((fs::path(dir) / file).string(), inputs, overwrite, "--out");
  }
}

namespace {

// The half-written files of a killed run: only its own files' temporaries (a user's file named
// like one, say results.tmp-20261127-1.csv, is not hisvid's to remove).
void remove_stale_temporaries(const fs::path& directory) {
  for (const std::string& file : run_files()) io::remove_stale_temporaries((directory / file).string());
}

}  // namespace

// Why `file`, a model file of a run's name in --out, is not one hisvid saved ("" when it is:
// every model hisvid saves carries its 'hisvid' record): a Keras checkpoint of the same name
// (best.h5, model.h5) is the user's, which no run replaces, --overwrite or not.
std::string not_saved_by_hisvid(const fs::path& file) {
  try {
    return io::read_model_file(file.string()).hisvid.empty() ? "no hisvid record: a Keras model file?" : "";
  } catch (const std::exception& e) {
    return std::string("unreadable: ") + e.what();
  }
}

RunDirectory::RunDirectory(const std::string& path, bool fresh, bool overwrite,
                           const std::vector<std::string>& inputs)
    : path_(path) {
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (fs::exists(status) && !fs::is_directory(status)) {
    fail("--out {}: is a file, not a directory (a run writes several files into its directory)", path);
  }
  // The directories this run makes, innermost first: removed again if it ends without saving.
  for (fs::path dir = fs::absolute(path, error); !dir.empty() && !fs::exists(dir, error);
       dir = dir.parent_path()) {
    created_.push_back(dir.string());
    if (dir == dir.parent_path()) break;
  }
  fs::create_directories(path, error);
  if (error) fail("--out {}: cannot create the directory: {}", path, error.message());
  if (::access(path.c_str(), W_OK | X_OK) != 0)
    fail("--out {}: cannot write into the directory: {}", path, std::strerror(errno));
  const std::string lock_path = (fs::path(path) / ".hisvid-lock").string();
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) fail("--out {}: cannot create {}: {}", path, lock_path, std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    std::ifstream in(lock_path);
    std::string owner;
    std::getline(in, owner);
    ::close(lock_fd_);
    lock_fd_ = -1;
    fail("--out {}: another hisvid run is writing this directory{}; wait for it, or choose another --out",
         path, owner.empty() ? "" : " (process " + owner + ")");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::write(lock_fd_, pid.data(), pid.size()) < 0) {
    // The lock holds without the pid in it; only the message of a second run loses it.
  }
  remove_stale_temporaries(path);
  restored_ = restore_earlier_run();
  if (!fresh) return;
  std::vector<std::string> held;
  for (const std::string& file : run_files()) {
    if (fs::exists(fs::path(path) / file, error)) held.push_back(file);
  }
  if (held.empty()) return;
  for (const std::string& file : held) {
    for (const std::string& input : inputs) {
      if (!input.empty() && fs::equivalent(input, fs::path(path) / file, error)) {
        fail(
            "--out {}: its {} is {}, an input of this command; a new run there would replace it (choose "
            "another --out)",
            path, file, input);
      }
    }
  }
  std::vector<std::string> foreign;
  for (const std::string& file : held) {
    if (fs::path(file).extension() != ".h5") continue;
    const std::string why = not_saved_by_hisvid(fs::path(path) / file);
    if (!why.empty()) foreign.push_back(file + " (" + why + ")");
  }
  if (!foreign.empty()) {
    fail(
        "--out {}: holds {}, which hisvid did not save; a run there would replace them, so hisvid does not "
        "start one, --overwrite or not: choose another --out, or move them",
        path, fmt::format("{}", fmt::join(foreign, "; ")));
  }
  if (!overwrite) {
    fail("--out {}: holds an earlier run ({}); continue it with --resume {}, or replace it with --overwrite",
         path, fmt::format("{}", fmt::join(held, ", ")), path);
  }
  earlier_ = held;
}

void RunDirectory::set_aside_earlier_run() {
  if (earlier_.empty() || set_aside_) return;
  const fs::path aside = fs::path(path_) / kEarlier;
  std::error_code error;
  fs::create_directory(aside, error);
  if (error)
    fail("--out {}: cannot make {} for the earlier run's files: {}", path_, aside.string(), error.message());
  set_aside_ = true;  // from here on, a failure moves whatever is aside back
  for (const std::string& file : earlier_) {
    fs::rename(fs::path(path_) / file, aside / file, error);
    if (error && fs::exists(fs::path(path_) / file)) {
      fail("--out {}: cannot move the earlier run's {} aside: {}", path_, file, error.message());
    }
  }
  io::sync_directory(path_);
}

void RunDirectory::drop_earlier_run() {
  if (!set_aside_) return;
  std::error_code error;
  fs::remove_all(fs::path(path_) / kEarlier, error);
  if (error)
    fail("--out {}: cannot remove the earlier run's files in {}: {}", path_, kEarlier, error.message());
  set_aside_ = false;
  earlier_.clear();
}

namespace {

// The run files in `dir` (a killed run's half-saved first epoch) replaced by those set aside in
// dir/.hisvid-earlier; false when there are none. The caller holds the directory's lock.
bool restore_set_aside_files(const std::string& dir) noexcept {
  const fs::path aside = fs::path(dir) / kEarlier;
  std::error_code error;
  if (!fs::is_directory(aside, error)) return false;
  for (const std::string& file : run_files()) fs::remove(fs::path(dir) / file, error);
  for (const fs::directory_entry& entry : fs::directory_iterator(aside, error)) {
    fs::rename(entry.path(), fs::path(dir) / entry.path().filename(), error);
  }
  fs::remove(aside, error);  // only when every file went back
  io::sync_directory(dir);
  return true;
}

}  // namespace

bool restore_set_aside_run(const std::string& dir) {
  std::error_code error;
  if (!fs::is_directory(fs::path(dir) / kEarlier, error)) return false;
  const std::string lock_path = (fs::path(dir) / ".hisvid-lock").string();
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail("--resume {}: cannot open {}: {}", dir, lock_path, std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    fail("--resume {}: another hisvid run is writing this directory; wait for it", dir);
  }
  const bool restored = restore_set_aside_files(dir);
  ::close(fd);
  return restored;
}

bool RunDirectory::restore_earlier_run() noexcept { return restore_set_aside_files(path_); }

RunDirectory::~RunDirectory() {
  // A directory this run made holds nothing but the lock when the run saved nothing (a refusal,
  // bad data, Ctrl-C in the first epoch): it goes, with the parents made for it, so that a failed
  // command leaves no trace. Otherwise the lock file stays for the next run.
  std::error_code error;
  if (set_aside_) restore_earlier_run();
  if (!created_.empty() && lock_fd_ >= 0) {
    bool only_lock = true;
    for (const fs::directory_entry& entry : fs::directory_iterator(path_, error)) {
      if (entry.path().filename() != ".hisvid-lock") only_lock = false;
    }
    if (only_lock && !error) {
      fs::remove(fs::path(path_) / ".hisvid-lock", error);
      for (const std::string& dir : created_) {
        if (!fs::remove(dir, error)) break;  // not empty (another command wrote there): kept
      }
    }
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
}

}  // namespace hisvid::tools
