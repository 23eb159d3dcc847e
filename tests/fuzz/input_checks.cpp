#include "tests/fuzz/input_checks.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "common/error.h"
#include "coordinator/config.h"
#include "coordinator/eval_tasks.h"
#include "coordinator/json_grammar.h"
#include "coordinator/json_schema.h"
#include "coordinator/sampler.h"
#include "coordinator/strategy.h"
#include "model/architecture.h"
#include "model/checkpoint.h"
#include "model/state_file.h"
#include "model/tokenizer.h"
#include "net/api_request.h"
#include "net/openai_request.h"
#include "net/openai_tools.h"
#include "worker/cpu_backend.h"
#include "worker/engine.h"

namespace skein::fuzz {
namespace {

// The parsers read files, so each input becomes one: in a folder of this process's own (in memory where
// /dev/shm exists), rewritten per input and removed when the process exits.
class InputFolder {
 public:
  InputFolder() {
    std::filesystem::path shm = "/dev/shm";
    auto base = std::filesystem::exists(shm) ? shm : std::filesystem::temp_directory_path();
    path_ = base / ("skein-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(path_);
  }
  ~InputFolder() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

std::string input_file(std::string_view bytes, const std::string& suffix) {
  static const InputFolder folder;
  auto path = (folder.path() / ("input" + suffix)).string();
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
  return path;
}

// A refusal must be one line that says something.
void expect_one_line(const Error& e, const char* what) {
  std::string_view m = e.what();
  if (m.empty() || m.find('\n') != std::string_view::npos)
    throw Finding(std::string(what) + ": refusal is not one line: \"" + std::string(m) + "\"");
}

void expect(bool ok, const std::string& what) {
  if (!ok) throw Finding(what);
}

ApiLimits limits() {
  ApiLimits l;
  l.max_prompt_tokens = 4096;
  l.max_tokens_cap = 1024;
  return l;
}

void expect_valid_sampling(const SamplingParams& s, int vocab, const char* what) {
  try {
    s.validate(vocab);
  } catch (const Error& e) {
    throw Finding(std::string(what) + " accepted sampling parameters the sampler refuses: " + e.what());
  }
}

void expect_tokens_in_vocab(const std::vector<int32_t>& ids, int vocab, const char* what) {
  for (auto t : ids) expect(t >= 0 && t < vocab, std::string(what) + ": token id " + std::to_string(t) + " outside the vocabulary");
}

}  // namespace

bool checkpoint_file(std::string_view bytes) {
  try {
    auto ck = Checkpoint::open(input_file(bytes, ".model"));
    ModelDims dims = detect_architecture(*ck);
    CpuBackend backend;
    for (bool i8 : {false, true}) {
      WeightFormat format;
      format.i8 = i8;
      Engine engine(ck, dims, Engine::whole_model(dims, format), backend);
      SessionState state = engine.new_state();
      std::vector<float> logits(size_t(dims.vocab));
      std::vector<int32_t> tokens = {0, dims.vocab - 1};
      engine.forward(tokens, state, logits.data());
      // Whatever the weights (NaN, infinity), a draw from the logits is a token of the vocabulary.
      for (float temperature : {0.0f, 1.0f}) {
        SampleRequest r;
        r.temperature = temperature;
        r.top_p = 0.5f;
        r.u = 0.75;
        std::vector<float> row = logits;
        int32_t t = sample_row(row.data(), dims.vocab, r);
        expect(t >= 0 && t < dims.vocab, "model file: drew token " + std::to_string(t) + " from its logits");
      }
    }
    return true;
  } catch (const Error& e) {
    expect_one_line(e, "model file");
    return false;
  }
}

StateFileHeader state_file_header() {
  StateFileHeader h;
  h.dims = {Arch::V7, 2, 64, 1, 64, 256, 256};
  h.first_layer = 0;
  h.last_layer = 2;
  h.fingerprint = 0x5eed;
  return h;
}

void state_file(std::string_view bytes) {
  const StateFileHeader expect_header = state_file_header();
  try {
    auto data = load_state_file(input_file(bytes, ".state"), expect_header);
    expect(data.size() == expect_header.dims.state_floats(), "state file: accepted with the wrong number of floats");
  } catch (const Error& e) {
    expect_one_line(e, "state file");
  }
}

void api_line(std::string_view bytes) {
  static const ByteTokenizer tok;
  const ApiLimits l = limits();
  try {
    ApiLine line = parse_api_line(std::string(bytes), tok, 256, l);
    if (auto& g = line.generate) {
      expect_tokens_in_vocab(g->prompt, 256, "api line");
      expect(int(g->prompt.size()) <= l.max_prompt_tokens, "api line: prompt over the limit accepted");
      expect(g->max_tokens >= 0 && g->max_tokens <= l.max_tokens_cap, "api line: max_tokens outside [0, cap] accepted");
      expect(g->n >= 1 && g->n <= kMaxSamples, "api line: n outside [1, 16] accepted");
      expect_valid_sampling(g->sampling, 256, "api line");
    }
    expect(int(bool(line.generate)) + int(bool(line.cancel)) + int(bool(line.session_op)) == 1,
           "api line: accepted as none or several kinds of line");
  } catch (const Error& e) {
    expect_one_line(e, "api line");
  }
}

// A call the request requires is its reply's schema; a reply (here the body's own bytes, in pieces) is
// content, all of it, or one call whose arguments are JSON.
void tool_calls_of(const OpenAiRequest& r, std::string_view reply) {
  const bool forced = r.tools.choice == ChatTools::Choice::Required || r.tools.choice == ChatTools::Choice::Named;
  expect(!forced || (r.sampling.format == ResponseFormat::JsonSchema && r.sampling.json_schema == r.tools.call_schema),
         "openai body: a required call without its schema");
  ToolCallWatch watch(r.tools);
  std::string content;
  for (size_t i = 0; i < reply.size(); i += 7) content += watch.feed(reply.substr(i, 7));
  ToolCallWatch::End end = watch.finish();
  if (!end.call) return expect(content + end.content == reply, "tool call watch: content lost or changed");
  expect(r.tools.calls() && content.empty() && end.content.empty(), "tool call watch: a call beside content, or without tools");
  expect(nlohmann::json::accept(end.call->arguments), "tool call watch: arguments that are not JSON");
}

void openai_body(std::string_view bytes, bool chat) {
  static const ByteTokenizer tok;
  const ApiLimits l = limits();
  try {
    OpenAiRequest r = parse_openai_request(std::string(bytes), chat, tok, 256, l, ChatConfig{});
    expect(!r.prompts.empty(), "openai body: accepted without a prompt");
    expect(r.n >= 1 && int(r.prompts.size()) * r.n <= kMaxChoices, "openai body: more choices than allowed");
    for (auto& p : r.prompts) {
      expect_tokens_in_vocab(p.tokens, 256, "openai body");
      expect(int(p.tokens.size()) <= l.max_prompt_tokens, "openai body: prompt over the limit accepted");
    }
    expect(r.max_tokens >= 0 && r.max_tokens <= l.max_tokens_cap, "openai body: max_tokens outside [0, cap] accepted");
    expect_valid_sampling(r.sampling, 256, "openai body");
    if (chat) tool_calls_of(r, bytes);
  } catch (const Error& e) {
    expect_one_line(e, "openai body");
  }
}

void eval_data_file(std::string_view bytes) {
  static const ByteTokenizer tok;
  const std::string path = input_file(bytes, ".jsonl");
  auto expect_items = [](const std::vector<ScoreItem>& items, const char* what) {
    for (auto& it : items) {
      expect_tokens_in_vocab(it.tokens, 256, what);
      expect(it.first_target >= 1 && it.first_target < it.tokens.size(), std::string(what) + ": an item without targets");
    }
  };
  try {
    expect_items(lambada_items(read_lambada(path), tok, 0), "lambada data");
  } catch (const Error& e) {
    expect_one_line(e, "lambada data");
  }
  try {
    auto docs = read_choices(path);
    for (auto& d : docs) expect(d.label < d.choices.size() && d.choices.size() >= 2, "choice data: a label outside its choices");
    expect_items(choice_items(docs, tok, 0), "choice data");
  } catch (const Error& e) {
    expect_one_line(e, "choice data");
  }
  try {
    expect_items(perplexity_items(read_corpus(path), tok, 16, 8), "corpus");
  } catch (const Error& e) {
    expect_one_line(e, "corpus");
  }
}

void config_file(std::string_view bytes) {
  try {
    Config c = load_config(input_file(bytes, ".toml"));
    expect(c.threads >= 0 && c.threads <= kMaxThreads, "config: threads out of range accepted");
    try {
      c.sampling.validate_ranges();
    } catch (const Error& e) {
      throw Finding(std::string("config: accepted sampling the sampler refuses: ") + e.what());
    }
  } catch (const Error& e) {
    expect_one_line(e, "config");
  }
}

namespace {
void use_tokenizer(const Tokenizer& t) {
  expect(t.vocab_size() > 0, "tokenizer: empty vocabulary accepted");
  for (std::string_view text : {std::string_view("Hello, world! 123"), std::string_view("\xe4\xbd\xa0\xe5\xa5\xbd \n\t ")}) {
    auto ids = t.encode(text);
    expect_tokens_in_vocab(ids, t.vocab_size(), "tokenizer");
    try {
      (void)t.decode(ids);
    } catch (const Error& e) {
      expect_one_line(e, "tokenizer decode");
    }
  }
}
}  // namespace

void world_vocab_file(std::string_view bytes) {
  try {
    use_tokenizer(*make_tokenizer("world:" + input_file(bytes, ".txt")));
  } catch (const Error& e) {
    expect_one_line(e, "world vocabulary");
  }
}

void bpe_tokenizer_file(std::string_view bytes) {
  try {
    use_tokenizer(*make_tokenizer("bpe:" + input_file(bytes, ".json")));
  } catch (const Error& e) {
    expect_one_line(e, "bpe tokenizer");
  }
}

void tokenizer_text(std::string_view bytes, const std::string& shared_dir) {
  static const auto world = make_tokenizer("world:" + shared_dir + "/tokenizers/rwkv_vocab_v20230424.txt");
  static const auto bpe = make_tokenizer("bpe:" + shared_dir + "/tokenizers/20B_tokenizer.json");
  auto ids = world->encode(bytes);
  expect_tokens_in_vocab(ids, world->vocab_size(), "world tokenizer");
  expect(world->decode(ids) == bytes, "world tokenizer: decode(encode(text)) is not the text");

  try {  // byte-level BPE has no token for bytes that never occur in UTF-8: such text is refused
    auto bpe_ids = bpe->encode(bytes);
    expect_tokens_in_vocab(bpe_ids, bpe->vocab_size(), "bpe tokenizer");
    (void)bpe->decode(bpe_ids);
  } catch (const Error& e) {
    expect_one_line(e, "bpe tokenizer");
  }

  // Fed in pieces of 1, 2, 3, ... bytes: what comes out is valid UTF-8, and is the input when it was.
  Utf8Stream stream;
  std::string out;
  for (size_t pos = 0, piece = 1; pos < bytes.size(); pos += piece, ++piece) out += stream.push(bytes.substr(pos, piece));
  out += stream.finish();
  expect(is_utf8(out), "Utf8Stream: emitted invalid UTF-8");
  if (is_utf8(bytes)) expect(out == bytes, "Utf8Stream: changed valid UTF-8");
}

void strategy_text(std::string_view bytes) {
  try {
    for (auto& seg : parse_strategy(std::string(bytes))) {
      // What a segment prints must parse back to the same segment.
      auto text = format_segment(seg);
      auto again = parse_strategy(text);
      expect(again.size() == 1 && format_segment(again[0]) == text, "strategy: \"" + text + "\" does not parse back to itself");
    }
  } catch (const Error& e) {
    expect_one_line(e, "strategy");
  }
}

namespace {
// `keys`: the schema's properties in order; those in `optional` may be left out.
void json_text_under(std::string_view bytes, JsonRecognizer r, const std::vector<std::string>& keys, const std::set<std::string>& optional = {}) {
  std::string text;
  for (char c : bytes) {
    const JsonRecognizer before = r;
    if (!r.push(uint8_t(c))) {
      expect(r == before, "json text: a refused byte changed the recognizer");
      continue;
    }
    text += c;
    if (r.complete()) break;
    bool continues = false;
    for (int b = 0x20; b < 0xf5 && !continues; ++b) {
      JsonRecognizer probe = r;
      continues = b != 0x7f && probe.push(uint8_t(b));
    }
    expect(continues, "json text: no byte continues \"" + text.substr(0, 200) + "\"");
  }
  if (!r.complete()) return;
  const auto parsed = nlohmann::ordered_json::parse(text, nullptr, false);
  expect(parsed.is_object(), "json text: accepted \"" + text.substr(0, 200) + "\", which a JSON parser does not read as an object");
  if (keys.empty()) return;
  auto key = keys.begin();
  for (auto& [k, v] : parsed.items()) {
    while (key != keys.end() && *key != k && optional.count(*key)) ++key;
    expect(key != keys.end() && *key == k, "json text: accepted \"" + text.substr(0, 200) + "\", whose properties are not the schema's, in order");
    if (key != keys.end()) ++key;
  }
  while (key != keys.end() && optional.count(*key)) ++key;
  expect(key == keys.end(), "json text: accepted \"" + text.substr(0, 200) + "\", which leaves out a required property");
}
}  // namespace

void json_text(std::string_view bytes) {
  json_text_under(bytes, JsonRecognizer(), {});
  static const JsonSchema schema(nlohmann::ordered_json::parse(R"({"type": "object", "properties": {
      "s": {"type": "string"}, "i": {"type": "integer"}, "n": {"type": ["number", "null"]}, "b": {"type": "boolean"},
      "e": {"enum": ["x", 1, 10, null, [1], {"k": "é"}]}, "a": {"type": "array", "items": {"type": "object", "properties": {}}},
      "o": {"type": "object", "properties": {"z": {}}, "required": ["z"]}, "any": {}},
      "required": ["s", "i", "n", "b", "e", "a", "o", "any"]})"));
  json_text_under(bytes, JsonRecognizer(schema), {"s", "i", "n", "b", "e", "a", "o", "any"});
  // Unions (of objects sharing a first property, of types, of enums), a recursive $ref, and length and item limits.
  static const JsonSchema unions(nlohmann::ordered_json::parse(R"({"type": "object", "properties": {
      "u": {"anyOf": [{"type": "object", "properties": {"k": {"const": 1}, "x": {"type": "string", "minLength": 1, "maxLength": 3}}, "required": ["k", "x"]},
                      {"type": "object", "properties": {"k": {"enum": [1, 2]}, "y": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3}}, "required": ["k", "y"]},
                      {"type": ["integer", "string", "null"]}, {"enum": [10, "a", true]}]},
      "t": {"$ref": "#/$defs/T"}},
      "required": ["u", "t"],
      "$defs": {"T": {"type": "object", "properties": {"c": {"type": "array", "items": {"anyOf": [{"$ref": "#/$defs/T"}, {"type": "number"}]}}}, "required": ["c"]}}})"));
  json_text_under(bytes, JsonRecognizer(unions), {"u", "t"});
  // Patterns and formats (with lengths, escapes among their characters, two in one union) and bounds.
  static const JsonSchema patterns(nlohmann::ordered_json::parse(R"({"type": "object", "properties": {
      "p": {"type": "string", "pattern": "^(a|b\\n)+[0-9]{2}$", "maxLength": 6},
      "d": {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "ipv4"}, {"type": "integer"}]},
      "q": {"type": "array", "items": {"type": "string", "pattern": "é+\"", "minLength": 3}},
      "i": {"type": "integer", "minimum": -20, "exclusiveMaximum": 300, "multipleOf": 3}, "x": {"type": ["number", "null"], "exclusiveMinimum": 0.5, "maximum": 2.25, "multipleOf": 0.25}},
      "required": ["p", "d", "q", "i", "x"]})"));
  json_text_under(bytes, JsonRecognizer(patterns), {"p", "d", "q", "i", "x"});
  // Optional properties (keys sharing a prefix, around required ones), dicts with limits, an optional
  // recursion, and a tuple.
  static const JsonSchema defaults(nlohmann::ordered_json::parse(R"({"type": "object", "properties": {
      "a": {"type": "integer"}, "ab": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}}, "maxProperties": 2},
      "r": {"type": "boolean"}, "m": {"type": "object", "additionalProperties": true, "minProperties": 1},
      "me": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}, "t": {"type": "array", "prefixItems": [{"type": "integer"}, {"$ref": "#"}], "items": {"type": "boolean"}},
      "z": {"const": 0}, "n": {"type": "object", "additionalProperties": {"type": "integer", "maximum": 9}, "propertyNames": {"enum": ["a", "a.b"]}},
      "k": {"type": "object", "patternProperties": {"^k[0-9]$": {"type": "string", "maxLength": 2}}}},
      "required": ["r", "z"]})"));
  json_text_under(bytes, JsonRecognizer(defaults), {"a", "ab", "r", "m", "me", "t", "z", "n", "k"}, {"a", "ab", "m", "me", "t", "n", "k"});
}

void run_check(std::string_view target, std::string_view in, const std::string& shared_dir) {
  if (target == "checkpoint_file") return void(checkpoint_file(in));
  if (target == "state_file") return state_file(in);
  if (target == "api_line") return api_line(in);
  if (target == "openai_completion") return openai_body(in, false);
  if (target == "openai_chat") return openai_body(in, true);
  if (target == "eval_data_file") return eval_data_file(in);
  if (target == "config_file") return config_file(in);
  if (target == "world_vocab_file") return world_vocab_file(in);
  if (target == "bpe_tokenizer_file") return bpe_tokenizer_file(in);
  if (target == "tokenizer_text") return tokenizer_text(in, shared_dir);
  if (target == "strategy_text") return strategy_text(in);
  if (target == "json_text") return json_text(in);
  throw Finding("no input check called " + std::string(target));
}

}  // namespace skein::fuzz
