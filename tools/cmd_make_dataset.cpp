// hisvid make-dataset: write the built-in synthetic action dataset as real video files.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "io/synthetic.h"
#include "tools/commands.h"
#include "tools/console.h"
#include "tools/training.h"
#include "tools/validators.h"

namespace hisvid::tools {

void add_make_dataset_command(CLI::App& app) {
  auto spec = std::make_shared<io::SyntheticSpec>();
  auto classes = std::make_shared<std::string>();
  auto size = std::make_shared<int>(spec->width);
  spec->replace = false;
  CLI::App* cmd = app.add_subcommand(
      "make-dataset",
      "Write the built-in dataset: synthetic action videos in pairs that differ only in time direction");
  cmd->add_option("--out", spec->out_dir, "Output folder (UCF50 layout: OUT/<Class>/<video>.avi)")
      ->required()
      ->check(non_empty());
  cmd->add_option("--clips-per-class", spec->clips_per_class, "Videos per class")
      ->capture_default_str()
      ->check(integer_in(1, io::kMaxClipsPerClass));
  cmd->add_option("--frames", spec->frames_per_clip, "Frames per video")
      ->capture_default_str()
      ->check(integer_in(io::kMinFrames, io::kMaxFrames));
  cmd->add_option("--size", *size, "Frame width and height in pixels (even)")
      ->capture_default_str()
      ->check(integer_in(io::kMinSide, io::kMaxSide));
  cmd->add_option("--seed", spec->seed, "Seed")->capture_default_str()->check(seed_value());
  cmd->add_option("--classes", *classes, "Comma-separated subset of the classes (default: all)")
      ->check(non_empty());
  cmd->add_flag(
      "--overwrite", spec->replace,
      "Replace a dataset that --out holds when it was made with other settings (its clips are deleted)");
  cmd->callback([spec, classes, size] {
    Console console;
    io::SyntheticSpec s = *spec;
    s.width = s.height = *size;
    s.classes = split_names(*classes, "--classes");
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<std::string> files = io::make_synthetic_dataset(s, [&](const io::Progress& p) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      console.progress(static_cast<int>(p.done), static_cast<int>(p.total), seconds, p.current);
    });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    console.finish(static_cast<int>(files.size()), seconds,
                   1000.0 * seconds / std::max<size_t>(files.size(), 1), "videos written");
    console.line(fmt::format("{} videos in {}", files.size(), s.out_dir));
  });
}

}  // namespace hisvid::tools
