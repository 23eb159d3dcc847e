#include "common/log.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>

#include "common/error.h"

namespace skein::logging {

namespace {
std::mutex mu;
Level threshold = Level::Info;
FILE* out = nullptr;  // null: stderr
}  // namespace

void configure(const std::string& level, const std::string& file) {
  Level l;
  if (level == "error") l = Level::Error;
  else if (level == "warn") l = Level::Warn;
  else if (level == "info") l = Level::Info;
  else if (level == "debug") l = Level::Debug;
  else fail("logging: level must be error, warn, info or debug, got '", level, "'");
  FILE* f = nullptr;
  if (!file.empty()) {
    f = std::fopen(file.c_str(), "a");
    if (!f) fail(file, ": cannot open the log file: ", std::strerror(errno));
    std::setvbuf(f, nullptr, _IOLBF, 0);  // every line reaches the file as it is written
  }
  std::lock_guard<std::mutex> lock(mu);
  if (out) std::fclose(out);
  out = f;
  threshold = l;
}

bool enabled(Level level) {
  std::lock_guard<std::mutex> lock(mu);
  return level <= threshold;
}

void write(Level level, const std::string& message) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const int ms = int(std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[64];
  std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                tm.tm_sec, ms);
  const char* kind = level == Level::Error ? "error: " : level == Level::Warn ? "warning: " : "";
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(out ? out : stderr, "%s skein: %s%s\n", stamp, kind, message.c_str());
}

}  // namespace skein::logging
