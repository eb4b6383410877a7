// hisvid summary --model lrcn --classes 4 | --model spec.json | --weights model.h5
#include <iostream>
#include <memory>
#include <string>

#include "engine/error.h"
#include "io/keras_h5.h"
#include "models/model_file.h"
#include "models/zoo.h"
#include "tools/commands.h"
#include "tools/training.h"
#include "tools/validators.h"

namespace hisvid::tools {

void add_summary_command(CLI::App& app) {
  struct Args {
    std::string model, weights;
    int classes = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("summary", "Print a model's layers, output shapes and parameter counts");
  cmd->add_option(
      "--model", args->model, "Zoo model name (" + [] {
        std::string names;
        for (const std::string& n : models::zoo_names()) names += (names.empty() ? "" : ", ") + n;
        return names;
      }() + ") or a Keras-schema JSON spec file");
  cmd->add_option("--classes", args->classes, "Number of classes (units of the final Dense layer)")
      ->check(integer_in(2, 100000));
  cmd->add_option(
         "--weights", args->weights,
         "A model file (.h5 or .keras, hisvid's or Keras's); alone, its own architecture; with --model, "
         "its weights (a weights-only file too) in that architecture")
      ->check(non_empty());
  cmd->callback([args] {
    if (args->model.empty() && args->weights.empty()) fail("summary: give --model, --weights, or both");
    if (args->model.empty()) {
      if (args->classes > 0) fail("summary: --classes applies to --model; a model file has its own classes");
      const models::LoadedModel loaded = models::load_model(args->weights);
      for (const std::string& warning : loaded.extras.warnings) std::cerr << "warning: " << warning << "\n";
      std::cout << loaded.model.summary();
      return;
    }
    if (!args->weights.empty()) {
      const io::KerasModelFile file = io::read_weights_file(args->weights);
      // Weights only: the architecture takes the file's class count and Keras version.
      if (file.model_config.empty() && args->classes == 0) {
        const models::LoadedModel loaded = load_model_option(args->weights, args->model);
        for (const std::string& warning : loaded.extras.warnings) std::cerr << "warning: " << warning << "\n";
        std::cout << loaded.model.summary();
        return;
      }
      models::Sequential model = models::load_spec(args->model, args->classes);
      model.build(0);
      models::load_weights(model, file, args->weights);
      std::cout << model.summary();
      return;
    }
    models::Sequential model = models::load_spec(args->model, args->classes);
    model.build(0);
    std::cout << model.summary();
  });
}

}  // namespace hisvid::tools
