// tools/training.h — the work behind `hisvid train`, `evaluate` and `demo`: load the data,
// build or load the model, fit with the seeds' callbacks and checkpoints, evaluate on the
// held-out split, and write the report files and pictures.
#pragma once

#include <string>
#include <vector>

#include "io/dataset.h"
#include "models/metrics.h"
#include "models/model_file.h"
#include "models/sequential.h"
#include "models/trainer.h"
#include "tools/console.h"

namespace hisvid::tools {

struct DataArgs {
  std::string root;
  std::vector<std::string> classes;
  int num_classes = 0;
  std::string cache;  // "" default location, "none" off
  int workers = 0;
  bool stream = false;  // --stream: batches read from the cache on disk (io::DatasetSpec::stream)
  // How clips are extracted: by default what the model takes (its input shape (T, H, W, C));
  // --frames / --size set them for a model that declares no input shape, and must agree with
  // one that does.
  int frames = 20, height = 64, width = 64, channels = 3;
  bool shape_given = false;  // --frames or --size on the command line
  int min_classes = 2;       // evaluate scores a model on one class's videos too
  io::ExtractionSettings extraction() const { return {frames, height, width, channels}; }
  // What io::load_clips is asked for (the ranks of `comm` share the decoding).
  io::DatasetSpec spec(Communicator* comm = nullptr) const;
  // Extraction as the model's input (T, H, W, C) asks; errors name the model and the option.
  void follow_model(const models::Sequential& model);
};

struct TrainArgs {
  std::vector<std::string> settings_given;  // the options that define a run, as given (--resume refuses them)
  std::string model = "lrcn";               // zoo name or spec file
  std::string init_weights;                 // start from this model file (hisvid's or Keras's)
  std::string resume;                       // a checkpoint (last.h5) or the directory holding it
  DataArgs data;
  int epochs = 70;
  size_t batch_size = 4;
  size_t eval_batch_size = 32;  // Keras's evaluate default
  std::string optimizer = "adam";
  bool optimizer_given = false;  // --optimizer, --lr or --rmsprop-epsilon-inside on the command line
  bool model_given = false, epochs_given = false, lr_given = false,
       cache_given = false;    // on the command line
  bool overwrite = false;      // replace the run an --out directory holds
  double learning_rate = 0.0;  // when lr_given; else the optimizer's Keras default
  bool rmsprop_epsilon_inside = false;
  int patience = 15;  // EarlyStopping patience; < 0 disables early stopping
  bool restore_best = true;
  std::string monitor = "val_loss";
  double reduce_lr_factor = 0.0;  // 0 disables ReduceLROnPlateau
  int reduce_lr_patience = 10;
  double test_split = 0.25, validation_split = 0.2;
  bool shuffle_validation = false;
  uint64_t seed = 27;
  std::string device = "auto";
  bool cuda_graphs = false;  // replay the training step from a CUDA graph (one process, a GPU)
  bool tf32 = false;         // TF32 tensor cores for cuBLAS and cuDNN on the GPU (this invocation)
  std::string out_dir;
  io::Augmentation augmentation;
};

struct TrainOutcome {
  std::string model_name;
  models::ParamCounts params;
  models::FitResult fit;
  models::Evaluation test;
  models::ClassificationReport report;
  double train_ms_per_step = 0.0;  // median over the epochs run in this process
  std::string out_dir;
};

// Loads (or reads from the cache) the clips, drawing a progress bar and naming skipped files;
// the ranks of a data-parallel run (comm) decode a missing cache together.
io::ClipSet load_data(const DataArgs& args, Console& console, Communicator* comm = nullptr);

TrainOutcome run_training(const TrainArgs& args, Console& console);

// A CSV field: quoted (quotes doubled) when it holds a comma, a quote or a line break (RFC 4180).
std::string csv_field(const std::string& text);

// report.txt, report.json, predictions.csv (each clip's video, true and predicted class, and
// the probability of every class: of the positive class for a binary model), confusion.png
// (and curves.png when a history is given) in out_dir.
void write_reports(const std::string& out_dir, const std::string& title, const models::Evaluation& evaluation,
                   const models::ClassificationReport& report, const std::vector<models::EpochLog>& history);

// The model of --weights FILE: a model file alone, or with --model SPEC (`model`) a weights-only
// file (model.save_weights, ModelCheckpoint(save_weights_only=True), Keras 3's .weights.h5) in
// that architecture; --model with a file that has its own architecture is refused.
// `option` names the file in messages (convert's is its input, not --weights).
models::LoadedModel load_model_option(const std::string& weights, const std::string& model,
                                      const std::string& option = "--weights");

// Fails, naming the file, unless the model's outputs are class scores: a final softmax or sigmoid,
// or a Dense layer read as logits (a regressor's outputs are not classes).
void require_classifier(const models::LoadedModel& loaded, const std::string& weights);

// The help text of --model where it gives a weights-only --weights file its architecture.
extern const char* const kWeightsArchitectureHelp;

// The names of a loaded model's outputs, for predict, explain and evaluate: the file's own, or
// --model-classes (`model_classes`) for a file that stores none (a Keras file), else with
// `numbered` class_0 .. class_{K-1} and without it an error. Fails, naming the file, when their
// count is not the model's, and when --model-classes differs from the names the file stores (it
// would relabel the outputs).
std::vector<std::string> output_names(const models::LoadedModel& loaded, const std::string& weights,
                                      const std::string& model_classes, bool numbered = true);

// A training run records io::clips_fingerprint of its clips; --resume and evaluate --split test
// compare.
// Fails, naming `what` and the root, when `run` (a checkpoint's record of its run) holds a
// fingerprint other than that of `clips`; a record without one (an older run) passes.
void check_same_clips(const nlohmann::json& run, const io::ClipSet& clips, const std::string& root,
                      const std::string& what);
// The same before any decoding, from the video files `data` lists less those the run recorded
// as skipped (io::listing_fingerprint): other files are refused at once, not after decoding them
// all; a run recorded without its skipped files (an older one) passes here.
void check_same_listing(const nlohmann::json& run, const DataArgs& data, const std::string& what);
// The training rules a run records (run["rules"]) since hisvid follows Keras's code paths for
// BatchNormalization's moving variance and the recurrent dropout masks (2026-11-27).
constexpr const char* kTrainingRules = "keras-paths-2026-11-27";
// What a run of `model` from before those rules (no record) now trains differently, one line
// per layer, for --resume to say; empty when nothing changed for it.
std::vector<std::string> rules_changed_for(const models::Sequential& model);
// The rounding of a run's split: the one its record names (run["split"]), or the forgiving one
// of runs from before that record (io::SplitRounding).
io::SplitRounding split_rounding(const nlohmann::json& run);
// The split of a run's clips as the run made it (--resume, evaluate --split test), with its
// rounding; a split whose counts differ from the run's record fails naming `what`.
io::Split recreate_split(const nlohmann::json& run, size_t clips, double test_fraction,
                         double validation_fraction, uint64_t seed, bool shuffle_validation,
                         const std::string& what);
// The record of a split made with `rounding`, which recreate_split follows.
nlohmann::json split_record(const io::Split& split, io::SplitRounding rounding);

// "a,b,c" -> {"a", "b", "c"}; "" -> {} (not given). Fails, naming `option`, on an empty name or
// one given twice.
std::vector<std::string> split_names(const std::string& text, const std::string& option);

// --tf32 on --device `device_arg`: fails, naming both, unless it is a CUDA device (called before
// anything is written); then, with `enable`, lets that device's cuBLAS and cuDNN use TF32.
void tf32_on(const std::string& device_arg, bool enable = true);
// The device of --device `device_arg` for an option that needs a GPU: fails, naming `option` and
// the device, unless it is a CUDA device.
Device cuda_device_for(const char* option, const std::string& device_arg);
// The device --device names (cpu, cuda, cuda:N, auto), checked before any work: an unknown name,
// or CUDA where there is none, fails naming --device.
Device device_option(const std::string& device_arg);

}  // namespace hisvid::tools
