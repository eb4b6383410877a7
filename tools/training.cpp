#include "tools/training.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "bench/step.h"
#include "engine/cuda_device.h"
#include "engine/device.h"
#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/optimizer.h"
#include "io/atomic_file.h"
#include "io/keras_h5.h"
#include "io/plots.h"
#include "io/synthetic.h"
#include "models/inference.h"
#include "models/model_file.h"
#include "models/zoo.h"
#include "tools/outputs.h"

namespace hisvid::tools {

namespace fs = std::filesystem;

namespace {

// The checkpoint --resume names: the file, or a run directory's last.h5.
std::string resume_checkpoint(const std::string& resume) {
  return fs::is_directory(resume) ? (fs::path(resume) / "last.h5").string() : resume;
}

nlohmann::json to_json(const TrainArgs& a) {
  return {{"model", a.model},
          {"data",
           {{"root", fs::absolute(a.data.root).string()},
            {"classes", a.data.classes},
            {"num_classes", a.data.num_classes},
            {"frames", a.data.frames},
            {"height", a.data.height},
            {"width", a.data.width},
            {"channels", a.data.channels},
            {"cache", a.data.cache.empty() || a.data.cache == "none" ? a.data.cache
                                                                     : fs::absolute(a.data.cache).string()}}},
          {"epochs", a.epochs},
          {"batch_size", a.batch_size},
          {"optimizer", a.optimizer},
          {"patience", a.patience},
          {"restore_best", a.restore_best},
          {"monitor", a.monitor},
          {"reduce_lr_factor", a.reduce_lr_factor},
          {"reduce_lr_patience", a.reduce_lr_patience},
          {"test_split", a.test_split},
          {"validation_split", a.validation_split},
          {"shuffle_validation", a.shuffle_validation},
          {"seed", a.seed},
          {"augmentation",
           {{"flip", a.augmentation.flip},
            {"brightness", a.augmentation.brightness},
            {"contrast", a.augmentation.contrast},
            {"noise", a.augmentation.noise}}}};
}

// The arguments of the run a checkpoint belongs to; `epochs` > 0 overrides the stored count.
TrainArgs args_of_checkpoint(const nlohmann::json& run, const TrainArgs& given) {
  TrainArgs a = given;
  a.model = run.at("model").get<std::string>();
  const nlohmann::json& d = run.at("data");
  // Where the run's videos are now, when this command says (the clips' fingerprint must match).
  if (given.data.root.empty()) a.data.root = d.at("root").get<std::string>();
  a.data.classes = d.at("classes").get<std::vector<std::string>>();
  a.data.num_classes = d.at("num_classes").get<int>();
  a.data.frames = d.at("frames").get<int>();
  // Checkpoints written before frames had a height, width and channel count of their own.
  a.data.height = d.contains("height") ? d.at("height").get<int>() : d.at("size").get<int>();
  a.data.width = d.contains("width") ? d.at("width").get<int>() : d.at("size").get<int>();
  a.data.channels = d.value("channels", 3);
  // The run's clip cache, unless this command names another.
  if (!given.cache_given && d.contains("cache") && d["cache"].is_string())
    a.data.cache = d["cache"].get<std::string>();
  a.batch_size = run.at("batch_size").get<size_t>();
  a.optimizer = run.at("optimizer").get<std::string>();
  a.patience = run.at("patience").get<int>();
  a.restore_best = run.at("restore_best").get<bool>();
  a.monitor = run.at("monitor").get<std::string>();
  a.reduce_lr_factor = run.at("reduce_lr_factor").get<double>();
  a.reduce_lr_patience = run.at("reduce_lr_patience").get<int>();
  a.test_split = run.at("test_split").get<double>();
  a.validation_split = run.at("validation_split").get<double>();
  a.shuffle_validation = run.at("shuffle_validation").get<bool>();
  a.seed = run.at("seed").get<uint64_t>();
  const nlohmann::json& aug = run.at("augmentation");
  a.augmentation = {aug.at("flip").get<bool>(), aug.at("brightness").get<double>(),
                    aug.at("contrast").get<double>(), aug.at("noise").get<double>()};
  if (!given.epochs_given) a.epochs = run.at("epochs").get<int>();
  return a;
}

// An epoch that validated has a validation accuracy (its loss may be NaN: outputs gone NaN).
bool validated(const models::EpochLog& log) { return std::isfinite(log.val_accuracy); }

std::string metrics_text(const models::EpochLog& log) {
  // As Keras prints them: "nan" whatever the NaN's sign bit.
  const auto value = [](double v) { return std::isnan(v) ? std::string("nan") : fmt::format("{:.4f}", v); };
  std::string text = fmt::format("loss: {} - accuracy: {}", value(log.loss), value(log.accuracy));
  if (validated(log)) {
    text += fmt::format(" - val_loss: {} - val_accuracy: {}", value(log.val_loss), value(log.val_accuracy));
  }
  return text;
}

}  // namespace

const char* const kWeightsArchitectureHelp =
    "The architecture a weights-only --weights file was saved from (model.save_weights, "
    "ModelCheckpoint(save_weights_only=True), Keras 3's .weights.h5): a zoo model or a JSON spec";

namespace {
// --model SPEC gives --weights FILE its architecture only where the file has none.
void require_weights_only(const std::string& weights, const std::string& model) {
  if (!io::read_weights_file(weights).model_config.empty()) {
    fail(
        "--model {} with --weights {}: the file holds its own architecture; --model is for a file of weights "
        "only: leave it out",
        model, weights);
  }
}
}  // namespace

void require_classifier(const models::LoadedModel& loaded, const std::string& weights) {
  if (loaded.model.head() != models::Head::None) return;
  fail(
      "{}: the last layer '{}' gives no class probabilities (no softmax or sigmoid, and no Dense layer whose "
      "outputs are a classifier's logits): hisvid classifies with models whose outputs are classes",
      weights, loaded.model.layers().back()->name());
}

models::LoadedModel load_model_option(const std::string& weights, const std::string& model,
                                      const std::string& option) {
  if (model.empty()) return models::load_model(weights);
  try {  // refuses a file with its own architecture
    return models::load_weights_file(weights, model);
  } catch (const Error& e) {
    fail("--model {} with {} {}: {}", model, option, weights, e.what());
  }
}

void check_same_clips(const nlohmann::json& run, const io::ClipSet& clips, const std::string& root,
                      const std::string& what) {
  const nlohmann::json& data = run.contains("data") ? run["data"] : nlohmann::json::object();
  if (!data.contains("fingerprint") || !data["fingerprint"].is_string()) return;  // an older run
  if (data["fingerprint"].get<std::string>() == io::clips_fingerprint(clips)) return;
  fail(
      "{}: the clips in {} are not those the run was trained on ({} clips then, {} now, or other files or "
      "classes): its split cannot be re-created",
      what, root, data.value("clips", 0), clips.size());
}

io::Split recreate_split(const nlohmann::json& run, size_t clips, double test_fraction,
                         double validation_fraction, uint64_t seed, bool shuffle_validation,
                         const std::string& what) {
  const io::SplitRounding rounding = split_rounding(run);
  const io::Split split =
      io::split_clips(clips, test_fraction, validation_fraction, seed, shuffle_validation, rounding);
  const nlohmann::json& recorded = run.contains("split") ? run["split"] : nlohmann::json();
  if (recorded.is_object() && recorded != split_record(split, rounding)) {
    fail(
        "{}: the run's split had {} training, {} validation and {} test clips; re-created it has {}, {} and "
        "{}",
        what, recorded.value("train", 0), recorded.value("validation", 0), recorded.value("test", 0),
        split.train.size(), split.validation.size(), split.test.size());
  }
  return split;
}

std::vector<std::string> rules_changed_for(const models::Sequential& model) {
  std::vector<std::string> changes;
  for (const layers::Layer* layer : model.layers()) {
    const layers::Layer* inner = layer;
    if (const auto* wrapper = dynamic_cast<const layers::TimeDistributed*>(layer)) inner = &wrapper->inner();
    if (const auto* bn = dynamic_cast<const layers::BatchNormalization*>(inner)) {
      if (!bn->unbiased_moving_variance()) {
        changes.push_back(
            fmt::format("BatchNormalization '{}' now updates its moving variance with the biased batch "
                        "variance, as Keras "
                        "does for its input (it took the unbiased one)",
                        layer->name()));
      }
    }
    if (const auto* r = dynamic_cast<const layers::Recurrent*>(inner)) {
      const layers::KerasVersion& v = r->keras_version();
      if (r->trains_without_dropout() && (r->dropout() > 0 || r->recurrent_dropout() > 0)) {
        changes.push_back(fmt::format("ConvLSTM2D '{}' now trains without dropout, as Keras {} did",
                                      layer->name(), v.str()));
      }
      if (!r->convolutional() && (r->dropout() > 0 || r->recurrent_dropout() > 0) &&
          r->input_dropout_masks() != InputDropout::PerGate) {
        changes.push_back(fmt::format(
            "LSTM '{}' now draws its dropout masks as Keras {} does on its path (it drew one per gate)",
            layer->name(), v.str()));
      }
    }
  }
  return changes;
}

io::SplitRounding split_rounding(const nlohmann::json& run) {
  const bool python = run.contains("split") && run["split"].is_object() &&
                      run["split"].value("rounding", std::string()) == "python";
  return python ? io::SplitRounding::Python : io::SplitRounding::Forgiving;
}

nlohmann::json split_record(const io::Split& split, io::SplitRounding rounding) {
  return {{"rounding", rounding == io::SplitRounding::Python ? "python" : "forgiving"},
          {"train", split.train.size()},
          {"validation", split.validation.size()},
          {"test", split.test.size()}};
}

void check_same_listing(const nlohmann::json& run, const DataArgs& data, const std::string& what) {
  const nlohmann::json& recorded = run.contains("data") ? run["data"] : nlohmann::json::object();
  if (!recorded.contains("fingerprint") || !recorded["fingerprint"].is_string() ||
      !recorded.contains("skipped_files") || !recorded["skipped_files"].is_array())
    return;  // an older run: checked after the decoding only
  std::set<std::string> skipped;
  for (const nlohmann::json& name : recorded["skipped_files"])
    if (name.is_string()) skipped.insert(name.get<std::string>());
  size_t files = 0;
  if (io::listing_fingerprint(data.spec(), skipped, &files) == recorded["fingerprint"].get<std::string>())
    return;
  fail(
      "{}: the video files in {} are not those the run was trained on ({} clips then, {} files now{}): a "
      "video "
      "added, removed or renamed, a file added that gives no clip, or other classes; its split cannot be "
      "re-created",
      what, data.root, recorded.value("clips", 0), files,
      skipped.empty() ? "" : fmt::format(", not counting the {} it skipped", skipped.size()));
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (const char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

std::vector<std::string> output_names(const models::LoadedModel& loaded, const std::string& weights,
                                      const std::string& model_classes, bool numbered) {
  std::vector<std::string> names = loaded.extras.class_names;
  const std::vector<std::string> given = split_names(model_classes, "--model-classes");
  if (!given.empty() && !names.empty() && given != names) {
    fail(
        "--model-classes {}: {} names its outputs itself ({}); leave --model-classes out, or give exactly "
        "those names in that order",
        model_classes, weights, fmt::format("{}", fmt::join(names, ",")));
  }
  if (!given.empty()) names = given;
  const int K = loaded.model.num_classes();
  if (names.empty() && !numbered) {
    fail("{} does not name its classes (a Keras file); give them with --model-classes A,B,...", weights);
  }
  if (names.empty()) {
    for (int k = 0; k < K; ++k) names.push_back("class_" + std::to_string(k));
  }
  if (static_cast<int>(names.size()) != K)
    fail("{} has {} outputs but {} class names", weights, K, names.size());
  return names;
}

std::vector<std::string> split_names(const std::string& text, const std::string& option) {
  std::vector<std::string> names;
  for (size_t start = 0; !text.empty();) {
    const size_t comma = text.find(',', start);
    names.push_back(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty()) fail("{} {}: name {} of {} is empty", option, text, i + 1, names.size());
    for (size_t j = 0; j < i; ++j) {
      if (names[j] == names[i]) fail("{} {}: '{}' is named twice", option, text, names[i]);
    }
  }
  return names;
}

void DataArgs::follow_model(const models::Sequential& model) {
  const Shape in = model.input_shape();
  if (in.rank() != 4) {
    fail("model '{}' takes inputs of shape {}: hisvid feeds it clips (frames, height, width, channels)",
         model.name(), in.str());
  }
  if (in[3] != 1 && in[3] != 3) {
    fail("model '{}' takes frames of {} channels: hisvid feeds 3 (BGR) or 1 (gray)", model.name(), in[3]);
  }
  const bool square = height == width;
  if (shape_given && (in[0] != frames || in[1] != height || in[2] != width)) {
    fail("model '{}' takes clips of {} frames of {}x{}, but --frames / --size ask for {} frames of {}{}",
         model.name(), in[0], in[1], in[2], frames, height, square ? fmt::format("x{}", width) : "");
  }
  frames = static_cast<int>(in[0]);
  height = static_cast<int>(in[1]);
  width = static_cast<int>(in[2]);
  channels = static_cast<int>(in[3]);
}

io::DatasetSpec DataArgs::spec(Communicator* comm) const {
  io::DatasetSpec spec;
  spec.root = root;
  spec.classes = classes;
  spec.num_classes = num_classes;
  spec.min_classes = min_classes;
  spec.extraction = extraction();
  spec.cache_path = cache;
  spec.workers = workers;
  spec.stream = stream;
  spec.communicator = comm;
  return spec;
}

io::ClipSet load_data(const DataArgs& args, Console& console, Communicator* comm) {
  const io::DatasetSpec spec = args.spec(comm);
  const std::string missing = io::synthetic_dataset_missing(args.root, args.classes);
  if (!missing.empty()) console.note(fmt::format("warning: {}: {}", args.root, missing));
  double started = -1.0;
  const auto t0 = std::chrono::steady_clock::now();
  io::ClipSet clips = io::load_clips(spec, [&](const io::Progress& p) {
    // Thrown here, the error stops the decoding workers; a clip cache is written only when whole.
    if (interrupted()) fail("interrupted while decoding the videos: nothing was saved");
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (started < 0) started = seconds;
    console.progress(static_cast<int>(p.done), static_cast<int>(p.total), seconds, "decoding " + p.current);
    if (p.done == p.total)
      console.finish(static_cast<int>(p.total), seconds, 1000.0 * seconds / p.total, "decoded");
  });
  if (!clips.cache_note.empty()) console.note(clips.cache_note);
  for (const std::string& note : clips.notes) console.note("note: " + note);
  console.note(fmt::format("{} clips of {} class{} from {}{}", clips.size(), clips.class_names.size(),
                           clips.class_names.size() == 1 ? "" : "es", args.root,
                           clips.streamed()   ? " (streamed from the clip cache " + clips.cache_file + ")"
                           : clips.from_cache ? " (read from the clip cache " + clips.cache_file + ")"
                                              : ""));
  for (const std::string& name : clips.class_names) {
    if (name.find(',') != std::string::npos) {
      console.note(fmt::format(
          "warning: class '{}' has a comma in its name: --classes and --model-classes cannot name it (rename "
          "its folder)",
          name));
    }
  }
  if (!clips.skipped.empty()) {
    console.note(fmt::format("skipped {} files:", clips.skipped.size()));
    for (const io::SkippedFile& s : clips.skipped) console.note("  " + s.path + ": " + s.reason);
  }
  return clips;
}

void write_reports(const std::string& out_dir, const std::string& title, const models::Evaluation& evaluation,
                   const models::ClassificationReport& report, const std::vector<models::EpochLog>& history) {
  std::error_code error;
  if (fs::exists(out_dir, error) && !fs::is_directory(out_dir, error)) {
    fail("--out {}: is a file, not a directory (the reports are written into a directory)", out_dir);
  }
  fs::create_directories(out_dir, error);
  if (error) fail("--out {}: cannot create the directory: {}", out_dir, error.message());
  models::write_text_atomically(
      out_dir + "/report.txt",
      fmt::format("{}\nloss: {:.4f} - accuracy: {:.4f} ({} clips)\n\n{}", title, evaluation.loss,
                  evaluation.accuracy, report.total, report.text()));
  nlohmann::json j = report.to_json();
  j["loss"] = evaluation.loss;
  j["ms_per_step"] = evaluation.ms_per_step;
  models::write_text_atomically(out_dir + "/report.json", j.dump(2) + "\n");
  std::string csv = "video,true_class,predicted_class";
  for (const std::string& name : report.class_names) csv += "," + csv_field("p_" + name);
  csv += "\n";
  for (size_t i = 0; i < evaluation.paths.size(); ++i) {
    csv += csv_field(evaluation.paths[i]) + "," + csv_field(report.class_names[evaluation.truth[i]]) + "," +
           csv_field(report.class_names[evaluation.predicted[i]]);
    for (const float p : evaluation.probs[i]) csv += fmt::format(",{:.6f}", p);
    csv += "\n";
  }
  models::write_text_atomically(out_dir + "/predictions.csv", csv);
  io::write_confusion_png(out_dir + "/confusion.png", report.confusion, report.class_names, title);
  if (!history.empty()) {
    std::vector<double> loss, val_loss, acc, val_acc;
    for (const models::EpochLog& h : history) {
      loss.push_back(h.loss);
      val_loss.push_back(h.val_loss);
      acc.push_back(h.accuracy);
      val_acc.push_back(h.val_accuracy);
    }
    io::write_curves_png(out_dir + "/curves.png", {{"training", loss}, {"validation", val_loss}},
                         {{"training", acc}, {"validation", val_acc}}, title);
  }
}

// What a command line may not combine: --resume continues a run as it was defined.
void check_combinations(const TrainArgs& given) {
  if (!given.resume.empty()) {
    const std::string checkpoint = resume_checkpoint(given.resume);
    for (const std::string& option : given.settings_given) {
      if (option == "--overwrite") {
        fail(
            "--overwrite with --resume: a resumed run goes on in its own directory, replacing only its own "
            "files");
      }
      fail(
          "{} with --resume: a resumed run keeps the settings it started with; only --epochs, --cache, "
          "--data (where the same videos are now), --device, --workers, --stream, --eval-batch-size, "
          "--cuda-graphs and --tf32 may change (to change {}, start a new run from the checkpoint: --weights "
          "{}{})",
          option, option, checkpoint, option == "--model" ? ", which keeps the run's architecture" : "");
    }
  }
}

namespace {

// Whether the run's callbacks watch a validation quantity: EarlyStopping (unless --patience -1)
// or ReduceLROnPlateau on --monitor val_*.
bool monitors_validation(const TrainArgs& args) {
  return args.monitor.rfind("val_", 0) == 0 && (args.patience >= 0 || args.reduce_lr_factor > 0);
}

std::string listed(const std::vector<std::string>& names) {
  return fmt::format("{}", fmt::join(names, ", "));
}

// What can be refused before the videos are decoded: the callbacks against the split, and the
// data's classes (`data`, found by listing the class folders) against those of the model trained on.
void check_before_decoding(const TrainArgs& args, bool resuming, const models::Sequential& model,
                           const std::vector<std::string>& model_classes,
                           const std::vector<std::string>& data, Console& console) {
  if (monitors_validation(args) && args.validation_split == 0) {
    fail(
        "--validation-split 0 holds no validation clips out, but {} monitors {}: train without it "
        "(--patience -1{}) or monitor the training loss (--monitor loss)",
        args.patience >= 0 ? "EarlyStopping" : "ReduceLROnPlateau", args.monitor,
        args.reduce_lr_factor > 0 ? ", no --reduce-lr-factor" : "");
  }
  if (!resuming && args.init_weights.empty()) return;
  if (resuming) {
    if (model_classes != data) {
      fail("--resume: the checkpoint was trained on the classes {}; {} now gives {}", listed(model_classes),
           args.data.root, listed(data));
    }
    return;
  }
  const std::string& weights = args.init_weights;
  if (static_cast<size_t>(model.num_classes()) != data.size()) {
    fail("--weights {}: the model has {} output classes but the data has {} ({})", weights,
         model.num_classes(), data.size(), listed(data));
  }
  if (model_classes.empty()) {
    console.note(
        fmt::format("note: {} names no classes (a Keras file): its outputs are trained as the data's classes "
                    "in this order: "
                    "{} (--classes sets another)",
                    weights, listed(data)));
    return;
  }
  if (model_classes == data) return;
  std::vector<std::string> sorted_model = model_classes, sorted_data = data;
  std::sort(sorted_model.begin(), sorted_model.end());
  std::sort(sorted_data.begin(), sorted_data.end());
  if (sorted_model == sorted_data) {
    fail(
        "--weights {}: the model's outputs are the classes {} in that order, the data's {}: add --classes {}",
        weights, listed(model_classes), listed(data), fmt::format("{}", fmt::join(model_classes, ",")));
  }
  fail("--weights {}: the model was trained on the classes {}, the data has {}", weights,
       listed(model_classes), listed(data));
}

}  // namespace

TrainOutcome run_training(const TrainArgs& given, Console& console) {
  install_interrupt_handler();
  check_combinations(given);
  TrainArgs args = given;
  models::LoadedModel checkpoint;
  bool resuming = false;
  const auto note_restored = [&](const std::string& dir) {
    console.note(fmt::format(
        "note: {}: the files of an earlier run, set aside by a run that was killed before it saved its "
        "first epoch, are back in place",
        dir));
  };
  if (!given.resume.empty()) {
    const std::string path = resume_checkpoint(given.resume);
    const std::string dir =
        fs::path(path).parent_path().empty() ? "." : fs::path(path).parent_path().string();
    // Rank 0 alone (a data-parallel run's every rank reads the checkpoint next, after it).
    if (world().rank() == 0 && restore_set_aside_run(dir)) note_restored(dir);
    world().barrier();
    checkpoint = models::load_model(path);
    const nlohmann::json& state = checkpoint.extras.training_state;
    if (!state.is_object() || !state.contains("run") || !state.contains("epoch") ||
        !state.at("epoch").is_number_integer()) {
      fail("--resume {}: this model file holds no training state to resume", path);
    }
    if (!checkpoint.extras.optimizer) fail("--resume {}: this model file holds no optimizer state", path);
    try {
      args = args_of_checkpoint(checkpoint.extras.training_state["run"], given);
    } catch (const nlohmann::json::exception& e) {
      fail("--resume {}: the record of its run is malformed ({})", path, e.what());
    }
    args.out_dir = fs::path(path).parent_path().string();
    if (args.out_dir.empty()) args.out_dir = ".";  // --resume last.h5 inside the run directory
    std::error_code missing;
    if (given.data.root.empty() && !fs::exists(args.data.root, missing)) {
      fail(
          "--resume {}: the run's videos were in {}, which no longer exists: name where they are now with "
          "--data DIR",
          path, args.data.root);
    }
    // From another checkpoint than the run's last.h5 (best.h5, say): refused where the run went on
    // past it, since resuming would replace the later epochs' last.h5, history and model.
    const int epoch = state.at("epoch").get<int>();
    const fs::path last = fs::path(args.out_dir) / "last.h5";
    std::error_code error;
    if (fs::exists(last, error) && !fs::equivalent(path, last, error)) {
      const nlohmann::json later = models::load_model(last.string()).extras.training_state;
      const int last_epoch =
          later.is_object() && later.contains("epoch") && later["epoch"].is_number_integer()
              ? later["epoch"].get<int>()
              : 0;
      if (last_epoch > epoch) {
        fail(
            "--resume {}: holds epoch {} of the run in {}, which went on to epoch {} ({}); resuming here "
            "would "
            "replace epochs {}-{}: resume {} to continue the run, or train a new one from this file with "
            "--weights {} --out NEW_DIR",
            path, epoch, args.out_dir, last_epoch, last.string(), epoch + 1, last_epoch, args.out_dir, path);
      }
    }
    resuming = true;
    const int done = checkpoint.extras.training_state["epoch"].get<int>();
    console.note(fmt::format("resuming {} from {} after epoch {}", args.model, path, done));
    if (args.epochs <= done) {
      console.note(fmt::format(
          "note: --epochs {} asks for no more than the {} epochs done: nothing is trained, the model and its "
          "reports are written again (give --epochs above {} to train on)",
          args.epochs, done, done));
    }
    const nlohmann::json& run = checkpoint.extras.training_state["run"];
    const int ranks_then = run.is_object() ? run.value("ranks", 1) : 1;
    if (ranks_then != world().size()) {
      console.note(fmt::format(
          "note: the run trained with {} process{}, this resume has {}: every global batch is the same, but "
          "its dropout and augmentation draws are split differently, so the numbers differ from an "
          "uninterrupted run",
          ranks_then, ranks_then == 1 ? "" : "es", world().size()));
    }
  }
  if (args.out_dir.empty()) fail("train: no output directory (--out)");
  (void)device_option(args.device);  // before the run directory and the data
  if (args.epochs < 1) fail("train: --epochs must be >= 1, got {}", args.epochs);
  // A data-parallel run (mpirun): rank 0 owns the run directory and writes every file.
  Communicator& comm = world();
  const bool lead = comm.rank() == 0;
  if (args.cuda_graphs) {  // refused before the run directory is made
    if (comm.size() > 1) {
      fail("--cuda-graphs trains in one process: with {} ranks every step's gradients are summed on the host",
           comm.size());
    }
    cuda_device_for("--cuda-graphs", args.device);
  }
  if (args.tf32) tf32_on(args.device, false);  // refused before the run directory is made
  // A data folder that is missing, or holds no such classes, is named before --out is made.
  std::vector<std::string> data_classes;
  try {
    data_classes = io::dataset_classes(args.data.spec());
  } catch (const Error& e) {
    fail("--data {}", e.what());
  }
  if (!args.init_weights.empty() && args.model_given) require_weights_only(args.init_weights, args.model);
  // The model before --out is made: a --model that names no zoo model nor a readable spec (a typo),
  // a --weights file that cannot be read, or a spec that cannot be trained as a classifier (no
  // final Dense layer to take the data's classes, or no softmax or sigmoid on it) is refused
  // before the run directory and the videos. Its input shape says how to extract the clips; its
  // class count is set from the data afterwards.
  models::Sequential model;
  std::unique_ptr<Optimizer> optimizer;
  std::vector<std::string> model_classes;
  if (resuming) {
    model = std::move(checkpoint.model);
    optimizer = std::move(checkpoint.extras.optimizer);
    model_classes = checkpoint.extras.class_names;
  } else if (!args.init_weights.empty()) {
    models::LoadedModel loaded = load_model_option(args.init_weights, args.model_given ? args.model : "");
    for (const std::string& warning : loaded.extras.warnings) console.note("warning: " + warning);
    if (!loaded.extras.loss_options_not_applied.empty()) {
      console.note(
          fmt::format("warning: {} was compiled with a loss using {}, which hisvid does not implement: it "
                      "trains with plain "
                      "cross-entropy, the mean over each batch",
                      args.init_weights, loaded.extras.loss_options_not_applied));
    }
    model = std::move(loaded.model);
    model_classes = loaded.extras.class_names;
    // Keras's fit after load_model continues with the file's optimizer state; so does hisvid,
    // unless the command line chooses an optimizer.
    if (loaded.extras.optimizer && !args.optimizer_given) {
      optimizer = std::move(loaded.extras.optimizer);
      console.note(fmt::format("continuing with the {} state of {} (step {})", optimizer->name(),
                               args.init_weights, optimizer->iterations()));
    } else if (!args.optimizer_given) {
      // A file without an optimizer, or with one hisvid cannot continue (warned above): say
      // which one trains, whatever the file's was.
      console.note(fmt::format(
          "note: {} holds no optimizer state hisvid continues with: training starts a fresh {} (the default; "
          "--optimizer chooses)",
          args.init_weights, args.optimizer));
    }
  } else {
    model = models::load_spec(args.model);
    try {
      (void)model.num_classes();
    } catch (const Error& e) {
      fail("--model {}: {} (the data's classes are set on it)", args.model, e.what());
    }
    if (model.head() == models::Head::None) {
      fail(
          "--model {}: the final Dense layer '{}' has no softmax or sigmoid: a classifier trains on "
          "Dense(..., activation='softmax'), or Dense(1, activation='sigmoid') for two classes",
          args.model, model.layers().back()->name());
    }
    if (!model.has_input_shape()) {
      model.set_input_shape(Shape{args.data.frames, args.data.height, args.data.width, args.data.channels});
    }
  }
  if (model.head() == models::Head::Sigmoid && !model.binary()) {  // found before any video is decoded
    fail(
        "{}: a sigmoid head trains as a binary classifier of one unit, this one has {}: Dense(1, "
        "activation='sigmoid') for two classes, or Dense(K, activation='softmax')",
        args.init_weights.empty() ? "--model " + args.model : "--weights " + args.init_weights,
        model.num_classes());
  }
  args.data.follow_model(model);  // a model whose input shape the settings contradict: refused here
  check_before_decoding(args, resuming, model, model_classes, data_classes, console);
  require_outside_data(args.out_dir, args.data.root, "--out");
  std::optional<RunDirectory> run_directory;
  if (lead)
    run_directory.emplace(args.out_dir, !resuming, args.overwrite,
                          std::vector<std::string>{args.init_weights, args.data.cache});
  if (run_directory && run_directory->restored_earlier_run()) note_restored(args.out_dir);
  comm.barrier();
  Device device = device_option(args.device);
  if (comm.size() > 1 && device.is_cuda() && (args.device == "auto" || args.device == "cuda")) {
    device = Device::cuda(comm.local_rank());  // one GPU per rank of a machine
  }
  if (args.tf32) cuda_set_allow_tf32(device, true);

  if (resuming) check_same_listing(checkpoint.extras.training_state["run"], args.data, "--resume");
  const io::ClipSet clips = load_data(args.data, console, &comm);
  if (comm.size() > 1) {
    console.note(fmt::format("data parallel: {}; each rank takes 1/{} of every batch of {}", comm.describe(),
                             comm.size(), args.batch_size));
  }
  if (resuming) check_same_clips(checkpoint.extras.training_state["run"], clips, args.data.root, "--resume");
  // A resumed run's split as it made it (its rounding, its counts checked); a new one rounds as
  // Python does.
  const nlohmann::json& resumed_run =
      resuming ? checkpoint.extras.training_state["run"] : nlohmann::json::object();
  const io::SplitRounding rounding = resuming ? split_rounding(resumed_run) : io::SplitRounding::Python;
  const io::Split split =
      resuming ? recreate_split(resumed_run, clips.size(), args.test_split, args.validation_split, args.seed,
                                args.shuffle_validation, "--resume")
               : io::split_clips(clips.size(), args.test_split, args.validation_split, args.seed,
                                 args.shuffle_validation);
  console.note(fmt::format("split: {} training, {} validation, {} test clips (seed {})", split.train.size(),
                           split.validation.size(), split.test.size(), args.seed));
  if (monitors_validation(args) && split.validation.empty()) {
    fail(
        "{} clips leave {} to train on after the test part (--test-split {}): too few to hold validation "
        "clips "
        "out of (--validation-split {}); add clips, lower --test-split, or train without validation "
        "(--validation-split 0 --patience -1)",
        clips.size(), split.train.size() + split.validation.size(), args.test_split, args.validation_split);
  }
  const int K = static_cast<int>(clips.class_names.size());
  if (!model.built()) {
    // The final Dense layer takes the data's class count; a spec file that declared another is
    // told so (the zoo's models take any).
    const std::vector<std::string> zoo = models::zoo_names();
    if (std::find(zoo.begin(), zoo.end(), args.model) == zoo.end()) {
      int declared = 0;
      try {
        declared = model.num_classes();
      } catch (const Error&) {  // no final Dense layer: set_num_classes names it next
      }
      if (declared > 0 && declared != K) {
        console.note(
            fmt::format("note: the final Dense layer of {} declares {} class{}; the data has {}, so it is "
                        "built with {}",
                        args.model, declared, declared == 1 ? "" : "es", K, K));
      }
    }
    model.set_num_classes(K);
    model.build(args.seed);
  }
  if (model.binary()) {
    console.note(
        fmt::format("binary classifier: its output is the probability of the positive class '{}' (binary "
                    "cross-entropy; accuracy at p > 0.5)",
                    clips.class_names[1]));
  }
  model.to(device);
  if (!optimizer) {
    std::map<std::string, double> hyper;
    if (args.lr_given) hyper["learning_rate"] = args.learning_rate;
    if (args.rmsprop_epsilon_inside) hyper["epsilon_inside_sqrt"] = 1;
    optimizer = make_optimizer(args.optimizer, hyper);
  }

  models::FitOptions options;
  options.epochs = args.epochs;
  options.batch_size = args.batch_size;
  options.augmentation = args.augmentation;
  options.cuda_graphs = args.cuda_graphs;
  if (args.patience >= 0)
    options.early_stopping = models::EarlyStoppingConfig{args.monitor, args.patience, 0.0, args.restore_best};
  if (args.reduce_lr_factor > 0) {
    models::ReduceLROnPlateauConfig reduce;
    reduce.monitor = args.monitor;
    reduce.factor = args.reduce_lr_factor;
    reduce.patience = args.reduce_lr_patience;
    options.reduce_lr = reduce;
  }
  options.checkpoint_dir = args.out_dir;
  options.class_names = clips.class_names;
  options.run_info = to_json(args);
  options.run_info["data"]["clips"] = clips.size();  // what the split was made from
  options.run_info["split"] = split_record(split, rounding);
  options.run_info["data"]["fingerprint"] = io::clips_fingerprint(clips);
  // The files that gave no clip, left out of the listing --resume checks before decoding.
  nlohmann::json& skipped_files = options.run_info["data"]["skipped_files"] = nlohmann::json::array();
  for (const io::SkippedFile& s : clips.skipped) skipped_files.push_back(io::class_and_file(s.path));
  options.run_info["ranks"] = comm.size();  // a resume with another count is told it differs
  options.run_info["rules"] = kTrainingRules;
  options.communicator = &comm;
  models::Trainer trainer(model, *optimizer, clips, split, options, args.seed);
  if (resuming) {
    try {
      for (const std::string& note : trainer.resume(checkpoint.extras.training_state)) console.note(note);
    } catch (const nlohmann::json::exception& e) {
      fail("--resume {}: its training state is malformed ({})", args.out_dir, e.what());
    }
    if (!resumed_run.contains("rules")) {
      for (const std::string& change : rules_changed_for(model))
        console.note(fmt::format("note: this run began under hisvid's earlier rules: {}", change));
    }
  }

  const int first_epoch = resuming ? checkpoint.extras.training_state["epoch"].get<int>() + 1 : 1;
  auto epoch_start = std::chrono::steady_clock::now();
  models::FitProgress callbacks;
  callbacks.on_epoch_begin = [&](int epoch) {
    console.line(fmt::format("Epoch {}/{}", epoch, args.epochs));
    epoch_start = std::chrono::steady_clock::now();
  };
  callbacks.on_batch = [&](int, int step, int steps, double loss, double accuracy) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
    console.progress(step, steps, seconds, fmt::format("loss: {:.4f} - accuracy: {:.4f}", loss, accuracy));
  };
  std::vector<models::EpochLog> history;
  callbacks.on_epoch = [&](const models::EpochLog& log) {
    // The epoch's checkpoints follow: an earlier run that --overwrite replaces is set aside now,
    // and deleted once they are saved (on_epoch_saved); a failure in between moves it back.
    if (run_directory) run_directory->set_aside_earlier_run();
    console.finish(log.steps, log.seconds, log.ms_per_step, metrics_text(log));
    history.push_back(log);
  };
  callbacks.on_epoch_saved = [&](const models::EpochLog&) {
    if (run_directory) run_directory->drop_earlier_run();
  };
  callbacks.on_message = [&](const std::string& text) { console.line(text); };
  callbacks.should_stop = [] { return interrupted(); };
  // Said where a run ends without a saved epoch: an earlier run that --overwrite would replace
  // is as it was ("" when there is none).
  const auto earlier_kept = [&] {
    return run_directory && run_directory->holds_earlier_run()
               ? fmt::format("the earlier run in {} is as it was", args.out_dir)
               : std::string();
  };
  models::FitResult fit;
  try {
    fit = trainer.fit(callbacks);
  } catch (const Error& e) {
    // A save that failed (a full disk): say what the run directory holds now.
    if (!lead) throw;
    std::string holds = earlier_kept();
    if (holds.empty()) {
      const std::string last = args.out_dir + "/last.h5";
      try {
        const nlohmann::json state = models::load_model(last).extras.training_state;
        holds = fmt::format("{} holds epoch {}; once that is mended, go on with: hisvid train --resume {}",
                            last, state.at("epoch").get<int>(), args.out_dir);
      } catch (const std::exception&) {
        holds = "no epoch of this run is saved";
      }
    }
    fail("{} ({})", e.what(), holds);
  }
  const int done = static_cast<int>(fit.history.size());
  const std::string kept = earlier_kept().empty() ? "" : " (" + earlier_kept() + ")";
  if (fit.interrupted) {
    if (done == 0) fail("interrupted during epoch 1: no epoch was completed, nothing was saved{}", kept);
    fail(
        "interrupted during epoch {}: the last complete epoch ({}) is saved in {}/last.h5; resume with: "
        "hisvid "
        "train --resume {}",
        done + 1, done, args.out_dir, args.out_dir);
  }
  if (fit.non_finite_loss) {
    // The epochs before the failure may have gone bad already: outputs NaN on the validation
    // clips while the training loss was still a number.
    int good = done;
    while (good > 0 && validated(fit.history[static_cast<size_t>(good) - 1]) &&
           !std::isfinite(fit.history[static_cast<size_t>(good) - 1].val_loss)) {
      --good;
    }
    std::string saved = "no epoch was completed, nothing was saved" + kept;
    if (done > 0 && good == done) {
      saved = fmt::format("the last good epoch ({}) is saved in {}/last.h5", done, args.out_dir);
    } else if (good > 0 && fit.best_file_epoch > 0 && fit.best_file_epoch <= good) {
      saved = fmt::format(
          "epochs {}-{} already gave a NaN or infinite validation loss; {}/best.h5 holds epoch {}, from "
          "before them",
          good + 1, done, args.out_dir, fit.best_file_epoch);
    } else if (good > 0) {
      saved = fmt::format(
          "epochs {}-{} already gave a NaN or infinite validation loss: no saved file holds an earlier epoch",
          good + 1, done);
    } else if (done > 0) {
      saved =
          fmt::format("every epoch gave a NaN or infinite validation loss: no saved epoch is usable{}", kept);
    }
    fail(
        "training stopped: the loss became NaN or infinite at epoch {} batch {} (a learning rate too high?); "
        "{}",
        fit.failed_epoch, fit.failed_step, saved);
  }
  TrainOutcome outcome;
  if (!lead) return outcome;  // rank 0 saves and reports
  models::save_model(args.out_dir + "/model.h5", model, clips.class_names, optimizer.get(),
                     trainer.training_state());
  // Reports of an earlier session (a resumed run) describe the model just replaced: they go
  // before the new ones are computed, so that none is left beside a model it does not describe.
  std::vector<std::string> reports = report_files();
  reports.push_back("curves.png");
  for (const std::string& file : reports) {
    std::error_code ignored;
    fs::remove(fs::path(args.out_dir) / file, ignored);
  }

  outcome.model_name = model.name();
  outcome.params = model.count_params();
  outcome.fit = fit;
  outcome.out_dir = args.out_dir;
  std::vector<double> step_times;
  for (const models::EpochLog& log : fit.history) {
    if (log.epoch >= first_epoch) step_times.push_back(log.ms_per_step);
  }
  outcome.train_ms_per_step = bench::median(step_times);  // 0 when no epoch ran here
  if (split.test.empty()) {
    console.note(fmt::format(
        "no test clips (--test-split 0): {}/ holds the model and history.csv, but no report, predictions or "
        "plots",
        args.out_dir));
  }
  if (!split.test.empty()) {
    std::vector<int> identity(static_cast<size_t>(K));
    for (int k = 0; k < K; ++k) identity[k] = k;
    try {
      outcome.test = models::evaluate(model, clips, split.test, args.eval_batch_size, identity, false,
                                      [] { return interrupted(); });
    } catch (const Error&) {
      if (!interrupted()) throw;
      fail(
          "interrupted during the test evaluation: the trained model is saved in {}/model.h5; evaluate it "
          "with: "
          "hisvid evaluate --weights {}/model.h5 --split test",
          args.out_dir, args.out_dir);
    }
    try {
      models::require_finite_outputs(outcome.test.probs, "the trained model");
    } catch (const Error& e) {
      fail("{} on the test clips; it is saved in {}/model.h5, no report is written", e.what(), args.out_dir);
    }
    outcome.report =
        models::classification_report(outcome.test.truth, outcome.test.predicted, clips.class_names);
    console.finish(outcome.test.steps, outcome.test.ms_per_step * outcome.test.steps / 1000.0,
                   outcome.test.ms_per_step,
                   fmt::format("loss: {:.4f} - accuracy: {:.4f}", outcome.test.loss, outcome.test.accuracy));
    write_reports(args.out_dir, fmt::format("{} on {} test clips", model.name(), split.test.size()),
                  outcome.test, outcome.report, fit.history);
    console.line(outcome.report.text());
  }
  return outcome;
}

Device device_option(const std::string& device_arg) {
  Device device = Device::cpu();
  try {
    device = parse_device(device_arg);
  } catch (const Error& e) {
    fail("--device {}: {}", device_arg, e.what());
  }
  if (device.is_cuda() && !cuda_available()) fail("--device {}: {}", device_arg, cuda_unavailable_reason());
  return device;
}

Device cuda_device_for(const char* option, const std::string& device_arg) {
  const Device on = device_option(device_arg);
  if (!on.is_cuda()) {
    fail("{} needs a CUDA device, not --device {}{}", option, device_arg,
         device_arg == on.str() ? "" : fmt::format(" ({} here)", on.str()));
  }
  return on;
}

void tf32_on(const std::string& device_arg, bool enable) {
  const Device on = cuda_device_for("--tf32", device_arg);
  if (enable) cuda_set_allow_tf32(on, true);
}

}  // namespace hisvid::tools
