// hisvid demo: the seeds' experiment on the built-in dataset — make the synthetic videos,
// train the LRCN and the ConvLSTM with the tutorial's settings (Adam, batch 4, early stopping
// on val_loss restoring the best weights), evaluate both on the held-out split and print the
// seeds' comparison table.
#include <chrono>
#include <memory>

#include <fmt/format.h>

#include "engine/device.h"
#include "io/synthetic.h"
#include "models/sequential.h"
#include "tools/commands.h"
#include "tools/training.h"

namespace hisvid::tools {

void add_demo_command(CLI::App& app) {
  struct Args {
    std::string out = "demo", device = "auto";
    int epochs = 70, patience = 15, clips_per_class = 0;
    uint64_t seed = 27;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("demo", "Make the built-in dataset, train lrcn and convlstm, compare them");
  cmd->add_option("--out", args->out, "Working folder (dataset, runs, reports)")->capture_default_str();
  cmd->add_option("--epochs", args->epochs, "Maximum epochs per model")->capture_default_str()->check(CLI::Range(1, 10000));
  cmd->add_option("--patience", args->patience, "EarlyStopping patience")->capture_default_str();
  cmd->add_option("--clips-per-class", args->clips_per_class, "Videos per class (default: the generator's)");
  cmd->add_option("--seed", args->seed, "Seed of the split and of training")->capture_default_str();
  cmd->add_option("--device", args->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->callback([args] {
    Console console;
    const auto start = std::chrono::steady_clock::now();
    io::SyntheticSpec spec;
    spec.out_dir = args->out + "/data";
    if (args->clips_per_class > 0) spec.clips_per_class = args->clips_per_class;
    console.line(fmt::format("== built-in dataset: {}", spec.out_dir));
    const std::vector<std::string> files = io::make_synthetic_dataset(spec);
    console.line(fmt::format("{} videos, {} classes in pairs that differ only in time direction", files.size(),
                             io::synthetic_class_names().size()));
    std::vector<TrainOutcome> outcomes;
    for (const char* model : {"lrcn", "convlstm"}) {
      TrainArgs a;
      a.model = model;
      a.data.root = spec.out_dir;
      a.data.cache = args->out + "/clips.h5";
      a.epochs = args->epochs;
      a.patience = args->patience;
      a.seed = args->seed;
      a.device = args->device;
      a.out_dir = args->out + "/" + model;
      console.line(fmt::format("\n== training {} on {} (Adam, batch 4, EarlyStopping(val_loss, patience {}))", model,
                               parse_device(args->device).str(), args->patience));
      outcomes.push_back(run_training(a, console));
    }
    const double minutes = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 60.0;
    console.line("\n== the seeds' comparison, on the built-in dataset (" + parse_device(args->device).str() + ")");
    console.line(fmt::format("{:<10}{:>10}{:>8}{:>10}{:>10}{:>10}{:>16}{:>16}", "model", "params", "epochs",
                             "test loss", "accuracy", "macro F1", "train ms/step", "eval ms/step"));
    for (const TrainOutcome& o : outcomes) {
      console.line(fmt::format("{:<10}{:>10}{:>8}{:>10.4f}{:>9.2f}%{:>10.4f}{:>16.1f}{:>16.1f}", o.model_name,
                               models::with_commas(o.params.total), o.fit.history.size(), o.test.loss,
                               100.0 * o.test.accuracy, o.report.macro.f1, o.train_ms_per_step, o.test.ms_per_step));
    }
    console.line("(training: batch 4; evaluation: batch 32, as Keras's evaluate; ms/step measured in this run)");
    console.line("seeds (UCF50, Keras, unnamed GPU): lrcn loss 0.1935, accuracy 95.08%, 40 ms/step; "
                 "convlstm loss 0.3773, accuracy 87.70%, 205 ms/step");
    for (const TrainOutcome& o : outcomes) {
      console.line(fmt::format("{}: {}/report.txt, {}/confusion.png, {}/curves.png, {}/model.h5", o.model_name,
                               o.out_dir, o.out_dir, o.out_dir, o.out_dir));
    }
    console.line(fmt::format("demo finished in {:.1f} minutes", minutes));
  });
}

}  // namespace hisvid::tools
