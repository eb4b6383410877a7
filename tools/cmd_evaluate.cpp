// hisvid evaluate: a model file on any UCF50-style folder (classes matched by name), or on the
// held-out split of the run that trained it.
#include <fmt/format.h>

#include <filesystem>
#include <memory>

#include "io/dataset.h"
#include "models/inference.h"
#include "models/model_file.h"
#include "tools/commands.h"
#include "tools/outputs.h"
#include "tools/training.h"
#include "tools/validators.h"

namespace hisvid::tools {

void add_data_options(CLI::App* cmd, DataArgs& data, std::shared_ptr<std::string> classes);

void add_evaluate_command(CLI::App& app) {
  struct Args {
    std::string weights, model, split = "all", model_classes, out_dir, device = "auto";
    bool tf32 = false, cuda_graphs = false, overwrite = false;
    size_t batch_size = 32;
    DataArgs data;
  };
  auto args = std::make_shared<Args>();
  auto classes = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "evaluate", "Loss, accuracy, per-class precision/recall/F1 and the confusion matrix");
  cmd->add_option("--weights", args->weights, "Model file (hisvid's or a Keras .h5)")
      ->required()
      ->check(non_empty());
  cmd->add_option("--model", args->model, kWeightsArchitectureHelp)->check(non_empty());
  add_data_options(cmd, args->data, classes);
  cmd->add_option("--split", args->split,
                  "all: every clip of --data; test: the held-out split of the training run (same data, seed, "
                  "fractions)")
      ->capture_default_str()
      ->check(CLI::IsMember({"all", "test"}));
  cmd->add_option(
         "--model-classes", args->model_classes,
         "Comma-separated class names of the model's outputs (for Keras files, which do not store them)")
      ->check(non_empty());
  cmd->add_option("--batch-size", args->batch_size, "Evaluation batch size (Keras's default 32)")
      ->capture_default_str()
      ->check(integer_in(1, 100000));
  cmd->add_option("--out", args->out_dir,
                  "Write report.txt, report.json, predictions.csv and confusion.png into this directory")
      ->check(non_empty());
  cmd->add_flag("--overwrite", args->overwrite, "Replace those reports when --out already holds them");
  cmd->add_option("--device", args->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->add_flag("--tf32", args->tf32, "On a GPU: TF32 tensor cores for cuBLAS GEMMs and cuDNN convolutions");
  cmd->add_flag("--cuda-graphs", args->cuda_graphs,
                "On a GPU: replay the evaluation step from a CUDA graph after two direct batches (the same "
                "results)");
  cmd->callback([args, classes] {
    Console console;
    const Device device = device_option(args->device);  // before any work
    if (!args->out_dir.empty())
      require_new_reports(args->out_dir, {args->weights, args->data.cache}, args->overwrite);
    if (args->tf32) tf32_on(args->device);
    if (args->cuda_graphs) cuda_device_for("--cuda-graphs", args->device);
    models::LoadedModel loaded = load_model_option(args->weights, args->model);
    for (const std::string& warning : loaded.extras.warnings) console.note("warning: " + warning);
    require_classifier(loaded, args->weights);
    const std::vector<std::string> model_classes =
        output_names(loaded, args->weights, args->model_classes, /*numbered=*/false);
    DataArgs data = args->data;
    data.classes = split_names(*classes, "--classes");
    data.min_classes = 1;  // a model may be scored on one class's videos
    data.follow_model(loaded.model);
    std::vector<size_t> indices;
    io::ClipSet clips;
    if (args->split == "test") {
      if (!data.classes.empty() || data.num_classes != 0) {
        fail(
            "--split test: the held-out split is re-created from the classes of the run that trained {}; "
            "leave out --classes and --num-classes",
            args->weights);
      }
      const nlohmann::json& state = loaded.extras.training_state;
      if (!state.is_object() || !state.contains("run") || !state["run"].is_object()) {
        fail(
            "--split test: {} holds no record of the training run that made it (a Keras file or a model "
            "saved without its run): evaluate it on a folder with --data",
            args->weights);
      }
      const nlohmann::json& run = state.at("run");
      double test_split = 0, validation_split = 0;
      uint64_t seed = 0;
      bool shuffle_validation = false;
      try {
        if (data.root.empty()) data.root = run.at("data").at("root").get<std::string>();
        if (data.classes.empty()) data.classes = run.at("data").at("classes").get<std::vector<std::string>>();
        if (data.num_classes == 0) data.num_classes = run.at("data").at("num_classes").get<int>();
        // The run's clip cache (or none), not a new one beside it.
        if (data.cache.empty()) data.cache = run.at("data").value("cache", std::string());
        test_split = run.at("test_split").get<double>();
        validation_split = run.at("validation_split").get<double>();
        seed = run.at("seed").get<uint64_t>();
        shuffle_validation = run.at("shuffle_validation").get<bool>();
      } catch (const nlohmann::json::exception& e) {
        fail("--split test: {}: the record of its training run is malformed ({})", args->weights, e.what());
      }
      if (test_split == 0) {
        fail(
            "--split test: the run that trained {} held out no test clips (--test-split 0): evaluate it on a "
            "folder with --data DIR",
            args->weights);
      }
      std::error_code error;
      if (args->data.root.empty() && !std::filesystem::exists(data.root, error)) {
        fail(
            "--split test: {} was trained on the videos in {}, which no longer exists: name where they are "
            "now "
            "with --data DIR",
            args->weights, data.root);
      }
      check_same_listing(run, data, "--split test");
      require_outside_data(args->out_dir, data.root, "--out");
      clips = load_data(data, console);
      check_same_clips(run, clips, data.root, "--split test");
      indices = recreate_split(run, clips.size(), test_split, validation_split, seed, shuffle_validation,
                               "--split test")
                    .test;
    } else {
      if (data.root.empty()) fail("evaluate: --data is required");
      require_outside_data(args->out_dir, data.root, "--out");
      (void)models::match_classes(io::dataset_classes(data.spec()), model_classes);  // before decoding
      clips = load_data(data, console);
      for (size_t i = 0; i < clips.size(); ++i) indices.push_back(i);
    }
    const std::vector<int> label_map = models::match_classes(clips.class_names, model_classes);
    if (loaded.model.binary()) {
      console.note(fmt::format("binary classifier: its output is the probability of the positive class '{}'",
                               model_classes[1]));
    }
    loaded.model.to(device);
    const models::Evaluation ev =
        models::evaluate(loaded.model, clips, indices, args->batch_size, label_map, args->cuda_graphs);
    models::require_finite_outputs(ev.probs, args->weights);
    const std::string graph = models::graph_note(ev.graph_status, "evaluation step");
    if (!graph.empty()) console.note(graph);
    const models::ClassificationReport report =
        models::classification_report(ev.truth, ev.predicted, model_classes);
    console.finish(ev.steps, ev.ms_per_step * ev.steps / 1000.0, ev.ms_per_step,
                   fmt::format("loss: {:.4f} - accuracy: {:.4f}", ev.loss, ev.accuracy));
    console.line(report.text());
    if (!args->out_dir.empty()) {
      write_reports(args->out_dir,
                    fmt::format("{} on {} clips of {}", loaded.model.name(), indices.size(), data.root), ev,
                    report, {});
      console.note("wrote " + args->out_dir + "/report.txt, report.json, predictions.csv, confusion.png");
    }
  });
}

}  // namespace hisvid::tools
