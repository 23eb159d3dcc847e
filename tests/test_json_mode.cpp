// JSON mode: the byte recognizer against a JSON parser (both directions), its refusals byte by byte,
// the vocabulary masks against token-by-token checks on every tokenizer Skein reads, and constrained
// generation end to end over HTTP and TCP, alone and on a 3-rank cluster.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <cmath>
#include <random>

#include "common/error.h"
#include "coordinator/json_constraint.h"
#include "coordinator/json_grammar.h"
#include "coordinator/json_schema.h"
#include "model/bpe_tokenizer.h"
#include "model/tokenizer.h"
#include "tests/server_harness.h"
#include "tests/string_checks.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

using json = nlohmann::json;

// The byte where `text` stops being a prefix of a JSON object text (of `r`'s schema, when it has one), or npos.
size_t first_refused(const std::string& text, JsonRecognizer r = {}) {
  for (size_t i = 0; i < text.size(); ++i)
    if (!r.push(uint8_t(text[i]))) return i;
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

void expect_masks_match_token_checks(JsonVocabulary& v, const Tokenizer& tok, const JsonRecognizer& start = {},
                                     const std::vector<std::string>& prefixes = kPrefixes) {
  for (const std::string& prefix : prefixes) {
    SCOPED_TRACE(prefix);
    JsonRecognizer state = start;
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

// A schema with every kind the subset has: properties in order, an integer, an enum, an array of
// numbers, a boolean, a nullable string, a nested object, and a part of any shape.
const char* kGooseSchema = R"({"type": "object", "title": "goose",
  "properties": {"name": {"type": "string", "description": "what it is called"}, "age": {"type": "integer"},
                 "kind": {"enum": ["goose", "duck", "swan"]}, "weights": {"type": "array", "items": {"type": "number"}},
                 "wild": {"type": "boolean"}, "owner": {"type": ["string", "null"]},
                 "nest": {"type": "object", "properties": {"eggs": {"type": "integer"}, "at": {"enum": [1, 10, 100, null]}},
                          "required": ["eggs", "at"], "additionalProperties": false},
                 "notes": {}, "empty": {"type": "object", "properties": {}}},
  "required": ["name", "age", "kind", "weights", "wild", "owner", "nest", "notes", "empty"], "additionalProperties": false})";

nlohmann::ordered_json goose_schema() { return nlohmann::ordered_json::parse(kGooseSchema); }

// Exact for 64-bit integers and for doubles up to 2^53; beyond, what a double holds of the digits cannot
// tell (test_string_pattern checks long multiples digit by digit).
bool divides(const nlohmann::ordered_json& v, const nlohmann::ordered_json& schema) {
  if (!schema.contains("multipleOf")) return true;
  if (!schema["multipleOf"].is_number_integer()) {  // m / 10^k: v times 10^k, a whole number, divided by m
    const std::string written = schema["multipleOf"].dump();
    const size_t k = written.size() - written.find('.') - 1;
    const double ten_k = std::pow(10.0, double(k)), scaled = v.get<double>() * ten_k, whole = std::round(scaled);
    const double m = std::round(schema["multipleOf"].get<double>() * ten_k);
    if (std::fabs(scaled) > 9007199254740992.0) return true;  // a double no longer holds its digits
    return std::fabs(scaled - whole) <= 1e-6 * std::max(1.0, std::fabs(scaled)) && std::fmod(whole, m) == 0;
  }
  const int64_t m = schema["multipleOf"].get<int64_t>();
  if (v.is_number_unsigned()) return v.get<uint64_t>() % uint64_t(m) == 0;
  if (v.is_number_integer()) return v.get<int64_t>() % m == 0;
  return std::fabs(v.get<double>()) > 9007199254740992.0 || std::fmod(v.get<double>(), double(m)) == 0;
}

bool within_bounds(double x, const nlohmann::ordered_json& schema) {
  return !(schema.contains("minimum") && x < schema["minimum"].get<double>()) && !(schema.contains("maximum") && x > schema["maximum"].get<double>()) &&
         !(schema.contains("exclusiveMinimum") && x <= schema["exclusiveMinimum"].get<double>()) &&
         !(schema.contains("exclusiveMaximum") && x >= schema["exclusiveMaximum"].get<double>());
}

// `value` is one of the texts the subset's `schema` allows (the test's own reading of it); `root` is the
// document its $refs point into.
bool conforms(const nlohmann::ordered_json& v, const nlohmann::ordered_json& schema, const nlohmann::ordered_json& root) {
  if (schema.contains("$ref"))
    return conforms(v, root.at(nlohmann::ordered_json::json_pointer(schema["$ref"].get<std::string>().substr(1))), root);
  if (schema.contains("anyOf")) {
    for (auto& branch : schema["anyOf"])
      if (conforms(v, branch, root)) return true;
    return false;
  }
  if (schema.contains("oneOf")) {
    int matches = 0;
    for (auto& branch : schema["oneOf"]) matches += conforms(v, branch, root);
    return matches == 1;
  }
  if (schema.contains("enum") || schema.contains("const")) {
    for (auto& e : schema.contains("const") ? nlohmann::ordered_json::array({schema["const"]}) : schema["enum"])
      if (e == v) return true;
    return false;
  }
  if (!schema.contains("type")) return true;
  std::vector<std::string> types;
  if (schema["type"].is_array()) for (auto& t : schema["type"]) types.push_back(t);
  else types.push_back(schema["type"]);
  for (const std::string& t : types) {
    if (t == "null" && v.is_null()) return true;
    if (t == "string" && v.is_string()) {
      const std::string& text = v.get_ref<const std::string&>();
      const auto characters = std::count_if(text.begin(), text.end(), [](char c) { return (uint8_t(c) & 0xc0) != 0x80; });
      if (schema.contains("pattern") && !test::matches_pattern(schema["pattern"], text)) return false;
      if (schema.contains("format") && !test::holds_format(schema["format"], text)) return false;
      return characters >= schema.value("minLength", 0) && characters <= schema.value("maxLength", int64_t(1) << 40);
    }
    if (t == "boolean" && v.is_boolean()) return true;
    // An integer too long for 64 bits is read as an integral double.
    if (t == "integer" && (v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()))) {
      const double x = v.get<double>();  // exact for the bounds tested (|x| <= 2^53 or far beyond them)
      return within_bounds(x, schema) && divides(v, schema);
    }
    if (t == "number" && v.is_number()) return within_bounds(v.get<double>(), schema) && divides(v, schema);
    if (t == "array" && v.is_array()) {
      if (int64_t(v.size()) < schema.value("minItems", 0) || int64_t(v.size()) > schema.value("maxItems", int64_t(1) << 40)) return false;
      const auto prefix = schema.value("prefixItems", nlohmann::ordered_json::array());
      const auto items = schema.value("items", nlohmann::ordered_json::object());
      for (size_t i = 0; i < v.size(); ++i) {
        if (i >= prefix.size() && items == false) return false;
        if (!conforms(v[i], i < prefix.size() ? prefix[i] : items == true ? nlohmann::ordered_json::object() : items, root)) return false;
        if (schema.value("uniqueItems", false))
          for (size_t j = 0; j < i; ++j)
            if (v[j] == v[i]) return false;
      }
      return true;
    }
    if (t == "object" && v.is_object()) {
      const auto props = schema.value("properties", nlohmann::ordered_json::object());
      auto more = schema.value("additionalProperties", nlohmann::ordered_json(false));
      const auto patterned = schema.value("patternProperties", nlohmann::ordered_json::object());  // one pattern: a dict of such names
      if (!patterned.empty()) more = patterned.begin().value();
      if (props.empty() && more != false) {  // a dict
        if (int64_t(v.size()) < schema.value("minProperties", 0) || int64_t(v.size()) > schema.value("maxProperties", int64_t(1) << 40)) return false;
        for (auto& [key, value] : v.items()) {
          if (!patterned.empty() && !test::matches_pattern(nlohmann::ordered_json(patterned.begin().key()), key)) return false;
          if (schema.contains("propertyNames") && !conforms(nlohmann::ordered_json(key), schema["propertyNames"], root)) return false;
          if (!conforms(value, more == true ? nlohmann::ordered_json::object() : more, root)) return false;
        }
        return true;
      }
      // The properties written are in the schema's order, the required ones among them.
      const auto required = schema.value("required", nlohmann::ordered_json::array());
      auto it = v.begin();
      for (auto p = props.begin(); p != props.end(); ++p) {
        if (it != v.end() && it.key() == p.key()) {
          if (!conforms(it.value(), p.value(), root)) return false;
          ++it;
        } else if (std::find(required.begin(), required.end(), p.key()) != required.end()) {
          return false;
        }
      }
      return it == v.end();
    }
  }
  return false;
}
bool conforms(const nlohmann::ordered_json& v, const nlohmann::ordered_json& schema) { return conforms(v, schema, schema); }

TEST(JsonSchema, CompilesTheStrictSubsetAndRefusesTheRestByName) {
  const JsonSchema goose(goose_schema());
  const JsonSchema::Node& root = goose.node(goose.root());
  EXPECT_EQ(root.keys, (std::vector<std::string>{"\"name\"", "\"age\"", "\"kind\"", "\"weights\"", "\"wild\"", "\"owner\"", "\"nest\"", "\"notes\"", "\"empty\""}));
  EXPECT_EQ(goose.node(root.children[2]).values, (std::vector<std::string>{"\"goose\"", "\"duck\"", "\"swan\""}));
  EXPECT_TRUE(goose.node(root.children[5]).nullable);
  EXPECT_EQ(root.children[7], 0);  // {}: any value
  EXPECT_NE(JsonSchema(goose_schema()).id(), goose.id());
  // Where requests are parsed and where they are served, one schema text is one compiled schema.
  EXPECT_EQ(compiled_schema(kGooseSchema), compiled_schema(kGooseSchema));
  EXPECT_NE(compiled_schema(kGooseSchema), compiled_schema(goose_schema().dump()));
  auto object = [](const std::string& props, const std::string& required) {
    return R"({"type": "object", "properties": )" + props + R"(, "required": )" + required + "}";
  };
  for (auto [schema, message] : std::vector<std::pair<std::string, std::string>>{
           {R"({"type": "array", "items": {}})", R"(schema: the root must be {"type": "object", ...} or a union of such schemas)"},
           {R"({"type": ["object", "null"], "properties": {}})", R"(schema: the root must be {"type": "object", ...} or a union of such schemas)"},
           {R"({"anyOf": [{"type": "object", "properties": {}}, {"type": "string"}]})", R"(schema: the root must be {"type": "object", ...} or a union of such schemas)"},
           {"[1]", "schema: must be a JSON object (a schema)"},
           {object(R"({"a": {"type": "strin"}})", R"(["a"])"), R"(schema/properties/a/type: "strin" is not one of object, array, string, number, integer, boolean, null)"},
           {object(R"({"a": {"type": "number", "minimum": 1e-40}})", R"(["a"])"),
            "schema/properties/a/minimum: '1e-40' has more than 32 digits after the point or too many before it"},
           {object(R"({"a": {"type": "number", "minimum": 0.5, "exclusiveMaximum": 0.5}})", R"(["a"])"),
            "schema/properties/a: no number is within minimum/exclusiveMinimum 0.5 and maximum/exclusiveMaximum 0.5"},
           {object(R"({"a": {"type": "number", "exclusiveMinimum": -0.25, "maximum": -0.2500}})", R"(["a"])"),
            "schema/properties/a: no number is within minimum/exclusiveMinimum -0.25 and maximum/exclusiveMaximum -0.25"},
           {object(R"({"a": {"type": "string", "maximum": 1}})", R"(["a"])"), R"(schema/properties/a: minimum, maximum and their exclusive forms need "type": "integer" or "number")"},
           {object(R"({"a": {"type": "number", "exclusiveMinimum": 1, "maximum": 1}})", R"(["a"])"),
            "schema/properties/a: no number is within minimum/exclusiveMinimum 1 and maximum/exclusiveMaximum 1"},
           {object(R"({"a": {"type": "integer", "minimum": "0"}})", R"(["a"])"), R"(schema/properties/a/minimum: must be a number from -2^53 to 2^53, got "0")"},
           {object(R"({"a": {"type": "integer", "exclusiveMinimum": true}})", R"(["a"])"), "schema/properties/a/exclusiveMinimum: must be a number from -2^53 to 2^53, got true"},
           {object(R"({"a": {"type": "number", "multipleOf": 1e-10}})", R"(["a"])"),
            "schema/properties/a/multipleOf: must be above 0, with at most 9 digits after the point and at most 2147483647 as a whole number without it (5, 0.01 and 2.5 are), got 1e-10"},
           {object(R"({"a": {"type": "number", "multipleOf": 21474836.48}})", R"(["a"])"),
            "schema/properties/a/multipleOf: must be above 0, with at most 9 digits after the point and at most 2147483647 as a whole number without it (5, 0.01 and 2.5 are), got 21474836.48"},
           {object(R"({"a": {"type": "integer", "multipleOf": 0}})", R"(["a"])"),
            "schema/properties/a/multipleOf: must be above 0, with at most 9 digits after the point and at most 2147483647 as a whole number without it (5, 0.01 and 2.5 are), got 0"},
           {object(R"({"a": {"type": "integer", "multipleOf": -2}})", R"(["a"])"),
            "schema/properties/a/multipleOf: must be above 0, with at most 9 digits after the point and at most 2147483647 as a whole number without it (5, 0.01 and 2.5 are), got -2"},
           {object(R"({"a": {"type": "integer", "multipleOf": "2"}})", R"(["a"])"),
            R"(schema/properties/a/multipleOf: must be above 0, with at most 9 digits after the point and at most 2147483647 as a whole number without it (5, 0.01 and 2.5 are), got "2")"},
           {object(R"({"a": {"type": "number", "multipleOf": 0.25, "minimum": 0.3, "maximum": 0.45}})", R"(["a"])"),
            "schema/properties/a: no multiple of multipleOf is within the bounds"},
           {object(R"({"a": {"type": "string", "multipleOf": 2}})", R"(["a"])"), R"(schema/properties/a: multipleOf needs "type": "integer" or "number")"},
           {object(R"({"a": {"type": "integer", "multipleOf": 100000}})", R"(["a"])"),
            "schema/properties/a: needs more than 4096 automaton states (multipleOf 100000 times the states of its bounds)"},
           {object(R"({"a": {"type": "integer", "multipleOf": 10, "minimum": 1, "maximum": 9}})", R"(["a"])"),
            "schema/properties/a: no multiple of 10 is within minimum/exclusiveMinimum 1 and maximum/exclusiveMaximum 9"},
           {object(R"({"a": {"type": "integer", "multipleOf": 7, "exclusiveMinimum": -7, "exclusiveMaximum": 0}})", R"(["a"])"),
            "schema/properties/a: no multiple of 7 is within minimum/exclusiveMinimum -6 and maximum/exclusiveMaximum -1"},
           {object(R"({"a": {"type": "integer", "maximum": 1e300}})", R"(["a"])"), "schema/properties/a/maximum: must be a number from -2^53 to 2^53, got 1e+300"},
           {object(R"({"a": {"type": "integer", "minimum": 2.5, "exclusiveMaximum": 3}})", R"(["a"])"), "schema/properties/a: no integer is within minimum/exclusiveMinimum 3 and maximum/exclusiveMaximum 2"},
           {object(R"({"a": {"type": "string"}})", R"(["a", "b"])"), R"(schema/required: "b" is not a property of this object)"},
           {object(R"({"a": {"type": "string"}})", "7"), "schema/required: must be an array of property names"},
           {R"({"type": "object", "properties": {"a": {}}, "maxProperties": 1})", "schema: maxProperties needs additionalProperties and no properties (a dict)"},
           {R"({"type": "object", "minProperties": 1})", "schema: minProperties needs additionalProperties and no properties (a dict)"},
           {R"({"type": "object", "additionalProperties": 3})", "schema/additionalProperties: must be true, false or a schema"},
           {R"({"type": "object", "additionalProperties": {"type": "strin"}})",
            R"(schema/additionalProperties/type: "strin" is not one of object, array, string, number, integer, boolean, null)"},
           {R"({"type": "object", "properties": {"a": {}}, "additionalProperties": {"minimum": "0"}})", R"(schema/additionalProperties: minimum, maximum and their exclusive forms need "type": "integer" or "number")"},
           {R"({"type": "object", "additionalProperties": true, "minProperties": 3, "maxProperties": 2})", "schema: minProperties 3 is above maxProperties 2"},
           {R"({"type": "object", "additionalProperties": true, "maxProperties": 300})", "schema/maxProperties: must be an integer from 0 to 255, got 300"},
           {object(R"({"a": {"type": "array", "minProperties": 1}})", R"(["a"])"), R"(schema/properties/a: minProperties needs "type": "object")"},
           {object(R"({"a": {"type": ["string", "number"], "items": {}}})", R"(["a"])"), "schema/properties/a: 'items' needs one type (anyOf gives each type its own schema)"},
           {object(R"({"a": {"type": ["string", "object"]}})", R"(["a"])"),
            R"(schema/properties/a/type: object and array may be listed only beside "null" (anyOf gives each its own schema))"},
           {object(R"({"a": {"type": []}})", R"(["a"])"), "schema/properties/a/type: an empty list of types"},
           {object(R"({"a": {"anyOf": []}})", R"(["a"])"), "schema/properties/a/anyOf: must be an array of 1 to 16 schemas"},
           {object(R"({"a": {"anyOf": [{"type": "string"}], "type": "string"}})", R"(["a"])"),
            "schema/properties/a: give anyOf without 'type' (put that in the schemas it names)"},
           {object(R"({"a": {"$ref": "#/$defs/B", "items": {}}})", R"(["a"])"),
            "schema/properties/a: give $ref without 'items' (put that in the schemas it names)"},
           {object(R"({"a": {"$ref": "#/$defs/B"}})", R"(["a"])"), R"(schema/properties/a/$ref: "#/$defs/B" is not in the schema)"},
           {object(R"({"a": {"$ref": "https://example.com/b.json"}})", R"(["a"])"),
            R"(schema/properties/a/$ref: "https://example.com/b.json" is not a reference into this schema ("#" or "#/$defs/Name"))"},
           {R"({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "required": ["a"], "$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}}})",
            R"(schema/$defs/B/$ref: "#/$defs/A" leads only to $refs, in a circle)"},
           {R"({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "required": ["a"], "$defs": {"A": {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "string"}]}}})",
            "schema/$defs/A/anyOf: includes itself (through $ref) with no value in between"},
           {R"({"type": "object", "properties": {"self": {"$ref": "#"}}, "required": ["self"]})",
            "schema: no JSON text nested at most 64 levels deep matches it (does a required property lead back to its own object?)"},
           {R"({"type": "object", "properties": {}, "$defs": []})", "schema/$defs: must be an object of name -> schema"},
           {object(R"({"a": {"type": "integer", "minLength": 1}})", R"(["a"])"), R"(schema/properties/a: minLength needs "type": "string")"},
           {object(R"({"a": {"type": "integer", "pattern": "^1"}})", R"(["a"])"), R"(schema/properties/a: pattern needs "type": "string")"},
           {object(R"({"a": {"type": "string", "pattern": "a", "format": "date"}})", R"(["a"])"), "schema/properties/a: give pattern or format, not both"},
           {object(R"({"a": {"type": "string", "pattern": 1}})", R"(["a"])"), "schema/properties/a/pattern: must be a string, got 1"},
           {object(R"x({"a": {"type": "string", "pattern": "(?!x)"}})x", R"(["a"])"),
            "schema/properties/a/pattern: at character 2: lookaround ((?=, (?!, (?<=, (?<!) is not supported"},
           {object(R"x({"a": {"type": "string", "pattern": "(\\S{1,4}\\s){1,20}"}, "b": {"type": "string", "pattern": "(\\S{1,4}\\s){1,20}"}})x", R"(["a", "b"])"),
            "schema/properties/b/pattern: too complex: the schema's patterns, formats and bounds take more than 12582912 steps to compile"},
           {object(R"({"a": {"type": "string", "pattern": "^abc$", "maxLength": 2}})", R"(["a"])"),
            "schema/properties/a/pattern: no string a JSON string can hold matches it within minLength/maxLength"},
           {object(R"({"a": {"type": "string", "format": "iri"}})", R"(["a"])"),
            "schema/properties/a/format: 'iri' is not one of date-time, date, time, duration, email, hostname, ipv4, ipv6, uri, uuid (or binary, password, path: any string)"},
           {object(R"({"a": {"type": ["string", "integer"], "format": "date"}})", R"(["a"])"), "schema/properties/a: 'format' needs one type (anyOf gives each type its own schema)"},
           {object(R"({"a": {"type": "array", "maxItems": -1}})", R"(["a"])"), "schema/properties/a/maxItems: must be an integer from 0 to 255, got -1"},
           {object(R"({"a": {"type": "string", "maxLength": 70000}})", R"(["a"])"), "schema/properties/a/maxLength: must be an integer from 0 to 65535, got 70000"},
           {object(R"({"a": {"type": "array", "minItems": 3, "maxItems": 2}})", R"(["a"])"), "schema/properties/a: minItems 3 is above maxItems 2"},
           {object(R"({"a": {"type": ["string", "integer"], "maxLength": 2}})", R"(["a"])"), "schema/properties/a: 'maxLength' needs one type (anyOf gives each type its own schema)"},
           {object(R"({"a": {"enum": []}})", R"(["a"])"), "schema/properties/a/enum: must be an array of 1 to 64 values"},
           {object(R"({"a": {"enum": [1], "const": 1}})", R"(["a"])"), "schema/properties/a: give enum or const, not both"},
           {object(R"({"a": {"type": "string", "items": {}}})", R"(["a"])"), R"(schema/properties/a: items needs "type": "array")"},
           {object(R"({"a": {"type": "array", "items": 3}})", R"(["a"])"), "schema/properties/a/items: must be a JSON object (a schema)"},
           {object(R"({"a": {"type": "string", "prefixItems": []}})", R"(["a"])"), R"(schema/properties/a: prefixItems needs "type": "array")"},
           {object(R"({"a": {"type": "array", "prefixItems": {}}})", R"(["a"])"), "schema/properties/a/prefixItems: must be an array of at most 255 schemas"},
           {object(R"({"a": {"type": "array", "prefixItems": [{"type": "intger"}]}})", R"(["a"])"),
            R"(schema/properties/a/prefixItems/0/type: "intger" is not one of object, array, string, number, integer, boolean, null)"},
           {object(R"({"a": {"type": "array", "prefixItems": [{}], "items": false, "minItems": 2}})", R"(["a"])"),
            "schema/properties/a: minItems 2 is above the 1 items that items: false allows"},
           {object(R"({"a": {"type": "array", "items": {}, "uniqueItems": true}})", R"(["a"])"),
            "schema/properties/a/uniqueItems: needs items that are an enum or const (a set of any other items cannot be followed byte by byte)"},
           {object(R"({"a": {"type": "array", "items": {"type": "integer"}, "uniqueItems": true}})", R"(["a"])"),
            "schema/properties/a/uniqueItems: needs items that are an enum or const (a set of any other items cannot be followed byte by byte)"},
           {object(R"({"a": {"type": "array", "items": {"enum": [1, 2]}, "uniqueItems": true, "minItems": 3}})", R"(["a"])"),
            "schema/properties/a: minItems 3 is above the 2 distinct values its items allow"},
           {object(R"({"a": {"type": "array", "items": {"enum": [1, 2]}, "uniqueItems": "yes"}})", R"(["a"])"), "schema/properties/a/uniqueItems: must be true or false"},
           {object(R"({"a": {"type": "string", "uniqueItems": true}})", R"(["a"])"), R"(schema/properties/a: uniqueItems needs "type": "array")"},
           {object(R"({"a": {"type": "object", "patternProperties": {"^a": {}, "^b": {}}}})", R"(["a"])"),
            "schema/properties/a/patternProperties: must be an object of one pattern -> schema (several cannot be followed)"},
           {object(R"({"a": {"type": "object", "patternProperties": {"^a": {}}, "properties": {"b": {}}}})", R"(["a"])"),
            "schema/properties/a: give patternProperties without properties and propertyNames"},
           {object(R"({"a": {"type": "object", "patternProperties": {"^a(": {}}}})", R"(["a"])"),
            "schema/properties/a/patternProperties: at character 3: '(' without its ')'"},
           {object(R"({"a": {"type": "object", "properties": {"b": {}}, "propertyNames": {"type": "string"}}})", R"(["a"])"),
            "schema/properties/a: propertyNames needs additionalProperties and no properties (a dict)"},
           {object(R"({"a": {"type": "object", "additionalProperties": true, "propertyNames": {"type": "integer"}}})", R"(["a"])"),
            "schema/properties/a/propertyNames: must be a schema of strings (type string with pattern, format or lengths, or an enum of strings)"},
           {object(R"({"a": {"type": "object", "additionalProperties": true, "propertyNames": {"enum": ["x", 1]}}})", R"(["a"])"),
            "schema/properties/a/propertyNames: must be a schema of strings (type string with pattern, format or lengths, or an enum of strings)"},
           {object(R"({"a": {"type": "string", "propertyNames": {"type": "string"}}})", R"(["a"])"), R"(schema/properties/a: propertyNames needs "type": "object")"},
           {object(R"({"a": {"allOf": {"type": "string"}}})", R"(["a"])"),
            "schema/properties/a/allOf: must be an array of one schema (an intersection of several cannot be followed byte by byte)"},
       }) {
    SCOPED_TRACE(schema);
    try {
      JsonSchema compiled(nlohmann::ordered_json::parse(schema));
      ADD_FAILURE() << "compiled";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), message);
    }
  }
  std::string deep = R"({"type": "object", "properties": {}})";
  for (int i = 0; i < JsonSchema::kMaxNesting + 1; ++i) deep = R"({"type": "object", "properties": {"a": )" + deep + R"(}, "required": ["a"]})";
  EXPECT_THROW(JsonSchema(nlohmann::ordered_json::parse(deep)), Error);
}

TEST(JsonGrammar, ASchemaAllowsItsTextsAndRefusesTheFirstByteOfAnyOther) {
  const JsonSchema goose(goose_schema());
  const std::string fine = R"({"name": "Gus", "age": 3, "kind": "goose", "weights": [4.5, -1e2, 7], "wild": true, "owner": null,)"
                           R"( "nest": {"eggs": 5, "at": 10}, "notes": [{"any": "thing"}, null], "empty": {}})";
  for (const std::string& text :
       {fine, std::string(R"({"name":"","age":-0,"kind":"swan","weights":[],"wild":false,"owner":"Ann","nest":{"eggs":0,"at":null},"notes":7,"empty":{ }})"),
        std::string("{\n  \"name\": \"x\",\n  \"age\": 1,\n  \"kind\": \"duck\",\n  \"weights\": [\n    1\n  ],\n  \"wild\": true,\n  \"owner\": null,\n"
                    "  \"nest\": {\n    \"eggs\": 2,\n    \"at\": 1\n  },\n  \"notes\": \"\",\n  \"empty\": {\n  }\n}")}) {
    SCOPED_TRACE(text);
    JsonRecognizer r(goose);
    ASSERT_TRUE(r.push(text)) << "refused at byte " << first_refused(text, JsonRecognizer(goose));
    EXPECT_TRUE(r.complete());
    EXPECT_TRUE(conforms(nlohmann::ordered_json::parse(text), goose_schema()));
  }
  // Each case: where `fine` is changed, and the byte that can then not come.
  auto refused_at = [&](const std::string& text) { return first_refused(text, JsonRecognizer(goose)); };
  auto at = [&](const std::string& from, const std::string& to) {
    std::string t = fine;
    const size_t p = t.find(from);
    t.replace(p, from.size(), to);
    return std::pair{t, p};
  };
  for (auto [text, where, offset] : std::vector<std::tuple<std::string, std::string, size_t>>{
           {at("\"name\"", "\"age\"").first, "a property out of order", 2},
           {at("\"name\"", "\"nam\"").first, "a misspelt name", 5},
           {at("\"age\": 3", "\"age\": 3.5").first, "an integer with a fraction", std::string("{\"name\": \"Gus\", \"age\": 3").size()},
           {at("\"age\": 3", "\"age\": \"3\"").first, "a string for an integer", std::string("{\"name\": \"Gus\", \"age\": ").size()},
           {at("\"goose\"", "\"geese\"").first, "a value outside the enum", std::string(R"({"name": "Gus", "age": 3, "kind": "g)").size()},
           {at("\"wild\": true", "\"wild\": null").first, "null where it is not allowed", std::string(R"({"name": "Gus", "age": 3, "kind": "goose", "weights": [4.5, -1e2, 7], "wild": )").size()},
           {at("\"at\": 10", "\"at\": 1000").first, "an enum number too long", fine.find("\"at\": 10") + 9},
           {at("\"at\": 10", "\"at\": 2").first, "an enum number not listed", fine.find("\"at\": 10") + 6},
           {at(", \"at\": 10", "").first, "a missing property", fine.find(", \"at\": 10")},
           {at("\"notes\"", "\"extra\": 1, \"notes\"").first, "an extra property", fine.find("\"notes\"") + 1},
           {at("\"empty\": {}", "\"empty\": {\"a\": 1}").first, "a property of an object that has none", fine.find("\"empty\": {") + 10},
       }) {
    SCOPED_TRACE(where);
    EXPECT_EQ(refused_at(text), offset) << text;
  }
  JsonRecognizer r(goose);
  EXPECT_FALSE(r.push(uint8_t('[')));  // the root is an object
  EXPECT_TRUE(r.push(R"({"name": "x", "age": 1, "kind": "duck", "weights": [], "wild": true, "owner": null, "nest": {"eggs": 1, "at": 1)"));
  EXPECT_TRUE(r.push(uint8_t('0')));  // 1 may go on to 10
  EXPECT_TRUE(r.push(uint8_t('}')));  // and 10 ends there
}

// How pydantic writes models: nested ones in $defs, Optional[X] as anyOf X or null, a union of models
// that share their first property (a discriminator), an enum by $ref, a list of types, a model that
// holds a list of itself, and strings of bounded length.
const char* kHouseholdSchema = R"({"type": "object", "title": "Household",
  "$defs": {
    "Cat": {"type": "object", "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer"}}, "required": ["kind", "lives"], "additionalProperties": false},
    "Dog": {"type": "object", "properties": {"kind": {"const": "dog"}, "good": {"type": "boolean"}}, "required": ["kind", "good"], "additionalProperties": false},
    "Color": {"enum": ["red", "green"], "type": "string", "title": "Color"},
    "Room": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "rooms": {"type": "array", "items": {"$ref": "#/$defs/Room"}}},
             "required": ["name", "rooms"], "additionalProperties": false}},
  "properties": {
    "pet": {"anyOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]},
    "nickname": {"anyOf": [{"type": "string", "maxLength": 20}, {"type": "null"}], "default": null, "title": "Nickname"},
    "color": {"$ref": "#/$defs/Color"},
    "size": {"type": ["integer", "string", "null"]},
    "house": {"$ref": "#/$defs/Room"}},
  "required": ["pet", "nickname", "color", "size", "house"], "additionalProperties": false})";

nlohmann::ordered_json household_schema() { return nlohmann::ordered_json::parse(kHouseholdSchema); }

TEST(JsonSchema, CompilesRefsAndUnionsAsPydanticWritesThem) {
  const JsonSchema household(household_schema());
  using Kind = JsonSchema::Kind;
  const JsonSchema::Node& root = household.node(household.root());
  ASSERT_EQ(root.children.size(), 5u);
  const JsonSchema::Node& pet = household.node(root.children[0]);
  ASSERT_EQ(pet.kind, Kind::Union);
  ASSERT_EQ(pet.children.size(), 2u);
  EXPECT_EQ(household.node(pet.children[0]).keys, (std::vector<std::string>{"\"kind\"", "\"lives\""}));
  EXPECT_EQ(household.node(pet.children[1]).keys, (std::vector<std::string>{"\"kind\"", "\"good\""}));
  const JsonSchema::Node& nickname = household.node(root.children[1]);  // one reading, not a union
  EXPECT_EQ(nickname.kind, Kind::String);
  EXPECT_TRUE(nickname.nullable);
  EXPECT_EQ(household.node(root.children[2]).values, (std::vector<std::string>{"\"red\"", "\"green\""}));
  EXPECT_EQ(household.node(root.children[3]).kind, Kind::Union);
  EXPECT_EQ(household.node(root.children[3]).children.size(), 3u);
  const JsonSchema::Node& house = household.node(root.children[4]);
  ASSERT_EQ(house.kind, Kind::Object);
  const JsonSchema::Node& rooms = household.node(house.children[1]);
  EXPECT_EQ(rooms.children[0], root.children[4]);  // compiled once: a room's rooms are rooms
  EXPECT_EQ(house.min_depth, 2);                   // {"name": "", "rooms": []}
  EXPECT_EQ(root.min_depth, 3);
}

// pydantic's discriminated union: Union[Cat, Dog] = Field(discriminator="pet_type").
const char* kDiscriminatedSchema = R"({"type": "object", "title": "Model",
  "$defs": {"Cat": {"type": "object", "title": "Cat", "properties": {"pet_type": {"const": "cat", "title": "Pet Type", "type": "string"}, "meows": {"type": "integer"}}, "required": ["pet_type", "meows"]},
            "Dog": {"type": "object", "title": "Dog", "properties": {"pet_type": {"const": "dog", "title": "Pet Type", "type": "string"}, "barks": {"type": "number"}}, "required": ["pet_type", "barks"]}},
  "properties": {"pet": {"discriminator": {"mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"}, "propertyName": "pet_type"},
                         "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}], "title": "Pet"}},
  "required": ["pet"]})";

TEST(JsonSchema, OneOfIsServedWhereItsDiscriminatorTellsItsSchemasApart) {
  const nlohmann::ordered_json schema = nlohmann::ordered_json::parse(kDiscriminatedSchema);
  const JsonSchema compiled(schema);
  for (const std::string text : {R"({"pet": {"pet_type": "cat", "meows": 3}})", R"({"pet": {"pet_type": "dog", "barks": 0.5}})"}) {
    JsonRecognizer r(compiled);
    EXPECT_TRUE(r.push(text)) << text;
    EXPECT_TRUE(r.complete());
    EXPECT_TRUE(conforms(nlohmann::ordered_json::parse(text), schema));
  }
  JsonRecognizer r(compiled);
  EXPECT_FALSE(r.push(R"({"pet": {"pet_type": "cat", "barks")"));
  auto refusal = [&](const std::string& from, const std::string& to) {
    std::string text = kDiscriminatedSchema;
    text.replace(text.find(from), from.size(), to);
    try {
      JsonSchema bad(nlohmann::ordered_json::parse(text));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("compiled");
  };
  EXPECT_EQ(refusal(R"("const": "dog")", R"("const": "cat")"),
            R"(schema/properties/pet/oneOf/1: its discriminator "pet_type" may be "cat", as another schema's may, so the discriminator does not tell them apart)");
  EXPECT_EQ(refusal(R"("propertyName": "pet_type")", R"("propertyName": "meows")"),
            R"(schema/properties/pet/oneOf/0: not an object with the discriminator "meows" as a required const or enum property)");
  EXPECT_EQ(refusal(R"("required": ["pet_type", "barks"])", R"("required": ["barks"])"),  // a text without it would match neither or both
            R"(schema/properties/pet/oneOf/1: not an object with the discriminator "pet_type" as a required const or enum property)");
  EXPECT_EQ(refusal(R"("discriminator": {"mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"}, "propertyName": "pet_type"},)", ""),
            R"(schema/properties/pet: oneOf needs a discriminator, {"propertyName": NAME}, the property whose const tells its schemas apart (anyOf allows any of them))");
  EXPECT_EQ(refusal(R"({"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"})", R"({"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Cat"})"),
            "schema/properties/pet/oneOf: names one schema twice, so no text matches exactly one");
  EXPECT_EQ(refusal(R"("oneOf")", R"("anyOf")"), "schema/properties/pet: discriminator needs oneOf");
}

// pydantic 2.13's model_json_schema() of models with defaults (properties `required` leaves out), dicts
// and an optional recursive field:
//   class Toy(BaseModel): name: str = Field(max_length=12); squeaks: bool = False
//   class Pet(BaseModel): name: str = Field(max_length=16); age: int = Field(default=1, ge=0, le=30)
//     nick: Optional[str] = None; toys: List[Toy] = []; scores: Dict[str, int] = Field(default={}, max_length=3)
//     notes: dict = {}; spot: Tuple[int, str, bool] = (0, '', False); friend: Optional['Pet'] = None
const char* kDefaultsSchema = R"({"$defs": {"Pet": {"properties": {"name": {"maxLength": 16, "title": "Name", "type": "string"},
  "age": {"default": 1, "maximum": 30, "minimum": 0, "title": "Age", "type": "integer"},
  "nick": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": null, "title": "Nick"},
  "toys": {"default": [], "items": {"$ref": "#/$defs/Toy"}, "title": "Toys", "type": "array"},
  "scores": {"additionalProperties": {"type": "integer"}, "default": {}, "maxProperties": 3, "title": "Scores", "type": "object"},
  "notes": {"additionalProperties": true, "default": {}, "title": "Notes", "type": "object"},
  "spot": {"default": [0, "", false], "maxItems": 3, "minItems": 3, "prefixItems": [{"type": "integer"}, {"type": "string"}, {"type": "boolean"}], "title": "Spot", "type": "array"},
  "friend": {"anyOf": [{"$ref": "#/$defs/Pet"}, {"type": "null"}], "default": null}}, "required": ["name"], "title": "Pet", "type": "object"},
  "Toy": {"properties": {"name": {"maxLength": 12, "title": "Name", "type": "string"}, "squeaks": {"default": false, "title": "Squeaks", "type": "boolean"}},
          "required": ["name"], "title": "Toy", "type": "object"}}, "$ref": "#/$defs/Pet"})";

nlohmann::ordered_json defaults_schema() { return nlohmann::ordered_json::parse(kDefaultsSchema); }

TEST(JsonSchema, DefaultsAndDictsCompileAsPydanticWritesThem) {
  const JsonSchema pets(defaults_schema());
  const JsonSchema::Node& pet = pets.node(pets.root());
  ASSERT_EQ(pet.kind, JsonSchema::Kind::Object);
  EXPECT_EQ(pet.required, (std::vector<bool>{true, false, false, false, false, false, false, false}));
  EXPECT_FALSE(pet.map);
  const JsonSchema::Node& scores = pets.node(pet.children[4]);
  EXPECT_TRUE(scores.map);
  EXPECT_TRUE(scores.keys.empty());
  EXPECT_EQ(scores.max_size, 3u);
  EXPECT_EQ(pets.node(scores.children[0]).kind, JsonSchema::Kind::Integer);
  const JsonSchema::Node& notes = pets.node(pet.children[5]);
  EXPECT_TRUE(notes.map);
  EXPECT_EQ(notes.children[0], 0);  // true: any value
  const JsonSchema::Node& spot = pets.node(pet.children[6]);  // a tuple: no items beyond its prefixItems
  ASSERT_EQ(spot.children.size(), 4u);
  EXPECT_EQ(pets.node(spot.children[2]).kind, JsonSchema::Kind::String);
  EXPECT_EQ(pet.min_depth, 1);      // {"name": ""}: its toys and friend may be left out
  // Without additionalProperties, {} has no properties to write; beside properties, it is never used.
  const JsonSchema closed(nlohmann::ordered_json::parse(R"({"type": "object", "properties": {"a": {"type": "object"}, "b": {"type": "object", "properties": {"c": {}},
                                                           "additionalProperties": {"type": "string"}}}})"));
  EXPECT_FALSE(closed.node(closed.node(closed.root()).children[0]).map);
  EXPECT_FALSE(closed.node(closed.node(closed.root()).children[1]).map);
  JsonRecognizer r(closed);
  EXPECT_EQ(first_refused(R"({"a": {"x")", r), 7u);
  EXPECT_EQ(first_refused(R"({"b": {"c": 1, "d")", r), 13u);  // no property comes after c
}

// pydantic 1 writes a field that refers to a model with a description (or a default) as an allOf of
// the $ref: an allOf of one schema is that schema, also as a $ref's target and recursively.
TEST(JsonSchema, AnAllOfOfOneSchemaIsThatSchema) {
  const nlohmann::ordered_json schema = nlohmann::ordered_json::parse(R"({"title": "Owner", "type": "object",
    "properties": {"toy": {"title": "Toy", "description": "the toy", "allOf": [{"$ref": "#/definitions/Toy"}]},
                   "size": {"$ref": "#/definitions/Size"}, "count": {"allOf": [{"type": "integer", "minimum": 1}], "default": 1},
                   "chain": {"$ref": "#/definitions/Link"}, "kind": {"$ref": "#/definitions/Kind"}},
    "required": ["toy", "size", "count"],
    "definitions": {"Toy": {"title": "Toy", "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
                    "Size": {"description": "an alias of an alias", "allOf": [{"allOf": [{"$ref": "#/definitions/Shape"}]}]},
                    "Shape": {"enum": ["S", "M", "L"]}, "Kind": {"title": "Kind", "allOf": [{"const": "k"}]},
                    "Link": {"type": "object", "properties": {"next": {"allOf": [{"$ref": "#/definitions/Link"}], "description": "the rest"}}}}})");
  const JsonSchema owner(schema);
  const JsonSchema::Node& root = owner.node(owner.root());
  EXPECT_EQ(owner.node(root.children[0]).keys, (std::vector<std::string>{"\"name\""}));
  EXPECT_EQ(owner.node(root.children[1]).values, (std::vector<std::string>{"\"S\"", "\"M\"", "\"L\""}));
  EXPECT_EQ(owner.node(root.children[2]).kind, JsonSchema::Kind::Integer);
  const JsonSchema::Node& link = owner.node(root.children[3]);
  EXPECT_EQ(link.children[0], root.children[3]);  // a link's next is a link
  EXPECT_EQ(owner.node(root.children[4]).values, (std::vector<std::string>{"\"k\""}));  // a $ref to an allOf of a schema
  const std::string text = R"({"toy": {"name": "ball"}, "size": "M", "count": 2, "chain": {"next": {"next": {}}}})";
  JsonRecognizer r(owner);
  EXPECT_TRUE(r.push(text) && r.complete());
  EXPECT_EQ(first_refused(R"({"toy": {"name": "ball"}, "size": "M", "count": 0)", JsonRecognizer(owner)), 48u);  // minimum 1
  auto refusal = [&](const std::string& from, const std::string& to) {
    std::string changed = schema.dump();
    const size_t at = changed.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    changed.replace(at, from.size(), to);
    try {
      JsonSchema bad(nlohmann::ordered_json::parse(changed));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("compiled");
  };
  EXPECT_EQ(refusal(R"("allOf":[{"type":"integer","minimum":1}])", R"("allOf":[{"type":"integer"},{"minimum":1}])"),
            "schema/properties/count/allOf: must be an array of one schema (an intersection of several cannot be followed byte by byte)");
  EXPECT_EQ(refusal(R"("default":1)", R"("type":"integer")"), "schema/properties/count: give allOf without 'type' (put that in the schemas it names)");
  EXPECT_EQ(refusal(R"("description":"an alias of an alias")", R"("type":"string")"), "schema/definitions/Size: give allOf without 'type' (put that in the schemas it names)");
  EXPECT_EQ(refusal(R"({"$ref":"#/definitions/Shape"})", R"({"$ref":"#/definitions/Size"})"), R"(schema/definitions/Size/allOf/0/allOf/0/$ref: "#/definitions/Size" leads only to $refs, in a circle)");
  EXPECT_EQ(refusal(R"("Shape":{"enum")", R"("Shape":{"allOf":{},"enum")"), "schema/definitions/Shape: give allOf without 'enum' (put that in the schemas it names)");
}

// pydantic's bytes, SecretStr and Path: formats that are hints, so any string (within its lengths) is one.
TEST(JsonSchema, HintFormatsAreAnyString) {
  const JsonSchema hints(nlohmann::ordered_json::parse(R"({"properties": {"b": {"format": "binary", "title": "B", "type": "string"},
    "s": {"format": "password", "title": "S", "type": "string", "writeOnly": true}, "p": {"format": "path", "title": "P", "type": "string", "maxLength": 3,
    "deprecated": true}}, "required": ["b", "s", "p"], "title": "M", "type": "object"})"));
  for (uint8_t child : hints.node(hints.root()).children) EXPECT_EQ(hints.node(child).pattern, 0);
  JsonRecognizer r(hints);
  EXPECT_TRUE(r.push(R"({"b": "\u00ff\n", "s": "hunter2", "p": "/tm"})") && r.complete());
  EXPECT_EQ(first_refused(R"({"b": "", "s": "", "p": "/tmp")", JsonRecognizer(hints)), 28u);  // maxLength 3
}

TEST(JsonGrammar, OptionalPropertiesMayBeLeftOutAndTheRestComeInOrder) {
  const JsonSchema pets(defaults_schema());
  for (const std::string text :
       {R"({"name": "Gus"})", R"({"name": "Gus", "friend": null})", R"({"name": "Gus", "scores": {}, "notes": {}})",
        R"({"name": "Gus", "age": 3, "nick": null, "toys": [{"name": "ball"}, {"name": "duck", "squeaks": true}], "scores": {"speed": 3, "": -1},)"
        R"( "notes": {"a": [1, {"b": null}], "a": 2}, "spot": [-3, "x", false], "friend": {"name": "Ann", "friend": {"name": "Bo", "nick": "b"}}})"}) {
    SCOPED_TRACE(text);
    JsonRecognizer r(pets);
    ASSERT_TRUE(r.push(text)) << "refused at byte " << first_refused(text, JsonRecognizer(pets));
    EXPECT_TRUE(r.complete());
    EXPECT_TRUE(conforms(nlohmann::ordered_json::parse(text), defaults_schema()));
  }
  for (auto [text, offset] : std::vector<std::pair<std::string, size_t>>{
           {R"({})", 1},                                     // name is required
           {R"({"age": 1})", 2},
           {R"({"name": "Gus",})", 15},                      // a property must follow
           {R"({"name": "Gus", "nick": null, "age")", 31},   // out of order
           {R"({"name": "Gus", "name")", 18},                // "n" may begin nick or notes, "na" neither
           {R"({"name": "Gus", "toys": [{"squeaks": true)", 27},  // a toy's name is required
           {R"({"name": "Gus", "scores": {"a": "x")", 32},   // a dict's values have its schema
           {R"({"name": "Gus", "scores": {"a": 1, "b": 2, "c": 3, "d")", 49},  // maxProperties 3
           {R"({"name": "Gus", "friend": null, "age")", 30},  // nothing comes after the last property
           {R"({"name": "Gus", "age": 31)", 24},             // its bounds still hold
           {R"({"name": "Gus", "spot": [1, 2)", 28},         // a tuple's items, each of its own schema
           {R"({"name": "Gus", "spot": [1, "a"])", 31},
           {R"({"name": "Gus", "spot": [1, "a", true, )", 37}}) {
    SCOPED_TRACE(text);
    EXPECT_EQ(first_refused(text, JsonRecognizer(pets)), offset);
  }
  // Keys that share a prefix, around a required one.
  const JsonSchema abc(nlohmann::ordered_json::parse(
      R"({"type": "object", "properties": {"ab": {"type": "integer"}, "abc": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}}, "required": ["b"]})"));
  for (const std::string text : {R"({"ab": 1, "b": 2})", R"({"abc": 1, "b": 2, "c": 3})", R"({"ab": 1, "abc": 2, "b": 3})", R"({"b": 1})"}) {
    JsonRecognizer r(abc);
    EXPECT_TRUE(r.push(text) && r.complete()) << text;
  }
  EXPECT_EQ(first_refused(R"({"abc": 1, "ab")", JsonRecognizer(abc)), 12u);
  EXPECT_EQ(first_refused(R"({"ab": 1})", JsonRecognizer(abc)), 8u);  // b is required
  EXPECT_EQ(first_refused(R"({"c": 1})", JsonRecognizer(abc)), 2u);    // and comes before c
  // Of many optional properties, the next 64 may come.
  std::string props, hundred;
  for (int i = 0; i < 100; ++i) props += (i ? ", \"p" : "\"p") + std::to_string(i) + "\": {\"type\": \"integer\"}";
  const JsonSchema many(nlohmann::ordered_json::parse(R"({"type": "object", "properties": {)" + props + "}}"));
  for (const std::string text : {R"({"p63": 1, "p99": 2})", R"({"p0": 1, "p64": 2})", "{}"}) {
    JsonRecognizer r(many);
    EXPECT_TRUE(r.push(text) && r.complete()) << text;
  }
  EXPECT_EQ(first_refused(R"({"p64")", JsonRecognizer(many)), 4u);
  // A property whose value cannot close within kMaxDepth is not offered; null ends the recursion.
  std::string deep;
  for (int d = 0; d < JsonRecognizer::kMaxDepth - 1; ++d) deep += R"({"name": "a", "friend": )";
  deep += R"({"name": "a")";  // kMaxDepth objects open
  JsonRecognizer r(pets);
  ASSERT_TRUE(r.push(deep));
  EXPECT_EQ(first_refused(R"(, "toys")", r), 3u);
  EXPECT_EQ(first_refused(R"(, "friend": {)", r), 12u);
  EXPECT_TRUE(r.push(R"(, "friend": null)" + std::string(JsonRecognizer::kMaxDepth, '}')));
  EXPECT_TRUE(r.complete());
  // A tree of dicts: at the last level a key would need a value that cannot close, so none may begin.
  const JsonSchema tree(nlohmann::ordered_json::parse(R"({"type": "object", "additionalProperties": {"$ref": "#"}})"));
  JsonRecognizer t(tree);
  ASSERT_TRUE(t.push(R"({"a": {"b": {})"));
  std::string down = ", \"c\": ";
  for (int d = 2; d < JsonRecognizer::kMaxDepth - 1; ++d) down += "{\"k\": ";
  ASSERT_TRUE(t.push(down + "{"));  // kMaxDepth dicts open
  EXPECT_EQ(first_refused("\"", t), 0u);
  EXPECT_TRUE(t.push(std::string(JsonRecognizer::kMaxDepth, '}')));
  EXPECT_TRUE(t.complete());
}

// prefixItems: the first items one by one, then `items` (any when absent, none when false).
const char* kTuplesSchema = R"({"type": "object", "properties": {
    "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string", "maxLength": 2}], "minItems": 2, "maxItems": 2},
    "head": {"type": "array", "prefixItems": [{"enum": ["x", "y"]}, {"type": "array", "items": {"type": "integer"}, "minItems": 1}], "items": {"type": "boolean"}},
    "open": {"type": "array", "prefixItems": [{"type": "null"}]},
    "shut": {"type": ["array", "null"], "prefixItems": [{"type": "integer"}, {"type": "integer"}], "items": false}},
  "required": ["pair", "head", "open", "shut"]})";

TEST(JsonGrammar, PrefixItemsShapeATuplesItemsOneByOne) {
  const nlohmann::ordered_json schema = nlohmann::ordered_json::parse(kTuplesSchema);
  const JsonSchema tuples(schema);
  const JsonSchema::Node& root = tuples.node(tuples.root());
  EXPECT_EQ(tuples.node(root.children[1]).min_depth, 1);  // no minItems: [] will do
  // Only the first minItems items count toward an array's depth.
  for (auto [min_items, depth] : {std::pair{1, 1}, {2, 3}, {3, 4}}) {  // [0], [0, [{}]], [0, [{}], [[[]]]]
    const JsonSchema with_minimum(nlohmann::ordered_json::parse(
        R"({"type": "object", "properties": {"t": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "array", "items": {"type": "object"}, "minItems": 1}],)"
        R"( "items": {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"type": "array"}}}, "minItems": )" + std::to_string(min_items) + R"(}}, "required": ["t"]})"));
    EXPECT_EQ(with_minimum.node(with_minimum.node(with_minimum.root()).children[0]).min_depth, depth) << min_items;
  }
  for (const std::string text : {R"({"pair": [1, "ab"], "head": [], "open": [], "shut": []})", R"({"pair": [-1, ""], "head": ["y", [1, 2], true, false], "open": [null, 1, "x", {}], "shut": [1, 2]})",
                                 R"({"pair": [0, "x"], "head": ["x"], "open": [null], "shut": null})"}) {
    JsonRecognizer r(tuples);
    EXPECT_TRUE(r.push(text)) << text << ": refused at byte " << first_refused(text, JsonRecognizer(tuples));
    EXPECT_TRUE(r.complete()) << text;
    EXPECT_TRUE(conforms(nlohmann::ordered_json::parse(text), schema)) << text;
  }
  const std::string to_head = R"({"pair": [1, "ab"], "head": )";
  const std::string to_open = to_head + R"(["x"], "open": )";
  const std::string to_shut = to_open + R"([], "shut": )";
  for (auto [text, offset] : std::vector<std::pair<std::string, size_t>>{
           {R"({"pair": ["a")", 10},                  // its first item is an integer
           {R"({"pair": [1])", 11},                   // minItems 2
           {R"({"pair": [1, "abc")", 16},             // the second's maxLength
           {R"({"pair": [1, "a", )", 16},             // maxItems 2
           {to_head + R"(["z")", to_head.size() + 2},  // the enum first
           {to_head + R"(["x", [])", to_head.size() + 7},  // then an array of at least one integer
           {to_head + R"(["x", [1], 1)", to_head.size() + 11},  // then booleans
           {to_open + R"([1)", to_open.size() + 1},
           {to_shut + R"([1, 2, )", to_shut.size() + 5}}) {  // items: false
    SCOPED_TRACE(text);
    EXPECT_EQ(first_refused(text, JsonRecognizer(tuples)), offset);
  }
  // Past its prefix, an array without a maximum is not counted: 300 items do not wrap a count.
  std::string many = to_head + R"(["x", [1])";
  for (int i = 0; i < 300; ++i) many += ", true";
  JsonRecognizer r(tuples);
  EXPECT_TRUE(r.push(many + R"(], "open": [null], "shut": null})"));
  EXPECT_TRUE(r.complete());
}

TEST(JsonGrammar, AUnionFollowsEveryReadingUntilOneRemains) {
  const JsonSchema household(household_schema());
  const std::string house = R"("house": {"name": "home", "rooms": [{"name": "hall", "rooms": []}]}})";
  for (const std::string& text : {R"({"pet": {"kind": "cat", "lives": 9}, "nickname": null, "color": "red", "size": 3, )" + house,
                                  R"({"pet": {"kind": "dog", "good": true}, "nickname": "Rex", "color": "green", "size": "big", )" + house,
                                  R"({"pet": {"kind": "dog", "good": false}, "nickname": "", "color": "green", "size": null, )" + house}) {
    SCOPED_TRACE(text);
    JsonRecognizer r(household);
    EXPECT_TRUE(r.push(text));
    EXPECT_TRUE(r.complete());
    EXPECT_TRUE(conforms(nlohmann::ordered_json::parse(text), household_schema()));
  }
  JsonRecognizer r(household);
  ASSERT_TRUE(r.push(R"({"pet": {"kind": ")"));
  EXPECT_EQ(r.readings(), 2);  // a cat or a dog
  ASSERT_TRUE(r.push(uint8_t('c')));
  EXPECT_EQ(r.readings(), 1);
  const JsonRecognizer cat = r;
  EXPECT_TRUE(r.push(R"(at", "lives": )"));
  EXPECT_FALSE(r.push(uint8_t('t')));  // a cat's lives are an integer
  r = cat;
  EXPECT_FALSE(r.push(R"(at", "good")"));  // and it has no "good"
  r = JsonRecognizer(household);
  ASSERT_TRUE(r.push(R"({"pet": {"kind": "dog", "good": true}, "nickname": null, "color": "red", "size": )"));
  EXPECT_EQ(r.readings(), 3);  // an integer, a string or null
  EXPECT_FALSE(r.push(uint8_t('t')));
  EXPECT_FALSE(r.push(uint8_t('[')));
  EXPECT_TRUE(r.push(uint8_t('1')));
  EXPECT_EQ(r.readings(), 1);
  EXPECT_FALSE(r.push(uint8_t('.')));  // an integer
}

// A recursive schema lets a text nest only as deep as it can still be closed within kMaxDepth.
TEST(JsonGrammar, ARecursiveSchemaNestsOnlyAsDeepAsItCanClose) {
  const JsonSchema household(household_schema());
  JsonRecognizer r(household);
  std::string text = R"({"pet": {"kind": "cat", "lives": 1}, "nickname": null, "color": "red", "size": 1, "house": )";
  ASSERT_TRUE(r.push(text));
  int rooms = 0;
  for (const std::string room = R"({"name": "r", "rooms": [)";; ++rooms) {
    JsonRecognizer next = r;
    if (!next.push(room)) break;
    r = next;
    text += room;
  }
  // Each room opens two levels, its object and its rooms: inside the root, 31 rooms reach level 63, where
  // one more room would need levels 64 and 65.
  EXPECT_EQ(rooms, (JsonRecognizer::kMaxDepth - 1) / 2);
  EXPECT_EQ(r.depth(), JsonRecognizer::kMaxDepth - 1);
  JsonRecognizer probe = r;
  EXPECT_FALSE(probe.push(uint8_t('{')));  // a room here could not hold its rooms
  for (int i = 0; i < rooms; ++i) text += "]}";
  text += "}";
  ASSERT_TRUE(r.push(text.substr(text.size() - 2 * size_t(rooms) - 1)));
  EXPECT_TRUE(r.complete());
  const auto parsed = nlohmann::ordered_json::parse(text, nullptr, false);
  ASSERT_FALSE(parsed.is_discarded());
  EXPECT_TRUE(conforms(parsed, household_schema()));
}

// More readings than the recognizer follows: it keeps the first, and still never dead-ends.
TEST(JsonGrammar, UnionsBeyondTheReadingsFollowedStayWithinTheSchema) {
  nlohmann::ordered_json outer = nlohmann::ordered_json::array();
  for (int i = 0; i < 6; ++i) {
    nlohmann::ordered_json inner = nlohmann::ordered_json::array();
    for (int j = 0; j < 4; ++j) inner.push_back({{"type", "array"}, {"items", {{"enum", {10 * i + j}}}}});
    outer.push_back({{"type", "array"}, {"items", {{"anyOf", inner}}}});
  }
  const nlohmann::ordered_json schema = {{"type", "object"}, {"properties", {{"m", {{"anyOf", outer}}}}}, {"required", {"m"}}};
  const JsonSchema compiled(schema);
  JsonRecognizer r(compiled);
  ASSERT_TRUE(r.push(R"({"m": [[)"));
  EXPECT_EQ(r.readings(), JsonRecognizer::kMaxReadings);  // of 6 x 4
  EXPECT_TRUE(r.push(R"(10, 10], [11]]})"));
  EXPECT_TRUE(r.complete());
  r = JsonRecognizer(compiled);
  EXPECT_FALSE(r.push(R"({"m": [[53)"));  // the last alternatives are not followed
}

// Random walks under schemas: never a dead end, and every completed text is one the schema allows.
void expect_walks_conform(const nlohmann::ordered_json& schema, int walks, int at_least_completed) {
  const JsonSchema compiled(schema);
  std::mt19937 rng(5);
  const std::string alphabet = "{}[]:,\" \n\\-.0123456789eEtrufalsngodkwybcGxhiemv";
  int completed = 0;
  for (int walk = 0; walk < walks; ++walk) {
    JsonRecognizer r(compiled);
    std::string text;
    for (int step = 0; step < 600 && !r.complete(); ++step) {
      bool pushed = false;
      for (int attempt = 0; attempt < 64 && !pushed; ++attempt) {
        const uint8_t b = uint8_t(alphabet[rng() % alphabet.size()]);
        if (r.push(b)) text += char(b), pushed = true;
      }
      for (int b = 0x20; b < 0x7f && !pushed; ++b)  // nothing of the alphabet went on: something else must
        if (r.push(uint8_t(b))) text += char(b), pushed = true;
      ASSERT_TRUE(pushed) << "no byte continues: " << text;
    }
    if (!r.complete()) continue;
    ++completed;
    const auto parsed = nlohmann::ordered_json::parse(text, nullptr, false);
    ASSERT_FALSE(parsed.is_discarded()) << text;
    EXPECT_TRUE(conforms(parsed, schema)) << text;
  }
  EXPECT_GT(completed, at_least_completed);
}

const char* kLimitsSchema = R"({"type": "object", "properties": {
    "s": {"type": "string", "minLength": 2, "maxLength": 3},
    "a": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
    "t": {"type": "array", "items": {"type": "string", "maxLength": 1}, "maxItems": 0},
    "o": {"type": ["array", "null"], "items": {"type": "object", "properties": {}}, "minItems": 2}},
  "required": ["s", "a", "t", "o"]})";

TEST(JsonGrammar, LengthsAndItemCountsAreKept) {
  const JsonSchema limits(nlohmann::ordered_json::parse(kLimitsSchema));
  auto refused_at = [&](const std::string& text) { return first_refused(text, JsonRecognizer(limits)); };
  // € is one character of 3 bytes.
  for (const std::string text : {R"({"s": "\u00e9\n", "a": [1], "t": [], "o": [{}, {}, {}]})", R"({"s": "ab€", "a": [1, -2], "t": [], "o": null})"}) {
    JsonRecognizer r(limits);
    EXPECT_TRUE(r.push(text)) << text;
    EXPECT_TRUE(r.complete()) << text;
  }
  for (auto [text, offset] : std::vector<std::pair<std::string, size_t>>{
           {R"({"s": "é")", 9},                  // one character, below minLength
           {R"({"s": "abcd")", 10},              // maxLength 3
           {R"({"s": "ab\"\")", 11},             // an escape is one character
           {R"({"s": "ab", "a": [])", 18},       // minItems 1
           {R"({"s": "ab", "a": [1, 2, 3])", 22},  // maxItems 2
           {R"({"s": "ab", "a": [1], "t": ["])", 28},  // maxItems 0
           {R"({"s": "ab", "a": [1], "t": [], "o": [{}])", 39}}) {
    SCOPED_TRACE(text);
    EXPECT_EQ(refused_at(text), offset);
  }
  // A minimum alone is counted up to: a long array still closes, and longer strings are one state.
  JsonRecognizer r(limits);
  std::string many = R"({"s": "ab", "a": [1], "t": [], "o": [{})";
  for (int i = 0; i < 255; ++i) many += ", {}";  // 256 items: a count would wrap to 0
  EXPECT_TRUE(r.push(many + "]}"));
  EXPECT_TRUE(r.complete());
  const JsonSchema at_least(nlohmann::ordered_json::parse(R"({"type": "object", "properties": {"s": {"type": "string", "minLength": 2}}, "required": ["s"]})"));
  JsonRecognizer three(at_least), ten(at_least);
  ASSERT_TRUE(three.push(R"({"s": "abc)"));
  ASSERT_TRUE(ten.push(R"({"s": "abcdefghij)"));
  EXPECT_EQ(three, ten);
  EXPECT_EQ(limits.node(limits.node(limits.root()).children[3]).min_depth, 0);  // null
  EXPECT_EQ(limits.node(limits.node(limits.root()).children[1]).min_depth, 1);
}

// pattern and format, alone and with lengths, nullable, in arrays, and where escapes are characters.
const char* kPatternsSchema = R"({"type": "object", "properties": {
    "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
    "born": {"type": "string", "format": "date"},
    "seen": {"type": ["string", "null"], "format": "date-time"},
    "id": {"type": "string", "format": "uuid"},
    "host": {"type": "string", "format": "ipv4"},
    "note": {"type": "string", "pattern": "go+se", "maxLength": 8},
    "lines": {"type": "string", "pattern": "^a\\n?b\"$"},
    "tags": {"type": "array", "items": {"type": "string", "pattern": "^#[a-z]+$", "maxLength": 4}, "maxItems": 3},
    "rank": {"type": "integer", "minimum": 1, "maximum": 5},
    "site": {"type": "string", "format": "uri", "maxLength": 40}},
  "required": ["code", "born", "seen", "id", "host", "note", "lines", "tags", "rank", "site"]})";

TEST(JsonGrammar, PatternsAndFormatsAreKeptCharacterByCharacterEscapesRead) {
  const JsonSchema patterns(nlohmann::ordered_json::parse(kPatternsSchema));
  const std::string fine = R"({"code": "AB-123", "born": "2024-02-29", "seen": null, "id": "0f8fad5b-d9cb-469f-a165-70867728950e",)"
                           R"( "host": "10.0.0.1", "note": "a gooose", "lines": "a\nb\"", "tags": ["#ab", "#c"], "rank": 5, "site": "https://example.com/a?b#c"})";
  JsonRecognizer r(patterns);
  ASSERT_TRUE(r.push(fine)) << fine.substr(0, first_refused(fine, JsonRecognizer(patterns)));
  EXPECT_TRUE(r.complete());
  EXPECT_TRUE(conforms(nlohmann::ordered_json::parse(fine), nlohmann::ordered_json::parse(kPatternsSchema)));
  const std::string to_note = R"({"code": "AB-123", "born": "2024-02-29", "seen": "2024-01-01T00:00:00Z", "id": "0f8fad5b-d9cb-469f-a165-70867728950e", "host": "10.0.0.1", )";
  for (auto [text, offset] : std::vector<std::pair<std::string, size_t>>{
           {R"({"code": "Ab)", 11},                                                      // [A-Z]
           {R"({"code": "AB-12")", 15},                                                  // \d{3}: the quote comes early
           {R"({"code": "AB-1234)", 16},                                                 // and a fourth digit is one too many
           {R"({"code": "AB-123", "born": "2023-02-29)", 37},                           // not a leap year
           {R"({"code": "AB-123", "born": "2024-02-29", "seen": "2024-01-01 )", 60},    // date-time needs a T
           {to_note + R"("note": "abcdefg)", to_note.size() + 13},                      // after 4 characters only "gose" fits in 8
           {to_note + R"("note": "gose", "lines": "a\u)", to_note.size() + 28},         // no \u escape in a patterned string
           {to_note + R"("note": "gose", "lines": "a\t)", to_note.size() + 28},         // an escape is its character: \t is not \n
           {to_note + R"("note": "gose", "lines": "ab")", to_note.size() + 28},         // the quote must come escaped first
           {to_note + R"("note": "gose", "lines": "ab\"", "tags": ["#abcd)", to_note.size() + 47}}) {  // maxLength 4
    SCOPED_TRACE(text);
    EXPECT_EQ(first_refused(text, JsonRecognizer(patterns)), offset);
  }
}

TEST(JsonGrammar, WhatPatternsAndFormatsAcceptConformsAndNeverDeadEnds) { expect_walks_conform(nlohmann::ordered_json::parse(kPatternsSchema), 400, 50); }

// minimum, maximum and their exclusive forms, on integers and numbers.
const char* kBoundsSchema = R"({"type": "object", "properties": {
    "n": {"type": "integer", "minimum": -5, "exclusiveMaximum": 100},
    "m": {"type": ["integer", "null"], "exclusiveMinimum": 9.5},
    "k": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 7}},
    "big": {"type": "integer", "maximum": -9007199254740990},
    "p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "t": {"type": ["number", "null"], "minimum": -273, "exclusiveMaximum": 0},
    "r": {"type": "number", "exclusiveMinimum": 0.25, "maximum": 0.5}, "c": {"type": "number", "minimum": -273.15, "maximum": 1e3}},
  "required": ["n", "m", "k", "big", "p", "t", "r", "c"]})";

const std::string kToP = R"({"n": 1, "m": 10, "k": [], "big": -9007199254740990, "p": )";

TEST(JsonGrammar, BoundsAreKeptDigitByDigit) {
  const JsonSchema bounds(nlohmann::ordered_json::parse(kBoundsSchema));
  for (const std::string text : {R"({"n": -5, "m": null, "k": [0, 7], "big": -9007199254740990, "p": 1, "t": -273, "r": 0.5, "c": -273.15})",
                                  R"({"n": 99, "m": 10, "k": [], "big": -12345678901234567890, "p": 0.001, "t": null, "r": 0.2500001, "c": 1000.000})",
                                  R"({"n": 0, "m": 11, "k": [1], "big": -9007199254740991, "p": 1.000, "t": -0.5, "r": 0.50, "c": -273.1})"}) {
    JsonRecognizer r(bounds);
    EXPECT_TRUE(r.push(text)) << text;
    EXPECT_TRUE(r.complete()) << text;
  }
  for (auto [text, offset] : std::vector<std::pair<std::string, size_t>>{
           {R"({"n": -6)", 7},      // below -5
           {R"({"n": 100)", 8},     // exclusiveMaximum 100
           {R"({"n": 05)", 7},      // no leading zeros
           {R"({"n": -0)", 7},      // nor -0
           {R"({"n": 1.)", 7},      // an integer
           {R"({"n": 1, "m": 9,)", 15},  // 9 could have become 90, but it ends here
           {R"({"n": 1, "m": 10, "k": [8)", 24},
           {R"({"n": 1, "m": 10, "k": [], "big": 1)", 34},
           {R"({"n": 1, "m": 10, "k": [], "big": -9007199254740989})", 51},
           {kToP + R"(0,)", kToP.size() + 1},        // exclusiveMinimum 0
           {kToP + R"(0.000,)", kToP.size() + 5},
           {kToP + R"(1.01)", kToP.size() + 3},      // maximum 1
           {kToP + R"(2)", kToP.size()},
           {kToP + R"(1e0)", kToP.size() + 1},       // no exponent under bounds
           {kToP + R"(0.5, "t": -273.1)", kToP.size() + 15},
           {kToP + R"(0.5, "t": 0)", kToP.size() + 10},  // ...0989 is above the maximum: it may only go on
           {kToP + R"(0.5, "t": -1, "r": 0.25,)", kToP.size() + 23},    // exclusiveMinimum 0.25
           {kToP + R"(0.5, "t": -1, "r": 0.501)", kToP.size() + 23},    // maximum 0.5
           {kToP + R"(0.5, "t": -1, "r": 0.3, "c": -273.16)", kToP.size() + 35},  // minimum -273.15
           {kToP + R"(0.5, "t": -1, "r": 0.3, "c": 1000.01)", kToP.size() + 35}}) {
    SCOPED_TRACE(text);
    EXPECT_EQ(first_refused(text, JsonRecognizer(bounds)), offset);
  }
}

TEST(JsonGrammar, WhatBoundsAcceptConformsAndNeverDeadEnds) { expect_walks_conform(nlohmann::ordered_json::parse(kBoundsSchema), 800, 100); }

// multipleOf: the remainder of the digits so far is part of each automaton state.
const char* kMultiplesSchema = R"({"type": "object", "properties": {
    "five": {"type": "integer", "multipleOf": 5},
    "even": {"type": "integer", "multipleOf": 2, "minimum": -7, "exclusiveMaximum": 13},
    "twelve": {"type": ["number", "null"], "multipleOf": 12, "maximum": 100},
    "many": {"type": "array", "items": {"type": "integer", "multipleOf": 7, "minimum": 0.5}}},
  "required": ["five", "even", "twelve", "many"]})";

TEST(JsonGrammar, MultiplesAreKeptDigitByDigit) {
  const nlohmann::ordered_json schema = nlohmann::ordered_json::parse(kMultiplesSchema);
  const JsonSchema multiples(schema);
  for (const std::string text : {R"({"five": -15, "even": -6, "twelve": 96, "many": [7, 14, 700]})", R"({"five": 0, "even": 12, "twelve": null, "many": []})",
                                 R"({"five": 1000000000000000000000000000000000000000000000000000000000000005, "even": 0, "twelve": -1200, "many": [7]})"}) {
    JsonRecognizer r(multiples);
    EXPECT_TRUE(r.push(text) && r.complete()) << text << ": refused at byte " << first_refused(text, JsonRecognizer(multiples));
  }
  for (auto [text, offset] : std::vector<std::pair<std::string, size_t>>{
           {R"({"five": 12,)", 11},  // 12 is no multiple of 5
           {R"({"five": 5, "even": 13)", 21},  // exclusiveMaximum 13, and odd
           {R"({"five": 5, "even": -8)", 21},  // below -7
           {R"({"five": 5, "even": 2, "twelve": 1.)", 34},  // written as an integer
           {R"({"five": 5, "even": 2, "twelve": 97)", 34},  // 9 may become 96, 97 nothing
           {R"({"five": 5, "even": 2, "twelve": null, "many": [7, 0)", 51},  // minimum 1
           {R"({"five": 5, "even": 2, "twelve": null, "many": [7, 8])", 52},  // 8 could have become 84
       }) {
    SCOPED_TRACE(text);
    EXPECT_EQ(first_refused(text, JsonRecognizer(multiples)), offset);
  }
}

TEST(JsonGrammar, WhatMultiplesAcceptConformsAndNeverDeadEnds) { expect_walks_conform(nlohmann::ordered_json::parse(kMultiplesSchema), 800, 100); }

// A fractional multipleOf (pydantic's Field(multiple_of=0.01)): the value scaled by 10^k is kept a
// multiple digit by digit; past k digits after the point only zeros may come.
const char* kFractionMultiplesSchema = R"({"type": "object", "properties": {
    "price": {"type": "number", "multipleOf": 0.01, "minimum": 0, "maximum": 1000},
    "step": {"type": "number", "multipleOf": 2.5},
    "odds": {"type": "number", "multipleOf": 0.3, "exclusiveMinimum": -1},
    "whole": {"type": "integer", "multipleOf": 2.5}},
  "required": ["price", "step", "odds", "whole"]})";

TEST(JsonGrammar, FractionalMultiplesAreKeptDigitByDigit) {
  const JsonSchema multiples(nlohmann::ordered_json::parse(kFractionMultiplesSchema));
  for (const std::string text : {R"({"price": 19.99, "step": -7.5, "odds": 0.9, "whole": 15})", R"({"price": 0, "step": 25, "odds": -0.9, "whole": -5})",
                                 R"({"price": 1000.00, "step": 2.50000, "odds": 3.0, "whole": 0})"}) {
    JsonRecognizer r(multiples);
    EXPECT_TRUE(r.push(text) && r.complete()) << text << ": refused at byte " << first_refused(text, JsonRecognizer(multiples));
  }
  for (auto [text, offset] : std::vector<std::pair<std::string, size_t>>{
           {R"({"price": 19.999)", 15},        // a third digit past the point: only a 0
           {R"({"price": 1000.01)", 16},       // above the maximum
           {R"({"price": 1, "step": 2.6)", 23},  // 2.6 is no multiple of 2.5, and no digit after it makes one
           {R"({"price": 1, "step": 1,)", 22},   // 1 could have become 10
           {R"({"price": 1, "step": 5, "odds": -1.2)", 33},  // exclusiveMinimum -1: no number that starts -1 is above it
           {R"({"price": 1, "step": 5, "odds": 0.4)", 34},
           {R"({"price": 1, "step": 5, "odds": 0.3, "whole": 2.)", 47},  // an integer: multiples of 5
           {R"({"price": 1, "step": 5, "odds": 0.3, "whole": 12})", 48},
       }) {
    SCOPED_TRACE(text);
    EXPECT_EQ(first_refused(text, JsonRecognizer(multiples)), offset);
  }
}

TEST(JsonGrammar, WhatFractionalMultiplesAcceptConformsAndNeverDeadEnds) {
  expect_walks_conform(nlohmann::ordered_json::parse(kFractionMultiplesSchema), 800, 100);
}

// A dict's names: propertyNames (an enum, as pydantic writes Dict[Literal[...], V] and Dict[SomeEnum, V];
// a format; lengths) and patternProperties (Dict[constr(pattern=...), V]) are kept byte by byte.
const char* kDictNamesSchema = R"({"$defs": {"Color": {"enum": ["red", "green"], "title": "Color", "type": "string"}},
  "type": "object", "properties": {
    "a": {"additionalProperties": {"type": "integer"}, "propertyNames": {"enum": ["x", "y.z"]}, "title": "A", "type": "object"},
    "b": {"patternProperties": {"^k[0-9]+$": {"type": "integer", "minimum": 0, "maximum": 99}}, "title": "B", "type": "object"},
    "c": {"additionalProperties": {"type": "integer"}, "propertyNames": {"$ref": "#/$defs/Color"}, "maxProperties": 2, "type": "object"},
    "d": {"additionalProperties": true, "propertyNames": {"type": "string", "format": "date"}, "type": "object"},
    "e": {"additionalProperties": {"type": "string", "maxLength": 2}, "propertyNames": {"type": "string", "minLength": 2, "maxLength": 3}, "type": "object"}},
  "required": ["a", "b", "c", "d", "e"]})";

TEST(JsonGrammar, DictNamesFollowTheirSchema) {
  const JsonSchema names(nlohmann::ordered_json::parse(kDictNamesSchema));
  for (const std::string text : {R"({"a": {"x": 1, "y.z": 2}, "b": {"k12": 3, "k0": 4}, "c": {"red": 1, "green": 2}, "d": {"2024-02-29": null}, "e": {"ab": "xy", "a\"c": ""}})",
                                 R"({"a": {}, "b": {}, "c": {}, "d": {}, "e": {}})"}) {
    JsonRecognizer r(names);
    EXPECT_TRUE(r.push(text) && r.complete()) << text << ": refused at byte " << first_refused(text, JsonRecognizer(names));
  }
  const std::string ok = R"({"a": {"x": 1}, "b": {"k1": 1}, "c": {"red": 1}, "d": {}, )";
  for (auto [text, offset] : std::vector<std::pair<std::string, size_t>>{
           {R"({"a": {"q)", 8},                     // not a name of the enum
           {R"({"a": {"yaz)", 9},                   // the enum's "." is a dot, not any character
           {R"({"a": {"x": 1, "b)", 16},           // the next name of a is again x or y.z
           {R"({"a": {"x": 1}, "b": {"x)", 23},
           {R"({"a": {"x": 1}, "b": {"k")", 24},     // k and at least one digit
           {R"({"a": {"x": 1}, "b": {"k1": 100)", 30},  // the value's maximum 99, read after a name of its own pattern
           {R"({"a": {"x": 1}, "b": {"k1": 1}, "c": {"red": 1, "green": 2,)", 58},  // maxProperties 2
           {R"({"a": {"x": 1}, "b": {"k1": 1}, "c": {"blue)", 39},
           {R"({"a": {"x": 1}, "b": {"k1": 1}, "c": {"red": 1}, "d": {"2023-02-29)", 65},  // no 29 February in 2023
           {ok + R"("e": {"a")", ok.size() + 8},    // minLength 2
           {ok + R"("e": {"abcd)", ok.size() + 10},  // maxLength 3
           {ok + R"("e": {"abc": "xyz)", ok.size() + 16},  // the value's maxLength 2, counted from its own start
       }) {
    SCOPED_TRACE(text);
    EXPECT_EQ(first_refused(text, JsonRecognizer(names)), offset);
  }
}

// uniqueItems over an enum (pydantic's Set[SomeEnum] and Set[Literal[...]]): each value at most once,
// and no comma once every value has come.
const char* kSetsSchema = R"({"$defs": {"Color": {"enum": ["red", "green", "blue"], "type": "string"}},
  "type": "object", "properties": {
    "colors": {"type": "array", "items": {"$ref": "#/$defs/Color"}, "uniqueItems": true},
    "digits": {"type": "array", "items": {"enum": [10, 1, 2]}, "uniqueItems": true, "minItems": 2},
    "twice": {"type": "array", "items": {"type": "array", "items": {"enum": [true, false]}, "uniqueItems": true}}},
  "required": ["colors", "digits", "twice"]})";

TEST(JsonGrammar, SetsOfAnEnumTakeEachValueOnce) {
  const JsonSchema sets(nlohmann::ordered_json::parse(kSetsSchema));
  for (const std::string text : {R"({"colors": ["blue", "red", "green"], "digits": [1, 10, 2], "twice": [[true, false], [false, true], [], [true]]})",
                                 R"({"colors": [], "digits": [2, 1], "twice": []})"}) {
    JsonRecognizer r(sets);
    EXPECT_TRUE(r.push(text) && r.complete()) << text << ": refused at byte " << first_refused(text, JsonRecognizer(sets));
  }
  for (auto [text, offset] : std::vector<std::pair<std::string, size_t>>{
           {R"({"colors": ["red", "r)", 20},  // red came
           {R"({"colors": ["red", "green", "blue",)", 34},  // every value came: no more
           {R"({"colors": [], "digits": [1, 1])", 30},  // 1 came; a 1 could still have become 10
           {R"({"colors": [], "digits": [10, 1, 1)", 33},  // 1 and 10 are told apart
           {R"({"colors": [], "digits": [2])", 27},  // minItems 2
           {R"({"colors": [], "digits": [2, 1], "twice": [[true, true)", 50},  // each inner set keeps its own values
       }) {
    SCOPED_TRACE(text);
    EXPECT_EQ(first_refused(text, JsonRecognizer(sets)), offset);
  }
}

TEST(JsonGrammar, WhatSetsAcceptConformsAndNeverDeadEnds) { expect_walks_conform(nlohmann::ordered_json::parse(kSetsSchema), 800, 100); }

TEST(JsonGrammar, WhatDictNamesAcceptConformsAndNeverDeadEnds) { expect_walks_conform(nlohmann::ordered_json::parse(kDictNamesSchema), 800, 100); }

TEST(JsonGrammar, WhatASchemaAcceptsConformsToItAndItNeverDeadEnds) { expect_walks_conform(goose_schema(), 1500, 100); }
TEST(JsonGrammar, WhatRefsAndUnionsAcceptConformsAndNeverDeadEnds) { expect_walks_conform(household_schema(), 1500, 50); }
TEST(JsonGrammar, WhatLimitsAcceptConformsAndNeverDeadEnds) { expect_walks_conform(nlohmann::ordered_json::parse(kLimitsSchema), 1500, 100); }
TEST(JsonGrammar, WhatDefaultsAndDictsAcceptConformsAndNeverDeadEnds) { expect_walks_conform(defaults_schema(), 1500, 100); }
TEST(JsonGrammar, WhatTuplesAcceptConformsAndNeverDeadEnds) { expect_walks_conform(nlohmann::ordered_json::parse(kTuplesSchema), 1500, 100); }

TEST(JsonVocabulary, SchemaMasksAreWhatEachTokensBytesAllow) {
  const JsonSchema goose(goose_schema());
  const WorldTokenizer world(shared_dir() + "/tokenizers/rwkv_vocab_v20230424.txt");
  JsonVocabulary w(world, 65536);
  expect_masks_match_token_checks(w, world, JsonRecognizer(goose),
                                  {"", "{", "{\"na", "{\"name\": ", "{\"name\": \"x\", \"age\": 1", "{\"name\": \"x\", \"age\": 1, \"kind\": \"",
                                   "{\"name\": \"x\", \"age\": 1, \"kind\": \"duck\", \"weights\": [", "{\"name\": \"x\", \"age\": 1, \"kind\": \"duck\", \"weights\": [], \"wild\": true, \"owner\": ",
                                   "{\"name\": \"x\", \"age\": 1, \"kind\": \"duck\", \"weights\": [], \"wild\": true, \"owner\": null, \"nest\": {\"eggs\": 1, \"at\": 1"});
  const JsonSchema household(household_schema());  // states of several readings
  expect_masks_match_token_checks(w, world, JsonRecognizer(household),
                                  {"{\"pet\": ", "{\"pet\": {\"kind\": \"", "{\"pet\": {\"kind\": \"dog\", \"good\": true}, \"nickname\": ",
                                   "{\"pet\": {\"kind\": \"dog\", \"good\": true}, \"nickname\": null, \"color\": \"red\", \"size\": ",
                                   "{\"pet\": {\"kind\": \"dog\", \"good\": true}, \"nickname\": null, \"color\": \"red\", \"size\": 1, \"house\": {\"name\": \"a\", \"rooms\": ["});
  const JsonSchema patterns(nlohmann::ordered_json::parse(kPatternsSchema));  // states inside patterned strings
  const std::string to_id = R"({"code": "AB-123", "born": "2024-02-29", "seen": null, "id": ")";
  const std::string to_note = to_id + R"(0f8fad5b-d9cb-469f-a165-70867728950e", "host": "1.2.3.4", "note": ")";
  expect_masks_match_token_checks(w, world, JsonRecognizer(patterns),
                                  {R"({"code": ")", R"({"code": "AB-1)", R"({"code": "AB-123", "born": "2024-0)", R"({"code": "AB-123", "born": "2024-02-29", "seen": )",
                                   to_id + "0f8fad5b-d9", to_note + "xgo", to_note + R"(gose", "lines": "a\)"});
  const JsonSchema pets(defaults_schema());  // several properties may come next; a dict's keys
  expect_masks_match_token_checks(w, world, JsonRecognizer(pets),
                                  {R"({"name": "Gus", )", R"({"name": "Gus", "n)", R"({"name": "Gus", "scores": {")", R"({"name": "Gus", "scores": {"a": 1, )",
                                   R"({"name": "Gus", "scores": {"a": 1, "b": 2, "c": 3)", R"({"name": "Gus", "notes": {"x": )"});
  // The same state of two schemas is two cache entries: masks never cross schemas.
  const auto a = w.constraint(ResponseFormat::JsonSchema, R"({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})");
  const auto b = w.constraint(ResponseFormat::JsonSchema, R"({"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]})");
  ASSERT_TRUE(a->accept(world.encode("{\"")[0]));
  ASSERT_TRUE(b->accept(world.encode("{\"")[0]));
  const int32_t letter_a = world.encode("a")[0], letter_b = world.encode("b")[0];
  EXPECT_TRUE((a->allowed()[size_t(letter_a) / 64] >> (letter_a % 64)) & 1);
  EXPECT_FALSE((a->allowed()[size_t(letter_b) / 64] >> (letter_b % 64)) & 1);
  EXPECT_TRUE((b->allowed()[size_t(letter_b) / 64] >> (letter_b % 64)) & 1);
  EXPECT_FALSE((b->allowed()[size_t(letter_a) / 64] >> (letter_a % 64)) & 1);
  EXPECT_EQ(w.constraint(ResponseFormat::Text, ""), nullptr);
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

// json_schema: the schema's properties in its own order (the request's text is read again for it),
// replies that close their object conform to the schema, alone, on the cluster, over TCP and from the
// command line (--json-schema FILE), which all draw the same text for the same seed.
TEST(JsonMode, SchemaRepliesConformOverHttpTcpAndTheCommandLine) {
  const std::string model = shared_dir() + "/models/tiny-rwkv-7v0-834K.pth", dir = temp_dir();
  write_file(dir + "/goose.json", kGooseSchema);
  const std::string prompt = "The goose:";
  CommandResult cli = run_shell(std::string(SKEIN_BINARY) + " generate --model " + model + " --json-schema " + dir +
                                "/goose.json --seed 1 --temperature 0.7 --max-tokens 400 --prompt '" + prompt + "'");
  ASSERT_EQ(cli.exit_code, 0) << cli.output;
  const std::string reply = object_after(cli.output, prompt);
  ASSERT_FALSE(reply.empty()) << cli.output;
  EXPECT_TRUE(conforms(nlohmann::ordered_json::parse(reply), goose_schema())) << reply;
  write_file(dir + "/bad.json", R"({"type": "object", "properties": {"a": {"type": "string", "format": "ipv5"}}, "required": ["a"]})");
  CommandResult bad = run_skein("generate --model " + model + " --json-schema " + dir + "/bad.json --prompt x");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(bad.output, "skein: error: " + dir + "/bad.json: schema/properties/a/format: 'ipv5' is not one of date-time, date, time, duration, email, hostname, ipv4, ipv6, uri, uuid (or binary, password, path: any string)\n");
  // One line (TCP's framing), its keys still in the schema's order.
  const std::string format = R"({"type": "json_schema", "json_schema": {"name": "goose", "strict": true, "schema": )" + goose_schema().dump() + "}}";
  std::vector<std::string> first_texts;
  for (int ranks : {1, 3}) {
    SCOPED_TRACE(ranks);
    Server server("", ranks, model);
    ASSERT_GT(server.http_port(), 0) << server.output();
    auto r = http_request(server.http_port(), "POST", "/v1/completions",
                          R"({"prompt": ")" + prompt + R"(", "max_tokens": 400, "n": 4, "seed": 1, "temperature": 0.7, "response_format": )" + format + "}");
    ASSERT_EQ(r.status, 200) << r.body;
    const json body = r.json();
    std::vector<std::string> texts;
    int complete = 0;
    for (auto& c : body["choices"]) {
      const std::string text = c["text"];
      texts.push_back(text);
      if (c["finish_reason"] != "stop") continue;
      ++complete;
      EXPECT_TRUE(conforms(nlohmann::ordered_json::parse(text), goose_schema())) << text;
    }
    ASSERT_EQ(texts.size(), 4u);
    EXPECT_EQ(texts[0], reply);  // sample 0 draws with the seed itself
    EXPECT_GE(complete, 2);
    Client tcp(server.port());
    tcp.send(R"({"id": "g", "prompt": ")" + prompt + R"(", "max_tokens": 400, "seed": 1, "temperature": 0.7, "stream": false, "response_format": )" + format + "}");
    auto events = tcp.until_done("g");
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back()["finish_reason"], "format_complete") << events.back().dump();
    EXPECT_EQ(events.back()["text"], reply);
    // The command-line client sends the schema file with its properties in order.
    CommandResult client = run_skein("client --server 127.0.0.1:" + std::to_string(server.port()) + " --json-schema " + dir +
                                     "/goose.json --seed 1 --temperature 0.7 --max-tokens 400 --prompt '" + prompt + "'");
    EXPECT_EQ(client.exit_code, 0) << client.output;
    EXPECT_EQ(object_after(client.output, prompt), reply) << client.output;
    if (first_texts.empty()) first_texts = texts;
    else EXPECT_EQ(texts, first_texts);
  }
}

// The choices of one HTTP completion whose replies are to be `schema`'s texts; `fields` are the rest of
// the request (prompt, n, sampling). Empty, after a failure, when the request is not answered.
json schema_choices(const Server& server, const std::string& name, const nlohmann::ordered_json& schema, const std::string& fields) {
  const std::string format = R"({"type": "json_schema", "json_schema": {"name": ")" + name + R"(", "strict": true, "schema": )" + schema.dump() + "}}";
  auto r = http_request(server.http_port(), "POST", "/v1/completions", "{" + fields + R"(, "response_format": )" + format + "}");
  EXPECT_EQ(r.status, 200) << r.body;
  return r.status == 200 ? r.json()["choices"] : json::array();
}

// A schema as pydantic writes it ($defs, $ref, anyOf, a recursive model) travels through the server
// whole: every reply is a prefix of one of its texts, and a finished one is one of them.
TEST(JsonMode, RefsAndUnionsConstrainRepliesOnTheServer) {
  Server server("", 1, shared_dir() + "/models/tiny-rwkv-7v0-834K.pth");
  ASSERT_GT(server.http_port(), 0) << server.output();
  const json choices = schema_choices(server, "household", household_schema(), R"("prompt": "The household:", "max_tokens": 300, "n": 4, "seed": 3, "temperature": 0.7)");
  ASSERT_EQ(choices.size(), 4u);
  const JsonSchema household(household_schema());
  int past_the_unions = 0;
  for (auto& c : choices) {
    const std::string text = c["text"];
    JsonRecognizer recognizer(household);
    EXPECT_TRUE(recognizer.push(text)) << text;
    past_the_unions += text.find("\"house\"") != std::string::npos;
    if (c["finish_reason"] == "stop") EXPECT_TRUE(conforms(nlohmann::ordered_json::parse(text), household_schema())) << text;
    else EXPECT_EQ(c["finish_reason"], "length");
  }
  EXPECT_GE(past_the_unions, 2);
  // The load generator asks for the schema's texts and checks every reply that closes its object.
  const std::string dir = temp_dir();
  write_file(dir + "/household.json", kHouseholdSchema);
  CommandResult bench = run_skein("bench --server 127.0.0.1:" + std::to_string(server.port()) + " --clients 4 --duration 2 --max-tokens 300 --json-schema " +
                                  dir + "/household.json");
  EXPECT_EQ(bench.exit_code, 0) << bench.output;
  EXPECT_NE(bench.output.find("0 lost, 0 garbled"), std::string::npos) << bench.output;
  EXPECT_NE(bench.output.find("(every one parsed and was one of the schema's texts)"), std::string::npos) << bench.output;
}

// A pydantic model with defaults and dicts, as its model_json_schema() writes it: the replies leave out
// properties and write dicts of the model's own keys, and each is one of the schema's texts.
TEST(JsonMode, DefaultsAndDictsShapeRepliesOnTheServer) {
  Server server("", 1, shared_dir() + "/models/tiny-rwkv-7v0-834K.pth");
  ASSERT_GT(server.http_port(), 0) << server.output();
  const json choices = schema_choices(server, "pet", defaults_schema(), R"("prompt": "The pet:", "max_tokens": 300, "n": 6, "seed": 11, "temperature": 0.8)");
  ASSERT_EQ(choices.size(), 6u);
  const JsonSchema pets(defaults_schema());
  int closed = 0;
  for (auto& c : choices) {
    const std::string text = c["text"];
    JsonRecognizer recognizer(pets);
    EXPECT_TRUE(recognizer.push(text)) << text;
    if (c["finish_reason"] != "stop") continue;
    EXPECT_TRUE(conforms(nlohmann::ordered_json::parse(text), defaults_schema())) << text;
    ++closed;
  }
  EXPECT_GE(closed, 3);
}

// pattern and format on a server: every reply's strings are what their patterns and formats allow, also
// what the tiny model writes under them on its own.
TEST(JsonMode, PatternsAndFormatsShapeRepliesOnTheServer) {
  Server server("", 1, shared_dir() + "/models/tiny-rwkv-7v0-834K.pth");
  ASSERT_GT(server.http_port(), 0) << server.output();
  const nlohmann::ordered_json schema = nlohmann::ordered_json::parse(kPatternsSchema);
  const json choices = schema_choices(server, "patterns", schema, R"("prompt": "The record:", "max_tokens": 400, "n": 4, "seed": 5, "temperature": 0.8)");
  ASSERT_EQ(choices.size(), 4u);
  int closed = 0;
  for (auto& c : choices) {
    const std::string text = c["text"];
    ASSERT_EQ(c["finish_reason"], "stop") << text;  // every string here is bounded or ends in a few characters
    const auto reply = nlohmann::ordered_json::parse(text);
    EXPECT_TRUE(conforms(reply, schema)) << text;
    closed += conforms(reply, schema);
  }
  EXPECT_EQ(closed, 4);
}

TEST(JsonMode, FormatsItCannotServeAreRefusedClearly) {
  Server server;
  ASSERT_GT(server.http_port(), 0) << server.output();
  const std::string schema = R"({"type": "json_schema", "json_schema": {"name": "x", "schema": )";
  for (auto [format, message] :
       {std::pair{schema + R"({}}})", std::string(R"(response_format: json_schema: schema: the root must be {"type": "object", ...} or a union of such schemas)")},
        {schema + R"({"type": "object", "properties": {"a": {"type": "string", "pattern": "^(x)\\1"}}, "required": ["a"]}}})",
         "response_format: json_schema: schema/properties/a/pattern: at character 5: backreferences are not supported"},
        {schema + R"({"type": "object", "properties": {"a": {"type": "number", "not": {"const": 2}}}, "required": ["a"]}}})",
         "response_format: json_schema: schema/properties/a: 'not' is not supported"},
        {schema + R"({"type": "object", "properties": {"a": {"allOf": [{"type": "string"}, {"maxLength": 3}]}}}}})",
         "response_format: json_schema: schema/properties/a/allOf: must be an array of one schema (an intersection of several cannot be followed byte by byte)"},
        {R"({"type": "json_schema", "json_schema": {"name": "x"}})", R"(response_format: json_schema must be {"name": ..., "schema": {...}})"},
        {R"({"type": "xml"})", R"(response_format: type must be "text", "json_object" or "json_schema", got "xml")"},
        {R"("json")", R"(response_format: must be {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {...}})"},
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
