// What every untrusted input must do: be accepted with its invariants holding, or be refused with a
// skein::Error of one line. Anything else (a crash, another exception, a broken invariant) is a bug.
// The libFuzzer targets (fuzzer.cpp) and the test suite (test_fuzz_inputs.cpp) run the same checks.
#pragma once
#include <stdexcept>
#include <string>
#include <string_view>

#include "model/state_file.h"

namespace skein::fuzz {

// A check that found a bug; never caught by the checks themselves.
class Finding : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// A model file (.pth or .safetensors, by content): opened, architecture detected, loaded as stored and
// as i8, and two tokens run through it. True when it was accepted, false when refused.
bool checkpoint_file(std::string_view bytes);
// The small v7 model's header that state_file reads against.
StateFileHeader state_file_header();
// A state file (model/state_file.h) read against state_file_header().
void state_file(std::string_view bytes);
// One TCP protocol line (net/api_request.h), over the byte tokenizer.
void api_line(std::string_view bytes);
// An OpenAI request body (net/openai_request.h), completions or chat.
void openai_body(std::string_view bytes, bool chat);
// An eval data file (coordinator/eval_tasks.h) read as LAMBADA, multiple-choice and corpus .jsonl, and
// turned into scored items.
void eval_data_file(std::string_view bytes);
// A TOML config file (coordinator/config.h).
void config_file(std::string_view bytes);
// A World vocabulary file or a BPE tokenizer.json, loaded and used.
void world_vocab_file(std::string_view bytes);
void bpe_tokenizer_file(std::string_view bytes);
// Text through the World and BPE tokenizers (from `shared_dir`/tokenizers) and Utf8Stream: World gives
// the text back exactly, Utf8Stream passes valid UTF-8 through unchanged and never emits invalid UTF-8.
void tokenizer_text(std::string_view bytes, const std::string& shared_dir);
// Model output under JSON mode (coordinator/json_grammar.h), the bytes tried in turn, once for any JSON
// object and once under a schema of every kind the subset has: a refused byte is dropped and leaves the
// recognizer as it was, no accepted prefix is a dead end (some printable or UTF-8 byte goes on), and an
// accepted text that completes is an object to a JSON parser, with the schema's properties in order.
void json_text(std::string_view bytes);
// A strategy string (coordinator/strategy.h).
void strategy_text(std::string_view bytes);

// The check called `target` (the functions above, openai_body as openai_completion and openai_chat).
void run_check(std::string_view target, std::string_view bytes, const std::string& shared_dir);
inline constexpr const char* kTargets[] = {"checkpoint_file", "state_file", "api_line", "openai_completion", "openai_chat",
                                           "eval_data_file", "config_file", "world_vocab_file", "bpe_tokenizer_file", "tokenizer_text", "strategy_text", "json_text"};

}  // namespace skein::fuzz
