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
struct ServerBenchOptions {
  std::string server;  // HOST:PORT
  int clients = 64;
  double seconds = 60;
  int max_tokens = 64;
  int samples = 1;        // n of every request: samples of one prompt, prefilled once
  int prompt_tokens = 0;  // > 0: prompts of this many token ids, each request's its own; 0: short text prompts
  int logprobs = -1;      // >= 0: every request asks for log-probabilities with this many alternatives
  std::string tuned_state;  // every request starts from this tuned state of the server's ("" = the model)
  bool json = false;        // every request asks for JSON mode; replies that close their object must parse
  std::string json_schema;  // a JSON Schema file: JSON mode with it, and closed replies must be its texts
  int urgent = 0;           // the first this many clients send "priority": -1; their latencies are reported apart
};
void run_server_bench(const ServerBenchOptions& o);

}  // namespace skein::cli
