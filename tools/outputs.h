// tools/outputs.h — what the CLI may write. hisvid never replaces one of its own inputs, never
// replaces an existing file unless asked (--overwrite), and never lets two runs write one run
// directory.
#pragma once

#include <string>
#include <vector>

namespace hisvid::tools {

// Fails, naming `option` and the file, when `output` is one of `inputs` (through any path or
// link: never allowed), is a directory or other non-file, exists while `overwrite` is false, or
// cannot be made because its directory does not exist (require_output_directory).
void require_new_output(const std::string& output, const std::vector<std::string>& inputs, bool overwrite,
                        const std::string& option);

// Fails, naming `option` and the file, unless the directory `output` goes into exists (checked
// before any work, so that a command does not compute for minutes and then fail to write).
void require_output_directory(const std::string& output, const std::string& option);
// require_output_directory, and fails too when that directory is a training run's in progress
// or `output` exists and is not a regular file (a directory, a device such as /dev/null, a FIFO).
void require_writable_output(const std::string& output, const std::string& option);

// Fails, naming `option` and both folders, when the folder `output` is the video folder
// `data_root` or inside it (by path, links resolved): a run or reports there would become part
// of the dataset. Nothing is checked where either is empty.
void require_outside_data(const std::string& output, const std::string& data_root, const std::string& option);

// The files a training run writes into its directory.
const std::vector<std::string>& run_files();

// The files `hisvid evaluate --out DIR` writes: report.txt, report.json, predictions.csv and
// confusion.png.
const std::vector<std::string>& report_files();

// Fails, naming --out, unless `dir` can take report_files(): not a file, not the directory of a
// run in progress (its lock held), none of the reports one of `inputs`, and none existing while
// `overwrite` is false. Called before any work, so that a refusal costs nothing.
void require_new_reports(const std::string& dir, const std::vector<std::string>& inputs, bool overwrite);

// Puts back the files of an earlier run that a run killed between setting them aside and saving
// its first epoch left in <dir>/.hisvid-earlier/ (as RunDirectory does when it takes the
// directory), for --resume, which reads the run's last.h5 before that; true when it did. Fails
// when another run holds the directory.
bool restore_set_aside_run(const std::string& dir);

// A run directory held for the life of the object: created when missing (and removed again, with
// the parents made for it, when the object ends and it holds nothing but the lock), locked (flock
// on <dir>/.hisvid-lock, released by the kernel when the process ends however it ends) so that a
// second run on it fails at once, and cleared of the temporary files a killed run left
// (<file>.tmp-<pid>-<n>... of processes no longer running).
class RunDirectory {
 public:
  // fresh: the directory must not hold a run (run_files()) unless `overwrite`; !fresh: continuing
  // the run it holds (--resume). An earlier run's files stay as they are until the new run's
  // first save: set_aside_earlier_run(), just before it, moves them into <dir>/.hisvid-earlier/,
  // and drop_earlier_run(), once that epoch's files are all saved, deletes them. A command that
  // fails before (a typo, bad data, Ctrl-C or a NaN in the first epoch) leaves the earlier run
  // as it was, and so does one that fails in between (a full disk: this object's end; a kill:
  // the next run on the directory), which removes the half-saved files and moves the earlier
  // ones back. `inputs` are the files the command reads (--weights, --cache): an earlier run's
  // file among them is refused, overwrite or not, since the new run would replace it.
  RunDirectory(const std::string& path, bool fresh, bool overwrite,
               const std::vector<std::string>& inputs = {});
  ~RunDirectory();
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;

  // Whether the directory still holds an earlier run that this one will replace.
  bool holds_earlier_run() const { return !earlier_.empty(); }
  // Whether the directory held an earlier run set aside by a run that was killed before its first
  // epoch was saved, now moved back.
  bool restored_earlier_run() const { return restored_; }
  // Moves the earlier run's files aside (the first call; later ones do nothing).
  void set_aside_earlier_run();
  // Deletes the files set aside (the first call after set_aside_earlier_run).
  void drop_earlier_run();

 private:
  // Moves files set aside back, after removing the run files in their place; false when none were.
  bool restore_earlier_run() noexcept;

  std::string path_;
  std::vector<std::string> earlier_;  // the earlier run's files, while they are kept
  std::vector<std::string> created_;  // the directories it made, innermost first
  bool set_aside_ = false, restored_ = false;
  int lock_fd_ = -1;
};

}  // namespace hisvid::tools
