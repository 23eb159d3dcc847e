// The server's log ([logging] level and file): one line per event, "<UTC time> skein: <message>", with
// "warning: " or "error: " before warnings and errors. Written whole under a lock: the I/O threads and
// the service thread log at once. Fatal command errors are not logged here; they end the process with
// one line on stderr (tools/skein_main.cpp).
#pragma once
#include <sstream>
#include <string>

namespace skein::logging {

enum class Level { Error, Warn, Info, Debug };

// "error" | "warn" | "info" | "debug"; `file` empty: stderr, else appended to. Throws skein::Error naming
// the file when it cannot be opened.
void configure(const std::string& level, const std::string& file);
bool enabled(Level level);
void write(Level level, const std::string& message);

template <typename... Parts>
void log(Level level, const Parts&... parts) {
  if (!enabled(level)) return;
  std::ostringstream os;
  (os << ... << parts);
  write(level, os.str());
}
template <typename... Parts>
void error(const Parts&... parts) { log(Level::Error, parts...); }
template <typename... Parts>
void warn(const Parts&... parts) { log(Level::Warn, parts...); }
template <typename... Parts>
void info(const Parts&... parts) { log(Level::Info, parts...); }
template <typename... Parts>
void debug(const Parts&... parts) { log(Level::Debug, parts...); }

}  // namespace skein::logging
