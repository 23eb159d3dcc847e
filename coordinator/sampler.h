// Token sampling with the official PIPELINE semantics (rwkv/utils.py): repetition penalties on the
// logits, then softmax, top-p cutoff, top-k, temperature, and a draw. A seed makes runs reproducible.
#pragma once
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "worker/backend.h"
#include "worker/token_logprobs.h"

namespace skein {

// The largest logit_bias magnitude, as OpenAI's.
constexpr float kMaxLogitBias = 100.0f;

// What a request's output must be (OpenAI's response_format). JsonObject: one JSON object, every draw
// limited to tokens that keep the text a prefix of one (coordinator/json_constraint.h); JsonSchema: one
// of SamplingParams::json_schema's texts.
enum class ResponseFormat : uint8_t { Text, JsonObject, JsonSchema };

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  float top_p = 0.85f;       // >= 1 keeps every token
  int top_k = 0;             // 0 = off
  float alpha_presence = 0.0f;
  float alpha_frequency = 0.0f;
  float alpha_decay = 0.996f;
  std::vector<int32_t> token_ban;
  // Added to a token's logit before sampling (OpenAI's logit_bias), in [-100, 100]; bans still win.
  std::map<int32_t, float> logit_bias;
  std::vector<int32_t> token_stop;
  std::vector<std::string> stop;  // stop strings
  ResponseFormat format = ResponseFormat::Text;  // kept by the coordinator, as the stop strings are
  std::string json_schema;  // JsonSchema: the schema as JSON text, its keys in the order given
  uint64_t seed = 0;
  int logprobs = -1;  // >= 0: score every drawn token and return that many alternatives (token_logprobs.h)
  // Tokens this request drew before it was parked (preempted): a sampler set up with them has their
  // occurrence counts and has used their uniforms, so the request draws on as if it had never stopped.
  std::vector<int32_t> drawn;

  // Throws skein::Error naming the first invalid field (NaN, negative, out of range).
  void validate(int vocab) const;
  // The same checks but the token ids, which need the model's vocabulary (configs and flags, before loading).
  void validate_ranges() const;
};

// The final normalised distribution the official sample_logits draws from. Returns V probabilities.
std::vector<float> sampling_probabilities(const float* logits, int V, float temperature, float top_p, int top_k);

// Occurrence counts for the presence/frequency penalties, decayed after every generated token.
class RepetitionPenalty {
 public:
  // logits[id] -= alpha_presence + count * alpha_frequency for every token seen, += its logit_bias;
  // banned tokens -> -inf.
  void apply(float* logits, int V, const SamplingParams& p) const;
  // After a generated token: decay every count, then add 1 (0 for a penalty-free token: one whose text
  // is a substring of " \t0123456789", as officially; whitespace and digits are not penalised by frequency).
  void record(int32_t token, bool penalty_free, const SamplingParams& p);
  const std::map<int32_t, float>& counts() const { return counts_; }

 private:
  std::map<int32_t, float> counts_;
};

bool is_penalty_free_text(const std::string& token_text);

// The token a row's probabilities give for the uniform draw u: the first whose cumulative probability
// exceeds u (the last possible one if rounding leaves u beyond the total).
int32_t draw_token(const std::vector<float>& probs, double u);
// The CPU's execution of a SampleRequest on one row of logits (penalties applied in place); the GPU
// kernel (kernels/cuda/sampling.cu) is tested against it.
int32_t sample_row(float* logits, int V, const SampleRequest& r);

// A request's seeded random stream: one uniform per non-greedy draw.
class Sampler {
 public:
  explicit Sampler(uint64_t seed) : rng_(seed) {}
  // The uniform a non-greedy draw uses (the next number of this stream).
  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

 private:
  std::mt19937_64 rng_;
};

// Everything one request samples with, kept where its logits are (the last pipeline stage): its
// parameters, occurrence counts and random stream. `penalty_free[t]` marks penalty-free tokens.
class SlotSampler {
 public:
  explicit SlotSampler(const SamplingParams& p) : params_(p), sampler_(p.seed) {}
  int32_t next(float* logits, int V, const std::vector<uint8_t>& penalty_free, const uint64_t* allowed = nullptr);
  // The same in two halves, for a backend that samples where the logits are: the request for this
  // step (draws the uniform from this slot's stream), then the token it gave. `allowed`, when not null,
  // bans every token below `vocab` whose bit (t of word t / 64) is clear (structured output).
  SampleRequest prepare(const uint64_t* allowed = nullptr, int vocab = 0);
  void record(int32_t token, const std::vector<uint8_t>& penalty_free);
  // Where it would be after drawing these tokens: their counts recorded, their uniforms used.
  void replay(const std::vector<int32_t>& drawn, const std::vector<uint8_t>& penalty_free);

 private:
  SamplingParams params_;
  RepetitionPenalty penalty_;
  Sampler sampler_;
};

// The samplers of a slot table, kept where the logits are (the last stage, or the local model), and
// which tokens are penalty-free. A step's sampling slots get their requests from prepare() and their
// tokens back through record(), in the same order.
class SlotSamplers {
 public:
  // A fresh sampler, advanced over p.drawn.
  void set(int slot, const SamplingParams& p);
  void erase(int slot) { samplers_.erase(slot); }
  void set_penalty_free(std::vector<uint8_t> penalty_free) { penalty_free_ = std::move(penalty_free); }
  // Throws skein::Error for a slot without sampling parameters. allowed[i], when given and not null,
  // limits slot i's draw (SlotSampler::prepare).
  std::vector<SampleRequest> prepare(const std::vector<int>& slots, const std::vector<const uint64_t*>& allowed = {}, int vocab = 0);
  void record(const std::vector<int>& slots, const std::vector<SampledToken>& tokens);

 private:
  std::map<int, SlotSampler> samplers_;
  std::vector<uint8_t> penalty_free_;
};

// SamplingParams on the wire (to the last stage); stop tokens and strings stay with the coordinator.
std::string encode_sampling(const SamplingParams& p);
SamplingParams decode_sampling(const std::string& bytes);

}  // namespace skein
