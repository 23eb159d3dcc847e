// The OpenAI-compatible HTTP API (n choices included), /health and /metrics, sessions over the TCP
// protocol and HTTP (alone and on an mpirun cluster, across a restart), and clients that stall or stop
// reading.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

#include "common/error.h"
#include "common/hash.h"
#include "coordinator/config.h"
#include "model/tokenizer.h"
#include "net/openai_request.h"
#include "tests/fuzz/corruptor.h"
#include "tests/server_harness.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

using json = nlohmann::json;

std::string config_file(const std::string& toml) {
  std::string path = temp_dir() + "/serve-" + std::to_string(std::hash<std::string>()(toml)) + ".toml";
  write_file(path, toml);
  return path;
}

// Request "run" takes a one-slot server's only slot and keeps it until cancelled: 2^24 tokens, hours of
// generation (4000 could end within a second on an idle machine, and a waiting request then ran). The
// server's [server] section needs kHoldingCap.
const char* kHoldingCap = "max_tokens_cap = 16777216\n";
void hold_the_only_slot(Client& a) {
  a.send(R"({"id": "run", "prompt": "Hello", "max_tokens": 16777216})");
  ASSERT_EQ(a.event()["event"], "delta");
}

TEST(Http, CompletionsMatchTheTcpApi) {
  Server server;
  ASSERT_GT(server.http_port(), 0) << server.output();
  auto r = http_request(server.http_port(), "POST", "/v1/completions", R"({"model": "x", "prompt": "The man said", "max_tokens": 20, "temperature": 0})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = r.json();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], " to a state of the s");  // the TCP example of docs/protocol.md
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 12);
  EXPECT_EQ(j["usage"]["completion_tokens"], 20);
  EXPECT_EQ(j["usage"]["total_tokens"], 32);

  auto s = http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": "The man said", "max_tokens": 20, "temperature": 0, "stream": true})");
  ASSERT_EQ(s.status, 200);
  EXPECT_EQ(s.headers["content-type"], "text/event-stream");
  auto events = sse_events(s.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) text += events[i]["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(text, " to a state of the s");
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");

  auto stop = http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": "The man said", "max_tokens": 50, "temperature": 0, "stop": " of"})");
  EXPECT_EQ(stop.json()["choices"][0]["text"], " to a state");
  EXPECT_EQ(stop.json()["choices"][0]["finish_reason"], "stop");
}

TEST(Http, ChatCompletionsUseTheRwkvChatFormat) {
  Server server;
  ASSERT_GT(server.http_port(), 0) << server.output();
  auto plain = http_request(server.http_port(), "POST", "/v1/completions",
                            R"({"prompt": "System: Be brief.\n\nUser: Hello\n\nAssistant:", "max_tokens": 24, "temperature": 0})");
  std::string expected = plain.json()["choices"][0]["text"];
  while (!expected.empty() && expected[0] == ' ') expected.erase(0, 1);
  std::string body = R"({"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}], "max_tokens": 24, "temperature": 0)";
  auto r = http_request(server.http_port(), "POST", "/v1/chat/completions", body + "}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["object"], "chat.completion");
  EXPECT_EQ(r.json()["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r.json()["choices"][0]["message"]["content"], expected);

  auto s = http_request(server.http_port(), "POST", "/v1/chat/completions", body + R"(, "stream": true, "stream_options": {"include_usage": true}})");
  auto events = sse_events(s.body);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (auto& e : events)
    if (e.is_object() && !e["choices"].empty() && e["choices"][0]["delta"].contains("content")) text += e["choices"][0]["delta"]["content"].get<std::string>();
  EXPECT_EQ(text, expected);
  EXPECT_EQ(events[events.size() - 2]["usage"]["completion_tokens"], 24);
}

// Function calling: a call the request requires or names is a reply of the call schema, returned as
// OpenAI's tool_calls (plain and streamed alike); earlier calls and their results are written into the
// prompt in the documented format.
TEST(Http, ToolCallsAreTheFunctionsArgumentsInOpenAisShape) {
  Server server;
  ASSERT_GT(server.http_port(), 0) << server.output();
  const std::string tools = R"("tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
      "properties": {"city": {"type": "string", "enum": ["Oslo", "Paris"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
      "required": ["city", "days"]}}}, {"type": "function", "function": {"name": "clock"}}])";
  const std::string ask = R"({"messages": [{"role": "user", "content": "Weather in Oslo?"}], "max_tokens": 120, "seed": 7, )" + tools;
  for (const char* choice : {R"("required")", R"({"type": "function", "function": {"name": "get_weather"}})"}) {
    SCOPED_TRACE(choice);
    const std::string body = ask + R"(, "tool_choice": )" + choice;
    auto r = http_request(server.http_port(), "POST", "/v1/chat/completions", body + "}");
    ASSERT_EQ(r.status, 200) << r.body;
    const json c = r.json()["choices"][0];
    EXPECT_EQ(c["finish_reason"], choice[0] == '"' ? "tool_calls" : "stop");  // as OpenAI ends chosen and named calls
    EXPECT_TRUE(c["message"]["content"].is_null());
    ASSERT_EQ(c["message"]["tool_calls"].size(), 1u) << r.body;
    const json call = c["message"]["tool_calls"][0];
    EXPECT_EQ(call["type"], "function");
    EXPECT_EQ(call["id"].get<std::string>().rfind("call_", 0), 0u);
    const std::string name = call["function"]["name"];
    const json args = json::parse(call["function"]["arguments"].get<std::string>());
    if (choice[0] == '{') {
      EXPECT_EQ(name, "get_weather");
    }
    if (name == "get_weather") {
      EXPECT_TRUE(args["city"] == "Oslo" || args["city"] == "Paris") << args;
      EXPECT_TRUE(args["days"].is_number_integer() && args["days"] >= 1 && args["days"] <= 7) << args;
      EXPECT_EQ(args.size(), 2u);
    } else {
      EXPECT_EQ(name, "clock");
      EXPECT_EQ(args, json::object());
    }

    // Streamed, the same call arrives whole in one delta, then the finish.
    auto s = http_request(server.http_port(), "POST", "/v1/chat/completions", body + R"(, "stream": true})");
    auto events = sse_events(s.body);
    ASSERT_GE(events.size(), 4u) << s.body;
    json streamed;
    std::string content;
    for (auto& e : events) {
      if (!e.is_object() || e["choices"].empty()) continue;
      const json& d = e["choices"][0]["delta"];
      if (d.contains("tool_calls")) streamed = d["tool_calls"][0];
      if (d.contains("content")) content += d["content"].get<std::string>();
    }
    EXPECT_EQ(content, "");
    ASSERT_TRUE(streamed.is_object()) << s.body;
    EXPECT_EQ(streamed["index"], 0);
    EXPECT_EQ(streamed["function"], call["function"]);
    EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], c["finish_reason"]);
  }

  // The conversation goes on: the call and its result are in the prompt as the format writes them.
  const std::string turn = R"({"messages": [{"role": "user", "content": "Weather?"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\", \"days\": 1}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "Rain."}], "max_tokens": 16, "temperature": 0, )" + tools + R"(, "tool_choice": "none"})";
  auto r = http_request(server.http_port(), "POST", "/v1/chat/completions", turn);
  ASSERT_EQ(r.status, 200) << r.body;
  const ChatConfig chat;
  std::string prompt = "System: " + chat.tools_intro + "\n" +
                       R"({"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string","enum":["Oslo","Paris"]},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city","days"]}})" +
                       "\n" + R"({"name":"clock","parameters":{"type":"object","properties":{}}})" + "\n\nUser: Weather?\n\nAssistant: " +
                       R"({"name":"get_weather","arguments":{"city":"Oslo","days":1}})" + "\n\nTool: Rain.\n\nAssistant:";
  auto plain = http_request(server.http_port(), "POST", "/v1/completions",
                            json{{"prompt", prompt}, {"max_tokens", 16}, {"temperature", 0}, {"stop", "\n\n"}}.dump());
  std::string expected = plain.json()["choices"][0]["text"];
  while (!expected.empty() && expected[0] == ' ') expected.erase(0, 1);
  EXPECT_EQ(r.json()["choices"][0]["message"]["content"], expected);
  EXPECT_FALSE(r.json()["choices"][0]["message"].contains("tool_calls"));
  EXPECT_EQ(r.json()["usage"]["prompt_tokens"], plain.json()["usage"]["prompt_tokens"]);

  // A session takes its tools from its first request: a turn that sends them again (as OpenAI clients
  // do) leaves them out, and gets what the transcript with the tools listed once gives.
  const std::string listed = prompt.substr(0, prompt.find("User: Weather?"));
  auto turn_of = [&](const std::string& text) {
    json body = json::parse(ask + "}");
    body["messages"] = {{{"role", "user"}, {"content", text}}};
    body["session"] = "with-tools";
    body["tool_choice"] = "none";
    body["temperature"] = 0;
    body["max_tokens"] = 12;
    return http_request(server.http_port(), "POST", "/v1/chat/completions", body.dump()).json();
  };
  auto continuation = [&](const std::string& text) {
    json body = {{"prompt", text}, {"max_tokens", 12}, {"temperature", 0}};
    return http_request(server.http_port(), "POST", "/v1/completions", body.dump()).json()["choices"][0]["text"].get<std::string>();
  };
  const json first = turn_of("Hello"), second = turn_of("How?");
  const std::string t1 = continuation(listed + "User: Hello\n\nAssistant:");
  ASSERT_EQ(t1.find("\n\n"), std::string::npos) << "the model ended its reply; the expected transcript below assumes it did not";
  const std::string t2 = continuation(listed + "User: Hello\n\nAssistant:" + t1 + "User: How?\n\nAssistant:");
  EXPECT_EQ(first["choices"][0]["message"]["content"], t1.substr(t1.find_first_not_of(' ')));
  EXPECT_EQ(second["choices"][0]["message"]["content"], t2.substr(t2.find_first_not_of(' ')));
  EXPECT_EQ(first["usage"]["prompt_tokens"], int(listed.size() + std::string("User: Hello\n\nAssistant:").size()));
  EXPECT_EQ(second["usage"]["prompt_tokens"], int(std::string("User: How?\n\nAssistant:").size()));

  // Refused with the place: a call's arguments that are not JSON, and a forced call beside a format.
  auto bad = http_request(server.http_port(), "POST", "/v1/chat/completions",
                          R"({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{x"}}]}]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.json()["error"]["message"], "messages[0].tool_calls[0].function.arguments: is not JSON text");
  auto both = http_request(server.http_port(), "POST", "/v1/chat/completions",
                           ask + R"(, "tool_choice": "required", "response_format": {"type": "json_object"}})");
  EXPECT_EQ(both.status, 400);
  EXPECT_EQ(both.json()["error"]["message"], "tool_choice: a call the model must make cannot also follow response_format");
  auto role = http_request(server.http_port(), "POST", "/v1/chat/completions", R"({"messages": [{"role": "robot", "content": "x"}]})");
  EXPECT_EQ(role.json()["error"]["message"], "messages[0].role: 'robot' is not system, user, assistant or tool");
}

// A chat session over HTTP: the second turn sends only the new message and gets what the whole
// transcript as one prompt gives.
TEST(Http, ChatSessionsContinueTheConversation) {
  Server server;
  ASSERT_GT(server.http_port(), 0) << server.output();
  auto chat = [&](const std::string& msg) {
    json body = {{"messages", {{{"role", "user"}, {"content", msg}}}}, {"max_tokens", 12}, {"temperature", 0}, {"session", "c"}};
    return http_request(server.http_port(), "POST", "/v1/chat/completions", body.dump()).json()["choices"][0]["message"]["content"].get<std::string>();
  };
  auto plain = [&](const std::string& prompt) {
    json body = {{"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0}};
    return http_request(server.http_port(), "POST", "/v1/completions", body.dump()).json()["choices"][0]["text"].get<std::string>();
  };
  std::string first = chat("Hello"), second = chat("How?");
  std::string t1 = plain("User: Hello\n\nAssistant:");
  ASSERT_EQ(t1.find("\n\n"), std::string::npos) << "the model ended its reply; the expected transcript below assumes it did not";
  std::string t2 = plain("User: Hello\n\nAssistant:" + t1 + "User: How?\n\nAssistant:");
  EXPECT_EQ(first, t1.substr(t1.find_first_not_of(' ')));
  EXPECT_EQ(second, t2.substr(t2.find_first_not_of(' ')));
}

// Session operations over HTTP: list, fork (the fork goes on as its source would), save, delete, and
// each refusal with its own status.
TEST(Http, SessionsAreListedForkedSavedAndDeleted) {
  Server server("--sessions-dir " + temp_dir() + "/sessions");
  ASSERT_GT(server.http_port(), 0) << server.output();
  const int port = server.http_port();
  auto complete = [&](const std::string& prompt, const std::string& session) {
    json body = {{"prompt", prompt}, {"max_tokens", 10}, {"temperature", 0}};
    if (!session.empty()) body["session"] = session;
    return http_request(port, "POST", "/v1/completions", body.dump()).json()["choices"][0]["text"].get<std::string>();
  };
  const std::string first = complete("The man said", "a");
  auto forked = http_request(port, "POST", "/v1/sessions/a/fork", R"({"to": "b"})");
  EXPECT_EQ(forked.status, 200) << forked.body;
  EXPECT_EQ(forked.json(), json::parse(R"({"id": "b", "object": "session", "forked_from": "a"})"));
  EXPECT_EQ(complete(" He", "b"), complete("The man said" + first + " He", ""));
  EXPECT_NE(http_request(port, "GET", "/metrics").body.find("\nskein_state_copies_total{what=\"fork\"} 1\n"), std::string::npos);
  auto list = http_request(port, "GET", "/v1/sessions").json();
  ASSERT_EQ(list["data"].size(), 2u) << list;
  EXPECT_EQ(list["data"][1]["id"], "b");
  EXPECT_EQ(list["data"][1]["object"], "session");
  EXPECT_EQ(list["data"][1]["where"], "slot");
  EXPECT_EQ(http_request(port, "POST", "/v1/sessions/b/save").json(), json::parse(R"({"id": "b", "object": "session", "saved": true})"));
  EXPECT_EQ(http_request(port, "DELETE", "/v1/sessions/a").json(), json::parse(R"({"id": "a", "object": "session", "deleted": true})"));
  EXPECT_EQ(http_request(port, "GET", "/v1/sessions").json()["data"].size(), 1u);
  struct Refused {
    const char *method, *target, *body;
    int status;
    const char* says;
  } refused[] = {
      {"DELETE", "/v1/sessions/a", "", 404, "session 'a' does not exist"},
      {"POST", "/v1/sessions/b/fork", R"({"to": "b"})", 409, "session 'b' already exists"},
      {"POST", "/v1/sessions/b/fork", R"({"to": 3})", 400, "the body must be {\"to\""},
      {"POST", "/v1/sessions/b/fork", R"({"to": "../x"})", 400, "not a valid session name"},
      {"POST", "/v1/sessions/b/rename", "", 404, "no route for /v1/sessions/b/rename"},
      {"GET", "/v1/sessions/b/save", "", 405, "method not allowed"},
      {"POST", "/v1/sessions", "", 405, "method not allowed"},
  };
  for (auto& r : refused) {
    auto got = http_request(port, r.method, r.target, r.body);
    EXPECT_EQ(got.status, r.status) << r.method << " " << r.target << ": " << got.body;
    EXPECT_NE(got.json()["error"]["message"].get<std::string>().find(r.says), std::string::npos) << got.body;
  }
  EXPECT_EQ(http_request(port, "GET", "/v1/sessions").json()["data"][0]["id"], "b");  // nothing changed
  // A completion on a session that another request is using: 409, as for the session operations.
  Client running(port);
  const std::string body = R"({"prompt": "x", "max_tokens": 4000, "stream": true, "session": "b"})";
  running.send_raw("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  for (std::string l; (l = running.line()).rfind("data: ", 0) != 0;) ASSERT_FALSE(l.empty()) << "the running request ended before its first event";
  auto busy = http_request(port, "POST", "/v1/completions", R"({"prompt": "y", "max_tokens": 2, "session": "b"})");
  EXPECT_EQ(busy.status, 409) << busy.body;
  EXPECT_NE(busy.body.find("session 'b' is busy"), std::string::npos) << busy.body;
  EXPECT_EQ(http_request(port, "POST", "/v1/sessions/b/fork", R"({"to": "c"})").status, 409);
}

// A session leaves a server as a state file (GET .../state) and continues elsewhere: on a 3-rank
// cluster after PUT .../state, and on the command line with --state-in, exactly as it would have gone
// on where it was. A damaged, foreign or unsound state file is refused with one line and creates nothing.
TEST(Http, SessionsMoveBetweenServersAsStateFiles) {
  Server one, cluster("", 3);
  ASSERT_GT(one.http_port(), 0) << one.output();
  ASSERT_GT(cluster.http_port(), 0) << cluster.output();
  auto complete = [](int port, const std::string& prompt, const std::string& session) {
    json body = {{"prompt", prompt}, {"max_tokens", 10}, {"temperature", 0}, {"session", session}};
    return http_request(port, "POST", "/v1/completions", body.dump()).json()["choices"][0]["text"].get<std::string>();
  };
  complete(one.http_port(), "The man said", "a");
  const HttpReply state = http_request(one.http_port(), "GET", "/v1/sessions/a/state");
  ASSERT_EQ(state.status, 200) << state.body;
  EXPECT_EQ(state.headers.at("content-type"), "application/octet-stream");
  const std::string tokens = state.headers.at("skein-session-tokens"), pending = state.headers.at("skein-session-pending");
  EXPECT_EQ(tokens, std::to_string(http_request(one.http_port(), "GET", "/v1/sessions").json()["data"][0]["tokens"].get<uint64_t>()));
  const std::string session_headers = "Skein-Session-Tokens: " + tokens + "\r\nSkein-Session-Pending: " + pending + "\r\n";

  const HttpReply put = http_request(cluster.http_port(), "PUT", "/v1/sessions/moved/state", state.body, session_headers);
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(put.json(), json::parse(R"({"id": "moved", "object": "session", "imported": true})"));
  const json listed = http_request(cluster.http_port(), "GET", "/v1/sessions").json()["data"][0];
  EXPECT_EQ(listed["tokens"].get<uint64_t>(), std::stoull(tokens));
  EXPECT_EQ(listed["where"], "host");
  const std::string moved = complete(cluster.http_port(), " He", "moved");
  // A client that asks before sending a large body (curl does above 1 MB) is told to go on at once.
  Client asks(cluster.http_port());
  asks.send_raw("PUT /v1/sessions/asked/state HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: " + std::to_string(state.body.size()) + "\r\n\r\n");
  EXPECT_EQ(asks.line(), "HTTP/1.1 100 Continue\r");
  asks.line();  // the blank line that ends it
  asks.send_raw(state.body);
  EXPECT_EQ(asks.line(), "HTTP/1.1 201 Created\r");
  std::string long_pending = "0";  // a prompt cut short by a cancel leaves many
  for (int i = 1; i < 4000; ++i) long_pending.append(",").append(std::to_string(i % 256));
  EXPECT_EQ(http_request(cluster.http_port(), "PUT", "/v1/sessions/long/state", state.body, "Skein-Session-Pending: " + long_pending + "\r\n").status, 201);

  // The command line: the same file, the pending tokens (bytes, for this model) before the prompt.
  const std::string file = temp_dir() + "/a.state";
  write_file(file, state.body);
  std::string prompt;
  for (const json& id : json::parse("[" + pending + "]")) prompt += char(id.get<int>());
  prompt += " He";
  ASSERT_EQ(prompt.find('\''), std::string::npos) << "the command below quotes the prompt in single quotes";
  const auto cli = run_shell(std::string(SKEIN_BINARY) + " generate --model " + shared_dir() + "/models/tiny-rwkv-5v2-730K.pth --temperature 0 --max-tokens 10 --state-in " +
                             file + " --prompt '" + prompt + "' 2>/dev/null");
  EXPECT_EQ(cli.exit_code, 0) << cli.output;
  EXPECT_EQ(complete(one.http_port(), " He", "a"), moved);
  EXPECT_EQ(cli.output.substr(0, cli.output.find('\n')), prompt + moved);  // generate echoes its prompt
  EXPECT_NE(http_request(one.http_port(), "GET", "/metrics").body.find("\nskein_state_copies_total{what=\"export\"} 1\n"), std::string::npos);
  EXPECT_NE(http_request(cluster.http_port(), "GET", "/metrics").body.find("\nskein_state_copies_total{what=\"import\"} 3\n"), std::string::npos);

  // Refusals, each with its status and one line saying what is wrong.
  auto refused = [&](const std::string& method, const std::string& target, const std::string& body, const std::string& headers, int status,
                     const std::string& says) {
    const HttpReply r = http_request(one.http_port(), method, target, body, headers);
    EXPECT_EQ(r.status, status) << target << ": " << r.body;
    if (r.status >= 400 && r.status != 405) {
      const std::string message = r.json()["error"]["message"];
      EXPECT_NE(message.find(says), std::string::npos) << message;
      EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
  };
  auto resealed = [](std::string bytes, size_t offset, const void* value, size_t n) {  // a valid checksum over an edit
    std::memcpy(bytes.data() + offset, value, n);
    Fnv64 sum;
    sum.update(bytes.data(), bytes.size() - 8);
    const uint64_t digest = sum.digest();
    std::memcpy(bytes.data() + bytes.size() - 8, &digest, 8);
    return bytes;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const uint64_t other_model = 42;
  refused("GET", "/v1/sessions/nobody/state", "", "", 404, "does not exist");
  refused("PUT", "/v1/sessions/a/state", state.body, "", 409, "already exists");
  refused("PUT", "/v1/sessions/c/state", state.body.substr(0, 1000), "", 400, "session 'c': state file is truncated");
  refused("PUT", "/v1/sessions/c/state", resealed(state.body, 44, &other_model, 8), "", 400, "state belongs to another model");
  refused("PUT", "/v1/sessions/c/state", resealed(state.body, 64 + 4 * 100, &nan, 4), "", 400, "state value 100 is nan");
  refused("PUT", "/v1/sessions/c/state", state.body, "Skein-Session-Tokens: -1\r\n", 400, "Skein-Session-Tokens: must be a whole number");
  refused("PUT", "/v1/sessions/c/state", state.body, "Skein-Session-Pending: 1,300\r\n", 400, "Skein-Session-Pending");
  refused("PUT", "/v1/sessions/.c/state", state.body, "", 400, "not a valid session name");
  refused("POST", "/v1/sessions/a/state", "", "", 405, "");
  refused("PUT", "/v1/sessions/c/state", std::string(2 << 20, 'x'), "", 413, "request body exceeds");
  fuzz::Corruptor corrupt(53);
  for (int i = 0; i < 200; ++i) {
    const std::string body = corrupt.bytes(state.body);
    if (body == state.body) continue;
    const HttpReply r = http_request(one.http_port(), "PUT", "/v1/sessions/c/state", body);
    ASSERT_EQ(r.status, 400) << r.body;
    EXPECT_EQ(r.json()["error"]["message"].get<std::string>().rfind("session 'c': ", 0), 0u) << r.body;
  }
  const json left = http_request(one.http_port(), "GET", "/v1/sessions").json()["data"];
  ASSERT_EQ(left.size(), 1u) << left;
  EXPECT_EQ(left[0]["id"], "a");
}

// n choices: choice i is what one request with seed + i gives (the prompt prefilled once for all),
// plain and streamed, completions and chat; usage counts the prompt once and every choice's tokens.
TEST(Http, SeveralChoicesAreEachWhatASingleRequestWithItsSeedGives) {
  Server server;
  ASSERT_GT(server.http_port(), 0) << server.output();
  const int port = server.http_port();
  const std::string prompt = "The man said to the woman";
  auto one = [&](int seed) {
    json body = {{"prompt", prompt}, {"max_tokens", 10}, {"temperature", 1.0}, {"seed", seed}};
    return http_request(port, "POST", "/v1/completions", body.dump()).json()["choices"][0]["text"].get<std::string>();
  };
  json body = {{"prompt", prompt}, {"max_tokens", 10}, {"temperature", 1.0}, {"seed", 5}, {"n", 3}};
  auto r = http_request(port, "POST", "/v1/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.json();
  ASSERT_EQ(j["choices"].size(), 3u) << j;
  std::set<std::string> distinct;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["text"], one(5 + i)) << "choice " << i;
    distinct.insert(j["choices"][i]["text"].get<std::string>());
  }
  EXPECT_EQ(distinct.size(), 3u) << "three seeds, three samples";
  EXPECT_EQ(j["usage"]["prompt_tokens"], int(prompt.size()));
  EXPECT_EQ(j["usage"]["completion_tokens"], 30);
  EXPECT_NE(http_request(port, "GET", "/metrics").body.find("\nskein_state_copies_total{what=\"sample\"} 2\n"), std::string::npos);
  // Streamed chat: every choice's deltas, in any interleaving, make the plain reply's choices.
  json chat = {{"messages", {{{"role", "user"}, {"content", "Hello"}}}}, {"max_tokens", 12}, {"temperature", 1.0}, {"seed", 9}, {"n", 2}};
  json plain = http_request(port, "POST", "/v1/chat/completions", chat.dump()).json();
  chat["stream"] = true;
  chat["stream_options"] = {{"include_usage", true}};
  auto streamed = http_request(port, "POST", "/v1/chat/completions", chat.dump());
  std::vector<std::string> text(2);
  std::vector<json> finish(2);
  json usage;
  auto events = sse_events(streamed.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  for (auto& e : events) {
    if (!e.is_object()) continue;
    if (e.contains("usage") && !e["usage"].is_null()) usage = e["usage"];
    for (auto& c : e["choices"]) {
      const size_t i = c["index"].get<size_t>();
      ASSERT_LT(i, 2u) << e;
      if (c["delta"].contains("content")) text[i] += c["delta"]["content"].get<std::string>();
      if (!c["finish_reason"].is_null()) finish[i] = c["finish_reason"];
    }
  }
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(text[i], plain["choices"][i]["message"]["content"]) << "choice " << i;
    EXPECT_EQ(finish[i], plain["choices"][i]["finish_reason"]) << "choice " << i;
  }
  EXPECT_EQ(usage["completion_tokens"], plain["usage"]["completion_tokens"]);
}

// On a 3-rank cluster the choices' states are copied on the stages: the same choices as one process.
TEST(Http, SeveralChoicesOnTheClusterAreTheOneProcessChoices) {
  const json body = {{"prompt", "It was a dark and"}, {"max_tokens", 12}, {"temperature", 0.9}, {"top_p", 0.9}, {"seed", 21}, {"n", 4}};
  std::vector<json> got;
  for (int ranks : {1, 3}) {
    Server server("", ranks);
    ASSERT_GT(server.http_port(), 0) << server.output();
    auto r = http_request(server.http_port(), "POST", "/v1/completions", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    got.push_back(r.json()["choices"]);
  }
  ASSERT_EQ(got[0].size(), 4u);
  EXPECT_EQ(got[0], got[1]);
}

// A batch of prompts (a list of strings or of token id lists, as lm-evaluation-harness sends): choice
// p*n+i is prompt p's sample i, each what the prompt alone gives; usage counts every prompt once.
TEST(Http, BatchedPromptsAreEachWhatTheyGiveAlone) {
  Server server;
  ASSERT_GT(server.http_port(), 0) << server.output();
  const int port = server.http_port();
  auto alone = [&](const std::string& prompt) {
    auto r = http_request(port, "POST", "/v1/completions", json{{"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0}}.dump());
    return r.json()["choices"][0]["text"].get<std::string>();
  };
  const std::vector<std::string> prompts = {"The man said", "It was", "\nIn the"};
  auto r = http_request(port, "POST", "/v1/completions", json{{"prompt", prompts}, {"max_tokens", 12}, {"temperature", 0}, {"n", 2}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = r.json();
  ASSERT_EQ(j["choices"].size(), 6u);
  for (size_t c = 0; c < 6; ++c) {
    EXPECT_EQ(j["choices"][c]["index"], c);
    EXPECT_EQ(j["choices"][c]["text"], alone(prompts[c / 2])) << c;
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], 12 + 6 + 7);
  EXPECT_EQ(j["usage"]["completion_tokens"], 6 * 12);

  // Token id lists, streamed: every chunk names its choice.
  json ids = json::array();
  for (auto& p : prompts) ids.push_back(std::vector<int>(p.begin(), p.end()));
  auto s = http_request(port, "POST", "/v1/completions", json{{"prompt", ids}, {"max_tokens", 12}, {"temperature", 0}, {"stream", true}}.dump());
  std::vector<std::string> text(3);
  for (auto& e : sse_events(s.body))
    if (e != "[DONE]") text[e["choices"][0]["index"].get<size_t>()] += e["choices"][0]["text"].get<std::string>();
  for (size_t p = 0; p < 3; ++p) EXPECT_EQ(text[p], alone(prompts[p])) << p;

  // Scored as lm-evaluation-harness scores a batch of continuations.
  auto scored = http_request(port, "POST", "/v1/completions",
                             json{{"prompt", ids}, {"max_tokens", 1}, {"temperature", 0}, {"logprobs", 1}, {"echo", true}}.dump());
  ASSERT_EQ(scored.status, 200) << scored.body;
  const json scores = scored.json();
  for (size_t p = 0; p < 3; ++p) {
    const json& lp = scores["choices"][p]["logprobs"];
    EXPECT_EQ(lp["tokens"].size(), prompts[p].size() + 1) << p;
    EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  }

  for (auto [body, error] : std::vector<std::pair<std::string, std::string>>{
           {R"({"prompt": []})", "prompt: must be a string, an array of token ids, or a non-empty array of either"},
           {R"({"prompt": ["a", 1]})", "prompt[1]: must be a string or an array of token ids"},
           {R"({"prompt": ["a", ""]})", "prompt[1]: must not be empty"},
           {R"({"prompt": [[1, 2], [300]]})", "prompt[1]: token id 300 is outside the vocabulary (256)"},
           {R"({"prompt": ["a", "b", "c", "d", "e"], "n": 16})", "n: 5 prompts of 16 choices each exceed the limit of 64 choices"},
           {R"({"prompt": ["a", "b"], "session": "s"})", "session: a batch of prompts cannot continue one session"}}) {
    auto bad = http_request(port, "POST", "/v1/completions", body);
    EXPECT_EQ(bad.status, 400) << body;
    EXPECT_EQ(bad.json()["error"]["message"], error) << body;
  }
  json many = json::array();
  for (int i = 0; i < 65; ++i) many.push_back("x");
  EXPECT_EQ(http_request(port, "POST", "/v1/completions", json{{"prompt", many}}.dump()).json()["error"]["message"],
            "prompt: 65 prompts exceed the limit of 64");
}

// A batch the queue cannot take whole is refused whole: the prompts already queued are cancelled first.
TEST(Http, ABatchTheQueueCannotHoldIsRefusedWhole) {
  Server server("--config " + config_file(std::string("[scheduler]\nmax_slots = 1\n[server]\nqueue_length = 2\n") + kHoldingCap));
  ASSERT_GT(server.port(), 0) << server.output();
  Client a(server.port());
  ASSERT_NO_FATAL_FAILURE(hold_the_only_slot(a));
  a.send(R"({"id": "wait", "prompt": "Hello", "max_tokens": 5})");  // one of the queue's two places
  auto queued = [&] { return http_request(server.http_port(), "GET", "/health").json()["queued"].get<int>(); };
  for (int i = 0; i < 200 && queued() != 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(queued(), 1);
  // The first prompt takes the other place; the second finds none.
  auto h = http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": ["Hello", "There"], "max_tokens": 5})");
  EXPECT_EQ(h.status, 429) << h.body;
  EXPECT_EQ(h.json()["error"]["message"].get<std::string>().rfind("overloaded", 0), 0u) << h.body;
  EXPECT_EQ(queued(), 1);  // the batch's first prompt left with it
  a.send(R"({"cancel": "run"})");
  a.send(R"({"cancel": "wait"})");
  ASSERT_FALSE(a.until_done("run").empty());
  ASSERT_FALSE(a.until_done("wait").empty());
  auto after = http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": ["Hello", "There"], "max_tokens": 5})");
  EXPECT_EQ(after.status, 200) << after.body;  // nothing of the refused batch is left in the queue
  EXPECT_EQ(after.json()["choices"].size(), 2u);
}

// vLLM's tokenizer routes, which lm-evaluation-harness's remote tokenizer probes and uses.
TEST(Http, TheModelsTokenizerIsServed) {
  Server server("--auth-token t0k");
  ASSERT_GT(server.http_port(), 0) << server.output();
  const int port = server.http_port();
  const std::string auth = "Authorization: Bearer t0k\r\n";
  auto t = http_request(port, "POST", "/tokenize", R"({"prompt": "The man", "add_special_tokens": false})", auth);
  ASSERT_EQ(t.status, 200) << t.body;
  EXPECT_EQ(t.json()["tokens"], json({84, 104, 101, 32, 109, 97, 110}));
  EXPECT_EQ(t.json()["count"], 7);
  auto d = http_request(port, "POST", "/detokenize", R"({"tokens": [84, 104, 101, 32, 109, 97, 110]})", auth);
  EXPECT_EQ(d.json()["prompt"], "The man");
  auto info = http_request(port, "GET", "/tokenizer_info", "", auth);
  ASSERT_EQ(info.status, 200) << info.body;
  EXPECT_TRUE(info.json().contains("eos_token"));
  EXPECT_TRUE(info.json()["eos_token"].is_null());  // bytes have no end-of-text token
  EXPECT_EQ(http_request(port, "POST", "/tokenize", R"({"prompt": "x"})").status, 401);
  EXPECT_EQ(http_request(port, "POST", "/tokenize", R"({"prompt": "x"})", "Authorization: Bearer t0\r\n").status, 401);
  EXPECT_EQ(http_request(port, "POST", "/tokenize", R"({"prompt": "x"})", "Authorization: Bearer t0kk\r\n").status, 401);
  EXPECT_EQ(http_request(port, "POST", "/tokenize", R"({"prompt": "x"})", "Authorization: t0k\r\n").status, 401);
  EXPECT_EQ(http_request(port, "POST", "/tokenize", R"({"prompt": "x"})", "Authorization: bearer t0k\r\n").status, 200);
  auto bad = http_request(port, "POST", "/detokenize", R"({"tokens": [1, 256]})", auth);
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.json()["error"]["message"], "tokens: token id 256 is outside the vocabulary (256)");
  EXPECT_EQ(http_request(port, "POST", "/tokenize", R"({"text": "x"})", auth).json()["error"]["message"], "prompt: must be a string");
  EXPECT_EQ(http_request(port, "POST", "/tokenize", "[1]", auth).json()["error"]["message"], "the body must be a JSON object");
  EXPECT_EQ(http_request(port, "POST", "/detokenize", R"({"tokens": [1,})", auth).json()["error"]["message"],
            "malformed JSON body at byte 15: unexpected '}'; expected '[', '{', or a literal");
  EXPECT_EQ(http_request(port, "GET", "/tokenize", "", auth).status, 405);
}

// A web page may call the API from a browser when its origin is allowed (CORS): the preflight is answered
// without the token a browser does not send with it, and every answer (streams and refusals too) names
// the origin; a page of another origin is told why, and without --allow-origin nothing changes.
TEST(Http, BrowserPagesOfAllowedOriginsMayCallTheApi) {
  Server server("--auth-token t0k --allow-origin https://ui.example --allow-origin http://localhost:3000");
  ASSERT_GT(server.http_port(), 0) << server.output();
  const int port = server.http_port();
  const std::string auth = "Authorization: Bearer t0k\r\n", from_ui = "Origin: https://ui.example\r\n";
  auto pre = http_request(port, "OPTIONS", "/v1/chat/completions", "",
                          from_ui + "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n");
  EXPECT_EQ(pre.status, 204) << pre.body;
  EXPECT_EQ(pre.headers["access-control-allow-origin"], "https://ui.example");
  EXPECT_NE(pre.headers["access-control-allow-methods"].find("POST"), std::string::npos);
  EXPECT_EQ(pre.headers["access-control-allow-headers"], "authorization, content-type");
  const std::string body = R"({"prompt": "The man", "max_tokens": 3, "temperature": 0})";
  auto plain = http_request(port, "POST", "/v1/completions", body, auth + "Origin: http://localhost:3000\r\n");
  EXPECT_EQ(plain.status, 200) << plain.body;
  EXPECT_EQ(plain.headers["access-control-allow-origin"], "http://localhost:3000");
  auto streamed = http_request(port, "POST", "/v1/completions", R"({"prompt": "The man", "max_tokens": 3, "stream": true})", auth + from_ui);
  EXPECT_EQ(streamed.status, 200) << streamed.body;
  EXPECT_EQ(streamed.headers["access-control-allow-origin"], "https://ui.example");
  auto unauthorized = http_request(port, "POST", "/v1/completions", body, from_ui);
  EXPECT_EQ(unauthorized.status, 401);
  EXPECT_EQ(unauthorized.headers["access-control-allow-origin"], "https://ui.example");  // the page can read why
  auto state = http_request(port, "GET", "/v1/sessions/none/state", "", auth + from_ui);
  EXPECT_NE(state.headers["access-control-expose-headers"].find("Skein-Session-Tokens"), std::string::npos);

  auto other = http_request(port, "OPTIONS", "/v1/completions", "", "Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n");
  EXPECT_EQ(other.status, 403);
  EXPECT_EQ(other.json()["error"]["message"],
            "cross-origin requests from https://evil.example are not allowed (skein serve --allow-origin, [server] allow_origins)");
  EXPECT_EQ(other.headers.count("access-control-allow-origin"), 0u);
  EXPECT_EQ(http_request(port, "POST", "/v1/completions", body, auth + "Origin: https://evil.example\r\n").headers.count("access-control-allow-origin"), 0u);
  EXPECT_EQ(http_request(port, "OPTIONS", "/v1/completions").status, 405);  // not a preflight

  Server closed;  // no origin allowed: a page's call is answered without the header its browser needs
  ASSERT_GT(closed.http_port(), 0) << closed.output();
  auto none = http_request(closed.http_port(), "POST", "/v1/completions", body, from_ui);
  EXPECT_EQ(none.status, 200);
  EXPECT_EQ(none.headers.count("access-control-allow-origin"), 0u);
  EXPECT_EQ(http_request(closed.http_port(), "OPTIONS", "/v1/completions", "", from_ui + "Access-Control-Request-Method: POST\r\n").status, 403);

  Server any("--allow-origin '*'");
  ASSERT_GT(any.http_port(), 0) << any.output();
  EXPECT_EQ(http_request(any.http_port(), "GET", "/v1/models", "", "Origin: https://anywhere.example\r\n").headers["access-control-allow-origin"], "*");
}

TEST(Http, ModelsHealthAndMetrics) {
  Server server;
  ASSERT_GT(server.http_port(), 0) << server.output();
  auto m = http_request(server.http_port(), "GET", "/v1/models");
  EXPECT_EQ(m.json()["data"][0]["id"], "tiny-rwkv-5v2-730K");
  auto h = http_request(server.http_port(), "GET", "/health");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.json()["status"], "ok");
  http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": "Hello", "max_tokens": 5})");
  auto metrics = http_request(server.http_port(), "GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.headers["content-type"].rfind("text/plain", 0), 0u);
  for (const char* name : {"skein_queue_depth ", "skein_requests_running ", "skein_slots_used ", "skein_tokens_per_second{direction=\"in\"}",
                           "skein_stage_busy_fraction{stage=\"0\"}", "skein_request_duration_seconds_bucket", "skein_time_to_first_token_seconds_count 1",
                           "skein_requests_total{finish_reason=\"length\"} 1", "skein_prefix_cache_hit_rate", "skein_generated_tokens_total 5"})
    EXPECT_NE(metrics.body.find(name), std::string::npos) << name;
}

// A sample's value in a Prometheus text body ("NAME VALUE" at a line's start), NaN when absent.
double metric_value(const std::string& body, const std::string& name) {
  const size_t at = body.find("\n" + name + " ");
  return at == std::string::npos ? std::numeric_limits<double>::quiet_NaN() : std::stod(body.substr(at + name.size() + 2));
}

// What the kernel says a process holds in memory now.
double resident_bytes(pid_t pid) {
  std::ifstream statm("/proc/" + std::to_string(pid) + "/statm");
  uint64_t pages_virtual = 0, pages_resident = 0;
  statm >> pages_virtual >> pages_resident;
  return double(pages_resident) * double(sysconf(_SC_PAGESIZE));
}

// /metrics has the standard process_* figures of the serving process and every stage's resident
// memory, each what the kernel says of that process (a leak on any rank shows on a dashboard).
TEST(Http, MetricsShowEveryProcessesMemory) {
  Server one;
  ASSERT_GT(one.http_port(), 0) << one.output();
  const std::string body = http_request(one.http_port(), "GET", "/metrics").body;
  const double rss = resident_bytes(one.pid());
  ASSERT_GT(rss, 1e6);
  EXPECT_NEAR(metric_value(body, "process_resident_memory_bytes"), rss, 0.2 * rss) << body;
  EXPECT_NEAR(metric_value(body, "skein_stage_resident_memory_bytes{stage=\"0\"}"), rss, 0.2 * rss) << "alone, the server is stage 0";
  EXPECT_GT(metric_value(body, "process_virtual_memory_bytes"), rss);
  const double fds = double(std::distance(std::filesystem::directory_iterator("/proc/" + std::to_string(one.pid()) + "/fd"), {}));
  EXPECT_NEAR(metric_value(body, "process_open_fds"), fds, 3) << "the listening sockets, the log, the scrape's connection";
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_NEAR(metric_value(body, "process_start_time_seconds"), now, 60);
  EXPECT_GT(metric_value(body, "process_cpu_seconds_total"), 0);

  Server cluster("", 3);
  ASSERT_GT(cluster.http_port(), 0) << cluster.output();
  std::map<int, pid_t> ranks;  // stage k is rank k + 1
  const std::regex logged("rank ([12]) \\([^,]*, pid ([0-9]+)\\)");
  for (int i = 0; i < 100 && ranks.size() < 2; ++i) {  // stage ranks may report after the coordinator's ready line
    const std::string out = cluster.output();
    for (std::sregex_iterator m(out.begin(), out.end(), logged), end; m != end; ++m)
      ranks[std::stoi((*m)[1])] = pid_t(std::stoi((*m)[2]));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(ranks.size(), 2u) << cluster.output();
  const std::string cluster_body = http_request(cluster.http_port(), "GET", "/metrics").body;
  for (int stage : {0, 1}) {
    const double stage_rss = resident_bytes(ranks[stage + 1]);
    EXPECT_NEAR(metric_value(cluster_body, "skein_stage_resident_memory_bytes{stage=\"" + std::to_string(stage) + "\"}"), stage_rss, 0.2 * stage_rss)
        << cluster_body;
  }
}

TEST(Http, BadRequestsGetClearErrorsAndOthersCarryOn) {
  Server server("--auth-token s3cret");
  ASSERT_GT(server.http_port(), 0) << server.output();
  const std::string auth = "Authorization: Bearer s3cret\r\n";
  EXPECT_EQ(http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": "x"})").status, 401);
  EXPECT_EQ(http_request(server.http_port(), "GET", "/v1/models", "", "Authorization: Bearer wrong\r\n").status, 401);
  EXPECT_EQ(http_request(server.http_port(), "GET", "/health").status, 200);  // probes need no token
  // A session upload without the token is refused on its headers, before a state file's worth of body.
  Client headers_only(server.http_port());
  headers_only.send_raw("PUT /v1/sessions/s/state HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\n\r\n");
  EXPECT_EQ(headers_only.rest().rfind("HTTP/1.1 401", 0), 0u);
  struct Case {
    std::string method, target, body;
    int status;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{{"POST", "/v1/completions", "{oops", 400, "malformed JSON"},
                                         {"POST", "/v1/completions", R"({"prompt": "x", "bogus": 1})", 400, "unknown parameter 'bogus'"},
                                         {"POST", "/v1/completions", R"({"prompt": "x", "temperature": -1})", 400, "temperature"},
                                         {"POST", "/v1/completions", R"({"prompt": "x", "max_tokens": 1e9})", 400, "max_tokens"},
                                         {"POST", "/v1/completions", R"({"prompt": [1, 300]})", 400, "outside the vocabulary"},
                                         {"POST", "/v1/completions", R"({"prompt": "x", "n": 17})", 400, "n: must be between 1 and 16, got 17"},
                                         {"POST", "/v1/completions", R"({"prompt": "x", "n": 2, "session": "s"})", 400, "n: several samples cannot continue one session"},
                                         {"POST", "/v1/chat/completions", R"({"messages": []})", 400, "messages"},
                                         {"POST", "/v1/chat/completions", R"({"messages": [{"role": "wizard", "content": "x"}]})", 400, "role"},
                                         {"POST", "/v1/completions", R"({"prompt": "x", "session": "../x"})", 400, "session"},
                                         {"GET", "/v1/completions", "", 405, "method not allowed"},
                                         {"GET", "/v2/nothing", "", 404, "no route"},
                                         // not UTF-8: echoed with U+FFFD (JSON cannot carry the byte; the server must not throw)
                                         {"GET", "/v2/\x9a", "", 404, "no route for /v2/\xef\xbf\xbd"}}) {
    auto r = http_request(server.http_port(), c.method, c.target, c.body, auth);
    EXPECT_EQ(r.status, c.status) << c.body << " -> " << r.body;
    ASSERT_FALSE(r.body.empty()) << c.body;
    EXPECT_NE(r.json()["error"]["message"].get<std::string>().find(c.message), std::string::npos) << r.body;
  }
  auto big = http_request(server.http_port(), "POST", "/v1/completions", std::string(2 << 20, ' '), auth);
  EXPECT_EQ(big.status, 413);
  // A client that sends all of a refused body before it reads (Python's urllib, many SDKs) gets the
  // 413, not a reset it would report as a broken pipe.
  Client writer(server.http_port());
  const std::string body(16 << 20, ' ');
  EXPECT_TRUE(writer.send_all_then_end("POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\nContent-Length: " +
                                       std::to_string(body.size()) + "\r\n\r\n" + body));
  EXPECT_EQ(writer.rest().rfind("HTTP/1.1 413", 0), 0u);
  Client garbage(server.http_port());
  garbage.send_raw(std::string("\xff\xfe\x00\x01 not http\r\n\r\n", 18));
  EXPECT_EQ(garbage.rest().rfind("HTTP/1.1 400", 0), 0u);
  auto ok = http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": "The man said", "max_tokens": 5, "temperature": 0})", auth);
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.json()["choices"][0]["text"], " to a");
  auto text = http_request(server.http_port(), "POST", "/v1/chat/completions",
                           R"({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "response_format": {"type": "text"}})", auth);
  EXPECT_EQ(text.status, 200) << text.body;  // plain text named explicitly, as some clients do
}

// OpenAI's logit_bias over HTTP and TCP, in one process and on a 3-rank cluster (where the bias rides
// the sampling parameters to the last stage): +100 makes a byte the greedy choice, -100 keeps one out.
TEST(Http, LogitBiasSteersTheTextAlsoOnTheCluster) {
  for (int ranks : {1, 3}) {
    SCOPED_TRACE(ranks);
    Server server("", ranks);
    ASSERT_GT(server.http_port(), 0) << server.output();
    auto complete = [&](const std::string& extra) {
      auto r = http_request(server.http_port(), "POST", "/v1/completions",
                            R"({"prompt": "The man said", "max_tokens": 6, "temperature": 0)" + extra + "}");
      return r.status == 200 ? r.json()["choices"][0]["text"].get<std::string>() : "status " + std::to_string(r.status) + ": " + r.body;
    };
    EXPECT_EQ(complete(""), " to a ");
    EXPECT_EQ(complete(R"(, "logit_bias": {"65": 100})"), "AAAAAA");
    const std::string no_space = complete(R"(, "logit_bias": {"32": -100})");
    EXPECT_EQ(no_space.find(' '), std::string::npos) << no_space;
    auto chat = http_request(server.http_port(), "POST", "/v1/chat/completions",
                             R"({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0, "logit_bias": {"66": 100}})");
    ASSERT_EQ(chat.status, 200) << chat.body;
    EXPECT_EQ(chat.json()["choices"][0]["message"]["content"], "BBB");
    Client tcp(server.port());
    tcp.send(R"({"id": "c", "prompt": "The man said", "max_tokens": 4, "temperature": 0, "stream": false, "logit_bias": {"67": 100}})");
    auto events = tcp.until_done("c");
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back()["text"], "CCCC") << events.back().dump();
  }
  Server server;
  for (auto [bias, message] : {std::pair{R"({"x": 1})", "logit_bias: 'x' is not a token id"},
                               {R"({"65": 101})", "logit_bias: the bias of token 65 must be between -100 and 100, got 101"},
                               {R"({"256": 1})", "logit_bias: token id 256 is outside the vocabulary (256)"},
                               {R"([65])", "logit_bias: must be an object of token id -> bias"}}) {
    auto r = http_request(server.http_port(), "POST", "/v1/completions", std::string(R"({"prompt": "x", "logit_bias": )") + bias + "}");
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_EQ(r.json()["error"]["message"], message) << r.body;
  }
}

// A model's head may be wider than its tokenizer (65536 outputs, 65529 World entries; id 0 has no text
// either), and random-weight models sample those ids. A sampled id without text adds no text: the
// request completes, and the server stays up (one such token used to end every request on it).
TEST(Http, SampledIdsWithoutTextAddNoTextAndTheServerCarriesOn) {
  const std::string model = temp_dir() + "/wide-head.pth";
  auto made = run_skein("make-model --arch v7 --layers 1 --embd 64 --vocab 65536 --seed 1 --dtype fp32 -o " + model);
  ASSERT_EQ(made.exit_code, 0) << made.output;
  Server server("--tokenizer world:" + shared_dir() + "/tokenizers/rwkv_vocab_v20230424.txt", 1, model);
  ASSERT_GT(server.http_port(), 0) << server.output();
  for (bool stream : {false, true}) {
    json body = {{"prompt", "Hello"}, {"max_tokens", 3}, {"logit_bias", {{"65535", 100}}}, {"stream_options", {{"include_usage", true}}}, {"logprobs", 1},
                 {"stop", json::array()}, {"stream", stream}};
    const HttpReply r = http_request(server.http_port(), "POST", "/v1/completions", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const json last = stream ? sse_events(r.body).rbegin()[1] : r.json();
    EXPECT_EQ(last["usage"]["completion_tokens"], 3) << r.body;
    if (!stream) {
      EXPECT_EQ(last["choices"][0]["text"], "");
    }
  }
  Client tcp(server.port());
  tcp.send(R"({"id": "t", "prompt": "Hello", "max_tokens": 3, "stream": false, "logit_bias": {"65535": 100}})");
  const json done = tcp.until_done("t").back();
  EXPECT_EQ(done["event"], "done") << done;
  EXPECT_EQ(done["completion_tokens"], 3) << done;
  EXPECT_EQ(http_request(server.http_port(), "GET", "/health").status, 200);
  EXPECT_EQ(http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": "Hello", "max_tokens": 2})").status, 200);
}

// OpenAI bodies corrupted from the fuzz seeds, sent for real: what the parser accepts is answered 200 in
// full (a JSON body, or a stream that ends with [DONE]), what it refuses 400 with the parser's message;
// nothing else, and a greedy request afterwards gives the text it gave before.
TEST(Http, CorruptedBodiesAreServedOrRefusedAndLeaveTheServerSound) {
  const std::string cfg_path = temp_dir() + "/chaos.toml";
  write_file(cfg_path, "[server]\nmax_tokens_cap = 24\nmax_prompt_tokens = 512\n[sampling]\nmax_tokens = 16\n");
  Server server("--config " + cfg_path);
  ASSERT_GT(server.http_port(), 0) << server.output();
  const Config cfg = load_config(cfg_path);
  const ApiLimits limits = api_limits(cfg);  // what the server parses with
  const ByteTokenizer tok;
  auto probe = [&] {
    auto r = http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": "The man said", "max_tokens": 12, "temperature": 0})");
    return r.status == 200 ? r.json()["choices"][0]["text"].get<std::string>() : "status " + std::to_string(r.status);
  };
  const std::string before = probe();

  fuzz::Corruptor corrupt(37);
  int accepted = 0, refused = 0;
  for (const bool chat : {false, true}) {
    const std::vector<std::string> seeds = fuzz::seeds(chat ? "openai_chat" : "openai_completion");
    for (int i = 0; i < 300; ++i) {
      const std::string body = corrupt.json(seeds[corrupt.below(seeds.size())]);
      std::string refusal;
      bool stream = false;
      try {
        stream = parse_openai_request(body, chat, tok, 256, limits, cfg.chat).stream;
      } catch (const Error& e) {
        refusal = e.what();
      }
      auto r = http_request(server.http_port(), "POST", chat ? "/v1/chat/completions" : "/v1/completions", body);
      if (refusal.empty()) {
        ++accepted;
        ASSERT_EQ(r.status, 200) << body << " -> " << r.body;
        if (stream) EXPECT_NE(r.body.rfind("data: [DONE]"), std::string::npos) << body << " -> " << r.body;
        else EXPECT_FALSE(r.json()["choices"].empty()) << body << " -> " << r.body;
      } else {
        ++refused;
        ASSERT_EQ(r.status, 400) << body << " -> " << r.body;
        const std::string message = r.json()["error"]["message"];
        EXPECT_NE(message.find(refusal.substr(0, 40)), std::string::npos) << message << " vs " << refusal;
      }
    }
  }
  EXPECT_GT(accepted, 20);
  EXPECT_GT(refused, 100);
  EXPECT_EQ(probe(), before);
}

// A stage that stops answering: /health turns 503 ("stalled") while requests wait, before the
// heartbeat watchdog ends the job.
TEST(Http, HealthFailsWhileAStageIsStalled) {
  Server server("--config " + config_file("[server]\nstall_seconds = 0.5\n"), 3);
  ASSERT_GT(server.http_port(), 0) << server.output();
  std::smatch m;
  std::string out;
  for (int i = 0; i < 100; ++i) {  // stage ranks may report after the coordinator's ready line
    out = server.output();
    if (std::regex_search(out, m, std::regex("rank 2 \\([^,]*, pid ([0-9]+)\\)"))) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(m.empty()) << out;
  pid_t stage = pid_t(std::stoi(m[1]));
  EXPECT_EQ(http_request(server.http_port(), "GET", "/health").status, 200);
  kill(stage, SIGSTOP);
  Client c(server.port());
  c.send(R"({"id": "w", "prompt": "Hello", "max_tokens": 200})");
  int status = 200;
  for (int i = 0; i < 60 && status == 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    status = http_request(server.http_port(), "GET", "/health").status;
  }
  kill(stage, SIGCONT);
  EXPECT_EQ(status, 503);
}

std::string generate_text(Client& c, const std::string& id, const std::string& prompt, int n, const std::string& session = "") {
  json req = {{"id", id}, {"prompt", prompt}, {"max_tokens", n}, {"temperature", 0}, {"stream", false}};
  if (!session.empty()) req["session"] = session;
  c.send(req.dump());
  auto events = c.until_done(id);
  if (events.empty() || events.back()["event"] != "done") return "<error: " + (events.empty() ? std::string("none") : events.back().dump()) + ">";
  return events.back()["text"];
}

// Sessions over the TCP protocol on a 3-rank cluster: turns continue the state kept in the stages'
// slots, a SIGTERM saves them, and a new cluster with the same folder continues them.
TEST(Http, SessionsOnTheClusterSurviveARestart) {
  std::string dir = temp_dir() + "/sessions";
  std::string history;
  {
    Server server("--sessions-dir " + dir, 3);
    ASSERT_GT(server.port(), 0) << server.output();
    Client c(server.port());
    std::string a = generate_text(c, "1", "The man said", 10, "talk");
    std::string b = generate_text(c, "2", " and", 10, "talk");
    history = "The man said" + a + " and" + b;
    EXPECT_EQ(generate_text(c, "3", "The man said" + a + " and", 10), b);  // the same as sending it all
    c.send(R"({"op": "list_sessions", "id": "l"})");
    auto l = c.event();
    ASSERT_EQ(l["event"], "sessions") << l;
    EXPECT_EQ(l["sessions"][0]["session"], "talk");
    EXPECT_EQ(l["sessions"][0]["where"], "slot");
    c.send(R"({"op": "delete_session", "session": "nope"})");
    EXPECT_EQ(c.event()["event"], "error");
    // A fork is copied in the stages' slots and goes on as its source would.
    c.send(R"({"op": "fork_session", "session": "talk", "to": "branch", "id": "f"})");
    auto f = c.event();
    EXPECT_EQ(f, nlohmann::json::parse(R"({"id": "f", "event": "ok", "op": "fork_session", "session": "talk", "to": "branch"})"));
    EXPECT_EQ(generate_text(c, "b1", ". Then", 10, "branch"), generate_text(c, "b2", history + ". Then", 10));
    c.send(R"({"op": "fork_session", "session": "talk"})");
    EXPECT_NE(c.event()["error"].get<std::string>().find("fork_session needs \"to\""), std::string::npos);
    c.send(R"({"op": "save_session", "session": "talk", "to": "x"})");
    EXPECT_NE(c.event()["error"].get<std::string>().find("unknown field 'to' in a save_session request"), std::string::npos);
    server.terminate();  // mpirun forwards SIGTERM to every rank (and reports that it did so in its exit code)
    EXPECT_NE(server.output().find("skein: server stopped"), std::string::npos) << server.output();
  }
  EXPECT_TRUE(std::filesystem::exists(dir + "/talk.state"));
  Server again("--sessions-dir " + dir, 3);
  ASSERT_GT(again.port(), 0) << again.output();
  Client c(again.port());
  c.send(R"({"op": "list_sessions"})");
  EXPECT_EQ(c.event()["sessions"][0]["where"], "disk");
  std::string next = generate_text(c, "4", ". Then", 10, "talk");
  EXPECT_EQ(next, generate_text(c, "5", history + ". Then", 10));
}

// With save_interval_s, sessions are saved while the server runs: a crash, which saves nothing on its
// way out, loses nothing of a conversation idle for an interval.
TEST(Http, SessionsSavedOnAnIntervalSurviveACrash) {
  const std::string dir = temp_dir() + "/autosave", model = " --model " + shared_dir() + "/models/tiny-rwkv-5v2-730K.pth";
  const std::string cfg = config_file("[sessions]\nsave_interval_s = 1\n");
  auto refused = run_skein("serve --port 0 --config " + cfg + model);
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.output.find("[sessions] save_interval_s: needs persist = true and a dir"), std::string::npos) << refused.output;
  std::string history;
  {
    Server server("--sessions-dir " + dir + " --config " + cfg);
    ASSERT_GT(server.port(), 0) << server.output();
    Client c(server.port());
    history = "The man said" + generate_text(c, "1", "The man said", 10, "talk");
    for (int i = 0; i < 100 && !std::filesystem::exists(dir + "/talk.json"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(std::filesystem::exists(dir + "/talk.json")) << "not saved within 5 s";
    server.crash();
  }
  Server again("--sessions-dir " + dir + " --config " + cfg);
  ASSERT_GT(again.port(), 0) << again.output();
  Client c(again.port());
  EXPECT_EQ(generate_text(c, "2", " and", 10, "talk"), generate_text(c, "3", history + " and", 10));
}

// The load generator against a 3-rank cluster: every response arrives whole (it exits non-zero on any
// lost or garbled response) and the figures are printed. Two of its clients are urgent: with 16
// clients on 8 slots they preempt the others all along, and still nothing is lost or garbled.
TEST(Http, LoadGeneratorLosesNothingOnTheCluster) {
  Server server("--config " + config_file("[scheduler]\nmax_slots = 8\n"), 3);
  ASSERT_GT(server.port(), 0) << server.output();
  auto r = run_skein("bench --server 127.0.0.1:" + std::to_string(server.port()) + " --clients 16 --urgent 2 --duration 3 --max-tokens 16");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("0 lost, 0 garbled"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("time to first token: p50"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("urgent (priority -1): "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find(" 0 completed"), std::string::npos) << r.output;
  const std::string metrics = http_request(server.http_port(), "GET", "/metrics").body;
  EXPECT_EQ(metrics.find("\nskein_preemptions_total 0\n"), std::string::npos) << "no request was preempted";
  // Several samples of long token prompts, each sample's events checked on their own: with 8 slots
  // some samples copy their first's state and others wait to prefill alone.
  r = run_skein("bench --server 127.0.0.1:" + std::to_string(server.port()) + " --clients 4 --samples 3 --prompt-tokens 60 --duration 3 --max-tokens 8");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("3 samples of 60-token prompts"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("0 lost, 0 garbled"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find(" 0 completed"), std::string::npos) << r.output;
}

// A full queue answers "overloaded" at once (TCP and HTTP 429); a connection over its request limit is
// told so; the running request is untouched.
TEST(Http, FullQueueAndConnectionLimitsAreExplicit) {
  Server server("--config " + config_file(std::string("[scheduler]\nmax_slots = 1\n[server]\nqueue_length = 1\nper_connection_requests = 2\n") + kHoldingCap));
  ASSERT_GT(server.port(), 0) << server.output();
  Client a(server.port());
  ASSERT_NO_FATAL_FAILURE(hold_the_only_slot(a));
  a.send(R"({"id": "wait", "prompt": "Hello", "max_tokens": 5})");  // waits for the slot
  a.send(R"({"id": "third", "prompt": "Hello", "max_tokens": 5})");
  json e;
  do e = a.event(); while (e["event"] == "delta");
  EXPECT_EQ(e["id"], "third");
  EXPECT_NE(e["error"].get<std::string>().find("too many requests on this connection"), std::string::npos) << e;
  Client b(server.port());
  b.send(R"({"id": "over", "prompt": "Hello", "max_tokens": 5})");
  auto o = b.event();
  EXPECT_EQ(o["event"], "error");
  EXPECT_EQ(o["error"].get<std::string>().rfind("overloaded", 0), 0u) << o;
  auto h = http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": "Hello", "max_tokens": 5})");
  EXPECT_EQ(h.status, 429) << h.body;
  a.send(R"({"cancel": "run"})");
  auto run = a.until_done("run");
  ASSERT_FALSE(run.empty());
  EXPECT_EQ(run.back()["finish_reason"], "cancelled");
  auto w = a.until_done("wait");
  ASSERT_FALSE(w.empty());
  EXPECT_EQ(w.back()["finish_reason"], "length");  // the waiting request got the slot
}

// The prompt-length limit, and numbers that overflow a double (JSON's only way to spell infinity; NaN
// has no spelling at all), over TCP and HTTP.
TEST(Http, PromptLimitAndNonFiniteNumbersAreRefused) {
  Server server("--config " + config_file("[server]\nmax_prompt_tokens = 8\n"));
  ASSERT_GT(server.port(), 0) << server.output();
  Client c(server.port());
  c.send(R"({"id": "long", "prompt": "far more than eight bytes"})");
  EXPECT_EQ(c.event()["error"], "prompt: 25 tokens exceed the limit of 8");
  c.send(R"({"id": "inf", "prompt": "x", "temperature": 1e999})");
  EXPECT_EQ(c.event()["error"], "malformed JSON number overflow parsing '1e999'");
  c.send(R"({"id": "neg", "prompt": "x", "alpha_frequency": -1e999})");
  EXPECT_EQ(c.event()["error"], "malformed JSON number overflow parsing '-1e999'");
  // What and where, without the raw bytes nlohmann quotes ("last read: ...").
  c.send(R"({"id": "sur", "prompt": "\ud800x"})");
  EXPECT_EQ(c.event()["error"], "malformed JSON at byte 32: invalid string: surrogate U+D800..U+DBFF must be followed by U+DC00..U+DFFF");
  c.send(R"({"id": "big", "prompt": "x", "temperature": 1e300})");
  EXPECT_EQ(c.event()["error"], "temperature: 1e+300 is beyond a 32-bit float's range");
  c.send(R"({"id": "lit", "prompt": tru})");
  EXPECT_EQ(c.event()["error"], "malformed JSON at byte 28: invalid literal");
  auto h = http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": "far more than eight bytes"})");
  EXPECT_EQ(h.status, 400);
  EXPECT_EQ(h.json()["error"]["message"], "prompt: 25 tokens exceed the limit of 8");
  auto f = http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": "x", "top_p": 1e999})");
  EXPECT_EQ(f.json()["error"]["message"], "malformed JSON body number overflow parsing '1e999'");
  auto g = http_request(server.http_port(), "POST", "/v1/completions", R"({"prompt": "x",})");
  EXPECT_EQ(g.json()["error"]["message"], "malformed JSON body at byte 16: unexpected '}'; expected string literal");
  EXPECT_EQ(generate_text(c, "ok", "The man", 3), generate_text(c, "ok2", "The man", 3));  // still serving
}

// A client that starts a line and stalls is told so and dropped; one that stops reading its events is
// dropped once its unsent events pass the bound; everyone else carries on.
TEST(Http, StalledAndNonReadingClientsAreDropped) {
  // The deaf client's requests write more than the kernel's socket buffers hold (loopback send buffers
  // grow to 4 MiB; 8 x 30000 events are about 17 MB), so the server's own bound is what must give.
  Server server("--config " + config_file("[server]\nclient_timeout_s = 0.5\nclient_buffer_bytes = 2048\nper_connection_requests = 8\nmax_tokens_cap = 30000\n"));
  ASSERT_GT(server.port(), 0) << server.output();
  Client stalled(server.port());
  stalled.send_raw(R"({"id": "half", "prompt": )");
  auto e = stalled.event();
  EXPECT_EQ(e["event"], "error");
  EXPECT_NE(e["error"].get<std::string>().find("not finished within"), std::string::npos);
  EXPECT_EQ(stalled.line(), "");  // closed

  Client deaf(server.port(), 4096);  // tiny receive buffer, never read
  for (int i = 0; i < 8; ++i) deaf.send(R"({"id": "d)" + std::to_string(i) + R"(", "prompt": "Hello", "max_tokens": 30000})");
  Client good(server.port());
  EXPECT_EQ(generate_text(good, "g", "The man said", 5), " to a");
  bool dropped = false;
  for (int i = 0; i < 300 && !dropped; ++i) {  // up to 30 s: a loaded machine generates slowly
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    dropped = server.output().find("dropping a client that does not read") != std::string::npos;
  }
  EXPECT_TRUE(dropped) << server.output();
  EXPECT_EQ(generate_text(good, "g2", "The man said", 5), " to a");

  Server http_server("--config " + config_file("[server]\nclient_timeout_s = 0.5\n"));
  Client slow_http(http_server.http_port());
  slow_http.send_raw("POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"prompt\"");
  EXPECT_EQ(slow_http.rest().rfind("HTTP/1.1 408", 0), 0u);
}

}  // namespace
}  // namespace skein::test
