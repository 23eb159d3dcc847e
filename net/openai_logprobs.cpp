#include "net/openai_logprobs.h"

#include <cstdio>
#include <span>

#include "model/tokenizer.h"

namespace skein {

namespace {

std::string token_bytes(const Tokenizer& tok, int32_t token) { return tok.decode(std::span<const int32_t>(&token, 1)); }

// Characters the token adds to the text: its bytes that start a character.
size_t characters(const std::string& bytes) {
  size_t n = 0;
  for (unsigned char c : bytes) n += (c & 0xC0) != 0x80;
  return n;
}

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

}  // namespace

std::string openai_token_text(const Tokenizer& tok, int32_t token) { return text_of(token_bytes(tok, token)); }

nlohmann::json completion_logprobs(const Tokenizer& tok, const std::vector<SampledToken>& tokens, size_t& text_offset) {
  nlohmann::json texts = nlohmann::json::array(), logprobs = nlohmann::json::array(), tops = nlohmann::json::array(),
                 offsets = nlohmann::json::array();
  for (const SampledToken& t : tokens) {
    const std::string bytes = token_bytes(tok, t.token);
    texts.push_back(text_of(bytes));
    logprobs.push_back(t.logprob);
    nlohmann::json top = nlohmann::json::object();
    for (const TokenLogprob& a : t.top) {
      const std::string name = openai_token_text(tok, a.token);
      if (!top.contains(name)) top[name] = a.logprob;  // two tokens with one text: the likelier names it
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
    return nlohmann::json{{"token", text_of(bytes)}, {"logprob", logprob}, {"bytes", byte_list(bytes)}};
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

}  // namespace skein
