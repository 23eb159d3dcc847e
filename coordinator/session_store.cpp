#include "coordinator/session_store.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/log.h"
#include "model/fingerprint.h"
#include "net/json_fields.h"

namespace skein {

namespace fs = std::filesystem;

namespace {
template <typename... Parts>
[[noreturn]] void refuse(SessionFault why, const Parts&... parts) {
  throw SessionError(why, concat(parts...));
}
}  // namespace

SessionStore::SessionStore(ModelHandle& model, SessionsConfig cfg, StateFileHeader header)
    : model_(model), cfg_(std::move(cfg)), header_(header) {
  if (!cfg_.dir.empty()) {
    make_folder(cfg_.dir);
    if (cfg_.persist) scan_dir();
  }
}

void SessionStore::make_folder(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("sessions: cannot create folder ", dir, ": ", ec.message());
}

void SessionStore::check_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 128 && name[0] != '.';
  for (char c : name) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.');
  if (!ok) refuse(SessionFault::BadRequest, "session: '", name.substr(0, 64), "' is not a valid session name (1-128 of a-z A-Z 0-9 _ - ., not starting with '.')");
}

std::string SessionStore::state_path(const std::string& name) const { return (fs::path(cfg_.dir) / (name + ".state")).string(); }
std::string SessionStore::next_state_path(const std::string& name) const { return state_path(name) + ".new"; }
std::string SessionStore::meta_path(const std::string& name) const { return (fs::path(cfg_.dir) / (name + ".json")).string(); }

const char* SessionStore::place(const Session& s) {
  return s.slot >= 0 ? "slot" : s.host ? "host" : s.busy ? "parked" : "disk";  // busy outside a slot: its request was preempted
}

SessionStore::Session& SessionStore::get(const std::string& name) {
  auto it = sessions_.find(name);
  if (it == sessions_.end()) refuse(SessionFault::NotFound, "session '", name, "' does not exist");
  return it->second;
}

// Sessions saved by an earlier run: listed now, their states read on first use.
void SessionStore::scan_dir() {
  for (auto& e : fs::directory_iterator(cfg_.dir)) {
    const std::string file = e.path().filename().string();
    if (file.size() > 10 && file.substr(file.size() - 10) == ".state.new" && !fs::exists(meta_path(file.substr(0, file.size() - 10)))) {
      std::error_code ec;  // a first save a crash interrupted before its metadata: nothing refers to it
      fs::remove(e.path(), ec);
      continue;
    }
    if (e.path().extension() != ".json") continue;
    std::string name = e.path().stem().string();
    try {
      check_name(name);
      std::ifstream f(e.path());
      auto j = nlohmann::json::parse(f);
      Session s;
      s.on_disk = true;
      // The request parsers' strict reads: nlohmann's own would turn -1 into 2^64 - 1 and 1.5 into 1.
      const int64_t tokens = json_fields::integer(j.at("tokens"), "tokens");
      if (tokens < 0) fail("tokens: must be >= 0");
      s.tokens = uint64_t(tokens);
      s.pending = json_fields::token_ids(j.at("pending"), "pending", header_.dims.vocab);
      recover(name, j);
      // Idle since it was last written (an expiry counts across restarts).
      const auto age = fs::file_time_type::clock::now() - fs::last_write_time(e.path());
      if (age > fs::file_time_type::duration::zero()) s.used -= std::chrono::duration_cast<std::chrono::steady_clock::duration>(age);
      sessions_[name] = std::move(s);
    } catch (const std::exception& ex) {
      logging::warn(e.path().string(), ": not a session, skipped (", ex.what(), ")");
    }
  }
}

SessionStore::Lease SessionStore::acquire(const std::string& name) {
  check_name(name);
  Lease lease;
  auto it = sessions_.find(name);
  if (it == sessions_.end()) {
    lease.created = true;
    it = sessions_.emplace(name, Session{}).first;
  }
  Session& s = it->second;
  if (s.busy) refuse(SessionFault::Conflict, "session '", name, "' is busy with another request");
  if (s.slot < 0) {
    const bool from_host = s.host.has_value();
    std::vector<float> state;
    if (from_host) state = std::move(*s.host);
    else if (s.on_disk) state = read_saved(name);
    s.busy = true;  // open_slot's evictions spill idle host states to disk: not this one, moved out above
    int slot;
    try {
      slot = open_slot();
      if (!state.empty()) model_.import_state(slot, state);
    } catch (...) {  // no room, or the model failed: the session keeps its state
      s.busy = false;
      if (from_host) *s.host = std::move(state);
      if (lease.created) sessions_.erase(it);
      throw;
    }
    if (from_host) {
      host_used_ -= state.size() * sizeof(float);  // the state's own size: *s.host was moved out
      s.host.reset();
    }
    s.slot = slot;
  }
  s.busy = true;
  s.used = std::chrono::steady_clock::now();
  lease.slot = s.slot;
  lease.tokens = s.tokens;
  lease.pending = std::move(s.pending);
  s.pending.clear();
  return lease;
}

void SessionStore::release(const std::string& name, std::vector<int32_t> unfed, uint64_t fed) {
  auto it = sessions_.find(name);
  if (it == sessions_.end()) return;
  Session& s = it->second;
  s.busy = false;
  s.pending = std::move(unfed);
  s.tokens += fed;
  s.on_disk = false;  // the state moved on since it was saved
  s.used = std::chrono::steady_clock::now();
}

void SessionStore::parked(const std::string& name) {
  if (auto it = sessions_.find(name); it != sessions_.end()) it->second.slot = -1;
}

void SessionStore::resumed(const std::string& name, int slot) {
  if (auto it = sessions_.find(name); it != sessions_.end()) it->second.slot = slot;
}

void SessionStore::parked_ended(const std::string& name, std::vector<float> state) {
  auto it = sessions_.find(name);
  if (it == sessions_.end()) return;
  host_used_ += state.size() * sizeof(float);
  it->second.host = std::move(state);  // within the host budget again at the next eviction's spill
}

bool SessionStore::slot_ready(const std::string& name) const {
  // A busy session's request is refused at once (acquire says why) rather than queued behind it.
  if (auto it = sessions_.find(name); it != sessions_.end() && (it->second.slot >= 0 || it->second.busy)) return true;
  return model_.free_slots() > 0 || idle_in_a_slot();  // or evictable
}

bool SessionStore::idle_in_a_slot() const {
  for (auto& [n, s] : sessions_)
    if (s.slot >= 0 && !s.busy) return true;
  return false;
}

bool SessionStore::evict_one() {
  Session* lru = nullptr;
  for (auto& [n, s] : sessions_)
    if (s.slot >= 0 && !s.busy && (!lru || s.used < lru->used)) lru = &s;
  if (!lru) return false;
  if (spill_failing_) spill_host();          // the folder may take states again
  if (!host_takes_one_more()) return false;  // nowhere to keep it: never drop a session
  std::vector<float> state = model_.export_state(lru->slot);
  model_.close_session(lru->slot);
  lru->slot = -1;
  host_used_ += state.size() * sizeof(float);
  lru->host = std::move(state);
  spill_host();
  return true;
}

int SessionStore::open_slot() {
  while (model_.free_slots() <= 0)
    if (!evict_one()) break;
  if (model_.free_slots() > 0) return model_.open_session();
  if (idle_in_a_slot()) refuse(SessionFault::NoRoom, "all request slots are in use and ", host_full());  // it could not move
  refuse(SessionFault::NoRoom, "all request slots are busy with running requests");
}

std::string SessionStore::host_full() const {
  return "idle sessions fill the host budget of " + std::to_string(cfg_.host_bytes) + " bytes" +
         (spill_failing_ ? " and the sessions folder cannot take more (the server's log says why): delete sessions or try again later"
                         : ": delete sessions or configure [sessions] dir");
}

bool SessionStore::host_takes_one_more() const {
  return (!cfg_.dir.empty() && !spill_failing_) || host_used_ + model_.dims().state_floats() * sizeof(float) <= cfg_.host_bytes;
}

void SessionStore::spill_host() {
  // While the folder fails, one state goes even within the budget: a write is the only way to learn
  // that the folder takes states again (the host budget may have room by then, with no other write due).
  bool probe = spill_failing_;
  while (!cfg_.dir.empty() && (host_used_ > cfg_.host_bytes || probe)) {
    probe = false;
    Session* oldest = nullptr;
    std::string oldest_name;
    for (auto& [n, s] : sessions_)
      if (s.host && !s.busy && (!oldest || s.used < oldest->used)) {  // a busy one's tokens are not settled yet
        oldest = &s;
        oldest_name = n;
      }
    if (!oldest) return;
    try {
      write_disk(oldest_name, *oldest, *oldest->host);
    } catch (const Error& e) {
      if (!spill_failing_)
        logging::warn("sessions: cannot spill idle sessions to ", cfg_.dir, " (", e.what(), "): they stay in host memory beyond [sessions] host_bytes, ",
                      "and new sessions are refused until the folder takes them again");
      spill_failing_ = true;
      return;
    }
    host_used_ -= oldest->host->size() * sizeof(float);
    oldest->host.reset();
  }
}

// A save is two files, state and metadata, that must not mix two saves (a state from one save with the
// pending tokens of another would feed the wrong tokens). The new state goes to NAME.state.new; the
// metadata, naming the new state's checksum, is the commit; renaming NAME.state.new over NAME.state
// finishes it. recover() completes or discards a save a crash interrupted.
void SessionStore::write_disk(const std::string& name, Session& s, const std::vector<float>& state) {
  const uint64_t checksum = save_state_file(next_state_path(name), header_, state);
  nlohmann::json meta = {{"tokens", s.tokens}, {"pending", s.pending}, {"state_checksum", fingerprint_hex(checksum)}};
  write_file_atomically(meta_path(name), [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::trunc);
    f << meta.dump() << "\n";
    if (!f) fail(tmp, ": cannot write session metadata");
  });
  rename_durably(next_state_path(name), state_path(name));
  s.on_disk = true;
  if (spill_failing_) logging::info("sessions: ", cfg_.dir, " takes states again");
  spill_failing_ = false;
}

// After a crash during a save: NAME.state.new is the committed state when the metadata names its
// checksum (the rename did not happen), else an uncommitted one (the old save stands). Then NAME.state
// must be the state the metadata was saved with. Metadata without a checksum predates this protocol.
void SessionStore::recover(const std::string& name, const nlohmann::json& meta) const {
  const std::string next = next_state_path(name), current = state_path(name);
  const bool checked = meta.contains("state_checksum");
  if (checked && !meta.at("state_checksum").is_string()) fail("state_checksum: must be a string");
  const std::string want = checked ? meta.at("state_checksum").get<std::string>() : "";
  std::error_code ec;
  if (fs::exists(next)) {
    bool committed = false;
    try {
      committed = checked && fingerprint_hex(stored_state_checksum(next)) == want;
    } catch (const Error&) {
    }
    if (committed) fs::rename(next, current, ec);
    else fs::remove(next, ec);
    if (ec) fail("cannot ", committed ? "finish" : "discard", " an interrupted save: ", ec.message());
    logging::info("session ", name, ": ", committed ? "finished" : "discarded", " a save that was interrupted");
  }
  if (!fs::exists(current)) fail("its state file is missing");
  if (checked && fingerprint_hex(stored_state_checksum(current)) != want) fail("its state file is not the one its metadata was saved with");
}

std::vector<float> SessionStore::state_of(const std::string& name, const Session& s) {
  return s.slot >= 0 ? model_.export_state(s.slot) : s.host ? *s.host : read_saved(name);
}

std::vector<float> SessionStore::read_saved(const std::string& name) const {
  try {
    return load_state_file(state_path(name), header_);
  } catch (const Error& e) {
    // The server's fault (disk, folder), not the client's: the details and paths go to the log.
    logging::error("session ", name, ": ", e.what());
    refuse(SessionFault::Failed, "session '", name, "': its saved state cannot be read now (the server's log says why); the session is kept");
  }
}

void SessionStore::fork(const std::string& from, const std::string& to) {
  check_name(from);
  check_name(to);
  Session& s = get(from);
  if (sessions_.count(to)) refuse(SessionFault::Conflict, "session '", to, "' already exists: delete it first, or fork under another name");
  if (s.busy) refuse(SessionFault::Conflict, "session '", from, "' is busy with a request; fork it when the request has finished");
  Session copy;
  copy.pending = s.pending;
  copy.tokens = s.tokens;
  copy.on_disk = false;  // its own files are written when it is saved or spilled
  if (s.slot >= 0 && model_.free_slots() > 0) {
    copy.slot = model_.clone_session(s.slot);
  } else {
    if (!host_takes_one_more())
      refuse(SessionFault::NoRoom, "no free slot for the fork and ", host_full());
    copy.host = state_of(from, s);
    host_used_ += copy.host->size() * sizeof(float);
  }
  sessions_.emplace(to, std::move(copy));
  spill_host();
}

void SessionStore::save(const std::string& name) {
  check_name(name);
  if (cfg_.dir.empty()) refuse(SessionFault::BadRequest, "sessions: no [sessions] dir is configured, so sessions cannot be saved");
  Session& s = get(name);
  if (s.busy) refuse(SessionFault::Conflict, "session '", name, "' is busy with a request; save it when the request has finished");
  if (s.on_disk) return;
  if (s.host) write_disk(name, s, *s.host);
  else write_disk(name, s, model_.export_state(s.slot));
}

SessionSnapshot SessionStore::export_session(const std::string& name) {
  check_name(name);
  Session& s = get(name);
  if (s.busy) refuse(SessionFault::Conflict, "session '", name, "' is busy with a request; export it when the request has finished");
  return {encode_state_file(header_, state_of(name, s)), s.tokens, s.pending};
}

void SessionStore::import_session(const std::string& name, const SessionSnapshot& snapshot) {
  check_name(name);
  if (sessions_.count(name)) refuse(SessionFault::Conflict, "session '", name, "' already exists: delete it first, or import under another name");
  std::vector<float> state;
  try {
    state = decode_state_file(snapshot.state_file, header_, "session '" + name + "'");
  } catch (const Error& e) {
    refuse(SessionFault::BadRequest, e.what());
  }
  if (!host_takes_one_more())
    refuse(SessionFault::NoRoom, host_full());
  Session s;
  s.tokens = snapshot.tokens;
  s.pending = snapshot.pending;
  host_used_ += state.size() * sizeof(float);
  s.host = std::move(state);
  sessions_.emplace(name, std::move(s));
  spill_host();
}

std::vector<std::string> SessionStore::expire(const std::set<std::string>& keep) {
  std::vector<std::string> gone;
  if (cfg_.idle_ttl_s <= 0) return gone;
  const auto limit = std::chrono::steady_clock::now() - std::chrono::seconds(cfg_.idle_ttl_s);
  for (auto& [name, s] : sessions_)
    if (!s.busy && s.used < limit && !keep.count(name)) gone.push_back(name);
  for (auto& name : gone) remove(name);
  return gone;
}

size_t SessionStore::save_all(bool slots) {
  size_t saved = 0, failed = 0;
  std::string first_failure;
  for (const bool in_slot : {false, true}) {
    if (in_slot && !slots) break;
    for (auto& [n, s] : sessions_) {
      if (s.busy || s.on_disk || (s.slot >= 0) != in_slot) continue;
      try {
        save(n);
        ++saved;
      } catch (const Error& e) {
        if (!failed++) first_failure = "session " + n + ": " + e.what();
      }
    }
  }
  // One line however many fail: a full disk fails them all, at every periodic save.
  if (failed) logging::warn(failed, failed == 1 ? " session was" : " sessions were", " not saved (", first_failure, ")");
  return saved;
}

void SessionStore::remove(const std::string& name) {
  check_name(name);
  Session& s = get(name);
  if (s.busy) refuse(SessionFault::Conflict, "session '", name, "' is busy with a request");
  if (s.slot >= 0) model_.close_session(s.slot);
  if (s.host) host_used_ -= s.host->size() * sizeof(float);
  if (!cfg_.dir.empty()) {
    std::error_code ec;
    fs::remove(meta_path(name), ec);  // metadata first: a half-removed session is never listed
    fs::remove(state_path(name), ec);
    fs::remove(next_state_path(name), ec);
  }
  sessions_.erase(name);
}

std::vector<SessionInfo> SessionStore::list() const {
  std::vector<SessionInfo> out;
  auto now = std::chrono::steady_clock::now();
  for (auto& [n, s] : sessions_)
    out.push_back({n, s.tokens, place(s), s.busy,
                   std::chrono::duration<double>(now - s.used).count()});
  return out;
}

size_t SessionStore::count(const std::string& where) const {
  size_t n = 0;
  for (auto& [name, s] : sessions_) n += place(s) == where;
  return n;
}

}  // namespace skein
