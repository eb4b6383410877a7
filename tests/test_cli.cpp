// End to end through the hisvid binary, as a user runs it: make a tiny dataset, train 2 epochs,
// evaluate, predict (with an annotated video), hit the clip cache on a second run; and every
// bad input: missing/empty roots, unusable class folders, too few classes, corrupt and non-video
// files, a corrupt cache, Ctrl-C during training and a disk that fills up while checkpointing.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>
#include <sstream>
#include <thread>

#include "io/hdf5.h"
#include "io/keras_h5.h"
#include "io/video.h"
#include "models/model_file.h"
#include "tests/test_support.h"

namespace {

namespace fs = std::filesystem;

struct Result {
  int status = -1;  // exit status, or 128 + signal
  std::string output;
  bool timed_out = false;
  long peak_rss_kib = 0;  // the process's largest resident set (getrusage's ru_maxrss)
};

// Runs `hisvid args...` in dir with stdout and stderr captured; limit_bytes > 0 caps the size of
// any file the process writes (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full disk).
class Process {
 public:
  // launcher: a command that runs hisvid (mpirun ...), found on PATH; empty: hisvid itself.
  Process(const fs::path& dir, const std::vector<std::string>& args, rlim_t limit_bytes = 0,
          const std::vector<std::string>& launcher = {})
      : log_(dir / ("hisvid-" + std::to_string(counter_++) + ".log")) {
    pid_ = fork();
    if (pid_ == 0) {
      if (chdir(dir.c_str()) != 0) _exit(126);
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      if (limit_bytes > 0) {
        signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of death, like ENOSPC
        const rlimit limit{limit_bytes, limit_bytes};
        setrlimit(RLIMIT_FSIZE, &limit);
      }
      std::vector<std::string> copy = launcher;
      copy.push_back(HISVID_BINARY);
      copy.insert(copy.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (std::string& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      execvp(argv[0], argv.data());
      _exit(127);
    }
  }
  void interrupt() const { kill(pid_, SIGINT); }
  // SIGTERM, and again 50 ms later (after the first was handled: two pending at once would merge).
  void terminate_twice() const {
    kill(pid_, SIGTERM);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    kill(pid_, SIGTERM);
  }
  const fs::path& log() const { return log_; }
  // Waits for the process; past `limit` it is killed and the result says so (status 137, and
  // timed_out), so that a test of a hang fails instead of hanging.
  Result wait(std::chrono::seconds limit = std::chrono::seconds(600)) {
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    bool timed_out = false;
    rusage usage{};
    while (wait4(pid_, &status, WNOHANG, &usage) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        wait4(pid_, &status, 0, &usage);
        timed_out = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    Result r;
    r.timed_out = timed_out;
    r.peak_rss_kib = usage.ru_maxrss;
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::ifstream in(log_);
    std::stringstream text;
    text << in.rdbuf();
    r.output = text.str();
    return r;
  }

 private:
  static inline int counter_ = 0;
  fs::path log_;
  pid_t pid_ = -1;
};

Result run(const fs::path& dir, const std::vector<std::string>& args, rlim_t limit_bytes = 0) {
  return Process(dir, args, limit_bytes).wait();
}

// The first six fields of every epoch row of a run's history.csv (epoch, loss, accuracy,
// val_loss, val_accuracy, learning_rate): all but the timings, which differ from run to run.
std::vector<std::vector<std::string>> history_without_timings(const fs::path& run_dir) {
  std::ifstream in(run_dir / "history.csv");
  std::vector<std::vector<std::string>> rows;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::stringstream cells(line);
    for (std::string cell; fields.size() < 6 && std::getline(cells, cell, ',');) fields.push_back(cell);
    rows.push_back(std::move(fields));
  }
  return rows;
}

// A run of bad input: it must end (within `limit`) with a message and exit status 1, never a
// crash (a signal), a hang or a success.
void expect_refused(const fs::path& dir, const std::vector<std::string>& args,
                    const std::vector<std::string>& fragments,
                    std::chrono::seconds limit = std::chrono::seconds(60)) {
  const Result r = Process(dir, args).wait(limit);
  std::string command;
  for (const std::string& a : args) command += " " + a;
  EXPECT_FALSE(r.timed_out) << "hisvid" << command << " did not end within " << limit.count() << " s";
  EXPECT_EQ(r.status, 1) << "hisvid" << command << ":\n" << r.output;
  EXPECT_TRUE(r.output.find("hisvid: error: ") != std::string::npos) << r.output;
  for (const std::string& f : fragments) {
    EXPECT_TRUE(r.output.find(f) != std::string::npos) << "'" << f << "' missing from:\n" << r.output;
  }
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Polls `done` every `poll` until it holds or `limit` has passed; whether it held (a process in
// the background reaching a point: a file appearing, a line in its log).
template <typename Done>
bool wait_until(const Done& done, std::chrono::seconds limit, std::chrono::milliseconds poll) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(poll);
  return done();
}

std::string file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// expect_refused, and the file `kept` (under dir) holds the same bytes after the refusal.
void expect_refused_keeping(const fs::path& dir, const std::vector<std::string>& args,
                            const std::vector<std::string>& fragments, const fs::path& kept) {
  const std::string before = file_bytes(dir / kept);
  expect_refused(dir, args, fragments);
  EXPECT_EQ(file_bytes(dir / kept), before) << kept << " was changed by a refused command";
}

// A temporary directory holding a small generated dataset of 4 classes (two time-reversed pairs).
class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("hisvid_cli_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const Result made = run(dir_, {"make-dataset", "--out", "data", "--clips-per-class", "5", "--frames",
                                   "24", "--size", "64", "--classes", "MoveLeft,MoveRight,Grow,Shrink"});
    ASSERT_EQ(made.status, 0) << made.output;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  // The arguments of a training of lrcn into `out` long enough to be interrupted (200 epochs).
  static std::vector<std::string> long_training(const std::string& out) {
    return {"train", "--model", "lrcn",    "--data",   "data",       "--epochs", "200",
            "--out", out,       "--cache", "clips.h5", "--patience", "-1"};
  }

  // Trains lrcn for `epochs` on the dataset (no early stopping) into out.
  static Result train(const std::string& out, int epochs, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {
        "train", "--model", "lrcn",    "--data",   "data",       "--epochs", std::to_string(epochs),
        "--out", out,       "--cache", "clips.h5", "--patience", "-1"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run(dir_, args);
  }

  static inline fs::path dir_;
};

TEST_F(Cli, TrainEvaluatePredictAndTheCache) {
  const Result first = train("run", 2);
  ASSERT_EQ(first.status, 0) << first.output;
  EXPECT_TRUE(contains(first.output, "Epoch 2/2")) << first.output;
  EXPECT_TRUE(contains(first.output, "ms/step - loss:")) << first.output;  // the Keras-style epoch line
  for (const char* file : {"best.h5", "last.h5", "model.h5", "history.csv", "report.txt", "report.json",
                           "confusion.png", "curves.png"}) {
    EXPECT_TRUE(fs::exists(dir_ / "run" / file)) << file;
  }
  std::ifstream history(dir_ / "run/history.csv");
  std::string line;
  int lines = 0;
  while (std::getline(history, line)) ++lines;
  EXPECT_EQ(lines, 3);  // header + 2 epochs

  // The second run reads the clip cache instead of decoding.
  const Result second = train("run2", 1);
  ASSERT_EQ(second.status, 0) << second.output;
  EXPECT_TRUE(contains(second.output, "read from the clip cache")) << second.output;

  const Result evaluated =
      run(dir_, {"evaluate", "--weights", "run/model.h5", "--split", "test", "--out", "eval"});
  ASSERT_EQ(evaluated.status, 0) << evaluated.output;
  EXPECT_TRUE(contains(evaluated.output, "weighted avg")) << evaluated.output;
  EXPECT_TRUE(fs::exists(dir_ / "eval/confusion.png"));

  const Result all = run(dir_, {"evaluate", "--weights", "run/model.h5", "--data", "data"});
  ASSERT_EQ(all.status, 0) << all.output;
  EXPECT_TRUE(contains(all.output, "20\n")) << all.output;  // support of all 20 clips

  const std::string video = "data/Grow/v_Grow_g01_c01.avi";
  const Result one = run(dir_, {"predict", "--weights", "run/model.h5", video});
  ASSERT_EQ(one.status, 0) << one.output;
  EXPECT_TRUE(contains(one.output, "  3. ")) << one.output;  // top-3 classes

  const Result folder = run(dir_, {"predict", "--weights", "run/model.h5", "data/Shrink", "--top-k", "2"});
  ASSERT_EQ(folder.status, 0) << folder.output;
  EXPECT_TRUE(contains(folder.output, "video,class_1,probability_1,class_2,probability_2")) << folder.output;
  EXPECT_TRUE(contains(folder.output, "v_Shrink_g02_c01.avi,")) << folder.output;

  const Result annotated =
      run(dir_, {"predict", "--weights", "run/model.h5", video, "--rolling", "3", "--out", "annotated.avi"});
  ASSERT_EQ(annotated.status, 0) << annotated.output;
  cv::VideoCapture capture((dir_ / "annotated.avi").string());
  ASSERT_TRUE(capture.isOpened());
  int frames = 0;
  for (cv::Mat frame; capture.read(frame);) ++frames;
  EXPECT_EQ(frames, 24);
  EXPECT_FALSE(contains(annotated.output, "--rolling 3:")) << annotated.output;  // 5 windows of 20 frames
  // A rolling mean longer than the video's windows never fills: said, not silently shortened.
  const Result long_mean = run(dir_, {"predict", "--weights", "run/model.h5", video, "--rolling", "9"});
  ASSERT_EQ(long_mean.status, 0) << long_mean.output;
  EXPECT_TRUE(contains(long_mean.output, "--rolling 9: " + video + " has 5 windows of 20 frames"))
      << long_mean.output;
}

TEST_F(Cli, MissingEmptyAndUnusableData) {
  // Named as --data, before --out is made.
  expect_refused(dir_, {"train", "--data", "no_such_dir", "--out", "never_made", "--epochs", "1"},
                 {"--data no_such_dir: dataset root does not exist"});
  EXPECT_FALSE(fs::exists(dir_ / "never_made"));

  fs::create_directories(dir_ / "empty");
  const Result empty = run(dir_, {"train", "--data", "empty", "--out", "x", "--epochs", "1"});
  EXPECT_EQ(empty.status, 1);
  EXPECT_TRUE(contains(empty.output, "empty")) << empty.output;

  // A class folder whose only "video" is text, beside a good class: named, with the reason.
  fs::create_directories(dir_ / "bad/Good");
  fs::create_directories(dir_ / "bad/Broken");
  fs::copy_file(dir_ / "data/Grow/v_Grow_g01_c01.avi", dir_ / "bad/Good/a.avi");
  std::ofstream(dir_ / "bad/Broken/notes.avi") << "not a video\n";
  const Result unusable =
      run(dir_, {"train", "--data", "bad", "--out", "x", "--epochs", "1", "--cache", "none"});
  EXPECT_EQ(unusable.status, 1);
  EXPECT_TRUE(contains(unusable.output, "Broken")) << unusable.output;

  const Result one_class =
      run(dir_, {"train", "--data", "data", "--classes", "Grow", "--out", "x", "--epochs", "1"});
  EXPECT_EQ(one_class.status, 1);
  EXPECT_TRUE(contains(one_class.output, "at least 2")) << one_class.output;
}

TEST_F(Cli, CorruptAndShortVideosAreSkippedAndNamed) {
  fs::create_directories(dir_ / "mixed");
  fs::copy(dir_ / "data", dir_ / "mixed", fs::copy_options::recursive);
  fs::remove(dir_ / "mixed/.hisvid-synthetic.json");
  std::ofstream(dir_ / "mixed/Grow/fake.avi") << "plain text with a video extension\n";
  {  // a real video cut to 1 KB
    std::ifstream in(dir_ / "data/Shrink/v_Shrink_g01_c01.avi", std::ios::binary);
    std::vector<char> head(1024);
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    std::ofstream(dir_ / "mixed/Shrink/truncated.avi", std::ios::binary).write(head.data(), 1024);
  }
  fs::create_symlink(dir_ / "no_such_video.avi", dir_ / "mixed/Grow/broken.avi");  // a dangling link
  const Result r =
      run(dir_, {"train", "--data", "mixed", "--epochs", "1", "--out", "mixed_run", "--cache", "none"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "skipped 3 files")) << r.output;
  EXPECT_TRUE(contains(r.output, "fake.avi")) << r.output;
  EXPECT_TRUE(contains(r.output, "truncated.avi")) << r.output;
  EXPECT_TRUE(contains(r.output, "broken.avi: is a symbolic link to")) << r.output;
  // predict: a bad video met in a folder is skipped; one named on the command line is an error
  // (status 1), after the others are classified.
  const Result folder = run(dir_, {"predict", "--weights", "mixed_run/model.h5", "mixed/Grow"});
  EXPECT_EQ(folder.status, 0) << folder.output;
  EXPECT_TRUE(contains(folder.output, "skipped: ")) << folder.output;
  const Result named = run(dir_, {"predict", "--weights", "mixed_run/model.h5",
                                  "data/Grow/v_Grow_g01_c01.avi", "mixed/Grow/fake.avi"});
  EXPECT_EQ(named.status, 1) << named.output;
  EXPECT_TRUE(contains(named.output, "v_Grow_g01_c01.avi\n  1. ")) << named.output;  // classified
  EXPECT_TRUE(contains(named.output, "1 of the videos named could not be read (mixed/Grow/fake.avi)"))
      << named.output;
}

// A file at --cache that is not a clip cache is never replaced; a damaged cache of hisvid's own
// (its marker intact) is rebuilt with a message.
TEST_F(Cli, CacheNeverReplacesAFileItDidNotWrite) {
  std::ofstream(dir_ / "notes.h5") << "definitely not HDF5";
  expect_refused(dir_,
                 {"train", "--data", "data", "--epochs", "1", "--out", "cache_run", "--cache", "notes.h5"},
                 {"notes.h5", "not a hisvid clip cache"});
  std::ifstream notes(dir_ / "notes.h5");
  std::string text;
  std::getline(notes, text);
  EXPECT_EQ(text, "definitely not HDF5");

  ASSERT_EQ(train("cache_run", 1).status, 0);  // writes clips.h5
  expect_refused_keeping(
      dir_,
      {"train", "--data", "data", "--epochs", "1", "--out", "cache_run2", "--cache", "cache_run/model.h5"},
      {"model.h5", "not a hisvid clip cache"}, "cache_run/model.h5");

  // evaluate --split test reads the run's own cache, not a new one in the default place.
  const Result held_out = run(dir_, {"evaluate", "--weights", "cache_run/model.h5", "--split", "test"});
  ASSERT_EQ(held_out.status, 0) << held_out.output;
  EXPECT_TRUE(
      contains(held_out.output, "(read from the clip cache " + fs::absolute(dir_ / "clips.h5").string()))
      << held_out.output;

  // Damage inside the clips shows only when a streamed batch reads them: named as the cache's,
  // with the way out.
  fs::copy_file(dir_ / "clips.h5", dir_ / "damaged.h5");
  {
    std::fstream f(dir_ / "damaged.h5", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(dir_ / "damaged.h5") / 2));
    f.write(std::string(16, '\xff').data(), 16);
  }
  expect_refused(dir_,
                 {"train", "--data", "data", "--epochs", "1", "--out", "damaged_run", "--cache", "damaged.h5",
                  "--stream"},
                 {"the clip cache damaged.h5 is damaged", "delete the file"});

  // A hisvid cache cut in half keeps its marker: rebuilt.
  fs::resize_file(dir_ / "clips.h5", fs::file_size(dir_ / "clips.h5") / 2);
  const Result r =
      run(dir_, {"train", "--data", "data", "--epochs", "1", "--out", "cache_run3", "--cache", "clips.h5"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "rebuilt")) << r.output;
}

TEST_F(Cli, CtrlCKeepsTheLastCompleteCheckpointAndResumes) {
  Process training(dir_, long_training("interrupted"));
  const fs::path last = dir_ / "interrupted/last.h5";
  ASSERT_TRUE(
      wait_until([&] { return fs::exists(last); }, std::chrono::minutes(3), std::chrono::milliseconds(100)))
      << "no checkpoint appeared";
  training.interrupt();
  const Result r = training.wait();
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.output, "interrupted")) << r.output;
  EXPECT_TRUE(contains(r.output, "--resume")) << r.output;
  const hisvid::models::LoadedModel saved = hisvid::models::load_model(last.string());
  const int epochs_done = saved.extras.training_state["epoch"].get<int>();
  EXPECT_GE(epochs_done, 1);

  const Result resumed =
      run(dir_, {"train", "--resume", "interrupted", "--epochs", std::to_string(epochs_done + 1)});
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "resuming")) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, fmt::format("Epoch {}/{}", epochs_done + 1, epochs_done + 1)))
      << resumed.output;
}

TEST_F(Cli, DiskFullWhileCheckpointingKeepsThePreviousCheckpoint) {
  ASSERT_EQ(train("full", 1).status, 0);
  const fs::path last = dir_ / "full/last.h5";
  std::ifstream in(last, std::ios::binary);
  const std::string before((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Every file may grow to half a checkpoint: the next checkpoint cannot be written.
  const Result r = run(dir_, {"train", "--resume", "full", "--epochs", "2"}, before.size() / 2);
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.output, "last.h5") || contains(r.output, "best.h5")) << r.output;
  // Said plainly, not in HDF5's buffers and offsets.
  EXPECT_TRUE(contains(r.output, "not written: the file size limit was reached")) << r.output;
  EXPECT_TRUE(contains(r.output, "full/last.h5 holds epoch 1")) << r.output;  // what is saved, and
  EXPECT_TRUE(contains(r.output, "hisvid train --resume full")) << r.output;  // how to go on
  EXPECT_FALSE(contains(r.output, "bytes actually written")) << r.output;
  std::ifstream after_in(last, std::ios::binary);
  const std::string after((std::istreambuf_iterator<char>(after_in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(after, before);  // untouched, still the epoch-1 checkpoint
  EXPECT_EQ(hisvid::models::load_model(last.string()).extras.training_state["epoch"].get<int>(), 1);
}

// A full disk (a file-size limit here, which fails a write as a full disk does) in the middle of
// a command never costs what was saved before it, and never passes a file cut short for a whole
// one: the run directory an --overwrite run replaces, best.h5 of a run stopped before it was
// written, annotated videos, PNG reports, generated clips, standard output.
TEST_F(Cli, AFullDiskCostsNothingSaved) {
  ASSERT_EQ(train("earlier", 1).status, 0);
  const fs::path run_dir = dir_ / "earlier";
  const auto files_of = [&] {
    std::map<std::string, std::string> files;
    for (const auto& entry : fs::directory_iterator(run_dir)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_regular_file() && name != ".hisvid-lock") files[name] = file_bytes(entry.path());
    }
    return files;
  };
  const std::map<std::string, std::string> before = files_of();
  ASSERT_TRUE(before.count("last.h5") && before.count("best.h5") && before.count("report.txt"));
  const rlim_t half_checkpoint = before.at("last.h5").size() / 2;

  // --overwrite whose first epoch cannot be saved: the earlier run is whole again.
  const Result replaced = run(dir_,
                              {"train", "--model", "lrcn", "--data", "data", "--epochs", "1", "--out",
                               "earlier", "--cache", "clips.h5", "--patience", "-1", "--overwrite"},
                              half_checkpoint);
  EXPECT_EQ(replaced.status, 1) << replaced.output;
  EXPECT_TRUE(contains(replaced.output, "not written")) << replaced.output;
  EXPECT_TRUE(files_of() == before);  // (not EXPECT_EQ: it would print every byte of a difference)
  EXPECT_FALSE(fs::exists(run_dir / ".hisvid-earlier"));

  // Killed between setting the earlier run aside and saving its first epoch (as a run leaves
  // it): the next run on the directory puts the earlier run back.
  fs::create_directory(run_dir / ".hisvid-earlier");
  for (const auto& [file, bytes] : before) fs::rename(run_dir / file, run_dir / ".hisvid-earlier" / file);
  std::ofstream(run_dir / "last.h5") << "a checkpoint of the killed run";
  const Result back = run(dir_, {"train", "--resume", "earlier", "--epochs", "1"});
  EXPECT_EQ(back.status, 0) << back.output;
  EXPECT_TRUE(contains(back.output, "back in place")) << back.output;
  EXPECT_TRUE(file_bytes(run_dir / "last.h5") == before.at("last.h5"));
  EXPECT_FALSE(fs::exists(run_dir / ".hisvid-earlier"));
  // Killed while setting it aside (some files moved, the others still in place, nothing new
  // written): every file back, none removed.
  fs::create_directory(run_dir / ".hisvid-earlier.partial");
  fs::rename(run_dir / "last.h5", run_dir / ".hisvid-earlier.partial" / "last.h5");
  const Result half_aside = run(dir_, {"train", "--resume", "earlier", "--epochs", "1"});
  EXPECT_EQ(half_aside.status, 0) << half_aside.output;
  EXPECT_TRUE(file_bytes(run_dir / "last.h5") == before.at("last.h5"));
  EXPECT_TRUE(fs::exists(run_dir / "best.h5"));
  EXPECT_FALSE(fs::exists(run_dir / ".hisvid-earlier.partial"));
  // Killed while dropping it (the new run's first epoch saved): the new run stays.
  fs::create_directory(run_dir / ".hisvid-earlier.drop");
  std::ofstream(run_dir / ".hisvid-earlier.drop" / "last.h5") << "the replaced run's";
  const Result dropped = run(dir_, {"train", "--resume", "earlier", "--epochs", "1"});
  EXPECT_EQ(dropped.status, 0) << dropped.output;
  EXPECT_TRUE(file_bytes(run_dir / "last.h5") == before.at("last.h5"));
  EXPECT_FALSE(fs::exists(run_dir / ".hisvid-earlier.drop"));

  // Stopped between last.h5, which records its epoch as the best, and best.h5: --resume saves
  // best.h5 again from last.h5 (it failed with "no such file", or restored an older epoch).
  fs::remove(run_dir / "best.h5");
  const Result mended = run(dir_, {"train", "--resume", "earlier", "--epochs", "1"});
  EXPECT_EQ(mended.status, 0) << mended.output;
  ASSERT_TRUE(fs::exists(run_dir / "best.h5"));
  EXPECT_EQ(
      hisvid::models::load_model((run_dir / "best.h5").string()).extras.training_state["epoch"].get<int>(),
      1);

  // An annotated video and a PNG report that would be cut short: refused, the earlier kept.
  const std::string video = "data/Grow/v_Grow_g01_c01.avi";
  ASSERT_EQ(run(dir_, {"predict", "--weights", "earlier/model.h5", video, "--out", "kept.avi"}).status, 0);
  const std::string video_bytes = file_bytes(dir_ / "kept.avi");
  const Result cut_video =
      run(dir_, {"predict", "--weights", "earlier/model.h5", video, "--out", "kept.avi", "--overwrite"},
          video_bytes.size() / 2);
  EXPECT_EQ(cut_video.status, 1) << cut_video.output;
  EXPECT_TRUE(contains(cut_video.output, "kept.avi: not written")) << cut_video.output;
  EXPECT_TRUE(file_bytes(dir_ / "kept.avi") == video_bytes);
  const std::vector<std::string> evaluate = {"evaluate", "--weights", "earlier/model.h5",
                                             "--data",   "data",      "--cache",
                                             "clips.h5", "--out",     "png_reports"};
  ASSERT_EQ(run(dir_, evaluate).status, 0);
  const std::string png = file_bytes(dir_ / "png_reports/confusion.png");
  for (const char* text : {"report.txt", "report.json", "predictions.csv"})
    ASSERT_LT(2 * file_bytes(dir_ / "png_reports" / text).size(), png.size()) << text;
  std::vector<std::string> again = evaluate;
  again.push_back("--overwrite");
  const Result cut_png = run(dir_, again, png.size() / 2);
  EXPECT_EQ(cut_png.status, 1) << cut_png.output;
  EXPECT_TRUE(contains(cut_png.output, "confusion.png: not written")) << cut_png.output;
  EXPECT_TRUE(file_bytes(dir_ / "png_reports/confusion.png") == png);

  // Generated clips: none cut short under its own name; run again, the dataset is whole.
  const std::vector<std::string> make = {
      "make-dataset", "--out",  "cut", "--clips-per-class", "2",          "--frames",
      "24",           "--size", "64",  "--classes",         "Grow,Shrink"};
  const Result cut_clips = run(dir_, make, file_bytes(dir_ / video).size() / 2);
  EXPECT_EQ(cut_clips.status, 1) << cut_clips.output;
  EXPECT_TRUE(contains(cut_clips.output, "not written")) << cut_clips.output;
  const auto clips_in = [&] {
    std::vector<int64_t> frames;
    for (const auto& entry : fs::recursive_directory_iterator(dir_ / "cut")) {
      if (entry.path().extension() == ".avi")
        frames.push_back(hisvid::io::count_readable_frames(entry.path().string()));
    }
    return frames;
  };
  for (const int64_t frames : clips_in()) EXPECT_EQ(frames, 24);
  ASSERT_EQ(run(dir_, make).status, 0);
  EXPECT_EQ(clips_in(), std::vector<int64_t>(4, 24));

  // Standard output that cannot be written is an error, not a silent success.
  EXPECT_EQ(run(dir_, {"summary", "--model", "lrcn"}, 64).status, 1);
}

TEST_F(Cli, UsageErrorsAndSummary) {
  const Result none = run(dir_, {});
  EXPECT_NE(none.status, 0);
  const Result summary = run(dir_, {"summary", "--model", "convlstm", "--classes", "4"});
  ASSERT_EQ(summary.status, 0) << summary.output;
  EXPECT_TRUE(contains(summary.output, "Total params: 44,524")) << summary.output;
  const Result bad_model = run(dir_, {"summary", "--model", "lrcnn"});
  EXPECT_EQ(bad_model.status, 1);
  EXPECT_TRUE(contains(bad_model.output, "hisvid: error: ")) << bad_model.output;
  // A model file where a spec goes: the option that takes it is named.
  ASSERT_EQ(train("summarised", 1).status, 0);
  expect_refused(dir_, {"summary", "--model", "summarised/model.h5"}, {"a model file", "--weights"});
  // bench names a bad --model before it prints anything.
  const Result bad_bench = run(dir_, {"bench", "--model", "lrcnn", "--device", "cpu"});
  EXPECT_EQ(bad_bench.status, 1) << bad_bench.output;
  EXPECT_EQ(bad_bench.output.rfind("hisvid: error: --model 'lrcnn'", 0), 0u) << bad_bench.output;
  // A binary classifier's spec (one sigmoid unit) benchmarks with its 2 classes and its loss.
  std::ofstream(dir_ / "binary.json")
      << R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": )"
      << R"({"batch_input_shape": [null, 4, 6]}}, {"class_name": "LSTM", "config": {"units": 3}}, )"
      << R"({"class_name": "Dense", "config": {"units": 1, "activation": "sigmoid"}}]}})";
  const Result binary = run(dir_, {"bench", "--model", "binary.json", "--device", "cpu", "--steps", "1"});
  EXPECT_EQ(binary.status, 0) << binary.output;
  EXPECT_TRUE(contains(binary.output, "binary.json on cpu, 2 classes")) << binary.output;
  // A folder no demo made, though laid out like one: refused, its files kept.
  fs::create_directories(dir_ / "foreign_demo" / "data");
  std::ofstream(dir_ / "foreign_demo" / "data" / "notes.txt") << "mine\n";
  expect_refused_keeping(dir_, {"demo", "--out", "foreign_demo", "--device", "cpu"},
                         {"--out foreign_demo", "not a folder an earlier demo made", "no built-in dataset"},
                         "foreign_demo/data/notes.txt");
  // A demo's folder (marked) whose dataset folder holds someone else's files: refused in the
  // user's words.
  std::ofstream(dir_ / "foreign_demo" / ".hisvid-demo") << "\n";
  expect_refused_keeping(dir_, {"demo", "--out", "foreign_demo", "--device", "cpu"},
                         {"foreign_demo/data", "not a built-in dataset that hisvid"},
                         "foreign_demo/data/notes.txt");
  const Result foreign = run(dir_, {"demo", "--out", "foreign_demo", "--device", "cpu"});
  EXPECT_FALSE(contains(foreign.output, "make_synthetic_dataset")) << foreign.output;  // an internal name
}

// The demo starts only in a new or empty folder or in one a demo made, which it replaces: never in
// a folder of other files (a run's, a dataset), which it would overwrite.
TEST_F(Cli, DemoReplacesOnlyItsOwnFolder) {
  const std::vector<std::string> small = {"--lrcn-epochs",     "1", "--convlstm-epochs", "1",
                                          "--clips-per-class", "2", "--device",          "cpu"};
  const auto demo = [&](const std::string& out) {
    std::vector<std::string> args = {"demo", "--out", out};
    args.insert(args.end(), small.begin(), small.end());
    return args;
  };
  ASSERT_EQ(train("demo_run/lrcn", 1).status, 0);
  std::ofstream(dir_ / "demo_run" / "lrcn" / "report.txt") << "my notes\n";
  expect_refused_keeping(dir_, demo("demo_run"), {"--out demo_run", "not a folder an earlier demo made"},
                         "demo_run/lrcn/report.txt");
  EXPECT_TRUE(fs::exists(dir_ / "demo_run" / "lrcn" / "model.h5"));
  expect_refused_keeping(dir_, demo("data"), {"--out data", "MoveLeft"}, "data/.hisvid-synthetic.json");
  std::ofstream(dir_ / "a_file") << "x\n";
  expect_refused(dir_, demo("a_file"), {"--out a_file", "not a folder"});
  fs::create_directories(dir_ / "empty_demo");
  const Result first = run(dir_, demo("empty_demo"));
  ASSERT_EQ(first.status, 0) << first.output;
  EXPECT_TRUE(fs::exists(dir_ / "empty_demo" / ".hisvid-demo"));
  const Result again = run(dir_, demo("empty_demo"));
  EXPECT_EQ(again.status, 0) << again.output;
  EXPECT_TRUE(contains(again.output, "holds an earlier demo")) << again.output;
}

// A switch in the environment that is none of its values (0, 1, all) is an error naming it,
// not "on".
TEST_F(Cli, MisreadEnvironmentSwitchIsRefused) {
  ::setenv("HISVID_FUSE_CONV_POOL", "off", 1);
  const Result fused = run(dir_, {"summary", "--model", "lrcn", "--classes", "4"});
  ::unsetenv("HISVID_FUSE_CONV_POOL");
  EXPECT_EQ(fused.status, 1) << fused.output;
  EXPECT_TRUE(contains(fused.output, "HISVID_FUSE_CONV_POOL='off'")) << fused.output;
}

// Keras files of every version through the binary, as users with a model of their own run it:
// summary of each, a Keras 3 .keras file trained one more epoch (with its own Adam state), a
// binary (one sigmoid unit) model classifying, evaluated and trained.
// hisvid explain on a model hisvid trained and on the tutorial's Keras 2.8 files (LRCN and
// ConvLSTM): the explained video holds the model's 20 frames at the video's size, the grid PNG
// is written, every frame gets a row; and its misuses are refused by name.
TEST_F(Cli, ExplainWritesTheHeatmapVideoAndTheGrid) {
  const Result trained = train("explain_run", 1);
  ASSERT_EQ(trained.status, 0) << trained.output;
  const std::string video = "data/MoveLeft/v_MoveLeft_g01_c01.avi";
  const fs::path keras = fs::path(HISVID_FIXTURES_DIR) / "keras";
  std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"explain_run/model.h5", {"--class", "MoveRight"}}};
  if (fs::exists(keras)) {
    cases.push_back({(keras / "tutorial_lrcn_keras2.8.h5").string(), {}});
    cases.push_back({(keras / "tutorial_convlstm_keras2.8.h5").string(), {"--layer", "conv_lstm2d_1"}});
  }
  for (size_t c = 0; c < cases.size(); ++c) {
    const auto& [weights, extra] = cases[c];
    SCOPED_TRACE(weights);
    const std::string out = "explained" + std::to_string(c) + ".avi";
    std::vector<std::string> args = {"explain", "--weights", weights, video, "--out", out};
    args.insert(args.end(), extra.begin(), extra.end());
    const Result r = run(dir_, args);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_TRUE(contains(r.output, "Grad-CAM")) << r.output;
    EXPECT_TRUE(contains(r.output, "\n   19 ")) << r.output;  // the row of the last of 20 frames
    if (c == 0) {
      EXPECT_TRUE(contains(r.output, "explaining MoveRight")) << r.output;
    }
    cv::VideoCapture capture((dir_ / out).string());
    ASSERT_TRUE(capture.isOpened());
    int frames = 0;
    for (cv::Mat frame; capture.read(frame);) {
      EXPECT_EQ(frame.rows, 64);
      ++frames;
    }
    EXPECT_EQ(frames, 20);
    const cv::Mat grid = cv::imread((dir_ / fs::path(out).replace_extension(".png")).string());
    EXPECT_GT(grid.rows, 4 * 64);
  }
  expect_refused(dir_, {"explain", "--weights", "explain_run/model.h5", video, "--out", "explained0.avi"},
                 {"explained0.avi", "exists"});
  expect_refused(dir_, {"explain", "--weights", "explain_run/model.h5", video, "--out", "e.mp4"},
                 {"--out e.mp4", ".avi"});
  expect_refused(dir_,
                 {"explain", "--weights", "explain_run/model.h5", video, "--out", "e.avi", "--layer", "lstm"},
                 {"--layer lstm", "time_distributed_9"});
  expect_refused(dir_,
                 {"explain", "--weights", "explain_run/model.h5", video, "--out", "e.avi", "--class", "Jump"},
                 {"--class Jump", "MoveLeft"});
  expect_refused(dir_, {"explain", "--weights", "explain_run/model.h5", video, "--out", video},
                 {video, "input"});
  // An output whose directory does not exist is refused before any work, the video included.
  expect_refused(
      dir_,
      {"explain", "--weights", "explain_run/model.h5", video, "--out", "e.avi", "--grid", "nodir/e.png"},
      {"--grid nodir/e.png", "nodir does not exist"});
  expect_refused(dir_, {"predict", "--weights", "explain_run/model.h5", video, "--out", "nodir/p.avi"},
                 {"--out nodir/p.avi", "nodir does not exist"});
  EXPECT_FALSE(fs::exists(dir_ / "e.avi"));
}

// --stream: a dataset whose clips take 3.2 times the imposed bound trains and evaluates with the
// process growing by less than the bound over what the binary alone takes (its shared libraries,
// cuDNN's and cuBLAS's included: ~290 MiB on the dev machine), while the same run in memory grows
// by more than the whole dataset; both runs give the same history.
//
// The data: 640 clips of 20 x 112 x 112 x 3 (752,640 bytes each, 481 MB in all) from hard
// links to 8 generated videos. kStreamGrowthBound = 150 MiB: a streamed run holds one decoding
// block (kStreamBlockBytes, 32 MiB) and the decoders' frames while it builds the cache, then the
// reader's 2 batches ahead, the one read and the one in use (4 x 8 clips x 752,640 = 24 MiB of
// uint8) and the float32 batch (24 MiB) with the model's activations (~1 MiB); evaluation uses
// the same batch size. Measured on the dev machine, 2026-11-26: 81 MiB building the cache, 22 MiB
// streaming from it, 440 MiB in memory.
TEST_F(Cli, StreamedTrainingStaysUnderAMemoryBound) {
  constexpr long kStreamGrowthBoundKiB = 150 * 1024;
  constexpr int kCopies = 320;  // links per class to its 4 videos
  const Result made = run(dir_, {"make-dataset", "--out", "stream_src", "--clips-per-class", "4", "--frames",
                                 "24", "--size", "112", "--classes", "MoveLeft,MoveRight"});
  ASSERT_EQ(made.status, 0) << made.output;
  for (const char* name : {"MoveLeft", "MoveRight"}) {
    const fs::path folder = dir_ / "stream_data" / name;
    fs::create_directories(folder);
    std::vector<fs::path> videos;
    for (const auto& entry : fs::directory_iterator(dir_ / "stream_src" / name))
      videos.push_back(entry.path());
    std::sort(videos.begin(), videos.end());
    for (int i = 0; i < kCopies; ++i) {
      fs::create_hard_link(videos[static_cast<size_t>(i) % videos.size()],
                           folder / fmt::format("v_{}_{:04d}.avi", name, i));
    }
  }
  std::ofstream(dir_ / "stream_model.json") << R"([
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "MaxPooling2D", "config": {"pool_size": 8}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Conv2D", "config": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "MaxPooling2D", "config": {"pool_size": 2}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Flatten", "config": {}}}},
    {"class_name": "LSTM", "config": {"units": 8}},
    {"class_name": "Dense", "config": {"units": 2, "activation": "softmax"}}])";
  const long dataset_kib = 2L * kCopies * 20 * 112 * 112 * 3 / 1024;
  ASSERT_GE(dataset_kib, 3 * kStreamGrowthBoundKiB);

  const Result alone = run(dir_, {"summary", "--model", "lrcn"});
  ASSERT_EQ(alone.status, 0) << alone.output;
  const auto train = [&](const std::string& out, bool stream) {
    std::vector<std::string> args = {"train",
                                     "--model",
                                     "stream_model.json",
                                     "--data",
                                     "stream_data",
                                     "--frames",
                                     "20",
                                     "--size",
                                     "112",
                                     "--cache",
                                     "stream.h5",
                                     "--epochs",
                                     "1",
                                     "--batch-size",
                                     "8",
                                     "--eval-batch-size",
                                     "8",
                                     "--patience",
                                     "-1",
                                     "--out",
                                     out};
    if (stream) args.push_back("--stream");
    return run(dir_, args);
  };
  const Result streamed = train("stream_run", true);  // builds the cache block by block, then trains
  ASSERT_EQ(streamed.status, 0) << streamed.output;
  EXPECT_TRUE(contains(streamed.output, "640 clips of 2 classes")) << streamed.output;
  EXPECT_TRUE(contains(streamed.output, "streamed from the clip cache")) << streamed.output;
  const Result again = train("stream_run2", true);  // streams from the cache it finds
  ASSERT_EQ(again.status, 0) << again.output;
  const Result in_memory = train("memory_run", false);
  ASSERT_EQ(in_memory.status, 0) << in_memory.output;

  const long baseline = alone.peak_rss_kib;
  std::cout << "peak RSS (KiB): binary alone " << baseline << ", streamed (building the cache) "
            << streamed.peak_rss_kib << ", streamed " << again.peak_rss_kib << ", in memory "
            << in_memory.peak_rss_kib << "; dataset " << dataset_kib << "\n";
  EXPECT_LT(streamed.peak_rss_kib - baseline, kStreamGrowthBoundKiB);
  EXPECT_LT(again.peak_rss_kib - baseline, kStreamGrowthBoundKiB);
  // The bound means something: in memory the process grows by about the dataset (the 10% spared
  // covers library pages the baseline touched and training did not).
  EXPECT_GT(in_memory.peak_rss_kib - baseline, dataset_kib * 9 / 10);

  // The same training either way: every history column but the timings.
  ASSERT_EQ(history_without_timings(dir_ / "memory_run").size(), 1u);  // one epoch
  EXPECT_EQ(history_without_timings(dir_ / "stream_run"), history_without_timings(dir_ / "memory_run"));
  EXPECT_EQ(history_without_timings(dir_ / "stream_run2"), history_without_timings(dir_ / "memory_run"));
  expect_refused(dir_,
                 {"train", "--model", "stream_model.json", "--data", "stream_data", "--cache", "none",
                  "--stream", "--out", "refused_run"},
                 {"--cache none", "stream"});
}

#ifdef HISVID_TEST_MPI
// Two ranks of `mpirun --oversubscribe -np 2 hisvid train` against one process trained on the
// same global batch of 6 (3 clips per rank), with Adam, then resumed across ranks: the same
// history and the same weights, within kRanksTolerance.
//
// The runs differ only in the order of float32 sums: each rank's shard mean is scaled by 3/6
// and the two are added, where one process takes the mean of 6 at once (and the GEMMs reduce
// over other batch sizes). That perturbs each gradient by a few ulps (~1e-7 relative). Adam's
// step lr * m / (sqrt(v) + eps) moves by at most lr / eps = 1e4 times an absolute gradient error,
// and for the gradients here (|g| >= 1e-5 except a few) by about lr (1e-3) times their ~1e-7
// relative error: ~1e-10 per step, compounding over 6 steps through the recurrence. Weights are
// compared within 1e-5 absolute and the printed metrics (6 significant digits) within 1e-5
// relative: a wrong shard, a missed scale (2x the step) or an unsummed gradient miss by 1e-3 or
// more. Measured: at most 9e-8 on the weights (dev machine, 2026-11-26).
constexpr double kRanksTolerance = 1e-5;

TEST_F(Cli, TwoRanksTrainAsOneProcessOnTheGlobalBatch) {
  const Result made = run(dir_, {"make-dataset", "--out", "ranks_data", "--clips-per-class", "6", "--frames",
                                 "24", "--size", "32", "--classes", "MoveLeft,MoveRight,Grow"});
  ASSERT_EQ(made.status, 0) << made.output;
  std::ofstream(dir_ / "ranks_model.json") << R"([
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Conv2D", "config": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "MaxPooling2D", "config": {"pool_size": 4}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Flatten", "config": {}}}},
    {"class_name": "LSTM", "config": {"units": 8}},
    {"class_name": "Dense", "config": {"units": 3, "activation": "softmax"}}])";
  const std::vector<std::string> mpirun = {"mpirun", "--oversubscribe", "-np", "2"};
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);  // CI runs as root
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  const auto train = [&](const std::string& out, int epochs, bool ranks) {
    // Early stopping and a learning-rate schedule on the validation accuracy: decisions every rank
    // must take alike (the learning rate is in the compared history).
    const std::string options =
        "--model ranks_model.json --data ranks_data --frames 20 --size 32 --cache ranks.h5 "
        "--batch-size 6 --patience 2 --monitor val_accuracy --reduce-lr-factor 0.5 "
        "--reduce-lr-patience 0";
    std::vector<std::string> args = {"train", "--epochs", std::to_string(epochs), "--out", out};
    std::stringstream words(options);
    for (std::string word; words >> word;) args.push_back(word);
    return Process(dir_, args, 0, ranks ? mpirun : std::vector<std::string>{}).wait();
  };
  // The ranks build the clip cache together (each decodes half the files), and one process
  // then reads the cache they wrote.
  const Result two = train("two_ranks", 3, true);
  ASSERT_EQ(two.status, 0) << two.output;
  EXPECT_TRUE(contains(two.output, "built the clip cache ranks.h5 with 2 ranks")) << two.output;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir_)) {  // the parts are gone
    EXPECT_EQ(entry.path().filename().string().find("ranks.h5.part-"), std::string::npos) << entry.path();
  }
  const Result one = train("one_process", 3, false);
  ASSERT_EQ(one.status, 0) << one.output;
  EXPECT_TRUE(
      contains(one.output, "18 clips of 3 classes from ranks_data (read from the clip cache ranks.h5)"))
      << one.output;
  EXPECT_TRUE(contains(two.output, "data parallel: Open MPI")) << two.output;
  EXPECT_TRUE(contains(two.output, "2 ranks")) << two.output;
  // Rank 0 alone prints: one report, one epoch line per epoch.
  size_t epochs_printed = 0;
  for (size_t at = two.output.find("Epoch 3/3"); at != std::string::npos;
       at = two.output.find("Epoch 3/3", at + 1)) {
    ++epochs_printed;
  }
  EXPECT_EQ(epochs_printed, 1u) << two.output;

  // Resumed across ranks after 2 epochs, then to 3: the same run again.
  const Result first = train("resumed", 2, true);
  ASSERT_EQ(first.status, 0) << first.output;
  const Result resumed = Process(dir_, {"train", "--resume", "resumed", "--epochs", "3"}, 0, mpirun).wait();
  ASSERT_EQ(resumed.status, 0) << resumed.output;

  const auto numbers = [&](const std::string& run_dir) {
    std::vector<double> values;
    for (const std::vector<std::string>& row : history_without_timings(dir_ / run_dir)) {
      for (const std::string& cell : row) values.push_back(std::stod(cell));
    }
    return values;
  };
  const auto weights = [&](const std::string& run_dir) {
    hisvid::models::LoadedModel loaded = hisvid::models::load_model((dir_ / run_dir / "model.h5").string());
    std::vector<double> values;
    for (const hisvid::Tensor& w : loaded.model.trainable_weights()) {
      const std::vector<double> v = w.to_vector();
      values.insert(values.end(), v.begin(), v.end());
    }
    return values;
  };
  const std::vector<double> reference = numbers("one_process"), reference_weights = weights("one_process");
  ASSERT_EQ(reference.size(), 18u);
  for (const char* run_dir : {"two_ranks", "resumed"}) {
    SCOPED_TRACE(run_dir);
    const std::vector<double> h = numbers(run_dir), w = weights(run_dir);
    ASSERT_EQ(h.size(), reference.size());
    for (size_t i = 0; i < h.size(); ++i) {
      EXPECT_NEAR(h[i], reference[i], kRanksTolerance * std::max(1.0, std::abs(reference[i])))
          << "history value " << i;
    }
    ASSERT_EQ(w.size(), reference_weights.size());
    double largest = 0.0;
    for (size_t i = 0; i < w.size(); ++i)
      largest = hisvid::testing::worse(largest, std::abs(w[i] - reference_weights[i]));
    std::cout << run_dir << ": largest weight difference from one process " << largest << "\n";
    EXPECT_LE(largest, kRanksTolerance);
  }
  // The schedule acted at least once, so the histories compared its decisions.
  EXPECT_TRUE(contains(one.output, "ReduceLROnPlateau reducing learning rate")) << one.output;
  // A rank that fails ends the job with its message instead of leaving the other waiting: rank 0
  // refuses an --out that holds a run, while rank 1 goes on to the first collective.
  const auto started = std::chrono::steady_clock::now();
  const Result refused = train("two_ranks", 3, true);
  EXPECT_NE(refused.status, 0);
  EXPECT_TRUE(contains(refused.output, "two_ranks")) << refused.output;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(60));
  // Only train runs across processes.
  const Result other = Process(dir_, {"summary", "--model", "lrcn"}, 0, mpirun).wait();
  EXPECT_NE(other.status, 0);
  EXPECT_TRUE(contains(other.output, "only `hisvid train` runs across processes")) << other.output;
}
#endif

TEST_F(Cli, KerasFilesOfEveryVersion) {
  const fs::path fixtures = fs::path(HISVID_FIXTURES_DIR) / "keras-versions";
  if (!fs::exists(fixtures)) GTEST_SKIP() << "fixtures not found at " << fixtures;
  const std::pair<const char*, const char*> files[] = {
      {"divyanshu_convlstm_model.h5", "53,167"},  {"fasimohamed_LRCN_2024_08_02.h5", "73,588"},
      {"dkrishnavamsi_LRCN_model.h5", "74,578"},  {"akashrana_convlstm_2025_04_12.h5", "44,524"},
      {"shriya_LRCN_2024_06_12.keras", "73,060"}, {"iamrahulr30_convlstm_main_2024_12_23.h5", "18,529"},
      {"rushi589_lrcn_model.keras", "208,834"}};
  for (const auto& [file, params] : files) {
    const Result summary = run(dir_, {"summary", "--weights", (fixtures / file).string()});
    EXPECT_EQ(summary.status, 0) << file << ": " << summary.output;
    EXPECT_TRUE(contains(summary.output, std::string("Total params: ") + params)) << summary.output;
  }
  // predict and evaluate each model of 20 frames of 64x64 BGR on the 4-class data; a model of
  // K outputs gets the data's classes first in its --model-classes.
  const std::pair<const char*, int> classifiers[] = {{"divyanshu_convlstm_model.h5", 7},
                                                     {"fasimohamed_LRCN_2024_08_02.h5", 20},
                                                     {"dkrishnavamsi_LRCN_model.h5", 50},
                                                     {"akashrana_convlstm_2025_04_12.h5", 4}};
  for (const auto& [file, outputs] : classifiers) {
    std::string names = "MoveLeft,MoveRight,Grow,Shrink";
    for (int k = 4; k < outputs; ++k) names += ",other" + std::to_string(k);
    const Result predicted = run(dir_, {"predict", "--weights", (fixtures / file).string(),
                                        "data/Grow/v_Grow_g01_c01.avi", "--model-classes", names});
    EXPECT_EQ(predicted.status, 0) << file << ": " << predicted.output;
    EXPECT_TRUE(contains(predicted.output, "  1. ")) << predicted.output;
    const Result evaluated = run(dir_, {"evaluate", "--weights", (fixtures / file).string(), "--data", "data",
                                        "--model-classes", names, "--cache", "clips.h5"});
    EXPECT_EQ(evaluated.status, 0) << file << ": " << evaluated.output;
    EXPECT_TRUE(contains(evaluated.output, "weighted avg")) << evaluated.output;
  }

  const std::string keras3 = (fixtures / "shriya_LRCN_2024_06_12.keras").string();
  const Result trained = run(dir_, {"train", "--weights", keras3, "--data", "data", "--epochs", "1", "--out",
                                    "keras3_run", "--cache", "clips.h5", "--patience", "-1"});
  ASSERT_EQ(trained.status, 0) << trained.output;
  EXPECT_TRUE(contains(trained.output, "continuing with the Adam state")) << trained.output;
  const hisvid::models::LoadedModel continued =
      hisvid::models::load_model((dir_ / "keras3_run/model.h5").string());
  EXPECT_EQ(continued.keras_version, "3.3.3");
  ASSERT_NE(continued.extras.optimizer, nullptr);
  EXPECT_EQ(continued.extras.optimizer->iterations(), 4161 + 3);  // 12 training clips in batches of 4

  // Between the formats and back; an existing output is not replaced without --overwrite.
  const Result to_h5 = run(dir_, {"convert", keras3, "converted.h5"});
  ASSERT_EQ(to_h5.status, 0) << to_h5.output;
  const Result to_keras = run(dir_, {"convert", "converted.h5", "converted.keras"});
  ASSERT_EQ(to_keras.status, 0) << to_keras.output;
  EXPECT_TRUE(contains(to_keras.output, "Keras 3.3.3")) << to_keras.output;
  const Result again = run(dir_, {"convert", "converted.h5", "converted.keras"});
  EXPECT_EQ(again.status, 1);
  EXPECT_TRUE(contains(again.output, "converted.keras exists")) << again.output;
  const Result itself = run(dir_, {"convert", "converted.h5", "converted.h5", "--overwrite"});
  EXPECT_EQ(itself.status, 1);
  EXPECT_TRUE(contains(itself.output, "is the input file itself")) << itself.output;
  const hisvid::models::LoadedModel a = hisvid::models::load_model(keras3);
  const hisvid::models::LoadedModel b = hisvid::models::load_model((dir_ / "converted.keras").string());
  EXPECT_EQ(a.model.trainable_weights()[0].to_vector(), b.model.trainable_weights()[0].to_vector());

  const std::string binary = (fixtures / "iamrahulr30_convlstm_main_2024_12_23.h5").string();
  const Result one = run(dir_, {"predict", "--weights", binary, "data/Grow/v_Grow_g01_c01.avi",
                                "--model-classes", "Calm,Ragging"});
  ASSERT_EQ(one.status, 0) << one.output;
  EXPECT_TRUE(contains(one.output, "probability of the positive class 'Ragging': 0.")) << one.output;
  const Result evaluated =
      run(dir_, {"evaluate", "--weights", binary, "--data", "data", "--classes", "MoveLeft,MoveRight",
                 "--model-classes", "MoveLeft,MoveRight", "--out", "binary_eval"});
  ASSERT_EQ(evaluated.status, 0) << evaluated.output;
  std::ifstream predictions(dir_ / "binary_eval/predictions.csv");
  std::string header;
  std::getline(predictions, header);
  EXPECT_EQ(header, "video,true_class,predicted_class,p_MoveLeft,p_MoveRight");
  const Result binary_training =
      run(dir_, {"train", "--weights", binary, "--data", "data", "--classes", "MoveLeft,MoveRight",
                 "--epochs", "1", "--out", "binary_run", "--patience", "-1", "--cache", "none"});
  ASSERT_EQ(binary_training.status, 0) << binary_training.output;
  EXPECT_TRUE(contains(binary_training.output, "Epoch 1/1")) << binary_training.output;
}

// A model of one input channel gets gray frames, in predict and evaluate (160 frames of 90x90).
TEST_F(Cli, GrayscaleKerasModel) {
  const fs::path model = fs::path(HISVID_FIXTURES_DIR) / "keras-versions/rushi589_lrcn_model.keras";
  if (!fs::exists(model)) GTEST_SKIP() << "fixture not found: " << model;
  const Result made = run(dir_, {"make-dataset", "--out", "gray", "--clips-per-class", "2", "--frames", "170",
                                 "--size", "96", "--classes", "MoveLeft,MoveRight"});
  ASSERT_EQ(made.status, 0) << made.output;
  const Result predicted = run(
      dir_, {"predict", "--weights", model.string(), "gray/MoveLeft", "--model-classes", "Normal,Violence"});
  ASSERT_EQ(predicted.status, 0) << predicted.output;
  EXPECT_TRUE(contains(predicted.output, "v_MoveLeft_g01_c02.avi,")) << predicted.output;
  const Result evaluated = run(dir_, {"evaluate", "--weights", model.string(), "--data", "gray",
                                      "--model-classes", "MoveLeft,MoveRight", "--cache", "none"});
  ASSERT_EQ(evaluated.status, 0) << evaluated.output;
  EXPECT_TRUE(contains(evaluated.output, "weighted avg")) << evaluated.output;
}

// --- Bad input: every case of the robustness pass, through the binary ------------------------

// Hostile or broken model specs and model files: a clear error, never a crash, a hang or a
// runaway allocation.
TEST_F(Cli, HostileSpecsAndModelFilesAreErrors) {
  // A spec nested 100,000 levels deep, as a file and as an .h5 file's model_config.
  std::ofstream(dir_ / "deep.json") << std::string(100000, '[') << std::string(100000, ']');
  expect_refused(dir_, {"summary", "--model", "deep.json"}, {"deep.json", "nested deeper"});
  {
    hisvid::io::h5::File file = hisvid::io::h5::File::create((dir_ / "deep.h5").string());
    {
      hisvid::io::h5::Group root = file.root();
      root.write_string_attribute("model_config", std::string(100000, '[') + std::string(100000, ']'));
      root.create_group("model_weights").write_string_list_attribute("layer_names", {});
    }
    file.close();
  }
  expect_refused(dir_, {"summary", "--weights", "deep.h5"}, {"deep.h5", "nested deeper"});
  // 5,000 nested TimeDistributed wrappers: refused at once, with a short message.
  std::string nested = R"({"class_name": "Flatten", "config": {}})";
  for (int i = 0; i < 5000; ++i)
    nested = R"({"class_name": "TimeDistributed", "config": {"layer": )" + nested + "}}";
  std::ofstream(dir_ / "nested.json")
      << R"([{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 2, 3]}}, )" << nested << "]";
  const auto start = std::chrono::steady_clock::now();
  const Result wrapped = Process(dir_, {"summary", "--model", "nested.json"}).wait(std::chrono::seconds(60));
  EXPECT_EQ(wrapped.status, 1) << wrapped.output;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_LT(wrapped.output.size(), 2000u) << wrapped.output;
  // Not regular files where a file is expected: /dev/zero, a FIFO.
  expect_refused(dir_, {"summary", "--model", "/dev/zero"}, {"/dev/zero", "not a regular file"});
  ASSERT_EQ(mkfifo((dir_ / "pipe.avi").c_str(), 0644), 0);
  ASSERT_EQ(train("hostile_base", 1).status, 0);
  expect_refused(dir_, {"predict", "--weights", "hostile_base/model.h5", "pipe.avi"},
                 {"pipe.avi", "not a regular file"}, std::chrono::seconds(30));
  expect_refused(dir_, {"summary", "--weights", "pipe.avi"}, {"pipe.avi", "not a regular file"},
                 std::chrono::seconds(30));
  // An integer beyond int range does not wrap.
  std::ofstream(dir_ / "wide.json")
      << R"([{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 2, 3]}},
    {"class_name": "Flatten"}, {"class_name": "Dense", "config": {"units": 4294967300}}])";
  expect_refused(dir_, {"summary", "--model", "wide.json"}, {"units", "out of range"});

  // One flipped bit in a real Keras file crashes libhdf5 (H5HG_read): reported as damage.
  const fs::path keras = fs::path(HISVID_FIXTURES_DIR) / "keras/tutorial_lrcn_keras2.8.h5";
  if (fs::exists(keras)) {
    std::string bytes = file_bytes(keras);
    bytes[232291] = static_cast<char>(bytes[232291] ^ 1);
    std::ofstream(dir_ / "flipped.h5", std::ios::binary) << bytes;
    expect_refused(dir_, {"summary", "--weights", "flipped.h5"}, {"flipped.h5", "damaged"});
    expect_refused(dir_, {"predict", "--weights", "flipped.h5", "data/Grow/v_Grow_g01_c01.avi"},
                   {"flipped.h5", "damaged"});
  }

  // A small file declaring a 400M-float weight: refused before anything is allocated or read.
  {
    const hisvid::models::LoadedModel base =
        hisvid::models::load_model((dir_ / "hostile_base/model.h5").string());
    hisvid::io::h5::File file = hisvid::io::h5::File::create((dir_ / "huge.h5").string());
    {
      hisvid::io::h5::Group root = file.root();
      root.write_string_attribute("model_config", base.model.to_json().dump());
      hisvid::io::h5::Group weights = root.create_group("model_weights");
      weights.write_string_list_attribute("layer_names", {"big"});
      hisvid::io::h5::Group big = weights.create_group("big");
      big.write_string_list_attribute("weight_names", {"big/kernel:0"});
      hisvid::io::h5::DatasetOptions chunked;
      chunked.chunk = {1, 20000};
      big.create_dataset("big/kernel:0", hisvid::io::h5::ElementType::Float32, {20000, 20000}, chunked);
    }
    file.close();
  }
  EXPECT_LT(fs::file_size(dir_ / "huge.h5"), 1000000u);
  expect_refused(dir_, {"summary", "--weights", "huge.h5"}, {"huge.h5", "(20000, 20000)", "stores"});

  // --split test of a Keras file: it holds no run to re-create.
  const fs::path keras3 = fs::path(HISVID_FIXTURES_DIR) / "keras-versions/shriya_LRCN_2024_06_12.keras";
  if (fs::exists(keras3)) {
    const Result r = Process(dir_, {"evaluate", "--weights", keras3.string(), "--split", "test",
                                    "--model-classes", "MoveLeft,MoveRight,Grow,Shrink"})
                         .wait();
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_TRUE(contains(r.output, "holds no record of the training run")) << r.output;
    EXPECT_FALSE(contains(r.output, "json.exception")) << r.output;
  }
}

// Outputs never replace inputs or files hisvid was not asked to replace; run directories are
// not silently reused nor shared by two runs.
TEST_F(Cli, NothingExistingIsOverwritten) {
  ASSERT_EQ(train("kept", 1).status, 0);
  const std::string video = "data/Grow/v_Grow_g01_c01.avi";
  const std::string model_bytes = file_bytes(dir_ / "kept/model.h5"), video_bytes = file_bytes(dir_ / video);
  expect_refused(dir_, {"predict", "--weights", "kept/model.h5", video, "--out", video}, {video, "input"});
  expect_refused(dir_, {"predict", "--weights", "kept/model.h5", video, "--out", video, "--overwrite"},
                 {video, "input"});
  expect_refused(dir_, {"predict", "--weights", "kept/model.h5", "data/Grow", "--csv", "kept/model.h5"},
                 {"model.h5", "input"});
  EXPECT_EQ(file_bytes(dir_ / "kept/model.h5"), model_bytes);
  EXPECT_EQ(file_bytes(dir_ / video), video_bytes);
  std::ofstream(dir_ / "mine.csv") << "my own notes\n";
  expect_refused(dir_, {"predict", "--weights", "kept/model.h5", "data/Grow", "--csv", "mine.csv"},
                 {"mine.csv", "--overwrite"});
  EXPECT_EQ(file_bytes(dir_ / "mine.csv"), "my own notes\n");
  fs::permissions(dir_ / "mine.csv", fs::perms::owner_read | fs::perms::owner_write);
  const Result replaced =
      run(dir_, {"predict", "--weights", "kept/model.h5", "data/Grow", "--csv", "mine.csv", "--overwrite"});
  EXPECT_EQ(replaced.status, 0) << replaced.output;
  // A private file replaced stays private.
  EXPECT_EQ(fs::status(dir_ / "mine.csv").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  // A run directory holding a run: --resume or --overwrite; a file is not a run directory.
  expect_refused(dir_, {"train", "--data", "data", "--epochs", "1", "--out", "kept", "--cache", "clips.h5"},
                 {"kept", "earlier run", "--resume", "--overwrite"});
  EXPECT_EQ(file_bytes(dir_ / "kept/model.h5"), model_bytes);
  expect_refused(dir_, {"train", "--data", "data", "--epochs", "1", "--out", "kept/model.h5"},
                 {"model.h5", "not a directory"});
  // Model files of a run's names that hisvid did not save (a Keras ModelCheckpoint's best.h5, a
  // .keras archive named model.h5) are the user's: no run replaces them, --overwrite or not.
  fs::create_directories(dir_ / "keras_run");
  const fs::path keras_file = fs::path(HISVID_FIXTURES_DIR) / "keras" / "tutorial_lrcn_keras2.8.h5";
  if (fs::exists(keras_file)) {
    fs::copy_file(keras_file, dir_ / "keras_run/best.h5");
  } else {
    std::ofstream(dir_ / "keras_run/best.h5") << "a checkpoint of another program\n";
  }
  const std::string keras_bytes = file_bytes(dir_ / "keras_run/best.h5");
  std::ofstream(dir_ / "keras_run/history.csv") << "epoch,loss\n0,1.3\n";
  for (const bool overwrite : {false, true}) {
    std::vector<std::string> args = {"train", "--data",    "data",    "--epochs", "1",
                                     "--out", "keras_run", "--cache", "clips.h5"};
    if (overwrite) args.push_back("--overwrite");
    expect_refused(dir_, args, {"keras_run", "best.h5", "did not save", "another --out"});
  }
  EXPECT_EQ(file_bytes(dir_ / "keras_run/best.h5"), keras_bytes);
  EXPECT_EQ(file_bytes(dir_ / "keras_run/history.csv"), "epoch,loss\n0,1.3\n");
  // --overwrite replaces an earlier run only when the new one saves its first epoch: a command
  // refused before that (a typo) leaves the run whole, and a run never replaces its own --weights.
  const std::string history_bytes = file_bytes(dir_ / "kept/history.csv");
  expect_refused(dir_,
                 {"train", "--model", "lrcn_smal", "--data", "data", "--epochs", "1", "--out", "kept",
                  "--cache", "clips.h5", "--overwrite"},
                 {"lrcn_smal"});
  expect_refused(dir_,
                 {"train", "--model", "lrcn_smal", "--data", "data", "--epochs", "1", "--out", "typo_run"},
                 {"lrcn_smal"});
  EXPECT_FALSE(fs::exists(dir_ / "typo_run"));
  // A spec that cannot train as a classifier (its last Dense linear) is refused before any video
  // is decoded or --out made.
  std::ofstream(dir_ / "linear.json")
      << R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": )"
      << R"({"batch_input_shape": [null, 20, 64, 64, 3]}}, {"class_name": "Flatten", "config": {}}, )"
      << R"({"class_name": "Dense", "config": {"name": "scores", "units": 4}}]}})";
  expect_refused(
      dir_, {"train", "--model", "linear.json", "--data", "data", "--epochs", "1", "--out", "linear_run"},
      {"--model linear.json", "'scores'", "no softmax or sigmoid"});
  EXPECT_FALSE(fs::exists(dir_ / "linear_run"));
  // An unreadable --weights is refused before --out is made; a run refused after making it (too
  // few clips to hold validation clips out, found once the videos are read) takes its directory
  // away again, with the parents it made (the trailing slash of --out included), since it saved
  // nothing.
  expect_refused(dir_,
                 {"train", "--weights", "mine.csv", "--data", "data", "--epochs", "1", "--out", "csv_run"},
                 {"mine.csv"});
  EXPECT_FALSE(fs::exists(dir_ / "csv_run"));
  expect_refused(dir_,
                 {"train", "--data", "data", "--epochs", "1", "--out", "made/late_run/", "--cache",
                  "clips.h5", "--test-split", "0.95"},
                 {"too few", "--validation-split"});
  EXPECT_FALSE(fs::exists(dir_ / "made"));
  expect_refused(dir_,
                 {"train", "--weights", "kept/model.h5", "--data", "data", "--epochs", "1", "--out", "kept",
                  "--cache", "clips.h5", "--overwrite"},
                 {"--out kept", "model.h5", "an input"});
  EXPECT_EQ(file_bytes(dir_ / "kept/model.h5"), model_bytes);
  EXPECT_EQ(file_bytes(dir_ / "kept/history.csv"), history_bytes);
  for (const char* file :
       {"last.h5", "best.h5", "report.txt", "predictions.csv", "confusion.png", "curves.png"})
    EXPECT_TRUE(fs::exists(dir_ / "kept" / file)) << file;
  // evaluate --out: reports already there are replaced only with --overwrite (a training run's own
  // test report included); a model that names its classes refuses other names for its outputs.
  fs::create_directories(dir_ / "notes");
  std::ofstream(dir_ / "notes/report.txt") << "my report\n";
  expect_refused_keeping(
      dir_,
      {"evaluate", "--weights", "kept/model.h5", "--data", "data", "--cache", "clips.h5", "--out", "notes"},
      {"notes/report.txt", "--overwrite"}, "notes/report.txt");
  expect_refused_keeping(
      dir_,
      {"evaluate", "--weights", "kept/model.h5", "--data", "data", "--cache", "clips.h5", "--out", "kept"},
      {"kept/report.txt", "--overwrite"}, "kept/report.txt");
  const Result reported = run(dir_, {"evaluate", "--weights", "kept/model.h5", "--data", "data", "--cache",
                                     "clips.h5", "--out", "notes", "--overwrite"});
  EXPECT_EQ(reported.status, 0) << reported.output;
  EXPECT_NE(file_bytes(dir_ / "notes/report.txt"), "my report\n");
  expect_refused(dir_,
                 {"evaluate", "--weights", "kept/model.h5", "--data", "data", "--cache", "clips.h5",
                  "--model-classes", "Shrink,MoveLeft,MoveRight,Grow"},
                 {"--model-classes", "names its outputs itself"});
  expect_refused(dir_,
                 {"evaluate", "--weights", "kept/model.h5", "--data", "data", "--classes", "Grow,,Shrink"},
                 {"--classes Grow,,Shrink", "empty"});
  // Two runs on one directory: the second is turned away while the first holds it.
  Process first(dir_, {"train", "--data", "data", "--epochs", "200", "--out", "shared", "--cache", "clips.h5",
                       "--patience", "-1"});
  ASSERT_TRUE(wait_until([&] { return fs::exists(dir_ / "shared/last.h5"); }, std::chrono::minutes(2),
                         std::chrono::milliseconds(50)));
  expect_refused(dir_, {"train", "--resume", "shared", "--epochs", "300"}, {"shared", "another hisvid run"});
  first.interrupt();
  EXPECT_EQ(first.wait().status, 1);
  // A temporary file left by a killed run (a pid that no longer runs) is removed by the next;
  // a user's file that merely looks like one (a date where the pid would be) is not hisvid's.
  std::ofstream(dir_ / "shared/last.h5.tmp-999999999-0.h5") << "half a checkpoint";
  std::ofstream(dir_ / "shared/results.tmp-20261127-1.csv") << "mine";
  const Result resumed = run(dir_, {"train", "--resume", "shared", "--epochs", "1"});
  EXPECT_FALSE(fs::exists(dir_ / "shared/last.h5.tmp-999999999-0.h5")) << resumed.output;
  EXPECT_EQ(file_bytes(dir_ / "shared/results.tmp-20261127-1.csv"), "mine");
  // --epochs no more than the epochs done trains nothing, and says so.
  EXPECT_TRUE(contains(resumed.output, "nothing is trained")) << resumed.output;
}

// Resuming a run that EarlyStopping ended trains nothing, and says so, whatever --epochs asks.
TEST_F(Cli, ResumingARunEarlyStoppingEndedSaysNothingIsTrained) {
  const Result stopped = run(dir_, {"train", "--model", "lrcn", "--data", "data", "--epochs", "60", "--out",
                                    "stopped_early", "--cache", "clips.h5", "--patience", "0"});
  ASSERT_EQ(stopped.status, 0) << stopped.output;
  ASSERT_FALSE(contains(stopped.output, "Epoch 60/60")) << "EarlyStopping never stopped the run";
  const Result resumed = run(dir_, {"train", "--resume", "stopped_early", "--epochs", "80"});
  EXPECT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "EarlyStopping ended this run after epoch")) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "nothing is trained")) << resumed.output;
  EXPECT_FALSE(contains(resumed.output, "Epoch ")) << resumed.output;
}

// A built-in dataset missing clips its record lists (a make-dataset that ended early) trains on
// what is there, with a warning that says how to finish it.
TEST_F(Cli, AnUnfinishedBuiltInDatasetIsSaidToBe) {
  fs::copy(dir_ / "data", dir_ / "unfinished", fs::copy_options::recursive);
  fs::remove(dir_ / "unfinished/Grow/v_Grow_g01_c01.avi");
  const Result r = run(dir_, {"train", "--data", "unfinished", "--epochs", "1", "--out", "unfinished_run",
                              "--cache", "none", "--patience", "-1"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "warning: unfinished: 1 of the 20 clips its record")) << r.output;
  EXPECT_TRUE(contains(r.output, "Run it again with the same settings")) << r.output;
  // Only the classes the run reads count.
  const Result others =
      run(dir_, {"train", "--data", "unfinished", "--classes", "MoveLeft,Shrink", "--epochs", "1", "--out",
                 "unfinished_others", "--cache", "none", "--patience", "-1"});
  EXPECT_EQ(others.status, 0) << others.output;
  EXPECT_FALSE(contains(others.output, "clips its record")) << others.output;
  const Result whole = run(dir_, {"train", "--data", "data", "--epochs", "1", "--out", "finished_run",
                                  "--cache", "none", "--patience", "-1"});
  EXPECT_FALSE(contains(whole.output, "clips its record")) << whole.output;
}

// Refusals that need no video come before any is decoded: evaluate on a folder with a class the
// model does not know (from the listing), train with a sigmoid head of more than one unit.
TEST_F(Cli, RefusalsComeBeforeAnyVideoIsDecoded) {
  ASSERT_EQ(train("known_classes", 1).status, 0);
  fs::copy(dir_ / "data", dir_ / "extra_class", fs::copy_options::recursive);
  fs::create_directories(dir_ / "extra_class/Spin");
  fs::copy_file(dir_ / "data/Grow/v_Grow_g01_c01.avi", dir_ / "extra_class/Spin/v_Spin_g01_c01.avi");
  const Result r = run(
      dir_, {"evaluate", "--weights", "known_classes/model.h5", "--data", "extra_class", "--cache", "none"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "class 'Spin' that the model does not know")) << r.output;
  EXPECT_FALSE(contains(r.output, "clips of")) << r.output;  // the line that follows decoding
  std::ofstream(dir_ / "two_sigmoids.json")
      << R"({"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", "config": )"
      << R"({"batch_input_shape": [null, 20, 64, 64, 3]}}, {"class_name": "TimeDistributed", "config": )"
      << R"({"layer": {"class_name": "Flatten", "config": {}}}}, {"class_name": "LSTM", "config": )"
      << R"({"units": 3}}, {"class_name": "Dense", "config": {"units": 2, "activation": "sigmoid"}}]}})";
  const Result sigmoids =
      run(dir_, {"train", "--model", "two_sigmoids.json", "--data", "data", "--classes", "Grow,Shrink",
                 "--out", "two_sigmoids", "--epochs", "1", "--cache", "none"});
  EXPECT_EQ(sigmoids.status, 1) << sigmoids.output;
  EXPECT_TRUE(
      contains(sigmoids.output, "a sigmoid head trains as a binary classifier of one unit, this one has 2"))
      << sigmoids.output;
  EXPECT_FALSE(contains(sigmoids.output, "clips of")) << sigmoids.output;
}

// A run or reports inside the video folder would become part of the dataset (a class folder, files
// among a class's videos): refused before any work, the dataset as it was.
TEST_F(Cli, OutputsInsideTheDataFolderAreRefused) {
  expect_refused(dir_, {"train", "--model", "lrcn", "--data", "data", "--epochs", "1", "--out", "data/run"},
                 {"--out data/run", "is inside the video folder --data data"});
  EXPECT_FALSE(fs::exists(dir_ / "data" / "run"));
  expect_refused(dir_, {"train", "--model", "lrcn", "--data", "data/", "--epochs", "1", "--out", "./data"},
                 {"--out ./data", "is the video folder"});
  ASSERT_EQ(train("outside", 1).status, 0);
  expect_refused(dir_, {"evaluate", "--weights", "outside/model.h5", "--data", "data", "--out", "data/Grow"},
                 {"--out data/Grow", "inside the video folder"});
  expect_refused(dir_, {"evaluate", "--weights", "outside/model.h5", "--split", "test", "--out", "data"},
                 {"--out data", "the video folder"});
  EXPECT_FALSE(fs::exists(dir_ / "data" / "report.txt"));
  EXPECT_FALSE(fs::exists(dir_ / "data" / "Grow" / "report.txt"));
}

// The split's counts round as Python's do (from a helper's audit against Keras's source): 10
// clips to train on at --validation-split 0.8 train on int(10 * 0.19999999999999996) = 1, not 2.
// A run from before the split's record (here: the record removed) resumes with the rounding it
// was made with, so its validation and test clips stay its own; a record that the re-created
// split does not match is refused.
TEST_F(Cli, ResumeKeepsTheRunsSplitRounding) {
  const std::vector<std::string> split = {"--test-split", "0.5", "--validation-split", "0.8"};
  const Result first = train("rounding", 1, split);
  ASSERT_EQ(first.status, 0) << first.output;
  EXPECT_TRUE(contains(first.output, "split: 1 training, 9 validation, 10 test clips")) << first.output;
  const fs::path last = dir_ / "rounding/last.h5";
  const auto rewrite_run = [&](const std::function<void(nlohmann::json&)>& change) {
    hisvid::models::LoadedModel loaded = hisvid::models::load_model(last.string());
    change(loaded.extras.training_state["run"]);
    hisvid::models::save_model(last.string(), loaded.model, loaded.extras.class_names,
                               loaded.extras.optimizer.get(), loaded.extras.training_state);
  };
  rewrite_run([](nlohmann::json& run) {
    ASSERT_TRUE(run.contains("split"));
    run.erase("split");
  });
  const Result older = run(dir_, {"train", "--resume", "rounding", "--epochs", "2"});
  ASSERT_EQ(older.status, 0) << older.output;
  EXPECT_TRUE(contains(older.output, "split: 2 training, 8 validation, 10 test clips")) << older.output;
  rewrite_run([](nlohmann::json& run) { run["split"]["train"] = 3; });
  expect_refused(dir_, {"train", "--resume", "rounding", "--epochs", "3"},
                 {"--resume", "the run's split had 3 training", "re-created it has 2"});
}

// A run from before hisvid followed Keras's code paths for BatchNormalization's moving variance
// and the LSTM's dropout masks (its record has no "rules") is told, on --resume, what now trains
// differently: here a BatchNormalization after the LSTM (2-D input: the biased variance now)
// and the LSTM's input dropout (one mask per timestep on Keras 2's cuDNN-compatible path).
TEST_F(Cli, ResumeSaysWhichRulesChangedSinceTheRunBegan) {
  std::ofstream(dir_ / "rules_model.json") << R"([
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "MaxPooling2D", "config": {"pool_size": 8}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Flatten", "config": {}}}},
    {"class_name": "LSTM", "config": {"name": "lstm", "units": 8, "dropout": 0.2}},
    {"class_name": "BatchNormalization", "config": {"name": "bn"}},
    {"class_name": "Dense", "config": {"units": 4, "activation": "softmax"}}])";
  const Result first = run(dir_, {"train", "--model", "rules_model.json", "--data", "data", "--epochs", "1",
                                  "--out", "rules", "--cache", "clips.h5", "--patience", "-1"});
  ASSERT_EQ(first.status, 0) << first.output;
  const Result same = run(dir_, {"train", "--resume", "rules", "--epochs", "2"});
  ASSERT_EQ(same.status, 0) << same.output;
  EXPECT_FALSE(contains(same.output, "earlier rules")) << same.output;
  const fs::path last = dir_ / "rules/last.h5";
  hisvid::models::LoadedModel loaded = hisvid::models::load_model(last.string());
  ASSERT_TRUE(loaded.extras.training_state["run"].contains("rules"));
  loaded.extras.training_state["run"].erase("rules");
  hisvid::models::save_model(last.string(), loaded.model, loaded.extras.class_names,
                             loaded.extras.optimizer.get(), loaded.extras.training_state);
  const Result older = run(dir_, {"train", "--resume", "rules", "--epochs", "3"});
  ASSERT_EQ(older.status, 0) << older.output;
  EXPECT_TRUE(contains(older.output,
                       "earlier rules: BatchNormalization 'bn' now updates its moving variance "
                       "with the biased batch variance"))
      << older.output;
  EXPECT_TRUE(contains(older.output, "earlier rules: LSTM 'lstm' now draws its dropout masks as Keras 2.8.0"))
      << older.output;
}

// A --weights file without an optimizer state to continue with trains with a fresh optimizer
// of --optimizer's default, and says so (Keras's would have gone on with the file's); a loss
// compiled with options hisvid's cross-entropy does not have is named.
TEST_F(Cli, TrainingFromWeightsSaysWhatItDoesNotContinue) {
  ASSERT_EQ(train("with_optimizer", 1).status, 0);
  hisvid::models::LoadedModel loaded =
      hisvid::models::load_model((dir_ / "with_optimizer/model.h5").string());
  hisvid::models::save_model((dir_ / "no_optimizer.h5").string(), loaded.model, loaded.extras.class_names,
                             nullptr, nullptr);
  const Result trained =
      run(dir_, {"train", "--weights", "no_optimizer.h5", "--data", "data", "--epochs", "1", "--out",
                 "fresh_optimizer", "--cache", "clips.h5", "--patience", "-1"});
  ASSERT_EQ(trained.status, 0) << trained.output;
  EXPECT_TRUE(contains(trained.output,
                       "no_optimizer.h5 holds no optimizer state hisvid continues with: "
                       "training starts a fresh adam"))
      << trained.output;

  hisvid::io::KerasModelFile file = hisvid::io::read_model_file((dir_ / "with_optimizer/model.h5").string());
  nlohmann::json record = nlohmann::json::parse(file.training_config);
  record["loss"] = {{"class_name", "CategoricalCrossentropy"},
                    {"config", {{"from_logits", false}, {"label_smoothing", 0.1}, {"reduction", "sum"}}}};
  file.training_config = record.dump();
  hisvid::io::write_keras_model((dir_ / "smoothed.h5").string(), file);
  const Result smoothed = run(dir_, {"train", "--weights", "smoothed.h5", "--data", "data", "--epochs", "1",
                                     "--out", "smoothed_run", "--cache", "clips.h5", "--patience", "-1"});
  ASSERT_EQ(smoothed.status, 0) << smoothed.output;
  EXPECT_TRUE(contains(smoothed.output,
                       "smoothed.h5 was compiled with a loss using label_smoothing 0.1, "
                       "reduction \"sum\", which hisvid does not implement"))
      << smoothed.output;
  EXPECT_FALSE(contains(trained.output, "label_smoothing")) << trained.output;
}

// A best.h5 another run saved, put in a run's place, is not taken for the run's own: resume says
// so (here, with no EarlyStopping to restore from it, a note; restoring from it fails instead).
TEST_F(Cli, ResumeTellsAnotherRunsBestH5FromItsOwn) {
  ASSERT_EQ(train("own_best", 3).status, 0);
  ASSERT_EQ(train("other_best", 3, {"--seed", "5"}).status, 0);
  fs::copy_file(dir_ / "other_best/best.h5", dir_ / "own_best/best.h5", fs::copy_options::overwrite_existing);
  const Result resumed = run(dir_, {"train", "--resume", "own_best", "--epochs", "4"});
  EXPECT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "best.h5 is another run's (run id ")) << resumed.output;
}

// A run that restores no best weights (no EarlyStopping here) resumed beside a best.h5 holding
// another epoch than its best (a copy put back by hand, a disk that filled): it goes on, and says
// that best.h5 is not the best until an epoch improves on it.
TEST_F(Cli, ResumeSaysWhenBestH5IsNotTheBestEpoch) {
  ASSERT_EQ(train("unbest", 1).status, 0);
  fs::copy_file(dir_ / "unbest/last.h5", dir_ / "unbest/epoch1.h5");
  ASSERT_EQ(run(dir_, {"train", "--resume", "unbest", "--epochs", "2"}).status, 0);
  fs::copy_file(dir_ / "unbest/last.h5", dir_ / "unbest/epoch2.h5");
  ASSERT_EQ(run(dir_, {"train", "--resume", "unbest", "--epochs", "3"}).status, 0);
  // The best epoch by validation loss, from history.csv (epoch,loss,accuracy,val_loss,...).
  std::ifstream history(dir_ / "unbest/history.csv");
  std::string line;
  std::getline(history, line);
  int best = 0;
  double best_loss = 0.0;
  for (int epoch = 1; std::getline(history, line); ++epoch) {
    std::stringstream fields(line);
    std::string field;
    for (int column = 0; column < 4; ++column) std::getline(fields, field, ',');
    if (best == 0 || std::stod(field) < best_loss) best = epoch, best_loss = std::stod(field);
  }
  ASSERT_NE(best, 3) << "this dataset's run improved at its last epoch: the case needs an earlier best";
  fs::copy_file(dir_ / (best == 1 ? "unbest/epoch2.h5" : "unbest/epoch1.h5"), dir_ / "unbest/best.h5",
                fs::copy_options::overwrite_existing);
  const Result resumed = run(dir_, {"train", "--resume", "unbest", "--epochs", "4"});
  EXPECT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "best.h5 holds epoch " + std::to_string(best == 1 ? 2 : 1) +
                                           "; the run's best epoch is " + std::to_string(best)))
      << resumed.output;
}

// A resumed run continues as it was defined (its settings cannot change) and never rewinds over
// its later epochs; make-dataset does not replace a dataset made with other settings unasked.
TEST_F(Cli, ResumeKeepsTheRunsSettingsAndItsLaterEpochs) {
  ASSERT_EQ(train("rewind", 1).status, 0);
  fs::copy_file(dir_ / "rewind/last.h5", dir_ / "rewind/epoch1.h5");
  const Result on = run(dir_, {"train", "--resume", "rewind", "--epochs", "2"});
  ASSERT_EQ(on.status, 0) << on.output;
  const std::string history = file_bytes(dir_ / "rewind/history.csv");
  const std::string last = file_bytes(dir_ / "rewind/last.h5");
  expect_refused(dir_, {"train", "--resume", "rewind/epoch1.h5", "--epochs", "3"},
                 {"epoch 1 of the run", "went on to epoch 2", "--resume", "--weights"});
  for (const char* option : {"--lr", "--batch-size", "--seed", "--noise"}) {
    expect_refused(dir_, {"train", "--resume", "rewind", "--epochs", "3", option, "1"},
                   {std::string(option) + " with --resume", "keeps the settings"});
  }
  EXPECT_EQ(file_bytes(dir_ / "rewind/history.csv"), history);
  EXPECT_EQ(file_bytes(dir_ / "rewind/last.h5"), last);
  // The held-out split is re-created only from the clips the run was trained on: another class
  // subset, or a video added since, is refused (the split would mix training clips into the test).
  expect_refused(dir_,
                 {"evaluate", "--weights", "rewind/model.h5", "--split", "test", "--classes", "Grow,Shrink"},
                 {"--split test", "--classes"});
  fs::copy_file(dir_ / "data/Grow/v_Grow_g01_c01.avi", dir_ / "data/Grow/v_Grow_g09_c01.avi");
  expect_refused(dir_, {"evaluate", "--weights", "rewind/model.h5", "--split", "test", "--cache", "none"},
                 {"--split test", "not those the run was trained on", "20 clips then, 21 files now"});
  expect_refused(dir_, {"train", "--resume", "rewind", "--epochs", "3", "--cache", "none"},
                 {"--resume", "not those the run was trained on"});
  // Refused from the listing, before a single video is decoded (a dataset of thousands of
  // videos would otherwise be decoded first).
  const Result listed = run(dir_, {"train", "--resume", "rewind", "--epochs", "3", "--cache", "none"});
  EXPECT_FALSE(contains(listed.output, "decoded")) << listed.output;
  // A file the run skipped (it gave no clip) and that is gone since changes nothing: accepted.
  fs::remove(dir_ / "data/Grow/v_Grow_g09_c01.avi");
  std::ofstream(dir_ / "data/Grow/v_Grow_g99_junk.avi") << "not a video";
  ASSERT_EQ(train("junk", 1).status, 0);
  fs::remove(dir_ / "data/Grow/v_Grow_g99_junk.avi");
  const Result without_junk = run(dir_, {"evaluate", "--weights", "junk/model.h5", "--split", "test"});
  EXPECT_EQ(without_junk.status, 0) << without_junk.output;
  fs::copy_file(dir_ / "data/Grow/v_Grow_g01_c01.avi", dir_ / "data/Grow/v_Grow_g09_c01.avi");
  fs::remove(dir_ / "data/Grow/v_Grow_g09_c01.avi");
  const Result tested = run(dir_, {"evaluate", "--weights", "rewind/model.h5", "--split", "test"});
  EXPECT_EQ(tested.status, 0) << tested.output;

  const std::vector<std::string> make = {
      "make-dataset", "--out",  "remade", "--clips-per-class", "1",   "--frames",
      "20",           "--size", "32",     "--classes",         "Grow"};
  ASSERT_EQ(run(dir_, make).status, 0);
  const std::string clip = file_bytes(dir_ / "remade/Grow/v_Grow_g01_c01.avi");
  std::vector<std::string> other = make;
  other[4] = "2";
  expect_refused(dir_, other, {"remade", "other settings", "clips_per_class 1 -> 2", "--overwrite"});
  EXPECT_EQ(file_bytes(dir_ / "remade/Grow/v_Grow_g01_c01.avi"), clip);
  other.push_back("--overwrite");
  EXPECT_EQ(run(dir_, other).status, 0);
  EXPECT_TRUE(fs::exists(dir_ / "remade/Grow/v_Grow_g01_c02.avi"));
}

// Numbers and combinations that used to be misread: refused with the option named.
TEST_F(Cli, MisreadArgumentsAreRefused) {
  for (const char* epochs : {"0", "-5"}) {
    const Result r = run(dir_, {"train", "--data", "data", "--out", "e", "--epochs", epochs});
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_TRUE(contains(r.output, "--epochs")) << r.output;
    EXPECT_FALSE(fs::exists(dir_ / "e/last.h5"));
  }
  for (const char* lr : {"nan", "0", "-0.1", "inf", "1e-50", "1e-320", "1e39"}) {  // the last three: float32
    const Result r = run(dir_, {"train", "--data", "data", "--out", "l", "--epochs", "1", "--lr", lr});
    EXPECT_NE(r.status, 0) << "--lr " << lr << ": " << r.output;
    EXPECT_TRUE(contains(r.output, "lr") || contains(r.output, "learning_rate")) << r.output;
    EXPECT_FALSE(fs::exists(dir_ / "l/last.h5")) << "--lr " << lr;
  }
  // Values CLI11's own checks let through or misread (NaN passes a range, -1 wraps to 2^64-1 for a
  // seed, an empty path fell back to the default): each refused with status 1 and the option
  // named, before any run directory is made.
  const std::vector<std::pair<std::string, std::string>> misread = {
      {"--noise", "nan"},      {"--brightness", "inf"}, {"--reduce-lr-factor", "-1"},
      {"--patience", "-5"},    {"--seed", "-1"},        {"--seed", "18446744073709551616"},
      {"--test-split", "nan"}, {"--batch-size", "4x"},  {"--out", ""}};
  for (const auto& [option, value] : misread) {
    const Result r = run(dir_, {"train", "--data", "data", "--epochs", "1", "--out", "m", option, value});
    EXPECT_EQ(r.status, 1) << option << " " << value << ": " << r.output;
    EXPECT_TRUE(contains(r.output, option + ": ")) << option << " " << value << ": " << r.output;
    EXPECT_FALSE(fs::exists(dir_ / "m")) << option << " " << value;
  }
  // An unknown device is refused before the run directory or the data are touched.
  expect_refused(dir_, {"train", "--data", "data", "--epochs", "1", "--out", "dv", "--device", "gpu"},
                 {"--device gpu", "unknown device"});
  EXPECT_FALSE(fs::exists(dir_ / "dv"));
  const Result unknown = run(dir_, {"trian", "--data", "data"});
  EXPECT_EQ(unknown.status, 1) << unknown.output;
  EXPECT_TRUE(contains(unknown.output, "'trian' is not a command (commands: train,")) << unknown.output;
  ASSERT_EQ(train("misread", 1).status, 0);
  // convert never replaces a pipe or a device, --overwrite or not; predict --csv - is stdout.
  ASSERT_EQ(mkfifo((dir_ / "pipe.keras").c_str(), 0644), 0);
  expect_refused(dir_, {"convert", "misread/model.h5", "pipe.keras", "--overwrite"},
                 {"pipe.keras", "not a regular file"});
  EXPECT_TRUE(fs::is_fifo(dir_ / "pipe.keras"));
  const Result to_stdout = run(dir_, {"predict", "--weights", "misread/model.h5", "data/Grow", "--csv", "-"});
  EXPECT_EQ(to_stdout.status, 0) << to_stdout.output;
  EXPECT_TRUE(contains(to_stdout.output, "video,class_1,probability_1")) << to_stdout.output;
  EXPECT_FALSE(fs::exists(dir_ / "-"));
  const Result negative =
      run(dir_, {"evaluate", "--weights", "misread/model.h5", "--data", "data", "--batch-size", "-1"});
  EXPECT_NE(negative.status, 0) << negative.output;
  EXPECT_TRUE(contains(negative.output, "--batch-size")) << negative.output;
  expect_refused(
      dir_, {"train", "--model", "convlstm", "--weights", "misread/model.h5", "--data", "data", "--out", "w"},
      {"--model convlstm", "--weights misread/model.h5", "its own architecture"});
  EXPECT_FALSE(fs::exists(dir_ / "w"));
  // --data with --resume names where the same videos are now: other videos are refused.
  expect_refused(dir_, {"train", "--resume", "misread", "--data", "odd_data_for_resume"},
                 {"odd_data_for_resume", "does not exist"});
  expect_refused(dir_, {"train", "--resume", "misread", "--model", "convlstm"}, {"--resume", "--model"});
  // CUDA graphs on the CPU: refused before the run directory exists.
  expect_refused(dir_, {"train", "--data", "data", "--out", "g", "--cuda-graphs", "--device", "cpu"},
                 {"--cuda-graphs", "CUDA device", "--device cpu"});
  EXPECT_FALSE(fs::exists(dir_ / "g"));
  expect_refused(dir_, {"bench", "--model", "lrcn", "--device", "cpu", "--cuda-graphs"},
                 {"--cuda-graphs", "CUDA device", "--device cpu"});
  expect_refused(
      dir_,
      {"evaluate", "--weights", "misread/model.h5", "--data", "data", "--device", "cpu", "--cuda-graphs"},
      {"--cuda-graphs", "CUDA device", "--device cpu"});
  // TF32 likewise.
  expect_refused(dir_, {"train", "--data", "data", "--out", "t", "--tf32", "--device", "cpu"},
                 {"--tf32", "CUDA device", "--device cpu"});
  EXPECT_FALSE(fs::exists(dir_ / "t"));
  expect_refused(dir_, {"bench", "--model", "lrcn", "--device", "cpu", "--tf32"},
                 {"--tf32", "CUDA device", "--device cpu"});
  expect_refused(dir_,
                 {"evaluate", "--weights", "misread/model.h5", "--data", "data", "--device", "cpu", "--tf32"},
                 {"--tf32", "CUDA device", "--device cpu"});
  expect_refused(
      dir_,
      {"predict", "--weights", "misread/model.h5", "data", "--device", "cpu", "--tf32", "--csv", "tf32.csv"},
      {"--tf32", "CUDA device", "--device cpu"});
  EXPECT_FALSE(fs::exists(dir_ / "tf32.csv"));

  // Non-finite weights load with a warning naming the layer.
  hisvid::models::LoadedModel broken = hisvid::models::load_model((dir_ / "misread/model.h5").string());
  {
    hisvid::Tensor& w = broken.model.layers()[0]->weights()[0].value;
    std::vector<double> v = w.to_vector();
    v[0] = std::nan("");
    w.copy_from(hisvid::Tensor::from_vector(v, w.shape()));
  }
  hisvid::models::save_model((dir_ / "nan.h5").string(), broken.model, broken.extras.class_names, nullptr,
                             nullptr);
  const Result warned = run(dir_, {"predict", "--weights", "nan.h5", "data/Grow/v_Grow_g01_c01.avi"});
  EXPECT_TRUE(contains(warned.output, "warning")) << warned.output;
  EXPECT_TRUE(contains(warned.output, "non-finite")) << warned.output;
  EXPECT_TRUE(contains(warned.output, broken.model.layers()[0]->name())) << warned.output;
  // A model whose outputs are NaN (here through its last layer's kernel): no made-up class (the
  // argmax of NaN) is reported, by any command.
  {
    hisvid::Tensor& w = broken.model.layers().back()->weights()[0].value;
    std::vector<double> v = w.to_vector();
    v[0] = std::nan("");
    w.copy_from(hisvid::Tensor::from_vector(v, w.shape()));
  }
  hisvid::models::save_model((dir_ / "nan_out.h5").string(), broken.model, broken.extras.class_names, nullptr,
                             nullptr);
  expect_refused(dir_, {"predict", "--weights", "nan_out.h5", "data/Grow/v_Grow_g01_c01.avi"},
                 {"nan_out.h5: the model's outputs are NaN or infinite for 1 of 1 clip"});
  expect_refused(
      dir_,
      {"evaluate", "--weights", "nan_out.h5", "--data", "data", "--cache", "clips.h5", "--out", "nan_report"},
      {"nan_out.h5", "NaN or infinite for 20 of 20 clips"});
  EXPECT_FALSE(fs::exists(dir_ / "nan_report" / "report.txt"));
  expect_refused(dir_,
                 {"explain", "--weights", "nan_out.h5", "data/Grow/v_Grow_g01_c01.avi", "--out", "nan.avi"},
                 {"nan_out.h5", "NaN or infinite"});
  EXPECT_FALSE(fs::exists(dir_ / "nan.avi"));

  // CSV fields with a comma are quoted.
  fs::create_directories(dir_ / "odd/Grow");
  fs::copy_file(dir_ / "data/Grow/v_Grow_g01_c01.avi", dir_ / "odd/Grow/a,b.avi");
  const Result csv = run(dir_, {"predict", "--weights", "misread/model.h5", "odd", "--top-k", "1"});
  ASSERT_EQ(csv.status, 0) << csv.output;
  EXPECT_TRUE(contains(csv.output, "\"odd/Grow/a,b.avi\",")) << csv.output;
}

// Splits, classes and folders that cannot work are named in the options' words, before the
// videos are decoded where the folders' listing tells.
TEST_F(Cli, SplitsClassesAndFoldersAreCheckedInTheUsersWords) {
  // Callbacks that watch val_loss without validation clips; a test part that leaves one clip.
  expect_refused(
      dir_, {"train", "--data", "data", "--cache", "clips.h5", "--out", "v0", "--validation-split", "0"},
      {"--validation-split 0", "EarlyStopping monitors val_loss", "--patience -1", "--monitor loss"});
  EXPECT_FALSE(fs::exists(dir_ / "v0" / "history.csv"));
  expect_refused(dir_,
                 {"train", "--data", "data", "--cache", "clips.h5", "--out", "t95", "--test-split", "0.95"},
                 {"20 clips leave 1 to train on", "--test-split 0.95", "--validation-split 0.2"});

  // A model trained on the classes in another order: the order that works is given.
  ASSERT_EQ(train("reordered", 1, {"--classes", "Shrink,Grow,MoveLeft,MoveRight"}).status, 0);
  expect_refused(
      dir_,
      {"train", "--weights", "reordered/model.h5", "--data", "data", "--cache", "clips.h5", "--out", "w2"},
      {"Shrink, Grow, MoveLeft, MoveRight in that order", "add --classes Shrink,Grow,MoveLeft,MoveRight"});
  const Result ordered =
      run(dir_, {"train", "--weights", "reordered/model.h5", "--data", "data", "--cache", "clips.h5", "--out",
                 "w3", "--epochs", "1", "--classes", "Shrink,Grow,MoveLeft,MoveRight"});
  EXPECT_EQ(ordered.status, 0) << ordered.output;

  // evaluate scores a model on one class's videos; the report's averages are over the classes
  // in the truth or the predictions (sklearn's), not the model's other classes.
  const Result one = run(dir_, {"evaluate", "--weights", "reordered/model.h5", "--data", "data", "--cache",
                                "one.h5", "--classes", "Grow"});
  ASSERT_EQ(one.status, 0) << one.output;
  EXPECT_TRUE(contains(one.output, "5 clips of 1 class from data")) << one.output;

  // A run that held out no test clips has none to evaluate; the data folder moved away is named.
  ASSERT_EQ(train("no_test", 1, {"--test-split", "0"}).status, 0);
  expect_refused(dir_, {"evaluate", "--weights", "no_test/model.h5", "--split", "test"},
                 {"held out no test clips", "--data DIR"});
  fs::create_directories(dir_ / "moved");
  fs::create_directory_symlink(fs::absolute(dir_ / "data"), dir_ / "moved" / "data");
  ASSERT_EQ(run(dir_ / "moved", {"train", "--data", "data", "--cache", "none", "--out", "../moved_run",
                                 "--epochs", "1", "--patience", "-1"})
                .status,
            0);
  fs::remove_all(dir_ / "moved");
  expect_refused(dir_, {"evaluate", "--weights", "moved_run/model.h5", "--split", "test"},
                 {"moved/data, which no longer exists", "--data DIR"});
  // --resume likewise, and --data names where the same videos are now; other videos are refused.
  expect_refused(dir_, {"train", "--resume", "moved_run", "--epochs", "2"},
                 {"moved/data, which no longer exists", "--data DIR"});
  fs::copy(dir_ / "data", dir_ / "fewer_data", fs::copy_options::recursive);
  fs::remove(dir_ / "fewer_data/Grow/v_Grow_g01_c01.avi");
  expect_refused(
      dir_, {"train", "--resume", "moved_run", "--epochs", "2", "--data", "fewer_data", "--cache", "none"},
      {"are not those the run was trained on"});
  const Result moved_on =
      run(dir_, {"train", "--resume", "moved_run", "--epochs", "2", "--data", "data", "--cache", "none"});
  EXPECT_EQ(moved_on.status, 0) << moved_on.output;

  // A class folder holding its videos one level down.
  fs::create_directories(dir_ / "nested/Grow/sub");
  fs::create_directories(dir_ / "nested/Shrink");
  fs::copy_file(dir_ / "data/Grow/v_Grow_g01_c01.avi", dir_ / "nested/Grow/sub/a.avi");
  fs::copy_file(dir_ / "data/Shrink/v_Shrink_g01_c01.avi", dir_ / "nested/Shrink/b.avi");
  expect_refused(dir_, {"train", "--data", "nested", "--cache", "none", "--out", "n"},
                 {"class 'Grow' has no video files", "subfolders (sub) are not read"});
  // predict walks a folder as train lists one: hidden files (make-dataset's leftovers) passed over.
  std::ofstream(dir_ / "nested/Shrink/.partial-b.avi") << "";
  fs::copy_file(dir_ / "data/Grow/v_Grow_g01_c01.avi", dir_ / "nested/Grow/.hidden.avi");
  const Result walked = run(dir_, {"predict", "--weights", "reordered/model.h5", "nested", "--csv", "-"});
  ASSERT_EQ(walked.status, 0) << walked.output;
  EXPECT_TRUE(contains(walked.output, "nested/Grow/sub/a.avi,")) << walked.output;
  EXPECT_FALSE(contains(walked.output, ".partial-b.avi")) << walked.output;
  EXPECT_FALSE(contains(walked.output, ".hidden.avi")) << walked.output;

  // Output names that say their format; sizes the machine cannot hold; a demo of one class.
  expect_refused(dir_, {"convert", "reordered/model.h5", "reordered.zip"},
                 {"reordered.zip", ".keras", ".h5"});
  EXPECT_FALSE(fs::exists(dir_ / "reordered.zip"));
  // CLI11's own checks read like every other error.
  expect_refused(dir_, {"make-dataset", "--out", "short", "--frames", "10"},
                 {"hisvid: error: --frames: '10' is not a whole number from 20"});
  expect_refused(dir_, {"make-dataset", "--out", "huge", "--frames", "100000", "--size", "4096"},
                 {"GiB in memory", "fewer frames or a smaller size"});
  EXPECT_FALSE(fs::exists(dir_ / "huge"));
  expect_refused(dir_, {"demo", "--out", "one_class", "--classes", "Grow", "--device", "cpu"},
                 {"--classes Grow", "at least 2 classes"});
  EXPECT_FALSE(fs::exists(dir_ / "one_class"));
}

// Ctrl-C before the first epoch ends: nothing to resume, and the message says so.
TEST_F(Cli, InterruptInTheFirstEpochSuggestsNoResume) {
  // An earlier run in the directory, which --overwrite replaces only once the new run saves.
  ASSERT_EQ(train("early", 1).status, 0);
  const std::string earlier = file_bytes(dir_ / "early/last.h5");
  // A slow model (seconds per epoch on the CPU), interrupted as soon as training starts.
  Process training(dir_,
                   {"train", "--model", "convlstm_deep", "--data", "data", "--epochs", "5", "--out", "early",
                    "--cache", "clips.h5", "--batch-size", "1", "--device", "cpu", "--overwrite"});
  // "split: ..." is printed right before the first batch.
  (void)wait_until([&] { return contains(file_bytes(training.log()), "split:"); }, std::chrono::minutes(2),
                   std::chrono::milliseconds(20));  // late or not, the interrupt comes (the test says which)
  training.interrupt();
  const Result r = training.wait();
  EXPECT_EQ(r.status, 1) << r.output;
  if (!contains(r.output, "interrupted during epoch 1"))
    GTEST_SKIP() << "the interrupt came late: " << r.output;
  EXPECT_TRUE(contains(r.output, "nothing was saved (the earlier run in early is as it was)")) << r.output;
  EXPECT_FALSE(contains(r.output, "--resume")) << r.output;
  EXPECT_EQ(file_bytes(dir_ / "early/last.h5"), earlier);
}

// Ctrl-C in a command other than train ends it by the signal (the exit status says so) and
// takes the file it was writing with it: here evaluate --stream building its clip cache, whose
// temporary file exists while the videos are decoded.
TEST_F(Cli, CtrlCRemovesTheFileBeingWritten) {
  ASSERT_EQ(train("signal_model", 1).status, 0);
  const Result made =
      run(dir_, {"make-dataset", "--out", "signal_data", "--clips-per-class", "24", "--frames", "40",
                 "--size", "96", "--classes", "MoveLeft,MoveRight,Grow,Shrink"});
  ASSERT_EQ(made.status, 0) << made.output;
  const auto temporaries = [&] {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir_)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("signal.h5.tmp-", 0) == 0) names.push_back(name);
    }
    return names;
  };
  Process evaluating(dir_, {"evaluate", "--weights", "signal_model/model.h5", "--data", "signal_data",
                            "--cache", "signal.h5", "--stream", "--workers", "1"});
  ASSERT_TRUE(wait_until([&] { return !temporaries().empty(); }, std::chrono::minutes(2),
                         std::chrono::milliseconds(5)))
      << "the cache was never being written";
  evaluating.interrupt();
  const Result r = evaluating.wait();
  if (fs::exists(dir_ / "signal.h5")) GTEST_SKIP() << "the interrupt came after the cache was written";
  EXPECT_EQ(r.status, 128 + SIGINT) << r.output;
  EXPECT_TRUE(contains(r.output, "hisvid: ended by SIGINT; files saved before it stay as they were"))
      << r.output;
  EXPECT_TRUE(temporaries().empty()) << temporaries().front();
}

// GNU timeout signals the command and then its whole process group: the same signal twice at once
// from one process. That is one request to stop (the run saves and says so), not a second Ctrl-C.
TEST_F(Cli, OneSenderSignallingTwiceAtOnceStopsTheRunOnce) {
  Process training(dir_, long_training("signalled_twice"));
  const fs::path last = dir_ / "signalled_twice/last.h5";
  ASSERT_TRUE(
      wait_until([&] { return fs::exists(last); }, std::chrono::minutes(3), std::chrono::milliseconds(100)))
      << "no checkpoint appeared";
  training.terminate_twice();
  const Result r = training.wait();
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "interrupted during epoch")) << r.output;
  EXPECT_TRUE(contains(r.output, "--resume")) << r.output;
}

}  // namespace
