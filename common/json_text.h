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

// Why a text is not JSON, in one line of plain ASCII: "at byte 13: invalid string: surrogate U+D800..."
// (or "number overflow parsing '1e999'"). nlohmann's own message adds what it read last, which may hold
// the input's raw bytes; the reason alone says what and where.
inline std::string json_parse_failure(const nlohmann::json::exception& e) {
  std::string why = e.what();
  auto drop_through = [&](const std::string& mark) {
    const auto at = why.find(mark);
    if (at != std::string::npos) why.erase(0, at + mark.size());
    return at != std::string::npos;
  };
  drop_through("] ");                                          // "[json.exception.parse_error.101] "
  if (why.rfind("parse error", 0) == 0) drop_through(": ");    // "parse error at line 1, column 13: "
  if (drop_through("while parsing ")) drop_through(" - ");     // "syntax error while parsing object key - "
  if (auto cut = why.find("; last read"); cut != std::string::npos) why.erase(cut);
  if (why.size() > 120) why = why.substr(0, 117) + "...";
  for (char& c : why)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
  if (const auto* p = dynamic_cast<const nlohmann::json::parse_error*>(&e)) return "at byte " + std::to_string(p->byte) + ": " + why;
  return why;
}

}  // namespace skein
