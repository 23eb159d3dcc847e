// Sampled tokens' log-probabilities in OpenAI's two shapes: the legacy completions object (tokens,
// token_logprobs, top_logprobs, text_offset) and chat's content list (token, logprob, bytes,
// top_logprobs). A token that is not whole UTF-8 on its own (a byte of a longer character) is named
// "bytes:\xNN..." as OpenAI names such tokens; chat also gives every token's bytes.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/tokenizer.h"
#include "worker/token_logprobs.h"

namespace skein {

std::string openai_token_text(const Tokenizer& tok, int32_t token);

// text_offset: characters of the completion before the first token; advanced past these tokens.
nlohmann::json completion_logprobs(const Tokenizer& tok, const std::vector<SampledToken>& tokens, size_t& text_offset);
nlohmann::json chat_logprobs(const Tokenizer& tok, const std::vector<SampledToken>& tokens);

// echo: the prompt's tokens in the completions shape, the first without a figure (null, as OpenAI gives
// it), the others from `scores` (prompt tokens 2..n scored).
nlohmann::json echo_logprobs(const Tokenizer& tok, const std::vector<int32_t>& prompt, const std::vector<SampledToken>& scores,
                             size_t& text_offset);
// Appends a completions logprobs object to another (the echoed prompt's, then the completion's).
void append_logprobs(nlohmann::json& into, const nlohmann::json& more);

}  // namespace skein
