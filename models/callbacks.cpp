#include "models/callbacks.h"

#include <fmt/format.h>

#include <cmath>
#include <fstream>

#include "engine/autograd.h"
#include "engine/error.h"
#include "io/atomic_file.h"

namespace hisvid::models {

namespace {

// JSON has no infinities: they travel as null.
nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }
double number_or(const nlohmann::json& j, double fallback) {
  return j.is_number() ? j.get<double>() : fallback;
}

// Every weight of the model (trainable and not), as Keras's get_weights().
std::vector<Tensor> all_weights(const Sequential& model) {
  std::vector<Tensor> out;
  for (layers::Layer* layer : model.layers()) {
    for (const layers::Weight& w : layer->weights()) out.push_back(w.value);
  }
  return out;
}

}  // namespace

// --- EpochLog --------------------------------------------------------------------------------

nlohmann::json EpochLog::to_json() const {
  return {{"epoch", epoch},
          {"steps", steps},
          {"loss", number_or_null(loss)},
          {"accuracy", number_or_null(accuracy)},
          {"val_loss", number_or_null(val_loss)},
          {"val_accuracy", number_or_null(val_accuracy)},
          {"learning_rate", number_or_null(learning_rate)},
          {"seconds", seconds},
          {"ms_per_step", ms_per_step}};
}

EpochLog EpochLog::from_json(const nlohmann::json& j) {
  EpochLog log;
  log.epoch = j.at("epoch").get<int>();
  log.steps = j.value("steps", 0);
  log.loss = number_or(j.value("loss", nlohmann::json()), kNoValue);
  log.accuracy = number_or(j.value("accuracy", nlohmann::json()), kNoValue);
  log.val_loss = number_or(j.value("val_loss", nlohmann::json()), kNoValue);
  log.val_accuracy = number_or(j.value("val_accuracy", nlohmann::json()), kNoValue);
  log.learning_rate = number_or(j.value("learning_rate", nlohmann::json()), kNoValue);
  log.seconds = j.value("seconds", 0.0);
  log.ms_per_step = j.value("ms_per_step", 0.0);
  return log;
}

double EpochLog::get(const std::string& quantity) const {
  if (quantity == "loss") return loss;
  if (quantity == "accuracy") return accuracy;
  if (quantity == "val_loss") return val_loss;
  if (quantity == "val_accuracy") return val_accuracy;
  fail("unknown quantity '{}' (loss, accuracy, val_loss or val_accuracy)", quantity);
}

// --- Monitor ---------------------------------------------------------------------------------

Monitor::Monitor(const std::string& quantity, double min_delta, const char* who)
    : quantity_(quantity),
      maximize_(quantity.find("acc") != std::string::npos),
      min_delta_(std::fabs(min_delta)) {
  if (quantity != "loss" && quantity != "accuracy" && quantity != "val_loss" && quantity != "val_accuracy") {
    fail("{}: unknown monitor '{}' (loss, accuracy, val_loss or val_accuracy)", who, quantity);
  }
  best_ = maximize_ ? -INFINITY : INFINITY;
}

bool Monitor::update(const EpochLog& log) {
  const double value = log.get(quantity_);
  const bool better = maximize_ ? value - min_delta_ > best_ : value + min_delta_ < best_;
  if (better) best_ = value;
  return better;
}

nlohmann::json Monitor::state() const {
  return {{"monitor", quantity_}, {"best", number_or_null(best_)}, {"wait", wait}};
}

void Monitor::restore(const nlohmann::json& state) {
  best_ = number_or(state.at("best"), maximize_ ? -INFINITY : INFINITY);
  wait = state.value("wait", 0);
}

// --- TerminateOnNaN --------------------------------------------------------------------------

bool TerminateOnNaN::on_batch_loss(int epoch, int step, double loss) {
  if (std::isfinite(loss)) return false;
  failed_epoch = epoch;
  failed_step = step;
  return true;
}

// --- EarlyStopping ---------------------------------------------------------------------------

EarlyStopping::EarlyStopping(const EarlyStoppingConfig& config)
    : config_(config), monitor_(config.monitor, config.min_delta, "EarlyStopping") {
  if (config.patience < 0) fail("EarlyStopping: patience must be >= 0, got {}", config.patience);
}

void EarlyStopping::on_epoch_end(EpochEnd& end) {
  const EpochLog& log = end.history.back();
  if (config_.restore_best_weights && best_weights_.empty()) {
    for (const Tensor& w : all_weights(end.model)) best_weights_.push_back(w.clone());
  }
  ++monitor_.wait;
  if (monitor_.update(log)) {
    best_epoch_ = log.epoch;
    monitor_.wait = 0;
    if (config_.restore_best_weights) {
      best_weights_.clear();
      for (const Tensor& w : all_weights(end.model)) best_weights_.push_back(w.clone());
    }
    return;
  }
  if (monitor_.wait >= config_.patience && log.epoch > 1) {
    stopped_ = true;
    end.stop = true;
    end.message(fmt::format("Epoch {}: early stopping", log.epoch));
    if (config_.restore_best_weights && !best_weights_.empty()) {
      NoGradGuard no_grad;
      std::vector<Tensor> now = all_weights(end.model);
      for (size_t i = 0; i < now.size(); ++i) now[i].copy_from(best_weights_[i]);
      end.message(fmt::format("Restoring model weights from the end of the best epoch: {}.", best_epoch_));
    }
  }
}

nlohmann::json EarlyStopping::state() const {
  nlohmann::json s = monitor_.state();
  s["best_epoch"] = best_epoch_;
  s["stopped"] = stopped_;
  return s;
}

void EarlyStopping::restore(const nlohmann::json& state) {
  monitor_.restore(state);
  best_epoch_ = state.at("best_epoch").get<int>();
  stopped_ = state.at("stopped").get<bool>();
}

// --- ReduceLROnPlateau -----------------------------------------------------------------------

ReduceLROnPlateau::ReduceLROnPlateau(const ReduceLROnPlateauConfig& config)
    : config_(config), monitor_(config.monitor, config.min_delta, "ReduceLROnPlateau") {
  if (!(config.factor > 0.0 && config.factor < 1.0)) {
    fail("ReduceLROnPlateau: factor must be in (0, 1), got {}", config.factor);
  }
  if (config.patience < 0) fail("ReduceLROnPlateau: patience must be >= 0, got {}", config.patience);
}

void ReduceLROnPlateau::on_epoch_end(EpochEnd& end) {
  const EpochLog& log = end.history.back();
  if (cooldown_counter_ > 0) {
    --cooldown_counter_;
    monitor_.wait = 0;
  }
  if (monitor_.update(log)) {
    monitor_.wait = 0;
    return;
  }
  if (cooldown_counter_ > 0 || ++monitor_.wait < config_.patience) return;
  // The learning rate is a float32 variable in Keras.
  const double old_lr = static_cast<float>(end.optimizer.learning_rate());
  if (old_lr <= static_cast<float>(config_.min_lr)) return;
  const double new_lr = static_cast<float>(std::max(old_lr * config_.factor, config_.min_lr));
  end.optimizer.set_learning_rate(new_lr);
  end.message(
      fmt::format("Epoch {:05d}: ReduceLROnPlateau reducing learning rate to {}.", log.epoch, new_lr));
  cooldown_counter_ = config_.cooldown;
  monitor_.wait = 0;
}

nlohmann::json ReduceLROnPlateau::state() const {
  nlohmann::json s = monitor_.state();
  s["cooldown"] = cooldown_counter_;
  return s;
}

void ReduceLROnPlateau::restore(const nlohmann::json& state) {
  monitor_.restore(state);
  cooldown_counter_ = state.at("cooldown").get<int>();
}

// --- CSVLogger and ModelCheckpoint -----------------------------------------------------------

std::string history_csv(const std::vector<EpochLog>& history) {
  std::string text = "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds,ms_per_step\n";
  auto number = [](double v) { return std::isfinite(v) ? fmt::format("{:.6g}", v) : std::string(); };
  for (const EpochLog& h : history) {
    text += fmt::format("{},{},{},{},{},{},{:.3f},{:.2f}\n", h.epoch, number(h.loss), number(h.accuracy),
                        number(h.val_loss), number(h.val_accuracy), number(h.learning_rate), h.seconds,
                        h.ms_per_step);
  }
  return text;
}

void write_text_atomically(const std::string& path, const std::string& text) {
  io::write_file_atomically(path, text);
}

void CSVLogger::on_epoch_end(EpochEnd& end) { write_text_atomically(path_, history_csv(end.history)); }

ModelCheckpoint::ModelCheckpoint(std::string directory, const std::string& monitor)
    : directory_(std::move(directory)), monitor_(monitor, 0.0, "ModelCheckpoint") {}

void ModelCheckpoint::on_epoch_end(EpochEnd& end) {
  // last.h5 first: a disk that fills between the two files leaves the checkpoint --resume needs.
  const bool better = monitor_.update(end.history.back());
  if (better) best_epoch_ = end.history.back().epoch;
  end.save("last.h5");
  if (!better) return;
  end.save("best.h5");
  saved_epoch_ = best_epoch_;
}

nlohmann::json ModelCheckpoint::state() const {
  nlohmann::json s = monitor_.state();
  s["best_epoch"] = best_epoch_;
  return s;
}

void ModelCheckpoint::restore(const nlohmann::json& state) {
  monitor_.restore(state);
  best_epoch_ = state.value("best_epoch", 0);
}

}  // namespace hisvid::models
