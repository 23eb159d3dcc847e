#include "common/atomic_file.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "common/error.h"

namespace skein {

void write_file_atomically(const std::string& path, const std::function<void(const std::string& tmp)>& write) {
  static std::atomic<uint64_t> calls{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(calls++);
  try {
    write(tmp);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail(path, ": cannot rename ", tmp, " into place");
  }
}

}  // namespace skein
