// Model files: the real Keras 2.8 fixtures reproduce their expected softmax outputs, hisvid's
// own files round-trip bit for bit (weights and optimizer state), training resumes exactly
// from a checkpoint, and bad files fail with errors that name the file and the problem.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "io/hdf5.h"
#include "models/model_file.h"
#include "models/trainer.h"
#include "models/zoo.h"
#include "tests/test_support.h"

namespace hisvid::models {
namespace {

namespace fs = std::filesystem;

// The fixtures' README: a float32 forward matches the float64 reference to about 1e-5; 1e-4
// absolute leaves room for summation order (OpenBLAS vs numpy) over 20 recurrent steps.
constexpr double kKerasTolerance = 1e-4;

const std::string kFixtures = std::string(HISVID_FIXTURES_DIR) + "/keras/";

std::vector<std::vector<double>> read_expected(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::vector<double>> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::vector<double> row;
    double v;
    while (fields >> v) row.push_back(v);
    rows.push_back(row);
  }
  return rows;
}

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("hisvid_test_" + std::to_string(::getpid()) + "_" +
                                                  std::to_string(counter_++))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

class KerasFixtures : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!fs::exists(kFixtures)) GTEST_SKIP() << "fixtures not found at " << kFixtures;
  }
};

TEST_P(KerasFixtures, ReproduceTheExpectedSoftmaxOutputs) {
  const std::string stem = kFixtures + GetParam();
  LoadedModel loaded = load_model(stem + ".h5");
  const Tensor clips = io::h5::File::open(kFixtures + "real_clips.h5").root().open_dataset("x").read_tensor();
  const std::vector<std::vector<double>> expected = read_expected(stem + ".expected.txt");
  ASSERT_EQ(expected.size(), 3u);

  NoGradGuard no_grad;
  const std::vector<double> probs = loaded.model.forward(clips, {}).to_vector();
  double worst = 0.0;
  for (size_t clip = 0; clip < 3; ++clip) {
    ASSERT_EQ(expected[clip].size(), 4u);
    for (size_t k = 0; k < 4; ++k) worst = std::max(worst, std::fabs(probs[clip * 4 + k] - expected[clip][k]));
  }
  EXPECT_LE(worst, kKerasTolerance);
  RecordProperty("max_abs_difference", std::to_string(worst));
  std::printf("%s: largest difference from the Keras reference: %.3g\n", GetParam().c_str(), worst);
}

TEST_P(KerasFixtures, KeepTheirArchitectureAndOptimizer) {
  const LoadedModel loaded = load_model(kFixtures + GetParam() + ".h5");
  EXPECT_EQ(loaded.keras_version, "2.8.0");
  EXPECT_EQ(loaded.model.count_params().total, GetParam().find("lrcn") != std::string::npos ? 73060 : 44524);
  ASSERT_NE(loaded.extras.optimizer, nullptr);
  EXPECT_EQ(loaded.extras.optimizer->name(), "Adam");
  // Adam/iter:0 of each file: the user trained the two models for different numbers of steps.
  EXPECT_EQ(loaded.extras.optimizer->iterations(), GetParam().find("lrcn") != std::string::npos ? 2652 : 1716);
  EXPECT_EQ(loaded.extras.optimizer->slots().size(), loaded.model.trainable_weights().size());
}

TEST_P(KerasFixtures, ContinueTrainingFromTheKerasFile) {
  LoadedModel loaded = load_model(kFixtures + GetParam() + ".h5");
  const Tensor clips = io::h5::File::open(kFixtures + "real_clips.h5").root().open_dataset("x").read_tensor();
  const Tensor targets = Tensor::from_vector(std::vector<double>{0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0}, {3, 4});
  Generator rng(1);
  const std::vector<Tensor> weights = loaded.model.trainable_weights();
  const std::vector<double> before = weights[0].to_vector();
  backward(ops::softmax_cross_entropy(loaded.model.forward(clips, {true, &rng}, Output::Logits), targets).loss);
  const int64_t steps_before = loaded.extras.optimizer->iterations();
  loaded.extras.optimizer->step(weights);
  EXPECT_EQ(loaded.extras.optimizer->iterations(), steps_before + 1);
  EXPECT_NE(weights[0].to_vector(), before);
}

INSTANTIATE_TEST_SUITE_P(Keras28, KerasFixtures,
                         ::testing::Values("tutorial_lrcn_keras2.8", "tutorial_convlstm_keras2.8"));

// Bitwise equality of two float tensors (NaN payloads included).
void expect_same_bits(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  const Tensor fa = a.to(Device::cpu()), fb = b.to(Device::cpu());
  EXPECT_EQ(std::memcmp(fa.data_ptr(), fb.data_ptr(), fa.nbytes()), 0) << what;
}

TEST(ModelFiles, SaveLoadRoundTripIsBitExactForEveryZooModel) {
  TempDir dir;
  for (const std::string& name : zoo_names()) {
    SCOPED_TRACE(name);
    Sequential model = load_spec(name, 3);
    model.build(21);
    // Give the optimizer real state: one RMSprop or Adam step on fake gradients.
    std::unique_ptr<Optimizer> opt = make_optimizer(name == "lrcn_small" ? "rmsprop" : "adam");
    const std::vector<Tensor> weights = model.trainable_weights();
    Generator rng(5);
    for (const Tensor& w : weights) w.impl()->grad = rng.normal(w.shape(), 0.0, 1.0).impl_ptr();
    opt->step(weights);
    zero_grad(weights);

    const std::string path = dir.file(name + ".h5");
    save_model(path, model, {"a", "b", "c"}, opt.get(), {{"epoch", 3}});
    LoadedModel back = load_model(path);
    EXPECT_EQ(back.model.to_json(), model.to_json());
    EXPECT_EQ(back.extras.class_names, (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(back.extras.training_state["epoch"], 3);
    const std::vector<layers::Layer*> la = model.layers(), lb = back.model.layers();
    for (size_t l = 0; l < la.size(); ++l) {
      for (size_t w = 0; w < la[l]->weights().size(); ++w) {
        expect_same_bits(la[l]->weights()[w].value, lb[l]->weights()[w].value, la[l]->name());
      }
    }
    ASSERT_NE(back.extras.optimizer, nullptr);
    EXPECT_EQ(back.extras.optimizer->name(), opt->name());
    EXPECT_EQ(back.extras.optimizer->iterations(), 1);
    EXPECT_EQ(back.extras.optimizer->hyper_parameters(), opt->hyper_parameters());
    ASSERT_EQ(back.extras.optimizer->slots().size(), opt->slots().size());
    for (size_t i = 0; i < opt->slots().size(); ++i) {
      for (size_t s = 0; s < opt->slots()[i].size(); ++s) {
        expect_same_bits(opt->slots()[i][s], back.extras.optimizer->slots()[i][s], "slot");
      }
    }
  }
}

// A few steps of training of a tiny LRCN on fixed data; the state that matters for resuming
// is the weights, the optimizer (slots, iterations) and the RNG offset.
struct TinyRun {
  Sequential model;
  std::unique_ptr<Optimizer> optimizer;
  Generator rng;
};

const char* kTinyLrcn = R"({"class_name": "Sequential", "config": {"name": "tiny", "layers": [
  {"class_name": "InputLayer", "config": {"batch_input_shape": [null, 4, 8, 8, 3]}},
  {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Conv2D", "config": {"filters": 4, "kernel_size": [3, 3], "padding": "same", "activation": "relu"}}}},
  {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "MaxPooling2D", "config": {"pool_size": [4, 4]}}}},
  {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Dropout", "config": {"rate": 0.25}}}},
  {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Flatten", "config": {}}}},
  {"class_name": "LSTM", "config": {"units": 5}},
  {"class_name": "Dense", "config": {"units": 2, "activation": "softmax"}}]}})";

void train_epochs(Sequential& model, Optimizer& optimizer, Generator& rng, int epochs) {
  Generator data(77);
  const Tensor x = data.uniform({6, 4, 8, 8, 3}, 0.0, 1.0);
  const Tensor y = Tensor::from_vector(std::vector<double>{1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1}, {6, 2});
  const std::vector<Tensor> weights = model.trainable_weights();
  for (int e = 0; e < epochs; ++e) {
    for (int64_t b = 0; b < 6; b += 2) {
      const Tensor xb = ops::slice(x, 0, b, 2), yb = ops::slice(y, 0, b, 2);
      backward(ops::softmax_cross_entropy(model.forward(xb, {true, &rng}, Output::Logits), yb).loss);
      optimizer.step(weights);
      zero_grad(weights);
    }
  }
}

TEST(ModelFiles, ResumeGivesBitwiseTheSameWeights) {
  TempDir dir;
  // Straight: 4 epochs.
  Sequential straight = Sequential::from_json(nlohmann::json::parse(kTinyLrcn), "tiny");
  straight.build(3);
  Adam adam;
  Generator rng(9);
  train_epochs(straight, adam, rng, 4);

  // 2 epochs, save, load into fresh objects, 2 more epochs.
  Sequential first = Sequential::from_json(nlohmann::json::parse(kTinyLrcn), "tiny");
  first.build(3);
  Adam adam_first;
  Generator rng_first(9);
  train_epochs(first, adam_first, rng_first, 2);
  const std::string path = dir.file("checkpoint.h5");
  save_model(path, first, {"left", "right"}, &adam_first, {{"rng_seed", 9}, {"rng_offset", rng_first.offset()}});

  LoadedModel resumed = load_model(path);
  Generator rng_resumed(resumed.extras.training_state["rng_seed"].get<uint64_t>(),
                        resumed.extras.training_state["rng_offset"].get<uint64_t>());
  train_epochs(resumed.model, *resumed.extras.optimizer, rng_resumed, 2);

  const std::vector<Tensor> a = straight.trainable_weights(), b = resumed.model.trainable_weights();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) expect_same_bits(a[i], b[i], "weight " + std::to_string(i));
  EXPECT_EQ(resumed.extras.optimizer->iterations(), adam.iterations());
}

using hisvid::testing::expect_error;

TEST(ModelFiles, WrongShapedWeightsNameLayerWeightAndShapes) {
  TempDir dir;
  Sequential four = load_spec("lrcn", 4);
  four.build(1);
  const std::string path = dir.file("four.h5");
  save_model(path, four, {}, nullptr, nullptr);
  Sequential five = load_spec("lrcn", 5);
  five.build(1);
  expect_error([&] { load_weights(five, io::read_keras_model(path), path); },
                        {path, "dense/kernel:0", "(32, 4)", "(32, 5)", "dense"});
  Sequential other = load_spec("convlstm", 4);
  other.build(1);
  expect_error([&] { load_weights(other, io::read_keras_model(path), path); }, {path, "layers with weights"});
}

TEST(ModelFiles, BadFilesAreClearErrors) {
  TempDir dir;
  expect_error([&] { load_model(dir.file("missing.h5")); }, {"missing.h5", "no such file"});
  const std::string text = dir.file("notes.h5");
  std::ofstream(text) << "this is not an HDF5 file\n";
  expect_error([&] { load_model(text); }, {"notes.h5", "not an HDF5 file"});
}

TEST(ModelFiles, FailedSaveKeepsThePreviousCheckpoint) {
  TempDir dir;
  Sequential model = load_spec("lrcn", 4);
  model.build(1);
  const std::string path = dir.file("model.h5");
  save_model(path, model, {"a", "b", "c", "d"}, nullptr, nullptr);
  const std::vector<double> saved = load_model(path).model.trainable_weights()[0].to_vector();

  Sequential changed = load_spec("lrcn", 4);
  changed.build(2);
  io::WriteOptions failing;
  int datasets = 0;
  failing.before_dataset = [&](const std::string&) {
    if (++datasets == 4) throw std::runtime_error("simulated disk full");
  };
  EXPECT_THROW(save_model(path, changed, {"a", "b", "c", "d"}, nullptr, nullptr, failing), Error);
  EXPECT_EQ(load_model(path).model.trainable_weights()[0].to_vector(), saved);
  int files = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(path).parent_path())) files += entry.is_regular_file();
  EXPECT_EQ(files, 1);  // no temporary file left behind
}

TEST(Training, ModelAndDataMustAgreeOnClasses) {
  Sequential model = Sequential::from_json(nlohmann::json::parse(kTinyLrcn), "tiny");  // Dense(2)
  model.build(1);
  io::ClipSet clips;
  clips.class_names = {"left", "right", "up"};
  clips.extraction = {4, 8, 8};
  clips.pixels.assign(size_t(2) * 4 * 8 * 8 * 3, 0);
  clips.labels = {0, 2};
  clips.paths = {"a.avi", "b.avi"};
  Adam adam;
  expect_error([&] { Trainer(model, adam, clips, io::Split{{0, 1}, {}, {}}, FitOptions{}, 1); },
               {"'tiny'", "2 output classes", "3 classes"});
  // Evaluation matches classes by name: one the model does not know is an error naming it.
  expect_error([&] { match_classes({"left", "up"}, {"left", "right"}); }, {"'up'", "left, right"});
  EXPECT_EQ(match_classes({"right", "left"}, {"left", "right"}), (std::vector<int>{1, 0}));
}

}  // namespace
}  // namespace hisvid::models
