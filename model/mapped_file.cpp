#include "model/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "common/error.h"

namespace skein {

// A file cut short while mapped (truncated in place) raises SIGBUS at the next read of a page past its
// new end. Rather than a core dump, the process ends with the error line every other failure gives
// (exit status 2), naming the file: the weights are gone, so no request could be served from them.
namespace {
struct Mapping {
  std::atomic<uintptr_t> begin{0}, end{0};
  char path[256] = {};
};
Mapping g_mappings[64];  // read lock-free by the handler
std::mutex g_mappings_mu;
struct sigaction g_previous {};

extern "C" void on_bus_error(int, siginfo_t* info, void*) {
  const uintptr_t addr = uintptr_t(info->si_addr);
  for (const Mapping& m : g_mappings) {
    if (addr < m.begin.load() || addr >= m.end.load()) continue;
    auto say = [](const char* text) { (void)!::write(2, text, std::strlen(text)); };
    say("skein: error: ");
    say(m.path);
    say(": the file was cut short while in use (truncated or rewritten in place); restart with the new file\n");
    ::_exit(2);
  }
  sigaction(SIGBUS, &g_previous, nullptr);  // not ours: whoever had SIGBUS before (MPI, the default) sees the repeat
}

void track(const uint8_t* data, size_t size, const std::string& path) {
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_bus_error;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous);
  });
  std::lock_guard<std::mutex> lock(g_mappings_mu);
  for (Mapping& m : g_mappings) {
    if (m.end.load() != 0) continue;
    std::strncpy(m.path, path.c_str(), sizeof(m.path) - 1);
    m.begin.store(uintptr_t(data));
    m.end.store(uintptr_t(data) + size);
    return;
  }  // more maps than slots: those few fall back to the default SIGBUS
}

void untrack(const uint8_t* data) {
  std::lock_guard<std::mutex> lock(g_mappings_mu);
  for (Mapping& m : g_mappings)
    if (m.begin.load() == uintptr_t(data) && m.end.load() != 0) {
      m.end.store(0);
      m.begin.store(0);
    }
}
}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  size_ = size_t(st.st_size);
  if (size_ == 0) {
    ::close(fd);
    fail(path, ": file is empty");
  }
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) fail(path, ": mmap failed: ", std::strerror(errno));
  data_ = static_cast<const uint8_t*>(p);
  track(data_, size_, path_);
}

void MappedFile::release(const uint8_t* p, size_t n) const {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  uintptr_t b = (uintptr_t(p) + page - 1) / page * page, e = (uintptr_t(p) + n) / page * page;
  if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

MappedFile::~MappedFile() {
  if (!data_) return;
  untrack(data_);
  ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace skein
