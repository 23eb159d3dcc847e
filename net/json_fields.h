// Typed reads of request fields, shared by the TCP and HTTP request parsers: each throws skein::Error
// naming the field ("temperature: must be a number").
#pragma once
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/error.h"

namespace skein::json_fields {

inline float number(const nlohmann::json& j, const char* key) {
  if (!j.is_number()) fail(key, ": must be a number");
  double v = j.get<double>();
  if (!std::isfinite(v)) fail(key, ": must be finite");
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

}  // namespace skein::json_fields
