// SIGTERM/SIGINT as a request to drain: running work finishes or is cancelled cleanly, then the process
// exits 0 (what Slurm and supervisors expect), instead of dying mid-write.
#pragma once

namespace skein {

void install_stop_handlers();
bool stop_requested();

}  // namespace skein
