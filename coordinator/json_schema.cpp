#include "coordinator/json_schema.h"

#include <algorithm>
#include <atomic>
#include <set>

#include "common/error.h"

namespace skein {

namespace {
std::atomic<uint32_t> next_schema_id{1};

std::string place(const std::string& where) { return where.empty() ? "schema" : "schema" + where; }

JsonSchema::Kind kind_named(const nlohmann::ordered_json& t, const std::string& where) {
  static const std::pair<const char*, JsonSchema::Kind> kinds[] = {
      {"object", JsonSchema::Kind::Object}, {"array", JsonSchema::Kind::Array},     {"string", JsonSchema::Kind::String},
      {"number", JsonSchema::Kind::Number}, {"integer", JsonSchema::Kind::Integer}, {"boolean", JsonSchema::Kind::Boolean},
      {"null", JsonSchema::Kind::Null}};
  if (t.is_string())
    for (auto& [name, kind] : kinds)
      if (t == name) return kind;
  fail(place(where), "/type: ", t.dump().substr(0, 64), " is not one of object, array, string, number, integer, boolean, null");
}
}  // namespace

JsonSchema::JsonSchema(const nlohmann::ordered_json& schema) : id_(next_schema_id++) {
  nodes_.emplace_back();  // 0: any value
  root_ = compile(schema, "", 0);
  if (nodes_[root_].kind != Kind::Object || nodes_[root_].nullable) fail("schema: the root must be {\"type\": \"object\", ...}");
}

uint8_t JsonSchema::compile(const nlohmann::ordered_json& s, const std::string& where, int nesting) {
  if (!s.is_object()) fail(place(where), ": must be a JSON object (a schema)");
  if (nesting > kMaxNesting) fail(place(where), ": nested more than ", kMaxNesting, " levels deep");
  static const std::set<std::string> annotations = {"title", "description", "default", "examples", "$schema", "$comment"};
  static const std::set<std::string> known = {"type", "properties", "required", "additionalProperties", "items", "enum", "const"};
  for (auto& [k, v] : s.items())
    if (!annotations.count(k) && !known.count(k)) fail(place(where), ": '", k.substr(0, 64), "' is not supported");
  Node n;
  if (s.contains("enum") || s.contains("const")) {
    if (s.contains("enum") && s.contains("const")) fail(place(where), ": give enum or const, not both");
    const nlohmann::ordered_json values = s.contains("const") ? nlohmann::ordered_json::array({s["const"]}) : s["enum"];
    if (!values.is_array() || values.empty() || values.size() > kMaxValues) fail(place(where), "/enum: must be an array of 1 to ", kMaxValues, " values");
    n.kind = Kind::Enum;
    for (auto& v : values) {
      std::string text = v.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::strict);
      if (text.size() > kMaxText) fail(place(where), "/enum: a value of ", text.size(), " bytes (at most ", kMaxText, ")");
      if (std::find(n.values.begin(), n.values.end(), text) == n.values.end()) n.values.push_back(std::move(text));
    }
  } else if (s.contains("type")) {
    const nlohmann::ordered_json& t = s["type"];
    if (t.is_array()) {  // one type, or one type and "null"
      std::vector<Kind> kinds;
      for (auto& e : t) kinds.push_back(kind_named(e, where));
      const auto nulls = std::count(kinds.begin(), kinds.end(), Kind::Null);
      if (kinds.empty() || kinds.size() > 2 || (kinds.size() == 2 && nulls != 1))
        fail(place(where), "/type: a list of types must be one type, or one type and \"null\"");
      n.nullable = kinds.size() == 2;
      n.kind = kinds.size() == 2 && kinds[0] == Kind::Null ? kinds[1] : kinds[0];
    } else {
      n.kind = kind_named(t, where);
    }
  }
  const bool object = n.kind == Kind::Object, array = n.kind == Kind::Array;
  if (!object && (s.contains("properties") || s.contains("required") || s.contains("additionalProperties")))
    fail(place(where), ": properties, required and additionalProperties need \"type\": \"object\"");
  if (!array && s.contains("items")) fail(place(where), ": items needs \"type\": \"array\"");
  if (object) {
    const nlohmann::ordered_json props = s.value("properties", nlohmann::ordered_json::object());
    if (!props.is_object()) fail(place(where), "/properties: must be an object of name -> schema");
    std::set<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) fail(place(where), "/required: must be an array of property names");
      for (auto& r : s["required"]) {
        if (!r.is_string() || !props.contains(r.get<std::string>()))
          fail(place(where), "/required: ", r.dump().substr(0, 64), " is not a property of this object");
        required.insert(r.get<std::string>());
      }
    }
    if (s.contains("additionalProperties") && !s["additionalProperties"].is_boolean())
      fail(place(where), "/additionalProperties: only true or false is supported");
    for (auto& [name, sub] : props.items()) {
      if (!required.count(name))
        fail(place(where), "/required: '", name.substr(0, 64), "' is missing: every property is written, so every one must be required");
      n.keys.push_back(nlohmann::ordered_json(name).dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::strict));
      if (n.keys.back().size() > kMaxText) fail(place(where), "/properties: a name of ", name.size(), " bytes (at most ", kMaxText, ")");
    }
    if (n.keys.size() > 255) fail(place(where), "/properties: more than 255 properties");
    std::vector<uint8_t> children;
    for (auto& [name, sub] : props.items()) children.push_back(compile(sub, where + "/properties/" + name, nesting + 1));
    n.children = std::move(children);
  }
  if (array) n.children.push_back(s.contains("items") ? compile(s["items"], where + "/items", nesting + 1) : uint8_t(0));
  if (n.kind == Kind::Any && !n.nullable) return 0;  // {} (or annotations only): any value
  if (nodes_.size() >= kMaxNodes) fail(place(where), ": the schema has more than ", kMaxNodes, " sub-schemas");
  nodes_.push_back(std::move(n));
  return uint8_t(nodes_.size() - 1);
}

}  // namespace skein
