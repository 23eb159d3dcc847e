// Log-probabilities of sampled tokens: the scoring itself, the engine (raw logits, not the penalised
// ones the draw used), the stage wire, the TCP protocol and OpenAI's two shapes, one process and a
// cluster, against logits the `skein logits` command writes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/json_text.h"
#include "net/api_request.h"
#include "net/openai_logprobs.h"
#include "net/openai_request.h"
#include "net/stage_protocol.h"
#include "tests/golden_cases.h"
#include "tests/server_harness.h"
#include "tests/test_support.h"
#include "worker/token_logprobs.h"

namespace skein::test {
namespace {

using json = nlohmann::json;

std::vector<double> log_softmax(const float* logits, int V) {
  double mx = *std::max_element(logits, logits + V), sum = 0;
  for (int i = 0; i < V; ++i) sum += std::exp(double(logits[i]) - mx);
  std::vector<double> out(static_cast<size_t>(V));
  for (int i = 0; i < V; ++i) out[size_t(i)] = double(logits[i]) - mx - std::log(sum);
  return out;
}

// Token ids by descending logit, equal logits by id.
std::vector<int32_t> by_likelihood(const std::vector<float>& logits) {
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  return order;
}

TEST(Logprobs, ScoringIsLogSoftmaxWithTheLikeliestFirst) {
  const std::vector<float> logits = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f, 2.0f};
  const auto want = log_softmax(logits.data(), 6);
  SampledToken t{4};
  score_logprobs(logits.data(), 6, 4, t);
  EXPECT_TRUE(t.scored);
  EXPECT_NEAR(t.logprob, want[4], 1e-6);
  ASSERT_EQ(t.top.size(), 4u);
  const std::vector<int32_t> order = {1, 3, 5, 0};  // the tie of 1 and 3 by id
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(t.top[i].token, order[i]);
    EXPECT_NEAR(t.top[i].logprob, want[size_t(order[i])], 1e-6);
  }
  double total = 0;
  for (double l : want) total += std::exp(l);
  EXPECT_NEAR(total, 1.0, 1e-12);

  SampledToken none{1};
  score_logprobs(logits.data(), 6, 0, none);
  EXPECT_TRUE(none.scored);
  EXPECT_TRUE(none.top.empty());
  SampledToken all{1};
  score_logprobs(logits.data(), 6, 20, all);  // more than the vocabulary: every token
  EXPECT_EQ(all.top.size(), 6u);

  // A large vocabulary's tail still counts: 65536 equal logits give log(1/65536) each.
  std::vector<float> flat(65536, 7.0f);
  SampledToken f{123};
  score_logprobs(flat.data(), 65536, 2, f);
  EXPECT_NEAR(f.logprob, -std::log(65536.0), 1e-5);
  EXPECT_EQ(f.top[0].token, 0);
  EXPECT_EQ(f.top[1].token, 1);

  // A broken model's NaN neither crashes the ordering nor ranks first.
  std::vector<float> nan = {0.0f, NAN, 1.0f};
  SampledToken n{2};
  score_logprobs(nan.data(), 3, 3, n);
  EXPECT_EQ(n.top[0].token, 2);
  EXPECT_EQ(n.top[2].token, 1);
}

// Figures go out in their shortest form, and read back as the same float.
TEST(Logprobs, FiguresAreWrittenShortAndReadBackExactly) {
  EXPECT_EQ(json(json_float(-0.16969865560531616f)).dump(), "-0.16969866");
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> any(-40.0f, 0.0f);
  size_t bytes = 0;
  for (int i = 0; i < 100000; ++i) {
    const float f = any(rng);
    const std::string text = json(json_float(f)).dump();
    bytes += text.size();
    ASSERT_EQ(float(json::parse(text).get<double>()), f) << text;
  }
  EXPECT_LE(double(bytes) / 100000, 11.0);  // 19 as the float's exact value (nlohmann's Grisu2 misses the shortest form rarely)
  EXPECT_TRUE(json::parse(json(json_float(-INFINITY)).dump()).is_null());  // a token the model rules out
}

TEST(Logprobs, SampledTokensCrossTheStageWireIntact) {
  std::vector<SampledToken> rows(3);
  rows[0] = SampledToken(5);
  rows[1] = SampledToken(7, -0.25f, {{7, -0.25f}, {2, -1.5f}});
  rows[2] = SampledToken(9, -3.0f, {});
  const std::string bytes = encode_sampled(rows);
  EXPECT_EQ(bytes.size(), 8u + (8 + 4 + 16) + (8 + 4));  // a plain token costs 8 bytes
  auto back = decode_sampled(bytes, 3);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(back[i].token, rows[i].token);
    EXPECT_EQ(back[i].scored, rows[i].scored);
    EXPECT_EQ(back[i].logprob, rows[i].logprob);
    ASSERT_EQ(back[i].top.size(), rows[i].top.size());
    for (size_t k = 0; k < rows[i].top.size(); ++k) {
      EXPECT_EQ(back[i].top[k].token, rows[i].top[k].token);
      EXPECT_EQ(back[i].top[k].logprob, rows[i].top[k].logprob);
    }
  }
  EXPECT_THROW(decode_sampled(bytes.substr(0, bytes.size() - 1), 3), Error);
  EXPECT_THROW(decode_sampled(bytes + "x", 3), Error);
  EXPECT_THROW(decode_sampled(bytes, 4), Error);
  std::string bad = bytes;
  const int32_t many = 1000;
  std::memcpy(bad.data() + 4, &many, 4);
  EXPECT_THROW(decode_sampled(bad, 3), Error);
}

// The engine scores the logits the model gave, before the penalties the draw applied; the drawn
// token is the one the draw gives with or without scoring.
TEST(Logprobs, TheEngineScoresTheRawLogitsOfEveryArchitecture) {
  for (std::string m : {"tiny-rwkv-4v0-660K", "tiny-rwkv-5v1-730K", "tiny-rwkv-5v2-730K", "tiny-rwkv-6v0-3m-Q5_1dq", "tiny-rwkv-7v0-834K"}) {
    auto mut = load_for_test(shared_dir() + "/models/" + m + ".pth");
    Engine& e = *mut.model;
    const int V = e.dims().vocab;
    ByteTokenizer tok;
    const std::vector<int32_t> prompt = tok.encode("The man said");
    const auto head = std::span<const int32_t>(prompt).first(prompt.size() - 1), last = std::span<const int32_t>(prompt).last(1);
    SessionState a = e.new_state();
    e.forward(head, a, nullptr);
    SessionState b = a.clone(), c = a.clone();
    std::vector<float> logits(static_cast<size_t>(V));
    e.forward(last, b, logits.data());
    const auto order = by_likelihood(logits);
    const auto want = log_softmax(logits.data(), V);

    SampleRequest req;
    req.temperature = 0.9f;
    req.top_p = 0.95f;
    req.u = 0.37;
    req.penalties = {{order[0], 2.5f}, {order[1], INFINITY}};  // the draw sees these, the scores do not
    req.logprobs = 5;
    std::vector<float> penalised = logits;
    const int32_t drawn = sample_row(penalised.data(), V, req);

    SampledToken scored, plain;
    EngineSequence q{last, &a, nullptr, false};
    q.sample = &req;
    q.token = &scored;
    e.forward(std::span<const EngineSequence>(&q, 1));
    SampleRequest unscored = req;
    unscored.logprobs = -1;
    EngineSequence p{last, &c, nullptr, false};
    p.sample = &unscored;
    p.token = &plain;
    e.forward(std::span<const EngineSequence>(&p, 1));

    EXPECT_EQ(scored.token, drawn) << m;
    EXPECT_EQ(plain.token, drawn) << m;
    EXPECT_FALSE(plain.scored) << m;
    ASSERT_TRUE(scored.scored) << m;
    EXPECT_NEAR(scored.logprob, want[size_t(drawn)], 1e-5) << m;
    ASSERT_EQ(scored.top.size(), 5u) << m;
    for (size_t i = 0; i < 5; ++i) {
      EXPECT_EQ(scored.top[i].token, order[i]) << m << " rank " << i;
      EXPECT_NEAR(scored.top[i].logprob, want[size_t(order[i])], 1e-5) << m << " rank " << i;
    }
  }
}

TEST(Logprobs, RequestsAskForThemInRangeOrAreRefused) {
  ByteTokenizer tok;
  ApiLimits limits;
  auto tcp = [&](const std::string& extra) {
    return parse_api_line(R"({"id": "a", "prompt": "x")" + extra + "}", tok, 256, limits).generate->sampling.logprobs;
  };
  EXPECT_EQ(tcp(""), -1);
  EXPECT_EQ(tcp(R"(, "logprobs": 0)"), 0);
  EXPECT_EQ(tcp(R"(, "logprobs": 20)"), 20);
  auto tcp_error = [&](const std::string& extra) {
    try {
      tcp(extra);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(tcp_error(R"(, "logprobs": 21)"), "logprobs: must be between 0 and 20, got 21");
  EXPECT_EQ(tcp_error(R"(, "logprobs": -1)"), "logprobs: must be between 0 and 20, got -1");
  EXPECT_EQ(tcp_error(R"(, "logprobs": true)"), "logprobs: must be an integer");

  ChatConfig chat;
  auto openai = [&](bool is_chat, const std::string& extra) {
    const std::string body = is_chat ? R"({"messages": [{"role": "user", "content": "hi"}])" + extra + "}" : R"({"prompt": "x")" + extra + "}";
    try {
      return std::to_string(parse_openai_request(body, is_chat, tok, 256, limits, chat).sampling.logprobs);
    } catch (const Error& e) {
      return std::string(e.what());
    }
  };
  EXPECT_EQ(openai(false, ""), "-1");
  EXPECT_EQ(openai(false, R"(, "logprobs": null)"), "-1");
  EXPECT_EQ(openai(false, R"(, "logprobs": false)"), "-1");
  EXPECT_EQ(openai(false, R"(, "logprobs": 3)"), "3");
  EXPECT_EQ(openai(false, R"(, "logprobs": 21)"), "logprobs: must be between 0 and 20, got 21");
  EXPECT_EQ(openai(false, R"(, "logprobs": true)"), "logprobs: must be an integer");
  EXPECT_EQ(openai(false, R"(, "top_logprobs": 2)"), "unknown parameter 'top_logprobs'");
  EXPECT_EQ(openai(true, R"(, "logprobs": true)"), "0");
  EXPECT_EQ(openai(true, R"(, "logprobs": false)"), "-1");
  EXPECT_EQ(openai(true, R"(, "logprobs": true, "top_logprobs": 20)"), "20");
  EXPECT_EQ(openai(true, R"(, "logprobs": 3)"), "logprobs: must be true or false");
  EXPECT_EQ(openai(true, R"(, "top_logprobs": 2)"), "top_logprobs: needs \"logprobs\": true");
  EXPECT_EQ(openai(true, R"(, "logprobs": true, "top_logprobs": -1)"), "top_logprobs: must be between 0 and 20, got -1");
}

TEST(Logprobs, OpenAiShapesNameTokensByTextOrBytes) {
  ByteTokenizer tok;
  std::vector<SampledToken> t(3);
  t[0] = SampledToken('A', -0.5f, {{'A', -0.5f}, {'B', -1.0f}});
  t[1] = SampledToken(0xC3, -0.1f, {});  // the first byte of "é": not a character on its own
  t[2] = SampledToken(0xA9, -0.2f, {});
  EXPECT_EQ(openai_token_text(tok, 0xC3), "bytes:\\xc3");
  size_t offset = 10;
  json c = completion_logprobs(tok, t, offset);
  EXPECT_EQ(c["tokens"], json({"A", "bytes:\\xc3", "bytes:\\xa9"}));
  EXPECT_EQ(c["top_logprobs"][0], json({{"A", -0.5f}, {"B", -1.0f}}));
  EXPECT_EQ(c["text_offset"], json({10, 11, 12}));  // "é" is one character, started by its first byte
  EXPECT_EQ(offset, 12u);
  json chat = chat_logprobs(tok, t);
  ASSERT_EQ(chat["content"].size(), 3u);
  EXPECT_EQ(chat["content"][1]["bytes"], json({0xC3}));
  EXPECT_EQ(chat["content"][0]["top_logprobs"][1]["token"], "B");
  EXPECT_TRUE(chat["refusal"].is_null());
}

// The log-probability of each generated token at its position, from `skein logits` over prompt +
// generated tokens (the raw logits; penalties and temperature play no part).
std::vector<std::vector<double>> reference_logprobs(const std::string& model, const std::string& prompt, const std::vector<int32_t>& generated) {
  std::vector<int32_t> ids;
  for (unsigned char ch : prompt) ids.push_back(ch);
  ids.insert(ids.end(), generated.begin(), generated.end() - 1);
  const std::string out = temp_dir() + "/logprobs-ref.f32";
  auto r = run_skein("logits --model " + model + " --tokens " + join(ids) + " --all-positions --out " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const std::vector<float> logits = read_f32(out);
  std::vector<std::vector<double>> rows;
  for (size_t i = 0; i < generated.size(); ++i)
    rows.push_back(log_softmax(logits.data() + (prompt.size() - 1 + i) * 256, 256));
  return rows;
}

// A TCP request's scored tokens (from its deltas, or its done event) checked against the reference.
void expect_reference(const json& scored, const std::string& model, const std::string& prompt, int top) {
  ASSERT_TRUE(scored.is_array() && !scored.empty()) << scored.dump();
  std::vector<int32_t> generated;
  for (auto& s : scored) generated.push_back(s["token"]);
  const auto want = reference_logprobs(model, prompt, generated);
  for (size_t i = 0; i < scored.size(); ++i) {
    EXPECT_NEAR(scored[i]["logprob"].get<double>(), want[i][size_t(generated[i])], 1e-4) << "token " << i;
    ASSERT_EQ(scored[i]["top"].size(), size_t(top));
    for (size_t k = 0; k < size_t(top); ++k) {
      const auto& a = scored[i]["top"][k];
      EXPECT_NEAR(a["logprob"].get<double>(), want[i][a["token"].get<size_t>()], 1e-4) << "token " << i << " rank " << k;
      if (k) {
        EXPECT_GE(scored[i]["top"][k - 1]["logprob"].get<double>(), a["logprob"].get<double>());
      }
    }
  }
}

void check_tcp(int port, const std::string& model) {
  Client c(port);
  // Greedy and streamed: every delta scores each of its tokens, the drawn one first among the top.
  c.send(R"({"id": "g", "prompt": "The man said", "max_tokens": 16, "temperature": 0, "logprobs": 3})");
  json streamed = json::array();
  for (auto& e : c.until_done("g")) {
    if (e["event"] != "delta") continue;
    ASSERT_EQ(e["logprobs"].size(), e["tokens"].size()) << e.dump();
    for (size_t i = 0; i < e["tokens"].size(); ++i) {
      EXPECT_EQ(e["logprobs"][i]["token"], e["tokens"][i]);
      EXPECT_EQ(e["logprobs"][i]["top"][0]["token"], e["tokens"][i]);
      streamed.push_back(e["logprobs"][i]);
    }
  }
  EXPECT_EQ(streamed.size(), 16u);
  expect_reference(streamed, model, "The man said", 3);
  c.send(R"({"id": "p", "prompt": "The man said", "max_tokens": 16, "temperature": 0, "logprobs": 3, "stream": false})");
  auto done = c.until_done("p");
  ASSERT_FALSE(done.empty());
  EXPECT_EQ(done.back()["logprobs"], streamed);
  // Sampled with penalties: still the model's own figures.
  c.send(R"({"id": "s", "prompt": "It was", "max_tokens": 12, "temperature": 0.8, "alpha_presence": 1.0, "alpha_frequency": 0.5, "seed": 3, "logprobs": 2, "stream": false})");
  auto sampled = c.until_done("s");
  ASSERT_FALSE(sampled.empty());
  expect_reference(sampled.back()["logprobs"], model, "It was", 2);
  // Without asking, no logprobs.
  c.send(R"({"id": "n", "prompt": "It was", "max_tokens": 4})");
  for (auto& e : c.until_done("n")) EXPECT_FALSE(e.contains("logprobs")) << e.dump();
}

TEST(Logprobs, TcpRequestsGetTheModelsFigures) {
  Server server;
  ASSERT_GT(server.port(), 0) << server.output();
  check_tcp(server.port(), shared_dir() + "/models/tiny-rwkv-5v2-730K.pth");
}

// The last stage scores on its rank and sends the figures with the tokens.
TEST(Logprobs, TcpRequestsGetTheModelsFiguresFromTheCluster) {
  Server server("", 3);
  ASSERT_GT(server.port(), 0) << server.output();
  check_tcp(server.port(), shared_dir() + "/models/tiny-rwkv-5v2-730K.pth");
}

TEST(Logprobs, HttpCompletionsAndChatInOpenAisShapes) {
  Server server;
  ASSERT_GT(server.http_port(), 0) << server.output();
  const int port = server.http_port();
  auto r = http_request(port, "POST", "/v1/completions", R"({"prompt": "The man said", "max_tokens": 20, "temperature": 0, "logprobs": 2})");
  ASSERT_EQ(r.status, 200) << r.body;
  const json choice = r.json()["choices"][0];
  const json& lp = choice["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 20u) << lp.dump();
  std::string joined;
  for (auto& t : lp["tokens"]) joined += t.get<std::string>();
  EXPECT_EQ(joined, choice["text"]);
  for (size_t i = 0; i < 20; ++i) {
    EXPECT_EQ(lp["text_offset"][i], i);  // one byte, one character per token here
    EXPECT_LE(lp["top_logprobs"][i].size(), 2u);
    EXPECT_EQ(lp["top_logprobs"][i][lp["tokens"][i].get<std::string>()], lp["token_logprobs"][i]);  // greedy: the likeliest
  }
  // Streamed: the chunks' logprobs together are the plain reply's.
  auto s = http_request(port, "POST", "/v1/completions", R"({"prompt": "The man said", "max_tokens": 20, "temperature": 0, "logprobs": 2, "stream": true})");
  json tokens = json::array(), values = json::array(), offsets = json::array();
  for (auto& e : sse_events(s.body)) {
    if (e == "[DONE]" || e["choices"][0]["logprobs"].is_null()) continue;
    for (auto& k : e["choices"][0]["logprobs"]["tokens"]) tokens.push_back(k);
    for (auto& v : e["choices"][0]["logprobs"]["token_logprobs"]) values.push_back(v);
    for (auto& o : e["choices"][0]["logprobs"]["text_offset"]) offsets.push_back(o);
  }
  EXPECT_EQ(tokens, lp["tokens"]);
  ASSERT_EQ(values.size(), 20u);
  for (size_t i = 0; i < 20; ++i) EXPECT_NEAR(values[i].get<double>(), lp["token_logprobs"][i].get<double>(), 1e-5);
  EXPECT_EQ(offsets, lp["text_offset"]);
  // Not asked: null, as OpenAI sends it.
  auto plain = http_request(port, "POST", "/v1/completions", R"({"prompt": "The man said", "max_tokens": 4})");
  EXPECT_TRUE(plain.json()["choices"][0]["logprobs"].is_null());

  // Chat: every generated token, the reply's first space included though the content drops it.
  auto c = http_request(port, "POST", "/v1/chat/completions",
                        R"({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 12, "temperature": 0, "logprobs": true, "top_logprobs": 2})");
  ASSERT_EQ(c.status, 200) << c.body;
  const json reply = c.json();
  const json& content = reply["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), size_t(reply["usage"]["completion_tokens"].get<int>()));
  std::string bytes;
  for (auto& t : content) {
    ASSERT_EQ(t["top_logprobs"].size(), 2u);
    EXPECT_EQ(t["top_logprobs"][0]["token"], t["token"]);
    for (auto& b : t["bytes"]) bytes += char(b.get<int>());
  }
  std::string text = reply["choices"][0]["message"]["content"];
  EXPECT_NE(bytes.find(text), std::string::npos) << bytes << " / " << text;
  auto cs = http_request(port, "POST", "/v1/chat/completions",
                         R"({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 12, "temperature": 0, "logprobs": true, "stream": true})");
  json streamed = json::array();
  for (auto& e : sse_events(cs.body))
    if (e != "[DONE]" && !e["choices"].empty() && !e["choices"][0]["logprobs"].is_null())
      for (auto& t : e["choices"][0]["logprobs"]["content"]) streamed.push_back(t["logprob"]);
  ASSERT_EQ(streamed.size(), content.size());
  // (Near, not equal: the second request starts from the prefix cache, so its prompt ran in other chunks.)
  for (size_t i = 0; i < content.size(); ++i) EXPECT_NEAR(streamed[i].get<double>(), content[i]["logprob"].get<double>(), 1e-5);
}

// Log-softmax rows of `skein logits --all-positions` over `ids` (the tiny byte-level model).
std::vector<std::vector<double>> reference_rows(const std::vector<int32_t>& ids) {
  const std::string out = temp_dir() + "/logprobs-rows.f32";
  auto r = run_skein("logits --model " + shared_dir() + "/models/tiny-rwkv-5v2-730K.pth --tokens " + join(ids) + " --all-positions --out " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const std::vector<float> logits = read_f32(out);
  std::vector<std::vector<double>> rows;
  for (size_t i = 0; i * 256 < logits.size(); ++i) rows.push_back(log_softmax(logits.data() + i * 256, 256));
  return rows;
}

std::vector<int32_t> bytes_of(const std::string& s) { return std::vector<int32_t>(s.begin(), s.end()); }

// Prompt token i+1 scored under position i, against the reference.
void expect_prompt_scores(const json& scores, const std::string& prompt, int top) {
  const auto ids = bytes_of(prompt);
  ASSERT_EQ(scores.size(), ids.size() - 1) << scores.dump();
  const auto rows = reference_rows(ids);
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    EXPECT_EQ(scores[i]["token"], ids[i + 1]) << i;
    EXPECT_NEAR(scores[i]["logprob"].get<double>(), rows[i][size_t(ids[i + 1])], 1e-4) << "position " << i;
    ASSERT_EQ(scores[i]["top"].size(), size_t(top));
    for (auto& a : scores[i]["top"]) EXPECT_NEAR(a["logprob"].get<double>(), rows[i][a["token"].get<size_t>()], 1e-4) << "position " << i;
  }
}

// Prompts run in chunks of 7 tokens, micro-batches of 16 rows: a scored prompt spans many steps, its
// chunks share them with other requests, and every chunk's last position is scored against the next
// chunk's first token.
const char* kSmallSteps = "[scheduler]\nmicro_batch_tokens = 16\nprefill_chunk = 7\n";
const std::string kLongPrompt = "It was a dark and stormy night; the rain fell in torrents, except at occasional intervals.";

void check_prompt_scores(int port) {
  Client c(port);
  c.send(R"({"id": "other", "prompt": "The man said", "max_tokens": 30, "temperature": 0})");
  c.send(json{{"id", "p"}, {"prompt", kLongPrompt}, {"max_tokens", 3}, {"temperature", 0}, {"logprobs", 2}, {"prompt_logprobs", true}, {"stream", false}}.dump());
  c.send(json{{"id", "zero"}, {"prompt", kLongPrompt}, {"max_tokens", 0}, {"logprobs", 0}, {"prompt_logprobs", true}, {"stream", false}}.dump());
  c.send(json{{"id", "s"}, {"prompt", kLongPrompt}, {"max_tokens", 2}, {"temperature", 0}, {"logprobs", 2}, {"prompt_logprobs", true}}.dump());
  std::map<std::string, std::vector<json>> events;
  std::set<std::string> done;
  while (done.size() < 4) {
    json e = c.event();
    ASSERT_FALSE(e.is_null()) << "timed out";
    events[e["id"]].push_back(e);
    if (e["event"] == "done" || e["event"] == "error") done.insert(e["id"]);
  }
  const json& p = events["p"].back();
  ASSERT_EQ(p["event"], "done") << p.dump();
  expect_prompt_scores(p["prompt_logprobs"], kLongPrompt, 2);
  EXPECT_EQ(p["logprobs"].size(), 3u);
  const json& zero = events["zero"].back();
  ASSERT_EQ(zero["event"], "done") << zero.dump();
  EXPECT_EQ(zero["completion_tokens"], 0);
  EXPECT_EQ(zero["finish_reason"], "length");
  expect_prompt_scores(zero["prompt_logprobs"], kLongPrompt, 0);
  // Streamed: one "prompt" event, before the first delta.
  const auto& s = events["s"];
  ASSERT_GE(s.size(), 3u);
  ASSERT_EQ(s[0]["event"], "prompt") << s[0].dump();
  EXPECT_EQ(s[1]["event"], "delta");
  expect_prompt_scores(s[0]["logprobs"], kLongPrompt, 2);
  EXPECT_EQ(events["other"].back()["event"], "done");
}

TEST(Logprobs, PromptsAreScoredAcrossChunksAndSharedSteps) {
  const std::string config = temp_dir() + "/small-steps.toml";
  write_file(config, kSmallSteps);
  Server server("--config " + config);
  ASSERT_GT(server.port(), 0) << server.output();
  check_prompt_scores(server.port());
}

TEST(Logprobs, PromptsAreScoredOnTheCluster) {
  const std::string config = temp_dir() + "/small-steps.toml";
  write_file(config, kSmallSteps);
  Server server("--config " + config, 3);
  ASSERT_GT(server.port(), 0) << server.output();
  check_prompt_scores(server.port());
}

// What lm-evaluation-harness sends to score a continuation: echo, logprobs, max_tokens 1.
TEST(Logprobs, HttpEchoScoresThePromptAsOpenAiDoes) {
  Server server;
  ASSERT_GT(server.http_port(), 0) << server.output();
  const int port = server.http_port();
  const json ask = {{"prompt", kLongPrompt}, {"max_tokens", 1}, {"temperature", 0}, {"logprobs", 1}, {"echo", true}};
  auto r = http_request(port, "POST", "/v1/completions", ask.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json choice = r.json()["choices"][0];
  const json& lp = choice["logprobs"];
  const auto ids = bytes_of(kLongPrompt);
  ASSERT_EQ(lp["tokens"].size(), ids.size() + 1);
  std::string joined;
  for (auto& t : lp["tokens"]) joined += t.get<std::string>();
  EXPECT_EQ(joined, choice["text"]);
  EXPECT_EQ(choice["text"].get<std::string>().rfind(kLongPrompt, 0), 0u);
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  const auto rows = reference_rows(ids);
  for (size_t i = 1; i < ids.size(); ++i) {
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), rows[i - 1][size_t(ids[i])], 1e-4) << i;
    EXPECT_EQ(lp["text_offset"][i], i);
  }
  // Streamed: the echoed prompt first, with its figures, then the completion.
  json streamed = ask;
  streamed["stream"] = true;
  auto s = http_request(port, "POST", "/v1/completions", streamed.dump());
  auto events = sse_events(s.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[0]["choices"][0]["text"], kLongPrompt);
  EXPECT_EQ(events[0]["choices"][0]["logprobs"]["tokens"].size(), ids.size());
  std::string text;
  for (auto& e : events)
    if (e != "[DONE]") text += e["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(text, choice["text"]);
  // Echo alone repeats the prompt; echo with logprobs is for one choice without a session.
  auto plain = http_request(port, "POST", "/v1/completions", R"({"prompt": "The man said", "max_tokens": 3, "temperature": 0, "echo": true})");
  EXPECT_EQ(plain.json()["choices"][0]["text"], "The man said to");
  auto two = http_request(port, "POST", "/v1/completions", R"({"prompt": "x", "logprobs": 1, "echo": true, "n": 2})");
  EXPECT_EQ(two.status, 400);
  EXPECT_NE(two.body.find("echo: with logprobs"), std::string::npos) << two.body;
}

TEST(Logprobs, PromptScoringIsRefusedWhereItCannotHold) {
  ByteTokenizer tok;
  ApiLimits limits;
  auto tcp_error = [&](const std::string& extra) {
    try {
      parse_api_line(R"({"id": "a", "prompt": "x")" + extra + "}", tok, 256, limits);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(tcp_error(R"(, "logprobs": 1, "prompt_logprobs": true)"), "accepted");
  EXPECT_EQ(tcp_error(R"(, "prompt_logprobs": true)"), "prompt_logprobs: needs \"logprobs\" (how many alternatives)");
  EXPECT_EQ(tcp_error(R"(, "logprobs": 1, "prompt_logprobs": 1)"), "prompt_logprobs: must be true or false");
  EXPECT_EQ(tcp_error(R"(, "logprobs": 1, "n": 2, "prompt_logprobs": true)"), "prompt_logprobs: not with n > 1 or a session");
  EXPECT_EQ(tcp_error(R"(, "logprobs": 1, "session": "s", "prompt_logprobs": true)"), "prompt_logprobs: not with n > 1 or a session");
  EXPECT_EQ(tcp_error(R"(, "echo": true)"), "unknown field 'echo'");
}

}  // namespace
}  // namespace skein::test
