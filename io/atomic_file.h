// io/atomic_file.h — writing a file so that it appears whole or not at all.
//
// fill(temp) writes the content to a temporary file in the target's directory, named
// `<path>.tmp-<pid>-<n><extension of path>` so that writers choosing a format by extension
// (cv::imwrite, cv::VideoWriter) still see the right one. The temporary file is then fsynced,
// renamed over the target, and the directory synced (best effort). If fill or any step throws,
// the temporary file is removed and the exception propagates: the target is never touched, so
// a crash, a full disk or Ctrl-C leaves the previous file as it was. A path that is a symbolic link
// is written through: the file it leads to is replaced, and the link stays. A file replaced keeps
// its permission bits (and owner, when run as root). The temporary files of the same target that
// a killed process left are removed first (remove_stale_temporaries).
#pragma once

#include <chrono>
#include <functional>
#include <string>

namespace hisvid::io {

void write_atomically(const std::string& path, const std::function<void(const std::string& temp)>& fill);

// Marks `path` as a file the command found absent and was not asked to replace (no --overwrite):
// write_atomically then puts it in place only if it is still absent, so that a file another
// process made there meanwhile (a second command writing the same output) is kept, and the
// write fails saying so.
void expect_new_file(const std::string& path);

// Removes the temporary files that write_atomically is writing at this moment: for a handler of
// SIGINT/SIGTERM/SIGHUP that ends the process (async-signal-safe: no allocation, no lock).
void remove_temporaries_now() noexcept;

// write_atomically of `bytes`, with every write checked (the system's reason, such as "No space
// left on device", in the error).
void write_file_atomically(const std::string& path, const std::string& bytes);

// Makes renames in `directory` ("" for the working directory) durable: fsync of the directory,
// best effort (a failure only weakens the guarantee after a power loss).
void sync_directory(const std::string& directory);

// Removes the temporary files of `path` (`<path>.tmp-<pid>-<n><extension>`, and libzip's own
// `<that>.XXXXXX` from a .keras archive being written) that write_atomically
// left behind in a process that no longer runs on this machine, and that nothing has written for
// at least `idle` (a writer on another machine sharing the directory keeps its file fresh). Other
// files are never touched.
void remove_stale_temporaries(const std::string& path, std::chrono::seconds idle = std::chrono::seconds(0));

// The target of `path` when it is a symbolic link that leads nowhere, else "".
std::string broken_link_target(const std::string& path);

// Why `path`, which does not exist, cannot be read: "no such file", or for a symbolic link whose
// target is gone, "a symbolic link to <target>, which does not exist".
std::string missing_reason(const std::string& path, const std::string& what = "file");

// The extension of `path` in lower case (".avi" for OUT.AVI), "" when it has none.
std::string lowercase_extension(const std::string& path);

}  // namespace hisvid::io
