// What a sampled row returns: the drawn token and, when its request asked, the model's log-probability
// of it and of the most likely tokens. "The model's" means log-softmax of the raw logits, before
// penalties, temperature, top-p and top-k (as vLLM reports by default): the figure a client can compare
// across sampling settings and use to score text.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

namespace skein {

// Alternatives a request may ask for (OpenAI's top_logprobs allows 20).
constexpr int kMaxLogprobs = 20;

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0;
};

struct SampledToken {
  SampledToken() = default;
  explicit SampledToken(int32_t t) : token(t) {}
  SampledToken(int32_t t, float lp, std::vector<TokenLogprob> alternatives)
      : token(t), scored(true), logprob(lp), top(std::move(alternatives)) {}

  int32_t token = -1;
  bool scored = false;  // logprob and top are set
  float logprob = 0;
  std::vector<TokenLogprob> top;  // most likely first (equal ones by id)
};

// Scores t.token against one row of raw logits [V] (host memory) with the n_top most likely tokens.
void score_logprobs(const float* logits, int V, int n_top, SampledToken& t);

}  // namespace skein
