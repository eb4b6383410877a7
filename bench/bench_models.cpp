// bench/bench_models.cpp — Google Benchmark: ms per training step (batch 4: forward, loss,
// backward, Adam) and per evaluation step (batch 32, Keras's evaluate default) of each zoo
// model, on the CPU and, when one is present, on CUDA (synchronised at the step boundary,
// so the time is the GPU's). Beside each: clips/s and the seeds' claim.
// Each benchmark runs 5 repetitions of at least 0.5 s (0.2 s on CUDA); the median is the figure.
//   build/bench/hisvid_bench --benchmark_out=results.json --benchmark_out_format=json
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <map>
#include <string>

#include "bench/step.h"
#include "engine/device.h"
#include "models/zoo.h"

namespace {

using hisvid::Device;

// The seeds' claims, per Keras evaluate step (batch 32): seed 000.
const std::map<std::string, double> kClaimedEvalMs = {{"lrcn", 40.0}, {"convlstm", 205.0}};

void run(benchmark::State& state, const std::string& model, Device device, bool train) {
  const int batch = static_cast<int>(state.range(0));
  hisvid::bench::StepRunner runner(model, 4, batch, device);
  for (int i = 0; i < 2; ++i) train ? runner.train_step() : runner.eval_step();  // warm-up
  runner.sync();
  hisvid::Allocator& memory = hisvid::allocator_for(device);
  memory.reset_peak();
  for (auto _ : state) {
    train ? runner.train_step() : runner.eval_step();
    runner.sync();
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["clips_per_s"] = benchmark::Counter(static_cast<double>(state.iterations() * batch),
                                                     benchmark::Counter::kIsRate);
  state.counters["peak_mem_mb"] = static_cast<double>(memory.peak_bytes_in_use()) / 1048576.0;
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  state.counters["max_rss_mb"] = static_cast<double>(usage.ru_maxrss) / 1024.0;
  const auto claim = kClaimedEvalMs.find(model);
  if (!train && claim != kClaimedEvalMs.end()) state.counters["seed_claim_ms"] = claim->second;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Device> devices = {Device::cpu()};
  if (hisvid::cuda_available()) devices.push_back(Device::cuda(0));
  for (const std::string& model : hisvid::models::zoo_names()) {
    for (const Device& device : devices) {
      for (bool train : {true, false}) {
        const std::string name = model + (train ? "/train" : "/eval") + "/" + device.str();
        benchmark::RegisterBenchmark(name.c_str(), run, model, device, train)
            ->Arg(train ? 4 : 32)
            ->ArgName("batch")
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime()
            ->MinTime(device.is_cpu() ? 0.5 : 0.2)
            ->Repetitions(5)  // the median of 5 repetitions: robust to a noisy machine
            ->ReportAggregatesOnly(true);
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
