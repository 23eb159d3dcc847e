#include "coordinator/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "kernels/sampling_math.h"

namespace skein {

void SamplingParams::validate_ranges() const {
  auto finite = [](float v) { return std::isfinite(v); };
  if (!finite(temperature) || temperature < 0) fail("temperature must be a finite number >= 0, got ", temperature);
  if (!finite(top_p) || top_p < 0) fail("top_p must be a finite number >= 0, got ", top_p);
  if (top_k < 0) fail("top_k must be >= 0, got ", top_k);
  if (!finite(alpha_presence)) fail("alpha_presence must be finite");
  if (!finite(alpha_frequency)) fail("alpha_frequency must be finite");
  if (!finite(alpha_decay) || alpha_decay < 0 || alpha_decay > 1) fail("alpha_decay must be in [0, 1], got ", alpha_decay);
  if (logprobs < -1 || logprobs > kMaxLogprobs) fail("logprobs must be between 0 and ", kMaxLogprobs, " (or -1 for none), got ", logprobs);
  for (auto& s : stop)
    if (s.empty()) fail("stop strings must not be empty");
  for (auto& [t, bias] : logit_bias)
    if (!finite(bias) || bias < -kMaxLogitBias || bias > kMaxLogitBias)
      fail("logit_bias of token ", t, " must be between -", kMaxLogitBias, " and ", kMaxLogitBias, ", got ", bias);
}

void SamplingParams::validate(int vocab) const {
  validate_ranges();
  for (auto t : token_ban)
    if (t < 0 || t >= vocab) fail("token_ban (--ban) id ", t, " is outside the vocabulary (", vocab, ")");
  for (auto t : token_stop)
    if (t < 0 || t >= vocab) fail("token_stop (--stop-token) id ", t, " is outside the vocabulary (", vocab, ")");
  for (auto& [t, bias] : logit_bias)
    if (t < 0 || t >= vocab) fail("logit_bias id ", t, " is outside the vocabulary (", vocab, ")");
  for (auto t : drawn)
    if (t < 0 || t >= vocab) fail("a drawn token id ", t, " is outside the vocabulary (", vocab, ")");
}

std::vector<float> sampling_probabilities(const float* logits, int V, float temperature, float top_p, int top_k) {
  if (temperature == 0.0f) {  // greedy, as officially: temperature 1 with top_p 0 keeps the maxima
    temperature = 1.0f;
    top_p = 0.0f;
  }
  std::vector<float> probs(static_cast<size_t>(V));
  float mx = -INFINITY;
  for (int i = 0; i < V; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int i = 0; i < V; ++i) { probs[size_t(i)] = math::softmax_numerator(logits[i], mx); sum += probs[size_t(i)]; }
  for (auto& p : probs) p = math::normalized(p, sum);

  std::vector<int> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  // Descending probability; equal probabilities keep ascending id order (stable).
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return probs[size_t(a)] > probs[size_t(b)]; });
  if (top_p < 1.0f) {  // top_p >= 1 means no cutoff (the official float32 cumsum may never reach 1.0)
    float cum = 0.0f, cutoff = probs[size_t(order[0])];
    for (int i = 0; i < V; ++i) {
      cum += probs[size_t(order[size_t(i)])];
      if (cum >= top_p) { cutoff = probs[size_t(order[size_t(i)])]; break; }
    }
    for (auto& p : probs)
      if (p < cutoff) p = 0.0f;
  }
  if (top_k > 0 && top_k < V)
    for (int i = top_k; i < V; ++i) probs[size_t(order[size_t(i)])] = 0.0f;
  if (temperature != 1.0f)
    for (auto& p : probs) p = math::tempered(p, temperature);
  double total = 0;
  for (auto p : probs) total += p;
  for (auto& p : probs) p = math::normalized(p, total);
  return probs;
}

void RepetitionPenalty::apply(float* logits, int V, const SamplingParams& p) const {
  for (auto& [t, n] : counts_)
    if (t >= 0 && t < V) logits[t] -= p.alpha_presence + n * p.alpha_frequency;
  for (auto& [t, bias] : p.logit_bias)
    if (t >= 0 && t < V) logits[t] += bias;
  for (auto t : p.token_ban) logits[t] = -INFINITY;
}

bool is_penalty_free_text(const std::string& token_text) {
  static const std::string kFree = " \t0123456789";
  return kFree.find(token_text) != std::string::npos;  // Python's `text in ' \t0123456789'`
}

void RepetitionPenalty::record(int32_t token, bool penalty_free, const SamplingParams& p) {
  for (auto& [t, n] : counts_) n *= p.alpha_decay;
  counts_[token] += penalty_free ? 0.0f : 1.0f;
}

int32_t SlotSampler::next(float* logits, int V, const std::vector<uint8_t>& penalty_free, const uint64_t* allowed) {
  int32_t tok = sample_row(logits, V, prepare(allowed, V));
  record(tok, penalty_free);
  return tok;
}

SampleRequest SlotSampler::prepare(const uint64_t* allowed, int vocab) {
  SampleRequest r;
  r.temperature = params_.temperature;
  r.top_p = params_.top_p;
  r.top_k = params_.top_k;
  r.logprobs = params_.logprobs;
  if (params_.temperature != 0.0f) r.u = sampler_.uniform();
  // One entry per token (a banned token that also has a count stays banned).
  std::map<int32_t, float> amount;
  for (auto& [t, n] : penalty_.counts()) amount[t] = params_.alpha_presence + n * params_.alpha_frequency;
  for (auto& [t, bias] : params_.logit_bias) amount[t] -= bias;
  for (auto t : params_.token_ban) amount[t] = INFINITY;
  if (!allowed) {
    r.penalties.reserve(amount.size());
    for (auto& [t, a] : amount) r.penalties.push_back({t, a});
    return r;
  }
  // Constrained: every token outside the mask is banned, still one entry per token.
  auto next = amount.begin();
  for (int32_t t = 0; t < vocab; ++t) {
    while (next != amount.end() && next->first < t) ++next;
    const bool ok = (allowed[t / 64] >> (t % 64)) & 1;
    if (!ok) r.penalties.push_back({t, INFINITY});
    else if (next != amount.end() && next->first == t) r.penalties.push_back({t, next->second});
  }
  return r;
}

void SlotSampler::record(int32_t token, const std::vector<uint8_t>& penalty_free) {
  penalty_.record(token, size_t(token) < penalty_free.size() && penalty_free[size_t(token)], params_);
}

void SlotSampler::replay(const std::vector<int32_t>& drawn, const std::vector<uint8_t>& penalty_free) {
  for (int32_t t : drawn) {
    if (params_.temperature != 0.0f) sampler_.uniform();  // as prepare() drew it
    record(t, penalty_free);
  }
}

void SlotSamplers::set(int slot, const SamplingParams& p) {
  SlotSampler s(p);
  s.replay(p.drawn, penalty_free_);
  samplers_.insert_or_assign(slot, std::move(s));
}

std::vector<SampleRequest> SlotSamplers::prepare(const std::vector<int>& slots, const std::vector<const uint64_t*>& allowed, int vocab) {
  std::vector<SampleRequest> out;
  out.reserve(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    auto it = samplers_.find(slots[i]);
    if (it == samplers_.end()) fail("slot ", slots[i], " has no sampling parameters");
    out.push_back(it->second.prepare(i < allowed.size() ? allowed[i] : nullptr, vocab));
  }
  return out;
}

void SlotSamplers::record(const std::vector<int>& slots, const std::vector<SampledToken>& tokens) {
  for (size_t i = 0; i < slots.size() && i < tokens.size(); ++i) samplers_.at(slots[i]).record(tokens[i].token, penalty_free_);
}

int32_t draw_token(const std::vector<float>& probs, double u) {
  double cum = 0;
  int last = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0) continue;
    last = int(i);
    cum += probs[i];
    if (u < cum) return int32_t(i);
  }
  return last;
}

int32_t sample_row(float* logits, int V, const SampleRequest& r) {
  for (auto& p : r.penalties)
    if (p.token >= 0 && p.token < V) logits[p.token] = math::penalized(logits[p.token], p.amount);
  if (r.temperature == 0.0f) return int32_t(std::max_element(logits, logits + V) - logits);
  return draw_token(sampling_probabilities(logits, V, r.temperature, r.top_p, r.top_k), r.u);
}

std::string encode_sampling(const SamplingParams& p) {
  nlohmann::json j = {{"temperature", p.temperature}, {"top_p", p.top_p}, {"top_k", p.top_k}, {"alpha_presence", p.alpha_presence},
                      {"alpha_frequency", p.alpha_frequency}, {"alpha_decay", p.alpha_decay}, {"token_ban", p.token_ban}, {"seed", p.seed},
                      {"logprobs", p.logprobs}, {"logit_bias", p.logit_bias}, {"drawn", p.drawn}};
  return j.dump();
}

SamplingParams decode_sampling(const std::string& bytes) {
  auto j = nlohmann::json::parse(bytes);
  SamplingParams p;
  p.temperature = j["temperature"];
  p.top_p = j["top_p"];
  p.top_k = j["top_k"];
  p.alpha_presence = j["alpha_presence"];
  p.alpha_frequency = j["alpha_frequency"];
  p.alpha_decay = j["alpha_decay"];
  p.token_ban = j["token_ban"].get<std::vector<int32_t>>();
  p.seed = j["seed"];
  p.logprobs = j["logprobs"];
  p.logit_bias = j["logit_bias"].get<std::map<int32_t, float>>();
  p.drawn = j["drawn"].get<std::vector<int32_t>>();
  return p;
}

}  // namespace skein
