// models/trainer.h — Keras's fit / evaluate / predict for a Sequential model on a clip set.
//
// fit: per epoch, batches of the (shuffled) training clips, each a forward in training mode,
// the loss (model_loss: the head's cross-entropy from logits plus the regularization
// penalties), backward, one optimizer step; then the validation clips in inference mode; then
// the callbacks, in Keras's order and with Keras's rules:
//   EarlyStopping(monitor, patience, min_delta, restore_best_weights): the best weights are
//     restored only when it stops training early (Keras 2.x);
//   ReduceLROnPlateau(monitor, factor, patience, min_delta, cooldown, min_lr).
// Reported loss and accuracy are means over the epoch's samples (Keras's running mean).
// With a checkpoint directory, every epoch ends by writing last.h5 (and best.h5 when the
// monitored value improved) atomically, holding everything needed to resume exactly: weights,
// optimizer state, RNG offset, callback state and history. An interrupted run (should_stop)
// returns after the current batch without writing a partial epoch: last.h5 stays the last
// complete epoch. A batch whose loss is not a number (NaN or infinity) stops the run before
// its update (Keras's TerminateOnNaN, and no diverged weights are stepped or saved): the last
// checkpoint stays the last good epoch.
#pragma once

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/optimizer.h"
#include "engine/random.h"
#include "io/dataset.h"
#include "models/sequential.h"

namespace hisvid::models {

struct EarlyStopping {
  bool enabled = false;
  std::string monitor = "val_loss";
  int patience = 0;
  double min_delta = 0.0;
  bool restore_best_weights = false;
};

struct ReduceLROnPlateau {
  bool enabled = false;
  std::string monitor = "val_loss";
  double factor = 0.1;
  int patience = 10;
  double min_delta = 1e-4;
  int cooldown = 0;
  double min_lr = 0.0;
};

struct FitOptions {
  int epochs = 1;
  size_t batch_size = 4;
  bool shuffle = true;
  io::Augmentation augmentation;
  EarlyStopping early_stopping;
  ReduceLROnPlateau reduce_lr;
  std::string checkpoint_dir;            // last.h5 / best.h5 written here when not empty
  std::vector<std::string> class_names;  // saved in checkpoints
  nlohmann::json run_info;               // saved in checkpoints (data root, split, model name...)
};

constexpr double kNoValue = std::numeric_limits<double>::quiet_NaN();

// The loss Keras minimises and reports for a batch.
struct LossTerms {
  Tensor loss;    // () the head's cross-entropy (mean over the batch) + every regularization penalty
  Tensor logits;  // (N, units) what the head's softmax / sigmoid maps
  Tensor probs;   // (N, units) the head's output, no gradient
};
// Forward x (N, input...) with ctx and the loss against targets (N, num_classes) one-hot rows:
// categorical cross-entropy for a softmax head; binary cross-entropy against column 1 for a
// one-unit sigmoid head. Weight regularizers and activity regularizers add their penalties.
LossTerms model_loss(Sequential& model, const Tensor& x, const Tensor& targets,
                     const layers::ForwardContext& ctx);
// Rows of `terms` whose prediction matches the targets (N, num_classes): argmax for a softmax
// head, p > 0.5 for a binary one (Keras's categorical / binary accuracy).
int64_t correct_count(const Sequential& model, const LossTerms& terms, const Tensor& targets);
// Probabilities (N, num_classes) of the model's outputs (N, units): the outputs themselves, or
// (1 - p, p) for a binary head.
Tensor class_probabilities(const Sequential& model, const Tensor& outputs);

struct EpochLog {
  int epoch = 0;  // 1-based
  int steps = 0;
  double loss = kNoValue, accuracy = kNoValue, val_loss = kNoValue, val_accuracy = kNoValue;
  double learning_rate = kNoValue;
  double seconds = 0.0;      // the whole epoch, validation included
  double ms_per_step = 0.0;  // training batches only
  nlohmann::json to_json() const;
  static EpochLog from_json(const nlohmann::json& j);
};

struct FitCallbacks {
  // After every training batch: running means of the epoch so far.
  std::function<void(int epoch, int step, int steps, double loss, double accuracy)> on_batch;
  std::function<void(const EpochLog&)> on_epoch;
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
  int best_epoch = 0;  // by the early-stopping monitor (val_loss when early stopping is off)
};

class Trainer {
 public:
  // The optimizer steps model.trainable_weights(); seed keys the dropout masks, the shuffles
  // and the augmentation.
  Trainer(Sequential& model, Optimizer& optimizer, const io::ClipSet& clips, const io::Split& split,
          FitOptions options, uint64_t seed);

  // Continues a run from the training_state of a checkpoint (and best.h5 beside it when the
  // best weights must be restorable).
  void resume(const nlohmann::json& training_state);
  // The state to save in a checkpoint.
  nlohmann::json training_state() const;

  FitResult fit(const FitCallbacks& callbacks = {});

 private:
  struct Monitor {  // the rule shared by both callbacks: "min" for losses, "max" for accuracies
    std::string name;
    bool maximize = false;
    double best = 0.0;
    int wait = 0;
  };
  double monitored(const EpochLog& log, const std::string& name) const;
  void save_checkpoint(const std::string& file) const;

  Sequential& model_;
  Optimizer& optimizer_;
  const io::ClipSet& clips_;
  io::Split split_;
  FitOptions options_;
  Generator rng_;
  uint64_t seed_;
  std::vector<EpochLog> history_;
  Monitor stop_, plateau_;
  int best_epoch_ = 0, cooldown_counter_ = 0;
  bool stopped_early_ = false;
  std::vector<Tensor> best_weights_;  // EarlyStopping's copy, when restore_best_weights
};

struct Evaluation {
  double loss = 0.0, accuracy = 0.0;
  std::vector<int> truth, predicted;       // model class indices
  std::vector<std::vector<float>> probs;   // one row per clip: the probability of every model class
  std::vector<std::string> paths;          // the video of each clip
  int steps = 0;
  double ms_per_step = 0.0;
};

// Inference over the given clips in batches. label_map[i] is the model's class index for the
// clip set's label i (classes matched by name; see match_classes).
Evaluation evaluate(Sequential& model, const io::ClipSet& clips, const std::vector<size_t>& indices,
                    size_t batch_size, const std::vector<int>& label_map);

// Maps each class of the data to the model's class of the same name; a data class the model
// does not know is an error naming it and listing the model's classes.
std::vector<int> match_classes(const std::vector<std::string>& data_classes,
                               const std::vector<std::string>& model_classes);

// Class probabilities (N, num_classes) of x (N, input shape...) in inference mode, in batches.
Tensor predict(Sequential& model, const Tensor& x, size_t batch_size);

}  // namespace hisvid::models
