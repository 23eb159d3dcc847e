// State-tuning files beside their model (--initial-state, [model] initial_state): the model runs as the
// official package runs the merged checkpoint, in one process and on a cluster; files that do not fit
// the model are refused with one line naming them.
#include <gtest/gtest.h>

#include <random>

#include "common/error.h"
#include "model/architecture.h"
#include "model/fingerprint.h"
#include "model/initial_state.h"
#include "tests/golden_cases.h"
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

}  // namespace
}  // namespace skein::test
