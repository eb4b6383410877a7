// io: the HDF5 wrapper (io/hdf5.h) and the Keras model files (io/keras_h5.h) — real Keras 2.8
// fixtures, bit-exact round trips, a chunked gzip clip dataset, bad inputs, interrupted saves.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <thread>

#include "engine/error.h"
#include "io/hdf5.h"
#include "io/isolated.h"
#include "io/keras_h5.h"
#include "tests/test_support.h"

namespace hisvid::io {
namespace {

using hisvid::testing::directory_entries;
using hisvid::testing::error_of;
using hisvid::testing::file_bytes;

namespace fs = std::filesystem;

std::string fixture(const std::string& name) { return std::string(HISVID_FIXTURES_DIR) + "/keras/" + name; }

std::string missing_fixture(const std::string& path) {
  return "fixture " + path + " not found (HISVID_FIXTURES_DIR=" + HISVID_FIXTURES_DIR + ")";
}

// A fresh directory per test, removed afterwards.
class Hdf5Test : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = testing::fresh_directory("hisvid_io_tests");
    fs::create_directories(directory_);
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(directory_, ignored);
  }
  std::string file(const std::string& name) const { return (directory_ / name).string(); }

  fs::path directory_;
};

// Float32 values from a fixed bit pattern generator, with the awkward ones mixed in (signed
// zero, subnormal, infinities, a NaN with a payload) so that bit-exactness is really tested.
Tensor patterned_tensor(const Shape& shape, uint32_t seed) {
  Tensor tensor = Tensor::empty(shape);
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  float* data = tensor.data<float>();
  const uint32_t specials[] = {0x80000000u, 0x00000001u, 0x7f800000u, 0xff800000u, 0x7fc01234u};
  for (int64_t i = 0; i < tensor.numel(); ++i) data[i] = uniform(generator);
  for (int64_t i = 0; i < std::min<int64_t>(tensor.numel(), 5); ++i) std::memcpy(&data[i], &specials[i], 4);
  return tensor;
}

void expect_bitwise_equal(const Tensor& expected, const Tensor& actual, const std::string& name) {
  ASSERT_TRUE(actual.defined()) << name;
  EXPECT_EQ(actual.dtype(), DType::Float32) << name;
  ASSERT_EQ(actual.shape(), expected.shape()) << name;
  EXPECT_EQ(std::memcmp(actual.data<float>(), expected.data<float>(), expected.nbytes()), 0) << name;
}

KerasModelFile sample_model(uint32_t seed) {
  KerasModelFile model;
  model.model_config = R"({"class_name": "Sequential", "config": {"name": "sample", "layers": []}})";
  model.training_config = R"({"loss": "categorical_crossentropy"})";
  model.hisvid = R"({"class_names": ["TaiChi", "Swing"], "input_shape": [20, 64, 64, 3], "epoch": 7})";
  model.layers.push_back({"time_distributed",
                          {{"time_distributed/kernel:0", patterned_tensor({3, 3, 3, 4}, seed)},
                           {"time_distributed/bias:0", patterned_tensor({4}, seed + 1)}}});
  model.layers.push_back({"max_pooling3d", {}});
  model.layers.push_back({"lstm",
                          {{"lstm/lstm_cell/kernel:0", patterned_tensor({8, 16}, seed + 2)},
                           {"lstm/lstm_cell/recurrent_kernel:0", patterned_tensor({4, 16}, seed + 3)},
                           {"lstm/lstm_cell/bias:0", patterned_tensor({16}, seed + 4)}}});
  model.layers.push_back({"probe", {{"probe/five_d:0", patterned_tensor({2, 1, 3, 2, 2}, seed + 5)}}});
  model.optimizer_weights = {{"Adam/iter:0", Tensor::scalar(12.0)},
                             {"Adam/lstm/lstm_cell/kernel/m:0", patterned_tensor({8, 16}, seed + 6)},
                             {"Adam/lstm/lstm_cell/kernel/v:0", patterned_tensor({8, 16}, seed + 7)}};
  return model;
}

void expect_same_model(const KerasModelFile& expected, const KerasModelFile& actual) {
  EXPECT_EQ(actual.model_config, expected.model_config);
  EXPECT_EQ(actual.training_config, expected.training_config);
  EXPECT_EQ(actual.keras_version, expected.keras_version);
  EXPECT_EQ(actual.backend, expected.backend);
  EXPECT_EQ(actual.hisvid, expected.hisvid);
  ASSERT_EQ(actual.layers.size(), expected.layers.size());
  for (size_t l = 0; l < expected.layers.size(); ++l) {
    EXPECT_EQ(actual.layers[l].layer_name, expected.layers[l].layer_name);
    ASSERT_EQ(actual.layers[l].weights.size(), expected.layers[l].weights.size());
    for (size_t w = 0; w < expected.layers[l].weights.size(); ++w) {
      const NamedTensor& want = expected.layers[l].weights[w];
      EXPECT_EQ(actual.layers[l].weights[w].name, want.name);
      expect_bitwise_equal(want.value, actual.layers[l].weights[w].value, want.name);
    }
  }
  ASSERT_EQ(actual.optimizer_weights.size(), expected.optimizer_weights.size());
  for (size_t i = 0; i < expected.optimizer_weights.size(); ++i) {
    EXPECT_EQ(actual.optimizer_weights[i].name, expected.optimizer_weights[i].name);
    expect_bitwise_equal(expected.optimizer_weights[i].value, actual.optimizer_weights[i].value,
                         expected.optimizer_weights[i].name);
  }
}

const NamedTensor* find_weight(const std::vector<NamedTensor>& weights, const std::string& name) {
  for (const NamedTensor& weight : weights) {
    if (weight.name == name) return &weight;
  }
  return nullptr;
}

int64_t parameter_count(const KerasModelFile& model) {
  int64_t count = 0;
  for (const LayerWeights& layer : model.layers) {
    for (const NamedTensor& weight : layer.weights) count += weight.value.numel();
  }
  return count;
}

// --- the real Keras 2.8 files -------------------------------------------------------------

TEST(KerasFixtures, TutorialLrcn) {
  const std::string path = fixture("tutorial_lrcn_keras2.8.h5");
  if (!fs::exists(path)) GTEST_SKIP() << missing_fixture(path);
  const KerasModelFile model = read_keras_model(path);

  std::vector<std::string> expected_layers;
  for (int i = 3; i <= 14; ++i) expected_layers.push_back("time_distributed_" + std::to_string(i));
  expected_layers.push_back("lstm");
  expected_layers.push_back("dense_1");
  std::vector<std::string> layer_names;
  for (const LayerWeights& layer : model.layers) layer_names.push_back(layer.layer_name);
  EXPECT_EQ(layer_names, expected_layers);

  const auto layer = [&](const std::string& name) -> const LayerWeights& {
    for (const LayerWeights& l : model.layers) {
      if (l.layer_name == name) return l;
    }
    throw std::runtime_error("no layer " + name);
  };
  const LayerWeights& conv = layer("time_distributed_3");
  ASSERT_EQ(conv.weights.size(), 2u);
  EXPECT_EQ(conv.weights[0].name, "time_distributed_3/kernel:0");
  EXPECT_EQ(conv.weights[0].value.shape(), Shape({3, 3, 3, 16}));
  EXPECT_EQ(conv.weights[1].name, "time_distributed_3/bias:0");
  EXPECT_EQ(conv.weights[1].value.shape(), Shape({16}));
  for (const char* weightless : {"time_distributed_4", "time_distributed_5", "time_distributed_14"}) {
    EXPECT_TRUE(layer(weightless).weights.empty()) << weightless;
  }
  const LayerWeights& lstm = layer("lstm");
  ASSERT_EQ(lstm.weights.size(), 3u);
  EXPECT_EQ(lstm.weights[0].name, "lstm/lstm_cell/kernel:0");
  EXPECT_EQ(lstm.weights[0].value.shape(), Shape({64, 128}));
  EXPECT_EQ(lstm.weights[1].name, "lstm/lstm_cell/recurrent_kernel:0");
  EXPECT_EQ(lstm.weights[1].value.shape(), Shape({32, 128}));
  EXPECT_EQ(lstm.weights[2].name, "lstm/lstm_cell/bias:0");
  EXPECT_EQ(lstm.weights[2].value.shape(), Shape({128}));
  const LayerWeights& dense = layer("dense_1");
  ASSERT_EQ(dense.weights.size(), 2u);
  EXPECT_EQ(dense.weights[0].value.shape(), Shape({32, 4}));
  EXPECT_EQ(parameter_count(model), 73060);  // the count the fixtures' README gives

  const nlohmann::json config = nlohmann::json::parse(model.model_config);
  EXPECT_EQ(config.at("class_name"), "Sequential");
  EXPECT_TRUE(nlohmann::json::accept(model.training_config));
  EXPECT_EQ(model.keras_version, "2.8.0");
  EXPECT_EQ(model.backend, "tensorflow");
  EXPECT_EQ(model.hisvid, "");

  // 1 step counter + m and v for each of the 13 weights, in the file's weight_names order.
  ASSERT_EQ(model.optimizer_weights.size(), 27u);
  EXPECT_EQ(model.optimizer_weights[0].name, "Adam/iter:0");
  EXPECT_EQ(model.optimizer_weights[0].value.shape(), Shape({}));
  EXPECT_EQ(model.optimizer_weights[0].value.item(), 2652.0);  // int64 in the file
  const NamedTensor* m = find_weight(model.optimizer_weights, "Adam/dense_1/kernel/m:0");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->value.shape(), Shape({32, 4}));
}

TEST(KerasFixtures, TutorialConvLstm) {
  const std::string path = fixture("tutorial_convlstm_keras2.8.h5");
  if (!fs::exists(path)) GTEST_SKIP() << missing_fixture(path);
  const KerasModelFile model = read_keras_model(path);

  std::vector<std::string> layer_names;
  for (const LayerWeights& layer : model.layers) layer_names.push_back(layer.layer_name);
  EXPECT_EQ(layer_names, (std::vector<std::string>{"conv_lstm2d", "max_pooling3d", "time_distributed",
                                                   "conv_lstm2d_1", "max_pooling3d_1", "time_distributed_1",
                                                   "conv_lstm2d_2", "max_pooling3d_2", "time_distributed_2",
                                                   "conv_lstm2d_3", "max_pooling3d_3", "flatten", "dense"}));
  const LayerWeights& first = model.layers[0];
  ASSERT_EQ(first.weights.size(), 3u);
  EXPECT_EQ(first.weights[0].name, "conv_lstm2d/kernel:0");
  EXPECT_EQ(first.weights[0].value.shape(), Shape({3, 3, 3, 16}));
  EXPECT_EQ(first.weights[1].name, "conv_lstm2d/recurrent_kernel:0");
  EXPECT_EQ(first.weights[1].value.shape(), Shape({3, 3, 4, 16}));
  EXPECT_TRUE(model.layers[1].weights.empty());
  EXPECT_TRUE(model.layers[11].weights.empty());
  const LayerWeights& dense = model.layers[12];
  ASSERT_EQ(dense.weights.size(), 2u);
  EXPECT_EQ(dense.weights[0].name, "dense/kernel:0");
  EXPECT_EQ(dense.weights[0].value.shape(), Shape({2880, 4}));
  EXPECT_EQ(parameter_count(model), 44524);  // the count the fixtures' README gives

  EXPECT_EQ(nlohmann::json::parse(model.model_config).at("class_name"), "Sequential");
  ASSERT_FALSE(model.optimizer_weights.empty());
  EXPECT_EQ(model.optimizer_weights[0].name, "Adam/iter:0");
  EXPECT_NE(find_weight(model.optimizer_weights, "Adam/conv_lstm2d/recurrent_kernel/v:0"), nullptr);
}

TEST(KerasFixtures, RealClipsThroughTheGenericApi) {
  const std::string path = fixture("real_clips.h5");
  if (!fs::exists(path)) GTEST_SKIP() << missing_fixture(path);
  const h5::File file = h5::File::open(path);
  const h5::Group root = file.root();
  EXPECT_EQ(root.children(), std::vector<std::string>{"x"});
  const h5::Dataset x = root.open_dataset("x");
  EXPECT_EQ(x.path(), "/x");
  EXPECT_EQ(x.element_type(), h5::ElementType::Float32);
  EXPECT_EQ(x.shape(), (std::vector<int64_t>{3, 20, 64, 64, 3}));
  EXPECT_FALSE(x.read_string_attribute("videos").empty());  // a variable-length string

  const Tensor clips = x.read_tensor();
  ASSERT_EQ(clips.shape(), Shape({3, 20, 64, 64, 3}));
  const float* all = clips.data<float>();
  const auto [lowest, highest] = std::minmax_element(all, all + clips.numel());
  EXPECT_GE(*lowest, 0.0f);  // pixels / 255
  EXPECT_LE(*highest, 1.0f);
  const std::vector<float> second = x.read_rows<float>(1, 1);
  ASSERT_EQ(static_cast<int64_t>(second.size()), x.row_numel());
  EXPECT_EQ(std::memcmp(second.data(), all + x.row_numel(), second.size() * sizeof(float)), 0);
}

// --- writing and reading back -------------------------------------------------------------

TEST_F(Hdf5Test, KerasModelRoundTripIsBitExact) {
  const std::string path = file("model.h5");
  const KerasModelFile model = sample_model(1);
  write_keras_model(path, model);
  expect_same_model(model, read_keras_model(path));
  EXPECT_EQ(directory_entries(directory_), std::vector<std::string>{"model.h5"});

  // The Keras layout, seen through the generic API.
  const h5::File written = h5::File::open(path);
  const h5::Group root = written.root();
  EXPECT_EQ(root.children(), (std::vector<std::string>{"model_weights", "optimizer_weights"}));
  EXPECT_EQ(root.open_group("model_weights").read_string_list_attribute("layer_names"),
            (std::vector<std::string>{"time_distributed", "max_pooling3d", "lstm", "probe"}));
  EXPECT_EQ(root.open_group("model_weights").read_string_attribute("keras_version"), "2.8.0");
  EXPECT_TRUE(root.is_dataset("model_weights/lstm/lstm/lstm_cell/recurrent_kernel:0"));
  EXPECT_TRUE(
      root.open_group("model_weights/max_pooling3d").read_string_list_attribute("weight_names").empty());
  EXPECT_EQ(root.open_group("optimizer_weights").read_string_list_attribute("weight_names").size(), 3u);
}

TEST_F(Hdf5Test, OverwritingAModelReplacesIt) {
  const std::string path = file("model.h5");
  write_keras_model(path, sample_model(1));
  KerasModelFile second = sample_model(2);
  second.optimizer_weights.clear();
  second.hisvid.clear();
  write_keras_model(path, second);
  const KerasModelFile read = read_keras_model(path);
  expect_same_model(second, read);
  EXPECT_FALSE(h5::File::open(path).root().exists("optimizer_weights"));
}

TEST_F(Hdf5Test, OptimizerWeightsWithoutNamesAreWalkedInSortedOrder) {
  // Hand-made like a file whose /optimizer_weights has no weight_names attribute: every dataset
  // below the group is read, in sorted path order, and the int64 step becomes float32.
  const std::string path = file("walk.h5");
  {
    h5::File out = h5::File::create(path);
    h5::Group root = out.root();
    root.write_string_attribute("model_config", R"({"class_name": "Sequential"})");
    root.create_group("model_weights").write_string_list_attribute("layer_names", {});
    h5::Group optimizer = root.create_group("optimizer_weights");
    const int64_t step = 2652;
    optimizer.write_array("Adam/iter:0", &step, {});
    optimizer.write_tensor("Adam/dense/kernel/v:0", patterned_tensor({2, 3}, 5));
    optimizer.write_tensor("Adam/dense/kernel/m:0", patterned_tensor({2, 3}, 6));
    EXPECT_EQ(optimizer.open_dataset("Adam/iter:0").read_scalar<int64_t>(), step);
  }
  const KerasModelFile model = read_keras_model(path);
  EXPECT_TRUE(model.layers.empty());
  ASSERT_EQ(model.optimizer_weights.size(), 3u);
  EXPECT_EQ(model.optimizer_weights[0].name, "Adam/dense/kernel/m:0");
  EXPECT_EQ(model.optimizer_weights[1].name, "Adam/dense/kernel/v:0");
  EXPECT_EQ(model.optimizer_weights[2].name, "Adam/iter:0");
  EXPECT_EQ(model.optimizer_weights[2].value.dtype(), DType::Float32);
  EXPECT_EQ(model.optimizer_weights[2].value.item(), 2652.0);
  expect_bitwise_equal(patterned_tensor({2, 3}, 6), model.optimizer_weights[0].value, "m");
}

TEST_F(Hdf5Test, KerasSplitNameListsAreJoined) {
  // Keras stores a name list too big for one object header as layer_names0, layer_names1, ...
  const std::string path = file("split.h5");
  {
    h5::File out = h5::File::create(path);
    h5::Group root = out.root();
    root.write_string_attribute("model_config", "{}");
    h5::Group weights = root.create_group("model_weights");
    weights.write_string_list_attribute("layer_names0", {"a", "b"});
    weights.write_string_list_attribute("layer_names1", {"c"});
    for (const char* name : {"a", "b", "c"})
      weights.create_group(name).write_string_list_attribute("weight_names", {});
  }
  const KerasModelFile model = read_keras_model(path);
  ASSERT_EQ(model.layers.size(), 3u);
  EXPECT_EQ(model.layers[2].layer_name, "c");
}

TEST_F(Hdf5Test, AttributesOfEveryKind) {
  const std::string path = file("attributes.h5");
  const std::string long_text(100000, 'j');  // past HDF5's 64 KB object header message limit
  {
    h5::File out = h5::File::create(path);
    h5::Group group = out.root().create_group("a/b/c");
    EXPECT_EQ(group.path(), "/a/b/c");
    group.write_string_attribute("text", "hello");
    group.write_string_attribute("empty", "");
    group.write_string_attribute("long", long_text);
    group.write_string_list_attribute("names", {"x", "longer name", ""});
    group.write_string_list_attribute("none", {});
    group.write_int64_attribute("count", -(int64_t{1} << 40));
    group.write_double_attribute("rate", 0.1);
    group.write_string_attribute("text", "replaced");
    out.root().write_int64_attribute("version", 3);
  }
  const h5::File in = h5::File::open(path);
  const h5::Group group = in.root().open_group("a/b/c");
  EXPECT_EQ(group.attribute_names(),
            (std::vector<std::string>{"count", "empty", "long", "names", "none", "rate", "text"}));
  EXPECT_EQ(group.read_string_attribute("text"), "replaced");
  EXPECT_EQ(group.read_string_attribute("empty"), "");
  EXPECT_EQ(group.read_string_attribute("long"), long_text);
  EXPECT_EQ(group.read_string_list_attribute("names"), (std::vector<std::string>{"x", "longer name", ""}));
  EXPECT_TRUE(group.read_string_list_attribute("none").empty());
  EXPECT_EQ(group.read_int64_attribute("count"), -(int64_t{1} << 40));
  EXPECT_EQ(group.read_double_attribute("rate"), 0.1);
  EXPECT_EQ(group.read_double_attribute("count"), -std::ldexp(1.0, 40));
  EXPECT_EQ(in.root().read_int64_attribute("version"), 3);

  const std::string missing = error_of([&] { (void)group.read_string_attribute("absent"); });
  EXPECT_NE(missing.find(path), std::string::npos) << missing;
  EXPECT_NE(missing.find("/a/b/c"), std::string::npos) << missing;
  EXPECT_NE(missing.find("absent"), std::string::npos) << missing;
  const std::string wrong_type = error_of([&] { (void)group.read_int64_attribute("rate"); });
  EXPECT_NE(wrong_type.find("float64"), std::string::npos) << wrong_type;
  const std::string not_one = error_of([&] { (void)group.read_string_attribute("names"); });
  EXPECT_NE(not_one.find("3 strings"), std::string::npos) << not_one;
}

TEST_F(Hdf5Test, GroupsAndRawArrays) {
  const std::string path = file("arrays.h5");
  const std::vector<double> doubles = {1.5, -0.0, 1e300};
  const std::vector<int64_t> longs = {std::numeric_limits<int64_t>::min(), 0,
                                      std::numeric_limits<int64_t>::max()};
  {
    h5::File out = h5::File::create(path);
    h5::Group root = out.root();
    root.write_array("numbers/doubles", doubles.data(), {3});
    root.write_array("numbers/longs", longs.data(), {1, 3});
    root.write_tensor("numbers/scalar", Tensor::scalar(0.25));
    root.create_group("empty");
    const std::string exists = error_of([&] { root.create_group("numbers"); });
    EXPECT_NE(exists.find("/numbers"), std::string::npos) << exists;
    EXPECT_THROW(root.write_tensor("numbers/f64", Tensor::zeros({2}, DType::Float64)), Error);
  }
  const h5::File in = h5::File::open(path);
  const h5::Group root = in.root();
  EXPECT_EQ(root.children(), (std::vector<std::string>{"empty", "numbers"}));
  EXPECT_EQ(root.dataset_paths(),
            (std::vector<std::string>{"numbers/doubles", "numbers/longs", "numbers/scalar"}));
  EXPECT_TRUE(root.exists("numbers/longs"));
  EXPECT_TRUE(root.exists("/numbers"));
  EXPECT_FALSE(root.exists("numbers/nothing"));
  EXPECT_FALSE(root.exists("missing/deeper/path"));
  EXPECT_FALSE(root.exists("numbers/longs/below_a_dataset"));
  EXPECT_TRUE(root.is_group("empty"));
  EXPECT_FALSE(root.is_dataset("empty"));
  EXPECT_TRUE(root.open_group("empty").children().empty());

  const h5::Dataset d = root.open_dataset("numbers/doubles");
  EXPECT_EQ(d.element_type(), h5::ElementType::Float64);
  EXPECT_EQ(d.read<double>(), doubles);
  EXPECT_EQ(std::signbit(d.read<double>()[1]), true);
  EXPECT_EQ(root.open_dataset("numbers/longs").shape(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(root.open_dataset("numbers/longs").read<int64_t>(), longs);
  EXPECT_EQ(root.open_dataset("numbers/scalar").read_scalar<float>(), 0.25f);
  EXPECT_EQ(root.open_dataset("numbers/scalar").read_tensor().shape(), Shape({}));

  const std::string wrong_type = error_of([&] { (void)d.read<float>(); });
  EXPECT_NE(wrong_type.find("/numbers/doubles"), std::string::npos) << wrong_type;
  EXPECT_NE(wrong_type.find("float64"), std::string::npos) << wrong_type;
  EXPECT_NE(error_of([&] { (void)root.open_dataset("empty"); }).find("not a dataset"), std::string::npos);
  EXPECT_NE(error_of([&] { (void)root.open_group("numbers/none"); }).find("no such group"),
            std::string::npos);
  EXPECT_NE(error_of([&] { (void)root.open_dataset("numbers/longs").read_tensor(); }).find("int64"),
            std::string::npos);
}

TEST_F(Hdf5Test, ChunkedGzipClipsReadByRows) {
  // A clip cache: uint8 (N,T,H,W,C), one clip per chunk, gzip-compressed; clips [i, i+k) read
  // by hyperslab, and the dataset grown by two clips.
  constexpr int64_t kClips = 6, kT = 8, kH = 32, kW = 32, kC = 3;
  constexpr int64_t kClip = kT * kH * kW * kC;
  std::vector<uint8_t> clips(static_cast<size_t>(kClips * kClip));
  for (size_t i = 0; i < clips.size(); ++i) clips[i] = static_cast<uint8_t>((i / 97) % 251);
  const std::string path = file("clips.h5");
  const h5::DatasetOptions options{{1, kT, kH, kW, kC}, 4};
  {
    h5::File out = h5::File::create(path);
    h5::Dataset x = out.root().write_array("cache/x", clips.data(), {kClips, kT, kH, kW, kC}, options);
    const std::vector<uint8_t> extra(static_cast<size_t>(2 * kClip), 7);
    x.resize_rows(kClips + 2);
    x.write_rows(kClips, 2, extra.data());
  }
  // Smooth data that deflate shrinks well below a quarter; uncompressed it could not fit.
  EXPECT_LT(fs::file_size(path), static_cast<uintmax_t>(clips.size() / 4));

  const h5::File in = h5::File::open(path);
  const h5::Dataset x = in.root().open_dataset("cache/x");
  EXPECT_EQ(x.element_type(), h5::ElementType::UInt8);
  EXPECT_EQ(x.shape(), (std::vector<int64_t>{kClips + 2, kT, kH, kW, kC}));
  EXPECT_EQ(x.row_numel(), kClip);
  const std::vector<uint8_t> middle = x.read_rows<uint8_t>(2, 3);
  ASSERT_EQ(middle.size(), static_cast<size_t>(3 * kClip));
  EXPECT_TRUE(std::equal(middle.begin(), middle.end(), clips.begin() + 2 * kClip));
  std::vector<uint8_t> last(static_cast<size_t>(kClip));
  x.read_rows(kClips + 1, 1, last.data());
  EXPECT_TRUE(std::all_of(last.begin(), last.end(), [](uint8_t v) { return v == 7; }));
  EXPECT_TRUE(x.read_rows<uint8_t>(3, 0).empty());

  const std::string outside = error_of([&] { (void)x.read_rows<uint8_t>(kClips, 3); });
  EXPECT_NE(outside.find(path), std::string::npos) << outside;
  EXPECT_NE(outside.find("[6, 9)"), std::string::npos) << outside;
  EXPECT_THROW((void)x.read_rows<float>(0, 1), Error);

  h5::File again = h5::File::create(file("bad_options.h5"));
  EXPECT_THROW(again.root().create_dataset("gzip_without_chunks", h5::ElementType::UInt8, {4}, {{}, 4}),
               Error);
  EXPECT_THROW(again.root().create_dataset("bad_chunk_rank", h5::ElementType::UInt8, {4, 4}, {{1}, 0}),
               Error);
}

// --- bad input ------------------------------------------------------------------------------

TEST_F(Hdf5Test, MissingFile) {
  const std::string path = file("nothing_here.h5");
  const std::string message = error_of([&] { (void)read_keras_model(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("no such file"), std::string::npos) << message;
  // A link whose target is gone says so, naming the target.
  const std::string link = file("link_to_nothing.h5");
  fs::create_symlink(path, link);
  const std::string broken = error_of([&] { (void)read_model_file(link); });
  EXPECT_NE(broken.find(link + ": a symbolic link to " + path + ", which does not exist"), std::string::npos)
      << broken;
}

TEST_F(Hdf5Test, NotAnHdf5File) {
  const std::string path = file("notes.h5");
  std::ofstream(path) << "these are not the bytes of an HDF5 file\n";
  const std::string message = error_of([&] { (void)read_keras_model(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("not an HDF5 file"), std::string::npos) << message;

  const std::string empty = file("empty.h5");
  std::ofstream{empty};
  EXPECT_NE(error_of([&] { (void)h5::File::open(empty); }).find("is empty"), std::string::npos);
}

TEST_F(Hdf5Test, TruncatedFile) {
  const std::string source = fixture("tutorial_lrcn_keras2.8.h5");
  if (!fs::exists(source)) GTEST_SKIP() << missing_fixture(source);
  constexpr size_t kKeptBytes = 10 * 1024;  // the superblock survives, the data does not
  const std::string path = file("truncated.h5");
  std::ofstream(path, std::ios::binary) << file_bytes(source).substr(0, kKeptBytes);
  const std::string message = error_of([&] { (void)read_keras_model(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  EXPECT_EQ(message.find("another process"), std::string::npos) << message;  // HDF5 says "sblock"
}

// A file another process has open for writing (h5py in a notebook, a Keras checkpoint being
// saved) holds HDF5's lock: the file may be whole, and the message says it is in use, not
// damaged. The exclusive lock a writer takes is made here by hand.
TEST_F(Hdf5Test, AFileLockedByAWriterIsSaidToBeInUse) {
  const char* locking = std::getenv("HDF5_USE_FILE_LOCKING");
  if (locking != nullptr && std::string(locking) == "FALSE") GTEST_SKIP() << "HDF5_USE_FILE_LOCKING=FALSE";
  const std::string path = file("locked.h5");
  { h5::File::create(path).root().write_string_attribute("model_config", "{}"); }
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  const std::string message = error_of([&] { (void)h5::File::open(path); });
  ::close(fd);
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("another process has it open for writing"), std::string::npos) << message;
  EXPECT_EQ(message.find("damaged"), std::string::npos) << message;
  EXPECT_NO_THROW((void)h5::File::open(path));  // the lock gone, the file reads
}

TEST_F(Hdf5Test, FileWithoutModelConfig) {
  const std::string path = file("weights_only.h5");
  {
    h5::File out = h5::File::create(path);
    out.root().write_string_list_attribute("layer_names", {"dense"});
  }
  const std::string message = error_of([&] { (void)read_keras_model(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("model_config"), std::string::npos) << message;
}

// Keras casts the weights it loads to its float32 variables: a float64 weight is read as it reads
// it (rounded to float32); an integer weight is an error naming it and its type.
TEST_F(Hdf5Test, WeightsThatAreNotFloat32) {
  const auto write_model = [&](const std::string& path, const auto& kernel) {
    h5::File out = h5::File::create(path);
    h5::Group root = out.root();
    root.write_string_attribute("model_config", R"({"class_name": "Sequential"})");
    h5::Group weights = root.create_group("model_weights");
    weights.write_string_list_attribute("layer_names", {"dense"});
    h5::Group dense = weights.create_group("dense");
    dense.write_string_list_attribute("weight_names", {"dense/kernel:0"});
    dense.write_array("dense/kernel:0", kernel.data(), {2, 2});
  };
  const std::string doubles = file("float64_weight.h5");
  write_model(doubles, std::vector<double>{1.0, -2.5, 0.1, 1e-40});
  const KerasModelFile model = read_keras_model(doubles);
  ASSERT_EQ(model.layers.size(), 1u);
  const Tensor& kernel = model.layers[0].weights.at(0).value;
  EXPECT_EQ(kernel.dtype(), DType::Float32);
  EXPECT_EQ(kernel.to_vector(), (std::vector<double>{1.0, -2.5, double(0.1f), double(1e-40f)}));

  const std::string integers = file("int64_weight.h5");
  write_model(integers, std::vector<int64_t>{1, 2, 3, 4});
  const std::string message = error_of([&] { (void)read_keras_model(integers); });
  EXPECT_NE(message.find(integers), std::string::npos) << message;
  EXPECT_NE(message.find("/model_weights/dense/dense/kernel:0"), std::string::npos) << message;
  EXPECT_NE(message.find("int64"), std::string::npos) << message;
}

TEST_F(Hdf5Test, MissingWeightDataset) {
  const std::string path = file("missing_weight.h5");
  {
    h5::File out = h5::File::create(path);
    h5::Group root = out.root();
    root.write_string_attribute("model_config", "{}");
    h5::Group weights = root.create_group("model_weights");
    weights.write_string_list_attribute("layer_names", {"dense"});
    weights.create_group("dense").write_string_list_attribute("weight_names", {"dense/kernel:0"});
  }
  const std::string message = error_of([&] { (void)read_keras_model(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("/model_weights/dense/dense/kernel:0: no such dataset"), std::string::npos)
      << message;
}

// --- saving atomically ----------------------------------------------------------------------

TEST_F(Hdf5Test, InterruptedSaveLeavesThePreviousFile) {
  const std::string path = file("model.h5");
  write_keras_model(path, sample_model(1));
  const std::string before = file_bytes(path);

  WriteOptions options;
  int calls = 0;
  options.before_dataset = [&calls](const std::string& dataset_path) {
    if (++calls == 3) throw std::runtime_error("simulated crash before " + dataset_path);
  };
  const std::string message = error_of([&] { write_keras_model(path, sample_model(2), options); });
  EXPECT_EQ(calls, 3);
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("simulated crash before /model_weights/lstm/lstm/lstm_cell/kernel:0"),
            std::string::npos)
      << message;
  EXPECT_EQ(file_bytes(path), before);
  EXPECT_EQ(directory_entries(directory_), std::vector<std::string>{"model.h5"});
  expect_same_model(sample_model(1), read_keras_model(path));
}

TEST_F(Hdf5Test, SaveFailuresAreClear) {
  const std::string nowhere = file("no/such/directory/model.h5");
  const std::string message = error_of([&] { write_keras_model(nowhere, sample_model(1)); });
  EXPECT_NE(message.find(nowhere), std::string::npos) << message;
  EXPECT_NE(message.find("does not exist"), std::string::npos) << message;

  KerasModelFile float64_weight = sample_model(1);
  float64_weight.layers[0].weights[0].value = Tensor::zeros({2}, DType::Float64);
  const std::string path = file("model.h5");
  const std::string wrong = error_of([&] { write_keras_model(path, float64_weight); });
  EXPECT_NE(wrong.find(path), std::string::npos) << wrong;
  EXPECT_NE(wrong.find("float64"), std::string::npos) << wrong;

  KerasModelFile escaping = sample_model(1);
  escaping.layers[0].weights[0].name = "/model_config";
  EXPECT_NE(error_of([&] { write_keras_model(path, escaping); }).find("invalid weight name"),
            std::string::npos);
  EXPECT_TRUE(directory_entries(directory_).empty());
}

// A dataset header may declare any shape: what the file does not store is an error before
// anything is allocated, and an element count past int64 is no usable extent.
TEST_F(Hdf5Test, DeclaredShapesAreCheckedBeforeReading) {
  const std::string path = file("declared.h5");
  {
    h5::File out = h5::File::create(path);
    {
      h5::Group root = out.root();
      h5::DatasetOptions chunked;
      chunked.chunk = {1, 20000};
      root.create_dataset("never_written", h5::ElementType::Float32, {20000, 20000}, chunked);
      root.create_dataset("contiguous_empty", h5::ElementType::Float32, {1000, 1000});
      root.write_array<float>("small", std::vector<float>{1, 2, 3}.data(), {3});
    }
    out.close();
  }
  EXPECT_LT(std::filesystem::file_size(path), 100000u);
  const h5::File in = h5::File::open(path);
  const h5::Group root = in.root();
  const std::string never = error_of([&] { (void)root.open_dataset("never_written").read_tensor(); });
  EXPECT_NE(never.find("(20000, 20000)"), std::string::npos) << never;
  EXPECT_NE(never.find("stores"), std::string::npos) << never;
  EXPECT_THROW((void)root.open_dataset("contiguous_empty").read<float>(), Error);
  EXPECT_EQ(root.open_dataset("small").read<float>(), (std::vector<float>{1, 2, 3}));
}

TEST(Isolated, ACrashOrAHangInTheChildIsAnError) {
  const std::string crashed =
      hisvid::testing::error_of([] { probe_in_child("crash.h5", [] { ::raise(SIGSEGV); }); });
  EXPECT_NE(crashed.find("crash.h5"), std::string::npos) << crashed;
  EXPECT_NE(crashed.find("damaged"), std::string::npos) << crashed;
  const std::string hung = hisvid::testing::error_of([] {
    probe_in_child(
        "hang.h5", [] { std::this_thread::sleep_for(std::chrono::seconds(30)); }, 1);
  });
  EXPECT_NE(hung.find("did not finish within 1 s"), std::string::npos) << hung;
  // What the child throws is for the caller's own read to report: the probe returns.
  EXPECT_NO_THROW(probe_in_child("throws.h5", [] { throw Error("no such thing"); }));
  EXPECT_NO_THROW(probe_in_child("fine.h5", [] {}));
}

}  // namespace
}  // namespace hisvid::io
