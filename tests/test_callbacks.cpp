// The Keras callbacks of models/callbacks.h on hand-made epoch sequences: when EarlyStopping
// stops and which weights it restores, ReduceLROnPlateau's schedule with patience, cooldown and
// min_lr, TerminateOnNaN, ModelCheckpoint's best epoch, and a state saved and restored mid-run
// deciding as an uninterrupted run.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/optimizer.h"
#include "models/callbacks.h"
#include "tests/test_support.h"

namespace hisvid::models {
namespace {

// A one-weight model whose weight we set to the epoch number, so that restored weights show
// which epoch they come from.
struct EpochRun {
  Sequential model = [] {
    Sequential m = Sequential::from_json(nlohmann::json::parse(R"([
      {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 1]}},
      {"class_name": "Dense", "config": {"units": 2, "activation": "softmax", "use_bias": false}}])"),
                                         "spec");
    m.build(0);
    return m;
  }();
  Adam optimizer{0.01};
  std::vector<EpochLog> history;
  std::vector<std::string> messages, saved;

  // Ends an epoch with these values through `callbacks`; true when one of them stops training.
  bool epoch(std::vector<Callback*> callbacks, double val_loss, double val_accuracy = 0.5) {
    EpochLog log;
    log.epoch = static_cast<int>(history.size()) + 1;
    log.loss = log.val_loss = val_loss;
    log.accuracy = log.val_accuracy = val_accuracy;
    history.push_back(log);
    NoGradGuard no_grad;
    Tensor& w = model.layers()[0]->weights()[0].value;
    w.copy_from(Tensor::full(w.shape(), log.epoch));
    EpochEnd end{history, model, optimizer, [this](const std::string& f) { saved.push_back(f); },
                 [this](const std::string& m) { messages.push_back(m); }};
    for (Callback* c : callbacks) c->on_epoch_end(end);
    return end.stop;
  }
  double weight() const { return model.layers()[0]->weights()[0].value.to_vector()[0]; }
};

TEST(Callbacks, EarlyStoppingStopsAfterPatienceAndRestoresTheBestEpoch) {
  EpochRun run;
  EarlyStopping early({"val_loss", 2, 0.0, true});
  EXPECT_FALSE(run.epoch({&early}, 1.0));
  EXPECT_FALSE(run.epoch({&early}, 0.8));  // best
  EXPECT_FALSE(run.epoch({&early}, 0.9));  // wait 1
  EXPECT_TRUE(run.epoch({&early}, 0.85));  // wait 2 = patience: stop
  EXPECT_TRUE(early.stopped());
  EXPECT_EQ(early.best_epoch(), 2);
  EXPECT_EQ(run.weight(), 2.0);  // epoch 2's weights are back
  ASSERT_EQ(run.messages.size(), 2u);
  EXPECT_EQ(run.messages[0], "Epoch 4: early stopping");
}

TEST(Callbacks, EarlyStoppingMinDeltaAndAccuracyMonitor) {
  EpochRun run;
  EarlyStopping early({"val_accuracy", 1, 0.05, false});
  EXPECT_FALSE(run.epoch({&early}, 1.0, 0.50));
  EXPECT_FALSE(run.epoch({&early}, 1.0, 0.60));  // +0.10 > min_delta: improvement
  EXPECT_TRUE(run.epoch({&early}, 1.0, 0.64));   // +0.04 < min_delta: no improvement, patience 1
  EXPECT_EQ(early.best_epoch(), 2);
  EXPECT_EQ(run.weight(), 3.0);  // no restoring without restore_best_weights
}

TEST(Callbacks, EarlyStoppingWithZeroPatienceNeverStopsOnAnImprovement) {
  EpochRun run;
  EarlyStopping early({"val_loss", 0, 0.0, false});
  EXPECT_FALSE(run.epoch({&early}, 1.0));  // the first epoch never stops
  EXPECT_FALSE(run.epoch({&early}, 0.9));  // an improvement returns before the patience check (Keras 2.9+)
  EXPECT_TRUE(run.epoch({&early}, 0.95));
}

TEST(Callbacks, ReduceLROnPlateauPatienceCooldownAndMinLr) {
  EpochRun run;
  ReduceLROnPlateauConfig config;
  config.factor = 0.5;
  config.patience = 2;
  config.cooldown = 1;
  config.min_lr = 0.003;
  ReduceLROnPlateau reduce(config);
  std::vector<double> lr;
  for (double v : {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0}) {
    run.epoch({&reduce}, v);
    lr.push_back(run.optimizer.learning_rate());
  }
  // As Keras: epoch 2 waits 1, epoch 3 waits 2 and reduces to 0.005 with cooldown 1. Epoch 4
  // spends the cooldown first (counter 1 -> 0) and, out of cooldown, waits 1; epoch 5 waits 2
  // and reduces to max(0.0025, 0.003) = 0.003. At min_lr nothing more is reduced.
  const std::vector<double> expected = {0.01, 0.01, 0.005, 0.005, 0.003, 0.003, 0.003, 0.003};
  ASSERT_EQ(lr.size(), expected.size());
  for (size_t i = 0; i < lr.size(); ++i) EXPECT_NEAR(lr[i], expected[i], 1e-9) << "epoch " << i + 1;
  EXPECT_EQ(run.messages.size(), 2u);
}

TEST(Callbacks, TerminateOnNaNStopsAtTheBatch) {
  TerminateOnNaN terminate;
  EXPECT_FALSE(terminate.on_batch_loss(3, 1, 0.7));
  EXPECT_TRUE(terminate.on_batch_loss(3, 2, std::numeric_limits<double>::quiet_NaN()));
  EXPECT_EQ(terminate.failed_epoch, 3);
  EXPECT_EQ(terminate.failed_step, 2);
  EXPECT_TRUE(TerminateOnNaN().on_batch_loss(1, 1, std::numeric_limits<double>::infinity()));
}

TEST(Callbacks, ModelCheckpointSavesBestAndLast) {
  EpochRun run;
  ModelCheckpoint checkpoint("unused", "val_loss");
  run.epoch({&checkpoint}, 1.0);
  run.epoch({&checkpoint}, 1.2);
  run.epoch({&checkpoint}, 0.7);
  // last.h5 before best.h5: a disk that fills between them leaves what --resume reads.
  EXPECT_EQ(run.saved, (std::vector<std::string>{"last.h5", "best.h5", "last.h5", "last.h5", "best.h5"}));
  EXPECT_EQ(checkpoint.best_epoch(), 3);
}

// A run interrupted after epoch 3 and resumed from the callbacks' saved state decides exactly
// as the uninterrupted run.
TEST(Callbacks, SavedStateResumesTheSameDecisions) {
  const std::vector<double> values = {1.0, 0.8, 0.9, 0.95, 0.97, 0.99};
  ReduceLROnPlateauConfig plateau;
  plateau.patience = 1;
  plateau.factor = 0.5;
  EpochRun straight;
  EarlyStopping early({"val_loss", 3, 0.0, false});
  ReduceLROnPlateau reduce(plateau);
  std::vector<bool> stops;
  for (double v : values) stops.push_back(straight.epoch({&early, &reduce}, v));

  EpochRun first;
  EarlyStopping early1({"val_loss", 3, 0.0, false});
  ReduceLROnPlateau reduce1(plateau);
  for (size_t i = 0; i < 3; ++i) first.epoch({&early1, &reduce1}, values[i]);
  EpochRun second;
  second.history = first.history;
  second.optimizer.set_learning_rate(first.optimizer.learning_rate());
  EarlyStopping early2({"val_loss", 3, 0.0, false});
  ReduceLROnPlateau reduce2(plateau);
  early2.restore(nlohmann::json::parse(early1.state().dump()));  // through JSON, as a checkpoint
  reduce2.restore(nlohmann::json::parse(reduce1.state().dump()));
  for (size_t i = 3; i < values.size(); ++i) {
    EXPECT_EQ(second.epoch({&early2, &reduce2}, values[i]), stops[i]) << "epoch " << i + 1;
  }
  EXPECT_EQ(second.optimizer.learning_rate(), straight.optimizer.learning_rate());
  EXPECT_EQ(early2.best_epoch(), early.best_epoch());
}

TEST(Callbacks, UnknownMonitorIsAnError) {
  hisvid::testing::expect_error(
      [] {
        EarlyStopping({"val_los", 1, 0.0, false});
      },
      {"EarlyStopping", "val_los"});
  ReduceLROnPlateauConfig bad;
  bad.factor = 1.5;
  hisvid::testing::expect_error([&] { ReduceLROnPlateau{bad}; }, {"factor", "1.5"});
}

}  // namespace
}  // namespace hisvid::models
