// A JSON Schema compiled for constrained generation (OpenAI's response_format json_schema): the subset
// strict structured outputs use. An object writes every property, in the order the schema lists them
// (read with nlohmann::ordered_json, which keeps it; so `required` must name them all); arrays hold `items`; `enum` and `const` give the exact values
// allowed; `type` may pair one type with "null". Annotations (title, description, default, examples,
// $schema, $comment) are ignored; any other keyword is refused by name and place, so a schema is never
// silently loosened. A sub-schema of {} allows any JSON value.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace skein {

class JsonSchema {
 public:
  enum class Kind : uint8_t { Any, Object, Array, String, Number, Integer, Boolean, Null, Enum };
  struct Node {
    Kind kind = Kind::Any;
    bool nullable = false;            // "null" is allowed too
    std::vector<std::string> keys;    // Object: each property's name as JSON text (quoted), in order
    std::vector<uint8_t> children;    // Object: each property's node; Array: its items' node
    std::vector<std::string> values;  // Enum: each allowed value as compact JSON text
  };
  static constexpr size_t kMaxNodes = 255;
  static constexpr size_t kMaxValues = 64;  // of one enum
  static constexpr int kMaxNesting = 32;
  static constexpr size_t kMaxText = 4096;  // bytes of a property name or an enum value, as JSON

  // Throws skein::Error "WHERE: problem", WHERE a JSON pointer into the schema ("/properties/age").
  // The root must be an object.
  explicit JsonSchema(const nlohmann::ordered_json& schema);
  const Node& node(uint8_t id) const { return nodes_[id]; }
  uint8_t root() const { return root_; }
  // Unique to this compiled schema for the process's life: recognizer states of different schemas never
  // compare equal, even when one schema's memory is reused by another.
  uint32_t id() const { return id_; }

 private:
  uint8_t compile(const nlohmann::ordered_json& s, const std::string& where, int nesting);

  std::vector<Node> nodes_;  // nodes_[0]: any value
  uint8_t root_ = 0;
  uint32_t id_;
};

}  // namespace skein
