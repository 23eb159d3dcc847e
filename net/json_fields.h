// Typed reads of request fields, shared by the TCP and HTTP request parsers: each throws skein::Error
// naming the field ("temperature: must be a number").
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/error.h"
#include "common/json_text.h"
#include "coordinator/json_schema.h"
#include "coordinator/sampler.h"

namespace skein::json_fields {

// A request's text, which must be one JSON object: "<malformed>at byte N: reason" when it is not
// JSON, `not_object` when it is other JSON.
inline nlohmann::json request_object(const std::string& text, const char* malformed, const char* not_object) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(malformed, json_parse_failure(e));
  }
  if (!j.is_object()) fail(not_object);
  return j;
}
// An HTTP request's body.
inline nlohmann::json body_object(const std::string& body) { return request_object(body, "malformed JSON body ", "the body must be a JSON object"); }

inline float number(const nlohmann::json& j, const char* key) {
  if (!j.is_number()) fail(key, ": must be a number");
  double v = j.get<double>();
  if (!std::isfinite(v)) fail(key, ": must be finite");
  if (std::abs(v) > double(std::numeric_limits<float>::max())) fail(key, ": ", v, " is beyond a 32-bit float's range");  // else it reads as inf
  return float(v);
}

inline int64_t integer(const nlohmann::json& j, const char* key) {
  if (!j.is_number_integer()) fail(key, ": must be an integer");
  // nlohmann keeps 2^63..2^64-1 unsigned; read as int64_t they would turn negative and be misreported.
  if (j.is_number_unsigned() && j.get<uint64_t>() > uint64_t(INT64_MAX)) fail(key, ": ", j.get<uint64_t>(), " is too large");
  return j.get<int64_t>();
}

// An integer in [lo, hi]: "KEY: must be between LO and HI, got V" otherwise.
inline int64_t integer_in(const nlohmann::json& j, const char* key, int64_t lo, int64_t hi) {
  const int64_t v = integer(j, key);
  if (v < lo || v > hi) fail(key, ": must be between ", lo, " and ", hi, ", got ", v);
  return v;
}

inline std::vector<int32_t> token_ids(const nlohmann::json& j, const char* key, int vocab) {
  if (!j.is_array()) fail(key, ": must be an array of token ids");
  std::vector<int32_t> out;
  for (auto& e : j) {
    int64_t v = integer(e, key);
    if (v < 0 || v >= vocab) fail(key, ": token id ", v, " is outside the vocabulary (", vocab, ")");
    out.push_back(int32_t(v));
  }
  return out;
}

// OpenAI's logit_bias: {"TOKEN_ID": bias, ...}, ids as decimal strings inside the vocabulary, biases in
// [-limit, limit].
inline std::map<int32_t, float> logit_bias(const nlohmann::json& j, const char* key, int vocab, float limit) {
  if (!j.is_object()) fail(key, ": must be an object of token id -> bias");
  std::map<int32_t, float> out;
  for (auto& [id, bias] : j.items()) {
    int64_t t = -1;
    if (!id.empty() && id.size() <= 10 && id.find_first_not_of("0123456789") == std::string::npos) t = std::stoll(id);
    if (t < 0) fail(key, ": '", id, "' is not a token id");
    if (t >= vocab) fail(key, ": token id ", t, " is outside the vocabulary (", vocab, ")");
    const float b = number(bias, key);
    if (b < -limit || b > limit) fail(key, ": the bias of token ", t, " must be between -", limit, " and ", limit, ", got ", b);
    out[int32_t(t)] = b;
  }
  return out;
}

// OpenAI's response_format, `j` the request's field and `request` the whole request's text: {"type":
// "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {"name", "schema", "strict",
// "description"}}. A schema is compiled here, so one it cannot serve is refused with the request; its
// text keeps the order of its keys (the order properties are written in), read from `request` again.
inline void response_format(const nlohmann::json& j, const std::string& request, const char* key, SamplingParams& p) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    fail(key, ": must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or {\"type\": \"json_schema\", \"json_schema\": {...}}");
  const std::string type = j["type"];
  for (auto& [k, v] : j.items())
    if (k != "type" && !(type == "json_schema" && k == "json_schema")) fail(key, ": unknown field '", k, "'");
  p.json_schema.clear();
  if (type == "text") return void(p.format = ResponseFormat::Text);
  if (type == "json_object") return void(p.format = ResponseFormat::JsonObject);
  if (type != "json_schema") fail(key, ": type must be \"text\", \"json_object\" or \"json_schema\", got \"", type.substr(0, 64), "\"");
  const auto& js = j.contains("json_schema") ? j["json_schema"] : nlohmann::json();
  if (!js.is_object() || !js.contains("schema")) fail(key, ": json_schema must be {\"name\": ..., \"schema\": {...}}");
  for (auto& [k, v] : js.items()) {
    if (k != "name" && k != "schema" && k != "strict" && k != "description") fail(key, ": json_schema: unknown field '", k, "'");
    if ((k == "name" || k == "description") && !v.is_string()) fail(key, ": json_schema: ", k, " must be a string");
    if (k == "strict" && !v.is_boolean()) fail(key, ": json_schema: strict must be true or false");
  }
  nlohmann::ordered_json schema;
  try {  // both readings keep a repeated key's last value, so this finds what `j` holds, its keys in order
    schema = nlohmann::ordered_json::parse(request).at(key).at("json_schema").at("schema");
  } catch (const nlohmann::ordered_json::exception&) {
    fail(key, ": json_schema: the request's text cannot be read again in order");  // it was read once: never so
  }
  p.format = ResponseFormat::JsonSchema;
  p.json_schema = ordered_json_text(schema);
  try {
    compiled_schema(p.json_schema);  // here, not on the scheduler's loop, which finds it compiled
  } catch (const Error& e) {
    fail(key, ": json_schema: ", e.what());
  }
}

}  // namespace skein::json_fields
