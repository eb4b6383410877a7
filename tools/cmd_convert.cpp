// hisvid convert: a model file from one format to the other — Keras's .h5 layout or the native
// .keras archive (chosen by the output's extension, as Keras's model.save does); weights,
// optimizer state, class names and training state carried over.
#include <fmt/format.h>

#include <cctype>
#include <filesystem>
#include <iostream>
#include <memory>

#include "engine/error.h"
#include "io/atomic_file.h"
#include "models/model_file.h"
#include "tools/commands.h"
#include "tools/outputs.h"
#include "tools/training.h"
#include "tools/validators.h"

namespace hisvid::tools {

void add_convert_command(CLI::App& app) {
  struct Args {
    std::string input, output, model;
    bool overwrite = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("convert", "Rewrite a model file as .keras (Keras 3's format) or .h5");
  cmd->add_option("input", args->input, "Model file (.h5 or .keras, told apart by content)")->required();
  cmd->add_option("output", args->output,
                  "Output file: a name ending in .keras writes the .keras format, .h5 or .hdf5 the HDF5 one")
      ->required();
  cmd->add_option(
         "--model", args->model,
         "The architecture a weights-only input was saved from (a zoo model or a JSON spec): the output "
         "is then a whole model file")
      ->check(non_empty());
  cmd->add_flag("--overwrite", args->overwrite, "Replace the output file when it exists");
  cmd->callback([args] {
    namespace fs = std::filesystem;
    std::error_code error;
    if (models::model_file_ending(args->output).empty()) {
      fail(
          "convert: the output {}: name it .keras (Keras 3's format) or .h5 / .hdf5 (HDF5, Keras 2's), as "
          "Keras "
          "tells the formats apart",
          args->output);
    }
    require_writable_output(args->output, "convert: the output");
    if (fs::exists(args->output, error)) {
      if (fs::equivalent(args->input, args->output, error)) {
        fail("convert: the output {} is the input file itself", args->output);
      }
      if (!args->overwrite) fail("convert: {} exists (add --overwrite to replace it)", args->output);
    } else if (!args->overwrite) {
      io::expect_new_file(args->output);  // one another command makes meanwhile is kept
    }
    const models::LoadedModel loaded = load_model_option(args->input, args->model, "the input");
    for (const std::string& warning : loaded.extras.warnings)
      std::cerr << "hisvid: warning: " << warning << "\n";
    models::save_model(args->output, loaded.model, loaded.extras.class_names, loaded.extras.optimizer.get(),
                       loaded.extras.training_state);
    std::cerr << fmt::format("hisvid: wrote {} ({} format, Keras {})\n", args->output,
                             models::is_keras_archive_path(args->output) ? ".keras" : ".h5",
                             models::load_model(args->output).keras_version);
  });
}

}  // namespace hisvid::tools
