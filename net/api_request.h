// One line of the TCP protocol (newline-delimited JSON, docs/protocol.md), parsed and validated.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/config.h"
#include "coordinator/sampler.h"
#include "model/tokenizer.h"

namespace skein {

struct ApiGenerate {
  std::string id;  // the client's request id, echoed in every event
  std::vector<int32_t> prompt;
  int max_tokens = 0;
  SamplingParams sampling;
  bool stream = true;
  std::string session;  // continue this named session ("" = none)
  std::string model;    // the model or tuned state asked for ("" = the model; InferenceService::tuned_state_for)
  int n = 1;            // samples of the prompt, from one prefill (sample i draws with seed + i)
  int priority = 0;     // lower runs first; may preempt running requests (ServiceRequest::priority)
  bool score_prompt = false;  // "prompt_logprobs": score the prompt's tokens too (needs "logprobs")
};

// Samples one request may ask for (n), over TCP and HTTP.
constexpr int kMaxSamples = 16;

// {"op": "list_models"} (the names a request's "model" may give), or a session operation:
// {"op": "list_sessions" | "save_session" | "delete_session" | "fork_session", "session": NAME,
//  "to": NEW_NAME (fork_session only), "id": ...}
struct ApiSessionOp {
  std::string id;  // optional, echoed
  std::string op;
  std::string session;
  std::string to;
};

struct ApiCancel {
  std::string id;
};

struct ApiLine {
  std::optional<ApiGenerate> generate;
  std::optional<ApiCancel> cancel;
  std::optional<ApiSessionOp> session_op;
};

struct ApiLimits {
  int max_prompt_tokens = 16384;
  int max_tokens_cap = 4096;
  int default_max_tokens = 200;
  SamplingParams defaults;
  std::string auth_token;  // when set, every line must carry "auth": <token>
};

// Whether `given` is the server's token (true when none is set). Takes the same time wherever the two
// differ, so a client cannot find the token a byte at a time from reply latency.
bool token_accepted(const ApiLimits& limits, std::string_view given);

// The limits a server configured by `cfg` parses requests with ([server], [sampling]).
ApiLimits api_limits(const Config& cfg);

// Throws skein::Error with a message naming the field ("temperature: must be a number >= 0").
ApiLine parse_api_line(const std::string& line, const Tokenizer& tok, int vocab, const ApiLimits& limits);

}  // namespace skein
