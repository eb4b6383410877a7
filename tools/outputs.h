// tools/outputs.h — what the CLI may write. hisvid never replaces one of its own inputs, never
// replaces an existing file unless asked (--overwrite), and never lets two runs write one run
// directory.
#pragma once

#include <string>
#include <vector>

namespace hisvid::tools {

// Fails, naming `option` and the file, when `output` is one of `inputs` (through any path or
// link: never allowed), is a directory or other non-file, or exists while `overwrite` is false.
void require_new_output(const std::string& output, const std::vector<std::string>& inputs, bool overwrite,
                        const std::string& option);

// The files a training run writes into its directory.
const std::vector<std::string>& run_files();

// A run directory held for the life of the object: created when missing, locked (flock on
// <dir>/.hisvid-lock, released by the kernel when the process ends however it ends) so that a
// second run on it fails at once, and cleared of the temporary files a killed run left
// (<file>.tmp-<pid>-<n>... of processes no longer running).
class RunDirectory {
 public:
  // fresh: the directory must not hold a run (run_files()) unless `overwrite`, in which case
  // those files are removed first; !fresh: continuing the run it holds (--resume).
  RunDirectory(const std::string& path, bool fresh, bool overwrite);
  ~RunDirectory();
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;

 private:
  int lock_fd_ = -1;
};

}  // namespace hisvid::tools
