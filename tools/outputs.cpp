#include "tools/outputs.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
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

// Where an earlier run's files wait while a new run in the directory saves its first epoch, in
// three states, each name a commit point that a rename makes (a kill leaves one of them):
// .partial while they are moved there (nothing new written yet: moving them back is all a
// restore does), then the set (the new run saves: a restore removes what it saved and moves
// them back), then .drop once the new run's first epoch is saved (they are deleted).
const char* const kEarlierPartial = ".hisvid-earlier.partial";
const char* const kEarlier = ".hisvid-earlier";
const char* const kEarlierDrop = ".hisvid-earlier.drop";

// Opens (creating it) the lock file <dir>/.hisvid-lock and takes its lock without waiting: the
// descriptor, or -1 when another run holds it. Fails, naming `option`, when it cannot be opened.
int lock_run_directory(const std::string& dir, const std::string& option) {
  const std::string lock_path = (fs::path(dir) / ".hisvid-lock").string();
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail("{} {}: cannot create {}: {}", option, dir, lock_path, std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return fd;
  ::close(fd);
  return -1;
}

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
  // must take new files; for a symbolic link, the directory of the file it leads to.
  fs::path where = parent.empty() ? fs::path(".") : parent;
  if (fs::is_symlink(fs::symlink_status(output, error))) {
    const fs::path target = fs::weakly_canonical(output, error);
    if (!error && !target.parent_path().empty()) where = target.parent_path();
  }
  const std::string dir = where.string();
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    fail("{} {}: cannot write into {}: {}", option, output, dir == "." ? "the working directory" : dir,
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

void require_outside_data(const std::string& output, const std::string& data_root,
                          const std::string& option) {
  if (output.empty() || data_root.empty()) return;
  std::error_code error;
  const fs::path out = fs::weakly_canonical(fs::absolute(output), error);
  const fs::path root = fs::weakly_canonical(fs::absolute(data_root), error);
  if (error) return;  // a root that cannot be resolved is named by the data loader
  const auto [root_end, out_at] = std::mismatch(root.begin(), root.end(), out.begin(), out.end());
  if (root_end != root.end()) return;
  fail(
      "{} {}: {} the video folder --data {}; what hisvid writes there would be read as part of the dataset "
      "(a class folder, or files among a class's videos): choose a folder outside it",
      option, output, out_at == out.end() ? "is" : "is inside", data_root);
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
  fs::path made = fs::absolute(path, error).lexically_normal();
  if (made.filename().empty()) made = made.parent_path();  // "runs/x/"
  for (; !made.empty() && !fs::exists(made, error); made = made.parent_path()) {
    created_.push_back(made.string());
    if (made == made.parent_path()) break;
  }
  fs::create_directories(path, error);
  if (error) fail("--out {}: cannot create the directory: {}", path, error.message());
  if (::access(path.c_str(), W_OK | X_OK) != 0)
    fail("--out {}: cannot write into the directory: {}", path, std::strerror(errno));
  const std::string lock_path = (fs::path(path) / ".hisvid-lock").string();
  // A run that saved nothing removes its lock file and directory (the destructor): a lock taken
  // on the file it just unlinked is no lock, so it is taken again on the file now there.
  for (int attempt = 0;; ++attempt) {
    lock_fd_ = lock_run_directory(path, "--out");
    if (lock_fd_ < 0) break;  // held by another run: said below
    struct stat held {
    }, named{};
    if (attempt >= 8 || (::fstat(lock_fd_, &held) == 0 && ::stat(lock_path.c_str(), &named) == 0 &&
                         held.st_dev == named.st_dev && held.st_ino == named.st_ino)) {
      break;
    }
    ::close(lock_fd_);
    lock_fd_ = -1;
    fs::create_directories(path, error);
  }
  if (lock_fd_ < 0) {
    std::ifstream in(lock_path);
    std::string owner;
    std::getline(in, owner);
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
  const fs::path dir(path_), partial = dir / kEarlierPartial;
  std::error_code error;
  fs::create_directory(partial, error);
  if (error)
    fail("--out {}: cannot make {} for the earlier run's files: {}", path_, partial.string(),
         error.message());
  set_aside_ = true;  // from here on, a failure moves whatever is aside back
  for (const std::string& file : earlier_) {
    fs::rename(dir / file, partial / file, error);
    if (error && fs::exists(dir / file)) {
      fail("--out {}: cannot move the earlier run's {} aside: {}", path_, file, error.message());
    }
  }
  fs::rename(partial, dir / kEarlier, error);  // the commit point: every file is aside
  if (error) fail("--out {}: cannot set the earlier run aside: {}", path_, error.message());
  io::sync_directory(path_);
}

void RunDirectory::drop_earlier_run() {
  if (!set_aside_) return;
  const fs::path dir(path_);
  std::error_code error;
  fs::rename(dir / kEarlier, dir / kEarlierDrop, error);  // the commit point: the new epoch is saved
  if (error)
    fail("--out {}: cannot drop the earlier run's files in {}: {}", path_, kEarlier, error.message());
  set_aside_ = false;
  earlier_.clear();
  io::sync_directory(path_);
  fs::remove_all(dir / kEarlierDrop, error);  // what is left the next run removes
}

namespace {

// Moves every entry of `from` into `dir` and removes `from` (when all went).
void move_back(const fs::path& from, const fs::path& dir) noexcept {
  std::error_code error;
  for (fs::directory_iterator it(from, error); !error && it != fs::directory_iterator();
       it.increment(error)) {
    std::error_code ignored;
    fs::rename(it->path(), dir / it->path().filename(), ignored);
  }
  fs::remove(from, error);
}

// Brings the directory back to one run after a set-aside that did not finish (the caller holds
// its lock): an earlier run half set aside moves back; one wholly set aside moves back in place
// of what the new run saved; one being dropped is deleted. False when there was nothing to do.
bool restore_set_aside_files(const std::string& path) noexcept {
  try {
    const fs::path dir(path);
    std::error_code error;
    bool restored = false;
    if (fs::is_directory(dir / kEarlierDrop, error)) fs::remove_all(dir / kEarlierDrop, error);
    if (fs::is_directory(dir / kEarlier, error)) {
      for (const std::string& file : run_files()) fs::remove(dir / file, error);
      move_back(dir / kEarlier, dir);
      restored = true;
    }
    if (fs::is_directory(dir / kEarlierPartial, error)) {
      move_back(dir / kEarlierPartial, dir);
      restored = true;
    }
    if (restored) io::sync_directory(path);
    return restored;
  } catch (...) {  // (allocation): the next run on the directory tries again
    return false;
  }
}

}  // namespace

bool restore_set_aside_run(const std::string& dir) {
  std::error_code error;
  if (!fs::is_directory(fs::path(dir) / kEarlier, error) &&
      !fs::is_directory(fs::path(dir) / kEarlierPartial, error) &&
      !fs::is_directory(fs::path(dir) / kEarlierDrop, error)) {
    return false;
  }
  const int fd = lock_run_directory(dir, "--resume");
  if (fd < 0) fail("--resume {}: another hisvid run is writing this directory; wait for it", dir);
  const bool restored = restore_set_aside_files(dir);
  ::close(fd);
  return restored;
}

bool RunDirectory::restore_earlier_run() noexcept { return restore_set_aside_files(path_); }

RunDirectory::~RunDirectory() {
  // A directory this run made holds nothing but the lock when the run saved nothing (a refusal,
  // bad data, Ctrl-C in the first epoch): it goes, with the parents made for it, so that a failed
  // command leaves no trace. Otherwise the lock file stays for the next run.
  try {
    std::error_code error;
    if (set_aside_) restore_earlier_run();
    if (!created_.empty() && lock_fd_ >= 0) {
      bool only_lock = true;
      for (fs::directory_iterator it(path_, error); !error && it != fs::directory_iterator();
           it.increment(error)) {
        if (it->path().filename() != ".hisvid-lock") only_lock = false;
      }
      if (only_lock && !error) {
        fs::remove(fs::path(path_) / ".hisvid-lock", error);
        for (const std::string& dir : created_) {
          if (!fs::remove(dir, error)) break;  // not empty (another command wrote there): kept
        }
      }
    }
  } catch (...) {  // a destructor may end an unwinding: nothing escapes it
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
}

}  // namespace hisvid::tools
