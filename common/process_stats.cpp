#include "common/process_stats.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

namespace skein {

namespace {
// Wall-clock start, taken when the library is loaded: near enough to exec for a dashboard's uptime.
const double kStartTime = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();

// statm: sizes in pages, virtual then resident.
void read_statm(ProcessStats& s) {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages_virtual = 0, pages_resident = 0;
  if (statm >> pages_virtual >> pages_resident) {
    const uint64_t page = uint64_t(sysconf(_SC_PAGESIZE));
    s.virtual_bytes = pages_virtual * page;
    s.resident_bytes = pages_resident * page;
  }
}
}  // namespace

uint64_t resident_bytes() {
  ProcessStats s;
  read_statm(s);
  return s.resident_bytes;
}

uint64_t open_files_limit() {
  rlimit files{};
  return getrlimit(RLIMIT_NOFILE, &files) == 0 ? uint64_t(files.rlim_cur) : 0;
}

ProcessStats process_stats() {
  ProcessStats s;
  s.start_time_seconds = kStartTime;
  read_statm(s);
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) == 0)
    s.cpu_seconds = double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
  s.max_fds = open_files_limit();
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end; it.increment(ec)) ++s.open_fds;
  return s;
}

}  // namespace skein
