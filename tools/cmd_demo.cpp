// hisvid demo: the seeds' experiment on the built-in dataset — make the synthetic videos,
// train the LRCN and the ConvLSTM with the tutorial's settings (Adam, batch 4, early stopping
// on val_loss restoring the best weights), evaluate both on the held-out split and print the
// seeds' comparison table.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>

#include "engine/device.h"
#include "io/atomic_file.h"
#include "io/synthetic.h"
#include "models/demo_recipe.h"
#include "models/sequential.h"
#include "tools/commands.h"
#include "tools/training.h"
#include "tools/validators.h"

namespace hisvid::tools {

namespace {

namespace fs = std::filesystem;

// The mark of a folder the demo made (so that a later demo may replace what it holds).
constexpr const char* kDemoMark = ".hisvid-demo";
// What a demo writes into its folder (data/, clips.h5, lrcn/, convlstm/, temporaries beside
// clips.h5 and hidden .hisvid files).
bool demo_entry(const std::string& name) {
  return name == "data" || name == "lrcn" || name == "convlstm" || name.rfind("clips.h5", 0) == 0 ||
         name.rfind(".hisvid", 0) == 0;
}

// Fails, naming --out, unless `out` is new, empty, or a demo's folder: marked (kDemoMark), or
// laid out as one by a hisvid older than the mark (demo entries only, with the built-in dataset's
// record in data/). The demo replaces its dataset and runs there; anything else is not its to replace.
void require_demo_folder(const std::string& out) {
  std::error_code error;
  const fs::path dir(out);
  if (!fs::exists(dir, error)) return;
  if (!fs::is_directory(dir, error))
    fail("--out {}: exists and is not a folder; give the demo a folder", out);
  if (fs::exists(dir / kDemoMark, error)) return;
  std::vector<std::string> foreign;
  bool empty = true;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    empty = false;
    const std::string name = entry.path().filename().string();
    if (!demo_entry(name)) foreign.push_back(name);
  }
  if (error) fail("--out {}: cannot read the folder: {}", out, error.message());
  if (empty) return;
  if (foreign.empty() && fs::exists(dir / "data" / ".hisvid-synthetic.json", error)) return;
  const std::string what =
      foreign.empty() ? "no built-in dataset in data/"
                      : fmt::format("{}{}",
                                    fmt::join(foreign.begin(),
                                              foreign.begin() + std::min<size_t>(foreign.size(), 5), ", "),
                                    foreign.size() > 5 ? ", ..." : "");
  fail(
      "--out {}: is not a folder an earlier demo made ({}); the demo replaces the dataset and runs in its "
      "folder, so it starts only in a new or empty one, or in its own: choose another --out",
      out, what);
}

}  // namespace

void add_demo_command(CLI::App& app) {
  // The demo's defaults are models/demo_recipe.h's (the tutorial's own settings are 70 epochs and
  // patience 15).
  struct Args {
    std::string out = "demo", device = "auto";
    std::string classes = fmt::format("{}", fmt::join(models::demo::classes(), ","));
    int lrcn_epochs = models::demo::kLrcnEpochs, convlstm_epochs = models::demo::kConvLstmEpochs;
    int patience = models::demo::kPatience, clips_per_class = models::demo::kClipsPerClass;
    uint64_t seed = models::demo::kSeed;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd =
      app.add_subcommand("demo", "Make the built-in dataset, train lrcn and convlstm, compare them");
  cmd->add_option("--out", args->out, "Working folder (dataset, runs, reports)")->capture_default_str();
  cmd->add_option("--lrcn-epochs", args->lrcn_epochs, "Maximum epochs of the LRCN")
      ->capture_default_str()
      ->check(integer_in(1, 10000));
  cmd->add_option("--convlstm-epochs", args->convlstm_epochs, "Maximum epochs of the ConvLSTM")
      ->capture_default_str()
      ->check(integer_in(1, 10000));
  cmd->add_option("--patience", args->patience, "EarlyStopping patience")
      ->capture_default_str()
      ->check(integer_in(-1, 1000000));
  cmd->add_option("--clips-per-class", args->clips_per_class, "Videos per class")
      ->capture_default_str()
      ->check(integer_in(1, 100000));
  cmd->add_option("--classes", args->classes, "Classes of the built-in dataset to use")
      ->capture_default_str()
      ->check(non_empty());
  cmd->add_option("--seed", args->seed, "Seed of the split and of training")
      ->capture_default_str()
      ->check(seed_value());
  cmd->add_option("--device", args->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->callback([args] {
    Console console;
    const Device device = device_option(args->device);  // before any work
    io::SyntheticSpec spec;
    spec.out_dir = args->out + "/data";
    spec.clips_per_class = args->clips_per_class;
    spec.classes = split_names(args->classes, "--classes");
    if (spec.classes.size() < 2) {
      fail("--classes {}: the demo trains classifiers, which need at least 2 classes", args->classes);
    }
    (void)io::synthetic_classes(spec);  // an unknown class refused before the folder is touched
    spec.replace = true;                // the demo's folder is its own: other settings replace its dataset
    require_demo_folder(args->out);
    std::error_code error;
    for (const char* model : {"lrcn", "convlstm"}) {
      if (fs::exists(fs::path(args->out) / model / "model.h5", error)) {
        console.note(
            fmt::format("note: {} holds an earlier demo; this one replaces its runs (and its dataset where "
                        "the settings differ)",
                        args->out));
        break;
      }
    }
    fs::create_directories(args->out, error);
    if (error) fail("--out {}: cannot make the folder: {}", args->out, error.message());
    io::write_file_atomically(
        (fs::path(args->out) / kDemoMark).string(),
        "A folder of `hisvid demo`: a later demo replaces its data/, clips.h5, lrcn/ and "
        "convlstm/.\n");
    const auto start = std::chrono::steady_clock::now();
    console.line(fmt::format("== built-in dataset: {}", spec.out_dir));
    const std::vector<std::string> files = io::make_synthetic_dataset(spec);
    console.line(fmt::format("{} videos, {} classes in pairs that differ only in time direction",
                             files.size(), spec.classes.size()));
    std::vector<TrainOutcome> outcomes;
    for (const char* model : {"lrcn", "convlstm"}) {
      TrainArgs a;
      a.model = model;
      a.data.root = spec.out_dir;
      a.data.cache = args->out + "/clips.h5";
      a.epochs = std::string(model) == "lrcn" ? args->lrcn_epochs : args->convlstm_epochs;
      a.patience = args->patience;
      a.seed = args->seed;
      a.device = args->device;
      a.out_dir = args->out + "/" + model;
      a.overwrite = true;  // the demo's folder is its own: a new demo replaces the runs of the last one
      console.line(
          fmt::format("\n== training {} on {} (Adam, batch 4, at most {} epochs, EarlyStopping(val_loss, "
                      "patience {}, restore_best_weights))",
                      model, device.str(), a.epochs, args->patience));
      outcomes.push_back(run_training(a, console));
    }
    const double minutes =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 60.0;
    console.line("\n== the seeds' comparison, on the built-in dataset (" + device.str() + ")");
    console.line(fmt::format("{:<10}{:>10}{:>8}{:>10}{:>10}{:>10}{:>16}{:>16}", "model", "params", "epochs",
                             "test loss", "accuracy", "macro F1", "train ms/step", "eval ms/step"));
    for (const TrainOutcome& o : outcomes) {
      console.line(fmt::format("{:<10}{:>10}{:>8}{:>10.4f}{:>9.2f}%{:>10.4f}{:>16.1f}{:>16.1f}", o.model_name,
                               models::with_commas(o.params.total), o.fit.history.size(), o.test.loss,
                               100.0 * o.test.accuracy, o.report.macro.f1, o.train_ms_per_step,
                               o.test.ms_per_step));
    }
    console.line(
        "(training: batch 4; evaluation: batch 32, as Keras's evaluate; ms/step measured in this run)");
    console.line(
        "seeds (UCF50, Keras, unnamed GPU): lrcn loss 0.1935, accuracy 95.08%, 40 ms/step; "
        "convlstm loss 0.3773, accuracy 87.70%, 205 ms/step");
    for (const TrainOutcome& o : outcomes) {
      console.line(fmt::format("{}: {}/report.txt, {}/confusion.png, {}/curves.png, {}/model.h5",
                               o.model_name, o.out_dir, o.out_dir, o.out_dir, o.out_dir));
    }
    console.line(fmt::format("demo finished in {:.1f} minutes", minutes));
  });
}

}  // namespace hisvid::tools
