#include "net/api_request.h"

#include <climits>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "common/error.h"
#include "coordinator/session_store.h"
#include "net/json_fields.h"

namespace skein {

using json_fields::integer;
using json_fields::number;


bool token_accepted(const ApiLimits& limits, std::string_view given) {
  const std::string& expected = limits.auth_token;
  if (expected.empty()) return true;
  // volatile: the compiler may not turn the loop into a compare that stops at the first difference.
  volatile unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i)
    diff = diff | static_cast<unsigned char>((i < given.size() ? given[i] : 0) ^ expected[i]);
  return diff == 0;
}

ApiLimits api_limits(const Config& cfg) {
  return {cfg.server.max_prompt_tokens, cfg.server.max_tokens_cap, cfg.max_tokens, cfg.sampling, cfg.server.auth_token};
}

ApiLine parse_api_line(const std::string& line, const Tokenizer& tok, int vocab, const ApiLimits& limits) {
  nlohmann::json j = json_fields::request_object(line, "malformed JSON ", "a request must be a JSON object");
  if (!limits.auth_token.empty()) {
    if (!j.contains("auth") || !j["auth"].is_string() || !token_accepted(limits, j["auth"].get_ref<const std::string&>()))
      fail("unauthorized: this server needs \"auth\": \"<token>\" in every request");
  }
  j.erase("auth");
  ApiLine out;
  if (j.contains("cancel")) {
    if (j.size() != 1 || !j["cancel"].is_string()) fail("cancel: must be {\"cancel\": \"<request id>\"}");
    out.cancel = ApiCancel{j["cancel"].get<std::string>()};
    return out;
  }
  if (j.contains("op")) {
    ApiSessionOp o;
    if (!j["op"].is_string()) fail("op: must be a string");
    o.op = j["op"];
    if (o.op != "list_models" && o.op != "list_sessions" && o.op != "save_session" && o.op != "delete_session" && o.op != "fork_session")
      fail("op: '", o.op.substr(0, 64), "' is not one of list_models, list_sessions, save_session, delete_session, fork_session");
    for (auto& [k, v] : j.items())
      if (k != "op" && k != "id" && k != "session" && (k != "to" || o.op != "fork_session"))
        fail("unknown field '", k, "' in a ", o.op, " request");
    if (j.contains("id")) {
      if (!j["id"].is_string() || j["id"].get<std::string>().size() > 256) fail("id: must be a string of at most 256 bytes");
      o.id = j["id"];
    }
    if (o.op != "list_sessions" && o.op != "list_models") {
      if (!j.contains("session") || !j["session"].is_string()) fail("session: ", o.op, " needs \"session\": \"<name>\"");
      o.session = j["session"];
    }
    if (o.op == "fork_session") {
      if (!j.contains("to") || !j["to"].is_string()) fail("to: fork_session needs \"to\": \"<new session name>\"");
      o.to = j["to"];
    }
    out.session_op = o;
    return out;
  }
  static const std::set<std::string> known = {"id",    "prompt", "tokens", "max_tokens", "temperature", "top_p", "top_k", "alpha_presence",
                                              "alpha_frequency", "alpha_decay", "token_ban", "stop", "stop_tokens", "seed", "stream", "session", "n", "logprobs",
                                              "prompt_logprobs", "logit_bias", "model", "response_format", "priority"};
  for (auto& [k, v] : j.items())
    if (!known.count(k)) fail("unknown field '", k, "'");
  ApiGenerate g;
  if (!j.contains("id") || !j["id"].is_string() || j["id"].get<std::string>().empty() || j["id"].get<std::string>().size() > 256)
    fail("id: a request needs a non-empty string id (at most 256 bytes)");
  g.id = j["id"];
  if (j.contains("prompt") == j.contains("tokens")) fail("give exactly one of 'prompt' (text) and 'tokens' (ids)");
  if (j.contains("prompt")) {
    if (!j["prompt"].is_string()) fail("prompt: must be a string");
    g.prompt = tok.encode(j["prompt"].get<std::string>());
  } else {
    g.prompt = json_fields::token_ids(j["tokens"], "tokens", vocab);
  }
  if (g.prompt.empty()) fail("prompt: must not be empty");
  if (int(g.prompt.size()) > limits.max_prompt_tokens)
    fail("prompt: ", g.prompt.size(), " tokens exceed the limit of ", limits.max_prompt_tokens);
  g.max_tokens = limits.default_max_tokens;
  if (j.contains("max_tokens")) {
    int64_t m = integer(j["max_tokens"], "max_tokens");
    if (m < 0) fail("max_tokens: must be >= 0");
    if (m > limits.max_tokens_cap) fail("max_tokens: ", m, " exceeds the cap of ", limits.max_tokens_cap);
    g.max_tokens = int(m);
  }
  g.sampling = limits.defaults;
  if (j.contains("temperature")) g.sampling.temperature = number(j["temperature"], "temperature");
  if (j.contains("top_p")) g.sampling.top_p = number(j["top_p"], "top_p");
  if (j.contains("top_k")) g.sampling.top_k = int(integer(j["top_k"], "top_k"));
  if (j.contains("alpha_presence")) g.sampling.alpha_presence = number(j["alpha_presence"], "alpha_presence");
  if (j.contains("alpha_frequency")) g.sampling.alpha_frequency = number(j["alpha_frequency"], "alpha_frequency");
  if (j.contains("alpha_decay")) g.sampling.alpha_decay = number(j["alpha_decay"], "alpha_decay");
  if (j.contains("token_ban")) g.sampling.token_ban = json_fields::token_ids(j["token_ban"], "token_ban", vocab);
  if (j.contains("logit_bias")) g.sampling.logit_bias = json_fields::logit_bias(j["logit_bias"], "logit_bias", vocab, kMaxLogitBias);
  if (j.contains("response_format")) json_fields::response_format(j["response_format"], line, "response_format", g.sampling);
  if (j.contains("stop_tokens")) g.sampling.token_stop = json_fields::token_ids(j["stop_tokens"], "stop_tokens", vocab);
  if (j.contains("stop")) {
    if (!j["stop"].is_array()) fail("stop: must be an array of strings");
    g.sampling.stop.clear();
    for (auto& s : j["stop"]) {
      if (!s.is_string() || s.get<std::string>().empty()) fail("stop: must be an array of non-empty strings");
      g.sampling.stop.push_back(s);
    }
  }
  if (j.contains("seed")) {
    int64_t s = integer(j["seed"], "seed");
    if (s < 0) fail("seed: must be >= 0");
    g.sampling.seed = uint64_t(s);
  }
  if (j.contains("stream")) {
    if (!j["stream"].is_boolean()) fail("stream: must be true or false");
    g.stream = j["stream"];
  }
  if (j.contains("session")) {
    if (!j["session"].is_string()) fail("session: must be a string");
    g.session = j["session"];
    SessionStore::check_name(g.session);
  }
  if (j.contains("model")) {
    if (!j["model"].is_string()) fail("model: must be a string");
    g.model = j["model"];
  }
  if (j.contains("n")) {
    const int64_t n = json_fields::integer_in(j["n"], "n", 1, kMaxSamples);
    if (n > 1 && !g.session.empty()) fail("n: several samples cannot continue one session");
    g.n = int(n);
  }
  if (j.contains("logprobs")) {
    g.sampling.logprobs = int(json_fields::integer_in(j["logprobs"], "logprobs", 0, kMaxLogprobs));
  }
  if (j.contains("priority")) g.priority = int(json_fields::integer_in(j["priority"], "priority", INT32_MIN, INT32_MAX));
  if (j.contains("prompt_logprobs")) {
    if (!j["prompt_logprobs"].is_boolean()) fail("prompt_logprobs: must be true or false");
    g.score_prompt = j["prompt_logprobs"];
    if (g.score_prompt && g.sampling.logprobs < 0) fail("prompt_logprobs: needs \"logprobs\" (how many alternatives)");
    if (g.score_prompt && (g.n > 1 || !g.session.empty())) fail("prompt_logprobs: not with n > 1 or a session");
  }
  g.sampling.validate(vocab);
  out.generate = std::move(g);
  return out;
}

}  // namespace skein
