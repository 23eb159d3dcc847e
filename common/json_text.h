// JSON text for the wire and for files. nlohmann's dump() throws on a string that is not UTF-8: a
// request path echoed in an error would end the server for every client, and a data file's name in an
// eval checkpoint would end the eval at its first block. Such bytes become U+FFFD instead.
#pragma once
#include <charconv>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

namespace skein {

inline std::string json_text(const nlohmann::json& j, int indent = -1) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}
// The same for a document whose keys keep their order (a JSON Schema's properties, a tool's parameters).
inline std::string ordered_json_text(const nlohmann::ordered_json& j) { return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace); }

// A float as the double nearest its shortest decimal form, so dump() writes "-0.16969866" instead of
// the float's exact binary value to 17 digits ("-0.16969865560531616"): the same float read back, in
// about half the bytes (log-probabilities are most of a scored event).
inline double json_float(float f) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf - 1, f);
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

}  // namespace skein
