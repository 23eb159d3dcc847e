// `skein bench --server HOST:PORT`: a load generator for a running server. N clients, each on its own
// connection, send streaming requests back to back for the given time; every response is checked
// (events in order, whole UTF-8 text, token counts that add up, a final event) and counted as completed,
// refused (an explicit error such as overloaded) or lost. Reports throughput and the p50/p99 of time to
// first token and inter-token latency. With --samples every request asks for that many samples of its
// prompt (n; each sample's events checked on their own), and --prompt-tokens sends long token prompts,
// each request's different, so the prefix cache cannot stand in for the prefill. --json and
// --json-schema load-test structured output: every reply that closes its object must parse (and, with a
// schema, be one of its texts). --urgent K makes K of the clients send priority -1 and reports their
// time to first token and request latency beside the others'.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/json_text.h"
#include "coordinator/json_grammar.h"
#include "model/tokenizer.h"
#include "net/api_client.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

namespace {

using Clock = std::chrono::steady_clock;

struct ClientTally {
  uint64_t completed = 0, refused = 0, lost = 0, garbled = 0, tokens = 0, event_bytes = 0;
  uint64_t json_objects = 0, json_cut = 0;  // with --json: samples that closed their object, and ones cut by max_tokens
  std::vector<double> ttft, itl, latency;  // seconds; latency: request sent to its last event
  std::string first_problem;
};

const char* kPrompts[] = {"The man said", "It was a dark and stormy night", "Once upon a time", "\nIn the beginning", "The quick brown fox",
                          "She opened the door and", "The results of the study", "A long time ago in a"};

// What every request asks for as its response_format, and the schema its replies are checked against.
struct Format {
  nlohmann::ordered_json response_format;  // null: none
  std::unique_ptr<JsonSchema> schema;
};

void run_client(const ServerBenchOptions& o, const Format& format, int index, Clock::time_point until, ClientTally& t) {
  auto problem = [&](const std::string& what) {
    if (t.first_problem.empty()) t.first_problem = "client " + std::to_string(index) + ": " + what;
  };
  std::unique_ptr<ApiClient> c;
  uint64_t n = 0;
  const size_t samples = size_t(o.samples);
  while (Clock::now() < until) {
    try {
      if (!c) c = std::make_unique<ApiClient>(o.server);
      std::string id = std::to_string(index) + "-" + std::to_string(n);
      const int seed = index * 100000 + int(n);
      nlohmann::ordered_json req = {{"id", id}, {"max_tokens", o.max_tokens}, {"temperature", 0.8}, {"top_p", 0.9}, {"seed", seed}, {"stream", true}};
      if (o.prompt_tokens > 0) {
        std::vector<int> ids(size_t(o.prompt_tokens));  // printable bytes: valid ids of every vocabulary
        for (size_t j = 0; j < ids.size(); ++j) ids[j] = 32 + int((uint64_t(seed) * 31 + j * 7 + j / 5) % 95);
        req["tokens"] = ids;
      } else {
        req["prompt"] = kPrompts[(size_t(index) + n) % std::size(kPrompts)];
      }
      if (samples > 1) req["n"] = samples;
      if (o.logprobs >= 0) req["logprobs"] = o.logprobs;
      if (!o.tuned_state.empty()) req["model"] = o.tuned_state;
      if (!format.response_format.is_null()) req["response_format"] = format.response_format;
      if (index < o.urgent) req["priority"] = -1;
      ++n;
      auto sent = Clock::now();
      c->send(req);
      // Per sample: when its last tokens came, whether it has had any, how many; then how the request ended.
      std::vector<Clock::time_point> last(samples, sent);
      std::vector<bool> first(samples, true);
      std::vector<uint64_t> tokens(samples, 0);
      std::vector<std::string> texts(samples);
      uint64_t objects = 0, cut = 0;
      size_t ended = 0;
      bool bad = false, refused = false, turned_away = false;
      while (ended < samples && !bad) {
        nlohmann::json e = c->next_event();
        t.event_bytes += json_text(e).size() + 1;  // as compact JSON, as the server writes it
        if (refuses_the_connection(e)) {
          refused = turned_away = true;
          break;
        }
        if (e.value("id", nlohmann::json()) != id) {
          bad = true;
          problem("an event for another request: " + e.dump().substr(0, 200));
          break;
        }
        const size_t i = samples > 1 ? e.value("index", samples) : 0;
        if (i >= samples) {
          bad = true;
          problem("an event without a sample index: " + e.dump().substr(0, 200));
          break;
        }
        auto now = Clock::now();
        if (e["event"] == "delta") {
          // A delta may carry no token ids: a character left unfinished at the end is released as
          // U+FFFD after its token was already reported.
          size_t k = e["tokens"].size();
          const std::string text = e["text"];
          if (text.empty() || !is_utf8(text)) {
            bad = true;
            problem("a delta with empty or broken text: " + e.dump().substr(0, 200));
          }
          if (o.logprobs >= 0 && (!e.contains("logprobs") || e["logprobs"].size() != k)) {
            bad = true;
            problem("a delta whose logprobs do not match its tokens: " + e.dump().substr(0, 200));
          }
          texts[i] += text;
          if (k == 0) continue;
          double gap = std::chrono::duration<double>(now - last[i]).count();
          if (first[i]) t.ttft.push_back(gap);
          else
            for (size_t m = 0; m < k; ++m) t.itl.push_back(gap / double(k));
          first[i] = false;
          last[i] = now;
          tokens[i] += k;
        } else if (e["event"] == "done") {
          if (e["completion_tokens"].get<uint64_t>() != tokens[i]) {
            bad = true;
            problem("done says " + e["completion_tokens"].dump() + " tokens, deltas carried " + std::to_string(tokens[i]));
          }
          if (o.json && e["finish_reason"] == "format_complete") {
            const auto parsed = nlohmann::json::parse(texts[i], nullptr, false);
            if (!parsed.is_object()) {
              bad = true;
              problem("a JSON-mode reply that is not a JSON object: " + texts[i].substr(0, 200));
            } else if (format.schema) {
              JsonRecognizer r(*format.schema);
              if (!(r.push(texts[i]) && r.complete())) {
                bad = true;
                problem("a reply that is not one of the schema's texts: " + texts[i].substr(0, 200));
              }
            }
            ++objects;
          } else if (o.json) {
            ++cut;
          }
          ++ended;
        } else if (e["event"] == "error") {
          refused = true;  // explicit: overloaded, or a limit
          ++ended;
        } else {
          bad = true;
          problem("unknown event " + e.dump().substr(0, 200));
        }
      }
      if (bad) {
        ++t.garbled;
        c.reset();  // the connection's event stream can no longer be trusted
      } else if (refused) {
        ++t.refused;
        if (turned_away) {
          c.reset();
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      } else {
        ++t.completed;
        t.latency.push_back(std::chrono::duration<double>(Clock::now() - sent).count());
        for (uint64_t k : tokens) t.tokens += k;
        t.json_objects += objects;
        t.json_cut += cut;
      }
    } catch (const Error& e) {
      ++t.lost;
      problem(e.what());
      c.reset();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t k = std::min(v.size() - 1, size_t(p * double(v.size())));
  std::nth_element(v.begin(), v.begin() + long(k), v.end());
  return v[k];
}

}  // namespace

void run_server_bench(const ServerBenchOptions& o) {
  if (o.clients < 1 || o.seconds <= 0 || o.max_tokens < 1) fail("bench --server: --clients, --duration and --max-tokens must be positive");
  if (o.urgent >= o.clients) fail("bench --server: --urgent ", o.urgent, " leaves no other client of ", o.clients);
  Format format;
  if (!o.json_schema.empty()) {
    const nlohmann::ordered_json schema = read_json_schema_file(o.json_schema);
    format.schema = std::make_unique<JsonSchema>(schema);
    format.response_format = json_schema_format("bench", schema);
  } else if (o.json) {
    format.response_format = {{"type", "json_object"}};
  }
  ApiClient probe(o.server);  // fails at once, naming the address, when nothing listens there
  std::vector<ClientTally> tally(static_cast<size_t>(o.clients));
  auto start = Clock::now();
  auto until = start + std::chrono::milliseconds(int64_t(o.seconds * 1000));
  std::vector<std::thread> threads;
  for (int i = 0; i < o.clients; ++i) threads.emplace_back(run_client, std::cref(o), std::cref(format), i, until, std::ref(tally[size_t(i)]));
  for (auto& t : threads) t.join();
  double wall = std::chrono::duration<double>(Clock::now() - start).count();
  ClientTally all, urgent, others;
  for (size_t i = 0; i < tally.size(); ++i) {
    const ClientTally& t = tally[i];
    ClientTally& group = int(i) < o.urgent ? urgent : others;
    group.ttft.insert(group.ttft.end(), t.ttft.begin(), t.ttft.end());
    group.latency.insert(group.latency.end(), t.latency.begin(), t.latency.end());
    group.completed += t.completed;
    all.completed += t.completed;
    all.refused += t.refused;
    all.lost += t.lost;
    all.garbled += t.garbled;
    all.tokens += t.tokens;
    all.event_bytes += t.event_bytes;
    all.json_objects += t.json_objects;
    all.json_cut += t.json_cut;
    all.ttft.insert(all.ttft.end(), t.ttft.begin(), t.ttft.end());
    all.itl.insert(all.itl.end(), t.itl.begin(), t.itl.end());
    if (all.first_problem.empty()) all.first_problem = t.first_problem;
  }
  std::printf("bench --server %s: %d streaming clients%s for %.1f s, max_tokens %d, %d sample%s of %s prompts%s%s%s\n", o.server.c_str(), o.clients,
              o.urgent > 0 ? (" (" + std::to_string(o.urgent) + " urgent)").c_str() : "",
              wall, o.max_tokens, o.samples, o.samples == 1 ? "" : "s",
              o.prompt_tokens > 0 ? (std::to_string(o.prompt_tokens) + "-token").c_str() : "short text",
              o.logprobs >= 0 ? (", logprobs " + std::to_string(o.logprobs)).c_str() : "",
              o.tuned_state.empty() ? "" : (", from tuned state " + o.tuned_state).c_str(),
              !o.json_schema.empty() ? (", JSON Schema " + o.json_schema).c_str() : o.json ? ", JSON mode" : "");
  std::printf("  requests: %llu completed, %llu refused explicitly, %llu lost, %llu garbled\n", (unsigned long long)all.completed,
              (unsigned long long)all.refused, (unsigned long long)all.lost, (unsigned long long)all.garbled);
  std::printf("  throughput: %.1f tokens/s out, %.2f requests/s\n", double(all.tokens) / wall, double(all.completed) / wall);
  if (o.json)
    std::printf("  JSON mode: %llu replies closed their object (every one parsed%s), %llu were cut by max_tokens\n", (unsigned long long)all.json_objects,
                format.schema ? " and was one of the schema's texts" : "", (unsigned long long)all.json_cut);
  std::printf("  events: %.0f bytes per generated token, %.0f per completed request\n", all.tokens ? double(all.event_bytes) / double(all.tokens) : 0.0,
              all.completed ? double(all.event_bytes) / double(all.completed) : 0.0);
  std::printf("  time to first token: p50 %.1f ms, p99 %.1f ms\n", 1e3 * percentile(all.ttft, 0.5), 1e3 * percentile(all.ttft, 0.99));
  std::printf("  inter-token latency: p50 %.2f ms, p99 %.2f ms\n", 1e3 * percentile(all.itl, 0.5), 1e3 * percentile(all.itl, 0.99));
  if (o.urgent > 0)
    for (auto [name, g] : {std::pair{"urgent (priority -1)", &urgent}, std::pair{"the others", &others}})
      std::printf("  %s: %llu completed; time to first token p50 %.1f ms, p99 %.1f ms; request p50 %.1f ms, p99 %.1f ms\n", name,
                  (unsigned long long)g->completed, 1e3 * percentile(g->ttft, 0.5), 1e3 * percentile(g->ttft, 0.99), 1e3 * percentile(g->latency, 0.5),
                  1e3 * percentile(g->latency, 0.99));
  if (!all.first_problem.empty()) std::printf("  first problem: %s\n", all.first_problem.c_str());
  if (all.lost || all.garbled) fail("bench --server: ", all.lost, " responses lost and ", all.garbled, " garbled");
}

}  // namespace skein::cli
