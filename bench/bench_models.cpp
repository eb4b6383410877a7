// bench/bench_models.cpp — Google Benchmark: ms per training step (batch 4: forward, loss,
// backward, Adam) and per evaluation step (batch 32, Keras's evaluate default) of each zoo
// model, on the CPU and, when one is present, on CUDA (synchronised at the step boundary,
// so the time is the GPU's), where train_graph is the training step replayed from a CUDA
// graph (models/training_step.h) and eval_graph the evaluation step (models/inference_step.h:
// from the uint8 clips to the class probabilities). Beside each: clips/s, the device operations queued per
// step (engine/device.h, device_calls: what launch overhead grows with; a replayed graph step counts only
// what runs outside the graph) and the seeds' claim. Each benchmark runs 5 repetitions of at least 0.5 s (0.2
// s on CUDA); the median is the figure.
//   build/bench/hisvid_bench --benchmark_out=results.json --benchmark_out_format=json
// Instead of the benchmarks, the per-layer breakdown of a training step (as `hisvid bench
// --per-layer`) of some models, on CUDA when present, else on the CPU; it needs no video or
// HDF5 library, so it runs from the GPU kit of scripts/device-kit:
//   build/bench/hisvid_bench --per_layer=lrcn,convlstm [--per_layer_steps=10] [--per_layer_batch=4]
// or kernel by kernel (engine/kernel_profile.h), the training step at --per_layer_batch and the
// evaluation step at 8 times that, nothing synchronised between the calls:
//   build/bench/hisvid_bench --per_kernel=lrcn,convlstm [--per_layer_steps=10] [--per_layer_batch=4]
// With --throughput, every step on CUDA runs at batch 256 as well (clips/s at scale); with
// --tf32, cuBLAS and cuDNN on the GPU may use TF32 tensor cores (off: full float32).
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/step.h"
#include "engine/build_info.h"
#include "engine/cuda_device.h"
#include "engine/device.h"
#include "models/zoo.h"

namespace {

using hisvid::Device;

// The seeds' claims, per Keras evaluate step (batch 32): seed 000.
const std::map<std::string, double> kClaimedEvalMs = {{"lrcn", 40.0}, {"convlstm", 205.0}};

enum class Step { Train, Eval, GraphTrain, GraphEval };

// The batch of the throughput steps (`--throughput`, CUDA only), bench/pytorch_reference.py's too.
constexpr int64_t kThroughputBatch = 256;

void run(benchmark::State& state, const std::string& model, Device device, Step kind) {
  const int batch = static_cast<int>(state.range(0));
  const bool train = kind == Step::Train || kind == Step::GraphTrain;
  const bool graph = kind == Step::GraphTrain || kind == Step::GraphEval;
  // An error anywhere (building the model, a step, a device fault) ends this benchmark with
  // it, and the others still run.
  std::unique_ptr<hisvid::bench::StepRunner> runner;
  const auto step = [&] {
    if (kind == Step::Train) runner->train_step();
    if (kind == Step::Eval) runner->eval_step();
    if (kind == Step::GraphTrain) runner->graph_train_step();
    if (kind == Step::GraphEval) runner->graph_eval_step();
  };
  try {
    runner = std::make_unique<hisvid::bench::StepRunner>(model, 4, batch, device);
    // What this model's steps hold, its workspace included, and not the largest workspace of
    // the models benchmarked before it.
    hisvid::allocator_for(device).release_workspace();
    // Warm-up: 2 steps (a graph step: the 2 direct steps, then the capture and its replay).
    for (int i = 0; i < (graph ? 3 : 2); ++i) step();
    runner->sync();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  hisvid::Allocator& memory = hisvid::allocator_for(device);
  memory.reset_peak();
  const uint64_t calls_before = hisvid::device_calls();
  for (auto _ : state) {
    try {
      step();
      runner->sync();
    } catch (const std::exception& e) {
      state.SkipWithError(e.what());
      break;
    }
  }
  if (state.error_occurred()) return;
  state.counters["calls_per_step"] =
      static_cast<double>(hisvid::device_calls() - calls_before) / static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["clips_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * batch), benchmark::Counter::kIsRate);
  state.counters["peak_mem_mb"] = static_cast<double>(memory.peak_bytes_in_use()) / 1048576.0;
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  state.counters["max_rss_mb"] = static_cast<double>(usage.ru_maxrss) / 1024.0;
  const auto claim = kClaimedEvalMs.find(model);
  if (!train && claim != kClaimedEvalMs.end()) state.counters["seed_claim_ms"] = claim->second;
}

// Removes `--name=value` from argv (before Google Benchmark sees it) and returns the value.
std::optional<std::string> take_flag(int& argc, char** argv, const char* name) {
  const std::string prefix = std::string("--") + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) {
      const std::string value = argv[i] + prefix.size();
      for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
      --argc;
      return value;
    }
  }
  return std::nullopt;
}

// Removes a plain `--name` switch from argv and says whether it was there.
bool take_switch(int& argc, char** argv, const char* name) {
  const std::string flag = std::string("--") + name;
  for (int i = 1; i < argc; ++i) {
    if (flag == argv[i]) {
      for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
      --argc;
      return true;
    }
  }
  return false;
}

// The value of a --per_layer_* flag: a positive number, `fallback` when the flag is absent,
// 0 (after naming the flag) when it is not a positive number.
int positive_flag(const char* name, const std::string& value, int fallback) {
  if (value.empty()) return fallback;
  char* end = nullptr;
  const long n = std::strtol(value.c_str(), &end, 10);
  if (*end != '\0' || n < 1 || n > 1 << 20) {
    std::fprintf(stderr, "hisvid_bench: --%s=%s: expected a positive number\n", name, value.c_str());
    return 0;
  }
  return int(n);
}

// The breakdowns instead of the benchmarks: report(model, steps, batch) for each model of the
// comma-separated list, with the --per_layer_steps (default 10) and --per_layer_batch (default 4)
// values; 2 when one of those is not a positive number.
template <typename Report>
int for_each_model(const std::string& models, const std::string& steps_flag, const std::string& batch_flag,
                   const Report& report) {
  const int steps = positive_flag("per_layer_steps", steps_flag, 10);
  const int batch = positive_flag("per_layer_batch", batch_flag, 4);
  if (steps == 0 || batch == 0) return 2;
  std::vector<std::string> names;
  std::stringstream list(models);
  for (std::string model; std::getline(list, model, ',');) {
    if (model.empty()) {
      std::fprintf(stderr, "hisvid_bench: '%s' names an empty model (models are comma-separated)\n",
                   models.c_str());
      return 2;
    }
    names.push_back(model);
  }
  if (names.empty()) {
    std::fprintf(stderr, "hisvid_bench: --per_layer= / --per_kernel= name no model\n");
    return 2;
  }
  for (const std::string& model : names) report(model, steps, batch);
  return 0;
}

// After a profile on CUDA: what the kernels chose by timing on the way (the convolutions'
// paths, the ConvLSTM step's versions), with each candidate's time.
int print_timed_choices(int status, Device device) {
  if (!device.is_cuda()) return status;
  std::printf("choices made by timing in this process (kernels/conv2d.cu, kernels/lstm.cu):\n");
  for (const std::string& line : hisvid::cuda_timed_choices()) std::printf("  %s\n", line.c_str());
  return status;
}

// --per_layer: each model's training step, layer by layer.
int per_layer(const std::string& models, const std::string& steps_flag, const std::string& batch_flag,
              Device device) {
  return print_timed_choices(
      for_each_model(models, steps_flag, batch_flag,
                     [device](const std::string& model, int steps, int batch) {
                       hisvid::bench::StepRunner runner(model, 4, batch, device);
                       const auto profile = hisvid::bench::profile_training_step(runner, steps, 2);
                       std::printf("%s\n%s\n\n", model.c_str(),
                                   hisvid::bench::format_layer_profile(profile).c_str());
                     }),
      device);
}

// --per_kernel: each model's training step at the batch and its evaluation step at 8 times it
// (32 by default), kernel by kernel.
int per_kernel(const std::string& models, const std::string& steps_flag, const std::string& batch_flag,
               Device device) {
  return print_timed_choices(
      for_each_model(models, steps_flag, batch_flag,
                     [device](const std::string& model, int steps, int batch) {
                       for (bool train : {true, false}) {
                         hisvid::bench::StepRunner runner(model, 4, train ? batch : 8 * batch, device);
                         const auto times = hisvid::bench::profile_kernels(runner, train, steps, 2);
                         std::printf("%s\n%s\n\n", model.c_str(),
                                     hisvid::bench::format_kernel_profile(times).c_str());
                       }
                     }),
      device);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Device> devices = {Device::cpu()};
  if (hisvid::cuda_available()) devices.push_back(Device::cuda(0));
  if (take_switch(argc, argv, "tf32")) {
    if (devices.size() < 2) {
      std::fprintf(stderr, "hisvid_bench: --tf32 needs a CUDA device (%s)\n",
                   hisvid::cuda_unavailable_reason().c_str());
      return 2;
    }
    hisvid::cuda_set_allow_tf32(devices.back(), true);
  }
  const std::optional<std::string> per_layer_models = take_flag(argc, argv, "per_layer");
  const std::string per_layer_steps = take_flag(argc, argv, "per_layer_steps").value_or("");
  const std::string per_layer_batch = take_flag(argc, argv, "per_layer_batch").value_or("");
  const std::optional<std::string> per_kernel_models = take_flag(argc, argv, "per_kernel");
  // --throughput: every step on CUDA also at batch 256 (the clips/s comparison).
  const bool throughput = take_switch(argc, argv, "throughput");
  const bool profile = per_layer_models || per_kernel_models;
  if (per_layer_models && per_kernel_models) {
    std::fprintf(stderr, "hisvid_bench: --per_layer and --per_kernel: give one (each is a run of its own)\n");
    return 2;
  }
  if (!profile && (!per_layer_steps.empty() || !per_layer_batch.empty())) {
    std::fprintf(stderr,
                 "hisvid_bench: --per_layer_steps / --per_layer_batch go with --per_layer or --per_kernel\n");
    return 2;
  }
  if (profile && throughput) {
    std::fprintf(stderr,
                 "hisvid_bench: --throughput goes with the benchmarks, not --per_layer / --per_kernel "
                 "(--per_layer_batch=256 profiles batch 256)\n");
    return 2;
  }
  if (profile) {
    try {
      return per_kernel_models
                 ? per_kernel(*per_kernel_models, per_layer_steps, per_layer_batch, devices.back())
                 : per_layer(*per_layer_models, per_layer_steps, per_layer_batch, devices.back());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "hisvid_bench: %s\n", e.what());
      return 1;
    }
  }
  for (const std::string& model : hisvid::models::zoo_names()) {
    for (const Device& device : devices) {
      for (Step kind : {Step::Train, Step::Eval, Step::GraphTrain, Step::GraphEval}) {
        const bool train = kind == Step::Train || kind == Step::GraphTrain;
        const bool graph = kind == Step::GraphTrain || kind == Step::GraphEval;
        if (graph && !device.is_cuda()) continue;
        const char* step = kind == Step::Train        ? "/train"
                           : kind == Step::Eval       ? "/eval"
                           : kind == Step::GraphTrain ? "/train_graph"
                                                      : "/eval_graph";
        const std::string name = model + step + "/" + device.str();
        std::vector<int64_t> batches = {train ? 4 : 32};
        if (throughput && device.is_cuda()) batches.push_back(kThroughputBatch);
        benchmark::RegisterBenchmark(name.c_str(), run, model, device, kind)
            ->ArgsProduct({batches})
            ->ArgName("batch")
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime()
            ->MinTime(device.is_cpu() ? 0.5 : 0.2)
            ->Repetitions(5)  // the median of 5 repetitions: robust to a noisy machine
            ->ReportAggregatesOnly(true);
      }
    }
  }
  benchmark::AddCustomContext("hisvid_commit", hisvid::build_commit());  // bench/compare reports it
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const size_t ran = benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (ran == 0) {
    std::fprintf(stderr,
                 "hisvid_bench: no benchmark matches the filter (names: MODEL/train|eval|train_graph|"
                 "eval_graph/cpu|cuda:0/batch:N)\n");
    return 1;
  }
  return 0;
}
