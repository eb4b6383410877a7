// Model files: the real Keras 2.8 fixtures reproduce their expected softmax outputs, hisvid's
// own files round-trip bit for bit (weights and optimizer state), training resumes exactly
// from a checkpoint, and bad files fail with errors that name the file and the problem.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zip.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <opencv2/imgproc.hpp>
#include <set>
#include <sstream>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "io/hdf5.h"
#include "io/keras_archive.h"
#include "io/keras_h5.h"
#include "kernels/philox.h"
#include "kernels/softmax.h"
#include "models/keras_format.h"
#include "models/model_file.h"
#include "models/trainer.h"
#include "models/training_step.h"
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
  TempDir()
      : path_(fs::temp_directory_path() /
              ("hisvid_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++))) {
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
    for (size_t k = 0; k < 4; ++k)
      worst = hisvid::testing::worse(worst, std::fabs(probs[clip * 4 + k] - expected[clip][k]));
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
  EXPECT_EQ(loaded.extras.optimizer->iterations(),
            GetParam().find("lrcn") != std::string::npos ? 2652 : 1716);
  EXPECT_EQ(loaded.extras.optimizer->slots().size(), loaded.model.trainable_weights().size());
}

TEST_P(KerasFixtures, ContinueTrainingFromTheKerasFile) {
  LoadedModel loaded = load_model(kFixtures + GetParam() + ".h5");
  const Tensor clips = io::h5::File::open(kFixtures + "real_clips.h5").root().open_dataset("x").read_tensor();
  const Tensor targets = Tensor::from_vector(std::vector<double>{0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0}, {3, 4});
  Generator rng(1);
  const std::vector<Tensor> weights = loaded.model.trainable_weights();
  const std::vector<double> before = weights[0].to_vector();
  backward(
      ops::softmax_cross_entropy(loaded.model.forward(clips, {true, &rng}, Output::Logits), targets).loss);
  const int64_t steps_before = loaded.extras.optimizer->iterations();
  loaded.extras.optimizer->step(weights);
  EXPECT_EQ(loaded.extras.optimizer->iterations(), steps_before + 1);
  EXPECT_NE(weights[0].to_vector(), before);
}

INSTANTIATE_TEST_SUITE_P(Keras28, KerasFixtures,
                         ::testing::Values("tutorial_lrcn_keras2.8", "tutorial_convlstm_keras2.8"));

// --- Files of every Keras version (fixtures/keras-versions) --------------------------------

const std::string kVersionFixtures = std::string(HISVID_FIXTURES_DIR) + "/keras-versions/";

struct VersionFixture {
  const char* file;
  const char* keras_version;
  const char* format;  // what the content is, whatever the name says
  int64_t params, trainable;
  int outputs;
  int64_t optimizer_steps;  // the Adam iteration count the file stores (h5py), -1: no optimizer state
};

void PrintTo(const VersionFixture& f, std::ostream* os) { *os << f.file; }

// The clips of real_clips.h5 as the fixtures' README prepares them for a 20x64x64 model: each
// frame rounded to uint8, divided by 255.
Tensor quantised_clips() {
  const Tensor x = io::h5::File::open(kFixtures + "real_clips.h5").root().open_dataset("x").read_tensor();
  std::vector<double> v = x.to_vector();
  for (double& e : v) e = std::round(e * 255.0) / 255.0;
  return Tensor::from_vector(v, x.shape(), DType::Float32);
}

std::string test_name(std::string file) {
  for (char& c : file) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return file;
}

class KerasVersionFixtures : public ::testing::TestWithParam<VersionFixture> {
 protected:
  void SetUp() override {
    if (!fs::exists(kVersionFixtures)) GTEST_SKIP() << "fixtures not found at " << kVersionFixtures;
  }
};

TEST_P(KerasVersionFixtures, LoadWithTheirParameterCounts) {
  const VersionFixture& f = GetParam();
  const LoadedModel loaded = load_model(kVersionFixtures + f.file);
  EXPECT_EQ(loaded.keras_version, f.keras_version);
  EXPECT_EQ(loaded.format, f.format);
  EXPECT_EQ(loaded.model.count_params().total, f.params);
  EXPECT_EQ(loaded.model.count_params().trainable, f.trainable);
  EXPECT_EQ(loaded.model.output_shape(), Shape{f.outputs});
  EXPECT_TRUE(loaded.extras.warnings.empty()) << loaded.extras.warnings.front();
  if (f.optimizer_steps < 0) {
    EXPECT_EQ(loaded.extras.optimizer, nullptr);
    return;
  }
  // Every layout of optimizer state Keras writes, restored: the step count and both Adam
  // slots of every trainable weight (shapes checked on restore).
  ASSERT_NE(loaded.extras.optimizer, nullptr);
  EXPECT_EQ(loaded.extras.optimizer->name(), "Adam");
  EXPECT_EQ(loaded.extras.optimizer->iterations(), f.optimizer_steps);
  ASSERT_EQ(loaded.extras.optimizer->slots().size(), loaded.model.trainable_weights().size());
  const std::vector<Tensor> weights = loaded.model.trainable_weights();
  for (size_t i = 0; i < weights.size(); ++i) {
    ASSERT_EQ(loaded.extras.optimizer->slots()[i].size(), 2u);
    // A trained model's second moments are positive somewhere in every weight.
    const std::vector<double> v = loaded.extras.optimizer->slots()[i][1].to_vector();
    EXPECT_GT(*std::max_element(v.begin(), v.end()), 0.0) << "weight " << i;
    EXPECT_GE(*std::min_element(v.begin(), v.end()), 0.0) << "weight " << i;
  }
}

// The fixtures with expected outputs (all but the grayscale one, which GrayscaleModelRuns covers).
class KerasVersionOutputs : public KerasVersionFixtures {};

TEST_P(KerasVersionOutputs, ReproduceTheExpectedOutputs) {
  const VersionFixture& f = GetParam();
  const std::string expected_path = kVersionFixtures + f.file + ".expected.txt";
  LoadedModel loaded = load_model(kVersionFixtures + f.file);
  const std::vector<std::vector<double>> expected = read_expected(expected_path);
  ASSERT_EQ(expected.size(), 3u);
  NoGradGuard no_grad;
  const std::vector<double> out = loaded.model.forward(quantised_clips(), {}).to_vector();
  ASSERT_EQ(out.size(), 3u * f.outputs);
  double worst = 0.0;
  for (size_t clip = 0; clip < 3; ++clip) {
    ASSERT_EQ(expected[clip].size(), static_cast<size_t>(f.outputs));
    for (int k = 0; k < f.outputs; ++k)
      worst = hisvid::testing::worse(worst, std::fabs(out[clip * f.outputs + k] - expected[clip][k]));
  }
  EXPECT_LE(worst, kKerasTolerance);
  RecordProperty("max_abs_difference", std::to_string(worst));
  std::printf("%s (Keras %s): largest difference from the reference: %.3g\n", f.file, f.keras_version, worst);
}

// clang-format off
const std::vector<VersionFixture> kVersionFiles = {
    {"divyanshu_convlstm_model.h5", "2.13.1", "h5", 53167, 53167, 7, 2948},
    {"fasimohamed_LRCN_2024_08_02.h5", "2.15.0", "h5", 73588, 73588, 20, 1600},
    {"dkrishnavamsi_LRCN_model.h5", "3.0.5", "h5", 74578, 74578, 50, 52104},
    {"akashrana_convlstm_2025_04_12.h5", "3.9.2", "h5", 44524, 44524, 4, 1387},
    {"shriya_LRCN_2024_06_12.keras", "3.3.3", "keras", 73060, 73060, 4, 4161},
    {"iamrahulr30_convlstm_main_2024_12_23.h5", "3.3.3", "h5", 18529, 18473, 1, 9900},
    {"rushi589_lrcn_model.keras", "2.4.0", "h5", 208834, 208834, 2, -1}};
// clang-format on

// The files that come with expected outputs: all but the grayscale one.
std::vector<VersionFixture> files_with_outputs() {
  std::vector<VersionFixture> files;
  for (const VersionFixture& f : kVersionFiles) {
    if (std::string(f.file) != "rushi589_lrcn_model.keras") files.push_back(f);
  }
  return files;
}

std::string fixture_name(const ::testing::TestParamInfo<VersionFixture>& info) {
  return test_name(info.param.file);
}

INSTANTIATE_TEST_SUITE_P(EveryVersion, KerasVersionFixtures, ::testing::ValuesIn(kVersionFiles),
                         fixture_name);
INSTANTIATE_TEST_SUITE_P(EveryVersion, KerasVersionOutputs, ::testing::ValuesIn(files_with_outputs()),
                         fixture_name);

// The grayscale model (160 frames of 90x90x1) on the clips prepared as the fixtures' README
// says: frames round(linspace(0, 19, 160)), resized bilinearly to 90x90, BGR to gray.
TEST(KerasVersionGray, GrayscaleModelRuns) {
  const std::string path = kVersionFixtures + "rushi589_lrcn_model.keras";
  if (!fs::exists(path)) GTEST_SKIP() << "fixtures not found at " << kVersionFixtures;
  LoadedModel loaded = load_model(path);
  ASSERT_EQ(loaded.model.input_shape(), (Shape{160, 90, 90, 1}));
  const std::vector<double> clips = quantised_clips().to_vector();  // (3, 20, 64, 64, 3)
  std::vector<float> gray(size_t(3) * 160 * 90 * 90);
  for (int n = 0; n < 3; ++n) {
    for (int t = 0; t < 160; ++t) {
      const int source = static_cast<int>(std::lround(19.0 * t / 159.0));
      cv::Mat frame(64, 64, CV_8UC3);
      for (int i = 0; i < 64 * 64 * 3; ++i) {
        frame.data[i] =
            static_cast<uint8_t>(std::lround(clips[((size_t(n) * 20 + source) * 64 * 64 * 3) + i] * 255));
      }
      cv::Mat resized, g;
      cv::resize(frame, resized, cv::Size(90, 90), 0, 0, cv::INTER_LINEAR);
      cv::cvtColor(resized, g, cv::COLOR_BGR2GRAY);
      for (int i = 0; i < 90 * 90; ++i) gray[(size_t(n) * 160 + t) * 90 * 90 + i] = g.data[i] / 255.0f;
    }
  }
  NoGradGuard no_grad;
  const std::vector<double> p =
      loaded.model
          .forward(Tensor::from_vector(std::vector<double>(gray.begin(), gray.end()), {3, 160, 90, 90, 1}),
                   {})
          .to_vector();
  ASSERT_EQ(p.size(), 6u);
  constexpr double kSoftmaxSum = 1e-6;  // float32 normalisation of two probabilities
  for (int n = 0; n < 3; ++n) {
    EXPECT_TRUE(std::isfinite(p[2 * n]) && std::isfinite(p[2 * n + 1]));
    EXPECT_NEAR(p[2 * n] + p[2 * n + 1], 1.0, kSoftmaxSum);
  }
}

// Bitwise equality of two float tensors (NaN payloads included).
void expect_same_bits(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  const Tensor fa = a.to(Device::cpu()), fb = b.to(Device::cpu());
  EXPECT_EQ(std::memcmp(fa.data_ptr(), fb.data_ptr(), fa.nbytes()), 0) << what;
}

// A zoo model of 3 classes and an optimizer with real state: one RMSprop (lrcn_small, as its
// seed) or Adam step on fake gradients.
std::unique_ptr<Optimizer> stepped_zoo_model(const std::string& name, Sequential* model) {
  *model = load_spec(name, 3);
  model->build(21);
  std::unique_ptr<Optimizer> opt = make_optimizer(name == "lrcn_small" ? "rmsprop" : "adam");
  const std::vector<Tensor> weights = model->trainable_weights();
  Generator rng(5);
  for (const Tensor& w : weights) w.impl()->grad = rng.normal(w.shape(), 0.0, 1.0).impl_ptr();
  opt->step(weights);
  zero_grad(weights);
  return opt;
}

// Every weight and every optimizer slot of `back` has the bits of `model`'s / `opt`'s.
void expect_same_model_and_state(const Sequential& model, const Optimizer& opt, const LoadedModel& back) {
  const std::vector<layers::Layer*> la = model.layers(), lb = back.model.layers();
  ASSERT_EQ(la.size(), lb.size());
  for (size_t l = 0; l < la.size(); ++l) {
    for (size_t w = 0; w < la[l]->weights().size(); ++w) {
      expect_same_bits(la[l]->weights()[w].value, lb[l]->weights()[w].value, la[l]->name());
    }
  }
  ASSERT_NE(back.extras.optimizer, nullptr);
  EXPECT_EQ(back.extras.optimizer->name(), opt.name());
  EXPECT_EQ(back.extras.optimizer->iterations(), opt.iterations());
  EXPECT_EQ(back.extras.optimizer->hyper_parameters(), opt.hyper_parameters());
  ASSERT_EQ(back.extras.optimizer->slots().size(), opt.slots().size());
  for (size_t i = 0; i < opt.slots().size(); ++i) {
    for (size_t s = 0; s < opt.slots()[i].size(); ++s) {
      expect_same_bits(opt.slots()[i][s], back.extras.optimizer->slots()[i][s], "slot");
    }
  }
}

TEST(ModelFiles, SaveLoadRoundTripIsBitExactForEveryZooModel) {
  TempDir dir;
  for (const std::string& name : zoo_names()) {
    SCOPED_TRACE(name);
    Sequential model;
    const std::unique_ptr<Optimizer> opt = stepped_zoo_model(name, &model);
    const std::string path = dir.file(name + ".h5");
    save_model(path, model, {"a", "b", "c"}, opt.get(), {{"epoch", 3}});
    LoadedModel back = load_model(path);
    EXPECT_EQ(back.model.to_json(), model.to_json());
    EXPECT_EQ(back.extras.class_names, (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(back.extras.training_state["epoch"], 3);
    expect_same_model_and_state(model, *opt, back);
  }
}

// The optimizer's weights are in the order Keras 2 writes and reads them by position (its
// optimizer's set_weights): the iterations, then every weight's first slot, then every weight's
// second, as in the Keras 2.8 fixture (tests/test_hdf5.cpp reads it). Interleaved, Keras 2
// could not load them and went on with a fresh optimizer.
TEST(ModelFiles, OptimizerWeightsAreInKerasOrder) {
  TempDir dir;
  Sequential model;
  const std::unique_ptr<Optimizer> opt = stepped_zoo_model("lrcn", &model);
  const std::string path = dir.file("lrcn.h5");
  save_model(path, model, {"a", "b", "c"}, opt.get(), nullptr);
  const io::KerasModelFile file = io::read_model_file(path);
  const size_t weights = model.trainable_weights().size();
  ASSERT_EQ(file.optimizer_weights.size(), 1 + 2 * weights);
  EXPECT_EQ(file.optimizer_weights[0].name, "Adam/iter:0");
  for (size_t i = 0; i < 2 * weights; ++i) {
    const std::string& name = file.optimizer_weights[1 + i].name;
    const std::string slot = i < weights ? "/m:0" : "/v:0";
    EXPECT_EQ(name.substr(name.size() - slot.size()), slot) << i << ": " << name;
    // The same weight's slots a whole list apart.
    if (i >= weights) {
      const std::string& first = file.optimizer_weights[1 + i - weights].name;
      EXPECT_EQ(first.substr(0, first.size() - 4), name.substr(0, name.size() - 4));
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
  save_model(path, first, {"left", "right"}, &adam_first,
             {{"rng_seed", 9}, {"rng_offset", rng_first.offset()}});

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

// A Keras classifier compiled with from_logits=True ends in a Dense layer without activation:
// its outputs are logits. Loaded from a file, the model says so, its probabilities are their
// softmax (they were printed raw as "probabilities"), and training takes them as logits; the
// layer stays linear in the file it is saved to.
TEST(ModelFiles, ALinearDenseHeadIsReadAsLogits) {
  TempDir dir;
  nlohmann::json spec = load_spec("lrcn", 4).to_json();
  spec["config"]["layers"].back()["config"]["activation"] = "linear";
  Sequential linear = Sequential::from_json(spec, "test spec");
  linear.build(3);
  EXPECT_EQ(linear.head(), Head::None);  // a spec alone is not read as a classifier's logits
  const std::string path = dir.file("from_logits.h5");
  save_model(path, linear, {}, nullptr, nullptr);

  const auto expect_said = [](const std::string& text, const std::vector<std::string>& fragments) {
    for (const std::string& f : fragments)
      EXPECT_NE(text.find(f), std::string::npos) << f << " missing: " << text;
  };
  LoadedModel loaded = load_model(path);
  ASSERT_EQ(loaded.extras.warnings.size(), 1u);
  expect_said(loaded.extras.warnings[0], {path, "without activation", "from_logits=True", "softmax"});
  EXPECT_EQ(loaded.model.head(), Head::Softmax);
  EXPECT_EQ(loaded.model.to_json(), linear.to_json());
  NoGradGuard no_grad;
  const Tensor x =
      Generator(9).uniform(Shape{3, 20, 64, 64, 3}, 0.0, 1.0);  // three clips of the LRCN's input
  const Tensor logits = linear.forward(x, {});
  const Tensor probabilities = loaded.model.forward(x, {});
  expect_same_bits(probabilities, ops::softmax(logits), "softmax of the linear outputs");
  expect_same_bits(loaded.model.forward(x, {}, Output::Logits), logits, "logits");
  const std::vector<double> p = probabilities.to_vector();
  for (size_t row = 0; row < 3; ++row)
    EXPECT_NEAR(p[row * 4] + p[row * 4 + 1] + p[row * 4 + 2] + p[row * 4 + 3], 1.0, 1e-5);

  // One unit: a binary classifier's logit, through the sigmoid.
  spec["config"]["layers"].back()["config"]["units"] = 1;
  Sequential one = Sequential::from_json(spec, "test spec");
  one.build(3);
  const std::string binary = dir.file("binary_from_logits.h5");
  save_model(binary, one, {}, nullptr, nullptr);
  LoadedModel back = load_model(binary);
  EXPECT_TRUE(back.model.binary());
  expect_said(back.extras.warnings.at(0), {"sigmoid"});
  expect_same_bits(back.model.forward(x, {}), ops::sigmoid(one.forward(x, {})),
                   "sigmoid of the linear output");

  // Saved with its optimizer, the file's loss says the outputs are logits (Keras's fit on it
  // would otherwise take them for probabilities), and the reload says where it read that.
  const std::unique_ptr<Optimizer> sgd = make_optimizer("sgd");  // no slots: saved unstepped
  const std::string saved = dir.file("saved_again.h5");
  save_model(saved, loaded.model, {}, sgd.get(), nullptr);
  const nlohmann::json training = nlohmann::json::parse(io::read_keras_model(saved).training_config);
  EXPECT_EQ(training["loss"]["class_name"], "CategoricalCrossentropy");
  EXPECT_EQ(training["loss"]["config"]["from_logits"], true);
  LoadedModel again = load_model(saved);
  expect_said(again.extras.warnings.at(0), {"compiled with from_logits=True"});
  EXPECT_EQ(again.model.head(), Head::Softmax);

  // A regressor (its loss mean squared error): its outputs are no class scores, so they are not
  // read as logits, and the commands refuse it.
  io::KerasModelFile regressor = io::read_keras_model(saved);
  nlohmann::json mse = training;
  mse["loss"] = "mean_squared_error";
  regressor.training_config = mse.dump();
  regressor.hisvid.clear();
  const std::string regression = dir.file("regressor.h5");
  io::write_keras_model(regression, regressor);
  LoadedModel numbers = load_model(regression);
  EXPECT_EQ(numbers.model.head(), Head::None);
  for (const std::string& warning : numbers.extras.warnings)
    EXPECT_EQ(warning.find("logits"), std::string::npos);
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
  for (const auto& entry : fs::directory_iterator(fs::path(path).parent_path()))
    files += entry.is_regular_file();
  EXPECT_EQ(files, 1);  // no temporary file left behind
}

// An in-memory clip set for kTinyLrcn: `count` clips (4, 8, 8, 3) of Philox pixels, the label
// alternating between the two classes.
io::ClipSet tiny_clips(size_t count) {
  io::ClipSet clips;
  clips.class_names = {"left", "right"};
  clips.extraction = {4, 8, 8};
  clips.pixels.resize(count * clips.clip_elements());
  for (size_t i = 0; i < clips.pixels.size(); ++i) {
    clips.pixels[i] = static_cast<uint8_t>(255.0 * philox_uniform(5, 0, i));
  }
  for (size_t i = 0; i < count; ++i) {
    clips.labels.push_back(static_cast<int>(i % 2));
    clips.paths.push_back("clip" + std::to_string(i) + ".avi");
  }
  return clips;
}

// In one process the loss, the accuracy and the non-finite check stay where the step computed
// them: the host reads them once per epoch (a GPU step never waits for the host). Reading each
// step's loss and accuracy, as before, would make 12 reads an epoch.
TEST(Training, StepsReadNothingBackOnTheHost) {
  const io::ClipSet clips = tiny_clips(12);
  Sequential model = Sequential::from_json(nlohmann::json::parse(kTinyLrcn), "tiny");
  model.build(1);
  Adam adam;
  FitOptions options;
  options.epochs = 2;
  options.batch_size = 2;
  io::Split split;
  for (size_t i = 0; i < clips.size(); ++i) split.train.push_back(i);
  Trainer trainer(model, adam, clips, split, options, 4);
  const uint64_t before = host_reads();
  const FitResult result = trainer.fit();
  EXPECT_EQ(host_reads() - before, 2u) << "host reads in 2 epochs of 6 steps";
  ASSERT_EQ(result.history.size(), 2u);
  EXPECT_EQ(adam.iterations(), 12);
  for (const EpochLog& log : result.history) {
    EXPECT_TRUE(std::isfinite(log.loss) && log.loss > 0.0) << log.loss;
    EXPECT_GE(log.accuracy, 0.0);
    EXPECT_LE(log.accuracy, 1.0);
    // 12 clips: the accuracy is a whole number of clips.
    EXPECT_DOUBLE_EQ(log.accuracy * 12.0, std::round(log.accuracy * 12.0));
  }
}

// A step whose loss is not finite stops the run before its update, though the host never looks
// at a step's loss: a NaN planted in the Dense bias before step 3 of epoch 2 makes that step's
// loss NaN; the steps after it in the epoch still run on the device, halted. The weights and
// the optimizer's count stay those of the moment the NaN was planted, bit for bit.
TEST(Training, ANonFiniteLossStopsBeforeItsUpdate) {
  const io::ClipSet clips = tiny_clips(12);
  io::Split split;
  for (size_t i = 0; i < clips.size(); ++i) split.train.push_back(i);
  FitOptions options;
  options.epochs = 3;
  options.batch_size = 2;  // 6 steps an epoch
  Sequential model = Sequential::from_json(nlohmann::json::parse(kTinyLrcn), "tiny");
  model.build(1);
  Adam adam;
  Trainer trainer(model, adam, clips, split, options, 4);
  FitProgress progress;
  int polls = 0;
  std::vector<std::vector<double>> planted;
  progress.should_stop = [&] {
    if (++polls == 9) {  // before epoch 2's third step
      model.trainable_weights().back().data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
      for (const Tensor& w : model.trainable_weights()) planted.push_back(w.to_vector());
    }
    return false;
  };
  const FitResult result = trainer.fit(progress);
  ASSERT_TRUE(result.non_finite_loss);
  EXPECT_EQ(result.failed_epoch, 2);
  EXPECT_EQ(result.failed_step, 3);
  EXPECT_EQ(result.history.size(), 1u);
  EXPECT_EQ(polls, 12) << "the epoch's last steps were launched (and halted)";
  EXPECT_EQ(adam.iterations(), 8);
  const std::vector<Tensor> weights = model.trainable_weights();
  ASSERT_EQ(weights.size(), planted.size());
  for (size_t w = 0; w < weights.size(); ++w) {
    const std::vector<double> now = weights[w].to_vector();
    ASSERT_EQ(now.size(), planted[w].size());
    // NaN-safe bitwise equality: the failed step and those after it changed nothing.
    EXPECT_EQ(std::memcmp(now.data(), planted[w].data(), now.size() * sizeof(double)), 0) << "weight " << w;
  }
}

// FitResult::best_file_epoch follows best.h5 itself, not the run's record of its best epoch:
// the two differ for a run resumed beside a best.h5 of another epoch (here an unreadable one)
// until an epoch improves on the best, and the message of a failed run names the file's epoch.
TEST(Training, TheResultSaysWhichEpochBestH5Holds) {
  const io::ClipSet clips = tiny_clips(12);
  io::Split split;
  for (size_t i = 0; i < 8; ++i) split.train.push_back(i);
  for (size_t i = 8; i < 12; ++i) split.validation.push_back(i);
  TempDir dir;
  FitOptions options;
  options.epochs = 2;
  options.batch_size = 4;
  options.checkpoint_dir = dir.file("");
  options.class_names = clips.class_names;
  const auto trainer_for = [&](Sequential& model, Adam& adam, int epochs) {
    FitOptions o = options;
    o.epochs = epochs;
    return std::make_unique<Trainer>(model, adam, clips, split, o, 4);
  };
  Sequential model = Sequential::from_json(nlohmann::json::parse(kTinyLrcn), "tiny");
  model.build(1);
  Adam adam;
  const std::unique_ptr<Trainer> first = trainer_for(model, adam, 2);
  const FitResult trained = first->fit();
  ASSERT_GT(trained.best_epoch, 0);
  EXPECT_EQ(trained.best_file_epoch, trained.best_epoch);
  // The run's record says epoch 1 is the best; best.h5 is unreadable (a disk that filled).
  nlohmann::json state = first->training_state();
  state["model_checkpoint"]["best_epoch"] = 1;
  std::ofstream(dir.file("best.h5")) << "not a model";
  for (const bool improves : {false, true}) {
    // A best of 0 for val_loss is never improved on; 1e30 is, by the first epoch.
    state["model_checkpoint"]["best"] = improves ? 1e30 : 0.0;
    Adam again;
    const std::unique_ptr<Trainer> resumed = trainer_for(model, again, 3);
    const std::vector<std::string> notes = resumed->resume(state);
    ASSERT_EQ(notes.size(), 1u);
    EXPECT_NE(notes[0].find("is unreadable"), std::string::npos) << notes[0];
    EXPECT_NE(notes[0].find("saved again when an epoch improves"), std::string::npos) << notes[0];
    const FitResult result = resumed->fit();
    EXPECT_EQ(result.best_epoch, improves ? 3 : 1);
    EXPECT_EQ(result.best_file_epoch, improves ? 3 : 0);
    if (!improves) std::ofstream(dir.file("best.h5")) << "not a model";
  }
  // Resumed with no epoch left to train, the note does not promise a later save.
  state["model_checkpoint"]["best"] = 0.0;
  std::ofstream(dir.file("best.h5")) << "not a model";
  Adam idle;
  const std::vector<std::string> notes = trainer_for(model, idle, 2)->resume(state);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(notes[0].find("saved again"), std::string::npos) << notes[0];
}

// The staged step (models/training_step.h: draws relative to a base in memory, the optimizer's
// scalar read from memory, metrics kept on the device) trains exactly as the plain one: batch,
// forward, loss, backward, update with every value passed directly. Both flips, brightness,
// contrast and noise are on, and kTinyLrcn's dropout draws every step.
TEST(Training, StagedStepsTrainAsPlainSteps) {
  const io::ClipSet clips = tiny_clips(12);
  io::Augmentation augmentation;
  augmentation.flip = true, augmentation.brightness = 0.1, augmentation.contrast = 0.2,
  augmentation.noise = 0.05;
  const std::vector<std::vector<size_t>> batches = {{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10}, {11, 0, 5, 6}};
  const auto weights_of = [](Sequential& model) {
    std::vector<std::vector<double>> values;
    for (const Tensor& w : model.trainable_weights()) values.push_back(w.to_vector());
    return values;
  };

  Sequential plain = Sequential::from_json(nlohmann::json::parse(kTinyLrcn), "tiny");
  plain.build(1);
  Adam plain_adam;
  Generator plain_rng(21);
  const std::vector<Tensor> weights = plain.trainable_weights();
  double plain_loss = 0.0;
  for (const std::vector<size_t>& batch : batches) {
    const io::Batch b = io::make_batch(clips, batch, augmentation, &plain_rng, Device::cpu());
    const LossTerms terms = model_loss(plain, b.x, b.y, {true, &plain_rng});
    plain_loss += terms.loss.item() * static_cast<double>(batch.size());
    backward(terms.loss);
    plain_adam.step(weights);
    zero_grad(weights);
  }

  Sequential staged = Sequential::from_json(nlohmann::json::parse(kTinyLrcn), "tiny");
  staged.build(1);
  Adam staged_adam;
  Generator staged_rng(21);
  TrainingStep step(staged, staged_adam, staged_rng, augmentation, Shape{4, 8, 8, 3}, 2, false);
  for (const std::vector<size_t>& batch : batches) {
    std::vector<uint8_t> pixels(batch.size() * clips.clip_elements());
    clips.read_clips(batch, pixels.data());
    std::vector<int> labels;
    for (size_t i : batch) labels.push_back(clips.labels[i]);
    step.run(pixels, labels);
  }

  EXPECT_EQ(staged_rng.offset(), plain_rng.offset());
  EXPECT_EQ(staged_adam.iterations(), plain_adam.iterations());
  EXPECT_EQ(weights_of(staged), weights_of(plain));
  const std::vector<double> sums = step.sums().to_vector();
  EXPECT_EQ(sums[kStepLossSum], plain_loss);
  EXPECT_EQ(sums[kStepSamples], 15.0);
  EXPECT_EQ(sums[kStepCount], 4.0);
  EXPECT_EQ(sums[kStepFailed], 0.0);
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
  expect_error(
      [&] {
        Trainer(model, adam, clips, io::Split{{0, 1}, {}, {}}, FitOptions{}, 1);
      },
      {"'tiny'", "2 output classes", "3 classes"});
  // Evaluation matches classes by name: one the model does not know is an error naming it.
  expect_error([&] { match_classes({"left", "up"}, {"left", "right"}); }, {"'up'", "left, right"});
  EXPECT_EQ(match_classes({"right", "left"}, {"left", "right"}), (std::vector<int>{1, 0}));
}

// --- The .keras format written ----------------------------------------------------------------

// The set of keys of every layer's config, the wrapped ones included, in model order.
std::vector<std::set<std::string>> layer_config_keys(const nlohmann::json& config) {
  std::vector<std::set<std::string>> keys;
  for (const nlohmann::json& layer : config["config"]["layers"]) {
    std::set<std::string> k;
    for (const auto& item : layer.items()) k.insert("/" + item.key());
    for (const auto& item : layer["config"].items()) k.insert(item.key());
    keys.push_back(k);
    if (layer["config"].contains("layer")) {
      std::set<std::string> inner;
      for (const auto& item : layer["config"]["layer"].items()) inner.insert("/" + item.key());
      for (const auto& item : layer["config"]["layer"]["config"].items()) inner.insert(item.key());
      keys.push_back(inner);
    }
  }
  return keys;
}

std::set<std::string> keys_of(const std::map<std::string, Tensor>& vars) {
  std::set<std::string> keys;
  for (const auto& [name, tensor] : vars) keys.insert(name);
  return keys;
}

// A Keras 3.3.3 .keras file, loaded and written again by hisvid: the same archive entries, the
// same dataset paths in model.weights.h5, the same config keys on every layer (metadata
// included), and the model reads back bit for bit with the same outputs.
TEST(KerasFormat, WritesTheLayoutKeras3Writes) {
  const std::string source = kVersionFixtures + "shriya_LRCN_2024_06_12.keras";
  if (!fs::exists(source)) GTEST_SKIP() << "fixtures not found at " << kVersionFixtures;
  TempDir dir;
  LoadedModel keras = load_model(source);
  const std::string path = dir.file("again.keras");
  save_model(path, keras.model, {"a", "b", "c", "d"}, keras.extras.optimizer.get(), {{"epoch", 1}});

  const io::KerasArchive theirs = io::read_keras_archive(source), ours = io::read_keras_archive(path);
  EXPECT_EQ(keys_of(ours.vars), keys_of(theirs.vars));
  for (const auto& [name, tensor] : theirs.vars) {
    if (name != "optimizer/vars/1")
      expect_same_bits(ours.vars.at(name), tensor, name);  // vars/1: the lr (float32)
  }
  EXPECT_EQ(layer_config_keys(nlohmann::json::parse(ours.config)),
            layer_config_keys(nlohmann::json::parse(theirs.config)));
  const nlohmann::json config = nlohmann::json::parse(ours.config);
  EXPECT_EQ(config["module"], "keras");
  EXPECT_EQ(config["class_name"], "Sequential");
  EXPECT_EQ(config["compile_config"]["optimizer"]["class_name"], "Adam");
  EXPECT_EQ(nlohmann::json::parse(ours.metadata)["keras_version"], "3.3.3");

  // The archive's entries, in Keras's order, stored.
  int code = 0;
  zip_t* zip = zip_open(path.c_str(), ZIP_RDONLY, &code);
  ASSERT_NE(zip, nullptr);
  ASSERT_EQ(zip_get_num_entries(zip, 0), 3);
  const char* names[] = {"metadata.json", "config.json", "model.weights.h5"};
  for (zip_uint64_t i = 0; i < 3; ++i) {
    zip_stat_t st;
    ASSERT_EQ(zip_stat_index(zip, i, 0, &st), 0);
    EXPECT_STREQ(st.name, names[i]);
    EXPECT_EQ(st.comp_method, ZIP_CM_STORE);
  }
  zip_discard(zip);

  LoadedModel back = load_model(path);
  EXPECT_EQ(back.format, "keras");
  EXPECT_EQ(back.extras.class_names, (std::vector<std::string>{"a", "b", "c", "d"}));
  const std::vector<Tensor> a = keras.model.trainable_weights(), b = back.model.trainable_weights();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) expect_same_bits(a[i], b[i], "weight " + std::to_string(i));
  ASSERT_NE(back.extras.optimizer, nullptr);
  EXPECT_EQ(back.extras.optimizer->iterations(), keras.extras.optimizer->iterations());
  for (size_t i = 0; i < a.size(); ++i) {
    for (size_t k = 0; k < 2; ++k) {
      expect_same_bits(back.extras.optimizer->slots()[i][k], keras.extras.optimizer->slots()[i][k], "slot");
    }
  }
  NoGradGuard no_grad;
  expect_same_bits(back.model.forward(quantised_clips(), {}), keras.model.forward(quantised_clips(), {}),
                   "outputs");
}

// Every zoo model through the .keras format and back, bit for bit, with its optimizer state;
// the ConvLSTM models follow Keras 2 (hard_sigmoid gates), which a Keras 3 file would change:
// refused, naming the layer, unless the model is Keras 3's.
TEST(KerasFormat, RoundTripsBitExactOrRefusesWhatKeras3WouldReadDifferently) {
  TempDir dir;
  for (const std::string& name : zoo_names()) {
    SCOPED_TRACE(name);
    Sequential model;
    const std::unique_ptr<Optimizer> opt = stepped_zoo_model(name, &model);
    const std::string path = dir.file(name + ".keras");
    if (name.find("convlstm") != std::string::npos) {
      expect_error(
          [&] {
            save_model(path, model, {"a", "b", "c"}, opt.get(), {{"epoch", 3}});
          },
          {path, "hard_sigmoid", ".h5"});
      EXPECT_FALSE(fs::exists(path));
      continue;
    }
    save_model(path, model, {"a", "b", "c"}, opt.get(), {{"epoch", 3}});
    LoadedModel back = load_model(path);
    EXPECT_EQ(back.keras_version, kKeras3WriteVersion);
    EXPECT_EQ(back.model.to_json(), model.to_json());
    EXPECT_EQ(back.extras.training_state["epoch"], 3);
    expect_same_model_and_state(model, *opt, back);
  }
}

// Content decides the format: an HDF5 model named .keras and a .keras archive named .h5.
TEST(KerasFormat, FormatIsToldByContent) {
  const std::string source = kVersionFixtures + "shriya_LRCN_2024_06_12.keras";
  if (!fs::exists(source)) GTEST_SKIP() << "fixtures not found at " << kVersionFixtures;
  TempDir dir;
  const std::string renamed = dir.file("actually_a_zip.h5");
  fs::copy_file(source, renamed);
  EXPECT_EQ(load_model(renamed).format, "keras");
  EXPECT_EQ(load_model(kVersionFixtures + "rushi589_lrcn_model.keras").format, "h5");
  // A zip that is not a Keras archive, and a truncated archive.
  const std::string truncated = dir.file("truncated.keras");
  const std::string bytes = testing::file_bytes(source);
  std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_error([&] { load_model(truncated); }, {"truncated.keras"});
}

// Bytes after the archive's end (a download tool's trailer, a signature) do not stop Python's
// zipfile, so neither Keras: the model loads as without them. An archive with no entries at all
// is a .keras file without config.json, not an HDF5 file. One without metadata.json loads.
TEST(KerasFormat, TrailingBytesEmptyArchivesAndNoMetadata) {
  const std::string source = kVersionFixtures + "shriya_LRCN_2024_06_12.keras";
  if (!fs::exists(source)) GTEST_SKIP() << "fixtures not found at " << kVersionFixtures;
  TempDir dir;
  const std::string appended = dir.file("appended.keras");
  std::ofstream(appended, std::ios::binary) << testing::file_bytes(source) << std::string(100, '\x7f');
  LoadedModel original = load_model(source), with_trailer = load_model(appended);
  const std::vector<Tensor> a = original.model.trainable_weights(),
                            b = with_trailer.model.trainable_weights();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) expect_same_bits(a[i], b[i], "weight " + std::to_string(i));

  const std::string empty = dir.file("empty.keras");
  std::ofstream(empty, std::ios::binary) << std::string("PK\x05\x06", 4) << std::string(18, '\0');
  expect_error([&] { load_model(empty); }, {empty, "no config.json"});

  // Without metadata.json (Keras 3's loader does not need it): read as Keras 3 reads it.
  const std::string bare = dir.file("no_metadata.keras");
  fs::copy_file(source, bare);
  int code = 0;
  zip_t* zip = zip_open(bare.c_str(), 0, &code);
  ASSERT_NE(zip, nullptr);
  ASSERT_EQ(zip_delete(zip, static_cast<zip_uint64_t>(zip_name_locate(zip, "metadata.json", 0))), 0);
  ASSERT_EQ(zip_close(zip), 0);
  LoadedModel without = load_model(bare);
  EXPECT_EQ(without.keras_version.substr(0, 2), "3.");
  const std::vector<Tensor> c = without.model.trainable_weights();
  ASSERT_EQ(a.size(), c.size());
  for (size_t i = 0; i < a.size(); ++i) expect_same_bits(a[i], c[i], "weight " + std::to_string(i));
}

// The byte offset of a stored entry's data in a zip file, from its local header: the 30 fixed
// bytes, then the name and the extra field, whose lengths are at offsets 26 and 28.
size_t stored_entry_data(const std::string& zip, const std::string& name) {
  size_t at = zip.find(std::string("PK\x03\x04", 4));
  while (at != std::string::npos) {
    const auto u16 = [&](size_t i) { return size_t(uint8_t(zip[i])) | size_t(uint8_t(zip[i + 1])) << 8; };
    const size_t name_length = u16(at + 26), extra_length = u16(at + 28);
    if (zip.compare(at + 30, name_length, name) == 0) return at + 30 + name_length + extra_length;
    at = zip.find(std::string("PK\x03\x04", 4), at + 4);
  }
  return std::string::npos;
}

// Weights-only files read into the architecture they were saved from: Keras 3's .weights.h5
// (here the model.weights.h5 of a Keras 3.3.3 archive, the same layout) and Keras 2's
// model.save_weights layout (layer_names at the root: written here from a Keras 2.8 model
// file's /model_weights) give the full files' weights bit for bit; the class count comes from
// the file; a file with its own architecture, or weights of another architecture, are refused.
TEST(KerasFormat, WeightsOnlyFilesReadIntoTheirArchitecture) {
  const std::string keras3 = kVersionFixtures + "shriya_LRCN_2024_06_12.keras";
  const std::string keras2 = kFixtures + "tutorial_lrcn_keras2.8.h5";
  if (!fs::exists(keras3) || !fs::exists(keras2)) GTEST_SKIP() << "fixtures not found";
  TempDir dir;
  const auto expect_same_weights = [](const Sequential& a, const Sequential& b) {
    const std::vector<Tensor> wa = a.trainable_weights(), wb = b.trainable_weights();
    ASSERT_EQ(wa.size(), wb.size());
    for (size_t i = 0; i < wa.size(); ++i) expect_same_bits(wa[i], wb[i], "weight " + std::to_string(i));
  };
  // Keras 3: an archive's stored model.weights.h5 entry, its size at offset 18 of the header.
  const auto weights_entry = [&](const std::string& archive, const std::string& out) {
    const std::string zip = testing::file_bytes(archive);
    const size_t data = stored_entry_data(zip, "model.weights.h5");
    ASSERT_NE(data, std::string::npos);
    const size_t header = zip.rfind(std::string("PK\x03\x04", 4), data);
    size_t size = 0;
    for (int i = 3; i >= 0; --i) size = size << 8 | uint8_t(zip[header + 18 + size_t(i)]);
    std::ofstream(out, std::ios::binary) << zip.substr(data, size);
  };
  const std::string weights3 = dir.file("lrcn.weights.h5");
  weights_entry(keras3, weights3);
  LoadedModel full3 = load_model(keras3), only3 = load_weights_file(weights3, "lrcn");
  EXPECT_EQ(only3.format, "weights");
  EXPECT_TRUE(only3.keras_version.rfind("3.", 0) == 0) << only3.keras_version;
  EXPECT_EQ(only3.model.num_classes(), full3.model.num_classes());
  expect_same_weights(only3.model, full3.model);

  // Keras 2: the model file's /model_weights group as a file of its own (save_weights' layout).
  const io::KerasModelFile file2 = io::read_keras_model(keras2);
  const std::string weights2 = dir.file("lrcn_weights.h5");
  {
    io::h5::File out = io::h5::File::create(weights2);
    io::h5::Group root = out.root();
    std::vector<std::string> names;
    for (const io::LayerWeights& layer : file2.layers) names.push_back(layer.layer_name);
    root.write_string_list_attribute("layer_names", names);
    root.write_string_attribute("keras_version", file2.keras_version);
    for (const io::LayerWeights& layer : file2.layers) {
      io::h5::Group group = root.create_group(layer.layer_name);
      std::vector<std::string> weight_names;
      for (const io::NamedTensor& w : layer.weights) weight_names.push_back(w.name);
      group.write_string_list_attribute("weight_names", weight_names);
      for (const io::NamedTensor& w : layer.weights) group.write_tensor(w.name, w.value);
    }
  }
  LoadedModel full2 = load_model(keras2), only2 = load_weights_file(weights2, "lrcn");
  EXPECT_EQ(only2.keras_version, file2.keras_version);
  expect_same_weights(only2.model, full2.model);
  NoGradGuard no_grad;
  expect_same_bits(only2.model.forward(quantised_clips(), {}), full2.model.forward(quantised_clips(), {}),
                   "outputs");

  // A Keras 3 ConvLSTM: the zoo spec read with Keras 3's defaults (sigmoid gates), as Keras 3
  // builds it, not Keras 2's hard_sigmoid nor Keras 3's reading of it.
  Sequential convlstm3 = load_spec("convlstm_small", 4, "--model", layers::KerasVersion{3, 3, 3});
  convlstm3.build(5);
  const std::string archive3 = dir.file("convlstm3.keras");
  save_model(archive3, convlstm3, {}, nullptr, nullptr);
  const std::string convlstm_weights = dir.file("convlstm.weights.h5");
  weights_entry(archive3, convlstm_weights);
  LoadedModel only_convlstm = load_weights_file(convlstm_weights, "convlstm_small");
  expect_same_bits(only_convlstm.model.forward(quantised_clips(), {}),
                   convlstm3.forward(quantised_clips(), {}), "Keras 3 ConvLSTM outputs");
  Sequential convlstm2 = load_spec("convlstm_small", 4);
  convlstm2.build(5);
  EXPECT_NE(convlstm2.forward(quantised_clips(), {}).to_vector(),
            convlstm3.forward(quantised_clips(), {}).to_vector())
      << "the check above cannot tell Keras 2's gates from Keras 3's";

  expect_error([&] { load_model(weights2); }, {weights2, "weights only", "--model"});
  expect_error([&] { load_weights_file(keras2, "lrcn"); }, {keras2, "its own architecture"});
  expect_error([&] { load_weights_file(weights2, "convlstm"); }, {weights2, "layers with weights"});
}

// A .keras file damaged after it was written (a bad copy, bit rot) is refused, naming the entry:
// a changed byte inside model.weights.h5 leaves every size valid, only the entry's CRC-32 tells.
// Read as it stands it gave other weights, and so other predictions, without a word.
TEST(KerasFormat, ADamagedEntryIsRefusedByItsChecksum) {
  const std::string source = kVersionFixtures + "shriya_LRCN_2024_06_12.keras";
  if (!fs::exists(source)) GTEST_SKIP() << "fixtures not found at " << kVersionFixtures;
  TempDir dir;
  std::string bytes = testing::file_bytes(source);
  for (const char* entry : {"model.weights.h5", "config.json"}) {
    SCOPED_TRACE(entry);
    const size_t data = stored_entry_data(bytes, entry);
    ASSERT_NE(data, std::string::npos);
    std::string damaged = bytes;
    // A byte inside the entry's data (the weights': past HDF5's superblock).
    const size_t at = data + (std::string(entry) == "config.json" ? 99 : 5000);
    damaged[at] = static_cast<char>(damaged[at] ^ 0x20);
    const std::string path = dir.file(std::string("damaged-") + entry + ".keras");
    std::ofstream(path, std::ios::binary) << damaged;
    expect_error([&] { load_model(path); }, {path, entry, "damaged", "CRC"});
  }
}

}  // namespace
}  // namespace hisvid::models
