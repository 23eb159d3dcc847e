#include "coordinator/generator.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "common/error.h"
#include "common/stop_signal.h"
#include "coordinator/json_constraint.h"

namespace skein {

std::vector<uint8_t> penalty_free_tokens(const Tokenizer& tok, int vocab) {
  std::vector<uint8_t> out(size_t(vocab), 0);
  for (int32_t t = 0; t < vocab && t < tok.vocab_size(); ++t) {
    try {
      out[size_t(t)] = is_penalty_free_text(tok.decode(std::span<const int32_t>(&t, 1)));
    } catch (const Error&) {  // ids without text (World's 0) are never generated as text
    }
  }
  return out;
}

std::string StopMatcher::push(std::string_view text, bool& stopped) {
  stopped = false;
  held_.append(text);
  size_t first = std::string::npos;
  for (auto& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    stopped = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    return out;
  }
  // Keep the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (auto& s : stops_)
    for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n)
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) { keep = n; break; }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::flush() {
  std::string out;
  out.swap(held_);
  return out;
}

GenerateResult generate(ModelHandle& model, int session, const Tokenizer& tok, const GenerateRequest& req,
                        const std::function<void(std::string_view)>& on_text) {
  using clock = std::chrono::steady_clock;
  const int V = model.dims().vocab;
  if (req.prompt.empty()) fail("the prompt is empty");
  if (req.max_tokens < 0) fail("max_tokens must be >= 0");
  req.sampling.validate(V);

  GenerateResult res;
  std::vector<float> logits(static_cast<size_t>(V));
  auto t0 = clock::now();
  model.run(session, req.prompt, req.prefill_chunk, logits.data());
  auto t1 = clock::now();
  res.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();

  SlotSampler sampler(req.sampling);
  std::optional<JsonVocabulary> json_vocabulary;  // JSON modes: every draw keeps the text a prefix of an allowed one
  std::shared_ptr<JsonConstraint> json;
  if (req.sampling.format != ResponseFormat::Text) json = json_vocabulary.emplace(tok, V).constraint(req.sampling.format, req.sampling.json_schema);
  const std::vector<uint8_t> penalty_free = penalty_free_tokens(tok, V);
  Utf8Stream utf8;
  StopMatcher stops(req.sampling.stop);
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    res.text += s;
    if (on_text) on_text(s);
  };
  res.finish_reason = "length";
  for (int step = 0; step < req.max_tokens; ++step) {
    if (stop_requested()) {  // SIGTERM: end this request cleanly with what it has
      res.finish_reason = "cancelled";
      break;
    }
    if (step > 0) model.run(session, std::span<const int32_t>(&res.tokens.back(), 1), 1, logits.data());
    int32_t token = sampler.next(logits.data(), V, penalty_free, json ? json->allowed().data() : nullptr);
    if (json && !json->accept(token)) fail(kDrawnOutsideTheFormat);
    if (std::find(req.sampling.token_stop.begin(), req.sampling.token_stop.end(), token) != req.sampling.token_stop.end()) {
      res.finish_reason = "stop_token";
      break;
    }
    res.tokens.push_back(token);
    std::string bytes = generated_bytes(tok, std::span<const int32_t>(&token, 1));
    bool stopped = false;
    emit(stops.push(utf8.push(bytes), stopped));
    if (stopped) {
      res.finish_reason = "stop_string";
      break;
    }
    if (json && json->complete()) {
      res.finish_reason = "format_complete";
      break;
    }
  }
  if (res.finish_reason != "stop_string") {
    bool stopped = false;
    emit(stops.push(utf8.finish(), stopped));
    if (stopped) res.finish_reason = "stop_string";
    else emit(stops.flush());
  }
  if (!res.tokens.empty() && res.finish_reason != "stop_token") res.unfed = {res.tokens.back()};
  res.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return res;
}

}  // namespace skein
