// hisvid — the command-line tool. Each subcommand lives in its own tools/cmd_*.cpp; this file
// parses the command line and turns any error into one message on stderr and exit status 1.
#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>

#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"hisvid: video classification with the seeds' LRCN and ConvLSTM, from scratch in C++/CUDA"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "hisvid 0.1.0");
  hisvid::tools::add_train_command(app);
  hisvid::tools::add_evaluate_command(app);
  hisvid::tools::add_predict_command(app);
  hisvid::tools::add_explain_command(app);
  hisvid::tools::add_summary_command(app);
  hisvid::tools::add_convert_command(app);
  hisvid::tools::add_make_dataset_command(app);
  hisvid::tools::add_demo_command(app);
  hisvid::tools::add_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hisvid: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
