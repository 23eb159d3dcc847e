// Strategy strings and placement plans: the official layer arithmetic, clear errors, byte accounting
// that matches what the loader really keeps, and a fuzz pass over the parser.
#include <gtest/gtest.h>

#include <random>

#include "common/error.h"
#include "coordinator/placement.h"
#include "coordinator/strategy.h"
#include "kernels/cuda/product_memory.h"
#include "model/architecture.h"
#include "model/rwkv_model.h"
#include "tests/golden_cases.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Expected unit counts computed by hand from rwkv/model.py's "Compute strategy" block (0.8.32) for a
// 24-layer model (25 units) and a 12-layer model (13 units): {units, streamed} per segment.
struct Official {
  const char* strategy;
  int units;
  std::vector<std::pair<int, int>> want;
};

TEST(Strategy, OfficialExamplesGiveTheOfficialAssignment) {
  const Official cases[] = {
      {"cuda fp16", 25, {{25, 0}}},
      {"cpu fp32", 25, {{25, 0}}},
      {"cuda fp16 *20 -> cpu fp32", 25, {{20, 0}, {5, 0}}},
      {"cuda:0 fp16 *12 -> cuda:1 fp16", 25, {{12, 0}, {13, 0}}},
      {"cuda fp16i8 *10+", 25, {{25, 15}}},
      {"cuda fp16i8 *0+ -> cpu fp32 *1", 25, {{24, 24}, {1, 0}}},
      {"cpu fp32 -> cpu bf16 -> cpu fp32", 13, {{4, 0}, {4, 0}, {5, 0}}},
      {"cpu fp32 *2 -> cpu bf16 -> cpu fp32", 13, {{2, 0}, {5, 0}, {6, 0}}},
      {"cpu fp32 *2 -> cpu bf16 *1 -> cpu fp32i8", 13, {{2, 0}, {1, 0}, {10, 0}}},
      {"cuda:0 fp16 *6 -> cuda:1 fp16 *6 -> cpu fp32 *1", 13, {{6, 0}, {6, 0}, {1, 0}}},
      {"cuda fp16i8 *1 -> cuda fp16", 25, {{1, 0}, {24, 0}}},  // the official guide's, two precisions on one GPU
      {"cuda fp16i8 *10 -> cuda fp16 *8+", 25, {{10, 0}, {15, 7}}},
  };
  for (auto& c : cases) EXPECT_EQ(official_unit_assignment(parse_strategy(c.strategy), c.units), c.want) << c.strategy;
}

TEST(Strategy, ParsesNodesAndToleratedWhitespace) {
  auto s = parse_strategy("  node2:cuda:1 fp16i8 *12+  ->cpu bf16   ->  gpu-a.x_y:cuda fp32 ");
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].node, "node2");
  EXPECT_EQ(s[0].device.str(), "cuda:1");
  EXPECT_TRUE(s[0].i8);
  EXPECT_EQ(*s[0].count, 12);
  EXPECT_TRUE(s[0].stream);
  EXPECT_EQ(s[1].device.str(), "cpu");
  EXPECT_EQ(s[1].dtype, DType::BF16);
  EXPECT_FALSE(s[1].count.has_value());
  EXPECT_EQ(s[2].node, "gpu-a.x_y");
  EXPECT_EQ(s[2].device.str(), "cuda:0");
}

TEST(Strategy, MalformedStringsSayWhatAndWhere) {
  const std::pair<const char*, const char*> cases[] = {
      {"cuda:0 fp8", "expected dtype fp32, fp16 or bf16 at column 8, got \"fp8\""},
      {"cpu  fp32", "expected dtype fp32, fp16 or bf16 at column 5"},
      {"cpu fp32 -> ", "expected a device (cpu, cuda or cuda:K) at column 13"},
      {"cpu fp32 -> -> cuda fp16", "expected a device (cpu, cuda or cuda:K) at column 13"},
      {"", "expected a segment"},
      {"cpu fp32 *", "expected a layer count after '*' at column 11"},
      {"cpu fp32 *3x", "unexpected text after the segment at column 12"},
      {"mps fp16", "expected a device"},
      {"cuda fp16i4", "quantization i4 is not supported"},
      {"cpu fp32 cuda fp16", "expected \"->\" or the end of the strategy at column 10"},
      {"cpufp32", "expected a device"},
      {"cpu", "expected one space then a dtype"},
      {":cpu fp32", "empty node name"},
      {"no de:cpu fp32", "expected a device"},
      {"cuda:abc fp16", "expected a GPU index (0 to 999) after \"cuda:\" at column 6, got \"abc\""},
      {"cuda:1234 fp16", "expected a GPU index (0 to 999) after \"cuda:\" at column 6, got \"1234\""},
      {"cuda: fp16", "expected a GPU index (0 to 999) after \"cuda:\" at column 6, got a space"},
      {"gpu1:cuda:x fp16", "expected a device (cpu, cuda or cuda:K) after the node name at column 6, got \"cuda:x\""},
  };
  for (auto& [s, want] : cases) {
    std::string msg = error_of([&] { parse_strategy(s); });
    EXPECT_NE(msg.find(want), std::string::npos) << "'" << s << "' gave: " << msg;
    EXPECT_EQ(msg.rfind("strategy: ", 0), 0u) << msg;
  }
}

TEST(Plan, RefusesPlansThatCannotWork) {
  auto ck = Checkpoint::open(shared_dir() + "/models/tiny-rwkv-5v2-730K.pth");  // 12 layers, 13 units
  ModelDims d = detect_architecture(*ck);
  auto plan_error = [&](const std::string& s, PlanLimits lim = {}) { return error_of([&] { make_plan(parse_strategy(s), *ck, d, lim); }); };
  EXPECT_NE(plan_error("cpu fp32 *30").find("ask for 30 units but the model has only 13"), std::string::npos);
  EXPECT_NE(plan_error("cpu fp32 *13 -> cpu fp32").find("gets no layers"), std::string::npos);
  EXPECT_EQ(plan_error("cpu fp16 *0 -> cpu fp32"),
            "strategy: segment \"cpu fp16 *0\" (column 1) places no layers: leave the segment out, or write *0+ to stream all of its layers from host memory");
  EXPECT_NE(plan_error("cpu fp16 *2+ -> cpu fp32 *3+").find("only one segment may stream"), std::string::npos);
  std::string many;
  for (int i = 0; i < 14; ++i) many += std::string(i ? " -> " : "") + "cpu fp32";
  EXPECT_NE(plan_error(many).find("14 segments but the model has only 13"), std::string::npos);
  PlanLimits lim;
  lim.known_nodes = {"node1", "node2"};
  lim.node_aliases = {{"big", "node2"}};
  EXPECT_NE(plan_error("gpu9:cuda:0 fp16", lim).find("unknown node 'gpu9'"), std::string::npos);
  EXPECT_EQ(plan_error("big:cuda:0 fp16 *6 -> node1:cuda:0 fp16", lim), "");  // same GPU index on two hosts is fine
  PlanLimits small;
  small.device_memory["cpu"] = 100000;
  std::string msg = plan_error("cpu fp32", small);
  EXPECT_NE(msg.find("does not fit: cpu needs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("but has 0.00 GiB"), std::string::npos) << msg;
  // A [devices] limit given under a node's alias holds for the host the alias names.
  PlanLimits aliased;
  aliased.node_aliases = {{"big", "node2"}};
  aliased.device_memory["big:cpu"] = 100000;
  EXPECT_NE(plan_error("node2:cpu fp32", aliased).find("does not fit: node2:cpu needs"), std::string::npos);
  EXPECT_NE(plan_error("big:cpu fp32", aliased).find("does not fit: node2:cpu needs"), std::string::npos);
  // The cpu segments of the mixed example, and streaming everything but one layer.
  EXPECT_EQ(plan_error("cpu fp32 *2 -> cpu bf16 *1 -> cpu fp32i8"), "");
  EXPECT_EQ(plan_error("cpu fp32 *1+"), "");
}

TEST(Plan, JsonHasTheDocumentedFields) {
  auto ck = Checkpoint::open(golden("models/rand-v7-bf16.pth"));
  ModelDims d = detect_architecture(*ck);
  PlanLimits lim;
  lim.node_aliases = {{"n2", "node2.cluster"}};
  auto j = plan_json(make_plan(parse_strategy("cuda:0 bf16 *2 -> n2:cuda:0 fp16i8 *1+"), *ck, d, lim));
  EXPECT_EQ(j["n_units"], 5);
  ASSERT_EQ(j["stages"].size(), 2u);
  auto s1 = j["stages"][1];
  EXPECT_EQ(s1["node"], "node2.cluster");
  EXPECT_EQ(s1["device"], "cuda:0");
  EXPECT_EQ(s1["dtype"], "fp16");
  EXPECT_EQ(s1["quant"], "i8");
  EXPECT_EQ(s1["first_unit"], 2);
  EXPECT_EQ(s1["last_unit"], 4);
  EXPECT_EQ(s1["streamed_units"], nlohmann::json::array({3}));
  EXPECT_EQ(j["stages"][0]["state_bytes_per_slot"], 2 * d.state_floats_per_layer() * 4);
  EXPECT_EQ(j["stages"][0]["activation_bytes_per_token"], 2 * 128 * 4);  // v7 sends x and v_first
  for (auto& s : j["stages"]) EXPECT_GT(s["weight_bytes"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["step_rows"], 512);
  EXPECT_GT(s1["working_bytes"].get<uint64_t>(), cuda::kProductLibraryBytes);
}

// The plan's byte counts come from headers; the loader's from what it really keeps. They must agree.
TEST(Plan, WeightBytesMatchWhatTheLoaderKeeps) {
  for (std::string model : {"models/rand-v4-bf16.pth", "models/rand-v5_2-bf16.pth", "models/rand-v6-bf16.pth", "models/rand-v7-bf16.pth"}) {
    for (std::string strategy : {"cpu fp32", "cpu bf16 *2 -> cpu fp32i8", "cpu fp16i8 *1 -> cpu fp16 *2 -> cpu bf16"}) {
      auto ck = Checkpoint::open(golden(model));
      ModelDims d = detect_architecture(*ck);
      Plan p = make_plan(parse_strategy(strategy), *ck, d, {});
      auto mut = load_for_test(golden(model), "", strategy);
      ASSERT_EQ(mut.model->stages().size(), p.stages.size());
      for (size_t i = 0; i < p.stages.size(); ++i)
        EXPECT_EQ(p.stages[i].weight_bytes, mut.model->stages()[i]->weights().resident_bytes()) << model << " / " << strategy << " stage " << i;
    }
  }
  // v5.0 expands per-head parameters per channel.
  auto ck = Checkpoint::open(shared_dir() + "/models/tiny-rwkv-5v1-730K.pth");
  Plan p = make_plan(parse_strategy("cpu fp32"), *ck, detect_architecture(*ck), {});
  auto mut = load_for_test(shared_dir() + "/models/tiny-rwkv-5v1-730K.pth", "", "cpu fp32");
  EXPECT_EQ(p.stages[0].weight_bytes, mut.model->stages()[0]->weights().resident_bytes());
}

// The official guide's way to fit a model on one GPU: its first layers in fp16i8, the rest in fp16. Both
// stages are on cuda:0, and the GPU must hold them together.
TEST(Plan, SegmentsMayShareAGpu) {
  auto ck = Checkpoint::open(shared_dir() + "/models/tiny-rwkv-5v2-730K.pth");  // 12 layers, 13 units
  ModelDims d = detect_architecture(*ck);
  const Plan p = make_plan(parse_strategy("cuda fp16i8 *4 -> cuda:0 fp16"), *ck, d, {});
  ASSERT_EQ(p.stages.size(), 2u);
  EXPECT_EQ(p.stages[0].segment.device, p.stages[1].segment.device);
  EXPECT_EQ(p.stages[0].last_unit, 3);
  EXPECT_EQ(p.stages[1].first_unit, 4);
  const uint64_t first = device_bytes(p.stages[0], d.n_layer, 1), both = first + device_bytes(p.stages[1], d.n_layer, 1);
  PlanLimits lim;
  lim.device_memory["cuda:0"] = both;
  EXPECT_EQ(error_of([&] { make_plan(parse_strategy("cuda fp16i8 *4 -> cuda:0 fp16"), *ck, d, lim); }), "");
  lim.device_memory["cuda:0"] = both - 1;
  const std::string msg = error_of([&] { make_plan(parse_strategy("cuda fp16i8 *4 -> cuda:0 fp16"), *ck, d, lim); });
  EXPECT_NE(msg.find("the plan does not fit: cuda:0 needs"), std::string::npos) << msg;
  // The stages of one GPU on two hosts are two GPUs.
  PlanLimits nodes;
  nodes.known_nodes = {"a", "b"};
  nodes.device_memory["cuda:0"] = first + first / 2;
  EXPECT_EQ(error_of([&] { make_plan(parse_strategy("a:cuda fp16i8 *6 -> b:cuda:0 fp16i8"), *ck, d, nodes); }), "");
}

// A GPU stage is checked against what its GPU has free where it runs: the stage's weights, its
// streamed layers in flight (two on a GPU) and state for every slot, with the figures in the error.
TEST(Plan, GpuStageIsCheckedAgainstItsFreeMemory) {
  auto ck = Checkpoint::open(shared_dir() + "/models/tiny-rwkv-5v2-730K.pth");  // 12 layers, 13 units
  ModelDims d = detect_architecture(*ck);
  const Plan p = make_plan(parse_strategy("cpu fp32 *4 -> cuda:1 fp16 *2+"), *ck, d, {});
  ASSERT_EQ(p.stages.size(), 2u);
  const PlanStage& gpu = p.stages[1];
  // Units 6-12 stream as officially counted; the head's matrices stay, so layers 6-11 stream.
  ASSERT_EQ(gpu.streamed_layers(d.n_layer).size(), 6u);
  const uint64_t one_layer = gpu.streamed_bytes / 6;
  EXPECT_EQ(gpu.streaming_bytes(d.n_layer), 2 * one_layer);
  const uint64_t need = gpu.weight_bytes + 2 * one_layer + 3 * gpu.state_bytes_per_slot + gpu.working_bytes;
  EXPECT_EQ(device_bytes(gpu, d.n_layer, 3), need);
  // Working memory: on a GPU the cuBLAS workspaces and the products' scratch beside the model's buffers.
  const PlanStage& cpu = p.stages[0];
  EXPECT_GT(gpu.working_bytes, cuda::kProductLibraryBytes);
  EXPECT_LT(cpu.working_bytes, cuda::kProductLibraryBytes);
  EXPECT_GE(cpu.working_bytes, RwkvModel::scratch_bytes(d, 512, true, false));

  EXPECT_EQ(error_of([&] { check_stage_fits(p, 1, 3, need, "cuda:1 (test GPU)"); }), "");
  const std::string msg = error_of([&] { check_stage_fits(p, 1, 3, need - 1, "cuda:1 (test GPU)"); });
  EXPECT_NE(msg.find("strategy: stage 1 (layers 4-11 + head, \"cuda:1 fp16 *2+\") needs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("on cuda:1 (test GPU) but it has"), std::string::npos) << msg;
  EXPECT_NE(msg.find("of state for 3 slots, 0.13 GiB of working memory for steps of 512 rows"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  // Larger steps need more working memory: the plan counts the micro-batch it was made for.
  PlanLimits big_steps;
  big_steps.step_rows = 8192;
  const Plan big = make_plan(parse_strategy("cpu fp32 *4 -> cuda:1 fp16 *2+"), *ck, d, big_steps);
  EXPECT_GT(big.stages[1].working_bytes, gpu.working_bytes + 8000 * RwkvModel::scratch_bytes(d, 1, true, true));
  EXPECT_NE(error_of([&] { check_stage_fits(big, 1, 3, need, "cuda:1"); }).find("for steps of 8192 rows"), std::string::npos);
  // More slots need more state: what fits one slot does not fit a hundred.
  const uint64_t one_slot = device_bytes(gpu, d.n_layer, 1);
  EXPECT_EQ(error_of([&] { check_stage_fits(p, 1, 1, one_slot, "cuda:1"); }), "");
  EXPECT_NE(error_of([&] { check_stage_fits(p, 1, 100, one_slot, "cuda:1"); }), "");
}

// A host holds its CPU stages and its GPU stages' streamed layers; node-prefixed stages count too
// (make_plan checks only unprefixed CPU stages against this machine).
TEST(Plan, HostIsCheckedAgainstEveryStageItRuns) {
  auto ck = Checkpoint::open(shared_dir() + "/models/tiny-rwkv-5v2-730K.pth");
  ModelDims d = detect_architecture(*ck);
  const Plan p = make_plan(parse_strategy("a:cpu fp32 *4 -> b:cpu fp32 *4 -> cuda:0 fp16 *2+"), *ck, d, {});
  ASSERT_EQ(p.stages.size(), 3u);
  const uint64_t need = device_bytes(p.stages[0], d.n_layer, 2) + device_bytes(p.stages[1], d.n_layer, 2) + p.stages[2].streamed_bytes;
  ASSERT_GT(p.stages[2].streamed_bytes, 0u);
  EXPECT_EQ(host_bytes(p, {0, 1, 2}, 2), need);
  EXPECT_EQ(error_of([&] { check_host_fits(p, {0, 1, 2}, 2, need, "this host"); }), "");
  const std::string msg = error_of([&] { check_host_fits(p, {0, 1, 2}, 2, need - 1, "this host"); });
  EXPECT_NE(msg.find("strategy: the stages on this host (0, 1, 2) need"), std::string::npos) << msg;
  EXPECT_NE(msg.find("state for 2 slots"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  // Each host only what it runs: stage 1 alone fits where all three do not.
  EXPECT_EQ(error_of([&] { check_host_fits(p, {1}, 2, need - 1, "b"); }), "");
  // A server's tuned states are kept beside the slots, a state each on every stage.
  EXPECT_EQ(host_bytes(p, {0, 1, 2}, 2, 3), need + 3 * (p.stages[0].state_bytes_per_slot + p.stages[1].state_bytes_per_slot));
  const std::string tuned = error_of([&] { check_host_fits(p, {0, 1, 2}, 2, need, "this host", 3); });
  EXPECT_NE(tuned.find("state for 2 slots and 3 tuned states"), std::string::npos) << tuned;
  const std::string gpu = error_of([&] { check_stage_fits(p, 2, 2, device_bytes(p.stages[2], d.n_layer, 2), "cuda:0", 1); });
  EXPECT_NE(gpu.find("of state for 2 slots and 1 tuned state"), std::string::npos) << gpu;
}

// Deterministic fuzzing: random edits of valid strings must either parse or raise skein::Error, and a
// parsed strategy must either plan or raise skein::Error. (tests/fuzz/strategy_fuzzer.cpp is the
// libFuzzer entry point over the same function.)
TEST(Strategy, FuzzedStringsNeverCrash) {
  auto ck = Checkpoint::open(golden("models/rand-v7-bf16.pth"));
  ModelDims d = detect_architecture(*ck);
  const std::string seeds[] = {"cuda:0 fp16 *12 -> node2:cuda:0 fp16i8", "cpu fp32 *2 -> cpu bf16 *1 -> cpu fp32i8", "cuda fp16i8 *0+ -> cpu fp32 *1"};
  const std::string alphabet = "cpuda:0123456789 fb*+->i8\xff\x00n.e";
  std::mt19937 g(12345);
  int parsed = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s = seeds[g() % 3];
    int edits = 1 + int(g() % 4);
    for (int e = 0; e < edits; ++e) {
      size_t pos = s.empty() ? 0 : g() % (s.size() + 1);
      switch (g() % 3) {
        case 0: s.insert(s.begin() + long(pos), alphabet[g() % alphabet.size()]); break;
        case 1: if (!s.empty() && pos < s.size()) s.erase(pos, 1 + g() % 3); break;
        default: if (pos < s.size()) s[pos] = alphabet[g() % alphabet.size()]; break;
      }
    }
    try {
      auto segs = parse_strategy(s);
      ++parsed;
      make_plan(segs, *ck, d, {});
    } catch (const Error&) {
    }
  }
  EXPECT_GT(parsed, 100);
}

}  // namespace
}  // namespace skein::test
