#include "net/openai_request.h"

#include <climits>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "common/error.h"
#include "coordinator/session_store.h"
#include "net/json_fields.h"
#include "net/openai_tools.h"

namespace skein {

namespace {

using json_fields::integer;
using json_fields::number;

std::string text_content(const nlohmann::json& c, const std::string& where) {
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) fail(where, ".content: must be a string or an array of text parts");
  std::string out;
  for (auto& part : c) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") || !part["text"].is_string())
      fail(where, ".content: only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
    out += part["text"].get<std::string>();
  }
  return out;
}

// An assistant message's text: its content, then each of its tool_calls as the model writes a call.
std::string assistant_text(const nlohmann::json& m, const std::string& where) {
  const bool has_calls = m.contains("tool_calls") && !m["tool_calls"].is_null();
  std::string out = m.contains("content") && !m["content"].is_null() ? text_content(m["content"], where) : "";
  if (!has_calls) return out;
  const auto& calls = m["tool_calls"];
  if (!calls.is_array()) fail(where, ".tool_calls: must be an array of {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}");
  for (size_t i = 0; i < calls.size(); ++i) {
    const std::string at = where + ".tool_calls[" + std::to_string(i) + "]";
    const auto& c = calls[i];
    if (!c.is_object() || !c.contains("function") || !c["function"].is_object()) fail(at, ": must be {\"id\", \"type\": \"function\", \"function\": {...}}");
    const auto& f = c["function"];
    if (!f.contains("name") || !f["name"].is_string()) fail(at, ".function.name: must be a string");
    if (!f.contains("arguments") || !f["arguments"].is_string()) fail(at, ".function.arguments: must be a string of JSON text");
    if (!out.empty()) out += "\n";
    out += tool_call_text(f["name"], f["arguments"], at + ".function.arguments");
  }
  return out;
}

}  // namespace

std::string chat_prompt(const std::vector<std::pair<std::string, std::string>>& messages, const ChatConfig& chat) {
  std::string p;
  for (auto& [role, content] : messages) {
    const std::string& prefix = role == "system"  ? chat.system_prefix
                                : role == "user"  ? chat.user_prefix
                                : role == "tool"  ? chat.tool_prefix
                                                  : chat.assistant_prefix;
    p += prefix + content + chat.separator;
  }
  std::string a = chat.assistant_prefix;
  while (!a.empty() && a.back() == ' ') a.pop_back();  // the model writes the space itself
  return p + a;
}

OpenAiRequest parse_openai_request(const std::string& body, bool chat, const Tokenizer& tok, int vocab, const ApiLimits& limits,
                                   const ChatConfig& chat_cfg) {
  nlohmann::json j = json_fields::body_object(body);
  static const std::set<std::string> common = {"model", "max_tokens", "temperature", "top_p", "stream", "stream_options", "stop", "seed",
                                               "presence_penalty", "frequency_penalty", "n", "user", "top_k", "alpha_decay", "session",
                                               "logprobs", "response_format", "logit_bias", "priority", "service_tier"};
  for (auto& [k, v] : j.items()) {
    bool ok = common.count(k) ||
              (chat ? (k == "messages" || k == "max_completion_tokens" || k == "top_logprobs" || k == "tools" || k == "tool_choice" ||
                      k == "parallel_tool_calls")
                   : (k == "prompt" || k == "echo"));
    if (!ok) fail("unknown parameter '", k, "'");
  }
  OpenAiRequest r;
  if (j.contains("model")) {
    if (!j["model"].is_string()) fail("model: must be a string");
    r.model = j["model"];
  }
  if (chat) {
    if (!j.contains("messages") || !j["messages"].is_array() || j["messages"].empty()) fail("messages: must be a non-empty array");
    r.tools = parse_chat_tools(j, body, chat_cfg);
    std::vector<std::pair<std::string, std::string>> msgs;
    const auto& messages = j["messages"];
    for (size_t i = 0; i < messages.size(); ++i) {
      const auto& m = messages[i];
      const std::string where = "messages[" + std::to_string(i) + "]";
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) fail(where, ": needs a string role");
      std::string role = m["role"];
      if (role == "developer") role = "system";
      if (role != "system" && role != "user" && role != "assistant" && role != "tool")
        fail(where, ".role: '", role.substr(0, 32), "' is not system, user, assistant or tool");
      // An assistant's content may be null beside its tool_calls; every other message has one.
      if (role == "assistant") msgs.emplace_back(role, assistant_text(m, where));
      else if (!m.contains("content") || m["content"].is_null()) fail(where, ": needs a content");
      else msgs.emplace_back(role, text_content(m["content"], where));
    }
    // Apart, so that a session that goes on can leave the tools out at a token boundary.
    OpenAiPrompt q{tok.encode(r.tools.prompt), "", 0};
    q.preamble = q.tokens.size();
    const std::vector<int32_t> turn = tok.encode(chat_prompt(msgs, chat_cfg));
    q.tokens.insert(q.tokens.end(), turn.begin(), turn.end());
    r.prompts.push_back(std::move(q));
  } else {
    if (!j.contains("prompt")) fail("prompt: required");
    // A string, token ids, or a batch of either (a list of strings, a list of token id lists).
    const auto& p = j["prompt"];
    auto one = [&](const nlohmann::json& e, const std::string& where) {
      OpenAiPrompt q;
      if (e.is_string()) {
        q.text = e.get<std::string>();
        q.tokens = tok.encode(q.text);
      } else if (e.is_array() && !e.empty() && e[0].is_number_integer()) {
        q.tokens = json_fields::token_ids(e, where.c_str(), vocab);
        q.text = tok.decode(q.tokens);
      } else {
        fail(where, ": must be a string or an array of token ids");
      }
      return q;
    };
    if (p.is_string() || (p.is_array() && !p.empty() && p[0].is_number_integer())) {
      r.prompts.push_back(one(p, "prompt"));
    } else if (p.is_array() && !p.empty()) {
      if (p.size() > size_t(kMaxChoices)) fail("prompt: ", p.size(), " prompts exceed the limit of ", kMaxChoices);
      for (size_t i = 0; i < p.size(); ++i) r.prompts.push_back(one(p[i], "prompt[" + std::to_string(i) + "]"));
    } else {
      fail("prompt: must be a string, an array of token ids, or a non-empty array of either");
    }
    if (j.contains("echo") && !j["echo"].is_null()) {
      if (!j["echo"].is_boolean()) fail("echo: must be true or false");
      r.echo = j["echo"];
    }
  }
  for (size_t i = 0; i < r.prompts.size(); ++i) {
    const std::string where = chat ? "messages" : r.prompts.size() > 1 ? "prompt[" + std::to_string(i) + "]" : "prompt";
    const size_t n = r.prompts[i].tokens.size();
    if (n == 0) fail(where, chat ? ": the prompt is empty" : ": must not be empty");
    if (int(n) > limits.max_prompt_tokens) fail(where, ": ", n, " tokens exceed the limit of ", limits.max_prompt_tokens);
  }
  r.max_tokens = limits.default_max_tokens;
  for (const char* key : {"max_tokens", "max_completion_tokens"})
    if (j.contains(key) && !j[key].is_null()) {
      int64_t m = integer(j[key], key);
      if (m < 0) fail(key, ": must be >= 0");
      if (m > limits.max_tokens_cap) fail(key, ": ", m, " exceeds the cap of ", limits.max_tokens_cap);
      r.max_tokens = int(m);
    }
  if (j.contains("n") && !j["n"].is_null()) {
    const int64_t n = json_fields::integer_in(j["n"], "n", 1, kMaxSamples);
    r.n = int(n);
    if (r.prompts.size() * size_t(n) > size_t(kMaxChoices))
      fail("n: ", r.prompts.size(), " prompts of ", n, " choices each exceed the limit of ", kMaxChoices, " choices");
  }
  r.sampling = limits.defaults;
  if (j.contains("response_format") && !j["response_format"].is_null())
    json_fields::response_format(j["response_format"], body, "response_format", r.sampling);
  // A call the model must make is a format of its own: the call schema (net/openai_tools.h).
  if (r.tools.choice == ChatTools::Choice::Required || r.tools.choice == ChatTools::Choice::Named) {
    if (r.sampling.format != ResponseFormat::Text) fail("tool_choice: a call the model must make cannot also follow response_format");
    r.sampling.format = ResponseFormat::JsonSchema;
    r.sampling.json_schema = r.tools.call_schema;
  }
  // A chat reply ends at the chat format's stop strings ("\n\n" by default), a JSON reply where its
  // object closes: whitespace inside the object may hold a blank line.
  if (chat && r.sampling.format == ResponseFormat::Text) r.sampling.stop = chat_cfg.stop;
  auto opt = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  // Completions: logprobs = how many alternatives (0-20). Chat: logprobs true, top_logprobs how many.
  auto alternatives = [&](const char* key) { return int(json_fields::integer_in(j[key], key, 0, kMaxLogprobs)); };
  if (chat) {
    if (opt("logprobs")) {
      if (!j["logprobs"].is_boolean()) fail("logprobs: must be true or false");
      if (j["logprobs"].get<bool>()) r.sampling.logprobs = 0;
    }
    if (opt("top_logprobs")) {
      const int k = alternatives("top_logprobs");
      if (r.sampling.logprobs < 0) fail("top_logprobs: needs \"logprobs\": true");
      r.sampling.logprobs = k;
    }
  } else if (opt("logprobs") && !(j["logprobs"].is_boolean() && !j["logprobs"].get<bool>())) {
    r.sampling.logprobs = alternatives("logprobs");
  }
  if (opt("temperature")) r.sampling.temperature = number(j["temperature"], "temperature");
  if (opt("top_p")) r.sampling.top_p = number(j["top_p"], "top_p");
  if (opt("top_k")) r.sampling.top_k = int(integer(j["top_k"], "top_k"));
  if (opt("presence_penalty")) r.sampling.alpha_presence = number(j["presence_penalty"], "presence_penalty");
  if (opt("frequency_penalty")) r.sampling.alpha_frequency = number(j["frequency_penalty"], "frequency_penalty");
  if (opt("alpha_decay")) r.sampling.alpha_decay = number(j["alpha_decay"], "alpha_decay");
  if (opt("logit_bias")) r.sampling.logit_bias = json_fields::logit_bias(j["logit_bias"], "logit_bias", vocab, kMaxLogitBias);
  if (opt("stop")) {
    const auto& s = j["stop"];
    std::vector<std::string> stops;
    if (s.is_string()) stops.push_back(s);
    else if (s.is_array())
      for (auto& e : s) {
        if (!e.is_string()) fail("stop: must be a string or an array of strings");
        stops.push_back(e);
      }
    else fail("stop: must be a string or an array of strings");
    for (auto& e : stops)
      if (e.empty()) fail("stop: strings must not be empty");
    r.sampling.stop.insert(r.sampling.stop.end(), stops.begin(), stops.end());
  }
  if (opt("seed")) {
    int64_t s = integer(j["seed"], "seed");
    if (s < 0) fail("seed: must be >= 0");
    r.sampling.seed = uint64_t(s);
  }
  if (opt("stream")) {
    if (!j["stream"].is_boolean()) fail("stream: must be true or false");
    r.stream = j["stream"];
  }
  if (opt("stream_options")) {
    const auto& so = j["stream_options"];
    if (!so.is_object()) fail("stream_options: must be an object");
    if (so.contains("include_usage")) {
      if (!so["include_usage"].is_boolean()) fail("stream_options.include_usage: must be true or false");
      r.include_usage = so["include_usage"];
    }
  }
  if (opt("user") && !j["user"].is_string()) fail("user: must be a string");
  if (opt("session")) {
    if (!j["session"].is_string()) fail("session: must be a string");
    r.session = j["session"];
    SessionStore::check_name(r.session);
    if (r.n > 1) fail("n: several samples cannot continue one session");
    if (r.prompts.size() > 1) fail("session: a batch of prompts cannot continue one session");
  }
  // OpenAI's service tiers as priorities: "priority" before the default, "flex" after it. An explicit
  // "priority" (vLLM's) says more.
  if (opt("service_tier")) {
    const auto& tier = j["service_tier"];
    if (!tier.is_string()) fail("service_tier: must be a string");
    const std::string t = tier;
    if (t == "priority") r.priority = -1;
    else if (t == "flex") r.priority = 1;
    else if (t != "auto" && t != "default" && t != "scale") fail("service_tier: '", t.substr(0, 32), "' is not auto, default, flex, scale or priority");
  }
  if (opt("priority")) r.priority = int(json_fields::integer_in(j["priority"], "priority", INT32_MIN, INT32_MAX));
  if (r.echo && r.sampling.logprobs >= 0 && (r.n > 1 || !r.session.empty()))
    fail("echo: with logprobs, the prompt is scored for one choice without a session (n 1, no session)");
  r.sampling.validate(vocab);
  return r;
}

}  // namespace skein
