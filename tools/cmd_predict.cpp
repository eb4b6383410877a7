// hisvid predict: classify whole videos (top-k), or label every frame with the average of the
// last K sliding-window predictions (seed 003), optionally writing the labelled video (seed 004).
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>

#include "engine/ops.h"
#include "io/annotate.h"
#include "io/atomic_file.h"
#include "io/dataset.h"
#include "io/video.h"
#include "models/inference.h"
#include "models/model_file.h"
#include "models/trainer.h"
#include "tools/commands.h"
#include "tools/outputs.h"
#include "tools/training.h"
#include "tools/validators.h"

namespace hisvid::tools {

namespace fs = std::filesystem;

namespace {

// Files given on the command line, folders expanded to the videos inside them (sorted).
std::vector<std::string> collect_videos(const std::vector<std::string>& inputs, bool& any_folder) {
  std::vector<std::string> videos;
  for (const std::string& input : inputs) {
    std::error_code error;
    const fs::file_status status = fs::status(input, error);
    if (!fs::exists(status)) fail("{}: {}", input, io::missing_reason(input, "file or folder"));
    if (!fs::is_directory(status)) {
      if (!fs::is_regular_file(status))
        fail("{}: not a regular file or a folder (a video is expected)", input);
      videos.push_back(input);
      continue;
    }
    any_folder = true;
    // Every video below the folder, taken as train and evaluate take a class folder's
    // (io::is_video_entry); hidden folders (make-dataset's leftovers among them) are not entered,
    // and a folder that cannot be listed is named.
    std::vector<std::string> found;
    fs::recursive_directory_iterator it(input, error);
    fs::path last = input;  // what the walk reached last: where a listing error comes from
    for (; !error && it != fs::recursive_directory_iterator(); it.increment(error)) {
      last = it->path();
      const std::string name = last.filename().string();
      std::error_code kind;
      if ((name.empty() || name[0] == '.') && it->is_directory(kind)) it.disable_recursion_pending();
      if (io::is_video_entry(*it)) found.push_back(last.string());
    }
    if (error) fail("{}: cannot list the folder: {}", last.string(), error.message());
    if (found.empty()) fail("{}: a folder without videos", input);
    std::sort(found.begin(), found.end());
    videos.insert(videos.end(), found.begin(), found.end());
  }
  return videos;
}

std::vector<int> top_k(const std::vector<double>& probs, int k) {
  std::vector<int> order(probs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return probs[a] > probs[b]; });
  order.resize(std::min<size_t>(order.size(), static_cast<size_t>(k)));
  return order;
}

}  // namespace

void add_predict_command(CLI::App& app) {
  struct Args {
    std::string weights, model, model_classes, out, csv, device = "auto";
    bool tf32 = false;
    std::vector<std::string> videos;
    int top_k = 3, rolling = 0;
    size_t batch_size = 32;
    bool overwrite = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd =
      app.add_subcommand("predict", "Classify videos, or label their frames with a rolling average");
  cmd->add_option("--weights", args->weights, "Model file (hisvid's or a Keras .h5)")
      ->required()
      ->check(non_empty());
  cmd->add_option("--model", args->model, kWeightsArchitectureHelp)->check(non_empty());
  cmd->add_option("videos", args->videos, "Video files or folders of videos")->required();
  cmd->add_option("--model-classes", args->model_classes, "Class names of the outputs (for Keras files)")
      ->check(non_empty());
  cmd->add_option("--top-k", args->top_k, "How many classes to print per video")
      ->capture_default_str()
      ->check(integer_in(1, 1000));
  cmd->add_option("--out", args->out, "Write the video with its label drawn on every frame (one input video)")
      ->check(non_empty());
  cmd->add_option("--rolling", args->rolling,
                  "Label each frame with the mean of the last K predictions of the sliding frames window")
      ->check(integer_in(1, 100000));
  cmd->add_option("--csv", args->csv,
                  "Write the predictions as CSV to this file, or '-' for stdout (the default for folders)")
      ->check(non_empty());
  cmd->add_option("--batch-size", args->batch_size, "Inference batch size")
      ->capture_default_str()
      ->check(integer_in(1, 100000));
  cmd->add_flag("--overwrite", args->overwrite, "Replace the --out or --csv file when it exists");
  cmd->add_option("--device", args->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->add_flag("--tf32", args->tf32, "On a GPU: TF32 tensor cores for cuBLAS GEMMs and cuDNN convolutions");
  cmd->callback([args] {
    Console console;
    const Device device = device_option(args->device);  // before any work
    const bool csv_to_stdout = args->csv == "-";        // the usual name of standard output
    if (csv_to_stdout) args->csv.clear();
    if (args->tf32) tf32_on(args->device);
    models::LoadedModel loaded = load_model_option(args->weights, args->model);
    for (const std::string& warning : loaded.extras.warnings) console.note("warning: " + warning);
    require_classifier(loaded, args->weights);
    const std::vector<std::string> names = output_names(loaded, args->weights, args->model_classes);
    const int K = loaded.model.num_classes();
    loaded.model.to(device);
    DataArgs data;
    data.follow_model(loaded.model);
    const io::ExtractionSettings settings = data.extraction();
    bool any_folder = false;
    const std::vector<std::string> videos = collect_videos(args->videos, any_folder);
    std::vector<std::string> inputs = videos;
    inputs.push_back(args->weights);
    if (!args->out.empty()) {
      if (io::lowercase_extension(args->out) != ".avi") {
        fail("--out {}: the labelled video is written as MJPG in an AVI file: name it .avi", args->out);
      }
      require_new_output(args->out, inputs, args->overwrite, "--out");
    }
    if (!args->csv.empty()) require_new_output(args->csv, inputs, args->overwrite, "--csv");
    if (!args->out.empty() && !args->csv.empty() && args->out == args->csv) {
      fail("--out and --csv name the same file {}", args->out);
    }
    if ((!args->out.empty() || args->rolling > 0) && videos.size() != 1) {
      fail("--out and --rolling take exactly one video, got {}", videos.size());
    }

    if (args->rolling > 0 || !args->out.empty()) {
      const std::string& path = videos[0];
      // The model's small frames for --rolling, and without it 1x1 frames, which only count: --out
      // decodes the video again and writes it a frame at a time (a minute of 4K held whole took
      // tens of GB).
      const bool rolling = args->rolling > 0;
      const io::DecodedVideo video =
          io::decode_all_frames(path, rolling ? settings.height : 1, rolling ? settings.width : 1, false,
                                rolling ? settings.channels : 3);
      const size_t T = static_cast<size_t>(settings.sequence_length), n = video.frames.size();
      if (n < T) fail("{}: {} decodable frames, fewer than the {} the model needs", path, n, T);
      const size_t windows = n - T + 1;
      if (args->rolling > 0 && static_cast<size_t>(args->rolling) > windows) {
        console.note(
            fmt::format("note: --rolling {}: {} has {} windows of {} frames, so each frame's label is a mean "
                        "of at most {} "
                        "predictions",
                        args->rolling, path, windows, T, windows));
      }
      std::vector<std::string> labels(n);
      std::string csv = "frame,class,probability\n";
      if (args->rolling > 0) {
        const models::RollingPredictions rolling = models::rolling_predictions(
            loaded.model, video.frames, settings, args->rolling, args->batch_size);
        models::require_finite_outputs(rolling.windows, args->weights);
        for (size_t f = T - 1; f < n; ++f) {
          const std::vector<double>& mean = rolling.frames[f];
          const int best = top_k(mean, 1)[0];
          labels[f] = fmt::format("{} {:.2f}", names[best], mean[best]);
          csv += fmt::format("{},{},{:.6f}\n", f, csv_field(names[best]), mean[best]);
        }
      } else {
        const io::Clip clip = io::extract_clip(path, settings);
        const std::vector<double> p = models::classify_clips(loaded.model, {clip.pixels}, settings, 1)[0];
        models::require_finite_outputs(std::vector<std::vector<double>>{p}, args->weights);
        const int best = top_k(p, 1)[0];
        std::fill(labels.begin(), labels.end(), fmt::format("{} {:.2f}", names[best], p[best]));
        console.line(fmt::format("{}: {} ({:.4f})", path, names[best], p[best]));
      }
      if (args->rolling > 0) {
        if (!args->csv.empty()) {
          models::write_text_atomically(args->csv, csv);
        } else if (args->out.empty() || csv_to_stdout) {
          std::cout << csv;
        }
      }
      if (!args->out.empty()) {
        io::write_annotated_video(
            args->out, video.original_height, video.original_width, video.fps, labels,
            [&](const io::FrameSink& emit) {
              size_t seen = 0;
              const int64_t again = io::for_each_frame(
                  path, video.original_height, video.original_width, [&](const uint8_t* f) {
                    if (++seen > n) {
                      fail("{}: decoded {} frames, then more when read again to write --out {}", path, n,
                           args->out);
                    }
                    emit(f);
                  });
              if (again != static_cast<int64_t>(n)) {
                fail("{}: decoded {} frames, then {} when read again to write --out {}", path, n, again,
                     args->out);
              }
            });
        console.note(fmt::format("wrote {} ({} frames)", args->out, n));
      }
      return;
    }

    std::vector<std::vector<uint8_t>> clips;
    std::vector<std::string> usable;
    int skipped = 0;
    std::vector<std::string> named_unusable;  // named on the command line (not found in a folder)
    for (const std::string& path : videos) {
      try {
        clips.push_back(io::extract_clip(path, settings).pixels);
        usable.push_back(path);
      } catch (const io::VideoError& e) {
        console.note(std::string("skipped: ") + e.what());
        ++skipped;
        if (std::find(args->videos.begin(), args->videos.end(), path) != args->videos.end() &&
            std::find(named_unusable.begin(), named_unusable.end(), path) == named_unusable.end())
          named_unusable.push_back(path);
      }
    }
    if (clips.empty()) fail("none of the {} videos could be read", videos.size());
    const std::vector<std::vector<double>> probs =
        models::classify_clips(loaded.model, clips, settings, args->batch_size);
    models::require_finite_outputs(probs, args->weights);
    const bool as_csv = any_folder || csv_to_stdout || !args->csv.empty() || usable.size() > 1;
    // A binary model's one output is the probability of its positive class (its second name).
    const bool binary = loaded.model.binary();
    std::string csv = "video";
    for (int r = 1; r <= std::min(args->top_k, K); ++r) csv += fmt::format(",class_{},probability_{}", r, r);
    if (binary) csv += "," + csv_field("p_" + names[1]);
    csv += "\n";
    for (size_t i = 0; i < usable.size(); ++i) {
      const std::vector<int> best = top_k(probs[i], args->top_k);
      if (as_csv) {
        csv += csv_field(usable[i]);
        for (int k : best) csv += fmt::format(",{},{:.6f}", csv_field(names[k]), probs[i][k]);
        if (binary) csv += fmt::format(",{:.6f}", probs[i][1]);
        csv += "\n";
      } else {
        console.line(usable[i]);
        for (size_t r = 0; r < best.size(); ++r) {
          console.line(fmt::format("  {}. {:<24} {:.4f}", r + 1, names[best[r]], probs[i][best[r]]));
        }
        if (binary)
          console.line(
              fmt::format("  probability of the positive class '{}': {:.4f}", names[1], probs[i][1]));
      }
    }
    if (as_csv) {
      if (args->csv.empty()) {
        std::cout << csv;
      } else {
        models::write_text_atomically(args->csv, csv);
        console.note(fmt::format("wrote {} ({} videos{})", args->csv, usable.size(),
                                 skipped ? fmt::format(", {} skipped", skipped) : ""));
      }
    }
    // The others are classified above; a video asked for by name that could not be is an error
    // (one skipped while reading a folder is not: a folder may hold other files).
    if (!named_unusable.empty()) {
      fail("{} of the videos named could not be read ({}); the other {} {} classified", named_unusable.size(),
           fmt::join(named_unusable, ", "), usable.size(), usable.size() == 1 ? "is" : "are");
    }
  });
}

}  // namespace hisvid::tools
