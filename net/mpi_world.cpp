#include "net/mpi_world.h"

#include <mpi.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <cstdio>

#include "common/error.h"

namespace skein {

namespace {
constexpr int kTagHeartbeat = 99;

// Polling that spins briefly for latency, then naps up to 1 ms so a waiting rank yields its core.
class Backoff {
 public:
  void pause() {
    if (nap_.count() > 0) std::this_thread::sleep_for(nap_);
    nap_ = std::min(std::chrono::microseconds(1000), nap_ + std::chrono::microseconds(nap_.count() < 50 ? 5 : 100));
  }

 private:
  std::chrono::microseconds nap_{0};
};
}  // namespace

struct MpiWorld::Heartbeat {
  std::atomic<bool> stop{false};
  std::thread thread;
};

bool MpiWorld::launched() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PMIXP_ABORT_AGENT_PORT"})
    if (std::getenv(v)) return true;
  return false;
}

MpiWorld::MpiWorld(int* argc, char*** argv) {
  int provided = 0;
  // The heartbeat thread sends while the main thread computes and communicates.
  MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
  if (provided < MPI_THREAD_MULTIPLE) std::fprintf(stderr, "skein: warning: MPI without thread support; stage liveness is not watched\n");
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  MPI_Get_processor_name(name, &len);
  std::string mine = std::getenv("SKEIN_HOSTNAME") ? std::getenv("SKEIN_HOSTNAME") : std::string(name, size_t(len));
  mine.resize(MPI_MAX_PROCESSOR_NAME, '\0');
  std::vector<char> all(size_t(size_) * MPI_MAX_PROCESSOR_NAME);
  MPI_Allgather(mine.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, MPI_COMM_WORLD);
  for (int r = 0; r < size_; ++r) hosts_.emplace_back(all.data() + size_t(r) * MPI_MAX_PROCESSOR_NAME);
}

MpiWorld::~MpiWorld() {
  if (heartbeat_) {
    heartbeat_->stop = true;
    heartbeat_->thread.join();
  }
  MPI_Finalize();
}

void MpiWorld::start_heartbeat(std::chrono::milliseconds period) {
  int provided = 0;
  MPI_Query_thread(&provided);
  if (provided < MPI_THREAD_MULTIPLE || heartbeat_) return;
  heartbeat_ = std::make_unique<Heartbeat>();
  heartbeat_->thread = std::thread([this, period] {
    char beat = 1;
    while (!heartbeat_->stop) {
      MPI_Request req;
      MPI_Isend(&beat, 1, MPI_BYTE, 0, kTagHeartbeat, MPI_COMM_WORLD, &req);
      for (auto t = std::chrono::milliseconds(0); t < period && !heartbeat_->stop; t += std::chrono::milliseconds(10))
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      MPI_Request_free(&req);
    }
  });
}

void MpiWorld::watch(const std::vector<int>& ranks, std::chrono::milliseconds limit) {
  int provided = 0;
  MPI_Query_thread(&provided);
  if (provided < MPI_THREAD_MULTIPLE) return;
  watched_ = ranks;
  silence_limit_ = limit;
  last_seen_.assign(size_t(size_), std::chrono::steady_clock::now());
}

void MpiWorld::check_heartbeats() {
  if (watched_.empty()) return;
  auto now = std::chrono::steady_clock::now();
  while (true) {  // take every beat that arrived
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, kTagHeartbeat, MPI_COMM_WORLD, &flag, &st);
    if (!flag) break;
    char beat;
    MPI_Recv(&beat, 1, MPI_BYTE, st.MPI_SOURCE, kTagHeartbeat, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    last_seen_[size_t(st.MPI_SOURCE)] = now;
  }
  for (int r : watched_)
    if (now - last_seen_[size_t(r)] > silence_limit_)
      fail("rank ", r, " (", hosts_[size_t(r)], ") stopped answering: no sign of life for ",
           std::chrono::duration_cast<std::chrono::milliseconds>(now - last_seen_[size_t(r)]).count(), " ms");
}

void MpiWorld::send(int dst, int tag, const void* data, size_t bytes) {
  if (bytes > size_t(INT32_MAX)) fail("message of ", bytes, " bytes is too large for one MPI send");
  if (MPI_Send(data, int(bytes), MPI_BYTE, dst, tag, MPI_COMM_WORLD) != MPI_SUCCESS) fail("MPI send to rank ", dst, " failed");
}

void MpiWorld::wait_for(int src, int tag, std::chrono::milliseconds timeout, size_t* bytes) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  Backoff backoff;
  while (true) {
    int flag = 0;
    MPI_Status st;
    if (MPI_Iprobe(src, tag, MPI_COMM_WORLD, &flag, &st) != MPI_SUCCESS) fail("MPI probe for rank ", src, " failed");
    if (flag) {
      int n = 0;
      MPI_Get_count(&st, MPI_BYTE, &n);
      *bytes = size_t(n);
      return;
    }
    if (std::chrono::steady_clock::now() > deadline) fail("rank ", src, " sent nothing for ", timeout.count(), " ms (stopped or died)");
    check_heartbeats();
    backoff.pause();
  }
}

MpiWorld::Pending MpiWorld::isend(int dst, int tag, const void* data, size_t bytes) {
  if (bytes > size_t(INT32_MAX)) fail("message of ", bytes, " bytes is too large for one MPI send");
  auto* req = new MPI_Request;
  if (MPI_Isend(data, int(bytes), MPI_BYTE, dst, tag, MPI_COMM_WORLD, req) != MPI_SUCCESS) {
    delete req;
    fail("MPI send to rank ", dst, " failed");
  }
  return Pending{req};
}

void MpiWorld::wait(Pending& p) {
  if (!p.request) return;
  auto* req = static_cast<MPI_Request*>(p.request);
  Backoff backoff;
  while (true) {
    int done = 0;
    if (MPI_Test(req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) fail("MPI send did not complete");
    if (done) break;
    backoff.pause();
  }
  delete req;
  p.request = nullptr;
}

std::string MpiWorld::recv(int src, int tag, std::chrono::milliseconds timeout) {
  size_t n = 0;
  wait_for(src, tag, timeout, &n);
  std::string out(n, '\0');
  if (MPI_Recv(out.data(), int(n), MPI_BYTE, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE) != MPI_SUCCESS) fail("MPI receive from rank ", src, " failed");
  return out;
}

void MpiWorld::recv_into(int src, int tag, void* data, size_t bytes, std::chrono::milliseconds timeout) {
  size_t n = 0;
  wait_for(src, tag, timeout, &n);
  if (n != bytes) fail("rank ", src, " sent ", n, " bytes, expected ", bytes);
  if (MPI_Recv(data, int(n), MPI_BYTE, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE) != MPI_SUCCESS) fail("MPI receive from rank ", src, " failed");
}

void MpiWorld::abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace skein
