// The OpenAI-compatible request bodies (/v1/completions, /v1/chat/completions), parsed and validated
// into what the service runs. OpenAI names map to the engine's: presence_penalty -> alpha_presence,
// frequency_penalty -> alpha_frequency; RWKV extras (top_k, alpha_decay, session) and vLLM's priority
// are accepted too. n samples share one prefill of the prompt (coordinator/inference_service's siblings).
#pragma once
#include <string>
#include <vector>

#include "coordinator/config.h"
#include "coordinator/sampler.h"
#include "model/tokenizer.h"
#include "net/api_request.h"
#include "net/openai_tools.h"

namespace skein {

// One prompt of a request: its tokens and, for echo, its text.
struct OpenAiPrompt {
  std::vector<int32_t> tokens;
  std::string text;
  size_t preamble = 0;  // chat: the leading tokens that list the tools (ServiceRequest::preamble)
};

// Prompts one completions request may carry (a batch, as lm-evaluation-harness sends), times n.
constexpr int kMaxChoices = 64;

struct OpenAiRequest {
  std::string model;
  std::vector<OpenAiPrompt> prompts;  // chat: one; completions: a batch (choice index = prompt * n + sample)
  int max_tokens = 0;
  SamplingParams sampling;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::string session;
  int n = 1;  // samples of the prompt (choice i draws with seed + i)
  int priority = 0;  // vLLM's extra: lower runs first, and may preempt (ServiceRequest::priority)
  bool echo = false;  // completions: the reply's text starts with the prompt's (and its logprobs with the prompt's)
  ChatTools tools;    // chat: the functions offered and whether the reply is read as a call
};


// "User: hi\n\nAssistant:" from chat messages (role, text), per the [chat] settings.
std::string chat_prompt(const std::vector<std::pair<std::string, std::string>>& messages, const ChatConfig& chat);

// Throws skein::Error naming the parameter ("temperature: must be a number").
OpenAiRequest parse_openai_request(const std::string& body, bool chat, const Tokenizer& tok, int vocab, const ApiLimits& limits,
                                   const ChatConfig& chat_cfg);

}  // namespace skein
