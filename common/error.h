// One exception type for every user-facing failure: the message is one line that says what and where.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace skein {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
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
