// Single-process generation loop: chunked prefill of the prompt, then one token per step with the
// official PIPELINE penalties and sampling, streaming text that never splits a UTF-8 character and that
// stops at stop tokens or stop strings.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/sampler.h"
#include "coordinator/model_handle.h"
#include "model/tokenizer.h"

namespace skein {

struct GenerateRequest {
  std::vector<int32_t> prompt;  // must not be empty
  int max_tokens = 100;
  SamplingParams sampling;
  int prefill_chunk = 1024;  // tokens per forward call while reading the prompt
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated, stop token excluded
  // Generated tokens the state has not seen: the last one, unless a stop token came after it (the stop
  // token itself never enters the state). Run them before saving the state to continue the text later.
  std::vector<int32_t> unfed;
  std::string text;             // exactly what on_text received
  std::string finish_reason;    // "length", "stop_token", "stop_string" or "cancelled" (SIGTERM)
  double prefill_seconds = 0, decode_seconds = 0;
};

// Runs on `session` of `model`, whose state the prompt continues.
GenerateResult generate(ModelHandle& model, int session, const Tokenizer& tok, const GenerateRequest& req,
                        const std::function<void(std::string_view)>& on_text = {});

// One byte per token id: 1 where the token's text is penalty-free (see RepetitionPenalty::record).
std::vector<uint8_t> penalty_free_tokens(const Tokenizer& tok, int vocab);

// Holds back text that might be the start of a stop string; reports where a stop string completes.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Adds text; returns what is safe to emit. Sets `stopped` when a stop string completed (the returned
  // text then ends right before it).
  std::string push(std::string_view text, bool& stopped);
  std::string flush();  // at the end: everything held back

 private:
  std::vector<std::string> stops_;
  std::string held_;
};

}  // namespace skein
