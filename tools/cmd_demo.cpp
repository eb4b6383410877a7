// hisvid demo: the seeds' experiment on the built-in dataset — make the synthetic videos,
// train the LRCN and the ConvLSTM with the tutorial's settings (Adam, batch 4, early stopping
// on val_loss restoring the best weights), evaluate both on the held-out split and print the
// seeds' comparison table.
#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <memory>

#include "engine/device.h"
#include "io/synthetic.h"
#include "models/sequential.h"
#include "tools/commands.h"
#include "tools/training.h"
#include "tools/validators.h"

namespace hisvid::tools {

void add_demo_command(CLI::App& app) {
  // The demo's defaults fit the whole run (build included) in 10 minutes on a 2-core CPU: the
  // three pairs of the built-in dataset that move or scale (its Orbit pair is left out), 80 clips
  // per class, at most 40 epochs for the LRCN (2-3 s each) and 16 for the ConvLSTM (~15 s each),
  // EarlyStopping patience 8. The tutorial's own settings are 70 epochs and patience 15.
  struct Args {
    std::string out = "demo", device = "auto";
    std::string classes = "MoveLeft,MoveRight,MoveUp,MoveDown,Grow,Shrink";
    int lrcn_epochs = 40, convlstm_epochs = 16, patience = 8, clips_per_class = 80;
    uint64_t seed = 27;
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
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed of the split and of training")
      ->capture_default_str()
      ->check(seed_value());
  cmd->add_option("--device", args->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->callback([args] {
    Console console;
    const Device device = device_option(args->device);  // before any work
    std::error_code error;
    for (const char* model : {"lrcn", "convlstm"}) {
      if (std::filesystem::exists(std::filesystem::path(args->out) / model / "model.h5", error)) {
        console.note(
            fmt::format("note: {} holds an earlier demo; this one replaces its runs (and its dataset where "
                        "the settings differ)",
                        args->out));
        break;
      }
    }
    const auto start = std::chrono::steady_clock::now();
    io::SyntheticSpec spec;
    spec.out_dir = args->out + "/data";
    spec.clips_per_class = args->clips_per_class;
    spec.classes = split_names(args->classes, "--classes");
    if (spec.classes.size() < 2) {
      fail("--classes {}: the demo trains classifiers, which need at least 2 classes", args->classes);
    }
    spec.replace = true;  // the demo's folder is its own: other settings replace its dataset
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
