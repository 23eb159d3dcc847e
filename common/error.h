// One exception type for every user-facing failure: the message is one line that says what and where.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace skein {

// Control characters in a message (a key, a name or a path quoted from the input) are written as escapes,
// so a message is one line whatever it quotes.
inline std::string one_line(const std::string& m) {
  std::string out;
  for (char c : m) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (u < 0x20 || u == 0x7f) {
      const char* hex = "0123456789abcdef";
      out += {'\\', 'x', hex[u >> 4], hex[u & 15]};
    } else out += c;
  }
  return out;
}

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(one_line(message)) {}
  explicit Error(const char* message) : Error(std::string(message)) {}
};

// A message from any streamable parts.
template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

// fail("file ", path, ": truncated at byte ", off).
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(concat(parts...));
}

}  // namespace skein
