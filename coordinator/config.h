// Deployment configuration, read from TOML (TOML++). Every key a deployment sets lives here; command-line
// flags override what the file says. Errors name the file, line and column.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

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
  int64_t client_buffer_bytes = 4 << 20;  // events queued for a client that does not read; past it: closed
  double client_timeout_s = 30;           // a started request line (or HTTP request) must finish within it
  double stall_seconds = 5;               // /health fails when work waits this long without a step finishing
  // Web pages (origins) whose scripts may call the HTTP API from a browser (CORS); "*" for any. Empty:
  // none, as a browser then refuses cross-origin calls.
  std::vector<std::string> allow_origins;
};

struct SessionsConfig {
  std::string dir;                   // saved and spilled sessions ("" = kept in memory only)
  uint64_t host_bytes = 1ull << 30;  // budget for idle sessions evicted from the slots to host memory
  bool persist = false;              // save every session at shutdown; list saved ones at start-up
  int64_t idle_ttl_s = 0;            // sessions idle this long are forgotten, files too (0: kept until deleted)
  int64_t save_interval_s = 0;       // with persist: sessions changed since their last save are saved this often (0: at shutdown only)
};

struct CacheConfig {
  uint64_t prefix_bytes = 256ull << 20;  // prompt-prefix state cache (0 = off)
  int block_tokens = 16;                 // prefixes are cached at multiples of this
};

// How /v1/chat/completions turns messages into a prompt: "User: hi\n\nAssistant:" by default.
struct ChatConfig {
  std::string system_prefix = "System: ", user_prefix = "User: ", assistant_prefix = "Assistant: ";
  std::string tool_prefix = "Tool: ";  // a tool's result (net/openai_tools.h)
  // The system message the tools are listed in, one line of JSON each after it.
  std::string tools_intro = "You may call these tools. To call one, reply with only {\"name\": NAME, \"arguments\": {...}}:";
  std::string separator = "\n\n";
  // A reply ends at a blank line, as in ChatRWKV: the state of a chat session then holds exactly
  // "...reply\n" plus a pending "\n", so the next turn's "User: ..." follows the separator.
  std::vector<std::string> stop = {"\n\n"};
};

struct SchedulerConfig {
  int micro_batch_tokens = 512;  // rows per micro-batch
  int prefill_chunk = 512;       // prompt tokens per chunk
  bool batch_invariant = false;  // bit-identical results batched or alone (CPU: slower prefill)
  // Host memory for the states of requests preempted by more urgent ones (0: no preemption).
  uint64_t parked_bytes = 1ull << 30;
};

struct LoggingConfig {
  std::string level = "info";  // error | warn | info | debug
  std::string file;            // empty: stderr
};

// Compute threads a config or flag may ask for (OpenMP failed to start 100,000 and crashed).
constexpr int kMaxThreads = 4096;

struct Config {
  std::string source;  // file it came from ("" for defaults)
  std::string model, tokenizer, strategy;
  std::string initial_state;  // a state-tuning file merged into the model (model/initial_state.h)
  // [tuned_states] name = file: state-tuning (or state) files `skein serve` offers beside the model, chosen by a
  // request's "model" (the model itself is loaded once).
  std::map<std::string, std::string> tuned_states;
  int threads = 0;
  // Node aliases, device memory, and the request slots each stage keeps ([scheduler] max_slots).
  PlanLimits limits = [] {
    PlanLimits l;
    l.slots = 64;
    return l;
  }();
  SchedulerConfig scheduler;
  ServerConfig server;
  SessionsConfig sessions;
  CacheConfig cache;
  ChatConfig chat;
  SamplingParams sampling;
  int max_tokens = 200;
  LoggingConfig logging;

  // The plan's limits, its steps as large as the scheduler's micro-batches.
  PlanLimits plan_limits() const {
    PlanLimits l = limits;
    l.step_rows = scheduler.micro_batch_tokens;
    return l;
  }
};

// Reads and validates a config file. Unknown tables or keys, wrong types and out-of-range values are
// errors: "FILE:LINE:COL: <what>". Relative paths (model, world tokenizer, log file) are taken relative
// to the file's folder.
Config load_config(const std::string& path);

// A tuned state's name as clients send it: 1-64 letters, digits, '.', '_', '-' or ':', starting with a
// letter or digit. Throws skein::Error otherwise.
void check_tuned_state_name(const std::string& name);

// An origin as a browser sends it (scheme://host[:port], no path) or "*". Throws skein::Error otherwise.
void check_allowed_origin(const std::string& origin);

// "80GiB", "512MiB", "1.5TB", "1000000" -> bytes; throws skein::Error naming `what`.
uint64_t parse_size(const std::string& s, const std::string& what);

}  // namespace skein
