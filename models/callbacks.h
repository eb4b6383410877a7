// models/callbacks.h — Keras's training callbacks as objects, run by Trainer::fit in the order
// of its list, with Keras 2.x's rules:
//   TerminateOnNaN     stops training at a batch whose loss is NaN or infinite — before that
//                      batch's update, so no diverged weights are stepped or saved;
//   EarlyStopping      stops after `patience` epochs without an improvement of `monitor` by
//                      more than min_delta; restores the best epoch's weights only when it
//                      stops early (Keras 2.x);
//   ReduceLROnPlateau  multiplies the learning rate by `factor` after `patience` epochs without
//                      an improvement by more than min_delta, then waits `cooldown` epochs;
//   CSVLogger          writes history.csv after every epoch (atomically);
//   ModelCheckpoint    writes last.h5 after every epoch and best.h5 when `monitor` improved,
//                      atomically, with everything a resume needs.
// A monitored quantity is "min" for losses and "max" for accuracies. Each callback's state goes
// into a checkpoint under its key, so that a resumed run decides exactly as an uninterrupted
// one.
#pragma once

#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/optimizer.h"
#include "models/sequential.h"

namespace hisvid::models {

constexpr double kNoValue = std::numeric_limits<double>::quiet_NaN();

struct EpochLog {
  int epoch = 0;  // 1-based
  int steps = 0;
  double loss = kNoValue, accuracy = kNoValue, val_loss = kNoValue, val_accuracy = kNoValue;
  double learning_rate = kNoValue;
  double seconds = 0.0;      // the whole epoch, validation included
  double ms_per_step = 0.0;  // training batches only
  nlohmann::json to_json() const;
  static EpochLog from_json(const nlohmann::json& j);
  // The value of "loss", "accuracy", "val_loss" or "val_accuracy".
  double get(const std::string& quantity) const;
};

// What a callback sees and may change at the end of an epoch (Keras's model and logs).
struct EpochEnd {
  const std::vector<EpochLog>& history;  // every epoch so far; back() is the one that ended
  Sequential& model;
  Optimizer& optimizer;
  // Writes a checkpoint file of the run's whole state (Trainer::training_state) by name.
  std::function<void(const std::string& file)> save;
  std::function<void(const std::string& text)> message;
  bool stop = false;  // set by a callback to end training after this epoch
};

class Callback {
 public:
  virtual ~Callback() = default;
  // The key of its state in a checkpoint ("early_stopping", "reduce_lr", ...).
  virtual std::string key() const = 0;
  // With a training batch's loss, before its update: true stops training at once. With several
  // ranks every batch's loss comes here; in one process the losses stay on the device, which
  // halts the updates itself at the first one that is not finite, and only that one comes here.
  virtual bool on_batch_loss(int /*epoch*/, int /*step*/, double /*loss*/) { return false; }
  virtual void on_epoch_end(EpochEnd& end) = 0;
  virtual nlohmann::json state() const { return nlohmann::json::object(); }
  virtual void restore(const nlohmann::json& /*state*/) {}
};

// The best value of a monitored quantity and the epochs waited since: the rule every callback
// with a monitor shares.
class Monitor {
 public:
  // `quantity` must be one of loss, accuracy, val_loss, val_accuracy; `who` names the callback
  // in errors.
  Monitor(const std::string& quantity, double min_delta, const char* who);
  // Records the epoch's value: true when it improved on the best by more than min_delta.
  bool update(const EpochLog& log);
  const std::string& quantity() const { return quantity_; }
  double best() const { return best_; }
  int wait = 0;
  nlohmann::json state() const;
  void restore(const nlohmann::json& state);

 private:
  std::string quantity_;
  bool maximize_;
  double min_delta_;
  double best_;
};

struct EarlyStoppingConfig {
  std::string monitor = "val_loss";
  int patience = 0;
  double min_delta = 0.0;
  bool restore_best_weights = false;
};

class TerminateOnNaN final : public Callback {
 public:
  std::string key() const override { return "terminate_on_nan"; }
  bool on_batch_loss(int epoch, int step, double loss) override;
  void on_epoch_end(EpochEnd&) override {}
  // Where the loss stopped being a number (0 when it never did).
  int failed_epoch = 0, failed_step = 0;
};

class EarlyStopping final : public Callback {
 public:
  explicit EarlyStopping(const EarlyStoppingConfig& config);
  std::string key() const override { return "early_stopping"; }
  void on_epoch_end(EpochEnd& end) override;
  nlohmann::json state() const override;
  // The best weights of an earlier session come from best.h5 (`best_weights`, may be empty).
  void restore(const nlohmann::json& state) override;
  void restore_best_weights(std::vector<Tensor> weights) { best_weights_ = std::move(weights); }
  bool stopped() const { return stopped_; }
  int best_epoch() const { return best_epoch_; }

 private:
  EarlyStoppingConfig config_;
  Monitor monitor_;
  int best_epoch_ = 0;
  bool stopped_ = false;
  std::vector<Tensor> best_weights_;
};

struct ReduceLROnPlateauConfig {
  std::string monitor = "val_loss";
  double factor = 0.1;
  int patience = 10;
  double min_delta = 1e-4;
  int cooldown = 0;
  double min_lr = 0.0;
};

class ReduceLROnPlateau final : public Callback {
 public:
  explicit ReduceLROnPlateau(const ReduceLROnPlateauConfig& config);
  std::string key() const override { return "reduce_lr"; }
  void on_epoch_end(EpochEnd& end) override;
  nlohmann::json state() const override;
  void restore(const nlohmann::json& state) override;

 private:
  ReduceLROnPlateauConfig config_;
  Monitor monitor_;
  int cooldown_counter_ = 0;
};

class CSVLogger final : public Callback {
 public:
  explicit CSVLogger(std::string path) : path_(std::move(path)) {}
  std::string key() const override { return "csv_logger"; }
  void on_epoch_end(EpochEnd& end) override;

 private:
  std::string path_;
};

class ModelCheckpoint final : public Callback {
 public:
  // last.h5 and best.h5 (by `monitor`) in `directory`.
  ModelCheckpoint(std::string directory, const std::string& monitor);
  std::string key() const override { return "model_checkpoint"; }
  void on_epoch_end(EpochEnd& end) override;
  nlohmann::json state() const override;
  void restore(const nlohmann::json& state) override;
  int best_epoch() const { return best_epoch_; }
  // The epoch whose weights best.h5 holds, as far as this process knows: the epoch it last saved
  // there, or what a resume found in the file (0: none, or not known). It differs from
  // best_epoch() after a resume beside a best.h5 of another epoch, until an epoch improves.
  int saved_epoch() const { return saved_epoch_; }
  void set_saved_epoch(int epoch) { saved_epoch_ = epoch; }

 private:
  std::string directory_;
  Monitor monitor_;
  int best_epoch_ = 0;
  int saved_epoch_ = 0;
};

// history.csv's text: epoch, loss, accuracy, val_loss, val_accuracy, learning_rate, seconds,
// ms_per_step.
std::string history_csv(const std::vector<EpochLog>& history);

// Writes text to path through a temporary file and a rename; errors name the file.
void write_text_atomically(const std::string& path, const std::string& text);

}  // namespace hisvid::models
