// Grad-CAM (models/explain.h): the gradient it uses against finite differences in float64, and
// on the built-in dataset, where the generator knows where the moving shape is, a trained
// LRCN's heat inside the shape's box against the background.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/optimizer.h"
#include "gradcheck.h"
#include "io/annotate.h"
#include "io/dataset.h"
#include "io/synthetic.h"
#include "models/explain.h"
#include "models/trainer.h"
#include "models/zoo.h"
#include "test_support.h"

namespace hisvid::models {
namespace {

namespace fs = std::filesystem;

Sequential built_model(const char* layers_json, const Shape& input, uint64_t seed) {
  Sequential model = Sequential::from_json(nlohmann::json::parse(layers_json), "explain test");
  model.set_input_shape(input);
  model.build(seed);
  return model;
}

// The score recomputed from the layer's activation runs the same float64 ops in the same order
// as the whole forward: equal but for the last few ulps of a score of order 1.
constexpr double kSameScore = 1e-12;

// d score / d A from class_score_gradient against central differences of class_score_from, on
// every element of A (float64; kinks of ReLU and max-pool skipped as tests/gradcheck.h does).
void check_layer_gradient(Sequential& model, int layer, int class_index, const Shape& input) {
  model.to(DType::Float64);
  std::vector<int64_t> dims = input.vec();
  dims.insert(dims.begin(), 1);
  Tensor x = testing::random_input(Shape(dims), 11, 0.0, 1.0);
  x.set_requires_grad(false);
  const LayerGradient g = class_score_gradient(model, x, layer, class_index);
  ASSERT_EQ(g.activation.shape(), g.gradient.shape());
  ASSERT_EQ(g.activation.rank(), 5);
  NoGradGuard no_grad;
  auto score = [&](const Tensor& a) { return class_score_from(model, a, layer, class_index).item(); };
  EXPECT_NEAR(score(g.activation), g.score, kSameScore);
  Tensor a = g.activation.clone();  // perturbed element by element, in place
  testing::GradCheckResult r;
  testing::compare_with_differences([&] { return score(a); }, a, g.gradient, 0, "activation", r);
  EXPECT_EQ(r.checked + r.kinks, g.activation.numel());
  EXPECT_GT(r.checked, 0);
  EXPECT_LE(r.kinks, testing::kMaxKinkFraction * static_cast<double>(r.checked + r.kinks));
  EXPECT_LE(r.max_error, testing::kGradTolerance) << r.worst;
  const std::vector<double> analytic = g.gradient.to_vector();
  // The gradient is not trivially zero: the check compared something.
  double largest = 0.0;
  for (double v : analytic) largest = std::max(largest, std::abs(v));
  EXPECT_GT(largest, 1e-6);
}

constexpr const char* kTinyLrcn = R"([
  {"class_name": "TimeDistributed", "config": {"name": "conv_a", "layer": {"class_name": "Conv2D", "config": {"filters": 3, "kernel_size": 3, "padding": "same", "activation": "tanh"}}}},
  {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "MaxPooling2D", "config": {"pool_size": 2}}}},
  {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Dropout", "config": {"rate": 0.25}}}},
  {"class_name": "TimeDistributed", "config": {"name": "conv_b", "layer": {"class_name": "Conv2D", "config": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"}}}},
  {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Flatten", "config": {}}}},
  {"class_name": "LSTM", "config": {"units": 4}},
  {"class_name": "Dense", "config": {"units": 3, "activation": "softmax"}}])";

TEST(Explain, LrcnLayerGradientMatchesFiniteDifferences) {
  Sequential model = built_model(kTinyLrcn, Shape{3, 6, 6, 2}, 5);
  EXPECT_EQ(explainable_layers(model), (std::vector<int>{0, 3}));
  EXPECT_EQ(default_explain_layer(model), 3);
  EXPECT_EQ(explain_layer_by_name(model, "conv_a"), 0);
  for (int layer : {0, 3}) {
    for (int c : {0, 2}) {
      SCOPED_TRACE("layer " + std::to_string(layer) + " class " + std::to_string(c));
      check_layer_gradient(model, layer, c, Shape{3, 6, 6, 2});
    }
  }
}

TEST(Explain, ConvLstmAndSigmoidHeadGradientsMatchFiniteDifferences) {
  Sequential convlstm = built_model(R"([
    {"class_name": "ConvLSTM2D", "config": {"name": "cl", "filters": 3, "kernel_size": 3, "return_sequences": true}},
    {"class_name": "MaxPooling3D", "config": {"pool_size": [1, 2, 2], "padding": "same"}},
    {"class_name": "Flatten", "config": {}},
    {"class_name": "Dense", "config": {"units": 3, "activation": "softmax"}}])",
                                    Shape{3, 7, 7, 2}, 6);
  EXPECT_EQ(default_explain_layer(convlstm), 0);
  check_layer_gradient(convlstm, 0, 1, Shape{3, 7, 7, 2});

  Sequential binary = built_model(R"([
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Conv2D", "config": {"filters": 3, "kernel_size": 3, "activation": "relu"}}}},
    {"class_name": "TimeDistributed", "config": {"layer": {"class_name": "Flatten", "config": {}}}},
    {"class_name": "LSTM", "config": {"units": 3}},
    {"class_name": "Dense", "config": {"units": 1, "activation": "sigmoid"}}])",
                                  Shape{3, 5, 5, 1}, 7);
  for (int c : {0, 1}) check_layer_gradient(binary, 0, c, Shape{3, 5, 5, 1});
}

TEST(Explain, NamesTheLayersItCanExplain) {
  Sequential model = built_model(kTinyLrcn, Shape{3, 6, 6, 2}, 5);
  testing::expect_error([&] { explain_layer_by_name(model, "nope"); }, {"--layer nope", "conv_a, conv_b"});
  const std::string lstm = model.layers()[5]->name();
  testing::expect_error([&] { explain_layer_by_name(model, lstm); },
                        {"--layer " + lstm, "LSTM", "conv_a, conv_b"});
  // The Conv2D inside TimeDistributed conv_b answers to its own name too, as Keras names both.
  const auto& wrapper = dynamic_cast<const layers::TimeDistributed&>(*model.layers()[3]);
  EXPECT_EQ(explain_layer_by_name(model, wrapper.inner().name()), 3);
  Sequential dense_only = built_model(R"([{"class_name": "Flatten", "config": {}},
    {"class_name": "Dense", "config": {"units": 2, "activation": "softmax"}}])",
                                      Shape{2, 4, 4, 1}, 1);
  testing::expect_error([&] { default_explain_layer(dense_only); }, {"no layer to explain"});
}

// The same explanation on the GPU as on the CPU: the maps within kDeviceMapTolerance of the
// clip's peak, the frame weights and occluded probabilities within kDeviceTolerance. Float32 on
// both, summed in other orders (cuDNN and cuBLAS against the CPU kernels): differences of ~1e-6
// relative per op, a few ops deep; 1e-3 leaves room and still catches a wrong frame or filter.
constexpr double kDeviceMapTolerance = 1e-3, kDeviceTolerance = 1e-3;

TEST(Explain, OnTheGpuMatchesTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << cuda_unavailable_reason();
  Sequential model = built_model(kTinyLrcn, Shape{3, 6, 6, 2}, 5);
  std::vector<uint8_t> clip(3 * 6 * 6 * 2);
  for (size_t i = 0; i < clip.size(); ++i) clip[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
  const io::ExtractionSettings settings{3, 6, 6, 2};
  const Explanation cpu = explain_clip(model, clip, settings, 0, 1);
  model.to(Device::cuda(0));
  const Explanation gpu = explain_clip(model, clip, settings, 0, 1);
  double peak = 0.0;
  for (const std::vector<double>& map : cpu.maps)
    peak = std::max(peak, *std::max_element(map.begin(), map.end()));
  ASSERT_GT(peak, 0.0);
  ASSERT_EQ(gpu.maps.size(), cpu.maps.size());
  for (size_t t = 0; t < cpu.maps.size(); ++t) {
    for (size_t p = 0; p < cpu.maps[t].size(); ++p)
      EXPECT_NEAR(gpu.maps[t][p] / peak, cpu.maps[t][p] / peak, kDeviceMapTolerance);
    EXPECT_NEAR(gpu.frame_weights[t], cpu.frame_weights[t], kDeviceTolerance);
    EXPECT_NEAR(gpu.occluded[t], cpu.occluded[t], kDeviceTolerance);
  }
}

// Heat per pixel inside the moving shape's box against the background, over every frame of
// every held-out clip of a trained LRCN (maps enlarged to the video as hisvid explain draws them).
//
// Required: kMinHeatRatio = 1.5 on the LRCN's second Conv2D (layer 3, 16 x 16 maps of a 64 x 64
// frame). A map blind to where the shape is gives 1 in expectation; measured 2026-11-26 on the
// dev machine (seeds 3, 4, 5; 20 and 40 epochs; 100% held-out accuracy): 1.77 to 2.14, so 1.5
// keeps a margin from the lowest while a map misplaced in space or time (a transposed frame,
// the wrong frame's box, the gradient's sign) falls to 1 or below. The same measurement on the
// untrained model gives 1.68 to 1.95: the architecture's filters already respond most where the
// contrast is, and training keeps the heat there. The other layers are printed, not required:
// the first Conv2D (64 x 64, 1.12 to 1.31) sees edges everywhere, and the last (hisvid explain's
// default, 2 x 2 maps enlarged to 64 x 64) is too coarse to locate a shape covering 9% of the
// frame (0.52 to 0.81: its heat lies where the shape is not).
constexpr int kLocatingLayer = 3;
constexpr double kMinHeatRatio = 1.5;
TEST(Explain, TrainedLrcnLooksAtTheMovingShape) {
  const fs::path root = testing::fresh_directory("hisvid_explain_tests");
  io::SyntheticSpec spec;
  spec.out_dir = (root / "data").string();
  spec.clips_per_class = 28;
  spec.width = spec.height = 64;
  spec.classes = {"MoveLeft", "MoveRight"};
  io::make_synthetic_dataset(spec);
  io::DatasetSpec data;
  data.root = spec.out_dir;
  data.cache_path = "none";
  data.extraction = {20, 64, 64, 3};
  const io::ClipSet clips = io::load_clips(data);
  ASSERT_EQ(clips.size(), 56u);

  // The clip number from the file name v_<Class>_g<GG>_c<CC>.avi (four clips per group).
  const std::regex name(R"(v_\w+_g(\d+)_c(\d+)\.avi)");
  constexpr int kTrainClips = 20;  // per class; the other 8 are explained
  io::Split split;
  std::vector<int> clip_number(clips.size());
  for (size_t i = 0; i < clips.size(); ++i) {
    std::smatch m;
    const std::string file = fs::path(clips.paths[i]).filename().string();
    ASSERT_TRUE(std::regex_match(file, m, name)) << file;
    clip_number[i] = (std::stoi(m[1]) - 1) * 4 + std::stoi(m[2]) - 1;
    (clip_number[i] < kTrainClips ? split.train : split.test).push_back(i);
  }

  const uint64_t seed = 3;
  Sequential model = Sequential::from_json(zoo_spec("lrcn"), "lrcn");
  model.set_num_classes(2);
  model.build(seed);
  Adam adam;
  FitOptions options;
  options.epochs = 20;
  options.class_names = clips.class_names;
  Trainer(model, adam, clips, split, options, seed).fit();
  const Evaluation held_out = evaluate(model, clips, split.test, 32, {0, 1});
  ASSERT_GE(held_out.accuracy, 0.9) << "the LRCN did not learn the task; its explanation would mean nothing";

  for (int layer : explainable_layers(model)) {
    double inside = 0, outside = 0, inside_pixels = 0, outside_pixels = 0;
    for (size_t i : split.test) {
      const std::vector<uint8_t> pixels(clips.clip(i), clips.clip(i) + clips.clip_elements());
      const Explanation e = explain_clip(model, pixels, data.extraction, layer, clips.labels[i]);
      const io::Clip clip = io::extract_clip(clips.paths[i], data.extraction);
      const std::vector<io::ObjectBox> boxes = io::synthetic_object_boxes(
          spec, clips.class_names[static_cast<size_t>(clips.labels[i])], clip_number[i]);
      for (int t = 0; t < e.frames; ++t) {
        const io::ObjectBox& box = boxes[static_cast<size_t>(clip.frame_indices[static_cast<size_t>(t)])];
        const std::vector<float> heat = io::enlarge_map(e.maps[static_cast<size_t>(t)], e.map_height,
                                                        e.map_width, spec.height, spec.width);
        for (int y = 0; y < spec.height; ++y) {
          for (int x = 0; x < spec.width; ++x) {
            const double v = heat[static_cast<size_t>(y * spec.width + x)];
            const bool in = x + 0.5 >= box.x0 && x + 0.5 < box.x1 && y + 0.5 >= box.y0 && y + 0.5 < box.y1;
            (in ? inside : outside) += v;
            (in ? inside_pixels : outside_pixels) += 1;
          }
        }
      }
    }
    const double ratio = (inside / inside_pixels) / (outside / outside_pixels);
    const std::string name = model.layers()[static_cast<size_t>(layer)]->name();
    std::cout << "layer " << name << ": heat per pixel inside the box / outside " << ratio
              << " (the box covers " << inside_pixels / (inside_pixels + outside_pixels)
              << " of the frames)\n";
    if (layer == kLocatingLayer) {
      EXPECT_GE(ratio, kMinHeatRatio) << name;
    }
  }
  fs::remove_all(root);
}

}  // namespace
}  // namespace hisvid::models
