// tools/commands.h — registration of the hisvid subcommands. Each callback runs inside
// main()'s try block: it throws on failure and main prints one message.
#pragma once

#include <CLI/CLI.hpp>

namespace hisvid::tools {

void add_summary_command(CLI::App& app);
void add_make_dataset_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_evaluate_command(CLI::App& app);
void add_predict_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_explain_command(CLI::App& app);

}  // namespace hisvid::tools
