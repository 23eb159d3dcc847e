// A byte-at-a-time recognizer of JSON text (RFC 8259) whose top-level value is an object: what
// `response_format: {"type": "json_object"}` promises. It answers one question, "can this byte come
// next?", so that a generation constrained by it can always be finished as valid JSON. Its state is a
// small value (copied freely while the vocabulary is searched for the tokens that may come next).
//
// Beyond RFC 8259, to keep constrained generation finite and parseable everywhere:
// - whitespace between tokens is one space, or a newline and an indent of at most kMaxIndent spaces and
//   tabs (as llama.cpp's JSON grammar): a model cannot pad the object with blank lines forever;
// - nesting is at most kMaxDepth levels;
// - a number's integer part has at most kMaxIntegerDigits digits and its exponent at most two, so every
//   number is within a double's range (parsers refuse or turn into infinity 1e400);
// - strings hold valid UTF-8 only, no control characters, and no \u escape of a surrogate (a character
//   outside the BMP is written as its UTF-8 bytes); a string with a pattern or format takes no \u escape
//   at all (each of its characters is then one step of the pattern), and a number with a schema's bounds
//   is written without an exponent.
//
// With a JsonSchema (coordinator/json_schema.h) it recognizes the texts of that schema: each object's
// properties in order (the required ones, and any of the others), dicts, arrays of their items (and
// prefixItems), the allowed types and enum values, strings'
// patterns, formats and lengths, and numbers' bounds (coordinator/string_pattern.h). Where an
// anyOf allows several schemas, it follows one reading of the text per schema still possible (as a
// nondeterministic automaton does), up to kMaxReadings at once; readings that arrive at the same state
// merge, and one that cannot take a byte drops out. Beyond kMaxReadings the later ones are not followed:
// the text stays one the schema allows, and the first alternatives stay open.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "coordinator/json_schema.h"

namespace skein {

// One reading of the text: where it is in the JSON grammar and in the schema. Trivially copyable and
// constructible, so that the recognizer's fixed array of readings costs nothing where it is unused.
class JsonReading {
 public:
  static constexpr int kMaxIndent = 32;
  static constexpr int kMaxDepth = JsonSchema::kMaxTextDepth;
  static constexpr int kMaxIntegerDigits = JsonSchema::kMaxIntegerDigits;

  // Any JSON object, or the texts of `schema` (null for none).
  static JsonReading start(const JsonSchema* schema);
  // False, the reading then undefined, when `byte` cannot continue the text read so far.
  bool push(uint8_t byte);
  // The top-level object is closed (only whitespace may follow).
  bool complete() const { return mode_ == Mode::Done; }
  int depth() const { return depth_; }
  // The anyOf whose value comes next, to be replaced by one reading per branch (null for none).
  const JsonSchema::Node* pending_union() const;
  // This reading with the next value of `node` (a branch of its pending union); false when that
  // value's shortest text would nest deeper than kMaxDepth.
  bool choose(uint8_t node);

  bool operator==(const JsonReading&) const = default;
  size_t hash() const;

 private:
  enum class Mode : uint8_t {
    Start,       // before the top-level object
    Value,       // a value must come (after ':' or ',' in an array)
    ValueOrEnd,  // after '[': a value or ']'
    KeyOrEnd,    // after '{': a key or '}'
    Key,         // after ',' in an object: a key
    Colon,       // after a key
    AfterValue,  // in a container, after a value: ',' or its closing bracket
    Done,        // the top-level object is closed
    String,      // in a string (key_: an object's key)
    Escape,      // after '\'
    Unicode,     // after "\u": aux_ hex digits to come
    Utf8,        // in a multi-byte character: aux_ continuation bytes to come, the next in [lo_, hi_]
    Number,      // aux_: a NumberPart, lo_: the digits of its integer part or exponent so far
    Literal,     // aux_: which of true/false/null, lo_: how many of its letters came
    Fixed,       // one of a schema's exact texts (an enum's values, or key_: the property's quoted name):
                 // candidates_ those still possible, pos_ bytes of them matched
  };
  enum NumberPart : uint8_t { Minus, Zero, Integer, Dot, Fraction, Exponent, ExponentSign, ExponentDigits };

  bool push_structural(uint8_t byte);  // the modes between values and keys
  bool begin_value(uint8_t byte);
  void end_value();  // a value closed: after it in its container, or Done
  bool open(bool object, uint8_t node);
  bool close(bool object);
  bool in_object() const { return depth_ > 0 && (stack_ >> (depth_ - 1)) & 1; }
  // The schema node of the innermost container (null without a schema, or in a part of any shape).
  const JsonSchema::Node* container() const;
  const JsonSchema::Node* schema_node(uint8_t id) const { return schema_ && id ? &schema_->node(id) : nullptr; }
  bool begin_literal(uint8_t byte);  // true, false or null, by its first letter
  bool begin_fixed(uint8_t byte, bool key);
  // In an object with properties: those that may come next (bit i: property props_ + i), and whether a
  // required one is still to come.
  uint64_t key_candidates() const;
  bool required_left() const;
  bool count_member(const JsonSchema::Node& container);  // an array's item or a dict's property begins
  static uint8_t item_node(const JsonSchema::Node& array, size_t index);
  bool step_fixed(uint8_t byte);
  std::string_view fixed_text(int candidate) const;
  void end_fixed();
  // The schema of the string being read: a value's, or a dict's names' (null for none).
  const JsonSchema::Node* string_node() const;
  // A string whose schema has a pattern (or format): it is stepped with each character's bytes, escapes
  // read (pos_ counts the characters, pattern_state_ is the pattern's state).
  const StringPattern* string_pattern() const;
  bool step_pattern(uint8_t byte);  // true without a pattern
  const StringPattern* number_pattern() const;  // of a number or integer with bounds, whose text it reads
  static uint8_t unescaped(uint8_t letter);  // of a short escape (\n: '\n'); 0 for none
  bool escape_possible(const StringPattern& p) const;  // some short escape may come next

  Mode mode_;
  uint8_t aux_, lo_, hi_;
  uint8_t whitespace_;  // the whitespace since the last token: 0 none, 1 a space, 2 + k a newline and k indent bytes
  bool key_;
  bool surrogate_;  // a \u escape began with 'D': its second digit must be below 8
  uint8_t depth_;
  uint64_t stack_;  // bit d: level d+1 is an object (else an array)
  // With a schema: the node of each open container and, for an object, the first property that may
  // still come (for an array or a dict with limits on its size, the members begun); the node of the
  // value that comes next; the exact
  // texts still possible in Fixed mode; pos_: in Fixed mode the bytes matched, in a string with
  // minLength or maxLength the characters so far.
  const JsonSchema* schema_;
  uint32_t schema_id_;
  bool integer_;  // the number being read must be an integer
  uint8_t value_node_;
  uint16_t pos_;
  uint16_t pattern_state_;
  uint64_t candidates_;
  // In an array with uniqueItems, the values of its enum that came (bit i: value i). Its items are
  // enum values, so no container opens inside it: one mask serves, cleared when a container closes.
  uint64_t used_;
  std::array<uint8_t, kMaxDepth> nodes_, props_;  // levels at or above depth_ are 0
};


// The readings of the text still possible: what JSON mode asks "can this byte come next?".
class JsonRecognizer {
 public:
  static constexpr int kMaxIndent = JsonReading::kMaxIndent;
  static constexpr int kMaxDepth = JsonReading::kMaxDepth;
  static constexpr int kMaxIntegerDigits = JsonReading::kMaxIntegerDigits;
  static constexpr int kMaxReadings = int(JsonSchema::kMaxBranches);

  JsonRecognizer() : JsonRecognizer(nullptr) {}  // any JSON object
  explicit JsonRecognizer(const JsonSchema& schema) : JsonRecognizer(&schema) {}
  JsonRecognizer(const JsonRecognizer& other) { *this = other; }
  JsonRecognizer& operator=(const JsonRecognizer& other);

  // False, leaving the state as it was, when `byte` cannot continue the text read so far.
  bool push(uint8_t byte);
  // As push, but the state is undefined after false (no copy kept: for callers that drop it then).
  bool advance(uint8_t byte);
  // Every byte in turn; false (the state then undefined) at the first that cannot continue.
  bool push(std::string_view bytes);
  // The top-level object is closed (only whitespace may follow).
  bool complete() const;
  int depth() const { return readings_[0].depth(); }  // of the first reading
  int readings() const { return count_; }

  bool operator==(const JsonRecognizer& other) const;
  size_t hash() const;

 private:
  explicit JsonRecognizer(const JsonSchema* schema);
  // Appends `r`, or its branches where a union's value comes next, unless it is there already.
  void add(const JsonReading& r);

  uint8_t count_ = 0;
  std::array<JsonReading, kMaxReadings> readings_;  // [0, count_) are in use
};

}  // namespace skein
