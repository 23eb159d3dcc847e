#include "coordinator/json_schema.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>

#include "common/error.h"
#include "common/json_text.h"
#include "coordinator/value_regexes.h"

namespace skein {

namespace {
std::atomic<uint32_t> next_schema_id{1};

const std::set<std::string> kAnnotations = {"title", "description", "default", "examples", "$schema", "$comment", "$id", "readOnly", "writeOnly", "deprecated"};

std::string place(const std::string& where) { return where.empty() ? "schema" : "schema" + where; }
std::string quoted(const nlohmann::ordered_json& v) { return v.dump().substr(0, 80); }

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
  places_.emplace_back();
  document_ = &schema;
  root_ = compile(schema, "", 0);
  document_ = nullptr;
  refuse_union_cycles();
  // JSON mode promises an object: the root is one, or a union of them (a choice of tool calls).
  std::function<bool(uint8_t)> objects = [&](uint8_t id) {
    const Node& n = nodes_[id];
    if (n.kind == Kind::Union) return std::all_of(n.children.begin(), n.children.end(), objects);
    return n.kind == Kind::Object && !n.nullable;
  };
  if (!objects(root_)) fail("schema: the root must be {\"type\": \"object\", ...} or a union of such schemas");
  check_discriminators();
  settle_depths();
  if (nodes_[root_].min_depth > kMaxTextDepth)
    fail("schema: no JSON text nested at most ", kMaxTextDepth, " levels deep matches it (does a required property lead back to its own object?)");
  targets_.clear();
  places_.clear();
  discriminated_.clear();
}

uint8_t JsonSchema::add(Node n, const std::string& where, int into) {
  if (into >= 0) {
    nodes_[size_t(into)] = std::move(n);
    return uint8_t(into);
  }
  if (nodes_.size() >= kMaxNodes) fail(place(where), ": the schema has more than ", kMaxNodes, " sub-schemas");
  nodes_.push_back(std::move(n));
  places_.push_back(where);
  return uint8_t(nodes_.size() - 1);
}

// A $ref's node: its target compiled once (so a schema may refer to itself), following $refs to $refs
// (and to allOfs of one $ref).
uint8_t JsonSchema::reference(const nlohmann::ordered_json& ref, const std::string& where, int nesting) {
  std::string from = where, pointer, at;
  const nlohmann::ordered_json* target = nullptr;
  std::set<std::string> seen;
  for (nlohmann::ordered_json r = ref;;) {
    if (!r.is_string() || r.get<std::string>().empty() || r.get<std::string>()[0] != '#')
      fail(place(from), "/$ref: ", quoted(r), " is not a reference into this schema (\"#\" or \"#/$defs/Name\")");
    pointer = r.get<std::string>().substr(1);
    try {
      target = &document_->at(nlohmann::ordered_json::json_pointer(pointer));
    } catch (const nlohmann::ordered_json::exception&) {
      fail(place(from), "/$ref: ", quoted(r), " is not in the schema");
    }
    if (!seen.insert(pointer).second) fail(place(from), "/$ref: ", quoted(r), " leads only to $refs, in a circle");
    at = pointer;
    for (int depth = 0; target->is_object() && target->contains("allOf"); ++depth, at += "/allOf/0") {
      if (depth == kMaxNesting) fail(place(at), ": allOf nested more than ", kMaxNesting, " levels deep");
      target = alias(*target, at);
    }
    if (!target->is_object() || !target->contains("$ref")) break;
    r = (*target)["$ref"];
    from = at;
  }
  if (auto it = targets_.find(pointer); it != targets_.end()) return it->second;
  const uint8_t id = add(Node{}, pointer, -1);  // reserved before compiling, so the target may refer to itself
  targets_[pointer] = id;
  compile(*target, at, nesting + 1, id);
  return id;
}

// The one schema of an allOf (how pydantic 1 writes a field that refers to a model and has a description).
const nlohmann::ordered_json* JsonSchema::alias(const nlohmann::ordered_json& s, const std::string& where) {
  for (auto& [k, v] : s.items())
    if (k != "allOf" && k != "$defs" && k != "definitions" && !kAnnotations.count(k))
      fail(place(where), ": give allOf without '", k.substr(0, 64), "' (put that in the schemas it names)");
  const nlohmann::ordered_json& all = s["allOf"];
  if (!all.is_array() || all.size() != 1)
    fail(place(where), "/allOf: must be an array of one schema (an intersection of several cannot be followed byte by byte)");
  return &all[0];
}

uint8_t JsonSchema::compile(const nlohmann::ordered_json& s, const std::string& where, int nesting, int into) {
  if (!s.is_object()) fail(place(where), ": must be a JSON object (a schema)");
  if (nesting > kMaxNesting) fail(place(where), ": nested more than ", kMaxNesting, " levels deep");
  static const std::set<std::string> known = {"type", "properties", "required", "additionalProperties", "items", "prefixItems", "enum", "const", "anyOf", "oneOf", "discriminator", "$ref", "$defs", "definitions",
                                              "allOf", "minLength", "maxLength", "minItems", "maxItems", "pattern", "format",
                                              "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minProperties", "maxProperties",
                                              "propertyNames", "patternProperties", "uniqueItems"};
  std::vector<std::string> keywords;  // the known ones, except definitions and a oneOf's discriminator
  for (auto& [k, v] : s.items()) {
    if (!kAnnotations.count(k) && !known.count(k)) fail(place(where), ": '", k.substr(0, 64), "' is not supported");
    if (k == "$defs" || k == "definitions") {
      if (!v.is_object()) fail(place(where), "/", k, ": must be an object of name -> schema");
    } else if (known.count(k) && k != "discriminator") {
      keywords.push_back(k);
    }
  }
  for (const char* alone : {"$ref", "anyOf", "oneOf", "allOf"})
    if (s.contains(alone) && keywords.size() > 1)
      fail(place(where), ": give ", alone, " without '", keywords[keywords[0] == alone ? 1 : 0], "' (put that in the schemas it names)");
  if (s.contains("discriminator") && !s.contains("oneOf")) fail(place(where), ": discriminator needs oneOf");
  if (s.contains("$ref")) return reference(s["$ref"], where, nesting);  // never `into`: reference() skips $refs to $refs
  if (s.contains("allOf")) return compile(*alias(s, where), where + "/allOf/0", nesting + 1, into);  // never a $ref with `into`: reference() skips it

  Node n;
  if (s.contains("anyOf") || s.contains("oneOf")) {
    // oneOf (how pydantic writes a discriminated union) is served as anyOf once its discriminator is
    // known to tell its schemas apart, so that no text can match two of them.
    const bool one = s.contains("oneOf");
    const std::string keyword = one ? "oneOf" : "anyOf";
    const nlohmann::ordered_json& branches = s[keyword];
    if (!branches.is_array() || branches.empty() || branches.size() > kMaxBranches)
      fail(place(where), "/", keyword, ": must be an array of 1 to ", kMaxBranches, " schemas");
    std::string property;
    if (one) {
      const nlohmann::ordered_json d = s.value("discriminator", nlohmann::ordered_json());
      if (!d.is_object() || !d.contains("propertyName") || !d["propertyName"].is_string())
        fail(place(where), ": oneOf needs a discriminator, {\"propertyName\": NAME}, the property whose const tells its schemas apart (anyOf allows any of them)");
      property = d["propertyName"].get<std::string>();
    }
    n.kind = Kind::Union;
    for (size_t i = 0; i < branches.size(); ++i) {
      const uint8_t b = compile(branches[i], where + "/" + keyword + "/" + std::to_string(i), nesting + 1);
      if (b == 0 && !one) return into < 0 ? 0 : add(Node{}, where, into);  // {} among them: any value
      // A finished union among the branches adds its own (a $ref target still compiling cannot be seen
      // into yet: the recognizer opens such nested unions as it meets them).
      const std::vector<uint8_t> more = nodes_[b].kind == Kind::Union && !one ? nodes_[b].children : std::vector<uint8_t>{b};
      for (uint8_t m : more)
        if (std::find(n.children.begin(), n.children.end(), m) == n.children.end()) n.children.push_back(m);
    }
    if (one) {
      if (n.children.size() != branches.size()) fail(place(where), "/oneOf: names one schema twice, so no text matches exactly one");
      const uint8_t id = add(std::move(n), where, into);
      discriminated_.push_back({id, property, where});  // checked once every $ref target is compiled
      return id;
    }
    // X or null (how pydantic writes Optional[X]) is X made nullable: one reading instead of two.
    if (n.children.size() == 2) {
      for (int i = 0; i < 2; ++i) {
        const Node& x = nodes_[n.children[size_t(i)]];
        const Node& other = nodes_[n.children[size_t(1 - i)]];
        if (other.kind == Kind::Null && x.kind != Kind::Any && x.kind != Kind::Union) {
          Node nullable = x;
          nullable.nullable = true;
          return add(std::move(nullable), where, into);
        }
      }
    }
    return add(std::move(n), where, into);
  }
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
    if (t.is_array()) {  // several types: a union, unless it is one type and "null"
      std::vector<Kind> kinds;
      for (auto& e : t)
        if (const Kind k = kind_named(e, where); std::find(kinds.begin(), kinds.end(), k) == kinds.end()) kinds.push_back(k);
      if (kinds.empty()) fail(place(where), "/type: an empty list of types");
      n.nullable = kinds.size() > 1 && std::erase(kinds, Kind::Null) == 1;
      n.kind = kinds[0];
      if (kinds.size() > 1) {
        for (const char* k : {"properties", "required", "additionalProperties", "minProperties", "maxProperties", "propertyNames", "patternProperties", "items", "prefixItems", "uniqueItems", "minLength", "maxLength", "minItems",
                              "maxItems", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
          if (s.contains(k)) fail(place(where), ": '", k, "' needs one type (anyOf gives each type its own schema)");
        for (Kind k : kinds)
          if (k == Kind::Object || k == Kind::Array)
            fail(place(where), "/type: object and array may be listed only beside \"null\" (anyOf gives each its own schema)");
        Node u;
        u.kind = Kind::Union;
        if (n.nullable) kinds.push_back(Kind::Null);
        for (Kind k : kinds) {
          Node one;
          one.kind = k;
          u.children.push_back(add(std::move(one), where, -1));
        }
        return add(std::move(u), where, into);
      }
    } else {
      n.kind = kind_named(t, where);
    }
  }
  const bool object = n.kind == Kind::Object, array = n.kind == Kind::Array;
  for (const char* k : {"properties", "required", "additionalProperties", "minProperties", "maxProperties", "propertyNames", "patternProperties"})
    if (!object && s.contains(k)) fail(place(where), ": ", k, " needs \"type\": \"object\"");
  for (const char* k : {"items", "prefixItems", "uniqueItems"})
    if (!array && s.contains(k)) fail(place(where), ": ", k, " needs \"type\": \"array\"");
  const bool string = n.kind == Kind::String;
  for (auto [low, high, kind_ok, most, needs] : {std::tuple{"minLength", "maxLength", string, kMaxLength, "\"type\": \"string\""},
                                                 std::tuple{"minItems", "maxItems", array, kMaxItems, "\"type\": \"array\""}}) {
    for (const char* k : {low, high}) {
      if (!s.contains(k)) continue;
      if (!kind_ok) fail(place(where), ": ", k, " needs ", needs);
      const nlohmann::ordered_json& v = s[k];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > int64_t(most))
        fail(place(where), "/", k, ": must be an integer from 0 to ", most, ", got ", quoted(v));
      (k == low ? n.min_size : n.max_size) = v.get<uint32_t>();
    }
    if (kind_ok && n.min_size > n.max_size) fail(place(where), ": ", low, " ", n.min_size, " is above ", high, " ", n.max_size);
  }
  for (const char* k : {"pattern", "format"})
    if (s.contains(k) && !string) fail(place(where), ": ", k, " needs \"type\": \"string\"");
  if (s.contains("pattern") && s.contains("format")) fail(place(where), ": give pattern or format, not both");
  if (string && (s.contains("pattern") || s.contains("format"))) {
    const std::string keyword = s.contains("pattern") ? "pattern" : "format";
    const nlohmann::ordered_json& v = s[keyword];
    if (!v.is_string()) fail(place(where), "/", keyword, ": must be a string, got ", quoted(v));
    uint32_t max = n.max_size;
    std::string regex = v.get<std::string>();
    try {
      if (keyword == "format") regex = format_regex(regex, max);
    } catch (const Error& e) {
      fail(place(where), "/format: ", e.what());
    }
    if (!regex.empty()) n.pattern = add_pattern(regex, n.min_size, max, where + "/" + keyword);  // "": any string, within its lengths
  }
  if (s.contains("multipleOf") && n.kind != Kind::Integer && n.kind != Kind::Number) fail(place(where), ": multipleOf needs \"type\": \"integer\" or \"number\"");
  if (s.contains("minimum") || s.contains("maximum") || s.contains("exclusiveMinimum") || s.contains("exclusiveMaximum") || s.contains("multipleOf")) {
    if (n.kind != Kind::Integer && n.kind != Kind::Number) fail(place(where), ": minimum, maximum and their exclusive forms need \"type\": \"integer\" or \"number\"");
    n.pattern = bounds(s, n.kind, where);
  }
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
    nlohmann::ordered_json more = s.value("additionalProperties", nlohmann::ordered_json(false));
    if (!more.is_boolean() && !more.is_object()) fail(place(where), "/additionalProperties: must be true, false or a schema");
    // A dict of names that match one pattern (pydantic's Dict[constr(pattern=...), V]): its values are
    // the pattern's schema; only such names are written.
    std::string key_pattern;
    if (s.contains("patternProperties")) {
      const nlohmann::ordered_json& pp = s["patternProperties"];
      if (!pp.is_object() || pp.size() != 1) fail(place(where), "/patternProperties: must be an object of one pattern -> schema (several cannot be followed)");
      if (!props.empty() || s.contains("propertyNames")) fail(place(where), ": give patternProperties without properties and propertyNames");
      key_pattern = pp.begin().key();
      more = pp.begin().value();
      if (!more.is_boolean() && !more.is_object()) fail(place(where), "/patternProperties/", key_pattern.substr(0, 64), ": must be true or a schema");
    }
    // A dict (additionalProperties without properties): any keys, each value of that schema. Beside
    // declared properties, extra ones are allowed but never written.
    n.map = props.empty() && more != false;
    if (s.contains("propertyNames") && !n.map) fail(place(where), ": propertyNames needs additionalProperties and no properties (a dict)");
    for (const char* k : {"minProperties", "maxProperties"}) {
      if (!s.contains(k)) continue;
      if (!n.map) fail(place(where), ": ", k, " needs additionalProperties and no properties (a dict)");
      const nlohmann::ordered_json& v = s[k];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > int64_t(kMaxItems))
        fail(place(where), "/", k, ": must be an integer from 0 to ", kMaxItems, ", got ", quoted(v));
      (k == std::string_view("minProperties") ? n.min_size : n.max_size) = v.get<uint32_t>();
    }
    if (n.min_size > n.max_size) fail(place(where), ": minProperties ", n.min_size, " is above maxProperties ", n.max_size);
    for (auto& [name, sub] : props.items()) {
      n.keys.push_back(nlohmann::ordered_json(name).dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::strict));
      if (n.keys.back().size() > kMaxText) fail(place(where), "/properties: a name of ", name.size(), " bytes (at most ", kMaxText, ")");
      n.required.push_back(required.count(name) > 0);
    }
    if (n.keys.size() > 255) fail(place(where), "/properties: more than 255 properties");
    std::vector<uint8_t> children;
    for (auto& [name, sub] : props.items()) children.push_back(compile(sub, where + "/properties/" + name, nesting + 1));
    // Beside properties it is only checked, so that a broken schema is refused wherever it is broken.
    const std::string value_place = key_pattern.empty() ? where + "/additionalProperties" : where + "/patternProperties/" + key_pattern;
    const uint8_t extra = more.is_object() ? compile(more, value_place, nesting + 1) : uint8_t(0);
    if (n.map) children.push_back(extra);
    n.children = std::move(children);
    if (!key_pattern.empty()) {
      Node key;
      key.kind = Kind::String;
      key.pattern = add_pattern(key_pattern, 0, kNoLimit, where + "/patternProperties");
      n.key = add(std::move(key), where + "/patternProperties", -1);
    } else if (s.contains("propertyNames")) {
      n.key = key_node(s["propertyNames"], where + "/propertyNames", nesting + 1);
    }
  }
  if (array) {
    // items (true or absent: any value; false: none) after prefixItems, the schemas of the first items
    // one by one (how pydantic writes a tuple).
    const nlohmann::ordered_json items = s.value("items", nlohmann::ordered_json(true));
    const nlohmann::ordered_json prefix = s.value("prefixItems", nlohmann::ordered_json::array());
    if (!prefix.is_array() || prefix.size() > kMaxItems) fail(place(where), "/prefixItems: must be an array of at most ", kMaxItems, " schemas");
    n.children.push_back(items.is_boolean() ? uint8_t(0) : compile(items, where + "/items", nesting + 1));
    for (size_t i = 0; i < prefix.size(); ++i) n.children.push_back(compile(prefix[i], where + "/prefixItems/" + std::to_string(i), nesting + 1));
    if (items == false) n.max_size = std::min(n.max_size, uint32_t(prefix.size()));
    if (n.min_size > n.max_size) fail(place(where), ": minItems ", n.min_size, " is above the ", n.max_size, " items that items: false allows");
    // A set of an enum's values (pydantic's Set[SomeEnum], Set[Literal[...]]): the recognizer keeps
    // which values came. Items of any other schema could only be kept apart by remembering them all.
    const nlohmann::ordered_json unique = s.value("uniqueItems", nlohmann::ordered_json(false));
    if (!unique.is_boolean()) fail(place(where), "/uniqueItems: must be true or false");
    if (unique == true) {
      const Node& item = nodes_[n.children[0]];
      if (!prefix.empty() || item.kind != Kind::Enum || item.nullable)
        fail(place(where), "/uniqueItems: needs items that are an enum or const (a set of any other items cannot be followed byte by byte)");
      n.unique = true;
      n.max_size = std::min(n.max_size, uint32_t(item.values.size()));
      if (n.min_size > n.max_size) fail(place(where), ": minItems ", n.min_size, " is above the ", n.max_size, " distinct values its items allow");
    }
  }
  if (n.kind == Kind::Any && !n.nullable && into < 0) return 0;  // {} (or annotations only): any value
  return add(std::move(n), where, into);
}

// An integer's or a number's bounds and multipleOf, as the pattern of its text. An integer's bounds
// become the least and greatest integers they allow; a number's are the decimals written, each inclusive
// or not. multipleOf is read as the decimal written, m / 10^k: a whole one makes the number an integer
// (so written), whose digits the pattern divides; a fraction (0.01, 2.5) keeps the number's value,
// scaled by 10^k, a multiple of m.
uint8_t JsonSchema::bounds(const nlohmann::ordered_json& s, Kind kind, const std::string& where) {
  uint32_t multiple_of = 0, fraction_digits = 0;
  if (s.contains("multipleOf")) {
    const nlohmann::ordered_json& v = s["multipleOf"];
    std::optional<NumberBound> d;
    if (v.is_number() && v.get<double>() > 0) try {
        d = NumberBound::parse(v.dump(), false);
      } catch (const Error&) {
      }
    uint64_t m = d ? d->whole : 0;  // then its fraction's digits (parse leaves no trailing zeros)
    for (size_t i = 0; d && i < d->fraction.size() && m <= INT32_MAX; ++i) m = m * 10 + uint64_t(d->fraction[i] - '0');
    if (!d || m == 0 || m > INT32_MAX || d->fraction.size() > kMaxMultipleFraction)
      fail(place(where), "/multipleOf: must be above 0, with at most ", kMaxMultipleFraction, " digits after the point and at most ", INT32_MAX,
           " as a whole number without it (5, 0.01 and 2.5 are), got ", quoted(v));
    const uint32_t k = uint32_t(d->fraction.size());
    uint64_t scale = 1;
    for (uint32_t i = 0; i < k; ++i) scale *= 10;
    if (k == 0 || kind == Kind::Integer) {  // an integer that is a multiple of m / 10^k is one of m / gcd(m, 10^k)
      multiple_of = uint32_t(m / std::gcd(m, scale));
      kind = Kind::Integer;
    } else {
      multiple_of = uint32_t(m);
      fraction_digits = k;
    }
  }
  std::optional<NumberBound> lo, hi;
  for (const char* k : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
    if (!s.contains(k)) continue;
    const nlohmann::ordered_json& v = s[k];
    if (!v.is_number() || std::isnan(v.get<double>()) || std::fabs(v.get<double>()) > kMaxBound)
      fail(place(where), "/", k, ": must be a number from -2^53 to 2^53, got ", quoted(v));
    const double x = v.get<double>();
    const std::string_view key = k;
    const bool lower = key == "minimum" || key == "exclusiveMinimum", exclusive = key.starts_with("exclusive");
    NumberBound b;
    if (kind == Kind::Integer) {  // as inclusive bounds: > 3 is >= 4, and > 9.5 is >= 10
      int64_t value = int64_t(lower ? std::ceil(x) : std::floor(x));
      if (exclusive && x == std::floor(x)) value += lower ? 1 : -1;
      b = NumberBound::of(value, false);
    } else {  // the decimal the schema wrote (its shortest round trip)
      try {
        b = NumberBound::parse(v.dump(), exclusive);
      } catch (const Error& e) {
        fail(place(where), "/", k, ": ", e.what());
      }
    }
    std::optional<NumberBound>& bound = lower ? lo : hi;
    const int order = bound ? compare(b, *bound) : 0;
    if (!bound || (lower ? order > 0 : order < 0) || (order == 0 && b.exclusive)) bound = b;
  }
  if (lo && hi && (compare(*lo, *hi) > 0 || (compare(*lo, *hi) == 0 && (lo->exclusive || hi->exclusive))))
    fail(place(where), ": no ", kind == Kind::Integer ? "integer" : "number", " is within minimum/exclusiveMinimum ", lo->text(), " and maximum/exclusiveMaximum ", hi->text());
  auto integer = [](const NumberBound& b) { return b.negative ? -int64_t(b.whole) : int64_t(b.whole); };
  if (lo && hi && multiple_of && kind == Kind::Integer) {  // the least multiple from lo (lo and hi are inclusive integers here)
    const int64_t m = multiple_of, l = integer(*lo), r = ((l % m) + m) % m;
    if (r != 0 && l > integer(*hi) - (m - r))
      fail(place(where), ": no multiple of ", m, " is within minimum/exclusiveMinimum ", l, " and maximum/exclusiveMaximum ", integer(*hi));
  }
  if (kind == Kind::Integer)
    return add_pattern(integer_regex(lo ? std::optional<int64_t>(integer(*lo)) : std::nullopt, hi ? std::optional<int64_t>(integer(*hi)) : std::nullopt), 0,
                       1 + kMaxIntegerDigits, where, multiple_of);  // a sign and the digits
  return add_pattern(number_regex(lo, hi), 0, 2 + 2 * kMaxIntegerDigits, where, multiple_of, fraction_digits);  // a sign, digits, a point and as many more
}

// A dict's names: a string schema (its pattern, format and lengths), or an enum of strings (pydantic's
// Dict[Literal[...], V] and Dict[SomeEnum, V]), which becomes the pattern of exactly those strings.
uint8_t JsonSchema::key_node(const nlohmann::ordered_json& s, const std::string& where, int nesting) {
  const uint8_t id = compile(s, where, nesting);
  const Node& n = nodes_[id];
  const char* shape = ": must be a schema of strings (type string with pattern, format or lengths, or an enum of strings)";
  if (n.kind == Kind::String && !n.nullable) return id;
  if (n.kind != Kind::Enum || n.nullable) fail(place(where), shape);
  std::string regex = "^(";
  for (size_t i = 0; i < n.values.size(); ++i) {
    const nlohmann::ordered_json v = nlohmann::ordered_json::parse(n.values[i]);
    if (!v.is_string()) fail(place(where), shape);
    if (i) regex += '|';
    for (char c : v.get<std::string>()) {
      if (std::string_view("\\^$.|?*+()[]{}/").find(c) != std::string_view::npos) regex += '\\';
      regex += c;
    }
  }
  regex += ")$";
  Node key;
  key.kind = Kind::String;
  key.pattern = add_pattern(regex, 0, kNoLimit, where);
  return add(std::move(key), where, -1);
}

// A compiled pattern's number (1 + its index), its errors placed at `where`.
uint8_t JsonSchema::add_pattern(const std::string& regex, uint32_t min_chars, uint32_t max_chars, const std::string& where, uint32_t multiple_of,
                                uint32_t fraction_digits) {
  if (patterns_.size() >= 255) fail(place(where), ": more than 255 patterns, formats and bounds in one schema");
  try {
    patterns_.emplace_back(regex, min_chars, max_chars, &pattern_work_left_, multiple_of, fraction_digits);
  } catch (const Error& e) {
    fail(place(where), ": ", e.what());
  }
  return uint8_t(patterns_.size());
}

size_t JsonSchema::pattern_bytes() const {
  size_t bytes = 0;
  for (const StringPattern& p : patterns_) bytes += p.bytes();
  return bytes;
}

std::shared_ptr<const JsonSchema> compiled_schema(const std::string& text) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const JsonSchema>> cache;  // the requests using one keep it alive
  static size_t cached_bytes = 0;
  {
    std::lock_guard lock(mutex);
    if (auto it = cache.find(text); it != cache.end()) return it->second;
  }
  auto schema = std::make_shared<const JsonSchema>(nlohmann::ordered_json::parse(text));  // compiled unlocked
  std::lock_guard lock(mutex);
  if (cache.size() >= kCachedSchemas || cached_bytes + schema->pattern_bytes() > kCachedBytes) cache.clear(), cached_bytes = 0;
  if (cache.emplace(text, schema).second) cached_bytes += schema->pattern_bytes();
  return schema;
}

// The least depths, from "unbounded" down to a fixed point (a $ref may make the node graph a cycle).
void JsonSchema::settle_depths() {
  // An array of minItems >= 1 is as deep as an object whose one property is its items.
  auto as_object = [](const Node& n) { return n.kind == Kind::Object || (n.kind == Kind::Array && n.min_size > 0); };
  for (Node& n : nodes_) n.min_depth = n.nullable ? 0 : as_object(n) || n.kind == Kind::Union ? kUnbounded : n.kind == Kind::Array ? 1 : 0;
  for (bool changed = true; changed;) {
    changed = false;
    for (Node& n : nodes_) {
      if (n.nullable || (!as_object(n) && n.kind != Kind::Union)) continue;
      int depth = as_object(n) ? 1 : kUnbounded;
      for (size_t i = 0; i < n.children.size(); ++i) {
        if (n.kind == Kind::Object && (n.map ? n.min_size == 0 : !n.required[i])) continue;  // may be left out
        if (n.kind == Kind::Array && (i == 0 ? n.min_size < n.children.size() : i > n.min_size)) continue;  // not among its first minItems
        const int d = nodes_[n.children[i]].min_depth;
        depth = as_object(n) ? (d == kUnbounded ? kUnbounded : std::max(depth, std::min(1 + d, int(kUnbounded)))) : std::min(depth, d);
      }
      if (depth < n.min_depth) n.min_depth = uint8_t(depth), changed = true;
    }
  }
}

// Each schema of a oneOf is an object whose discriminator property is a const (or enum) no other
// schema of it shares: then no text matches two of them, and oneOf allows what anyOf does.
void JsonSchema::check_discriminators() const {
  for (const auto& [id, property, where] : discriminated_) {
    const std::string key = ordered_json_text(nlohmann::ordered_json(property));
    std::set<std::string> seen;
    for (size_t i = 0; i < nodes_[id].children.size(); ++i) {
      const Node& n = nodes_[nodes_[id].children[i]];
      const auto k = std::find(n.keys.begin(), n.keys.end(), key);
      if (n.kind != Kind::Object || n.nullable || k == n.keys.end() || !n.required[size_t(k - n.keys.begin())] ||
          nodes_[n.children[size_t(k - n.keys.begin())]].kind != Kind::Enum)
        fail(place(where), "/oneOf/", i, ": not an object with the discriminator ", key.substr(0, 64), " as a required const or enum property");
      for (const std::string& v : nodes_[n.children[size_t(k - n.keys.begin())]].values)
        if (!seen.insert(v).second)
          fail(place(where), "/oneOf/", i, ": its discriminator ", key.substr(0, 64), " may be ", v.substr(0, 64), ", as another schema's may, so the discriminator does not tell them apart");
    }
  }
}

// A union whose branch is (through $refs) itself, with no value in between, would be opened forever.
void JsonSchema::refuse_union_cycles() const {
  std::vector<uint8_t> state(nodes_.size(), 0);  // 0 unvisited, 1 on the path, 2 done
  std::function<void(uint8_t)> visit = [&](uint8_t u) {
    state[u] = 1;
    for (uint8_t b : nodes_[u].children) {
      if (nodes_[b].kind != Kind::Union || state[b] == 2) continue;
      if (state[b] == 1) fail(place(places_[b]), "/anyOf: includes itself (through $ref) with no value in between");
      visit(b);
    }
    state[u] = 2;
  };
  for (size_t u = 0; u < nodes_.size(); ++u)
    if (nodes_[u].kind == Kind::Union && state[u] == 0) visit(uint8_t(u));
}

}  // namespace skein
