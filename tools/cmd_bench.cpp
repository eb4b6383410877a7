// hisvid bench: ms per training step (forward + loss + backward + Adam) and per evaluation
// step of a model, as bench/hisvid_bench measures them (the same StepRunner), optionally
// broken down per layer like Caffe's `caffe time`: forward and backward of every layer, the
// loss and the optimizer step. Per-layer timing synchronises the device around every layer and
// every backward node, so its total exceeds the plain step time on a GPU.
#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "bench/step.h"
#include "engine/cuda_device.h"
#include "engine/device.h"
#include "engine/error.h"
#include "models/sequential.h"
#include "models/training_step.h"
#include "models/zoo.h"
#include "tools/commands.h"
#include "tools/console.h"
#include "tools/training.h"
#include "tools/validators.h"

namespace hisvid::tools {

void add_bench_command(CLI::App& app) {
  struct Args {
    std::string model = "lrcn", device = "auto";
    int train_batch = 4, eval_batch = 32, classes = 4, steps = 10, warmup = 2;
    bool per_layer = false;
    bool cuda_graphs = false;
    bool tf32 = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd =
      app.add_subcommand("bench", "ms/step of a model's training and evaluation steps, optionally per layer");
  cmd->add_option("--model", args->model, "Zoo model or JSON spec")->capture_default_str();
  cmd->add_option("--batch", args->train_batch, "Training batch size")
      ->capture_default_str()
      ->check(integer_in(1, 100000));
  cmd->add_option("--eval-batch", args->eval_batch, "Evaluation batch size")
      ->capture_default_str()
      ->check(integer_in(1, 100000));
  cmd->add_option("--classes", args->classes, "Classes of the final layer")
      ->capture_default_str()
      ->check(integer_in(2, 100000));
  cmd->add_option("--steps", args->steps, "Timed steps (median reported)")
      ->capture_default_str()
      ->check(integer_in(1, 100000));
  cmd->add_option("--warmup", args->warmup, "Untimed steps first")
      ->capture_default_str()
      ->check(integer_in(0, 100000));
  cmd->add_option("--device", args->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->add_flag("--per-layer", args->per_layer,
                "Forward and backward time of every layer of a training step");
  cmd->add_flag("--cuda-graphs", args->cuda_graphs,
                "Time the training and evaluation steps replayed from CUDA graphs (a GPU; 3 warm-up steps "
                "at least)");
  cmd->add_flag("--tf32", args->tf32, "On a GPU: TF32 tensor cores for cuBLAS GEMMs and cuDNN convolutions");
  cmd->callback([cmd, args] {
    Console console;
    const Device device = device_option(args->device);
    const models::Sequential spec =
        models::load_spec(args->model);  // a bad --model is named before any output
    if (cmd->count("--classes") == 0) {
      // A binary classifier (one sigmoid unit) takes 2 classes; another spec's own units are
      // replaced by the default, and the header says so.
      if (spec.binary()) args->classes = 2;
    }
    models::load_spec(args->model, args->classes);
    if (args->cuda_graphs) cuda_device_for("--cuda-graphs", args->device);
    if (args->tf32) tf32_on(args->device);
    // A graph step needs its 2 direct steps and the capture before it is timed.
    const int graph_warmup = std::max(
        args->warmup, std::max(models::TrainingStep::kWarmupSteps, models::InferenceStep::kWarmupSteps) + 1);
    console.line(fmt::format("{} on {}, {} classes: {} timed steps after {} warm-up steps{}, median",
                             args->model, device.str(), args->classes, args->steps,
                             args->cuda_graphs ? graph_warmup : args->warmup,
                             args->cuda_graphs ? " (2 direct, the capture, then replays)" : ""));
    Allocator& memory = allocator_for(device);
    for (bool train : {true, false}) {
      const int batch = train ? args->train_batch : args->eval_batch;
      bench::StepRunner runner(args->model, args->classes, batch, device);
      const bool graph = args->cuda_graphs;
      const auto step = [&] {
        if (graph) {
          train ? runner.graph_train_step() : runner.graph_eval_step();
        } else {
          train ? runner.train_step() : runner.eval_step();
        }
      };
      for (int i = 0; i < (graph ? graph_warmup : args->warmup); ++i) step();
      runner.sync();
      memory.reset_peak();
      std::vector<double> times;
      for (int i = 0; i < args->steps; ++i) {
        const bench::Clock::time_point t0 = bench::Clock::now();
        step();
        runner.sync();
        times.push_back(bench::ms_between(t0, bench::Clock::now()));
      }
      const double ms = bench::median(times);
      console.line(
          fmt::format("{:<6} batch {:>3}: {:9.2f} ms/step {:10.1f} clips/s   peak {} memory {:.1f} MiB",
                      graph   ? (train ? "train (CUDA graph)" : "eval (CUDA graph)")
                      : train ? "train"
                              : "eval",
                      batch, ms, 1000.0 * batch / ms, device.str(), memory.peak_bytes_in_use() / 1048576.0));
    }
    struct rusage usage {};
    getrusage(RUSAGE_SELF, &usage);
    console.line(fmt::format("peak host memory (max RSS): {:.1f} MiB", usage.ru_maxrss / 1024.0));
    // The seeds timed Keras's evaluate at batch 32 of these two models (20 classes, the data fed
    // from the host, loss and metrics): a step that does more than the forward timed here.
    if (args->model == "lrcn" || args->model == "convlstm") {
      console.line(fmt::format(
          "seeds' claim for {} (Keras evaluate, batch 32, 20 classes, feeding the data and the metrics "
          "included): {} ms/step",
          args->model, args->model == "lrcn" ? 40 : 205));
    }
    if (args->per_layer) {
      bench::StepRunner runner(args->model, args->classes, args->train_batch, device);
      console.line("");
      console.line(
          bench::format_layer_profile(bench::profile_training_step(runner, args->steps, args->warmup)));
    }
    // What the CUDA kernels chose by timing during the warm-up (convolution paths, ConvLSTM step
    // versions): each candidate's time, per layer shape and pass.
    const std::vector<std::string> choices =
        device.is_cuda() ? cuda_timed_choices() : std::vector<std::string>{};
    if (!choices.empty()) console.line("\nchoices made by timing (kernels/conv2d.cu, kernels/lstm.cu):");
    for (const std::string& line : choices) console.line("  " + line);
  });
}

}  // namespace hisvid::tools
