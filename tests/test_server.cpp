// The TCP API end to end: the examples of docs/protocol.md replayed, concurrent clients, cancellation,
// disconnects, bad input that must not disturb other clients, and a clean SIGTERM.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <tuple>

#include "common/error.h"
#include "coordinator/config.h"
#include "model/tokenizer.h"
#include "net/api_client.h"
#include "net/api_request.h"
#include "tests/fuzz/corruptor.h"
#include "tests/server_harness.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

TEST(Server, ProtocolDocExamplesReplay) {
  Server server;
  ASSERT_GT(server.port(), 0) << server.output();
  Client c(server.port());
  std::ifstream doc(std::string(SKEIN_SOURCE_DIR) + "/docs/protocol.md");
  std::string l;
  int sent = 0, checked = 0;
  while (std::getline(doc, l)) {
    if (l.rfind("> ", 0) == 0) {
      c.send(l.substr(2));
      ++sent;
    } else if (l.rfind("< ", 0) == 0) {
      auto want = nlohmann::json::parse(l.substr(2));
      auto got = c.event();
      ASSERT_FALSE(got.is_null()) << "no event for " << l << "\n" << server.output();
      for (auto& [k, v] : want.items()) EXPECT_EQ(got[k], v) << "field " << k << " of " << got.dump() << " (expected " << l << ")";
      ++checked;
    }
  }
  EXPECT_GE(sent, 6);
  EXPECT_GE(checked, 9);
}

TEST(Server, ConcurrentClientsGetTheirOwnResults) {
  Server server;
  ASSERT_GT(server.port(), 0) << server.output();
  Client a(server.port()), b(server.port());
  a.send(R"({"id": "x", "prompt": "The man said", "max_tokens": 30, "temperature": 0, "stream": false})");
  b.send(R"({"id": "x", "prompt": "It was a dark and stormy night", "max_tokens": 30, "temperature": 0, "alpha_presence": 0.5, "alpha_frequency": 0.5, "alpha_decay": 0.996, "stream": false})");
  auto ea = a.until_done("x"), eb = b.until_done("x");
  ASSERT_FALSE(ea.empty());
  ASSERT_FALSE(eb.empty());
  EXPECT_EQ(ea.back()["text"], " to a state of the stress and ");
  EXPECT_EQ(eb.back()["text"], ", and the sumport in the follo");  // the official generate run, first 30 bytes
}

// `mpirun -np N skein serve`: the same API with the model split over stage ranks.
TEST(Server, ServesFromTheClusterUnderMpirun) {
  Server server("", 3);
  ASSERT_GT(server.port(), 0) << server.output();
  Client a(server.port()), b(server.port());
  a.send(R"({"id": "x", "prompt": "The man said", "max_tokens": 30, "temperature": 0, "stream": false})");
  b.send(R"({"id": "y", "prompt": "It was a dark and stormy night", "max_tokens": 30, "temperature": 0, "alpha_presence": 0.5, "alpha_frequency": 0.5, "alpha_decay": 0.996})");
  auto ea = a.until_done("x"), eb = b.until_done("y");
  ASSERT_FALSE(ea.empty()) << server.output();
  ASSERT_FALSE(eb.empty()) << server.output();
  EXPECT_EQ(ea.back()["text"], " to a state of the stress and ");
  std::string streamed;
  for (auto& e : eb)
    if (e["event"] == "delta") streamed += e["text"].get<std::string>();
  EXPECT_EQ(streamed, ", and the sumport in the follo");
  EXPECT_EQ(server.terminate() >= 0, true);  // mpirun reports the signal itself; the stages are shut down
}

// The ports are bound and the tokenizer read before the model loads, so a port in use, a bad address
// or a missing --tokenizer stops `skein serve` at once with a line saying which (here before the
// missing model file is even opened, or the plan made).
TEST(Server, APortInUseStopsServeBeforeTheModelLoads) {
  Server busy;
  ASSERT_GT(busy.port(), 0) << busy.output();
  const std::string missing = temp_dir() + "/no-such-model.pth";
  auto r = run_skein("serve --model " + missing + " --port " + std::to_string(busy.port()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("skein: error: server: cannot listen for TCP on 127.0.0.1:" + std::to_string(busy.port()) + ": Address already in use"),
            std::string::npos)
      << r.output;
  r = run_skein("serve --model " + missing + " --port 0 --http-port " + std::to_string(busy.http_port()));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("skein: error: server: cannot listen for HTTP on 127.0.0.1:" + std::to_string(busy.http_port())), std::string::npos) << r.output;
  r = run_skein("serve --model " + missing + " --listen 10.0.0 --port 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("skein: error: server: '10.0.0' is not an IP address"), std::string::npos) << r.output;
  // Free ports: then the model is the problem.
  r = run_skein("serve --model " + missing + " --port 0 --http-port 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find(missing), std::string::npos) << r.output;
  // The tokenizer is read from the file's header before the load (which would refuse this strategy).
  r = run_skein("serve --model " + golden("models/rand-v7-bf16.pth") + " --port 0 --http-port 0 --strategy 'cpu fp32 *99'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("skein: error: this model has a vocabulary of 512; choose a tokenizer"), std::string::npos) << r.output;
}

TEST(Server, SkeinClientStreamsTheReply) {
  Server server;
  ASSERT_GT(server.port(), 0) << server.output();
  std::string addr = "127.0.0.1:" + std::to_string(server.port());
  auto r = run_skein("client --server tcp://" + addr + " --prompt 'The man said' --temperature 0 --max-tokens 20");  // as serve writes it
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("The man said to a state of the s\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("finish: length"), std::string::npos) << r.output;
  // The library the command is built on, used directly.
  ApiClient c(addr);
  std::string text;
  auto done = c.generate({{"id", "q"}, {"prompt", "It was"}, {"max_tokens", 3}, {"temperature", 0}}, [&](const std::string& t) { text += t; });
  EXPECT_EQ(done["event"], "done");
  EXPECT_EQ(text, " a ");
  // A value the server refuses is sent as given (a negative seed was once dropped without a word).
  r = run_skein("client --server " + addr + " --prompt x --seed -3");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("skein: error: server: seed: must be >= 0"), std::string::npos) << r.output;
  // An empty session name too (it once ran without a session), and a refusal prints no prompt echo.
  r = run_skein("client --server " + addr + " --prompt 'The man said' --session ''");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.output.rfind("skein: error: server: session: '' is not a valid session name", 0), 0u) << r.output;
  r = run_skein("client --server 127.0.0.1:1 --prompt x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("skein: error: cannot connect to 127.0.0.1:1"), std::string::npos) << r.output;
  // The HTTP port (serve prints both) is named as the mistake it is, not as a line that is not JSON.
  r = run_skein("client --server 127.0.0.1:" + std::to_string(server.http_port()) + " --prompt x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("skein: error: the server answered in HTTP: --server takes the TCP address `skein serve` prints (tcp://...)"), std::string::npos)
      << r.output;
}

// skein client's --server: as typed, or as the serving line writes it (tcp://...); a malformed one is
// refused with the reason before any connection is tried.
TEST(Server, ClientAddressesAreTakenAsWrittenOrRefusedWithTheReason) {
  for (auto [text, host, port] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"127.0.0.1:7700", "127.0.0.1", "7700"}, {"tcp://127.0.0.1:7700", "127.0.0.1", "7700"}, {"[::1]:80", "::1", "80"},
           {"tcp://[::1]:65535", "::1", "65535"}, {"gpu-node-3:1", "gpu-node-3", "1"}}) {
    const ServerAddress a = parse_server_address(text);
    EXPECT_EQ(a.host, host) << text;
    EXPECT_EQ(a.port, port) << text;
  }
  auto refusal = [](const std::string& text) {
    try {
      parse_server_address(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  for (std::string bad : {"nohost", ":7700", "[::1", "::1]:80", "[]:80", "::1:80", "udp://x:80", "tcp://"})
    EXPECT_EQ(refusal(bad), "--server: expected HOST:PORT, [IPv6]:PORT or tcp://HOST:PORT, got '" + bad + "'");
  EXPECT_EQ(refusal("127.0.0.1:"), "--server: port '' of '127.0.0.1:' is not a number from 1 to 65535");
  EXPECT_EQ(refusal("127.0.0.1:99999"), "--server: port '99999' of '127.0.0.1:99999' is not a number from 1 to 65535");
  EXPECT_EQ(refusal("127.0.0.1:0"), "--server: port '0' of '127.0.0.1:0' is not a number from 1 to 65535");
  EXPECT_EQ(refusal("127.0.0.1:http"), "--server: port 'http' of '127.0.0.1:http' is not a number from 1 to 65535");
  EXPECT_EQ(refusal("http://127.0.0.1:7701"),
            "--server: 'http://127.0.0.1:7701' is an HTTP address; skein client speaks the TCP protocol: give the tcp:// address `skein serve` prints");
}

// IPv6: the serving line writes the address as URLs do ([::1]:PORT), and skein client takes it so.
TEST(Server, AnIpv6AddressIsWrittenAndTakenInBrackets) {
  const int probe = socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  const bool ipv6 = probe >= 0 && bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (probe >= 0) close(probe);
  if (!ipv6) GTEST_SKIP() << "this machine has no IPv6 loopback";
  Server server("--listen ::1");
  ASSERT_GT(server.port(), 0) << server.output();
  EXPECT_NE(server.output().find("on tcp://[::1]:" + std::to_string(server.port()) + " and http://[::1]:"), std::string::npos) << server.output();
  auto r = run_skein("client --server '[::1]:" + std::to_string(server.port()) + "' --prompt 'The man said' --temperature 0 --max-tokens 20");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("The man said to a state of the s\n"), std::string::npos) << r.output;
}

TEST(Server, AuthTokenIsRequiredWhenSet) {
  Server server("--auth-token s3cret");
  ASSERT_GT(server.port(), 0) << server.output();
  Client c(server.port());
  c.send(R"({"id": "a", "prompt": "x", "max_tokens": 1})");
  auto e = c.event();
  EXPECT_EQ(e["event"], "error");
  EXPECT_NE(e["error"].get<std::string>().find("unauthorized"), std::string::npos);
  c.send(R"({"id": "a", "prompt": "x", "max_tokens": 1, "auth": "wrong"})");
  EXPECT_EQ(c.event()["event"], "error");
  c.send(R"({"id": "a", "prompt": "The man said", "max_tokens": 2, "temperature": 0, "auth": "s3cret", "stream": false})");
  auto done = c.until_done("a");
  ASSERT_FALSE(done.empty());
  EXPECT_EQ(done.back()["text"], " t");
}

TEST(Server, OnlyTheWholeTokenIsAccepted) {
  ApiLimits limits;
  EXPECT_TRUE(token_accepted(limits, "anything"));  // no token set
  limits.auth_token = "s3cret";
  EXPECT_TRUE(token_accepted(limits, "s3cret"));
  for (std::string_view wrong : std::vector<std::string_view>{"", "s", "s3cre", "s3cret!", "S3cret", "s3creT", "xxxxxx", std::string_view("s3cret\0", 7)})
    EXPECT_FALSE(token_accepted(limits, wrong)) << wrong;
}

TEST(Server, CancelAndDisconnectFreeTheRequest) {
  Server server;
  ASSERT_GT(server.port(), 0) << server.output();
  Client a(server.port());
  a.send(R"({"id": "long", "prompt": "Hello", "max_tokens": 4000})");
  ASSERT_EQ(a.event()["event"], "delta");
  a.send(R"({"cancel": "long"})");
  auto events = a.until_done("long");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back()["finish_reason"], "cancelled");
  a.send(R"({"cancel": "nope"})");
  EXPECT_EQ(a.event()["error"], "no running request with this id");
  // A client that disconnects mid-request: the server carries on for others.
  {
    Client gone(server.port());
    gone.send(R"({"id": "g", "prompt": "Hello", "max_tokens": 4000})");
    gone.line();
  }
  Client b(server.port());
  b.send(R"({"id": "after", "prompt": "The man said", "max_tokens": 5, "temperature": 0, "stream": false})");
  auto e = b.until_done("after");
  ASSERT_FALSE(e.empty());
  EXPECT_EQ(e.back()["text"], " to a");
}

TEST(Server, BadInputNeverDisturbsOtherClients) {
  Server server("--max-tokens 10");
  ASSERT_GT(server.port(), 0) << server.output();
  Client good(server.port());
  good.send(R"({"id": "slow", "prompt": "The man said", "max_tokens": 300, "temperature": 0})");
  ASSERT_EQ(good.event()["event"], "delta");
  {
    Client garbage(server.port());
    garbage.send_raw(std::string("\xff\xfe\x00\x01 binary\n", 12));
    auto e = garbage.event();
    EXPECT_EQ(e["event"], "error");
    EXPECT_EQ(garbage.line(), "");  // then closed
  }
  {
    Client huge(server.port());
    huge.send_raw(std::string(2 << 20, 'a'));  // no newline, over max_request_bytes
    auto e = huge.event();
    EXPECT_EQ(e["event"], "error");
    EXPECT_NE(e["error"].get<std::string>().find("exceeds"), std::string::npos);
  }
  {
    // A client that writes all of an over-long line before it reads is not cut off with a reset
    // (which it would report as a broken pipe): it finishes, then reads why.
    Client writer(server.port());
    EXPECT_TRUE(writer.send_all_then_end(std::string(16 << 20, 'a')));
    auto e = writer.event();
    EXPECT_NE(e.value("error", "").find("request line exceeds"), std::string::npos) << e.dump();
  }
  {
    Client bad(server.port());
    for (std::string req : {R"({"id": "n", "prompt": "x", "top_p": -1})", R"({"id": "t", "tokens": [300]})", R"({"id": "m", "prompt": "x", "max_tokens": 99999})",
                            R"({"id": "e", "prompt": ""})", R"([1, 2])", R"({"prompt": "no id"})"}) {
      bad.send(req);
      auto e = bad.event();
      EXPECT_EQ(e["event"], "error") << req << " -> " << e.dump();
    }
    // 2^64 - 1 is an integer JSON keeps unsigned: too large, not "must be >= 0" as its int64_t wrap said.
    bad.send(R"({"id": "s", "prompt": "x", "seed": 18446744073709551615})");
    auto e = bad.event();
    EXPECT_EQ(e["error"], "seed: 18446744073709551615 is too large") << e.dump();
  }
  auto rest = good.until_done("slow");
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest.back()["event"], "done");
  EXPECT_EQ(rest.back()["completion_tokens"], 300);
}

// Clients beyond the server's open-files limit: each hears at once why (TCP: an error event; HTTP:
// 503), the I/O thread does not spin on the connections it cannot take, the clients already in are
// served, and once clients leave new ones are served again.
TEST(Server, ClientsBeyondTheOpenFilesLimitAreRefusedAndTheServerGoesOn) {
  Server server;
  ASSERT_GT(server.port(), 0) << server.output();
  const std::string proc = "/proc/" + std::to_string(server.pid());
  const auto open_files = [&] { return long(std::distance(std::filesystem::directory_iterator(proc + "/fd"), {})); };
  const auto cpu_seconds = [&] {  // utime + stime
    std::istringstream stat(read_file(proc + "/stat").substr(read_file(proc + "/stat").rfind(')') + 2));
    std::string field;
    long ticks = 0;
    for (int i = 3; i <= 15 && stat >> field; ++i)
      if (i >= 14) ticks += std::stol(field);
    return double(ticks) / double(sysconf(_SC_CLK_TCK));
  };
  const rlimit tight{rlim_t(open_files() + 4), rlim_t(open_files() + 4)};
  ASSERT_EQ(prlimit(server.pid(), RLIMIT_NOFILE, &tight, nullptr), 0);

  std::vector<std::unique_ptr<Client>> clients;
  int served = 0, refused = 0;
  for (int i = 0; i < 12; ++i) {
    clients.push_back(std::make_unique<Client>(server.port()));
    Client& c = *clients.back();
    c.set_timeout(5);  // an unanswered client (the refusal missing) fails the test, not ctest's timeout
    const std::string id = "c" + std::to_string(i);
    c.send(R"({"id": ")" + id + R"(", "prompt": "The man said", "max_tokens": 2, "temperature": 0})");
    auto events = c.until_done(id);
    if (!events.empty() && events.back()["event"] == "done") {
      ++served;
    } else {
      ASSERT_EQ(events.size(), 1u) << (events.empty() ? "no answer" : events.back().dump());
      EXPECT_EQ(events[0]["event"], "error");
      EXPECT_NE(events[0]["error"].get<std::string>().find("out of file descriptors"), std::string::npos) << events[0].dump();
      EXPECT_EQ(c.line(), "") << "then closed";
      ++refused;
    }
  }
  EXPECT_GE(served, 1);
  EXPECT_GE(refused, 6);
  // Still at the limit with nobody waiting: the server sleeps (a spinning I/O thread burns a core).
  const double before = cpu_seconds();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_LT(cpu_seconds() - before, 0.3) << "the listener spins while out of descriptors";
  // The client library and `skein client` say why instead of "server closed the connection".
  auto r = run_skein("client --server 127.0.0.1:" + std::to_string(server.port()) + " --prompt 'The man said'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("skein: error: server: too many open connections (the server is out of file descriptors)"), std::string::npos) << r.output;
  ++refused;
  HttpReply busy = http_request(server.http_port(), "GET", "/health");
  EXPECT_EQ(busy.status, 503) << busy.body;
  EXPECT_EQ(busy.headers["retry-after"], "1");
  EXPECT_EQ(busy.json()["error"]["type"], "overloaded") << busy.body;
  // Clients leave: the server takes new ones again, on both ports.
  clients.clear();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(http_request(server.http_port(), "GET", "/health").status, 200);
  Client again(server.port());
  again.send(R"({"id": "again", "prompt": "The man said", "max_tokens": 2, "temperature": 0})");
  auto events = again.until_done("again");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back()["event"], "done") << events.back().dump();
  // A dashboard sees the limit, the refusals and (above) the warning in the log.
  const std::string metrics = http_request(server.http_port(), "GET", "/metrics").body;
  EXPECT_NE(metrics.find("\nprocess_max_fds " + std::to_string(tight.rlim_cur) + "\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\nskein_connections_refused_total{protocol=\"tcp\"} " + std::to_string(refused) + "\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\nskein_connections_refused_total{protocol=\"http\"} 1\n"), std::string::npos) << metrics;
  const std::string log = server.output();
  EXPECT_NE(log.find("warning: TCP: out of file descriptors (Too many open files; " + std::to_string(tight.rlim_cur) + " open files allowed)"), std::string::npos)
      << log;
  EXPECT_NE(log.find("TCP: accepting connections again (" + std::to_string(refused) + " refused"), std::string::npos) << log;
}

// Requests corrupted from the fuzz seeds, run for real: whatever the parser accepts must be served
// (every sample done, tokens inside the vocabulary, the cap kept), whatever it refuses answered with one
// error, and a greedy request afterwards gives the text it gave before.
TEST(Server, CorruptedRequestsAreServedOrRefusedAndLeaveTheServerSound) {
  const std::string cfg_path = temp_dir() + "/chaos.toml";
  write_file(cfg_path, "[server]\nmax_tokens_cap = 24\nmax_prompt_tokens = 512\nper_connection_requests = 8\n[sampling]\nmax_tokens = 16\n");
  Server server("--config " + cfg_path);
  ASSERT_GT(server.port(), 0) << server.output();
  const ApiLimits limits = api_limits(load_config(cfg_path));  // what the server parses with
  const ByteTokenizer tok;
  const std::string probe = R"({"id": "probe", "prompt": "The man said", "max_tokens": 20, "temperature": 0, "stream": false})";
  auto probe_text = [&] {
    Client c(server.port());
    c.send(probe);
    auto events = c.until_done("probe");
    return events.empty() ? std::string() : events.back().value("text", std::string());
  };
  const std::string before = probe_text();
  ASSERT_FALSE(before.empty());

  std::vector<std::string> seeds;
  for (auto& s : fuzz::seeds("api_line"))
    if (s.find("\"op\"") == std::string::npos) seeds.push_back(s);  // generations; ops answer differently
  fuzz::Corruptor corrupt(31);
  int accepted = 0, refused = 0;
  for (int batch = 0; batch < 60; ++batch) {
    Client c(server.port());
    std::map<std::string, int> open;  // id -> final events still due
    for (int i = 0; i < 8; ++i) {
      nlohmann::json j = nlohmann::json::parse(corrupt.json(seeds[corrupt.below(seeds.size())]), nullptr, false);
      if (!j.is_object()) continue;  // broken JSON: the parser's own test covers it
      const std::string id = "c" + std::to_string(batch) + "-" + std::to_string(i);
      j["id"] = id;
      const std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      int due = 1;
      try {
        if (auto g = parse_api_line(line, tok, 256, limits).generate) due = g->n;
        ++accepted;
      } catch (const Error&) {
        ++refused;
      }
      open[id] = due;
      c.send(line);
    }
    while (!open.empty()) {
      const std::string l = c.line();
      ASSERT_FALSE(l.empty()) << "no answer for " << open.begin()->first << "; server output:\n" << server.output();
      const nlohmann::json e = nlohmann::json::parse(l);
      const std::string id = e.value("id", std::string()), event = e.value("event", std::string());
      ASSERT_TRUE(open.count(id)) << l;
      if (event == "delta") {
        for (auto& t : e["tokens"]) EXPECT_TRUE(t.get<int>() >= 0 && t.get<int>() < 256) << l;
      } else if (event == "done") {
        EXPECT_LE(e["completion_tokens"].get<int>(), 24) << l;
        if (--open[id] == 0) open.erase(id);
      } else if (event == "error") {
        EXPECT_EQ(l.find('\n'), std::string::npos);
        open.erase(id);  // a refusal ends the request, its samples too
      } else {
        EXPECT_EQ(event, "prompt") << l;
      }
    }
  }
  EXPECT_GT(accepted, 40);
  EXPECT_GT(refused, 40);
  EXPECT_EQ(probe_text(), before);
}

// [logging]: a line per finished or refused request and the server's own events, in the file the
// config names (relative to it), filtered by level; a log file that cannot be opened stops the start.
TEST(Server, LogsRequestsToTheConfiguredFile) {
  const std::string dir = temp_dir();
  for (const char* level : {"info", "warn"}) {
    write_file(dir + "/serve.toml", std::string("[logging]\nlevel = \"") + level + "\"\nfile = \"serve.log\"\n");
    std::filesystem::remove(dir + "/serve.log");
    {
      Server server("--config " + dir + "/serve.toml");
      ASSERT_GT(server.port(), 0) << server.output();
      Client c(server.port());
      c.send(R"({"id": "a", "prompt": "The man said", "max_tokens": 5, "temperature": 0, "session": "chat"})");
      ASSERT_EQ(c.until_done("a").back()["event"], "done");
      EXPECT_EQ(server.terminate(), 0) << server.output();
      EXPECT_EQ(server.output().find("request 1"), std::string::npos) << "the log went to stderr: " << server.output();
    }
    const std::string log = read_file(dir + "/serve.log");
    if (std::string(level) == "info") {
      EXPECT_NE(log.find(" skein: request 1: 12 prompt tokens (0 cached), 5 generated, length; queue "), std::string::npos) << log;
      EXPECT_NE(log.find(", session chat\n"), std::string::npos) << log;
      EXPECT_NE(log.find(" skein: server stopped\n"), std::string::npos) << log;
      EXPECT_EQ(log.find("Z skein: "), 23u) << log;  // an ISO 8601 UTC time first
    } else {
      EXPECT_EQ(log, "") << "warn keeps info lines out";
    }
  }
  write_file(dir + "/bad.toml", "[logging]\nfile = \"no/such/dir/serve.log\"\n");
  auto r = run_skein("serve --model " + shared_dir() + "/models/tiny-rwkv-5v2-730K.pth --port 0 --http-port -1 --config " + dir + "/bad.toml");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("skein: error: " + dir + "/no/such/dir/serve.log: cannot open the log file"), std::string::npos) << r.output;
}

// "n": several samples of one prompt over TCP, from one prefill: every event carries its sample's index,
// sample i is what one request with seed + i gives, and cancelling the id cancels them all.
TEST(Server, SeveralSamplesOfOnePromptCarryTheirIndex) {
  Server server;
  ASSERT_GT(server.port(), 0) << server.output();
  Client c(server.port());
  auto alone = [&](int seed) {
    c.send(R"({"id": "one", "prompt": "The man said", "max_tokens": 8, "temperature": 1, "stream": false, "seed": )" + std::to_string(seed) + "}");
    return c.until_done("one").back()["text"].get<std::string>();
  };
  c.send(R"({"id": "m", "prompt": "The man said", "max_tokens": 8, "temperature": 1, "stream": false, "seed": 3, "n": 3})");
  std::map<int, nlohmann::json> done;
  while (done.size() < 3) {
    auto e = c.event();
    ASSERT_FALSE(e.is_null()) << server.output();
    ASSERT_EQ(e["id"], "m") << e;
    ASSERT_EQ(e["event"], "done") << e;
    done[e["index"].get<int>()] = e;
  }
  std::set<std::string> distinct;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(done[i]["text"], alone(3 + i)) << "sample " << i;
    distinct.insert(done[i]["text"].get<std::string>());
  }
  EXPECT_EQ(distinct.size(), 3u);
  EXPECT_EQ(done[1]["cached_tokens"], 11);  // a copy of the first sample's state after 11 of 12 prompt tokens
  // Streamed: the deltas of each index make its text.
  c.send(R"({"id": "s", "prompt": "The man said", "max_tokens": 8, "temperature": 1, "seed": 3, "n": 3})");
  std::map<int, std::string> text;
  for (int ended = 0; ended < 3;) {
    auto e = c.event();
    ASSERT_FALSE(e.is_null());
    if (e["event"] == "delta") text[e["index"].get<int>()] += e["text"].get<std::string>();
    else ended += e["event"] == "done";
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(text[i], done[i]["text"]) << "sample " << i;
  // Cancelling the id ends every sample.
  c.send(R"({"id": "long", "prompt": "x", "max_tokens": 4000, "n": 4})");
  ASSERT_EQ(c.event()["event"], "delta");
  c.send(R"({"cancel": "long"})");
  int cancelled = 0;
  while (cancelled < 4) {
    auto e = c.event();
    ASSERT_FALSE(e.is_null());
    if (e["event"] == "done") {
      EXPECT_EQ(e["finish_reason"], "cancelled") << e;
      ++cancelled;
    }
  }
  for (auto [req, says] : {std::pair<std::string, std::string>{R"({"id": "b", "prompt": "x", "n": 0})", "n: must be between 1 and 16, got 0"},
                           {R"({"id": "b", "prompt": "x", "n": 2, "session": "s"})", "n: several samples cannot continue one session"}}) {
    c.send(req);
    auto e = c.event();
    EXPECT_EQ(e["event"], "error");
    EXPECT_EQ(e["error"], says);
  }
}

TEST(Server, SigtermEndsRequestsAndExitsZero) {
  Server server;
  ASSERT_GT(server.port(), 0) << server.output();
  Client a(server.port());
  a.send(R"({"id": "long", "prompt": "Hello", "max_tokens": 4000})");
  ASSERT_EQ(a.event()["event"], "delta");
  int rc = server.terminate();
  EXPECT_EQ(rc, 0) << server.output();
  auto events = a.until_done("long");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back()["finish_reason"], "cancelled");
}

}  // namespace
}  // namespace skein::test
