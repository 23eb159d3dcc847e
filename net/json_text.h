// JSON for the wire. nlohmann's dump() throws on a string that is not UTF-8, and a server cannot let
// a client's bytes do that: a request path echoed in an error, or model output cut mid-character,
// would end the process for every client. Server replies replace such bytes with U+FFFD.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace skein {

inline std::string json_text(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

}  // namespace skein
