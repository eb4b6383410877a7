// hisvid — the command-line tool. Each subcommand lives in its own tools/cmd_*.cpp; this file
// parses the command line and turns any error into one message on stderr and exit status 1.
#include <CLI/CLI.hpp>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <new>
#include <string>

#include "engine/build_info.h"
#include "engine/distributed.h"
#include "tools/commands.h"
#include "tools/console.h"

namespace {

// Standard output written to a full disk or /dev/full loses the text without a word unless
// checked: the data is in the stream's buffers until the flush at exit.
int check_standard_output() {
  errno = 0;
  std::cout.flush();
  if (!std::cout || std::fflush(stdout) != 0 || std::ferror(stdout)) {
    const int error = errno;
    std::fprintf(
        stderr, "hisvid: error: writing standard output failed: %s\n",
        error != 0 ? std::strerror(error) : "some of it was not written (a full disk or a closed pipe?)");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) would kill the process in the middle of a write with no word;
  // ignored, the write fails with EFBIG and hisvid says which file was not written.
  std::signal(SIGXFSZ, SIG_IGN);
  hisvid::tools::install_end_on_signal();
  CLI::App app{"hisvid: video classification with the seeds' LRCN and ConvLSTM, from scratch in C++/CUDA"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("hisvid 0.1.0 (commit ") + hisvid::build_commit() + ")");
  hisvid::tools::add_train_command(app);
  hisvid::tools::add_evaluate_command(app);
  hisvid::tools::add_predict_command(app);
  hisvid::tools::add_explain_command(app);
  hisvid::tools::add_summary_command(app);
  hisvid::tools::add_convert_command(app);
  hisvid::tools::add_make_dataset_command(app);
  hisvid::tools::add_demo_command(app);
  hisvid::tools::add_bench_command(app);
  // Under an MPI launcher every rank runs this: `train` is data-parallel (tools/training.cpp);
  // nothing else is, and running it once per rank would have the ranks write the same files.
  const bool ranks = hisvid::started_by_mpi_launcher();
  if (ranks) {
    std::string command;
    for (int i = 1; i < argc && command.empty(); ++i) {
      if (argv[i][0] != '-') command = argv[i];
    }
    // The launcher's process count where it says (Open MPI, PMI): one process is no crowd.
    const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
    if (size == nullptr) size = std::getenv("PMI_SIZE");
    const bool one_process = size != nullptr && std::string(size) == "1";
    if (command != "train" && !one_process) {
      const std::string what = command.empty() ? "other commands" : "`hisvid " + command + "`";
      std::fprintf(
          stderr,
          "hisvid: error: started by an MPI launcher with several processes: only `hisvid train` runs "
          "across processes (data parallel); run %s without mpirun\n",
          what.c_str());
      return 1;
    }
    try {
      hisvid::tools::Console::set_quiet(hisvid::world().rank() != 0);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "hisvid: error: %s\n", e.what());
      return 1;
    }
  }
  // A first word that is no command (CLI11 would say only that a subcommand is required).
  if (argc > 1 && argv[1][0] != '-') {
    std::string known;
    bool found = false;
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
      known += (known.empty() ? "" : ", ") + sub->get_name();
      found = found || sub->get_name() == argv[1];
    }
    if (!found) {
      std::fprintf(stderr, "hisvid: error: '%s' is not a command (commands: %s; hisvid --help)\n", argv[1],
                   known.c_str());
      return 1;
    }
  }
  // CLI11's own complaints (an unknown option, a value out of range) read like every other error.
  app.failure_message([](const CLI::App* failed, const CLI::Error& e) {
    return "hisvid: error: " + CLI::FailureMessage::simple(failed, e);
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every misread command line exits 1, as every other error.
    return app.exit(e) == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    // std::bad_alloc says only "std::bad_alloc": say what ran out.
    const std::string what = dynamic_cast<const std::bad_alloc*>(&e) != nullptr
                                 ? "out of host memory: the command asked for more memory than this machine "
                                   "could give (a model, batch, clip or frame size too large?)"
                                 : e.what();
    if (ranks && hisvid::world().size() > 1) {
      std::fprintf(stderr, "hisvid: error (rank %d of %d): %s\n", hisvid::world().rank(),
                   hisvid::world().size(), what.c_str());
      hisvid::world().abort(1);  // the other ranks may be waiting for this one
    }
    std::fprintf(stderr, "hisvid: error: %s\n", what.c_str());
    return 1;
  }
  return check_standard_output();
}
