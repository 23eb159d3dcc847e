#include "common/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/error.h"
#include "common/refuse_folder.h"

namespace skein {

namespace {

// The bytes reach the disk before the rename publishes them: without it, a power cut after the rename
// can leave the new name holding an empty file, and the old contents gone.
void flush_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path, ": cannot open to flush: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) fail(path, ": cannot flush to disk: ", std::strerror(err));
}

// The rename itself is durable once the folder is flushed. Some file systems cannot flush a folder
// (EINVAL); the rename is then as durable as they make it.
void flush_folder_of(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const int fd = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

void write_file_atomically(const std::string& path, const std::function<void(const std::string& tmp)>& write) {
  static std::atomic<uint64_t> calls{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(calls++);
  try {
    write(tmp);
    flush_file(tmp);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    fail(path, ": cannot rename ", tmp, " into place: ", std::strerror(err));
  }
  flush_folder_of(path);
}

void check_writable(const std::string& path) {
  refuse_folder(path);  // the probe beside it would pass, and the final rename fail
  const std::string probe = path + ".probe." + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) fail(path, ": cannot write there: ", std::strerror(errno));
  ::close(fd);
  std::remove(probe.c_str());
}

void rename_durably(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) fail(to, ": cannot rename ", from, " into place: ", std::strerror(errno));
  flush_folder_of(to);
}

}  // namespace skein
