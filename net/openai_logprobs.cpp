#include "net/openai_logprobs.h"

#include <cstdio>
#include <span>

#include "common/json_text.h"
#include "model/tokenizer.h"

namespace skein {

namespace {

std::string token_bytes(const Tokenizer& tok, int32_t token) { return generated_bytes(tok, std::span<const int32_t>(&token, 1)); }

std::string text_of(const std::string& bytes) {
  if (is_utf8(bytes)) return bytes;
  std::string out = "bytes:";
  char hex[5];
  for (unsigned char c : bytes) {
    std::snprintf(hex, sizeof hex, "\\x%02x", c);
    out += hex;
  }
  return out;
}

nlohmann::json byte_list(const std::string& bytes) {
  nlohmann::json out = nlohmann::json::array();
  for (unsigned char c : bytes) out.push_back(int(c));
  return out;
}

// Characters a token adds to the text (text_offset's unit): a byte that starts a character counts
// one, so a token that ends inside a character adds it.
size_t characters(const std::string& bytes) {
  size_t n = 0;
  for (unsigned char c : bytes) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

std::string openai_token_text(const Tokenizer& tok, int32_t token) { return text_of(token_bytes(tok, token)); }

nlohmann::json completion_logprobs(const Tokenizer& tok, const std::vector<SampledToken>& tokens, size_t& text_offset) {
  nlohmann::json texts = nlohmann::json::array(), logprobs = nlohmann::json::array(), tops = nlohmann::json::array(),
                 offsets = nlohmann::json::array();
  for (const SampledToken& t : tokens) {
    const std::string bytes = token_bytes(tok, t.token);
    texts.push_back(text_of(bytes));
    logprobs.push_back(json_float(t.logprob));
    nlohmann::json top = nlohmann::json::object();
    for (const TokenLogprob& a : t.top) {
      const std::string name = openai_token_text(tok, a.token);
      if (!top.contains(name)) top[name] = json_float(a.logprob);  // two tokens with one text: the likelier names it
    }
    tops.push_back(top);
    offsets.push_back(text_offset);
    text_offset += characters(bytes);
  }
  return {{"tokens", texts}, {"token_logprobs", logprobs}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

nlohmann::json chat_logprobs(const Tokenizer& tok, const std::vector<SampledToken>& tokens) {
  auto entry = [&](int32_t token, float logprob) {
    const std::string bytes = token_bytes(tok, token);
    return nlohmann::json{{"token", text_of(bytes)}, {"logprob", json_float(logprob)}, {"bytes", byte_list(bytes)}};
  };
  nlohmann::json content = nlohmann::json::array();
  for (const SampledToken& t : tokens) {
    nlohmann::json e = entry(t.token, t.logprob);
    nlohmann::json top = nlohmann::json::array();
    for (const TokenLogprob& a : t.top) top.push_back(entry(a.token, a.logprob));
    e["top_logprobs"] = top;
    content.push_back(e);
  }
  return {{"content", content}, {"refusal", nullptr}};
}

nlohmann::json echo_logprobs(const Tokenizer& tok, const std::vector<int32_t>& prompt, const std::vector<SampledToken>& scores,
                             size_t& text_offset) {
  nlohmann::json out = {{"tokens", nlohmann::json::array()}, {"token_logprobs", nlohmann::json::array()},
                        {"top_logprobs", nlohmann::json::array()}, {"text_offset", nlohmann::json::array()}};
  if (prompt.empty()) return out;
  const std::string first = token_bytes(tok, prompt.front());
  out["tokens"].push_back(text_of(first));
  out["token_logprobs"].push_back(nullptr);
  out["top_logprobs"].push_back(nullptr);
  out["text_offset"].push_back(text_offset);
  text_offset += characters(first);
  append_logprobs(out, completion_logprobs(tok, scores, text_offset));
  return out;
}

void append_logprobs(nlohmann::json& into, const nlohmann::json& more) {
  for (const char* key : {"tokens", "token_logprobs", "top_logprobs", "text_offset"})
    for (const auto& v : more[key]) into[key].push_back(v);
}

}  // namespace skein
