// End to end through the hisvid binary, as a user runs it: make a tiny dataset, train 2 epochs,
// evaluate, predict (with an annotated video), hit the clip cache on a second run; and every
// bad input: missing/empty roots, unusable class folders, too few classes, corrupt and non-video
// files, a corrupt cache, Ctrl-C during training and a disk that fills up while checkpointing.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <opencv2/videoio.hpp>

#include "models/model_file.h"

namespace {

namespace fs = std::filesystem;

struct Result {
  int status = -1;  // exit status, or 128 + signal
  std::string output;
};

// Runs `hisvid args...` in dir with stdout and stderr captured; limit_bytes > 0 caps the size of
// any file the process writes (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full disk).
class Process {
 public:
  Process(const fs::path& dir, const std::vector<std::string>& args, rlim_t limit_bytes = 0)
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
      std::vector<char*> argv;
      static std::string binary = HISVID_BINARY;
      argv.push_back(binary.data());
      std::vector<std::string> copy = args;
      for (std::string& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
  }
  void interrupt() const { kill(pid_, SIGINT); }
  Result wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    Result r;
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

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A temporary directory holding a small generated dataset of 4 classes (two time-reversed pairs).
class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("hisvid_cli_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const Result made = run(dir_, {"make-dataset", "--out", "data", "--clips-per-class", "5", "--frames", "24",
                                   "--size", "64", "--classes", "MoveLeft,MoveRight,Grow,Shrink"});
    ASSERT_EQ(made.status, 0) << made.output;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  // Trains lrcn for `epochs` on the dataset (no early stopping) into out.
  static Result train(const std::string& out, int epochs, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"train", "--model", "lrcn", "--data", "data", "--epochs", std::to_string(epochs),
                                     "--out", out, "--cache", "clips.h5", "--patience", "-1"};
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

  const Result evaluated = run(dir_, {"evaluate", "--weights", "run/model.h5", "--split", "test", "--out", "eval"});
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
}

TEST_F(Cli, MissingEmptyAndUnusableData) {
  const Result missing = run(dir_, {"train", "--data", "no_such_dir", "--out", "x", "--epochs", "1"});
  EXPECT_EQ(missing.status, 1);
  EXPECT_TRUE(contains(missing.output, "no_such_dir")) << missing.output;

  fs::create_directories(dir_ / "empty");
  const Result empty = run(dir_, {"train", "--data", "empty", "--out", "x", "--epochs", "1"});
  EXPECT_EQ(empty.status, 1);
  EXPECT_TRUE(contains(empty.output, "empty")) << empty.output;

  // A class folder whose only "video" is text, beside a good class: named, with the reason.
  fs::create_directories(dir_ / "bad/Good");
  fs::create_directories(dir_ / "bad/Broken");
  fs::copy_file(dir_ / "data/Grow/v_Grow_g01_c01.avi", dir_ / "bad/Good/a.avi");
  std::ofstream(dir_ / "bad/Broken/notes.avi") << "not a video\n";
  const Result unusable = run(dir_, {"train", "--data", "bad", "--out", "x", "--epochs", "1", "--cache", "none"});
  EXPECT_EQ(unusable.status, 1);
  EXPECT_TRUE(contains(unusable.output, "Broken")) << unusable.output;

  const Result one_class = run(dir_, {"train", "--data", "data", "--classes", "Grow", "--out", "x", "--epochs", "1"});
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
  const Result r = run(dir_, {"train", "--data", "mixed", "--epochs", "1", "--out", "mixed_run", "--cache", "none"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "skipped 2 files")) << r.output;
  EXPECT_TRUE(contains(r.output, "fake.avi")) << r.output;
  EXPECT_TRUE(contains(r.output, "truncated.avi")) << r.output;
}

TEST_F(Cli, CorruptCacheIsRebuiltWithAMessage) {
  std::ofstream(dir_ / "garbage.h5") << "definitely not HDF5";
  const Result r = run(dir_, {"train", "--data", "data", "--epochs", "1", "--out", "cache_run", "--cache", "garbage.h5"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "rebuilt")) << r.output;
}

TEST_F(Cli, CtrlCKeepsTheLastCompleteCheckpointAndResumes) {
  Process training(dir_, {"train", "--model", "lrcn", "--data", "data", "--epochs", "200", "--out", "interrupted",
                          "--cache", "clips.h5", "--patience", "-1"});
  const fs::path last = dir_ / "interrupted/last.h5";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
  while (!fs::exists(last) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(fs::exists(last)) << "no checkpoint appeared";
  training.interrupt();
  const Result r = training.wait();
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.output, "interrupted")) << r.output;
  EXPECT_TRUE(contains(r.output, "--resume")) << r.output;
  const hisvid::models::LoadedModel saved = hisvid::models::load_model(last.string());
  const int epochs_done = saved.extras.training_state["epoch"].get<int>();
  EXPECT_GE(epochs_done, 1);

  const Result resumed = run(dir_, {"train", "--resume", "interrupted", "--epochs", std::to_string(epochs_done + 1)});
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "resuming")) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, fmt::format("Epoch {}/{}", epochs_done + 1, epochs_done + 1))) << resumed.output;
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
  std::ifstream after_in(last, std::ios::binary);
  const std::string after((std::istreambuf_iterator<char>(after_in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(after, before);  // untouched, still the epoch-1 checkpoint
  EXPECT_EQ(hisvid::models::load_model(last.string()).extras.training_state["epoch"].get<int>(), 1);
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
}

// Keras files of every version through the binary, as users with a model of their own run it:
// summary of each, a Keras 3 .keras file trained one more epoch (with its own Adam state), a
// binary (one sigmoid unit) model classifying, evaluated and trained.
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

}  // namespace
