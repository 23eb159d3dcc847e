// Priorities and preemption: a waiting request more urgent than a running one takes its slot; the running
// one's state is parked in host memory and it goes on, once a slot is free, exactly as if it had never
// stopped (its tokens are the ones it gets alone). Parking asks nothing of the model but moving a state.
#include <gtest/gtest.h>

#include <mutex>

#include "coordinator/scheduler.h"
#include "net/api_request.h"
#include "net/openai_request.h"
#include "tests/server_harness.h"
#include "tests/service_harness.h"

namespace skein::test {
namespace {

// What each request gave, and the order they finished in.
struct Outcomes {
  std::mutex mu;
  std::vector<std::string> order;
  std::map<std::string, std::promise<GenerationSummary>> done;
  std::map<std::string, std::shared_future<GenerationSummary>> results;
  explicit Outcomes(std::initializer_list<const char*> names) {
    for (const char* n : names) results[n] = done[n].get_future().share();
  }
  std::function<void(const GenerationSummary&)> on_done(const std::string& name) {
    return [this, name](const GenerationSummary& s) {
      {
        std::lock_guard<std::mutex> lock(mu);
        order.push_back(name);
      }
      done[name].set_value(s);
    };
  }
  GenerationSummary get(const std::string& name) { return results[name].get(); }
};

ServiceRequest sampled(Service& s, const std::string& prompt, int max_tokens, int priority, uint64_t seed = 3) {
  ServiceRequest r;
  r.prompt = s.tok.encode(prompt);
  r.max_tokens = max_tokens;
  r.priority = priority;
  r.sampling.temperature = 1.0f;
  r.sampling.top_p = 0.9f;
  r.sampling.alpha_presence = 0.3f;
  r.sampling.alpha_frequency = 0.3f;
  r.sampling.seed = seed;
  return r;
}

// The text a request gives alone, on a service of its own.
std::string alone(ServiceRequest r) {
  Service ref;
  std::promise<GenerationSummary> done;
  r.priority = 0;
  r.on_delta = nullptr;
  r.on_done = [&](const GenerationSummary& g) { done.set_value(g); };
  ref.service->submit(std::move(r));
  GenerationSummary g = done.get_future().get();
  EXPECT_EQ(g.preemptions, 0);
  return g.text;
}

// With one slot: "low" runs; once it has 10 tokens, "urgent" (priority 0) and "later" (priority 5, as
// low's) arrive. Urgent preempts low and finishes first; low resumes before later (it came first) and
// its text is what it gives alone; later waits its turn, never preempting anyone of its own priority.
TEST(Preemption, AnUrgentRequestRunsFirstAndThePreemptedOneLosesNothing) {
  for (ResponseFormat format : {ResponseFormat::Text, ResponseFormat::JsonSchema}) {
    SCOPED_TRACE(format == ResponseFormat::Text ? "text" : "JSON Schema");
    Outcomes out{"low", "urgent", "later"};  // first: it outlives the service's thread, which calls into it
    Service s({}, 1);
    ServiceRequest low = sampled(s, "The man said", 120, 5), urgent = sampled(s, "It was", 30, 0, 9), later = sampled(s, "A", 20, 5, 4);
    low.sampling.format = format;  // the schema's reply is long enough to be running when urgent comes
    low.sampling.json_schema = R"({"type": "object", "properties": {"text": {"type": "string", "minLength": 40}}, "required": ["text"]})";
    const ServiceRequest low_alone = low, urgent_alone = urgent, later_alone = later;
    low.on_done = out.on_done("low");
    urgent.on_done = out.on_done("urgent");
    later.on_done = out.on_done("later");
    int low_tokens = 0;
    low.on_delta = [&, urgent, later](const std::string&, const std::vector<SampledToken>& tokens) mutable {
      low_tokens += int(tokens.size());
      if (low_tokens >= 10 && urgent.on_done) {  // on the service thread, between steps
        s.service->submit(std::move(urgent));
        s.service->submit(std::move(later));
        urgent.on_done = nullptr;
      }
    };
    s.service->submit(std::move(low));
    GenerationSummary l = out.get("low"), u = out.get("urgent"), t = out.get("later");
    ASSERT_TRUE(l.finish_reason == "length" || l.finish_reason == "format_complete") << l.finish_reason << " " << l.error;
    EXPECT_EQ(out.order, (std::vector<std::string>{"urgent", "low", "later"}));
    EXPECT_EQ(l.preemptions, 1);
    EXPECT_EQ(u.preemptions, 0);
    EXPECT_EQ(t.preemptions, 0);
    EXPECT_EQ(l.text, alone(low_alone));
    EXPECT_EQ(u.text, alone(urgent_alone));
    EXPECT_EQ(t.text, alone(later_alone));
    if (l.finish_reason == "format_complete") {
      EXPECT_GE(nlohmann::json::parse(l.text)["text"].get<std::string>().size(), 40u) << l.text;
    }
    EXPECT_TRUE(s.slots_all_free());
    EXPECT_EQ(s.service->parked(), 0u);
    const std::string metrics = s.service->metrics().prometheus();
    EXPECT_NE(metrics.find("\nskein_preemptions_total 1\n"), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("\nskein_requests_parked 0\n"), std::string::npos) << metrics;
  }
}

// Runs `low` alone on a one-slot service and, once it has generated, submits `urgent` beside it.
struct Parking {
  Outcomes out{"low", "urgent"};  // first: it outlives the service's thread, which calls into it
  std::promise<void> urgent_sent;
  Service s;
  // `session`: low continues that session.
  explicit Parking(ServiceOptions o = {}, const std::string& session = "") : s(std::move(o), 1) {
    ServiceRequest low = sampled(s, "The man said", 3000, 1), urgent = sampled(s, "It was", 2000, 0);
    low.session = session;
    low.on_done = out.on_done("low");
    urgent.on_done = out.on_done("urgent");
    low.on_delta = [this, urgent](const std::string&, const std::vector<SampledToken>&) mutable {
      if (!urgent.on_done) return;
      s.service->submit(std::move(urgent));
      urgent.on_done = nullptr;
      urgent_sent.set_value();
    };
    s.service->submit(std::move(low));
    urgent_sent.get_future().get();
  }
  // Until low is parked (or `seconds` pass).
  bool low_parked(double seconds = 10) {
    for (int i = 0; i < int(seconds * 100) && s.service->parked() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return s.service->parked() == 1;
  }
};

// A parked request can be cancelled; its state is dropped and nothing leaks.
TEST(Preemption, AParkedRequestCanBeCancelled) {
  Parking p;
  ASSERT_TRUE(p.low_parked());
  p.s.service->cancel(1);  // low was the first request
  GenerationSummary l = p.out.get("low");
  EXPECT_EQ(l.finish_reason, "cancelled");
  EXPECT_EQ(l.preemptions, 1);
  EXPECT_EQ(p.out.get("urgent").finish_reason, "length");
  EXPECT_EQ(p.out.order.front(), "low");
  EXPECT_TRUE(p.s.slots_all_free());
  EXPECT_EQ(p.s.service->parked(), 0u);
  EXPECT_NE(p.s.service->metrics().prometheus().find("\nskein_parked_bytes 0\n"), std::string::npos);
}

// Stopping the server ends a parked request "cancelled", as it ends running ones.
TEST(Preemption, StoppingEndsParkedRequests) {
  auto p = std::make_unique<Parking>();
  ASSERT_TRUE(p->low_parked());
  auto low = p->out.results["low"], urgent = p->out.results["urgent"];
  p->s.service->stop();
  EXPECT_EQ(low.get().finish_reason, "cancelled");
  EXPECT_EQ(urgent.get().finish_reason, "cancelled");
}

// A model failure ends a parked request with the error, as it ends running ones.
TEST(Preemption, AModelFailureEndsParkedRequestsWithTheError) {
  Parking p;
  ASSERT_TRUE(p.low_parked());
  p.s.model->broken = true;
  GenerationSummary l = p.out.get("low");
  EXPECT_EQ(l.finish_reason, "error");
  EXPECT_NE(l.error.find("stage 2 died"), std::string::npos) << l.error;
  EXPECT_EQ(p.out.get("urgent").finish_reason, "error");
}

// [scheduler] parked_bytes bounds the host memory parked states take: with no room for one, nothing is
// preempted and the urgent request waits for the slot.
TEST(Preemption, NoRoomForAParkedStateMeansNoPreemption) {
  ServiceOptions o;
  o.scheduler.parked_bytes = 0;
  Parking p(o);
  EXPECT_FALSE(p.low_parked(0.5));
  p.s.service->cancel(1);
  EXPECT_EQ(p.out.get("low").preemptions, 0);
  EXPECT_EQ(p.out.get("urgent").finish_reason, "length");
  EXPECT_EQ(p.out.order, (std::vector<std::string>{"low", "urgent"}));
}

// A session's turn is parked like any request (its session stays busy meanwhile) and the conversation
// goes on as if it never was: both turns give what they give unpreempted.
TEST(Preemption, ASessionsTurnIsParkedAndTheConversationGoesOnUnchanged) {
  auto conversation = [](bool preempt) {
    Outcomes out{"turn 1", "urgent", "turn 2"};
    Service s({}, 1);
    ServiceRequest turn1 = sampled(s, "The man said", 120, 5), urgent = sampled(s, "It was", 30, 0), turn2 = sampled(s, " and then", 30, 5, 8);
    turn1.session = turn2.session = "chat";
    turn1.on_done = out.on_done("turn 1");
    urgent.on_done = out.on_done("urgent");
    turn2.on_done = out.on_done("turn 2");
    int tokens = 0;
    turn1.on_delta = [&, urgent](const std::string&, const std::vector<SampledToken>& t) mutable {
      tokens += int(t.size());
      if (preempt && tokens >= 10 && urgent.on_done) {
        s.service->submit(std::move(urgent));
        urgent.on_done = nullptr;
      }
    };
    s.service->submit(std::move(turn1));
    const GenerationSummary first = out.get("turn 1");
    EXPECT_EQ(first.preemptions, preempt ? 1 : 0);
    if (preempt) {
      EXPECT_EQ(out.get("urgent").finish_reason, "length");
      EXPECT_EQ(out.order.front(), "urgent");
    }
    s.service->submit(std::move(turn2));
    const GenerationSummary second = out.get("turn 2");
    EXPECT_EQ(second.finish_reason, "length") << second.error;
    EXPECT_EQ(second.session_tokens, first.session_tokens + 9 + 30);
    return first.text + "|" + second.text;
  };
  EXPECT_EQ(conversation(true), conversation(false));
}

// A session whose parked turn is cancelled, or whose server stops or model fails meanwhile, keeps its
// state: it comes back from the parked request, the turn's tokens counted, so the session goes on (and
// is saved: the parked state is in host memory, which outlives the stages).
TEST(Preemption, AParkedSessionLosesNothingWhenItsTurnEnds) {
  {
    Parking p({}, "chat");
    ASSERT_TRUE(p.low_parked());
    EXPECT_EQ(p.s.where("chat"), "parked");
    std::string metrics;  // the gauges refresh every 250 ms, while the urgent request runs on
    for (int i = 0; i < 40 && metrics.find("\nskein_requests_parked 1\n") == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
      metrics = p.s.service->metrics().prometheus();
    }
    EXPECT_NE(metrics.find("\nskein_requests_parked 1\n"), std::string::npos) << metrics;
    EXPECT_NE(metrics.find("\nskein_sessions{where=\"parked\"} 1\n"), std::string::npos) << metrics;
    p.s.service->cancel(1);
    const GenerationSummary cancelled = p.out.get("low");
    EXPECT_EQ(cancelled.finish_reason, "cancelled");
    EXPECT_EQ(cancelled.session_tokens, 12u + uint64_t(cancelled.completion_tokens));
    EXPECT_EQ(p.s.where("chat"), "host");
    GenerationSummary next = p.s.generate(" and", 5, "chat");
    EXPECT_EQ(next.finish_reason, "length") << next.error;
    EXPECT_EQ(next.session_tokens, cancelled.session_tokens + 4 + 5);
  }
  for (bool failure : {false, true}) {
    SCOPED_TRACE(failure ? "the model fails" : "the server stops");
    const std::string dir = temp_dir() + (failure ? "/parked-failure" : "/parked-stop");
    uint64_t tokens = 0;
    {
      auto p = std::make_unique<Parking>(persisted(dir), "chat");
      ASSERT_TRUE(p->low_parked());
      auto low = p->out.results["low"];
      if (failure) p->s.model->broken = true;  // the urgent request's next step fails
      else p->s.service->stop();
      EXPECT_EQ(low.get().finish_reason, failure ? "error" : "cancelled");
      tokens = low.get().session_tokens;
    }
    Service restarted(persisted(dir), 1);
    EXPECT_EQ(restarted.where("chat"), "disk");
    const GenerationSummary next = restarted.generate(" and", 5, "chat");
    EXPECT_EQ(next.finish_reason, "length") << next.error;
    if (!failure) {
      EXPECT_EQ(next.session_tokens, tokens + 4 + 5);
    }
  }
}

// The scheduler's part: a request parked in the middle of its prompt hands over the rest (the prompt
// not yet fed, its snapshots moved along); run on another slot holding the parked state, the rest gives
// the tokens and the snapshot the whole request gives, with penalties and a seeded draw.
TEST(Preemption, ARequestParkedMidPromptGoesOnFromItsState) {
  auto mut = load_for_test(shared_dir() + "/models/tiny-rwkv-7v0-834K.pth");
  ByteTokenizer tok;
  const std::vector<int32_t> prompt = tok.encode("It was a dark and stormy night, and the rain fell in torrents");
  auto request = [&](std::vector<int32_t>& tokens, std::vector<float>& snapshot, LocalModel& model) {
    ScheduledRequest r;
    r.prompt = prompt;
    r.max_tokens = 40;
    r.sampling.temperature = 1.0f;
    r.sampling.alpha_presence = 0.5f;
    r.sampling.seed = 17;
    r.on_token = [&](const SampledToken& t) { tokens.push_back(t.token); };
    r.snapshots.push_back({40, [&](int slot) { snapshot = model.export_state(slot); }});
    return r;
  };
  std::vector<int32_t> whole_tokens, parked_tokens;
  std::vector<float> whole_snapshot, parked_snapshot;
  {
    LocalModel local(*mut.model, 4);
    Scheduler sched(local, 8, 8, penalty_free_tokens(tok, 256));
    sched.submit(request(whole_tokens, whole_snapshot, local));
    sched.run_until_idle();
  }
  LocalModel local(*mut.model, 4);
  Scheduler sched(local, 8, 8, penalty_free_tokens(tok, 256));
  const uint64_t handle = sched.submit(request(parked_tokens, parked_snapshot, local));
  sched.step();
  sched.step();  // 16 of the prompt's 62 tokens are in
  bool handed = false;
  sched.park(handle, [&](ScheduledRequest rest, int slot) {
    handed = true;
    EXPECT_EQ(rest.prompt, std::vector<int32_t>(prompt.begin() + 16, prompt.end()));
    EXPECT_EQ(rest.max_tokens, 40);
    ASSERT_EQ(rest.snapshots.size(), 1u);
    EXPECT_EQ(rest.snapshots[0].at, 24u);
    std::vector<float> state = local.export_state(slot);
    local.close_session(slot);
    rest.slot = local.open_session();
    local.import_state(rest.slot, state);
    rest.on_release = [&local, s = rest.slot](std::vector<int32_t>) { local.close_session(s); };
    sched.submit(std::move(rest));
  });
  sched.run_until_idle();
  ASSERT_TRUE(handed);
  EXPECT_EQ(parked_tokens, whole_tokens);
  EXPECT_EQ(parked_snapshot, whole_snapshot);
  EXPECT_EQ(local.free_slots(), 4);
}

// Both protocols take "priority" (vLLM's name): any 32-bit integer, lower first. HTTP also takes OpenAI's
// service_tier.
TEST(Preemption, PriorityIsAnIntegerInBothProtocols) {
  ByteTokenizer tok;
  ApiLimits limits;
  ChatConfig chat;
  // The priority a request with these fields beside its prompt gets, or the error.
  auto tcp = [&](const std::string& fields) {
    try {
      return std::to_string(parse_api_line(R"({"id": "a", "prompt": "x", )" + fields + "}", tok, 256, limits).generate->priority);
    } catch (const Error& e) {
      return std::string(e.what());
    }
  };
  auto http = [&](const std::string& fields) {
    try {
      return std::to_string(parse_openai_request(R"({"prompt": "x", )" + fields + "}", false, tok, 256, limits, chat).priority);
    } catch (const Error& e) {
      return std::string(e.what());
    }
  };
  for (auto& parse : {std::function<std::string(const std::string&)>(tcp), std::function<std::string(const std::string&)>(http)}) {
    EXPECT_EQ(parse(R"("priority": -3)"), "-3");
    EXPECT_EQ(parse(R"("priority": 7)"), "7");
    EXPECT_EQ(parse(R"("priority": "high")"), "priority: must be an integer");
    EXPECT_EQ(parse(R"("priority": 1.5)"), "priority: must be an integer");
    EXPECT_EQ(parse(R"("priority": 4294967296)"), "priority: must be between -2147483648 and 2147483647, got 4294967296");
  }
  // OpenAI's service tiers map to priorities; vLLM's explicit priority wins.
  EXPECT_EQ(http(R"("service_tier": "priority")"), "-1");
  EXPECT_EQ(http(R"("service_tier": "flex")"), "1");
  EXPECT_EQ(http(R"("service_tier": "auto")"), "0");
  EXPECT_EQ(http(R"("service_tier": "default")"), "0");
  EXPECT_EQ(http(R"("service_tier": "flex", "priority": -7)"), "-7");
  EXPECT_EQ(http(R"("service_tier": "gold")"), "service_tier: 'gold' is not auto, default, flex, scale or priority");
  EXPECT_EQ(http(R"("service_tier": 1)"), "service_tier: must be a string");
}

// End to end on a server with one slot, alone and as a 3-rank cluster (the parked state comes from both
// stages, the draws so far go to the last one): an urgent request sent while a long one streams is
// answered first; the long one's final event says it was parked once, and its text is what the same
// request gives alone. Alone, the urgent request comes over HTTP with priority -1 (the long one has the
// default 0); on the cluster, over TCP with the default (the long one asks for 1).
TEST(Preemption, TheServerAnswersTheUrgentRequestFirst) {
  const std::string cfg = temp_dir() + "/one-slot.toml";
  write_file(cfg, "[scheduler]\nmax_slots = 1\n[cache]\nprefix_bytes = \"0\"\n");
  for (int ranks : {1, 3}) {
    SCOPED_TRACE(testing::Message() << ranks << " rank(s)");
    Server server("--config " + cfg, ranks);
    ASSERT_GT(server.port(), 0) << server.output();
    Client c(server.port());
    const std::string long_request = R"("prompt": "The man said", "max_tokens": 1000, "temperature": 0.8, "alpha_frequency": 0.3, "seed": 5)";
    c.send(R"({"id": "long", )" + std::string(ranks == 1 ? "" : R"("priority": 1, )") + long_request + "}");
    nlohmann::json first = c.event();
    ASSERT_EQ(first["event"], "delta");
    std::vector<std::string> finished;
    if (ranks == 1) {
      HttpReply urgent = http_request(server.http_port(), "POST", "/v1/completions",
                                      R"({"prompt": "It was", "max_tokens": 10, "temperature": 0, "priority": -1})");
      ASSERT_EQ(urgent.status, 200) << urgent.body;
      EXPECT_EQ(urgent.json()["usage"]["completion_tokens"], 10);
      finished.push_back("urgent");
    } else {
      c.send(R"({"id": "urgent", "prompt": "It was", "max_tokens": 10, "temperature": 0, "stream": false})");
    }
    nlohmann::json long_done;
    std::string long_text = first["text"];
    while (finished.size() < 2) {
      nlohmann::json e = c.event();
      ASSERT_FALSE(e.is_null()) << "no final event";
      if (e["event"] == "delta") {
        long_text += e["text"].get<std::string>();
        continue;
      }
      finished.push_back(e["id"]);
      if (e["id"] == "long") long_done = e;
    }
    EXPECT_EQ(finished, (std::vector<std::string>{"urgent", "long"}));
    EXPECT_EQ(long_done["finish_reason"], "length");
    EXPECT_EQ(long_done["completion_tokens"], 1000);
    EXPECT_EQ(long_done["preemptions"], 1);
    c.send(R"({"id": "alone", "stream": false, )" + long_request + "}");
    auto alone = c.until_done("alone");
    ASSERT_FALSE(alone.empty());
    EXPECT_FALSE(alone.back().contains("preemptions"));
    EXPECT_EQ(alone.back()["text"], long_text);
  }
}

}  // namespace
}  // namespace skein::test
