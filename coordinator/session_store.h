// Named sessions: a conversation's whole context is its RWKV state, so a session is a state kept between
// requests. A resident session holds a slot on the workers; when slots run out the least recently used
// idle one is exported to host memory, and past the host budget to disk (when a folder is configured).
// Sessions come back into a slot on use. Runs on the service thread only (it drives the model).
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "coordinator/config.h"
#include "coordinator/model_handle.h"
#include "model/state_file.h"

namespace skein {

// Why a session operation was refused; HTTP answers each with its own status.
enum class SessionFault { BadRequest, NotFound, Conflict, NoRoom, Failed };
class SessionError : public Error {
 public:
  SessionError(SessionFault f, const std::string& what) : Error(what), fault(f) {}
  SessionFault fault;
};

struct SessionInfo {
  std::string name;
  uint64_t tokens = 0;  // tokens the state has seen (prompts and generated tokens)
  std::string where;    // slot | host | disk | parked (its running turn was preempted)
  bool busy = false;
  double idle_seconds = 0;
};

// A session as it travels between servers, or to a client: its state file and the bookkeeping beside it.
struct SessionSnapshot {
  std::string state_file;        // a state file's bytes (model/state_file.h), layers 0..n_layer
  uint64_t tokens = 0;           // tokens the state has seen
  std::vector<int32_t> pending;  // tokens it has not seen yet: they run before the next prompt
};

class SessionStore {
 public:
  // `header` identifies the model (state files of another model are refused).
  SessionStore(ModelHandle& model, SessionsConfig cfg, StateFileHeader header);
  // Creates the sessions folder if it is missing; throws skein::Error saying why it cannot. (serve
  // calls it before the model loads, so a bad folder stops it at once.)
  static void make_folder(const std::string& dir);

  // "a-z A-Z 0-9 _ - ." up to 128 bytes, not starting with '.': names double as file names.
  static void check_name(const std::string& name);

  // A slot with the session's state (a new session starts from the model's initial state) and the
  // tokens that must run before the request's prompt. Throws skein::Error when the session is busy or
  // no slot can be freed.
  struct Lease {
    int slot = -1;
    std::vector<int32_t> pending;
    bool created = false;
    uint64_t tokens = 0;  // tokens the state has seen
  };
  Lease acquire(const std::string& name);
  // The request left: `unfed` tokens are prepended to the next prompt; `fed` tokens entered the state.
  void release(const std::string& name, std::vector<int32_t> unfed, uint64_t fed);
  // The busy session's request was preempted: its state left the slot with it (the caller closed the
  // slot); then it resumed on `slot`, or it ended while parked and its state comes back to host memory
  // (release follows).
  void parked(const std::string& name);
  void resumed(const std::string& name, int slot);
  void parked_ended(const std::string& name, std::vector<float> state);

  // A request for `name` (or, with "", a one-off request) can start now: its slot is there, one is free
  // or can be freed by an eviction (or it will be refused at once, e.g. a busy session).
  bool slot_ready(const std::string& name) const;
  // Frees one slot by evicting the least recently used idle resident session; false if there is none.
  bool evict_one();
  // A free slot, evicting as needed; throws skein::Error when every slot is busy with a running request.
  int open_slot();

  // A new session `to` that starts where `from` stands: the same state, history and pending tokens; the
  // two then go their own ways (branching a conversation costs one state copy, no prefill). The copy
  // takes a free slot when there is one (copied where the state lives, on the workers), else host memory.
  void fork(const std::string& from, const std::string& to);
  void save(const std::string& name);  // to `dir` (kept resident); throws when no dir is configured
  // A copy of an idle session, wherever it is kept (it stays there).
  SessionSnapshot export_session(const std::string& name);
  // A new session from a snapshot, verified as a state file of this model (its pending tokens are
  // vocabulary ids: the request parser checks them); kept in host memory (the folder past the host
  // budget) until a request uses it.
  void import_session(const std::string& name, const SessionSnapshot& snapshot);
  // Forgets (files too) every idle session unused for longer than [sessions] idle_ttl_s, except those
  // `keep` names (requests wait for them); returns the names forgotten.
  std::vector<std::string> expire(const std::set<std::string>& keep);
  // Every idle session not saved since it changed (at shutdown, every save_interval_s, and after a model
  // failure with `slots` false: only states held in host memory, as the slots died with their stage).
  // Host states first; a session that cannot be saved is reported and the others are still saved.
  // Returns how many were saved.
  size_t save_all(bool slots = true);
  void remove(const std::string& name);
  std::vector<SessionInfo> list() const;
  size_t host_bytes_used() const { return host_used_; }
  bool folder_failing() const { return spill_failing_; }  // the folder refused the last spilled state
  size_t count(const std::string& where) const;

 private:
  struct Session {
    int slot = -1;
    std::optional<std::vector<float>> host;  // evicted to host memory
    bool on_disk = false;                    // the newest state is (also) in the folder
    std::vector<int32_t> pending;
    uint64_t tokens = 0;
    bool busy = false;
    std::chrono::steady_clock::time_point used = std::chrono::steady_clock::now();
  };
  Session& get(const std::string& name);
  static const char* place(const Session& s);  // slot | host | disk | parked
  std::string state_path(const std::string& name) const;
  std::string meta_path(const std::string& name) const;
  std::string next_state_path(const std::string& name) const;  // a save's state until its metadata commits it
  void recover(const std::string& name, const nlohmann::json& meta) const;
  void write_disk(const std::string& name, Session& s, const std::vector<float>& state);
  std::vector<float> state_of(const std::string& name, const Session& s);  // a copy, from its slot, host memory or file
  std::vector<float> read_saved(const std::string& name) const;            // its file's state; SessionFault::Failed if unreadable
  // Keeps host memory within budget by moving the oldest host states to disk. A failed write (disk
  // full, folder gone) keeps the state in host memory and stops spilling until a later try succeeds:
  // meanwhile the budget holds as if there were no folder, so new sessions are refused, none is lost.
  void spill_host();
  // One more state can go to host memory: the budget has room, or the folder takes what passes it.
  bool host_takes_one_more() const;
  std::string host_full() const;  // why it does not, and the remedy
  bool idle_in_a_slot() const;     // a session holds a slot it could give up (when host memory takes its state)
  void scan_dir();

  ModelHandle& model_;
  SessionsConfig cfg_;
  StateFileHeader header_;
  std::map<std::string, Session> sessions_;
  size_t host_used_ = 0;
  bool spill_failing_ = false;  // the last write to the folder failed
};

}  // namespace skein
