// What the operating system says about this process: memory, CPU time, open files. /metrics exports it
// under Prometheus's standard process_* names, and stages report theirs to rank 0, so a slow leak (state
// buffers, sockets) shows on a dashboard long before the machine runs out.
#pragma once
#include <cstdint>

namespace skein {

struct ProcessStats {
  uint64_t resident_bytes = 0;  // 0 where /proc is not there to ask
  uint64_t virtual_bytes = 0;
  double cpu_seconds = 0;  // user + system
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;  // the soft limit: where a server starts refusing clients
  double start_time_seconds = 0;  // since the Unix epoch
};

ProcessStats process_stats();
// Just the resident memory: what a stage reports every 2 s (no listing of its open files).
uint64_t resident_bytes();
// The soft limit on open files (0 where it cannot be read).
uint64_t open_files_limit();

}  // namespace skein
