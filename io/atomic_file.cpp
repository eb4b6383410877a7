#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

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

// Makes the rename itself durable. Best effort: by now the new file is in place, and a failure
// here only weakens the guarantee after a power loss.
void sync_directory(const std::filesystem::path& directory) {
  const int fd = ::open(directory.empty() ? "." : directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

void write_atomically(const std::string& path, const std::function<void(const std::string& temp)>& fill) {
  static std::atomic<unsigned> counter{0};
  const std::string temp = fmt::format("{}.tmp-{}-{}{}", path, ::getpid(), counter++,
                                       std::filesystem::path(path).extension().string());
  try {
    fill(temp);
    sync_file(temp);
    if (std::rename(temp.c_str(), path.c_str()) != 0) {
      fail("renaming {} over it failed: {}", temp, std::strerror(errno));
    }
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    throw;
  }
  sync_directory(std::filesystem::path(path).parent_path());
}

}  // namespace hisvid::io
