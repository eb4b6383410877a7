#include "models/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "models/model_file.h"

namespace hisvid::models {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// JSON has no infinities: they travel as null.
nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }
double number_or(const nlohmann::json& j, double fallback) { return j.is_number() ? j.get<double>() : fallback; }

// One-hot (B,K) targets of model classes.
Tensor one_hot(const std::vector<int>& classes, int K, Device device) {
  std::vector<float> v(classes.size() * static_cast<size_t>(K), 0.0f);
  for (size_t i = 0; i < classes.size(); ++i) v[i * K + classes[i]] = 1.0f;
  return Tensor::from_vector(v, {static_cast<int64_t>(classes.size()), K}, DType::Float32, device);
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

LossTerms model_loss(Sequential& model, const Tensor& x, const Tensor& targets,
                     const layers::ForwardContext& ctx) {
  std::vector<Tensor> activity;
  layers::ForwardContext with_losses = ctx;
  with_losses.losses = &activity;
  LossTerms terms;
  terms.logits = model.forward(x, with_losses, Output::Logits);
  ops::CrossEntropy xe;
  if (model.head() == Head::Sigmoid) {
    if (!model.binary()) {
      fail("model '{}': a sigmoid head trains as a binary classifier of one unit, this one has {}",
           model.name(), terms.logits.dim(-1));
    }
    xe = ops::sigmoid_cross_entropy(terms.logits, ops::slice(targets, 1, 1, 1));
  } else {
    xe = ops::softmax_cross_entropy(terms.logits, targets);
  }
  terms.probs = xe.probs;
  terms.loss = xe.loss;
  for (const Tensor& penalty : model.weight_penalties()) terms.loss = ops::add(terms.loss, penalty);
  for (const Tensor& penalty : activity) terms.loss = ops::add(terms.loss, penalty);
  return terms;
}

int64_t correct_count(const Sequential& model, const LossTerms& terms, const Tensor& targets) {
  if (model.binary()) return ops::binary_accuracy_count(terms.probs, ops::slice(targets, 1, 1, 1));
  return ops::accuracy_count(terms.logits.detach(), targets);
}

Tensor class_probabilities(const Sequential& model, const Tensor& outputs) {
  if (!model.binary()) return outputs;
  const Tensor ones = Tensor::full(outputs.shape(), 1.0, outputs.dtype(), outputs.device());
  return ops::concat({ops::sub(ones, outputs), outputs}, 1);
}

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

std::vector<int> match_classes(const std::vector<std::string>& data_classes,
                               const std::vector<std::string>& model_classes) {
  std::vector<int> map;
  for (const std::string& name : data_classes) {
    int found = -1;
    for (size_t k = 0; k < model_classes.size(); ++k) {
      if (model_classes[k] == name) found = static_cast<int>(k);
    }
    if (found < 0) {
      std::string known;
      for (const std::string& k : model_classes) known += (known.empty() ? "" : ", ") + k;
      fail("the data has a class '{}' that the model does not know (the model's classes: {})", name, known);
    }
    map.push_back(found);
  }
  return map;
}

Trainer::Trainer(Sequential& model, Optimizer& optimizer, const io::ClipSet& clips, const io::Split& split,
                 FitOptions options, uint64_t seed)
    : model_(model),
      optimizer_(optimizer),
      clips_(clips),
      split_(split),
      options_(std::move(options)),
      rng_(seed),
      seed_(seed) {
  if (!model_.built()) fail("fit: model '{}' is not built", model_.name());
  if (static_cast<size_t>(model_.num_classes()) != clips_.class_names.size()) {
    fail("fit: model '{}' has {} output classes but the data has {} classes", model_.name(), model_.num_classes(),
         clips_.class_names.size());
  }
  if (split_.train.empty()) fail("fit: no training clips");
  if (options_.batch_size < 1) fail("fit: batch size must be >= 1");
  if (options_.epochs < 1) fail("fit: epochs must be >= 1, got {}", options_.epochs);
  auto setup = [&](Monitor& m, const std::string& name, const char* callback) {
    if (name != "loss" && name != "accuracy" && name != "val_loss" && name != "val_accuracy") {
      fail("{}: unknown monitor '{}' (loss, accuracy, val_loss or val_accuracy)", callback, name);
    }
    if (name.rfind("val_", 0) == 0 && split_.validation.empty()) {
      fail("{}: monitor '{}' needs validation data (validation split > 0)", callback, name);
    }
    m.name = name;
    m.maximize = name.find("acc") != std::string::npos;
    m.best = m.maximize ? -INFINITY : INFINITY;
    m.wait = 0;
  };
  const std::string default_monitor = split_.validation.empty() ? "loss" : "val_loss";
  setup(stop_, options_.early_stopping.enabled ? options_.early_stopping.monitor : default_monitor, "EarlyStopping");
  if (options_.reduce_lr.enabled) setup(plateau_, options_.reduce_lr.monitor, "ReduceLROnPlateau");
}

double Trainer::monitored(const EpochLog& log, const std::string& name) const {
  if (name == "loss") return log.loss;
  if (name == "accuracy") return log.accuracy;
  if (name == "val_loss") return log.val_loss;
  return log.val_accuracy;
}

nlohmann::json Trainer::training_state() const {
  nlohmann::json history = nlohmann::json::array();
  for (const EpochLog& log : history_) history.push_back(log.to_json());
  return {{"epoch", static_cast<int>(history_.size())},
          {"seed", seed_},
          {"rng_offset", rng_.offset()},
          {"learning_rate", optimizer_.learning_rate()},
          {"early_stopping",
           {{"monitor", stop_.name}, {"best", number_or_null(stop_.best)}, {"wait", stop_.wait},
            {"best_epoch", best_epoch_}, {"stopped", stopped_early_}}},
          {"reduce_lr",
           {{"monitor", plateau_.name}, {"best", number_or_null(plateau_.best)}, {"wait", plateau_.wait},
            {"cooldown", cooldown_counter_}}},
          {"history", history},
          {"run", options_.run_info}};
}

void Trainer::resume(const nlohmann::json& state) {
  if (!state.is_object() || !state.contains("epoch")) fail("resume: the checkpoint holds no training state");
  if (state.value("seed", seed_) != seed_) {
    fail("resume: the checkpoint was trained with seed {}, this run uses {}", state["seed"].get<uint64_t>(), seed_);
  }
  rng_.set_offset(state.at("rng_offset").get<uint64_t>());
  optimizer_.set_learning_rate(state.at("learning_rate").get<double>());
  history_.clear();
  for (const nlohmann::json& j : state.at("history")) history_.push_back(EpochLog::from_json(j));
  const nlohmann::json& es = state.at("early_stopping");
  stop_.best = number_or(es.at("best"), stop_.maximize ? -INFINITY : INFINITY);
  stop_.wait = es.at("wait").get<int>();
  best_epoch_ = es.at("best_epoch").get<int>();
  stopped_early_ = es.at("stopped").get<bool>();
  const nlohmann::json& rl = state.at("reduce_lr");
  plateau_.best = number_or(rl.at("best"), plateau_.maximize ? -INFINITY : INFINITY);
  plateau_.wait = rl.at("wait").get<int>();
  cooldown_counter_ = rl.at("cooldown").get<int>();
  if (options_.early_stopping.restore_best_weights && best_epoch_ > 0 && !options_.checkpoint_dir.empty()) {
    const LoadedModel best = load_model(options_.checkpoint_dir + "/best.h5");
    best_weights_.clear();
    for (const Tensor& w : all_weights(best.model)) best_weights_.push_back(w.to(model_.device()));
  }
}

void Trainer::save_checkpoint(const std::string& file) const {
  save_model(options_.checkpoint_dir + "/" + file, model_, options_.class_names, &optimizer_, training_state());
}

FitResult Trainer::fit(const FitCallbacks& callbacks) {
  FitResult result;
  const std::vector<Tensor> weights = model_.trainable_weights();
  auto message = [&](const std::string& text) {
    if (callbacks.on_message) callbacks.on_message(text);
  };
  for (int epoch = static_cast<int>(history_.size()) + 1; epoch <= options_.epochs && !stopped_early_; ++epoch) {
    const Clock::time_point epoch_start = Clock::now();
    EpochLog log;
    log.epoch = epoch;
    log.learning_rate = optimizer_.learning_rate();
    const std::vector<std::vector<size_t>> batches =
        io::epoch_batches(split_.train, options_.batch_size, options_.shuffle, rng_);
    log.steps = static_cast<int>(batches.size());
    double loss_sum = 0.0;
    int64_t correct = 0, seen = 0;
    for (size_t step = 0; step < batches.size(); ++step) {
      if (callbacks.should_stop && callbacks.should_stop()) {
        result.interrupted = true;
        result.history = history_;
        result.best_epoch = best_epoch_;
        return result;
      }
      const io::Batch batch = io::make_batch(clips_, batches[step], options_.augmentation, &rng_, model_.device());
      const LossTerms terms = model_loss(model_, batch.x, batch.y, {true, &rng_});
      const double loss = terms.loss.item();
      if (!std::isfinite(loss)) {  // TerminateOnNaN, before the update can spread it into the weights
        message(
            fmt::format("Epoch {} batch {}: invalid loss {}, terminating training", epoch, step + 1, loss));
        result.non_finite_loss = true;
        result.failed_epoch = epoch;
        result.failed_step = static_cast<int>(step) + 1;
        result.history = history_;
        result.best_epoch = best_epoch_;
        return result;
      }
      backward(terms.loss);
      optimizer_.step(weights);
      zero_grad(weights);
      const int64_t B = batch.x.dim(0);
      loss_sum += loss * static_cast<double>(B);
      correct += correct_count(model_, terms, batch.y);
      seen += B;
      if (callbacks.on_batch) {
        callbacks.on_batch(epoch, static_cast<int>(step) + 1, log.steps, loss_sum / static_cast<double>(seen),
                           static_cast<double>(correct) / static_cast<double>(seen));
      }
    }
    log.loss = loss_sum / static_cast<double>(seen);
    log.accuracy = static_cast<double>(correct) / static_cast<double>(seen);
    log.ms_per_step = 1000.0 * seconds_since(epoch_start) / static_cast<double>(log.steps);
    if (!split_.validation.empty()) {
      std::vector<int> identity(clips_.class_names.size());
      for (size_t k = 0; k < identity.size(); ++k) identity[k] = static_cast<int>(k);
      const Evaluation val = evaluate(model_, clips_, split_.validation, options_.batch_size, identity);
      log.val_loss = val.loss;
      log.val_accuracy = val.accuracy;
    }
    history_.push_back(log);

    // EarlyStopping (Keras 2.x), or plain tracking of the best epoch for best.h5.
    bool improved = false;
    const EarlyStopping& es = options_.early_stopping;
    const double current = monitored(log, stop_.name);
    const double delta = es.enabled ? std::fabs(es.min_delta) : 0.0;
    if (es.enabled && es.restore_best_weights && best_weights_.empty()) {
      for (const Tensor& w : all_weights(model_)) best_weights_.push_back(w.clone());
    }
    ++stop_.wait;
    if (stop_.maximize ? current - delta > stop_.best : current + delta < stop_.best) {
      stop_.best = current;
      best_epoch_ = epoch;
      improved = true;
      stop_.wait = 0;
      if (es.enabled && es.restore_best_weights) {
        best_weights_.clear();
        for (const Tensor& w : all_weights(model_)) best_weights_.push_back(w.clone());
      }
    }
    if (es.enabled && stop_.wait >= es.patience && epoch > 1) {
      stopped_early_ = true;
      message(fmt::format("Epoch {}: early stopping", epoch));
      if (es.restore_best_weights && !best_weights_.empty()) {
        NoGradGuard no_grad;
        std::vector<Tensor> now = all_weights(model_);
        for (size_t i = 0; i < now.size(); ++i) now[i].copy_from(best_weights_[i]);
        message(fmt::format("Restoring model weights from the end of the best epoch: {}.", best_epoch_));
      }
    }

    // ReduceLROnPlateau (Keras 2.x); the learning rate is a float32 variable in Keras.
    const ReduceLROnPlateau& rl = options_.reduce_lr;
    if (rl.enabled) {
      const double value = monitored(log, plateau_.name);
      const bool in_cooldown = cooldown_counter_ > 0;
      if (in_cooldown) {
        --cooldown_counter_;
        plateau_.wait = 0;
      }
      if (plateau_.maximize ? value > plateau_.best + rl.min_delta : value < plateau_.best - rl.min_delta) {
        plateau_.best = value;
        plateau_.wait = 0;
      } else if (!(cooldown_counter_ > 0)) {
        if (++plateau_.wait >= rl.patience) {
          const double old_lr = static_cast<float>(optimizer_.learning_rate());
          if (old_lr > static_cast<float>(rl.min_lr)) {
            const double new_lr = static_cast<float>(std::max(old_lr * rl.factor, rl.min_lr));
            optimizer_.set_learning_rate(new_lr);
            message(fmt::format("Epoch {:05d}: ReduceLROnPlateau reducing learning rate to {}.", epoch, new_lr));
            cooldown_counter_ = rl.cooldown;
            plateau_.wait = 0;
          }
        }
      }
    }

    history_.back().seconds = seconds_since(epoch_start);
    if (callbacks.on_epoch) callbacks.on_epoch(history_.back());
    if (!options_.checkpoint_dir.empty()) {
      if (improved) save_checkpoint("best.h5");
      save_checkpoint("last.h5");
    }
  }
  result.history = history_;
  result.stopped_early = stopped_early_;
  result.best_epoch = best_epoch_;
  return result;
}

Evaluation evaluate(Sequential& model, const io::ClipSet& clips, const std::vector<size_t>& indices,
                    size_t batch_size, const std::vector<int>& label_map) {
  if (indices.empty()) fail("evaluate: no clips to evaluate");
  if (label_map.size() != clips.class_names.size()) {
    fail("evaluate: the label map has {} entries for {} data classes", label_map.size(), clips.class_names.size());
  }
  NoGradGuard no_grad;
  Evaluation ev;
  const int K = model.num_classes();
  double loss_sum = 0.0;
  int64_t correct = 0;
  const Clock::time_point start = Clock::now();
  for (size_t begin = 0; begin < indices.size(); begin += batch_size) {
    const std::vector<size_t> chunk(indices.begin() + static_cast<std::ptrdiff_t>(begin),
                                    indices.begin() + static_cast<std::ptrdiff_t>(std::min(begin + batch_size, indices.size())));
    const io::Batch batch = io::make_batch(clips, chunk, {}, nullptr, model.device());
    std::vector<int> classes;
    for (size_t i : chunk) classes.push_back(label_map[clips.labels[i]]);
    const Tensor targets = one_hot(classes, K, model.device());
    const LossTerms terms = model_loss(model, batch.x, targets, {});
    loss_sum += terms.loss.item() * static_cast<double>(chunk.size());
    correct += correct_count(model, terms, targets);
    const std::vector<double> probs = class_probabilities(model, terms.probs).to_vector();
    for (size_t i = 0; i < chunk.size(); ++i) {
      std::vector<float> row(probs.begin() + static_cast<std::ptrdiff_t>(i * K),
                             probs.begin() + static_cast<std::ptrdiff_t>((i + 1) * K));
      ev.predicted.push_back(static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin()));
      ev.truth.push_back(classes[i]);
      ev.probs.push_back(std::move(row));
      ev.paths.push_back(clips.paths[chunk[i]]);
    }
    ++ev.steps;
  }
  ev.ms_per_step = 1000.0 * seconds_since(start) / static_cast<double>(ev.steps);
  ev.loss = loss_sum / static_cast<double>(indices.size());
  ev.accuracy = static_cast<double>(correct) / static_cast<double>(indices.size());
  return ev;
}

Tensor predict(Sequential& model, const Tensor& x, size_t batch_size) {
  if (x.rank() < 1 || x.dim(0) == 0) fail("predict: no inputs, got {}", x.shape().str());
  NoGradGuard no_grad;
  std::vector<Tensor> parts;
  const Tensor on_device = x.to(model.device());
  for (int64_t begin = 0; begin < x.dim(0); begin += static_cast<int64_t>(batch_size)) {
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(batch_size), x.dim(0) - begin);
    parts.push_back(class_probabilities(model, model.forward(ops::slice(on_device, 0, begin, n), {})));
  }
  return ops::concat(parts, 0);
}

}  // namespace hisvid::models
