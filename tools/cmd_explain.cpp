// hisvid explain: Grad-CAM per frame (models/explain.h) on one video — where in each frame and
// when in the clip the model looked — written as a video of the model's frames at the video's
// size with the heatmaps laid over them, and a PNG of the same frames in a grid above the
// per-frame Grad-CAM weights and occlusion drops.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <memory>

#include "io/annotate.h"
#include "io/atomic_file.h"
#include "io/plots.h"
#include "io/video.h"
#include "models/explain.h"
#include "models/inference.h"
#include "models/model_file.h"
#include "tools/commands.h"
#include "tools/outputs.h"
#include "tools/training.h"
#include "tools/validators.h"

namespace hisvid::tools {

namespace fs = std::filesystem;

// Maps of fewer cells than this (the LRCN's last Conv2D: 2 x 2) get a note naming finer layers:
// on the built-in dataset its heat per pixel inside the moving shape's box was 0.5-0.8 times the
// background's, the second Conv2D's (16 x 16) 1.8-2.1 times (tests/test_explain.cpp).
constexpr int kCoarseMap = 16;

void add_explain_command(CLI::App& app) {
  struct Args {
    std::string weights, model, video, class_name, layer, out, grid, model_classes, device = "auto";
    bool overwrite = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd =
      app.add_subcommand("explain", "Show where and when a model looked in a video (Grad-CAM per frame)");
  cmd->add_option("--weights", args->weights, "Model file (hisvid's or a Keras .h5 / .keras)")
      ->required()
      ->check(non_empty());
  cmd->add_option("--model", args->model, kWeightsArchitectureHelp)->check(non_empty());
  cmd->add_option("video", args->video, "The video to explain")->required();
  cmd->add_option("--class", args->class_name, "Explain this class (default: the predicted one)")
      ->check(non_empty());
  cmd->add_option(
         "--layer", args->layer,
         "Convolutional layer to explain (default: the last Conv2D before the recurrent part, or the last "
         "ConvLSTM2D returning sequences)")
      ->check(non_empty());
  cmd->add_option("--out", args->out, "The explained video (.avi): the model's frames with their heatmaps")
      ->required();
  cmd->add_option("--grid", args->grid, "The PNG of the frames and their weights (default: --out with .png)");
  cmd->add_option("--model-classes", args->model_classes, "Class names of the outputs (for Keras files)")
      ->check(non_empty());
  cmd->add_flag("--overwrite", args->overwrite, "Replace the --out or --grid file when it exists");
  cmd->add_option("--device", args->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->callback([args] {
    Console console;
    const Device device = device_option(args->device);  // before any work
    if (io::lowercase_extension(args->out) != ".avi") {
      fail("--out {}: the explained video is written as MJPG in an AVI file: name it .avi", args->out);
    }
    const std::string grid =
        args->grid.empty() ? fs::path(args->out).replace_extension(".png").string() : args->grid;
    if (fs::path(grid).extension() != ".png")
      fail("--grid {}: the picture is written as PNG: name it .png", grid);
    const std::vector<std::string> inputs = {args->video, args->weights};
    require_new_output(args->out, inputs, args->overwrite, "--out");
    // The default grid is named after --out: a clash is --out's to resolve.
    require_new_output(grid, inputs, args->overwrite,
                       args->grid.empty() ? "--grid (default: --out with .png)" : "--grid");
    if (fs::absolute(args->out).lexically_normal() == fs::absolute(grid).lexically_normal()) {
      fail("--out and --grid name the same file {}", grid);
    }

    models::LoadedModel loaded = load_model_option(args->weights, args->model);
    for (const std::string& warning : loaded.extras.warnings) console.note("warning: " + warning);
    require_classifier(loaded, args->weights);
    models::Sequential& model = loaded.model;
    const std::vector<std::string> names = output_names(loaded, args->weights, args->model_classes);
    int class_index = -1;
    if (!args->class_name.empty()) {
      const auto found = std::find(names.begin(), names.end(), args->class_name);
      if (found == names.end()) {
        std::string known;
        for (const std::string& name : names) known += (known.empty() ? "" : ", ") + name;
        fail("--class {}: {} has no such class (its classes: {})", args->class_name, args->weights, known);
      }
      class_index = static_cast<int>(found - names.begin());
    }
    const int layer = args->layer.empty() ? models::default_explain_layer(model)
                                          : models::explain_layer_by_name(model, args->layer);
    model.to(device);
    DataArgs data;
    data.follow_model(model);
    const io::ExtractionSettings settings = data.extraction();
    const io::Clip clip = io::extract_clip(args->video, settings, /*keep_originals=*/true);

    const models::Explanation e = models::explain_clip(model, clip.pixels, settings, layer, class_index);
    models::require_finite_outputs(std::vector<std::vector<double>>{e.probabilities}, args->weights);
    const int predicted = static_cast<int>(std::max_element(e.probabilities.begin(), e.probabilities.end()) -
                                           e.probabilities.begin());
    const double p = e.probabilities[static_cast<size_t>(e.class_index)];
    console.line(fmt::format(
        "{}: predicted {} ({:.4f}); explaining {} ({:.4f}) on layer {} ({}x{} per frame, {})", args->video,
        names[static_cast<size_t>(predicted)], e.probabilities[static_cast<size_t>(predicted)],
        names[static_cast<size_t>(e.class_index)], p, e.layer, e.map_height, e.map_width,
        model.device().str()));
    if (e.map_height * e.map_width < kCoarseMap) {
      std::string finer;
      for (int candidate : models::explainable_layers(model)) {
        const layers::Layer& l = *model.layers()[static_cast<size_t>(candidate)];
        const Shape shape = l.output_shape();  // (T, h, w, F)
        if (shape[1] * shape[2] >= kCoarseMap)
          finer += fmt::format("{}{} ({}x{})", finer.empty() ? "" : ", ", l.name(), shape[1], shape[2]);
      }
      if (!finer.empty()) {
        console.note(fmt::format(
            "note: {}x{} maps are too coarse to locate small objects; --layer can choose a finer one: {}",
            e.map_height, e.map_width, finer));
      }
    }
    // The table is printed after the files are written: a reader that stops reading early (a
    // pipe into head) cannot cost the outputs.
    std::vector<std::string> table = {
        fmt::format("{:>5} {:>7} {:>10} {:>14} {:>8}", "t", "frame", "Grad-CAM", "p if blacked", "drop")};

    double peak = 0.0;
    for (const std::vector<double>& map : e.maps)
      peak = std::max(peak, *std::max_element(map.begin(), map.end()));
    std::vector<std::vector<uint8_t>> frames;
    std::vector<std::string> labels, captions;
    std::vector<double> drops;
    for (int t = 0; t < e.frames; ++t) {
      const size_t i = static_cast<size_t>(t);
      std::vector<double> map = e.maps[i];
      for (double& v : map)
        v = peak > 0.0 ? v / peak : 0.0;  // one scale for the clip: faint frames stay faint
      frames.push_back(io::overlay_heatmap(clip.originals[i], clip.original_height, clip.original_width, map,
                                           e.map_height, e.map_width));
      drops.push_back(p - e.occluded[i]);
      table.push_back(fmt::format("{:>5} {:>7} {:>10.4f} {:>14.4f} {:>+8.4f}", t, clip.frame_indices[i],
                                  e.frame_weights[i], e.occluded[i], drops.back()));
      labels.push_back(fmt::format("{} {:.2f} | t {} weight {:.3f}",
                                   names[static_cast<size_t>(e.class_index)], p, t, e.frame_weights[i]));
      captions.push_back(
          fmt::format("t {}  frame {}  w {:.3f}", t, clip.frame_indices[i], e.frame_weights[i]));
    }
    // As long as the span of the video the frames come from: one frame per `skip` frames of it.
    const int64_t span = clip.frame_indices.back() - clip.frame_indices.front() + 1;
    const double fps = std::max(
        1.0, clip.fps * static_cast<double>(e.frames) / static_cast<double>(std::max<int64_t>(span, 1)));
    io::write_annotated_video(args->out, frames, clip.original_height, clip.original_width, fps, labels);
    try {
      io::write_explanation_png(
          grid, frames, clip.original_height, clip.original_width, captions, e.frame_weights, drops,
          fmt::format("{}: Grad-CAM of {} ({:.3f}) on {}", fs::path(args->video).filename().string(),
                      names[static_cast<size_t>(e.class_index)], p, e.layer));
    } catch (...) {
      std::error_code ignored;
      fs::remove(args->out, ignored);  // the command failed: no half of its result stays behind
      throw;
    }
    console.note(fmt::format("wrote {} ({} frames) and {}", args->out, e.frames, grid));
    for (const std::string& row : table) console.line(row);
  });
}

}  // namespace hisvid::tools
