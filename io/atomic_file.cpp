#include "io/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>

#include "engine/error.h"

namespace hisvid::io {

namespace {

// Forces the file's data to disk, so that the rename never exposes an empty or partial file
// after a power loss.
void sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open to sync: {}", path, std::strerror(errno));
  const int status = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (status != 0) fail("{}: cannot sync to disk: {}", path, std::strerror(error));
}

}  // namespace

void sync_directory(const std::string& directory) {
  const int fd = ::open(directory.empty() ? "." : directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

namespace {

// The file a path names: itself, or what its symbolic links lead to (a link stays a link, and
// the file it points at, on whatever disk, is the one replaced).
std::string link_target(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path current(path);
  std::error_code error;
  for (int hops = 0; hops < 16 && fs::is_symlink(current, error); ++hops) {
    const fs::path next = fs::read_symlink(current, error);
    if (error) break;
    current = next.is_absolute() ? next : current.parent_path() / next;
  }
  return current.string();
}

// What a failed write's message says about the storage, in plain words; "" when it is something else.
std::string storage_reason(const std::string& message) {
  const struct {
    const char* text;  // strerror's words, as the C library and HDF5 report them
    const char* reason;
  } known[] = {
      {"No space left on device", "the disk is full"},
      {"Disk quota exceeded", "the disk quota is used up"},
      {"File too large", "the file size limit was reached (ulimit -f, or the file system's own)"},
      {"Read-only file system", "the file system is read-only"},
      {"Permission denied", "permission denied in its directory"},
  };
  for (const auto& k : known) {
    if (message.find(k.text) != std::string::npos) return k.reason;
  }
  return "";
}

}  // namespace

std::string broken_link_target(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::is_symlink(fs::symlink_status(path, error)) || fs::exists(path, error)) return "";
  const fs::path target = fs::read_symlink(path, error);
  return error ? "" : target.string();
}

std::string missing_reason(const std::string& path, const std::string& what) {
  const std::string target = broken_link_target(path);
  return target.empty() ? "no such " + what : "a symbolic link to " + target + ", which does not exist";
}

std::string lowercase_extension(const std::string& path) {
  std::string extension = std::filesystem::path(path).extension().string();
  for (char& c : extension) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return extension;
}

namespace {

std::mutex new_files_mutex;
std::set<std::string>& new_files() {
  static std::set<std::string> files;
  return files;
}

std::string normal_path(const std::string& path) {
  std::error_code error;
  return std::filesystem::absolute(path, error).lexically_normal().string();
}

// Puts temp in path's place unless a file is there: renameat2's RENAME_NOREPLACE, or where the
// file system lacks it a hard link (which fails on an existing name too) and the temp's removal.
void rename_no_replace(const std::string& temp, const std::string& path, const std::string& given) {
  if (::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0) return;
  int error = errno;
  if (error == EINVAL || error == ENOSYS) {
    if (::link(temp.c_str(), path.c_str()) == 0) {
      ::unlink(temp.c_str());
      return;
    }
    error = errno;
    // No hard links either (FUSE mounts, vfat): checked, then renamed, as well as it can be done.
    if (error == EPERM || error == ENOSYS || error == EOPNOTSUPP) {
      struct stat existing {};
      if (::lstat(path.c_str(), &existing) != 0 && errno == ENOENT) {
        if (std::rename(temp.c_str(), path.c_str()) == 0) return;
        error = errno;
      } else {
        error = EEXIST;
      }
    }
  }
  if (error == EEXIST) {
    fail(
        "{}: not written: another process made this file while this command ran; it is kept (add --overwrite "
        "to replace it)",
        given);
  }
  fail("renaming {} to {} failed: {}", temp, path, std::strerror(error));
}

}  // namespace

namespace {

// The temporary files being written now, for remove_temporaries_now() in a signal handler:
// fixed slots of plain characters, since a handler may neither allocate nor lock.
constexpr int kTempSlots = 16;
constexpr size_t kTempPathBytes = 4096;
char temp_slots[kTempSlots][kTempPathBytes];
std::atomic<bool> temp_slot_used[kTempSlots];

// Holds `temp` in a slot while it exists (a path too long, or more writes at once than slots,
// goes unlisted: the next write of its target removes it instead).
class ListedTemporary {
 public:
  explicit ListedTemporary(const std::string& temp) {
    if (temp.size() >= kTempPathBytes) return;
    for (int i = 0; i < kTempSlots; ++i) {
      bool expected = false;
      if (!temp_slot_used[i].load() && temp_slot_used[i].compare_exchange_strong(expected, true)) {
        // The first character last: a signal meanwhile finds an empty path, never half of one.
        temp_slots[i][0] = '\0';
        std::memcpy(temp_slots[i] + 1, temp.c_str() + 1, temp.size());  // the rest and the NUL
        std::atomic_signal_fence(std::memory_order_seq_cst);            // before the handler sees it
        temp_slots[i][0] = temp[0];
        slot_ = i;
        return;
      }
    }
  }
  ~ListedTemporary() {
    if (slot_ < 0) return;
    temp_slots[slot_][0] = '\0';
    temp_slot_used[slot_].store(false);
  }
  ListedTemporary(const ListedTemporary&) = delete;
  ListedTemporary& operator=(const ListedTemporary&) = delete;

 private:
  int slot_ = -1;
};

}  // namespace

void remove_temporaries_now() noexcept {
  for (int i = 0; i < kTempSlots; ++i) {
    if (temp_slot_used[i].load() && temp_slots[i][0] != '\0') ::unlink(temp_slots[i]);
  }
}

void expect_new_file(const std::string& path) {
  std::lock_guard<std::mutex> lock(new_files_mutex);
  new_files().insert(normal_path(path));
}

void write_atomically(const std::string& given, const std::function<void(const std::string& temp)>& fill) {
  const std::string path = link_target(given);
  static std::atomic<unsigned> counter{0};
  const std::string temp = fmt::format("{}.tmp-{}-{}{}", path, ::getpid(), counter++,
                                       std::filesystem::path(path).extension().string());
  // A killed command's half-written file of the same target; one written to within the last 10
  // minutes is left, since a process on another machine sharing the directory (whose pid means
  // nothing here) may still be writing it, as the clip cache's builders do.
  remove_stale_temporaries(path, std::chrono::minutes(10));
  const ListedTemporary listed(temp);
  try {
    fill(temp);
    sync_file(temp);
    // A file replaced keeps its permissions (a private file stays private) and, where this
    // process may give it, its owner.
    struct stat before {};
    if (::stat(path.c_str(), &before) == 0) {
      ::chmod(temp.c_str(), before.st_mode & 07777);
      if (::geteuid() == 0) (void)!::chown(temp.c_str(), before.st_uid, before.st_gid);
    }
    bool must_be_new = false;
    {
      std::lock_guard<std::mutex> lock(new_files_mutex);
      must_be_new = new_files().count(normal_path(given)) != 0;
    }
    if (must_be_new) {
      rename_no_replace(temp, path, given);
    } else if (std::rename(temp.c_str(), path.c_str()) != 0) {
      fail("renaming {} over it failed: {}", temp, std::strerror(errno));
    }
  } catch (const std::exception& e) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    // The writers' own words for a full disk or a refusing directory bury the cause in library
    // detail (HDF5's names the temporary file, its buffers and offsets): said plainly instead.
    const std::string reason = storage_reason(e.what());
    if (!reason.empty())
      fail("{}: not written: {}; the earlier file, if there was one, is as it was", given, reason);
    throw;
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    throw;
  }
  sync_directory(std::filesystem::path(path).parent_path().string());
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  write_atomically(path, [&](const std::string& temp) {
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) fail("{}: cannot create {}: {}", path, temp, std::strerror(errno));
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int error = n < 0 ? errno : ENOSPC;
        ::close(fd);
        fail("{}: cannot write: {}", path, std::strerror(error));
      }
      done += static_cast<size_t>(n);
    }
    if (::close(fd) != 0) fail("{}: cannot write: {}", path, std::strerror(errno));
  });
}

void remove_stale_temporaries(const std::string& path, std::chrono::seconds idle) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path directory = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  const std::string prefix = target.filename().string() + ".tmp-", extension = target.extension().string();
  std::error_code error;
  for (fs::directory_iterator it(directory, error); !error && it != fs::directory_iterator();
       it.increment(error)) {
    std::string name = it->path().filename().string();
    // libzip writes a .keras archive to <temp>.XXXXXX first, then renames it to <temp>.
    if (name.size() > 7 + extension.size() && name[name.size() - 7] == '.' &&
        std::all_of(name.end() - 6, name.end(),
                    [](char c) { return std::isalnum(static_cast<unsigned char>(c)); }) &&
        name.compare(name.size() - 7 - extension.size(), extension.size(), extension) == 0) {
      name.resize(name.size() - 7);
    }
    if (name.size() <= prefix.size() + extension.size() || name.compare(0, prefix.size(), prefix) != 0 ||
        name.compare(name.size() - extension.size(), extension.size(), extension) != 0) {
      continue;
    }
    // <pid>-<n> between the prefix and the extension, digits only.
    const std::string middle = name.substr(prefix.size(), name.size() - prefix.size() - extension.size());
    const size_t dash = middle.find('-');
    if (dash == 0 || dash == std::string::npos || dash + 1 == middle.size() ||
        middle.find_first_not_of("0123456789-") != std::string::npos ||
        middle.find('-', dash + 1) != std::string::npos) {
      continue;
    }
    const long pid = std::strtol(middle.substr(0, dash).c_str(), nullptr, 10);
    if (pid <= 0 || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive, or unknown
    std::error_code age_error;
    const auto written = fs::last_write_time(it->path(), age_error);
    if (age_error || fs::file_time_type::clock::now() - written < idle) continue;
    std::error_code ignored;
    fs::remove(it->path(), ignored);
  }
}

}  // namespace hisvid::io
