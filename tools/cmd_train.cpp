// hisvid train: fit a model on a UCF50-style folder, checkpoint every epoch, evaluate on the
// held-out split, write the report and pictures.
#include <filesystem>
#include <memory>

#include "tools/commands.h"
#include "tools/training.h"
#include "tools/validators.h"

namespace hisvid::tools {

void add_data_options(CLI::App* cmd, DataArgs& data, std::shared_ptr<std::string> classes) {
  cmd->add_option("--data", data.root, "Dataset root: ROOT/<Class>/<video>");
  cmd->add_option("--classes", *classes, "Comma-separated class folders to use (default: all)")
      ->check(non_empty());
  cmd->add_option("--num-classes", data.num_classes, "Use this many classes, chosen with the seed")
      ->check(integer_in(2, 100000));
  cmd->add_option("--cache", data.cache, "Clip cache file (default ~/.cache/hisvid/...; 'none' disables it)");
  cmd->add_option("--workers", data.workers, "Decoding threads (default: all cores)")
      ->check(integer_in(0, 256));
  cmd->add_flag(
      "--stream", data.stream,
      "Leave the clips in the cache file and read each batch from disk (datasets larger than memory)");
  cmd->add_option_function<int>(
         "--frames", [&data](int frames) { data.frames = frames, data.shape_given = true; },
         "Frames per clip (the seeds' SEQUENCE_LENGTH; default: what the model takes, else 20)")
      ->check(integer_in(1, 1000));
  cmd->add_option_function<int>(
         "--size", [&data](int size) { data.height = data.width = size, data.shape_given = true; },
         "Frame height and width after resizing (default: what the model takes, else 64)")
      ->check(integer_in(8, 4096));
}

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  auto classes = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "train", "Train a model on a folder of videos, then evaluate it on the held-out split");
  cmd->add_option(
         "--model", args->model,
         "Zoo model (lrcn, convlstm, lrcn_bn, convlstm_deep, lrcn_small, convlstm_small) or a JSON spec")
      ->capture_default_str();
  add_data_options(cmd, args->data, classes);
  cmd->add_option("--out", args->out_dir, "Output directory: checkpoints, history.csv, report, plots")
      ->check(non_empty());
  cmd->add_option(
         "--weights", args->init_weights,
         "Start from this model file (hisvid's or Keras's), or with --model from a weights-only file "
         "(model.save_weights, ModelCheckpoint(save_weights_only=True), Keras 3's .weights.h5) in that "
         "architecture")
      ->check(non_empty());
  cmd->add_option("--resume", args->resume, "Continue an interrupted run from its last.h5 (or its directory)")
      ->check(non_empty());
  cmd->add_option("--epochs", args->epochs,
                  "Maximum epochs (default 70, the tutorial's; with --resume, the run's)")
      ->check(integer_in(1, 1000000));
  cmd->add_option("--batch-size", args->batch_size, "Training batch size")
      ->capture_default_str()
      ->check(integer_in(1, 100000));
  cmd->add_option("--eval-batch-size", args->eval_batch_size, "Evaluation batch size")
      ->capture_default_str()
      ->check(integer_in(1, 100000));
  cmd->add_flag("--overwrite", args->overwrite, "Replace the earlier run that --out holds");
  cmd->add_option("--optimizer", args->optimizer, "adam, rmsprop or sgd")
      ->capture_default_str()
      ->check(CLI::IsMember({"adam", "rmsprop", "sgd"}, CLI::ignore_case));
  cmd->add_option("--lr", args->learning_rate, "Learning rate (default: Keras's for the optimizer)")
      ->check(float_positive());
  cmd->add_flag("--rmsprop-epsilon-inside", args->rmsprop_epsilon_inside,
                "RMSprop with epsilon inside the square root (Keras >= 2.11; default: Keras <= 2.10)");
  cmd->add_option("--patience", args->patience, "EarlyStopping patience; -1 disables early stopping")
      ->capture_default_str()
      ->check(integer_in(-1, 1000000));
  cmd->add_option("--monitor", args->monitor, "Quantity the callbacks watch")
      ->capture_default_str()
      ->check(CLI::IsMember({"loss", "accuracy", "val_loss", "val_accuracy"}));
  cmd->add_flag("!--no-restore-best", args->restore_best,
                "Keep the last weights when early stopping ends training");
  cmd->add_option("--reduce-lr-factor", args->reduce_lr_factor,
                  "ReduceLROnPlateau factor (0: off; seed 001 uses 0.2)")
      ->check(finite_in(0.0, 1.0, /*below_hi=*/true));
  cmd->add_option("--reduce-lr-patience", args->reduce_lr_patience, "ReduceLROnPlateau patience")
      ->capture_default_str()
      ->check(integer_in(0, 1000000));
  cmd->add_option("--test-split", args->test_split,
                  "Held-out fraction (0.25 as the tutorial; 0.2 as seed 001)")
      ->capture_default_str()
      ->check(finite_in(0.0, 0.95));
  cmd->add_option("--validation-split", args->validation_split,
                  "Fraction of the training part used for validation")
      ->capture_default_str()
      ->check(finite_in(0.0, 0.95));
  cmd->add_flag("--shuffle-validation", args->shuffle_validation,
                "Take a random validation part instead of the last one (Keras takes the last)");
  cmd->add_option("--seed", args->seed,
                  "Seed of the split, initial weights, dropout, shuffling, augmentation")
      ->capture_default_str()
      ->check(seed_value());
  cmd->add_option("--device", args->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->add_flag("--cuda-graphs", args->cuda_graphs,
                "On a GPU: capture the training step into a CUDA graph and replay it (the same results)");
  cmd->add_flag("--tf32", args->tf32,
                "On a GPU: TF32 tensor cores for cuBLAS GEMMs and cuDNN convolutions (inputs of each product "
                "rounded to 10 mantissa bits); off: full float32");
  cmd->add_flag("--flip", args->augmentation.flip, "Augment: random horizontal flips");
  cmd->add_option("--brightness", args->augmentation.brightness,
                  "Augment: brightness shift up to this (pixels in [0,1])")
      ->check(finite_in(0.0, 1.0));
  cmd->add_option("--contrast", args->augmentation.contrast, "Augment: contrast factor within 1 +- this")
      ->check(finite_in(0.0, 1.0));
  cmd->add_option("--noise", args->augmentation.noise, "Augment: Gaussian noise of this standard deviation")
      ->check(finite_in(0.0, 1.0));
  cmd->callback([cmd, args, classes] {
    Console console;
    TrainArgs a = *args;
    a.data.classes = split_names(*classes, "--classes");
    a.optimizer_given =
        cmd->count("--optimizer") + cmd->count("--lr") + cmd->count("--rmsprop-epsilon-inside") > 0;
    a.model_given = cmd->count("--model") > 0;
    a.epochs_given = cmd->count("--epochs") > 0;
    a.lr_given = cmd->count("--lr") > 0;
    a.cache_given = cmd->count("--cache") > 0;
    // What defines a run (for --resume, which keeps them; tools/training.cpp check_combinations).
    for (const char* option : {"--model",
                               "--weights",
                               "--out",
                               "--overwrite",
                               "--classes",
                               "--num-classes",
                               "--frames",
                               "--size",
                               "--batch-size",
                               "--optimizer",
                               "--lr",
                               "--rmsprop-epsilon-inside",
                               "--patience",
                               "--monitor",
                               "--no-restore-best",
                               "--reduce-lr-factor",
                               "--reduce-lr-patience",
                               "--test-split",
                               "--validation-split",
                               "--shuffle-validation",
                               "--seed",
                               "--flip",
                               "--brightness",
                               "--contrast",
                               "--noise"}) {
      if (cmd->count(option) > 0) a.settings_given.push_back(option);
    }
    if (a.resume.empty()) {
      if (a.data.root.empty()) fail("train: --data is required (or --resume)");
      if (a.out_dir.empty()) a.out_dir = "runs/" + std::filesystem::path(a.model).stem().string();
    }
    run_training(a, console);
  });
}

}  // namespace hisvid::tools
