// Deployment configuration, read from TOML (TOML++). Every key a deployment sets lives here; command-line
// flags override what the file says. Errors name the file, line and column.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "coordinator/placement.h"
#include "coordinator/sampler.h"

namespace skein {

struct ServerConfig {
  std::string listen = "127.0.0.1";
  int port = 7700;
  int http_port = 7701;
  std::string auth_token;  // empty: no bearer token required
  int64_t max_request_bytes = 1 << 20;
  int max_prompt_tokens = 16384;
  int max_tokens_cap = 4096;
  int queue_length = 256;
  int per_connection_requests = 8;
};

struct SchedulerConfig {
  int max_slots = 64;            // request states kept per stage
  int micro_batch_tokens = 512;  // rows per micro-batch
  int prefill_chunk = 512;       // prompt tokens per chunk
  bool batch_invariant = false;  // bit-identical results batched or alone (CPU: slower prefill)
};

struct LoggingConfig {
  std::string level = "info";  // error | warn | info | debug
  std::string file;            // empty: stderr
};

struct Config {
  Config() { limits.slots = scheduler.max_slots; }
  std::string source;  // file it came from ("" for defaults)
  std::string model, tokenizer, strategy;
  int threads = 0;
  PlanLimits limits;  // node aliases, device memory, slots
  SchedulerConfig scheduler;
  ServerConfig server;
  SamplingParams sampling;
  int max_tokens = 200;
  LoggingConfig logging;
};

// Reads and validates a config file. Unknown tables or keys, wrong types and out-of-range values are
// errors: "FILE:LINE:COL: <what>". Relative paths (model, world tokenizer, log file) are taken relative
// to the file's folder.
Config load_config(const std::string& path);

// "80GiB", "512MiB", "1.5TB", "1000000" -> bytes; throws skein::Error naming `what`.
uint64_t parse_size(const std::string& s, const std::string& what);

}  // namespace skein
