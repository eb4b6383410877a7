// bench/precision.cpp — hisvid_precision: training in float32 and under TF32 on the built-in
// dataset, for accuracy and speed side by side.
//
//   hisvid_precision [--models lrcn,convlstm] [--precisions float32,tf32] [--device auto]
//                    [--clips-per-class 80] [--classes A,B,..] [--lrcn-epochs 40]
//                    [--convlstm-epochs 40] [--patience 10] [--seed 27] [--cuda-graphs]
//                    [--json FILE]
//
// The run is `hisvid demo`'s (models/demo_recipe.h): the same classes and clips, the 75/25 split
// with seed 27 and its validation part, the zoo's models, Adam at batch 4, at most 40 epochs
// with EarlyStopping(val_loss, patience 10, restore_best_weights), evaluation at batch 32. The
// clips come straight from the generator (io::synthetic_clip_set: the files' clips without
// their MJPG round trip), so the program needs no video library and runs on the GPU machines
// (scripts/device-kit carries it, scripts/gpu-check's `precision` phase runs it).
//
// Each model is trained once per entry of --precisions, each time from the same initial weights
// with the same seed (the same batches, dropout masks and augmentation draws):
//   float32  full float32 everywhere (hisvid's default);
//   tf32     cuBLAS's GEMMs and cuDNN's convolutions on TF32 tensor cores (`--tf32` of the CLI);
//            the hand-written kernels stay float32. A CUDA device only.
// The table gives each run's epochs, test loss, accuracy and macro F1, its median training
// ms/step and its evaluation ms/step, and against the first entry's run of the same model the
// share of test clips given the same class and the largest difference of a class probability.
// The same precision twice (`--precisions float32,float32`) shows whether training is
// reproducible on the device: 100% alike and a difference of 0.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "bench/step.h"
#include "engine/build_info.h"
#include "engine/cuda_device.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/optimizer.h"
#include "io/atomic_file.h"
#include "io/synthetic.h"
#include "models/demo_recipe.h"
#include "models/metrics.h"
#include "models/trainer.h"
#include "models/zoo.h"

namespace hisvid::bench {
namespace {

struct Args {
  std::vector<std::string> models = {"lrcn", "convlstm"};
  std::vector<std::string> precisions = {"float32", "tf32"};
  std::string device = "auto";
  // hisvid demo's
  std::vector<std::string> classes = models::demo::classes();
  int clips_per_class = models::demo::kClipsPerClass, lrcn_epochs = models::demo::kLrcnEpochs;
  int convlstm_epochs = models::demo::kConvLstmEpochs, patience = models::demo::kPatience;
  uint64_t seed = models::demo::kSeed;
  bool cuda_graphs = false;
  std::string json;
};

struct Run {
  std::string model, precision;
  int epochs = 0, best_epoch = 0;
  double train_ms_per_step = 0, seconds = 0;
  models::Evaluation test;
  models::ClassificationReport report;
  double same_class = 1.0, largest_probability_difference = 0.0;  // against the model's first run
};

// A list option's names (CLI11 splits them at commas): at least one, none empty.
void check_names(const std::vector<std::string>& names, const char* option) {
  if (names.empty() ||
      std::any_of(names.begin(), names.end(), [](const std::string& n) { return n.empty(); }))
    fail("{}: give comma-separated names, none empty (got '{}')", option, fmt::join(names, ","));
}

int max_epochs(const Args& args, const std::string& model) {
  if (model.rfind("convlstm", 0) == 0) return args.convlstm_epochs;
  return args.lrcn_epochs;
}

Run train_once(const Args& args, const std::string& name, const std::string& precision,
               const io::ClipSet& clips, const io::Split& split, Device device) {
  if (device.is_cuda()) cuda_set_allow_tf32(device, precision == "tf32");
  models::Sequential model = models::load_spec(name, static_cast<int>(clips.class_names.size()));
  model.build(args.seed);
  model.to(device);
  std::unique_ptr<Optimizer> optimizer = make_optimizer("adam");
  models::FitOptions options;
  options.epochs = max_epochs(args, name);
  options.batch_size = 4;
  options.early_stopping = models::EarlyStoppingConfig{"val_loss", args.patience, 0.0, true};
  options.cuda_graphs = args.cuda_graphs;
  options.class_names = clips.class_names;
  models::Trainer trainer(model, *optimizer, clips, split, options, args.seed);
  models::FitProgress progress;
  progress.on_epoch = [&](const models::EpochLog& log) {
    std::printf("  %s %s epoch %d: loss %.4f accuracy %.4f val_loss %.4f val_accuracy %.4f (%.2f ms/step)\n",
                name.c_str(), precision.c_str(), log.epoch, log.loss, log.accuracy, log.val_loss,
                log.val_accuracy, log.ms_per_step);
    std::fflush(stdout);
  };
  progress.on_message = [](const std::string& text) { std::printf("  %s\n", text.c_str()); };
  const auto start = std::chrono::steady_clock::now();
  const models::FitResult fit = trainer.fit(progress);
  if (fit.non_finite_loss) {
    fail("{} under {}: the loss became NaN or infinite at epoch {} batch {}", name, precision,
         fit.failed_epoch, fit.failed_step);
  }
  Run run;
  run.model = name;
  run.precision = precision;
  run.epochs = static_cast<int>(fit.history.size());
  run.best_epoch = fit.best_epoch;
  std::vector<double> step_ms;
  for (const models::EpochLog& log : fit.history) step_ms.push_back(log.ms_per_step);
  run.train_ms_per_step = median(step_ms);
  std::vector<int> identity(clips.class_names.size());
  for (size_t k = 0; k < identity.size(); ++k) identity[k] = static_cast<int>(k);
  run.test = models::evaluate(model, clips, split.test, 32, identity, args.cuda_graphs);
  const std::string graph = models::graph_note(run.test.graph_status, "test evaluation step");
  if (!graph.empty()) std::printf("  %s\n", graph.c_str());
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run.report = models::classification_report(run.test.truth, run.test.predicted, clips.class_names);
  if (device.is_cuda()) cuda_set_allow_tf32(device, false);
  return run;
}

// How far `run`'s test predictions are from `first`'s.
void compare(Run& run, const Run& first) {
  size_t same = 0;
  double largest = 0;
  for (size_t i = 0; i < run.test.predicted.size(); ++i) {
    same += run.test.predicted[i] == first.test.predicted[i];
    for (size_t k = 0; k < run.test.probs[i].size(); ++k) {
      largest =
          std::max(largest, std::abs(static_cast<double>(run.test.probs[i][k]) - first.test.probs[i][k]));
    }
  }
  run.same_class = run.test.predicted.empty() ? 1.0 : static_cast<double>(same) / run.test.predicted.size();
  run.largest_probability_difference = largest;
}

// The run's row of the table printed at the end.
std::string table_row(const Run& run) {
  return fmt::format("| {} | {} | {} ({}) | {:.4f} | {:.2f}% | {:.4f} | {:.3f} | {:.3f} | {:.1f}% | {:.2e} |",
                     run.model, run.precision, run.epochs, run.best_epoch, run.test.loss,
                     100.0 * run.test.accuracy, run.report.macro.f1, run.train_ms_per_step,
                     run.test.ms_per_step, 100.0 * run.same_class, run.largest_probability_difference);
}

nlohmann::json to_json(const Run& run) {
  return {{"model", run.model},
          {"precision", run.precision},
          {"epochs", run.epochs},
          {"best_epoch", run.best_epoch},
          {"test_loss", run.test.loss},
          {"test_accuracy", run.test.accuracy},
          {"macro_f1", run.report.macro.f1},
          {"train_ms_per_step", run.train_ms_per_step},
          {"eval_ms_per_step", run.test.ms_per_step},
          {"seconds", run.seconds},
          {"same_class_as_first", run.same_class},
          {"largest_probability_difference", run.largest_probability_difference},
          {"predicted", run.test.predicted}};
}

int run_all(const Args& args) {
  const Device device = parse_device(args.device);
  check_names(args.models, "--models");
  check_names(args.precisions, "--precisions");
  check_names(args.classes, "--classes");
  const std::vector<std::string>& model_names = args.models;
  const std::vector<std::string>& precisions = args.precisions;
  for (const std::string& precision : precisions) {
    if (precision != "float32" && precision != "tf32") {
      fail("--precisions: '{}' is not a precision (float32 or tf32)", precision);
    }
    if (precision == "tf32" && !device.is_cuda()) {
      fail("--precisions {}: tf32 needs a CUDA device, and --device {} is {}",
           fmt::join(args.precisions, ","), args.device, device.str());
    }
  }
  if (args.cuda_graphs && !device.is_cuda()) {
    fail("--cuda-graphs needs a CUDA device, and --device {} is {}", args.device, device.str());
  }
  for (const std::string& name : model_names) {
    models::load_spec(name, 0, "--models");  // an unknown name fails before any work
  }
  if (!args.json.empty()) {  // found before the trainings, not after them
    const std::filesystem::path folder = std::filesystem::absolute(args.json).parent_path();
    if (!std::filesystem::is_directory(folder) || ::access(folder.c_str(), W_OK) != 0)
      fail("--json {}: {} is not a folder this process can write into", args.json, folder.string());
  }

  io::SyntheticSpec spec;
  spec.clips_per_class = args.clips_per_class;
  spec.classes = args.classes;
  std::printf(
      "built-in dataset: %s, %d clips per class, seed %llu, generated in memory (no MJPG round trip)\n",
      fmt::format("{}", fmt::join(args.classes, ",")).c_str(), spec.clips_per_class,
      static_cast<unsigned long long>(spec.seed));
  std::printf(
      "device %s; training as hisvid demo: Adam, batch 4, EarlyStopping(val_loss, patience %d, "
      "restore_best_weights), seed %llu%s\n",
      device.str().c_str(), args.patience, static_cast<unsigned long long>(args.seed),
      args.cuda_graphs ? ", steps replayed from CUDA graphs" : "");

  std::map<std::tuple<int, int, int, int>, io::ClipSet> clip_sets;  // by extraction (T, H, W, C)
  std::vector<Run> runs;
  for (const std::string& name : model_names) {
    const Shape input = models::load_spec(name).input_shape();
    if (input.rank() != 4) fail("--models {}: its input shape {} is not (T, H, W, C)", name, input.str());
    const io::ExtractionSettings extraction{static_cast<int>(input[0]), static_cast<int>(input[1]),
                                            static_cast<int>(input[2]), static_cast<int>(input[3])};
    const auto key =
        std::make_tuple(extraction.sequence_length, extraction.height, extraction.width, extraction.channels);
    if (clip_sets.count(key) == 0) {
      const auto start = std::chrono::steady_clock::now();
      clip_sets[key] = io::synthetic_clip_set(spec, extraction);
      std::printf("%zu clips of %d x %d x %d x %d in %.1f s\n", clip_sets[key].size(),
                  extraction.sequence_length, extraction.height, extraction.width, extraction.channels,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    const io::ClipSet& clips = clip_sets[key];
    const io::Split split = io::split_clips(clips.size(), 0.25, 0.2, args.seed);
    std::printf("%s: %zu training, %zu validation, %zu test clips\n", name.c_str(), split.train.size(),
                split.validation.size(), split.test.size());
    const size_t first = runs.size();
    for (const std::string& precision : precisions) {
      std::printf("== %s, %s\n", name.c_str(), precision.c_str());
      std::fflush(stdout);
      runs.push_back(train_once(args, name, precision, clips, split, device));
      compare(runs.back(), runs[first]);
      // The run's row at once: a run stopped by a time limit later keeps the ones done.
      std::printf("done: %s\n", table_row(runs.back()).c_str());
      std::fflush(stdout);
    }
  }

  std::printf(
      "\n| model | precision | epochs (best) | test loss | accuracy | macro F1 | train ms/step | "
      "eval ms/step | same class as %s | largest probability difference |\n",
      precisions.front().c_str());
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Run& run : runs) std::printf("%s\n", table_row(run).c_str());
  std::printf(
      "(device %s; training batch 4, evaluation batch 32; ms/step: median over the epochs / the test "
      "split's steps)\n",
      device.str().c_str());

  if (!args.json.empty()) {
    nlohmann::json out = {{"device", device.str()},
                          {"hisvid_commit", hisvid::build_commit()},
                          {"classes", spec.classes},
                          {"clips_per_class", spec.clips_per_class},
                          {"seed", args.seed},
                          {"cuda_graphs", args.cuda_graphs},
                          {"runs", nlohmann::json::array()}};
    for (const Run& run : runs) out["runs"].push_back(to_json(run));
    io::write_atomically(args.json, [&](const std::string& temp) {
      std::ofstream file(temp);
      file << out.dump(2) << "\n";
      file.close();
      if (!file) fail("--json {}: cannot write {}", args.json, temp);
    });
  }
  return 0;
}

}  // namespace
}  // namespace hisvid::bench

int main(int argc, char** argv) {
  hisvid::bench::Args args;
  CLI::App app{"hisvid_precision: float32 and TF32 training on the built-in dataset, accuracy and speed"};
  app.add_option("--models", args.models, "Zoo models to train, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--precisions", args.precisions,
                 "float32 and/or tf32, comma-separated; the first is the "
                 "reference of the comparison")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--device", args.device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  app.add_option("--clips-per-class", args.clips_per_class, "Clips per class")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--classes", args.classes, "Classes of the built-in dataset, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--lrcn-epochs", args.lrcn_epochs, "Most epochs of a model other than a ConvLSTM")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("--convlstm-epochs", args.convlstm_epochs, "Most epochs of a ConvLSTM model")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("--patience", args.patience, "EarlyStopping patience")
      ->capture_default_str()
      ->check(CLI::Range(0, 10000));
  app.add_option("--seed", args.seed, "Seed of the split, the initial weights and training")
      ->capture_default_str();
  app.add_flag("--cuda-graphs", args.cuda_graphs,
               "Replay the training, validation and test steps from CUDA graphs (a CUDA device)");
  app.add_option("--json", args.json, "Also write the runs here (JSON)");
  CLI11_PARSE(app, argc, argv);
  try {
    return hisvid::bench::run_all(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hisvid_precision: %s\n", e.what());
    return 1;
  }
}
