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
//   outside the BMP is written as its UTF-8 bytes).
//
// With a JsonSchema (coordinator/json_schema.h) it recognizes the texts of that schema: each object's
// properties exactly and in order, arrays of their items, the allowed types and enum values.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "coordinator/json_schema.h"

namespace skein {

class JsonRecognizer {
 public:
  static constexpr int kMaxIndent = 32;
  static constexpr int kMaxDepth = 64;
  static constexpr int kMaxIntegerDigits = 64;

  JsonRecognizer() = default;  // any JSON object
  explicit JsonRecognizer(const JsonSchema& schema) : schema_(&schema), schema_id_(schema.id()), value_node_(schema.root()) {}

  // False, leaving the state as it was, when `byte` cannot continue the text read so far.
  bool push(uint8_t byte);
  // Every byte in turn; false (the state then undefined) at the first that cannot continue.
  bool push(std::string_view bytes);
  // The top-level object is closed (only whitespace may follow).
  bool complete() const { return mode_ == Mode::Done; }
  int depth() const { return depth_; }

  bool operator==(const JsonRecognizer&) const = default;
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
  bool step_fixed(uint8_t byte);
  std::string_view fixed_text(int candidate) const;
  void end_fixed();

  Mode mode_ = Mode::Start;
  uint8_t aux_ = 0, lo_ = 0, hi_ = 0;
  uint8_t whitespace_ = 0;  // the whitespace since the last token: 0 none, 1 a space, 2 + k a newline and k indent bytes
  bool key_ = false;
  bool surrogate_ = false;  // a \u escape began with 'D': its second digit must be below 8
  uint8_t depth_ = 0;
  uint64_t stack_ = 0;  // bit d: level d+1 is an object (else an array)
  // With a schema: the node of each open container and, for an object, the property it is at; the node
  // of the value that comes next; the exact texts still possible in Fixed mode.
  const JsonSchema* schema_ = nullptr;
  uint32_t schema_id_ = 0;
  bool integer_ = false;  // the number being read must be an integer
  uint8_t value_node_ = 0;
  uint16_t pos_ = 0;
  uint64_t candidates_ = 0;
  std::array<uint8_t, kMaxDepth> nodes_{}, props_{};  // levels at or above depth_ are 0
};

}  // namespace skein
