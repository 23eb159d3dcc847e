// A JSON Schema compiled for constrained generation (OpenAI's response_format json_schema): the subset
// strict structured outputs use, and what pydantic writes. An object writes its properties in the order
// the schema lists them (read with nlohmann::ordered_json, which keeps it), each one `required` names
// and any of the others; with `additionalProperties` (a schema, or true for any value) and no
// properties it is a dict (`minProperties`/`maxProperties` count its keys, `propertyNames` or one
// `patternProperties` pattern names them); arrays hold `items` after `prefixItems` (a tuple's, item by
// item), and `uniqueItems` over an enum's values (a set); `minLength`/`maxLength` bound a string's
// characters and `minItems`/`maxItems` an array's items; `pattern` (a regular expression) or `format`
// (date-time, email, uuid, ...) shapes a string (coordinator/string_pattern.h); `minimum`/`maximum` and
// their exclusive forms bound an integer or a number (which is then written without an exponent), and
// `multipleOf` divides it (a whole one makes it an integer; a decimal one such as 0.01 is kept exactly);
// `enum` and `const` give the exact values allowed; `type` may list several types; `anyOf`
// allows any of its schemas, and `oneOf` too where its `discriminator` property tells them apart;
// `$ref` ("#", "#/$defs/Name" or any pointer into the schema) points at another part, so schemas may
// be recursive, as pydantic writes nested and recursive models; `allOf` of one schema is that schema.
// Annotations (title, description, default, examples, $schema, $comment, $id, readOnly, writeOnly,
// deprecated) are ignored; any other keyword is refused by name and place, so a schema is never
// silently loosened. A sub-schema of {} allows any JSON value.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "coordinator/string_pattern.h"

namespace skein {

class JsonSchema {
 public:
  static constexpr uint32_t kNoLimit = UINT32_MAX;
  static constexpr uint32_t kMaxLength = 65535;  // of minLength and maxLength
  static constexpr uint32_t kMaxItems = 255;     // of minItems and maxItems, minProperties and maxProperties
  enum class Kind : uint8_t { Any, Object, Array, String, Number, Integer, Boolean, Null, Enum, Union };
  struct Node {
    Kind kind = Kind::Any;
    bool nullable = false;            // "null" is allowed too
    // The fewest containers a text of this node opens, one inside another (0 for a primitive or
    // null; kUnbounded when no finite text matches): how deep a text must be allowed to go.
    uint8_t min_depth = 0;
    std::vector<std::string> keys;    // Object: each property's name as JSON text (quoted), in order
    std::vector<bool> required;       // Object: whether each property must be written (else it may be left out)
    bool map = false;                 // Object: a dict, no keys: any names, each value children[0]
    uint8_t key = 0;                  // a dict: the String node its names follow (propertyNames, patternProperties); 0: any
    bool unique = false;              // Array: uniqueItems, its items an enum: each of its values at most once
    std::vector<uint8_t> children;    // Object: each property's node (a dict: its values'); Array: its items' node, then
                                      // its prefixItems'; Union: its branches
    std::vector<std::string> values;  // Enum: each allowed value as compact JSON text
    // String: characters (minLength, maxLength); Array: items (minItems, maxItems); a dict: its
    // properties (minProperties, maxProperties).
    uint32_t min_size = 0, max_size = kNoLimit;
    // String: 1 + the index of its pattern or format (which then holds the length limits too); Integer
    // and Number: of its minimum, maximum and multipleOf, as a pattern of its text; 0 for none.
    uint8_t pattern = 0;
    bool limited() const { return min_size > 0 || max_size != kNoLimit; }
  };
  static constexpr size_t kMaxNodes = 255;
  static constexpr size_t kMaxValues = 64;  // of one enum
  static constexpr int kMaxNesting = 32;
  static constexpr size_t kMaxText = 4096;  // bytes of a property name or an enum value, as JSON
  static constexpr int kMaxTextDepth = 64;  // containers one inside another in a text (the recognizer's limit)
  static constexpr int kMaxIntegerDigits = 64;  // of a number's integer part (the recognizer's limit)
  static constexpr double kMaxBound = 9007199254740992.0;  // 2^53: of minimum and maximum, exact as doubles
  static constexpr uint8_t kUnbounded = 255;
  // Schemas of one anyOf or oneOf: the recognizer follows this many readings at once, so a union's
  // branches can all be open together.
  static constexpr size_t kMaxBranches = 16;
  // Digits after the point of a multipleOf (0.000000001 has nine).
  static constexpr size_t kMaxMultipleFraction = 9;

  // Throws skein::Error "WHERE: problem", WHERE a JSON pointer into the schema ("/properties/age").
  // The root must be an object, or a union of objects.
  explicit JsonSchema(const nlohmann::ordered_json& schema);
  const Node& node(uint8_t id) const { return nodes_[id]; }
  uint8_t root() const { return root_; }
  const StringPattern& pattern(const Node& n) const { return patterns_[n.pattern - 1u]; }
  // Unique to this compiled schema for the process's life: recognizer states of different schemas never
  // compare equal, even when one schema's memory is reused by another.
  uint32_t id() const { return id_; }
  // Bytes its compiled patterns, formats and bounds hold (their automata dominate a schema's size).
  size_t pattern_bytes() const;

 private:
  // The node for `s`; `into` >= 0 fills that reserved node (the target of a $ref) instead of a new one.
  uint8_t compile(const nlohmann::ordered_json& s, const std::string& where, int nesting, int into = -1);
  uint8_t reference(const nlohmann::ordered_json& ref, const std::string& where, int nesting);
  static const nlohmann::ordered_json* alias(const nlohmann::ordered_json& s, const std::string& where);
  uint8_t add(Node n, const std::string& where, int into);
  uint8_t bounds(const nlohmann::ordered_json& s, Kind kind, const std::string& where);
  uint8_t key_node(const nlohmann::ordered_json& s, const std::string& where, int nesting);
  uint8_t add_pattern(const std::string& regex, uint32_t min_chars, uint32_t max_chars, const std::string& where, uint32_t multiple_of = 0,
                      uint32_t fraction_digits = 0);
  void settle_depths();
  void refuse_union_cycles() const;
  void check_discriminators() const;

  std::vector<Node> nodes_;  // nodes_[0]: any value
  std::vector<StringPattern> patterns_;
  size_t pattern_work_left_ = StringPattern::kMaxWork;  // all of its patterns together
  uint8_t root_ = 0;
  uint32_t id_;
  // While compiling: the whole document ($ref targets are looked up in it), each $ref target's node,
  // and where each node is in the schema (for errors found after compiling).
  const nlohmann::ordered_json* document_ = nullptr;
  std::map<std::string, uint8_t> targets_;
  std::vector<std::string> places_;
  struct Discriminated {
    uint8_t node;
    std::string property, where;
  };
  std::vector<Discriminated> discriminated_;  // oneOf unions, checked when all nodes are compiled
};

// The compiled schema of `text` (a schema as JSON text). Requests are checked where they are parsed and
// served by the scheduler; both ask here, so a schema compiles once, off the scheduler's loop, while it
// is among the last ones used (at most kCachedSchemas of them, and kCachedBytes of automata). Thread-safe.
// Throws as JsonSchema's constructor does.
inline constexpr size_t kCachedSchemas = 64;
inline constexpr size_t kCachedBytes = size_t(256) << 20;
std::shared_ptr<const JsonSchema> compiled_schema(const std::string& text);

}  // namespace skein
