#include "models/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>
#include <random>
#include <string>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/hash.h"
#include "engine/ops.h"
#include "kernels/softmax.h"
#include "models/model_file.h"
#include "models/training_step.h"

namespace hisvid::models {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// FNV-1a 64 of every weight's bytes: equal on every rank exactly when the weights are.
uint64_t weights_fingerprint(const std::vector<Tensor>& weights) {
  uint64_t hash = kFnv1a64Basis;
  for (const Tensor& w : weights) {
    const Tensor host = w.device().is_cpu() ? w : w.to(Device::cpu());
    hash = fnv1a64(host.data_ptr(), host.nbytes(), hash);
  }
  return hash;
}

// Shortest interval between two progress reports of a one-process fit: each reads the step
// sums back from the device (a synchronisation on a GPU).
constexpr double kProgressSeconds = 0.25;

// Draws per training step of a rank's dropout and augmentation stream: far more than any model
// takes (a few per layer and timestep).
constexpr uint64_t kDrawsPerStep = uint64_t(1) << 24;

}  // namespace

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

namespace {

// Whether a and b have the same weights, layer by layer, of the same shapes.
bool same_weight_shapes(const Sequential& a, const Sequential& b) {
  if (a.layers().size() != b.layers().size()) return false;
  for (size_t i = 0; i < a.layers().size(); ++i) {
    const auto& wa = a.layers()[i]->weights();
    const auto& wb = b.layers()[i]->weights();
    if (wa.size() != wb.size()) return false;
    for (size_t j = 0; j < wa.size(); ++j)
      if (wa[j].value.shape() != wb[j].value.shape()) return false;
  }
  return true;
}

std::string new_run_id() {
  std::random_device device;
  return fmt::format("{:08x}{:08x}", device(), device());
}

}  // namespace

Trainer::Trainer(Sequential& model, Optimizer& optimizer, const io::ClipSet& clips, const io::Split& split,
                 FitOptions options, uint64_t seed)
    : model_(model),
      optimizer_(optimizer),
      clips_(clips),
      split_(split),
      options_(std::move(options)),
      rng_(seed),
      seed_(seed),
      run_id_(new_run_id()) {
  if (options_.communicator != nullptr && options_.communicator->size() > 1) comm_ = options_.communicator;
  if (!model_.built()) fail("fit: model '{}' is not built", model_.name());
  if (static_cast<size_t>(model_.num_classes()) != clips_.class_names.size()) {
    fail("fit: model '{}' has {} output classes but the data has {} classes", model_.name(),
         model_.num_classes(), clips_.class_names.size());
  }
  if (split_.train.empty()) fail("fit: no training clips");
  if (options_.batch_size < 1) fail("fit: batch size must be >= 1");
  if (options_.epochs < 1) fail("fit: epochs must be >= 1, got {}", options_.epochs);
  const auto needs_validation = [&](const std::string& monitor, const char* who) {
    if (monitor.rfind("val_", 0) == 0 && split_.validation.empty()) {
      fail("{}: monitor '{}' needs validation data (validation split > 0)", who, monitor);
    }
  };
  // In Keras's order of the seeds' callback lists.
  auto terminate = std::make_unique<TerminateOnNaN>();
  terminate_ = terminate.get();
  callbacks_.push_back(std::move(terminate));
  if (options_.early_stopping) {
    needs_validation(options_.early_stopping->monitor, "EarlyStopping");
    auto early = std::make_unique<EarlyStopping>(*options_.early_stopping);
    early_stopping_ = early.get();
    callbacks_.push_back(std::move(early));
  }
  if (options_.reduce_lr) {
    needs_validation(options_.reduce_lr->monitor, "ReduceLROnPlateau");
    callbacks_.push_back(std::make_unique<ReduceLROnPlateau>(*options_.reduce_lr));
  }
  if (!options_.checkpoint_dir.empty() && (comm_ == nullptr || comm_->rank() == 0)) {  // rank 0 writes
    // The checkpoints before history.csv: a run stopped between them (a full disk, a kill) has
    // last.h5 to resume from, and history.csv never lists an epoch that last.h5 lacks.
    const std::string monitor = options_.early_stopping     ? options_.early_stopping->monitor
                                : split_.validation.empty() ? "loss"
                                                            : "val_loss";
    auto checkpoint = std::make_unique<ModelCheckpoint>(options_.checkpoint_dir, monitor);
    checkpoint_ = checkpoint.get();
    callbacks_.push_back(std::move(checkpoint));
    callbacks_.push_back(std::make_unique<CSVLogger>(options_.checkpoint_dir + "/history.csv"));
  }
}

nlohmann::json Trainer::training_state() const {
  nlohmann::json history = nlohmann::json::array();
  for (const EpochLog& log : history_) history.push_back(log.to_json());
  nlohmann::json state = {{"epoch", static_cast<int>(history_.size())},
                          {"seed", seed_},
                          {"rng_offset", rng_.offset()},
                          {"learning_rate", optimizer_.learning_rate()},
                          {"history", history},
                          {"run", options_.run_info},
                          {"run_id", run_id_}};
  for (const auto& callback : callbacks_) {
    const nlohmann::json s = callback->state();
    if (!s.empty()) state[callback->key()] = s;
  }
  return state;
}

std::vector<std::string> Trainer::resume(const nlohmann::json& state) {
  if (!state.is_object() || !state.contains("epoch")) fail("resume: the checkpoint holds no training state");
  if (state.value("seed", seed_) != seed_) {
    fail("resume: the checkpoint was trained with seed {}, this run uses {}", state["seed"].get<uint64_t>(),
         seed_);
  }
  rng_.set_offset(state.at("rng_offset").get<uint64_t>());
  // A checkpoint from before run ids keeps the new one: its best.h5 is checked by epoch alone.
  if (state.contains("run_id") && state["run_id"].is_string()) run_id_ = state["run_id"].get<std::string>();
  optimizer_.set_learning_rate(state.at("learning_rate").get<double>());
  history_.clear();
  for (const nlohmann::json& j : state.at("history")) history_.push_back(EpochLog::from_json(j));
  for (const auto& callback : callbacks_) {
    if (state.contains(callback->key())) callback->restore(state.at(callback->key()));
  }
  // Checkpoints from before ModelCheckpoint kept their own record track best.h5 in the
  // early-stopping record (the same keys).
  if (checkpoint_ != nullptr && !state.contains(checkpoint_->key()) && state.contains("early_stopping")) {
    checkpoint_->restore(state.at("early_stopping"));
  }
  const bool restores = early_stopping_ != nullptr && options_.early_stopping->restore_best_weights &&
                        early_stopping_->best_epoch() > 0;
  const int best_epoch = checkpoint_ != nullptr ? checkpoint_->best_epoch()
                         : restores             ? early_stopping_->best_epoch()
                                                : 0;
  std::vector<std::string> notes;
  if (best_epoch == 0 || options_.checkpoint_dir.empty() || (checkpoint_ == nullptr && !restores))
    return notes;
  // best.h5 holds the run's best epoch, unless the run stopped between saving last.h5, which
  // records the epoch as the best, and best.h5 (a full disk, a kill): then best.h5 holds an
  // earlier epoch or is missing, the best epoch is the one resumed from, and best.h5 is saved
  // again from it.
  const std::string path = options_.checkpoint_dir + "/best.h5";
  std::optional<LoadedModel> best;
  int held = 0;
  std::string why = "is missing";
  std::error_code error;
  if (std::filesystem::exists(path, error)) {
    try {
      best = load_model(path);
      const nlohmann::json& s = best->extras.training_state;
      held =
          s.is_object() && s.contains("epoch") && s["epoch"].is_number_integer() ? s["epoch"].get<int>() : 0;
      why = held > 0 ? fmt::format("holds epoch {}", held) : "holds no epoch record";
      const std::string id = s.is_object() && s.contains("run_id") && s["run_id"].is_string()
                                 ? s["run_id"].get<std::string>()
                                 : std::string();
      if (!id.empty() && state.contains("run_id") && id != state["run_id"]) {  // no id: an older hisvid's
        held = 0;
        why = fmt::format("is another run's (run id {}, this run's {})", id, run_id_);
      } else if (!same_weight_shapes(best->model, model_)) {
        held = 0;
        why = "holds a model of other shapes";
      }
    } catch (const Error& e) {
      why = fmt::format("is unreadable ({})", e.what());
    }
  }
  const int resumed = state.at("epoch").get<int>();
  if (checkpoint_ != nullptr) checkpoint_->set_saved_epoch(held);
  if (held != best_epoch) {
    best.reset();
    if (best_epoch == resumed) {
      if (checkpoint_ != nullptr) {
        save_checkpoint("best.h5");
        checkpoint_->set_saved_epoch(best_epoch);
      }
    } else if (restores) {
      fail(
          "resume: {} {}, but the run's best epoch is {} (the checkpoint resumed holds epoch {}): the best "
          "weights that EarlyStopping would restore are lost; train on from {} with --weights, or start "
          "again",
          path, why, best_epoch, resumed, options_.checkpoint_dir + "/last.h5");
    }
    // Else nothing needs best.h5's weights: it is saved again when an epoch improves.
    if (best_epoch != resumed && !restores) {
      const bool trains = static_cast<int>(history_.size()) < options_.epochs &&
                          !(early_stopping_ != nullptr && early_stopping_->stopped());
      notes.push_back(
          fmt::format("note: {} {}; the run's best epoch is {}, whose weights no file holds now{}", path, why,
                      best_epoch, trains ? ": best.h5 is saved again when an epoch improves on it" : ""));
    }
  }
  if (!restores) return notes;
  // From best.h5, or the model itself where the epoch resumed from is the best (copied: it trains on).
  std::vector<Tensor> weights;
  for (const layers::Layer* layer : (best ? best->model : model_).layers()) {
    for (const layers::Weight& w : layer->weights())
      weights.push_back(best ? w.value.to(model_.device()) : w.value.clone());
  }
  early_stopping_->restore_best_weights(std::move(weights));
  return notes;
}

void Trainer::save_checkpoint(const std::string& file) const {
  save_model(options_.checkpoint_dir + "/" + file, model_, options_.class_names, &optimizer_,
             training_state());
}

FitResult Trainer::result() const {
  FitResult r;
  r.history = history_;
  r.stopped_early = early_stopping_ != nullptr && early_stopping_->stopped();
  r.best_epoch = checkpoint_ != nullptr       ? checkpoint_->best_epoch()
                 : early_stopping_ != nullptr ? early_stopping_->best_epoch()
                                              : 0;
  r.best_file_epoch = checkpoint_ != nullptr ? checkpoint_->saved_epoch() : 0;
  r.failed_epoch = terminate_->failed_epoch;
  r.failed_step = terminate_->failed_step;
  r.non_finite_loss = r.failed_epoch > 0;
  return r;
}

FitResult Trainer::fit(const FitProgress& progress) {
  const std::vector<Tensor> weights = model_.trainable_weights();
  const auto message = [&](const std::string& text) {
    if (progress.on_message) progress.on_message(text);
  };
  const bool already_stopped = early_stopping_ != nullptr && early_stopping_->stopped();
  if (already_stopped && options_.epochs > static_cast<int>(history_.size())) {
    message(fmt::format(
        "note: EarlyStopping ended this run after epoch {} (its best epoch: {}): nothing is trained, "
        "whatever "
        "--epochs says; the model and its reports are written again (to train on, start a new run from its "
        "model with --weights)",
        history_.size(), early_stopping_->best_epoch()));
  }
  // One process: each step on the device from the clips' pixels, nothing read back (several
  // ranks sum every step's metrics on the host instead, below).
  std::unique_ptr<TrainingStep> direct;
  // One process: the validation passes' step, kept across epochs (its graph with it), made at
  // the first pass; released with the training step's when fit returns.
  std::unique_ptr<InferenceStep> validation;
  if (!comm_) {
    const io::ExtractionSettings& e = clips_.extraction;
    const io::Augmentation& a = options_.augmentation;
    direct = std::make_unique<TrainingStep>(model_, optimizer_, rng_, a,
                                            Shape{e.sequence_length, e.height, e.width, e.channels},
                                            model_.num_classes(), options_.cuda_graphs);
  }
  // Each step's graph status, said when it changes.
  std::string graph_status, validation_graph_status;
  const auto say_graph = [&](const std::string& status, std::string& said, const char* what) {
    if (status == said) return;
    said = status;
    message(graph_note(status, what));
  };
  for (int epoch = static_cast<int>(history_.size()) + 1; epoch <= options_.epochs && !already_stopped;
       ++epoch) {
    const Clock::time_point epoch_start = Clock::now();
    EpochLog log;
    log.epoch = epoch;
    log.learning_rate = optimizer_.learning_rate();
    const std::vector<std::vector<size_t>> batches =
        io::epoch_batches(split_.train, options_.batch_size, options_.shuffle, rng_);
    log.steps = static_cast<int>(batches.size());
    // One process: the loss, the accuracy and a non-finite loss stay on the device (step_sums),
    // read when progress is shown and once at the end of the epoch. Several ranks: each step's
    // metrics are summed across ranks on the host (comm_), so they are read every step.
    if (direct) direct->zero_sums();
    const Tensor sums = direct ? direct->sums() : Tensor();
    const int64_t iterations_before = optimizer_.iterations();
    double loss_sum = 0.0;
    int64_t correct = 0, seen = 0, failed_step = 0;
    double failed_loss = 0.0;
    const auto read_sums = [&] {
      const std::vector<double> v = sums.to_vector();
      loss_sum = v[kStepLossSum];
      correct = static_cast<int64_t>(v[kStepCorrect]);
      seen = static_cast<int64_t>(v[kStepSamples]);
      failed_step = static_cast<int64_t>(v[kStepFailed]);
      failed_loss = v[kStepFailedLoss];
    };
    // The callbacks' verdict on a batch loss (TerminateOnNaN); true stops the run.
    const auto stops_on = [&](int step, double loss) {
      for (const auto& callback : callbacks_) {
        if (callback->on_batch_loss(epoch, step, loss)) {
          message(fmt::format("Epoch {} batch {}: invalid loss {}, terminating training", epoch, step, loss));
          return true;
        }
      }
      return false;
    };
    // A failed step found in the sums: the optimizer counted the steps it skipped.
    const auto failed = [&] {
      if (failed_step == 0) return false;
      optimizer_.set_iterations(iterations_before + failed_step - 1);
      return stops_on(static_cast<int>(failed_step), failed_loss);
    };
    // With several ranks: this rank's shard of each global batch, and its own stream of dropout
    // and augmentation draws (rng_ only shuffles, identically on every rank).
    std::vector<std::vector<size_t>> shards;
    for (const std::vector<size_t>& global : batches)
      shards.push_back(comm_ ? share_of(global, *comm_) : global);
    std::vector<std::vector<size_t>> to_read;
    for (const std::vector<size_t>& shard : shards) {
      if (!shard.empty()) to_read.push_back(shard);
    }
    io::BatchReader reader(clips_, to_read);  // reads ahead when the clips stream from disk
    uint64_t steps_before = 0;
    for (const EpochLog& done : history_) steps_before += static_cast<uint64_t>(done.steps);
    if (progress.on_epoch_begin) progress.on_epoch_begin(epoch);
    Clock::time_point last_report = Clock::now();
    for (size_t step = 0; step < batches.size(); ++step) {
      const auto interrupted = [&] {
        FitResult r = result();
        r.interrupted = true;
        return r;
      };
      // Ctrl-C reaches the ranks at different moments: with several ranks the stop is summed
      // with the step's metrics below and decided together, before any update.
      const bool stop = progress.should_stop && progress.should_stop();
      if (stop && !comm_) {
        read_sums();
        return failed() ? result() : interrupted();
      }
      const std::vector<size_t>& shard = shards[step];
      const double B = static_cast<double>(batches[step].size()), n = static_cast<double>(shard.size());
      std::optional<Generator> shard_rng;
      if (comm_) {
        shard_rng.emplace(seed_ ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(comm_->rank() + 1)),
                          (steps_before + step) * kDrawsPerStep);
      }
      Generator* draws = comm_ ? &*shard_rng : &rng_;
      LossTerms terms;
      double loss = 0.0;
      int64_t step_correct = 0;
      if (direct) {
        std::vector<int> labels;
        for (size_t i : shard) labels.push_back(clips_.labels[i]);
        direct->run(reader.next(), labels);
      } else if (!shard.empty()) {
        const io::Batch batch =
            io::make_batch(clips_, shard, reader.next(), options_.augmentation, draws, model_.device());
        terms = model_loss(model_, batch.x, batch.y, {true, draws});
        loss = terms.loss.item();
        step_correct = correct_count(model_, terms, batch.y);
      }
      if (comm_) {  // the global batch's mean loss, its correct count and the stop, the same on every rank
        std::vector<double> totals = {loss * n, static_cast<double>(step_correct), stop ? 1.0 : 0.0};
        comm_->sum(totals);
        if (totals[2] > 0.0) return interrupted();
        loss = totals[0] / B;
        step_correct = static_cast<int64_t>(totals[1]);
        if (stops_on(static_cast<int>(step) + 1, loss)) return result();
        // d(global mean)/dw = sum over ranks of (n_r / B) d(shard mean)/dw; the penalties, added
        // on every rank, come back whole (sum of n_r / B = 1).
        if (!shard.empty()) backward(ops::scale(terms.loss, n / B));
        std::vector<Tensor> grads;
        for (Tensor w : weights) {
          if (!w.grad().defined()) w.set_grad(Tensor::zeros(w.shape(), w.dtype(), w.device()));
          grads.push_back(w.grad());
        }
        comm_->sum(grads);
        optimizer_.step(weights);
        zero_grad(weights);
        loss_sum += loss * B;
        correct += step_correct;
        seen += static_cast<int64_t>(B);
      }
      bool report = comm_ != nullptr;  // the ranks' sums are on the host already
      if (!comm_ && (step + 1 == batches.size() ||
                     (progress.on_batch && seconds_since(last_report) >= kProgressSeconds))) {
        read_sums();
        if (failed()) return result();
        last_report = Clock::now();
        report = true;
      }
      if (report && progress.on_batch) {
        progress.on_batch(epoch, static_cast<int>(step) + 1, log.steps, loss_sum / static_cast<double>(seen),
                          static_cast<double>(correct) / static_cast<double>(seen));
      }
    }
    if (comm_ && !same_on_every_rank(*comm_, weights_fingerprint(weights))) {
      fail("epoch {}: the ranks' weights differ (rank {} of {}); the run cannot go on", epoch, comm_->rank(),
           comm_->size());
    }
    if (direct) say_graph(direct->graph_status(), graph_status, "training step");
    log.loss = loss_sum / static_cast<double>(seen);
    log.accuracy = static_cast<double>(correct) / static_cast<double>(seen);
    log.ms_per_step = 1000.0 * seconds_since(epoch_start) / static_cast<double>(log.steps);
    if (!split_.validation.empty()) {
      std::vector<int> identity(clips_.class_names.size());
      for (size_t k = 0; k < identity.size(); ++k) identity[k] = static_cast<int>(k);
      if (comm_) {  // each rank its slice of the validation clips, the sums shared
        const std::vector<size_t> mine = share_of(split_.validation, *comm_);
        std::vector<double> totals = {0.0, 0.0};
        if (!mine.empty()) {
          const Evaluation part = evaluate(model_, clips_, mine, options_.batch_size, identity);
          totals = {part.loss * static_cast<double>(mine.size()),
                    part.accuracy * static_cast<double>(mine.size())};
        }
        comm_->sum(totals);
        log.val_loss = totals[0] / static_cast<double>(split_.validation.size());
        log.val_accuracy = totals[1] / static_cast<double>(split_.validation.size());
      } else {
        if (validation == nullptr) {
          validation = std::make_unique<InferenceStep>(model_, clip_shape(clips_), options_.cuda_graphs);
        }
        const Evaluation val =
            evaluate(*validation, clips_, split_.validation, options_.batch_size, identity);
        say_graph(val.graph_status, validation_graph_status, "validation step");
        log.val_loss = val.loss;
        log.val_accuracy = val.accuracy;
      }
    }
    log.seconds = seconds_since(epoch_start);
    history_.push_back(log);
    if (progress.on_epoch) progress.on_epoch(log);

    EpochEnd end{history_, model_, optimizer_, [this](const std::string& file) { save_checkpoint(file); },
                 message};
    for (const auto& callback : callbacks_) callback->on_epoch_end(end);
    if (progress.on_epoch_saved) progress.on_epoch_saved(history_.back());
    if (end.stop) break;
  }
  return result();
}

Shape clip_shape(const io::ClipSet& clips) {
  const io::ExtractionSettings& s = clips.extraction;
  return Shape{s.sequence_length, s.height, s.width, s.channels};
}

Evaluation evaluate(Sequential& model, const io::ClipSet& clips, const std::vector<size_t>& indices,
                    size_t batch_size, const std::vector<int>& label_map, bool cuda_graphs,
                    const std::function<bool()>& should_stop) {
  InferenceStep step(model, clip_shape(clips), cuda_graphs);
  return evaluate(step, clips, indices, batch_size, label_map, should_stop);
}

Evaluation evaluate(InferenceStep& step, const io::ClipSet& clips, const std::vector<size_t>& indices,
                    size_t batch_size, const std::vector<int>& label_map,
                    const std::function<bool()>& should_stop) {
  if (indices.empty()) fail("evaluate: no clips to evaluate");
  if (batch_size < 1) fail("evaluate: batch size must be >= 1");
  if (label_map.size() != clips.class_names.size()) {
    fail("evaluate: the label map has {} entries for {} data classes", label_map.size(),
         clips.class_names.size());
  }
  Sequential& model = step.model();
  Evaluation ev;
  const int K = model.num_classes();
  const Clock::time_point start = Clock::now();
  std::vector<std::vector<size_t>> chunks;
  for (size_t begin = 0; begin < indices.size(); begin += batch_size) {
    chunks.emplace_back(
        indices.begin() + static_cast<std::ptrdiff_t>(begin),
        indices.begin() + static_cast<std::ptrdiff_t>(std::min(begin + batch_size, indices.size())));
  }
  for (const size_t i : indices) {
    if (i >= clips.size())
      fail("evaluate: clip index {} is out of range (the set has {} clips)", i, clips.size());
    if (clips.labels[i] < 0 || static_cast<size_t>(clips.labels[i]) >= label_map.size()) {
      fail("evaluate: clip {} has label {}, but there are {} classes", i, clips.labels[i], label_map.size());
    }
  }
  step.zero_sums();
  io::BatchReader reader(clips, chunks);
  for (const std::vector<size_t>& chunk : chunks) {
    if (should_stop && should_stop())
      fail("evaluate: stopped after {} of {} batches", ev.steps, chunks.size());
    std::vector<int> classes;
    for (size_t i : chunk) classes.push_back(label_map[static_cast<size_t>(clips.labels[i])]);
    const std::vector<double> probs = step.run(reader.next(), classes).to_vector();
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
  const std::vector<double> sums = step.sums().to_vector();
  ev.ms_per_step = 1000.0 * seconds_since(start) / static_cast<double>(ev.steps);
  const double samples = static_cast<double>(indices.size());
  if (sums[kStepFailed] != 0.0) {
    // A batch's loss was not finite: the sums stopped there (kernels/softmax.h StepMetrics), and
    // the mean is that loss's kind; the accuracy comes from the predictions.
    ev.loss = sums[kStepFailedLoss];
    int64_t correct = 0;
    for (size_t i = 0; i < ev.truth.size(); ++i) correct += ev.truth[i] == ev.predicted[i];
    ev.accuracy = static_cast<double>(correct) / samples;
  } else {
    ev.loss = sums[kStepLossSum] / samples;
    ev.accuracy = sums[kStepCorrect] / samples;
  }
  ev.graph_status = step.graph_status();
  return ev;
}

std::string graph_note(const std::string& status, const std::string& what) {
  if (status.empty()) return "";
  return status == "replaying"
             ? fmt::format("CUDA graph: the {} is captured and replayed", what)
             : fmt::format("CUDA graph: not used for the {} ({}); its steps run directly", what, status);
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
