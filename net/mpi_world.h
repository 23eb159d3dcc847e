// The MPI world `skein` runs in when mpirun (or srun) launched it: rank, size, host names, and
// byte messages. Waits poll with a growing sleep instead of spinning, so ranks that share cores with the
// ones computing do not steal their time.
#pragma once
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace skein {

class MpiWorld {
 public:
  // True when a launcher started this process (Open MPI, PMI or PMIx variables are set).
  static bool launched();

  MpiWorld(int* argc, char*** argv);
  ~MpiWorld();
  MpiWorld(const MpiWorld&) = delete;
  MpiWorld& operator=(const MpiWorld&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Host of every rank: $SKEIN_HOSTNAME when set (tests fake hosts with it), else MPI's processor name.
  const std::vector<std::string>& hosts() const { return hosts_; }

  void send(int dst, int tag, const void* data, size_t bytes);
  // Non-blocking send of `data` (kept alive by the caller until wait()). Returns a request handle.
  struct Pending {
    void* request = nullptr;  // MPI_Request, heap-allocated so this header needs no mpi.h
  };
  Pending isend(int dst, int tag, const void* data, size_t bytes);
  void wait(Pending& p);
  void send(int dst, int tag, const std::string& bytes) { send(dst, tag, bytes.data(), bytes.size()); }
  // Receives the next message with `tag` from `src`. Throws skein::Error after `timeout` without one.
  std::string recv(int src, int tag, std::chrono::milliseconds timeout = std::chrono::hours(24 * 365));
  void recv_into(int src, int tag, void* data, size_t bytes, std::chrono::milliseconds timeout = std::chrono::hours(24 * 365));

  [[noreturn]] void abort(int code);

  // Liveness. Stage ranks call start_heartbeat(): a thread tells rank 0 every `period` that this
  // process still runs (a stopped or dead process stops telling). Rank 0 calls watch() with the ranks
  // to watch; from then on every wait fails with "rank R stopped answering" once a watched rank has
  // been silent for `limit`.
  void start_heartbeat(std::chrono::milliseconds period = std::chrono::milliseconds(500));
  void watch(const std::vector<int>& ranks, std::chrono::milliseconds limit = std::chrono::milliseconds(4000));

 private:
  void wait_for(int src, int tag, std::chrono::milliseconds timeout, size_t* bytes);
  void check_heartbeats();
  int rank_ = 0, size_ = 1;
  std::vector<std::string> hosts_;
  struct Heartbeat;
  std::unique_ptr<Heartbeat> heartbeat_;
  std::vector<int> watched_;
  std::vector<std::chrono::steady_clock::time_point> last_seen_;
  std::chrono::milliseconds silence_limit_{4000};
};

}  // namespace skein
