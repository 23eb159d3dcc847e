// Named sessions and the prompt-prefix cache, on the in-process engine: a session continues from its
// state exactly as if the whole history had been sent at once; sessions survive eviction to host memory
// and disk and a restart; cached prefixes give the same tokens as prefilling them.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

#include "common/error.h"
#include "common/log.h"
#include "coordinator/prefix_cache.h"
#include "tests/service_harness.h"

namespace skein::test {
namespace {

// What a session's third turn gives must equal sending the whole history at once.
TEST(Sessions, ContinueAsIfTheHistoryWereSentAtOnce) {
  Service s;
  auto a = s.generate("The man said", 10, "chat");
  auto b = s.generate(" and then", 10, "chat");
  auto c = s.generate(". It was", 12, "chat");
  EXPECT_EQ(c.session_tokens, 12u + 10 + 9 + 10 + 8 + 12);
  Service fresh;
  auto whole = fresh.generate("The man said" + a.text + " and then" + b.text + ". It was", 12);
  EXPECT_EQ(c.text, whole.text);
  EXPECT_EQ(c.prompt_tokens, 8);  // only the new text was sent; the history was in the state
  auto list = s.op(SessionOp::List).first;
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name, "chat");
  EXPECT_EQ(list[0].where, "slot");
  EXPECT_EQ(list[0].tokens, 12u + 10 + 9 + 10 + 8 + 11);  // the last generated token waits for the next turn
}

// Two slots, four sessions used in turn: idle sessions are evicted to host memory (and past the host
// budget, to disk) and come back unchanged. The host budget holds just what four sessions on two slots
// need (two evicted states and a third while one comes back), so the budget's books must balance over
// many turns: a state that comes back must give back its bytes.
TEST(Sessions, EvictedSessionsComeBackUnchanged) {
  for (bool disk : {false, true}) {
    Service ref;
    ServiceOptions o;
    o.sessions.host_bytes = 3 * ref.mut.model->dims().state_floats() * sizeof(float);
    if (disk) {
      o.sessions.dir = temp_dir() + "/spill";
      o.sessions.host_bytes = 1;  // every evicted state goes on to disk
    }
    Service s(o, 2);
    std::vector<std::string> history(4);
    for (int turn = 0; turn < 6; ++turn)
      for (int k = 0; k < 4; ++k) {
        const std::string number = std::to_string(k), name = std::string("s").append(number);
        const std::string msg = turn == 0 ? std::string("Session ").append(number).append(" says") : " and";
        auto r = s.generate(msg, 6, name);
        ASSERT_EQ(r.finish_reason, "length") << r.error;
        auto whole = ref.generate(history[size_t(k)] + msg, 6);
        EXPECT_EQ(r.text, whole.text) << "session " << k << " turn " << turn << (disk ? " (disk)" : " (host)");
        history[size_t(k)] += msg + r.text;
      }
    auto list = s.op(SessionOp::List).first;
    size_t resident = 0, away = 0;
    for (auto& i : list) (i.where == "slot" ? resident : away) += 1;
    EXPECT_EQ(resident, 2u);
    EXPECT_EQ(away, 2u);
    for (auto& i : list) {
      if (i.where != "slot") {
        EXPECT_EQ(i.where, disk ? "disk" : "host");
      }
    }
  }
}

// A fork starts where its source stands, then each goes its own way exactly as sending its own whole
// history would. The source may be in a slot (the copy takes a free slot, or host memory when none is
// free), in host memory or on disk.
TEST(Sessions, AForkGoesOnAsSendingItsWholeHistoryWould) {
  struct Case {
    const char* source;  // where the source is when it is forked
    int slots;
    bool disk;
    const char* fork;  // where the fork is made
  };
  for (const Case& c : {Case{"slot", 4, false, "slot"}, Case{"slot", 1, false, "host"}, Case{"host", 1, false, "host"},
                        Case{"disk", 1, true, "disk"}}) {
    SCOPED_TRACE(testing::Message() << "source in " << c.source << ", fork in " << c.fork);
    ServiceOptions o;
    if (c.disk) {
      o.sessions.dir = temp_dir() + "/fork";
      o.sessions.host_bytes = 1;  // evicted states go on to disk
    }
    Service s(o, c.slots);
    const std::string start = "The man said";
    auto a = s.generate(start, 8, "a");
    if (std::string(c.source) != "slot") s.generate("Something else", 2, "other");  // evicts "a"
    ASSERT_EQ(s.where("a"), c.source);
    ASSERT_EQ(s.op(SessionOp::Fork, "a", "b").second, "");
    EXPECT_EQ(s.where("b"), c.fork);
    // Both continue from the same history, then differ.
    Service ref;
    const std::string history = start + a.text;
    auto a2 = s.generate(" and then", 8, "a");
    auto b2 = s.generate(" and then", 8, "b");
    EXPECT_EQ(a2.text, ref.generate(history + " and then", 8).text);
    EXPECT_EQ(b2.text, a2.text);
    EXPECT_EQ(b2.session_tokens, a2.session_tokens);
    auto b3 = s.generate(". But", 8, "b");
    EXPECT_EQ(b3.text, ref.generate(history + " and then" + b2.text + ". But", 8).text);
    auto a3 = s.generate(" so", 8, "a");
    EXPECT_EQ(a3.text, ref.generate(history + " and then" + a2.text + " so", 8).text);
  }
}

// A fork that cannot be made says why and changes nothing: a missing source, a name taken, a bad name,
// a source busy with a request, no room.
TEST(Sessions, AForkThatCannotBeMadeSaysWhyAndChangesNothing) {
  Service s({}, 4);
  auto a = s.generate("The man said", 6, "a");
  s.generate("Other", 2, "taken");
  EXPECT_NE(s.op(SessionOp::Fork, "nope", "b").second.find("session 'nope' does not exist"), std::string::npos);
  EXPECT_NE(s.op(SessionOp::Fork, "a", "taken").second.find("session 'taken' already exists"), std::string::npos);
  EXPECT_NE(s.op(SessionOp::Fork, "a", "a").second.find("already exists"), std::string::npos);
  EXPECT_NE(s.op(SessionOp::Fork, "a", "../b").second.find("not a valid session name"), std::string::npos);
  // Busy: a long request on "a", forked once its first text has come.
  std::promise<void> first;
  std::promise<GenerationSummary> done;
  bool once = false;
  ServiceRequest r;
  r.prompt = s.tok.encode(" and");
  r.max_tokens = 1000000;
  r.session = "a";
  r.on_delta = [&](const std::string&, const std::vector<SampledToken>&) {
    if (!once) first.set_value();
    once = true;
  };
  r.on_done = [&](const GenerationSummary& g) { done.set_value(g); };
  uint64_t id = s.service->submit(std::move(r));
  first.get_future().wait();
  EXPECT_NE(s.op(SessionOp::Fork, "a", "b").second.find("session 'a' is busy"), std::string::npos);
  s.service->cancel(id);
  EXPECT_EQ(done.get_future().get().finish_reason, "cancelled");
  auto list = s.op(SessionOp::List).first;
  ASSERT_EQ(list.size(), 2u);  // a and taken: no half-made b
  EXPECT_EQ(s.where("b"), "missing");
  // No free slot and no room in host memory (and no folder to spill to).
  ServiceOptions tight;
  tight.sessions.host_bytes = 1;
  Service u(tight, 1);
  u.generate("one", 2, "a");
  EXPECT_NE(u.op(SessionOp::Fork, "a", "b").second.find("host budget"), std::string::npos);
  EXPECT_EQ(u.op(SessionOp::List).first.size(), 1u);
}

TEST(Sessions, SavedSessionsSurviveARestart) {
  std::string dir = temp_dir() + "/persist";
  ServiceOptions o = persisted(dir);
  std::string history;
  {
    Service s(o);
    auto a = s.generate("The man said", 8, "kept");
    auto b = s.generate("Another", 4, "saved-now");
    EXPECT_EQ(s.op(SessionOp::Save, "saved-now").second, "");
    history = "The man said" + a.text;
  }  // shutdown saves "kept" too (persist)
  EXPECT_TRUE(std::filesystem::exists(dir + "/kept.state"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/saved-now.json"));
  Service s(o);
  auto list = s.op(SessionOp::List).first;
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].where, "disk");
  auto c = s.generate(" to", 8, "kept");
  Service ref;
  EXPECT_EQ(c.text, ref.generate(history + " to", 8).text);
  EXPECT_EQ(s.op(SessionOp::Delete, "saved-now").second, "");
  EXPECT_FALSE(std::filesystem::exists(dir + "/saved-now.state"));
  EXPECT_EQ(s.op(SessionOp::List).first.size(), 1u);
}

// A save writes the state (NAME.state.new), commits with the metadata and renames the state into place:
// a crash between any two steps leaves the old save or the new one whole at the next start, never the
// state of one with the pending tokens of the other.
TEST(Sessions, ACrashDuringASaveLeavesOneWholeSave) {
  namespace fs = std::filesystem;
  const std::string dir = temp_dir() + "/crash";
  ServiceOptions o = persisted(dir);
  std::string first, second, meta1, state1, meta2, state2;  // the history, metadata and state of each save
  {
    Service s(o);
    first = "The man said" + s.generate("The man said", 8, "talk").text;
    ASSERT_EQ(s.op(SessionOp::Save, "talk").second, "");
    meta1 = read_file(dir + "/talk.json");
    state1 = read_file(dir + "/talk.state");
    second = first + " and" + s.generate(" and", 8, "talk").text;
    ASSERT_EQ(s.op(SessionOp::Save, "talk").second, "");
    meta2 = read_file(dir + "/talk.json");
    state2 = read_file(dir + "/talk.state");
    EXPECT_FALSE(fs::exists(dir + "/talk.state.new"));
  }
  ASSERT_NE(state1, state2);
  auto crashed = [&](const std::string& meta, const std::string& state, const std::string& next) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    if (!meta.empty()) write_file(dir + "/talk.json", meta);
    if (!state.empty()) write_file(dir + "/talk.state", state);
    write_file(dir + "/talk.state.new", next);
  };
  Service ref;
  for (const bool committed : {false, true}) {
    crashed(committed ? meta2 : meta1, state1, state2);  // before the metadata, or before the rename
    Service s(o);
    EXPECT_EQ(s.where("talk"), "disk");
    EXPECT_FALSE(fs::exists(dir + "/talk.state.new"));
    EXPECT_EQ(s.generate(" to", 8, "talk").text, ref.generate((committed ? second : first) + " to", 8).text) << committed;
  }
  crashed(meta2, state1, state1);  // a state no save committed: skipped, not misread
  EXPECT_EQ(Service(o).where("talk"), "missing");
  crashed("", "", state1);  // a first save interrupted before its metadata: removed at start
  EXPECT_EQ(Service(o).where("talk"), "missing");
  EXPECT_FALSE(fs::exists(dir + "/talk.state.new"));
}

// When the model fails, the sessions whose states are in host memory are saved (with persist): they do
// not need the workers, and a restart continues them. Those in slots died with their stage.
TEST(Sessions, AModelFailureStillSavesTheSessionsHeldInHostMemory) {
  namespace fs = std::filesystem;
  const std::string dir = temp_dir() + "/failure";
  const ServiceOptions o = persisted(dir);
  std::string history;
  {
    Service s(o, 1);  // one slot: a second session moves the first to host memory
    history = "The man said" + s.generate("The man said", 8, "held").text;
    s.generate("Another", 8, "in-slot");
    s.model->broken = true;
    const GenerationSummary failed = s.generate(" and", 8, "in-slot");
    EXPECT_EQ(failed.finish_reason, "error");
    EXPECT_NE(failed.error.find("stage 2 died"), std::string::npos) << failed.error;
  }
  EXPECT_TRUE(fs::exists(dir + "/held.json"));
  EXPECT_FALSE(fs::exists(dir + "/in-slot.json"));
  Service s(o);
  Service ref;
  EXPECT_EQ(s.generate(" to", 8, "held").text, ref.generate(history + " to", 8).text);
}

// [sessions] idle_ttl_s: a session unused for longer is forgotten, its files too, while one in use stays;
// a saved session's idle time counts from when it was written, across a restart.
TEST(Sessions, IdleSessionsExpireWithTheirFiles) {
  namespace fs = std::filesystem;
  const std::string dir = temp_dir() + "/ttl";
  ServiceOptions o = persisted(dir);
  o.sessions.idle_ttl_s = 1;
  auto names = [](Service& s) {
    std::vector<std::string> out;
    for (auto& i : s.op(SessionOp::List).first) out.push_back(i.name + "@" + i.where);
    return out;
  };
  {
    Service s(o);
    s.generate("The man said", 4, "idle");
    ASSERT_EQ(s.op(SessionOp::Save, "idle").second, "");
    ASSERT_TRUE(fs::exists(dir + "/idle.state"));
    for (int i = 0; i < 7; ++i) {  // 3.5 s: "idle" passes its second, "kept" never does
      s.generate(" and", 2, "kept");
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    EXPECT_EQ(names(s), std::vector<std::string>{"kept@slot"});
    EXPECT_FALSE(fs::exists(dir + "/idle.state"));
    EXPECT_FALSE(fs::exists(dir + "/idle.json"));
  }  // persist: "kept" is saved at shutdown
  ASSERT_TRUE(fs::exists(dir + "/kept.json"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  Service t(o);
  EXPECT_EQ(names(t), std::vector<std::string>{"kept@disk"});  // listed, then expired at the first check
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_TRUE(names(t).empty());
  EXPECT_FALSE(fs::exists(dir + "/kept.state"));
  EXPECT_NE(t.service->metrics().prometheus().find("\nskein_sessions_expired_total 1\n"), std::string::npos);
}

// A saved session whose metadata is damaged is skipped with a warning at start, never misread: a token
// count of -1 read as 2^64 - 1, a pending token of 1.5 as 1.
TEST(Sessions, DamagedMetadataIsSkippedNotMisread) {
  std::string dir = temp_dir() + "/persist";
  ServiceOptions o = persisted(dir);
  {
    Service s(o);
    for (const char* name : {"counted", "pending", "fine"}) s.generate("The man said", 4, name);
  }
  auto edit = [&](const std::string& name, const char* key, nlohmann::json v) {
    nlohmann::json j = read_json(dir + "/" + name + ".json");
    j[key] = std::move(v);
    write_file(dir + "/" + name + ".json", j.dump());
  };
  edit("counted", "tokens", -1);
  edit("pending", "pending", nlohmann::json::array({1.5}));
  Service s(o);
  auto list = s.op(SessionOp::List).first;
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name, "fine");
}

TEST(Sessions, ErrorsAreClearAndLoseNothing) {
  Service s;
  EXPECT_NE(s.op(SessionOp::Save, "x").second.find("no [sessions] dir"), std::string::npos);
  EXPECT_NE(s.op(SessionOp::Delete, "nope").second.find("does not exist"), std::string::npos);
  EXPECT_NE(s.op(SessionOp::Delete, "../etc").second.find("not a valid session name"), std::string::npos);
  auto bad = s.generate("Hi", 3, "bad/name");
  EXPECT_EQ(bad.finish_reason, "error");
  EXPECT_NE(bad.error.find("not a valid session name"), std::string::npos);
  // A corrupted saved session is skipped with a warning at start-up, never a crash.
  std::string dir = temp_dir() + "/corrupt";
  std::filesystem::create_directories(dir);
  write_file(dir + "/broken.json", "{not json");
  write_file(dir + "/orphan.json", R"({"tokens": 3, "pending": []})");
  ServiceOptions o = persisted(dir);
  Service t(o);
  EXPECT_TRUE(t.op(SessionOp::List).first.empty());
  // Without a spill folder, a full host budget refuses the new request instead of dropping a session.
  ServiceOptions tight;
  tight.sessions.host_bytes = 1;
  Service u(tight, 1);
  EXPECT_EQ(u.generate("one", 2, "a").finish_reason, "length");
  auto r = u.generate("two", 2, "b");
  EXPECT_EQ(r.finish_reason, "error");
  EXPECT_NE(r.error.find("host budget"), std::string::npos);
  EXPECT_EQ(u.op(SessionOp::List).first.size(), 1u);  // "a" is still there
}

// A sessions folder that cannot take a spilled state (disk full, folder gone) loses nothing: the state
// stays in host memory, the request that evicted it goes on, and past the host budget new sessions are
// refused with the reason, until the folder takes states again.
TEST(Sessions, AFolderThatCannotTakeSpillsLosesNothing) {
  const std::string dir = temp_dir() + "/spill";
  ServiceOptions o;
  o.sessions.dir = dir;
  o.sessions.host_bytes = 1;  // every evicted state is spilled
  Service s(o, 1);
  auto a = s.generate("The man said", 4, "a");
  ASSERT_EQ(a.finish_reason, "length") << a.error;
  std::filesystem::remove_all(dir);
  write_file(dir, "a file where the folder was");
  EXPECT_EQ(s.generate("Another", 4, "b").finish_reason, "length");  // "a" went to host memory instead
  EXPECT_EQ(s.where("a"), "host");
  auto c = s.generate("Third", 4, "c");
  EXPECT_EQ(c.finish_reason, "error");
  EXPECT_NE(c.error.find("host budget of 1 bytes and the sessions folder cannot take more"), std::string::npos) << c.error;
  EXPECT_EQ(s.op(SessionOp::List).first.size(), 2u);
  // Dashboards see it: the service loop's gauges say the folder is failing (and later that it is not).
  const auto gauge_reads = [&](const std::string& line) {
    for (int i = 0; i < 60; ++i, std::this_thread::sleep_for(std::chrono::milliseconds(50)))
      if (s.service->metrics().prometheus().find("\n" + line + "\n") != std::string::npos) return true;
    return false;
  };
  EXPECT_TRUE(gauge_reads("skein_session_folder_failing 1"));
  // The folder is back: the states waiting in host memory go to it and new sessions start again.
  std::filesystem::remove(dir);
  std::filesystem::create_directories(dir);
  EXPECT_EQ(s.generate("Third", 4, "c").finish_reason, "length");
  EXPECT_EQ(s.where("a"), "disk");
  EXPECT_EQ(s.where("b"), "disk");
  EXPECT_TRUE(gauge_reads("skein_session_folder_failing 0"));
  auto more = s.generate(" to", 6, "a");
  Service ref;
  EXPECT_EQ(more.text, ref.generate("The man said" + a.text + " to", 6).text);
}

// The folder comes back while the host budget has room again (sessions were deleted meanwhile): the
// next eviction still tries the folder, finds it takes states, and evictions go on. (A 3-minute soak
// found this stuck: with no spill due, nothing ever wrote to the folder again, and every new session
// was refused until the server restarted.)
TEST(Sessions, AFolderThatComesBackIsUsedEvenWithinTheBudget) {
  const std::string dir = temp_dir() + "/back";
  Service ref;
  ServiceOptions o;
  o.sessions.dir = dir;
  o.sessions.host_bytes = 5 * ref.mut.model->dims().state_floats() * sizeof(float) / 2;  // two and a half states
  Service s(o, 1);
  ASSERT_EQ(s.generate("The man said", 4, "a").finish_reason, "length");
  std::filesystem::remove_all(dir);
  write_file(dir, "a file where the folder was");
  for (const char* name : {"b", "c", "d"}) ASSERT_EQ(s.generate("Another", 4, name).finish_reason, "length") << name;  // a, b, c to host
  EXPECT_EQ(s.generate("More", 4, "e").finish_reason, "error");  // d cannot move: a fourth state has no room
  EXPECT_EQ(s.op(SessionOp::Delete, "a").second, "");  // two states in host memory: within the budget, not room for a third
  std::filesystem::remove(dir);
  std::filesystem::create_directories(dir);
  auto e = s.generate("More", 4, "e");
  EXPECT_EQ(e.finish_reason, "length") << e.error;
  EXPECT_EQ(s.where("b"), "disk");
  EXPECT_EQ(s.op(SessionOp::List).first.size(), 4u);
}

// A saved session whose file cannot be read (removed, disk failing) is the server's fault, not the
// request's: the request fails with a server error that names the session (the path goes to the log),
// and the session stays listed for when its file is back.
TEST(Sessions, AnUnreadableSavedStateIsAServerErrorAndTheSessionStays) {
  const std::string dir = temp_dir() + "/unreadable";
  ServiceOptions o;
  o.sessions.dir = dir;
  o.sessions.host_bytes = 1;
  Service s(o, 1);
  ASSERT_EQ(s.generate("The man said", 4, "a").finish_reason, "length");
  ASSERT_EQ(s.generate("Another", 4, "b").finish_reason, "length");  // "a" to disk
  ASSERT_EQ(s.where("a"), "disk");
  std::filesystem::rename(dir + "/a.state", dir + "/a.state.away");
  const GenerationSummary r = s.generate(" to", 4, "a");
  EXPECT_EQ(r.finish_reason, "error");
  EXPECT_EQ(r.session_fault, SessionFault::Failed);
  EXPECT_NE(r.error.find("session 'a': its saved state cannot be read now"), std::string::npos) << r.error;
  EXPECT_EQ(r.error.find(dir), std::string::npos) << r.error;
  EXPECT_EQ(s.where("a"), "disk");
  std::filesystem::rename(dir + "/a.state.away", dir + "/a.state");
  EXPECT_EQ(s.generate(" to", 4, "a").finish_reason, "length");
}

// Saving every session to a folder that takes none (at shutdown, or every save_interval_s) says so in
// one line, however many sessions fail.
TEST(Sessions, FailedSavesAreReportedInOneLine) {
  const std::string dir = temp_dir() + "/unsaved", log = temp_dir() + "/log";
  {
    Service s(persisted(dir), 4);
    for (const char* name : {"a", "b", "c"}) ASSERT_EQ(s.generate("Hi", 2, name).finish_reason, "length");
    std::filesystem::remove_all(dir);
    write_file(dir, "a file where the folder was");
    logging::configure("info", log);
  }  // shutdown saves every session (persist)
  logging::configure("info", "");
  const std::string text = read_file(log);
  EXPECT_NE(text.find("warning: 3 sessions were not saved (session a: "), std::string::npos) << text;
  EXPECT_EQ(text.find("not saved", text.find("not saved") + 1), std::string::npos) << text;
}

// More requests than slots: the extra ones wait for a slot (in arrival order) instead of failing.
TEST(Sessions, RequestsBeyondTheSlotsWaitForOne) {
  Service s({}, 2);
  std::vector<std::promise<GenerationSummary>> done(6);
  for (size_t i = 0; i < done.size(); ++i) {
    ServiceRequest r;
    r.prompt = s.tok.encode("The man said");
    r.max_tokens = 20;
    r.sampling.temperature = 0;
    r.on_done = [&, i](const GenerationSummary& g) { done[i].set_value(g); };
    s.service->submit(std::move(r));
  }
  for (auto& d : done) {
    auto g = d.get_future().get();
    EXPECT_EQ(g.finish_reason, "length") << g.error;
    EXPECT_EQ(g.text, " to a state of the s");
  }
}

// Several samples of one prompt (OpenAI's n): a leader and its siblings, each with its own seed.
struct Samples {
  std::vector<std::promise<GenerationSummary>> done;
  std::vector<std::future<GenerationSummary>> results;
  std::promise<void> first_text;
  bool texted = false;
  ServiceRequest leader;
  Samples(Service& s, const std::string& prompt, int n, int max_tokens, float temperature) : done(size_t(n)) {
    for (auto& d : done) results.push_back(d.get_future());
    for (int i = 0; i < n; ++i) {
      ServiceRequest r;
      r.prompt = s.tok.encode(prompt);
      r.max_tokens = max_tokens;
      r.sampling.temperature = temperature;
      r.sampling.seed = uint64_t(11 + i);
      r.on_done = [this, i](const GenerationSummary& g) { done[size_t(i)].set_value(g); };
      if (i == 0) {
        r.on_delta = [this](const std::string&, const std::vector<SampledToken>&) {
          if (!texted) first_text.set_value();
          texted = true;
        };
        leader = std::move(r);
      } else {
        leader.siblings.push_back(std::move(r));
      }
    }
  }
};

// Each sample is what the same request with its seed gives alone. Siblings start from a copy of the
// leader's state (all of the prompt but its last token: cached_tokens), one prefilling alone when no
// slot is left for its copy; a one-token prompt's siblings copy the fresh state.
TEST(Samples, SiblingsSampleAsTheyWouldAloneFromOnePrefill) {
  struct Case {
    std::string prompt;
    int slots;
  };
  for (const Case& c : {Case{"The man said to the woman that it was", 8}, Case{"The man said to the woman that it was", 3}, Case{"T", 8}}) {
    SCOPED_TRACE(testing::Message() << "'" << c.prompt << "' with " << c.slots << " slots");
    Service s({}, c.slots);
    Samples samples(s, c.prompt, 4, 12, 1.0f);
    s.service->submit(std::move(samples.leader));
    Service ref;
    int shared = 0;
    for (int i = 0; i < 4; ++i) {
      GenerationSummary got = samples.results[size_t(i)].get();
      ASSERT_EQ(got.finish_reason, "length") << got.error;
      std::promise<GenerationSummary> alone;
      ServiceRequest r;
      r.prompt = ref.tok.encode(c.prompt);
      r.max_tokens = 12;
      r.sampling.temperature = 1.0f;
      r.sampling.seed = uint64_t(11 + i);
      r.on_done = [&](const GenerationSummary& g) { alone.set_value(g); };
      ref.service->submit(std::move(r));
      EXPECT_EQ(got.text, alone.get_future().get().text) << "sample " << i;
      EXPECT_EQ(got.prompt_tokens, int(c.prompt.size()));
      if (got.cached_tokens == int(c.prompt.size()) - 1 && i > 0) ++shared;
    }
    // 8 slots: every sibling copied; 3 slots: the leader's and two copies, the third prefills alone.
    EXPECT_EQ(shared, c.slots == 8 ? 3 : 2);
    EXPECT_TRUE(s.slots_all_free());
  }
}

// Samples of prompts that share a prefix still feed the prefix cache: the third such request's first
// sample starts from the cached prefix, and its siblings from its state as before.
TEST(Samples, SamplesOfPromptsWithACommonPrefixUseThePrefixCache) {
  Service s({}, 8);
  const std::string system = "System: You answer briefly and kindly, in plain words.\n\nUser: ";
  std::vector<GenerationSummary> first;
  for (const char* question : {"Who are you?", "What is a goose?", "Where is the river?"}) {
    Samples samples(s, system + question, 2, 4, 1.0f);
    s.service->submit(std::move(samples.leader));
    first.push_back(samples.results[0].get());
    EXPECT_EQ(samples.results[1].get().cached_tokens, int(system.size() + std::string(question).size()) - 1);
  }
  EXPECT_EQ(first[0].cached_tokens, 0);
  EXPECT_GE(first[2].cached_tokens, 48) << "the shared prefix, whole blocks of 16";
}

// Cancelling the leader cancels its siblings, running or not yet started.
TEST(Samples, CancellingTheLeaderCancelsItsSiblings) {
  Service s({}, 8);
  Samples samples(s, "The man said", 3, 1000000, 1.0f);
  uint64_t id = s.service->submit(std::move(samples.leader));
  samples.first_text.get_future().wait();
  s.service->cancel(id);
  for (auto& r : samples.results) EXPECT_EQ(r.get().finish_reason, "cancelled");
  EXPECT_TRUE(s.slots_all_free());
  EXPECT_EQ(s.generate("The man said", 4).finish_reason, "length");
}

// A prefix shared by several prompts is cached from its second use and hit from its third; the cached
// state gives the tokens that prefilling the prefix gives.
TEST(PrefixCache, SharedPrefixesAreHitAndChangeNothing) {
  ServiceOptions on, off;
  on.cache.block_tokens = 8;
  off.cache.prefix_bytes = 0;
  Service cached(on), plain(off);
  const std::string system = "You are a helpful assistant who answers briefly. ";
  std::vector<int> hits;
  for (int i = 0; i < 5; ++i) {
    std::string p = system + "Question " + std::to_string(i) + ":";
    auto a = cached.generate(p, 10), b = plain.generate(p, 10);
    EXPECT_EQ(a.text, b.text) << i;
    hits.push_back(a.cached_tokens);
    EXPECT_EQ(b.cached_tokens, 0);
  }
  EXPECT_EQ(hits[0], 0);
  EXPECT_EQ(hits[1], 0);
  for (int i = 2; i < 5; ++i) {
    EXPECT_GE(hits[size_t(i)], 40) << i;
    EXPECT_EQ(hits[size_t(i)] % 8, 0);
  }
  std::string m = cached.service->metrics().prometheus();
  EXPECT_NE(m.find("skein_cached_prompt_tokens_total"), std::string::npos);
}

TEST(PrefixCache, LruStaysWithinItsBudget) {
  PrefixCache c(3 * (100 * sizeof(float) + 8 * sizeof(int32_t)), 8);
  std::vector<int32_t> p(20);
  for (int k = 0; k < 5; ++k) {
    for (int i = 0; i < 20; ++i) p[size_t(i)] = k * 100 + i;
    c.insert(0, std::span<const int32_t>(p.data(), 8), std::vector<float>(100, float(k)));
  }
  auto st = c.stats();
  EXPECT_EQ(st.entries, 3u);
  EXPECT_EQ(st.evictions, 2u);
  EXPECT_LE(st.bytes, 3 * (100 * sizeof(float) + 8 * sizeof(int32_t)));
  auto hit = c.lookup(0, p);  // the newest (k = 4) is there
  EXPECT_EQ(hit.tokens, 8u);
  EXPECT_EQ((*hit.state)[0], 4.0f);
  for (int i = 0; i < 20; ++i) p[size_t(i)] = i;  // k = 0 was evicted
  EXPECT_EQ(c.lookup(0, p).tokens, 0u);
}

// The same tokens run from another start state (a tuned state) lead to another state: a prefix is
// found only from the start state it was cached from.
TEST(PrefixCache, APrefixIsKeyedByItsStartState) {
  PrefixCache c(1 << 20, 4);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5, 6};
  c.insert(2, std::span<const int32_t>(p.data(), 4), std::vector<float>(10, 2.0f));
  EXPECT_EQ(c.lookup(0, p).tokens, 0u);
  EXPECT_EQ(c.lookup(1, p).tokens, 0u);
  auto hit = c.lookup(2, p);
  ASSERT_EQ(hit.tokens, 4u);
  EXPECT_EQ((*hit.state)[0], 2.0f);
  // Boundaries seen from one start state are not snapshot points for another.
  EXPECT_EQ(c.snapshot_point(0, std::vector<int32_t>{9, 9, 9, 9, 9}, 0), 0u);
  EXPECT_EQ(c.snapshot_point(1, std::vector<int32_t>{9, 9, 9, 9, 9}, 0), 0u);
  EXPECT_EQ(c.snapshot_point(0, std::vector<int32_t>{9, 9, 9, 9, 9}, 0), 4u);
}

}  // namespace
}  // namespace skein::test
