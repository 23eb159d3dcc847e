// State-tuning files beside their model (--initial-state, [model] initial_state): the model runs as the
// official package runs the merged checkpoint, in one process and on a cluster; files that do not fit
// the model are refused with one line naming them.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "common/error.h"
#include "model/architecture.h"
#include "model/fingerprint.h"
#include "model/initial_state.h"
#include "tests/golden_cases.h"
#include "tests/server_harness.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

struct TunedFiles {
  std::string states;  // blocks.N.att.time_state only, as state tuning publishes them
  std::string merged;  // the model with those tensors merged in
};

// Random initial states for every layer of `model`, with `shape` (default: the model's heads).
TunedFiles make_tuned(const std::string& model, std::vector<int64_t> shape = {}) {
  ModelDims d = detect_architecture(*Checkpoint::open(model));
  if (shape.empty()) shape = {d.n_head, d.head_size, d.head_size};
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  std::vector<std::vector<float>> values;
  std::mt19937 g(7);
  for (int l = 0; l < d.n_layer; ++l) {
    shapes.push_back({"blocks." + std::to_string(l) + ".att.time_state", shape});
    std::vector<float> v(size_t(shape[0] * shape[1] * shape[2]));
    for (auto& x : v) x = std::uniform_real_distribution<float>(-1, 1)(g);
    values.push_back(v);
  }
  return {rewrite_checkpoint(model, "states.pth", [](PthTensorSpec&) { return false; }, shapes, values),
          rewrite_checkpoint(model, "merged.pth", [](PthTensorSpec&) { return true; }, shapes, values)};
}

TEST(InitialState, AStateFileBesideItsModelIsTheMergedModel) {
  for (const char* name : {"rand-v5_2-bf16vals-fp32.pth", "rand-v6-bf16vals-fp32.pth", "rand-v7-fp32.pth"}) {
    SCOPED_TRACE(name);
    const std::string model = golden(std::string("models/") + name);
    TunedFiles f = make_tuned(model);
    auto attached = attach_initial_state(*Checkpoint::open(model), f.states);
    auto merged = Checkpoint::open(f.merged);
    EXPECT_EQ(model_fingerprint(*attached), model_fingerprint(*merged));
    EXPECT_NE(model_fingerprint(*attached), model_fingerprint(*Checkpoint::open(model)));
    CpuBackend be;
    const ModelDims d = detect_architecture(*attached);
    ASSERT_TRUE(d.has_time_state);
    Engine a(attached, d, Engine::whole_model(d), be);
    auto m = load_for_test(f.merged);
    EXPECT_EQ(a.new_state().to_host(), m.model->new_state().to_host());
    const std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6};
    EXPECT_EQ(run_modes(a, tokens, {3, 5}).seq_full, run_modes(*m.model, tokens, {3, 5}).seq_full);
  }
}

// A server's tuned states start from what the merged model starts from, and a model that holds tuned
// states of its own takes other ones in their place.
TEST(InitialState, ATunedStartStateIsTheMergedModelsFreshState) {
  for (const char* name : {"rand-v5_2-bf16vals-fp32.pth", "rand-v6-bf16vals-fp32.pth", "rand-v7-fp32.pth"}) {
    SCOPED_TRACE(name);
    const std::string model = golden(std::string("models/") + name);
    TunedFiles f = make_tuned(model);
    auto m = load_for_test(f.merged);
    EXPECT_EQ(tuned_start_state(*Checkpoint::open(model), f.states), m.model->new_state().to_host());
    EXPECT_EQ(tuned_start_state(*Checkpoint::open(f.merged), f.states), m.model->new_state().to_host());
  }
  const std::string v4 = golden("models/rand-v4-bf16vals-fp32.pth");
  EXPECT_THROW(tuned_start_state(*Checkpoint::open(v4), make_tuned(golden("models/rand-v7-fp32.pth")).states), Error);
}

std::string attach_error(const std::string& model, const std::string& states) {
  try {
    attach_initial_state(*Checkpoint::open(model), states);
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

TEST(InitialState, FilesThatDoNotFitTheModelAreRefusedNamingThem) {
  const std::string v7 = golden("models/rand-v7-fp32.pth");
  const ModelDims d = detect_architecture(*Checkpoint::open(v7));
  TunedFiles good = make_tuned(v7);
  auto drop = [&](const std::string& file, const std::string& out, std::function<bool(PthTensorSpec&)> edit) {
    return rewrite_checkpoint(file, out, edit);
  };
  const std::string garbage = temp_dir() + "/garbage.pth";
  write_file(garbage, "not a checkpoint at all");
  struct Case {
    std::string model, states, needle;
  } cases[] = {
      {v7, make_tuned(v7, {d.n_head, d.head_size, d.head_size + 1}).states, "has shape [" + std::to_string(d.n_head)},
      {v7, drop(good.states, "gap.pth", [](PthTensorSpec& s) { return s.name != "blocks.1.att.time_state"; }), "no initial state for layer 1"},
      {v7, drop(good.states, "renamed.pth", [](PthTensorSpec& s) { if (s.name == "blocks.0.att.time_state") s.name = "blocks.00.att.time_state"; return true; }),
       "'blocks.00.att.time_state' is not an initial state"},
      {v7, v7, "'blocks.0.att.a0' is not an initial state of this model's layers (expected blocks.0-" + std::to_string(d.n_layer - 1) + ".att.time_state)"},
      {v7, drop(good.states, "u8.pth", [](PthTensorSpec& s) { s.dtype = DType::U8; s.shape.back() *= 4; return true; }), "is u8"},
      {v7, garbage, "unrecognised file format"},
      {v7, temp_dir() + "/missing.pth", "missing.pth"},
      {good.merged, good.states, "already holds tuned initial states"},
      {golden("models/rand-v4-bf16vals-fp32.pth"), good.states, "RWKV-4 models have no tuned initial state"},
  };
  for (auto& c : cases) {
    std::string msg = attach_error(c.model, c.states);
    ASSERT_FALSE(msg.empty()) << c.states << " was attached to " << c.model;
    EXPECT_EQ(msg.rfind(c.states, 0), 0u) << "the message does not start with the state file: " << msg;
    EXPECT_NE(msg.find(c.needle), std::string::npos) << "expected '" << c.needle << "' in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// The command line, a config file (paths relative to it) and a 3-rank cluster all give the merged
// model's logits, bit for bit.
TEST(InitialState, CommandsConfigsAndClustersTakeIt) {
  const std::string model = shared_dir() + "/models/tiny-rwkv-7v0-834K.pth";
  TunedFiles f = make_tuned(model);
  const std::string out = temp_dir(), tokens = " --tokens 84,104,101,32,109,97,110 --out ";
  auto logits = [&](const std::string& args, const std::string& file, bool cluster = false) {
    const std::string cmd = "logits " + args + tokens + out + "/" + file;
    CommandResult r = cluster ? run_shell(mpirun_skein(3, cmd)) : run_skein(cmd);
    EXPECT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
    return read_f32(out + "/" + file);
  };
  const auto want = logits("--model " + f.merged, "merged.f32");
  EXPECT_EQ(logits("--model " + model + " --initial-state " + f.states, "flag.f32"), want);
  EXPECT_NE(logits("--model " + model, "plain.f32"), want);
  const std::string dir = std::filesystem::path(f.states).parent_path().string();
  write_file(dir + "/tuned.toml", "[model]\npath = \"" + model + "\"\ninitial_state = \"states.pth\"\n");
  EXPECT_EQ(logits("--config " + dir + "/tuned.toml", "config.f32"), want);
  EXPECT_EQ(logits("--model " + model + " --initial-state " + f.states + " --strategy 'cpu fp32 *2 -> cpu fp32'", "cluster.f32", true), want);
  // A state file that does not fit stops the command with one line.
  auto r = run_skein("generate --model " + shared_dir() + "/models/tiny-rwkv-5v2-730K.pth --initial-state " + f.states + " --prompt x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.output.rfind("skein: error: " + f.states + ": tensor 'blocks.0.att.time_state' has shape", 0), 0u) << r.output;
}

// One loaded model, several tuned states chosen per request by "model": each request runs exactly as
// the CLI runs the model with that state file, over HTTP and TCP, in one process and on a 3-rank
// cluster; prefixes cached from one start state are not used for another; a new session starts from
// the state its first request names; an unknown name is refused naming what is served.
TEST(InitialState, AServerOffersTunedStatesByName) {
  using nlohmann::json;
  const std::string model = shared_dir() + "/models/tiny-rwkv-5v2-730K.pth";  // what Server serves
  const std::string chat_file = make_tuned(model).states;
  // Short, so the start state still shows in greedy text (it fades as tokens run); prefixes are cached
  // in blocks of 2 tokens (the config below), from a start state's second use, hit from its third.
  const std::string prompt = "The m";
  const std::string config = temp_dir() + "/cache.toml";
  write_file(config, "[cache]\nblock_tokens = 2\n");
  // The CLI's greedy continuation of `text` (generate echoes its prompt first).
  auto cli = [&](const std::string& text, const std::string& flags) {
    auto r = run_shell(std::string(SKEIN_BINARY) + " generate --model " + model + " --temperature 0 --max-tokens 12 --prompt '" + text + "' " +
                       flags + " 2>/dev/null");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return r.output.substr(text.size(), r.output.find('\n') - text.size());
  };
  const std::string base_text = cli(prompt, ""), chat_text = cli(prompt, "--initial-state " + chat_file);
  ASSERT_NE(base_text, chat_text);
  // A state file is a start state too: here, the state after a system prompt.
  const std::string system = "Bob is a sailor. ", persona_file = temp_dir() + "/persona.state";
  auto saved = run_skein("generate --model " + model + " --max-tokens 0 --prompt '" + system + "' --state-out " + persona_file);
  ASSERT_EQ(saved.exit_code, 0) << saved.output;
  const std::string persona_text = cli(system + prompt, "");

  for (int ranks : {1, 3}) {
    SCOPED_TRACE(ranks);
    Server server("--config " + config + " --tuned-state chat=" + chat_file + " --tuned-state persona=" + persona_file, ranks);
    ASSERT_GT(server.http_port(), 0) << server.output();
    auto complete = [&](const json& extra) {
      json body = {{"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0}};
      body.update(extra);
      return http_request(server.http_port(), "POST", "/v1/completions", body.dump());
    };
    std::vector<int> cached;
    for (int round = 0; round < 3; ++round)
      for (const char* name : {"tiny-rwkv-5v2-730K", "chat"}) {
        const HttpReply r = complete({{"model", name}});
        ASSERT_EQ(r.status, 200) << r.body;
        EXPECT_EQ(r.json()["model"], name);
        EXPECT_EQ(r.json()["choices"][0]["text"], std::string(name) == "chat" ? chat_text : base_text) << name << ", round " << round;
        cached.push_back(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>());
      }
    EXPECT_EQ(cached, (std::vector<int>{0, 0, 0, 0, 4, 4})) << "each start state caches its own prefixes";
    EXPECT_EQ(complete(json::object()).json()["choices"][0]["text"], base_text);
    EXPECT_EQ(complete({{"model", "persona"}}).json()["choices"][0]["text"], persona_text);

    // A session starts from the state its first request names, then continues its own state.
    const HttpReply first = complete({{"model", "chat"}, {"session", "s"}});
    EXPECT_EQ(first.json()["choices"][0]["text"], chat_text);
    EXPECT_EQ(http_request(server.http_port(), "GET", "/v1/sessions").json()["data"][0]["id"], "s");

    // TCP takes the same field.
    Client tcp(server.port());
    tcp.send(json({{"id", "t"}, {"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0}, {"model", "chat"}, {"stream", false}}).dump());
    const json done = tcp.until_done("t").back();
    EXPECT_EQ(done["text"], chat_text) << done;
    tcp.send(R"({"op": "list_models", "id": "m"})");
    EXPECT_EQ(tcp.event(), json::parse(R"({"event": "models", "id": "m", "models": ["tiny-rwkv-5v2-730K", "chat", "persona"]})"));
    tcp.send(R"({"id": "u", "prompt": "x", "model": "poem"})");
    const json refused = tcp.until_done("u").back();
    EXPECT_EQ(refused["event"], "error");
    EXPECT_NE(refused["error"].get<std::string>().find("model 'poem' is not served here (served: 'tiny-rwkv-5v2-730K', 'chat', 'persona')"), std::string::npos) << refused;

    const HttpReply unknown = complete({{"model", "poem"}});
    EXPECT_EQ(unknown.status, 404);
    EXPECT_EQ(unknown.json()["error"]["code"], "model_not_found");
    const json models = http_request(server.http_port(), "GET", "/v1/models").json()["data"];
    ASSERT_EQ(models.size(), 3u);
    EXPECT_EQ(models[0]["id"], "tiny-rwkv-5v2-730K");
    EXPECT_EQ(models[1]["id"], "chat");
    EXPECT_EQ(models[1]["parent"], "tiny-rwkv-5v2-730K");
    EXPECT_EQ(models[2]["id"], "persona");
    const std::string metrics = http_request(server.http_port(), "GET", "/metrics").body;
    for (const char* line : {"\nskein_model_requests_total{model=\"chat\"} 5\n", "\nskein_model_requests_total{model=\"persona\"} 1\n",
                             "\nskein_model_requests_total{model=\"tiny-rwkv-5v2-730K\"} 4\n", "\nskein_state_copies_total{what=\"tuned\"} 6\n"})
      EXPECT_NE(metrics.find(line), std::string::npos) << line << " is not in:\n" << metrics;
  }

  // Without tuned states any name is the model, as single-model clients expect.
  Server plain;
  json body = {{"model", "gpt-4o"}, {"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0}};
  EXPECT_EQ(http_request(plain.http_port(), "POST", "/v1/completions", body.dump()).json()["choices"][0]["text"], base_text);
}

// Tuned states that cannot be served stop `skein serve` with one line naming the file or the key.
TEST(InitialState, TunedStatesThatCannotBeServedAreRefused) {
  const std::string model = shared_dir() + "/models/tiny-rwkv-5v2-730K.pth";
  const std::string v7_states = make_tuned(shared_dir() + "/models/tiny-rwkv-7v0-834K.pth").states;
  const std::string v7_session = temp_dir() + "/v7.state";
  ASSERT_EQ(run_skein("generate --model " + shared_dir() + "/models/tiny-rwkv-7v0-834K.pth --max-tokens 0 --prompt Hi --state-out " + v7_session).exit_code, 0);
  const std::string dir = temp_dir();
  write_file(dir + "/bad-name.toml", "[model]\npath = \"" + model + "\"\n[tuned_states]\n\"two words\" = \"x.pth\"\n");
  write_file(dir + "/not-a-string.toml", "[model]\npath = \"" + model + "\"\n[tuned_states]\nchat = 3\n");
  write_file(dir + "/relative.toml", "[model]\npath = \"" + model + "\"\n[tuned_states]\nchat = \"missing.pth\"\n");
  struct Case {
    std::string args, says;
  } cases[] = {
      {"--config " + dir + "/bad-name.toml", dir + "/bad-name.toml:4:15: tuned state name 'two words': use 1-64 letters"},
      {"--config " + dir + "/not-a-string.toml", dir + "/not-a-string.toml:4:8: 'chat' must be a string"},
      {"--config " + dir + "/relative.toml", dir + "/missing.pth"},
      {"--model " + model + " --tuned-state chat", "--tuned-state: expected NAME=FILE, got 'chat'"},
      {"--model " + model + " --tuned-state chat=" + v7_states + " --tuned-state chat=" + v7_session, "--tuned-state: 'chat' is named twice"},
      {"--model " + model + " --tuned-state tiny-rwkv-5v2-730K=" + v7_states, "the model itself is called that"},
      {"--model " + model + " --tuned-state chat=" + v7_states, v7_states + ": tensor 'blocks.0.att.time_state' has shape"},
      {"--model " + model + " --tuned-state chat=" + v7_session, v7_session + ": state belongs to a different model architecture (v7"},
  };
  for (const Case& c : cases) {
    auto r = run_skein("serve --port 0 --http-port -1 " + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_EQ(r.output.rfind("skein: error: ", 0), 0u) << r.output;
    EXPECT_NE(r.output.find(c.says), std::string::npos) << "expected '" << c.says << "' in: " << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
}

}  // namespace
}  // namespace skein::test
