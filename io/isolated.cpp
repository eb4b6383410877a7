#include "io/isolated.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "engine/error.h"

namespace hisvid::io {

int isolated_read_seconds(int64_t bytes) {
  return kIsolatedReadSeconds + static_cast<int>(std::min<int64_t>(bytes / kIsolatedBytesPerSecond, 3600));
}

void probe_in_child(const std::string& what, const std::function<void()>& work, int timeout_seconds) {
  const pid_t child = ::fork();
  if (child < 0) return;  // no process to spare: the caller's read runs unguarded, as before
  if (child == 0) {
    // The child only reads: no exit handlers, no flushing of the parent's buffers. What a crash
    // inside the library prints (glibc's "malloc(): memory corruption", HDF5's error stack) would
    // reach the user beside the parent's one message: the child's stderr goes nowhere.
    const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0) ::dup2(null, STDERR_FILENO);
    int status = 0;
    try {
      work();
    } catch (...) {
      status = 1;
    }
    ::_exit(status);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  int status = 0;
  for (auto pause = std::chrono::microseconds(200);;
       pause = std::min(pause * 2, std::chrono::microseconds(50000))) {
    const pid_t done = ::waitpid(child, &status, WNOHANG);
    if (done == child) break;
    if (done < 0 && errno != EINTR) return;  // lost the child (reaped elsewhere): nothing to report
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      fail("{}: reading it did not finish within {} s: the file is damaged", what, timeout_seconds);
    }
    std::this_thread::sleep_for(pause);
  }
  if (WIFSIGNALED(status)) {
    fail("{}: the file is damaged: reading it crashed the HDF5 library ({})", what,
         ::strsignal(WTERMSIG(status)));
  }
}

}  // namespace hisvid::io
