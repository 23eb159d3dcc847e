// JSON text for the wire and for files. nlohmann's dump() throws on a string that is not UTF-8: a
// request path echoed in an error would end the server for every client, and a data file's name in an
// eval checkpoint would end the eval at its first block. Such bytes become U+FFFD instead.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace skein {

inline std::string json_text(const nlohmann::json& j, int indent = -1) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace skein
