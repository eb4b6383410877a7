// models/trainer.h — Keras's fit / evaluate / predict for a Sequential model on a clip set.
//
// fit, per epoch: batches of the (shuffled) training clips, each a forward in training mode,
// the loss (model_loss: the head's cross-entropy from logits plus the regularization
// penalties), backward, one optimizer step; then the validation clips in inference mode; then
// the callbacks (models/callbacks.h) in their order: TerminateOnNaN, EarlyStopping,
// ReduceLROnPlateau, CSVLogger, ModelCheckpoint, as FitOptions asks for them.
// Reported loss and accuracy are means over the epoch's samples (Keras's running mean).
// With a checkpoint directory, every epoch ends by writing last.h5 (and best.h5 when the
// monitored value improved) atomically, holding everything needed to resume exactly: weights,
// optimizer state, RNG offset, callback state and history. An interrupted run (should_stop)
// returns after the current batch without writing a partial epoch: last.h5 stays the last
// complete epoch. A batch whose loss is not a number (NaN or infinity) stops the run before
// its update: the last checkpoint stays the last good epoch. In one process a step reads
// nothing back on the host: loss, accuracy and the non-finite check accumulate in device
// memory (ops::step_sums), the optimizer skips its updates there once a loss failed, and the
// host reads the sums for progress and at the end of the epoch. The steps launched after the
// failed one run halted: the weights and the optimizer's state and count are those before the
// failed step; BatchNorm moving statistics and the random offset move on (a failed run is not
// saved).
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/distributed.h"
#include "engine/optimizer.h"
#include "engine/random.h"
#include "io/dataset.h"
#include "models/callbacks.h"
#include "models/inference_step.h"
#include "models/loss.h"
#include "models/sequential.h"

namespace hisvid::models {

struct FitOptions {
  int epochs = 1;
  size_t batch_size = 4;
  bool shuffle = true;
  io::Augmentation augmentation;
  std::optional<EarlyStoppingConfig> early_stopping;
  std::optional<ReduceLROnPlateauConfig> reduce_lr;
  // last.h5, best.h5 and history.csv are written here when not empty. best.h5 follows the
  // early-stopping monitor, or val_loss (loss without validation data) when early stopping is off.
  std::string checkpoint_dir;
  std::vector<std::string> class_names;  // saved in checkpoints
  nlohmann::json run_info;               // saved in checkpoints (data root, split, model name...)
  // Data-parallel training (engine/distributed.h): with several ranks, each takes its shard of
  // every global batch of batch_size clips, the gradients are summed across ranks, and rank 0
  // alone writes files. Null or one rank: one process, as ever.
  Communicator* communicator = nullptr;
  // One process on a CUDA device: capture the training step and the validation step into CUDA
  // graphs and replay them (models/training_step.h, models/inference_step.h); the results are
  // the direct steps' bit for bit.
  bool cuda_graphs = false;
};

// What the caller shows and how it interrupts: called by fit, never deciding anything.
struct FitProgress {
  // Before an epoch's first batch.
  std::function<void(int epoch)> on_epoch_begin;
  // Running means of the epoch so far, after a training batch: every batch with several ranks;
  // in one process at most every 0.25 s and after the last batch (each call reads the loss
  // and accuracy back from the device, which a GPU step otherwise never waits for).
  std::function<void(int epoch, int step, int steps, double loss, double accuracy)> on_batch;
  std::function<void(const EpochLog&)> on_epoch;
  // After the epoch's callbacks, its checkpoints and history.csv saved.
  std::function<void(const EpochLog&)> on_epoch_saved;
  // Messages such as "Epoch 00031: ReduceLROnPlateau reducing learning rate to 0.0002".
  std::function<void(const std::string&)> on_message;
  // Polled between batches; true stops the run (Ctrl-C).
  std::function<bool()> should_stop;
};

struct FitResult {
  std::vector<EpochLog> history;  // every epoch, those before a resume included
  bool stopped_early = false;
  bool interrupted = false;
  // Stopped by a non-finite loss: the epoch and batch where it appeared.
  bool non_finite_loss = false;
  int failed_epoch = 0, failed_step = 0;
  int best_epoch = 0;  // of best.h5's monitor
  // The epoch best.h5 holds, as far as the run knows (0: none, or not known): best_epoch, but
  // for a run resumed beside a best.h5 of another epoch, until an epoch improved.
  int best_file_epoch = 0;
};

class Trainer {
 public:
  // The optimizer steps model.trainable_weights(); seed keys the dropout masks, the shuffles
  // and the augmentation.
  Trainer(Sequential& model, Optimizer& optimizer, const io::ClipSet& clips, const io::Split& split,
          FitOptions options, uint64_t seed);

  // Continues a run from the training_state of a checkpoint (and best.h5 beside it when the
  // best weights must be restorable). Returns what the user should be told: a best.h5 that does
  // not hold the run's best epoch where nothing needs its weights (it is saved again when an
  // epoch improves on the best, so it may stay as it is).
  std::vector<std::string> resume(const nlohmann::json& training_state);
  // The state to save in a checkpoint: the run's counters and history, each callback's state.
  nlohmann::json training_state() const;

  FitResult fit(const FitProgress& progress = {});

 private:
  void save_checkpoint(const std::string& file) const;
  FitResult result() const;

  Sequential& model_;
  Optimizer& optimizer_;
  const io::ClipSet& clips_;
  io::Split split_;
  FitOptions options_;
  Generator rng_;
  uint64_t seed_;
  // Names the run in its checkpoints (random at its start, kept by --resume), so that a resume
  // can tell its own best.h5 from another run's put in its place.
  std::string run_id_;
  std::vector<EpochLog> history_;
  std::vector<std::unique_ptr<Callback>> callbacks_;
  TerminateOnNaN* terminate_ = nullptr;
  EarlyStopping* early_stopping_ = nullptr;
  ModelCheckpoint* checkpoint_ = nullptr;
  Communicator* comm_ = nullptr;  // set when there are several ranks
};

struct Evaluation {
  double loss = 0.0, accuracy = 0.0;
  std::vector<int> truth, predicted;      // model class indices
  std::vector<std::vector<float>> probs;  // one row per clip: the probability of every model class
  std::vector<std::string> paths;         // the video of each clip
  int steps = 0;
  double ms_per_step = 0.0;
  // The step's CUDA graph (models/inference_step.h graph_status): "replaying", why it could not
  // be captured, or "" where none was tried (the CPU, graphs off, or too few batches of a size).
  std::string graph_status;
};

// What a step (training, validation, evaluation) says about its CUDA graph, given its
// graph_status: "" when none was tried.
std::string graph_note(const std::string& status, const std::string& what);

// Inference over the given clips in batches. label_map[i] is the model's class index for the
// clip set's label i (classes matched by name; see match_classes). Each batch is one step of
// models/inference_step.h: with cuda_graphs on a CUDA device, the batches of the first size
// replay a CUDA graph after two direct ones (the same results). The loss and the correct count
// are summed on the device; the host reads each batch's probabilities. `should_stop`, polled
// before each batch, ends the evaluation with an error when it returns true (Ctrl-C).
Evaluation evaluate(Sequential& model, const io::ClipSet& clips, const std::vector<size_t>& indices,
                    size_t batch_size, const std::vector<int>& label_map, bool cuda_graphs = false,
                    const std::function<bool()>& should_stop = nullptr);
// The same with a step that lives across calls (its graph kept: a run's validation passes).
Evaluation evaluate(InferenceStep& step, const io::ClipSet& clips, const std::vector<size_t>& indices,
                    size_t batch_size, const std::vector<int>& label_map,
                    const std::function<bool()>& should_stop = nullptr);
// The (T, H, W, C) of the clip set's clips.
Shape clip_shape(const io::ClipSet& clips);

// Maps each class of the data to the model's class of the same name; a data class the model
// does not know is an error naming it and listing the model's classes.
std::vector<int> match_classes(const std::vector<std::string>& data_classes,
                               const std::vector<std::string>& model_classes);

// Class probabilities (N, num_classes) of x (N, input shape...) in inference mode, in batches.
Tensor predict(Sequential& model, const Tensor& x, size_t batch_size);

}  // namespace hisvid::models
