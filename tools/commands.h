// Each `skein` subcommand registers itself on the root app; its callback runs the command.
#pragma once
#include <CLI/CLI.hpp>

#include "coordinator/config.h"

namespace skein::cli {

using skein::Config;

void add_generate_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_tokenize_commands(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_make_model_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_plan_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_client_command(CLI::App& app);
void add_eval_command(CLI::App& app);

// The pipeline benchmark (bench --pipeline), on the cluster mpirun started.
void run_pipeline_bench(const Config& cfg, int rounds);
// The serving load test (bench --server): N streaming clients against a running server.
void run_server_bench(const std::string& server, int clients, double seconds, int max_tokens);

}  // namespace skein::cli
