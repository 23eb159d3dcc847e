// JSON mode: the byte recognizer against a JSON parser (both directions), its refusals byte by byte,
// the vocabulary masks against token-by-token checks on every tokenizer Skein reads, and constrained
// generation end to end over HTTP and TCP, alone and on a 3-rank cluster.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "common/error.h"
#include "coordinator/json_constraint.h"
#include "coordinator/json_grammar.h"
#include "model/bpe_tokenizer.h"
#include "model/tokenizer.h"
#include "tests/server_harness.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

using json = nlohmann::json;

// The byte where `text` stops being a prefix of a JSON object text, or npos.
size_t first_refused(const std::string& text, JsonRecognizer* out = nullptr) {
  JsonRecognizer r;
  for (size_t i = 0; i < text.size(); ++i)
    if (!r.push(uint8_t(text[i]))) return i;
  if (out) *out = r;
  return std::string::npos;
}

bool is_json_object(const std::string& text) {
  try {
    return json::parse(text).is_object();
  } catch (const json::exception&) {
    return false;
  }
}

TEST(JsonGrammar, AcceptsJsonObjectsAndCompletesAtTheirLastByte) {
  for (const std::string& text : std::vector<std::string>{
           R"({})", R"( {"a":1})", "{\n  \"a\": [1, 2.5, -0.25e+3, 0, -7E2],\n  \"b\": {\"c\": null, \"d\": true, \"e\": false}\n}",
           R"({"s": "quote \" backslash \\ slash \/ \b\f\n\r\t", "u": "\u00e9\u20AC\uD7FF\uE000"})", R"({"ä": "日本語 🪿 ÿ"})",
           R"({"a":[],"b":[[],[{}]],"c":{}})", "{\"deep\":" + std::string(60, '[') + std::string(60, ']') + "}",
           "{\n\t\t\"tabs\": 1}", R"({"n": 123456789012345678901234567890, "e": [1e99, -1.0E-99, 2e+09, 0.000000000000000000000001]})"}) {
    SCOPED_TRACE(text);
    ASSERT_TRUE(is_json_object(text));
    JsonRecognizer r;
    for (size_t i = 0; i < text.size(); ++i) {
      EXPECT_FALSE(r.complete()) << "at byte " << i;
      ASSERT_TRUE(r.push(uint8_t(text[i]))) << "refused byte " << i << " '" << text[i] << "'";
    }
    EXPECT_TRUE(r.complete());
    EXPECT_EQ(r.depth(), 0);
  }
}

TEST(JsonGrammar, RefusesTheFirstByteThatCannotContinueAndStaysAsItWas) {
  struct Case {
    std::string text;
    size_t refused;  // the byte that cannot come
  };
  for (const Case& c : std::vector<Case>{
           {"[1]", 0},                           // the top level is an object
           {R"("a")", 0},
           {R"({'a': 1})", 1},
           {R"({"a" 1})", 5},
           {R"({"a": 01})", 7},                  // no leading zeros
           {R"({"a": 1,})", 8},
           {R"({"a": -})", 7},
           {R"({"a": 1.})", 8},
           {R"({"a": 1e})", 8},
           {R"({"a": .5})", 6},
           {R"({"a": tru})", 9},
           {R"({"a": nul1})", 9},
           {R"({"a": [1}})", 8},                 // brackets must match
           {R"({"a": 1]})", 7},
           {R"({"a": 1}})", 8},                  // nothing after the object but whitespace
           {R"({"a": 1} x)", 9},
           {"{\"a\": \"tab\there\"}", 10},        // control characters must be escaped
           {R"({"a": "\q"})", 8},
           {R"({"a": "\u12g4"})", 11},
           {R"({"a": "\ud800"})", 10},           // no surrogate escapes
           {R"({"a": "\uDC00"})", 10},
           {"{\"a\": \"\xc0\xaf\"}", 7},          // overlong UTF-8
           {"{\"a\": \"\xe0\x80\x80\"}", 8},
           {"{\"a\": \"\xed\xa0\x80\"}", 8},      // an encoded surrogate
           {"{\"a\": \"\xf4\x90\x80\x80\"}", 8},  // above U+10FFFF
           {"{\"a\": \"\xe2\x82\"}", 9},          // a character cut short
           {"{\"a\": \"\x80\"}", 7},
           {"{  \"a\": 1}", 2},                   // whitespace: one space, or a newline and an indent
           {"{\n\n\"a\": 1}", 2},
           {"{\r\n\"a\": 1}", 1},
           {"{ \n\"a\": 1}", 2},
           {"{\n" + std::string(JsonRecognizer::kMaxIndent + 1, ' ') + "\"a\": 1}", 2 + JsonRecognizer::kMaxIndent},
           {R"({"a": 1e100})", 10},               // numbers stay within a double's range
           {R"({"a": -2.5E-123})", 14},
           {"{\"a\": " + std::string(JsonRecognizer::kMaxIntegerDigits + 1, '9') + "}", 6 + JsonRecognizer::kMaxIntegerDigits},
       }) {
    SCOPED_TRACE(c.text);
    JsonRecognizer r;
    for (size_t i = 0; i < c.refused; ++i) ASSERT_TRUE(r.push(uint8_t(c.text[i]))) << "refused byte " << i;
    const JsonRecognizer before = r;
    EXPECT_FALSE(r.push(uint8_t(c.text[c.refused])));
    EXPECT_TRUE(r == before);
  }
  // Nesting stops at kMaxDepth levels; the levels already open can still close.
  std::string deep;
  for (int d = 0; d < JsonRecognizer::kMaxDepth; ++d) deep += "{\"a\":";
  JsonRecognizer r;
  ASSERT_TRUE(r.push(deep.substr(0, deep.size() - 4)));  // kMaxDepth objects open, the last without a key yet
  ASSERT_TRUE(r.push("\"a\":"));
  EXPECT_FALSE(r.push(uint8_t('{')));
  EXPECT_FALSE(r.push(uint8_t('[')));
  EXPECT_TRUE(r.push(std::string(JsonRecognizer::kMaxDepth, '}').insert(0, 1, '1')));
  EXPECT_TRUE(r.complete());
}

// Random JSON values as nlohmann writes them (compact and indented; UTF-8 kept, control characters
// escaped) are accepted whole.
json random_value(std::mt19937& rng, int depth) {
  std::uniform_int_distribution<int> kind(0, depth > 4 ? 5 : 7);
  auto text = [&] {
    static const std::vector<std::string> pieces = {"a", "Z", " ", "\"", "\\", "/", "\n", "\t", "\x01", "\x1f", "é", "€", "🪿", "日", "0", "}", "]"};
    std::string s;
    for (int i = std::uniform_int_distribution<int>(0, 6)(rng); i > 0; --i) s += pieces[rng() % pieces.size()];
    return s;
  };
  switch (kind(rng)) {
    case 0: return nullptr;
    case 1: return bool(rng() % 2);
    case 2: return int64_t(rng()) - int64_t(1u << 31);
    case 3: return std::uniform_real_distribution<double>(-1e6, 1e6)(rng);
    case 4: return std::ldexp(std::uniform_real_distribution<double>(-1, 1)(rng), int(rng() % 200) - 100);
    case 5: return text();
    case 6: {
      json a = json::array();
      for (int i = int(rng() % 4); i > 0; --i) a.push_back(random_value(rng, depth + 1));
      return a;
    }
    default: {
      json o = json::object();
      for (int i = int(rng() % 4); i > 0; --i) o[text()] = random_value(rng, depth + 1);
      return o;
    }
  }
}

TEST(JsonGrammar, AcceptsWhatAParserWrites) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    json o = json::object();
    for (int k = int(rng() % 5); k > 0; --k) o[std::string(1, char('a' + k))] = random_value(rng, 1);
    for (const std::string& text : {o.dump(), o.dump(2), o.dump(1, '\t')}) {
      JsonRecognizer r;
      ASSERT_TRUE(r.push(text)) << text << "\nrefused at byte " << first_refused(text);
      EXPECT_TRUE(r.complete()) << text;
    }
  }
}

// The other direction: random walks that only take bytes the recognizer allows always stay
// continuable (some byte of printable ASCII or a UTF-8 continuation continues them, which is what
// JsonVocabulary asks of a vocabulary), and the texts that complete parse as JSON objects.
TEST(JsonGrammar, WhatItAcceptsAParserReadsAndItNeverDeadEnds) {
  std::mt19937 rng(11);
  const std::string alphabet = "{}[]:,\" \n\t\\/-+.0123456789eEtrufalsn\"\"\"\"bxyz{}[]";
  const std::string utf8 = "\xc3\xa9\xe2\x82\xac\xf0\x9f\xaa\xbf\xed\x9f\xbf\x80\xbf\xc0\xff";
  int completed = 0;
  for (int walk = 0; walk < 3000; ++walk) {
    JsonRecognizer r;
    std::string text;
    for (int step = 0; step < 400 && !r.complete(); ++step) {
      bool pushed = false;
      for (int attempt = 0; attempt < 64 && !pushed; ++attempt) {
        const uint8_t b = rng() % 8 == 0 ? uint8_t(utf8[rng() % utf8.size()]) : uint8_t(alphabet[rng() % alphabet.size()]);
        if (r.push(b)) text += char(b), pushed = true;
      }
      if (pushed) continue;
      bool any = false;  // stuck by chance, or a dead end?
      for (int b = 0x20; b < 0xc0 && !any; ++b) {
        JsonRecognizer probe = r;
        any = b != 0x7f && probe.push(uint8_t(b));
      }
      ASSERT_TRUE(any) << "no byte continues: " << text;
      break;
    }
    if (!r.complete()) continue;
    ++completed;
    EXPECT_TRUE(is_json_object(text)) << text;
  }
  EXPECT_GT(completed, 100);
}

// A test tokenizer over a fixed list of token texts (id = index).
class ListTokenizer final : public Tokenizer {
 public:
  explicit ListTokenizer(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {}
  std::string name() const override { return "list"; }
  int vocab_size() const override { return int(tokens_.size()); }
  std::vector<int32_t> encode(std::string_view) const override { return {}; }
  std::string decode(std::span<const int32_t> ids) const override {
    std::string s;
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size() || tokens_[size_t(id)].empty()) fail("token id ", id, " has no text");
      s += tokens_[size_t(id)];
    }
    return s;
  }

 private:
  std::vector<std::string> tokens_;
};

// States a generation passes through, as the text so far.
const std::vector<std::string> kPrefixes = {"", " ", "\n  ", "{", "{\"", "{\"na", "{\"name\"", "{\"name\":", "{\"a\": \"x\\", "{\"a\": \"\\u00",
                                            "{\"a\": \"\xe2\x82", "{\"a\": 1", "{\"a\": -0", "{\"a\": 1.5e", "{\"a\": [tr", "{\"a\": [1, {\"b\": nu",
                                            "{\"a\": {}", "{\"a\": [\n    "};

void expect_masks_match_token_checks(JsonVocabulary& v, const Tokenizer& tok) {
  for (const std::string& prefix : kPrefixes) {
    SCOPED_TRACE(prefix);
    JsonRecognizer state;
    ASSERT_TRUE(state.push(prefix));
    const std::vector<uint64_t> mask = v.allowed(state);
    ASSERT_EQ(mask.size(), (size_t(v.vocab()) + 63) / 64);
    int allowed = 0;
    for (int32_t t = 0; t < v.vocab(); ++t) {
      const std::string bytes = v.bytes(t);
      JsonRecognizer next = state;
      const bool expect = !bytes.empty() && next.push(bytes) && !(tok.end_of_text() && *tok.end_of_text() == t);
      const bool got = (mask[size_t(t) / 64] >> (t % 64)) & 1;
      ASSERT_EQ(got, expect) << "token " << t << " '" << bytes << "'";
      allowed += got;
    }
    EXPECT_GT(allowed, 0);
    EXPECT_EQ(v.allowed(state), mask);  // from the cache
  }
}

TEST(JsonVocabulary, MasksAreWhatEachTokensBytesAllowOnEveryTokenizer) {
  const WorldTokenizer world(shared_dir() + "/tokenizers/rwkv_vocab_v20230424.txt");
  JsonVocabulary w(world, 65536);  // the head is wider than the 65529 entries
  expect_masks_match_token_checks(w, world);
  const BpeTokenizer bpe(shared_dir() + "/tokenizers/20B_tokenizer.json");
  JsonVocabulary b(bpe, 50277);
  expect_masks_match_token_checks(b, bpe);
  const ByteTokenizer bytes;
  JsonVocabulary y(bytes, 256);
  expect_masks_match_token_checks(y, bytes);
  // Multi-byte tokens that share prefixes, repeated texts, and a token that is a prefix of another.
  std::vector<std::string> list;
  for (int c = 0; c < 256; ++c) list.push_back(std::string(1, char(c)));
  for (std::string t : {"{\"", "{\"name", "{\"name\":", "\": ", "\": \"", "\"}", "\"},", "true", "tru", "true}", "1.5", "e+", "\\u00e9", "{\"", "  ", "\n  ", "\n\n"})
    list.push_back(t);
  list.push_back("");  // an id without text
  const ListTokenizer listed(list);
  JsonVocabulary l(listed, int(list.size()) + 5);  // and ids past the tokenizer
  expect_masks_match_token_checks(l, listed);
}

TEST(JsonVocabulary, AVocabularyWithoutEverySingleByteIsRefused) {
  std::vector<std::string> list;
  for (int c = 0; c < 256; ++c)
    if (c != '}') list.push_back(std::string(1, char(c)));
  list.push_back("}\n");
  const ListTokenizer listed(list);
  try {
    JsonVocabulary v(listed, int(list.size()));
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "JSON mode needs a token for every single byte, and the list vocabulary has none for byte 0x7d");
  }
}

TEST(JsonConstraint, FollowsTheTokensDrawnAndCompletesWithTheObject) {
  const ByteTokenizer bytes;
  JsonVocabulary v(bytes, 256);
  JsonConstraint c(v);
  for (char ch : std::string("{\"a\": [1, \"x\"]"))
    ASSERT_TRUE(c.accept(uint8_t(ch)));
  EXPECT_FALSE(c.complete());
  EXPECT_FALSE(c.accept('x'));  // refused, nothing changed
  EXPECT_FALSE((c.allowed()['x' / 64] >> ('x' % 64)) & 1);
  EXPECT_TRUE((c.allowed()['}' / 64] >> ('}' % 64)) & 1);
  ASSERT_TRUE(c.accept('}'));
  EXPECT_TRUE(c.complete());
}

}  // namespace
}  // namespace skein::test

namespace skein::test {
namespace {

// A reply cut by max_tokens is a prefix of a JSON object (its last character may be unfinished: the
// server sends U+FFFD for it).
void expect_json_or_prefix(const std::string& text, const std::string& finish) {
  if (finish == "stop" || finish == "format_complete") {
    EXPECT_TRUE(is_json_object(text)) << text;
    return;
  }
  ASSERT_EQ(finish, "length");
  const size_t refused = first_refused(text);
  EXPECT_TRUE(refused == std::string::npos || (refused + 3 == text.size() && text.substr(refused) == "\xEF\xBF\xBD")) << text;
}

TEST(JsonMode, RepliesAreJsonObjectsOverHttpAndTcpAloneAndOnTheCluster) {
  const std::string model = shared_dir() + "/models/tiny-rwkv-7v0-834K.pth";
  std::vector<std::string> first_texts;
  for (int ranks : {1, 3}) {
    SCOPED_TRACE(ranks);
    Server server("", ranks, model);
    ASSERT_GT(server.http_port(), 0) << server.output();
    auto r = http_request(server.http_port(), "POST", "/v1/chat/completions",
                          R"({"messages": [{"role": "user", "content": "Describe the man as JSON."}], "max_tokens": 300, "n": 6, "seed": 1,
                              "temperature": 0.7, "response_format": {"type": "json_object"}})");
    ASSERT_EQ(r.status, 200) << r.body;
    std::vector<std::string> texts;
    int complete = 0;
    const json reply = r.json();
    for (auto& c : reply["choices"]) {
      const std::string text = c["message"]["content"], finish = c["finish_reason"];
      expect_json_or_prefix(text, finish);
      complete += finish == "stop";
      texts.push_back(text);
    }
    EXPECT_GE(complete, 2);  // the tiny model closes its object within 300 tokens in most samples
    // Over TCP: the final event says why it ended.
    Client tcp(server.port());
    tcp.send(R"({"id": "j", "prompt": "The man said", "max_tokens": 300, "seed": 1, "temperature": 0.7, "stream": false, "response_format": {"type": "json_object"}})");
    auto events = tcp.until_done("j");
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back()["finish_reason"], "format_complete") << events.back().dump();
    expect_json_or_prefix(events.back()["text"], events.back()["finish_reason"]);
    texts.push_back(events.back()["text"]);
    // Without response_format the same request is unconstrained.
    tcp.send(R"({"id": "t", "prompt": "The man said", "max_tokens": 40, "seed": 1, "temperature": 0.7, "stream": false})");
    events = tcp.until_done("t");
    ASSERT_FALSE(events.empty());
    EXPECT_FALSE(is_json_object(events.back()["text"])) << events.back().dump();
    // The masks travel with the steps to the last stage: the cluster draws what one process draws.
    if (first_texts.empty()) first_texts = texts;
    else EXPECT_EQ(texts, first_texts);
  }
}

// The JSON object a command printed after its prompt (where the recognizer completes), or "".
std::string object_after(const std::string& output, const std::string& prompt) {
  if (output.rfind(prompt, 0) != 0) return "";
  JsonRecognizer r;
  for (size_t i = prompt.size(); i < output.size(); ++i)
    if (!r.push(uint8_t(output[i]))) return "";
    else if (r.complete()) return output.substr(prompt.size(), i + 1 - prompt.size());
  return "";
}

TEST(JsonMode, TheCommandLineGeneratesJsonInOneProcessAndOnTheCluster) {
  const std::string args = "generate --model " + shared_dir() + "/models/tiny-rwkv-7v0-834K.pth --json --seed 1 --temperature 0.7 --max-tokens 300";
  const std::string prompt = "The man said";
  CommandResult one = run_shell(std::string(SKEIN_BINARY) + " " + args + " --prompt '" + prompt + "'");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const std::string reply = object_after(one.output, prompt);
  EXPECT_TRUE(is_json_object(reply)) << one.output;
  EXPECT_NE(one.output.find(reply + "\n[12 prompt tokens"), std::string::npos) << one.output;
  EXPECT_NE(one.output.find("finish: format_complete]"), std::string::npos) << one.output;
  // Sampled on rank 0 from the last stage's logits; with several prompts, by the scheduler on the last stage.
  CommandResult cluster = run_shell(mpirun_skein(3, args + " --prompt '" + prompt + "'"));
  ASSERT_EQ(cluster.exit_code, 0) << cluster.output;
  EXPECT_EQ(object_after(cluster.output, prompt), reply) << cluster.output;
  CommandResult two = run_shell(mpirun_skein(3, args + " --prompt '" + prompt + "' --prompt 'It was'"));
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_NE(two.output.find("--- [0] 98 tokens, finish: format_complete\n" + prompt + reply + "\n"), std::string::npos) << two.output;
  EXPECT_NE(two.output.find("--- [1] "), std::string::npos) << two.output;
}

// A World-sized head (65,536 tokens): the masks are 8 KB a step on the wire, and a structural state
// bans some 65,000 tokens a draw. A 3-rank server's greedy reply is the command line's.
TEST(JsonMode, AWorldVocabularyIsConstrainedTheSameOnTheCluster) {
  const std::string dir = temp_dir(), model = dir + "/world.pth", world = "world:" + shared_dir() + "/tokenizers/rwkv_vocab_v20230424.txt";
  ASSERT_EQ(run_skein("make-model --arch v7 --layers 2 --embd 64 --vocab 65536 --seed 3 --dtype fp32 -o " + model).exit_code, 0);
  const std::string prompt = "The answer:";
  CommandResult cli = run_shell(std::string(SKEIN_BINARY) + " generate --model " + model + " --tokenizer " + world +
                                " --json --temperature 0 --max-tokens 24 --prompt '" + prompt + "'");
  ASSERT_EQ(cli.exit_code, 0) << cli.output;
  const std::string want = cli.output.substr(prompt.size(), cli.output.find("\n[") - prompt.size());
  EXPECT_EQ(first_refused(want), std::string::npos) << want;
  EXPECT_GT(want.size(), 24u) << want;  // multi-byte tokens
  Server server("--tokenizer " + world, 3, model);
  ASSERT_GT(server.http_port(), 0) << server.output();
  const HttpReply r = http_request(server.http_port(), "POST", "/v1/completions",
                                   R"({"prompt": ")" + prompt + R"(", "max_tokens": 24, "temperature": 0, "response_format": {"type": "json_object"}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["choices"][0]["text"], want);
}

TEST(JsonMode, FormatsItCannotServeAreRefusedClearly) {
  Server server;
  ASSERT_GT(server.http_port(), 0) << server.output();
  for (auto [format, message] :
       {std::pair{R"({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})",
                  R"(response_format: json_schema is not supported; {"type": "json_object"} constrains the output to a JSON object)"},
        {R"({"type": "xml"})", R"(response_format: type must be "text" or "json_object", got "xml")"},
        {R"("json")", R"(response_format: must be {"type": "text"} or {"type": "json_object"})"},
        {R"({"type": "json_object", "strict": true})", "response_format: unknown field 'strict'"}}) {
    auto r = http_request(server.http_port(), "POST", "/v1/chat/completions",
                          std::string(R"({"messages": [{"role": "user", "content": "x"}], "response_format": )") + format + "}");
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_EQ(r.json()["error"]["message"], message) << r.body;
    Client tcp(server.port());
    tcp.send(std::string(R"({"id": "x", "prompt": "x", "response_format": )") + format + "}");
    auto e = tcp.event();
    EXPECT_EQ(e["event"], "error") << e.dump();
    EXPECT_EQ(e["error"], message) << e.dump();
  }
  auto ok = http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": "x", "max_tokens": 2, "response_format": {"type": "text"}})");
  EXPECT_EQ(ok.status, 200) << ok.body;
}

}  // namespace
}  // namespace skein::test
