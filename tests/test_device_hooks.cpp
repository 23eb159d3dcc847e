// The model's device-facing bookkeeping, on the CPU with the real arithmetic: decode-step recording
// (RwkvModel::run_recorded; a backend that "replays" by running the step again stands in for CUDA
// graphs: first step direct, second recorded, later ones replayed, recordings dropped when a buffer moves
// or the backend refuses them), and layers streamed from host memory (the order of hold, prefetch,
// bring-in and let-go that a GPU's copy slots rely on), and op profiling (`bench --profile`).
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/architecture.h"
#include "model/weights.h"
#include "tests/test_support.h"
#include "worker/cpu_backend.h"
#include "worker/engine.h"
#include "worker/profiling_backend.h"

namespace skein::test {
namespace {

// The CPU backend, with recording that replays by running the step again.
class ProbeBackend final : public CpuBackend {
 public:
  int records = 0, replays = 0, refused = 0;
  bool refuse_replays = false;

  bool can_record() const override { return true; }
  std::unique_ptr<StepRecording> record(const std::function<void()>& step) override {
    ++records;
    step();
    return std::make_unique<StepRecording>();
  }
  bool replay(StepRecording&, const std::function<void()>& step) override {
    if (refuse_replays) {
      ++refused;
      return false;
    }
    ++replays;
    step();
    return true;
  }
};

// Logits of `steps` decode steps of a batch of `B` sequences after a prompt each.
std::vector<float> decode(Engine& e, int B, int steps, int prompt_len) {
  const size_t V = size_t(e.dims().vocab);
  std::vector<SessionState> states;
  for (int b = 0; b < B; ++b) states.push_back(e.new_state());
  std::vector<float> out, logits(size_t(B) * V);
  for (int b = 0; b < B; ++b) {
    std::vector<int32_t> prompt;
    for (int i = 0; i < prompt_len; ++i) prompt.push_back(int32_t(32 + (b * 11 + i * 7) % 90));
    e.forward(prompt, states[size_t(b)], logits.data());
  }
  for (int s = 0; s < steps; ++s) {
    std::vector<int32_t> toks(static_cast<size_t>(B));
    std::vector<EngineSequence> seqs;
    for (int b = 0; b < B; ++b) {
      toks[size_t(b)] = int32_t(40 + (s * 5 + b) % 60);
      seqs.push_back({std::span<const int32_t>(&toks[size_t(b)], 1), &states[size_t(b)], logits.data() + size_t(b) * V, false});
    }
    e.forward(seqs);
    out.insert(out.end(), logits.begin(), logits.end());
  }
  return out;
}

struct Models {
  std::shared_ptr<const Checkpoint> ck;
  ModelDims dims;
  explicit Models(const std::string& path) : ck(Checkpoint::open(path)), dims(detect_architecture(*ck)) {}
};

TEST(StepRecording, FirstStepDirectSecondRecordedLaterReplayed) {
  Models m(shared_dir() + "/models/tiny-rwkv-7v0-834K.pth");
  CpuBackend cpu;
  ProbeBackend probe;
  Engine plain(m.ck, m.dims, Engine::whole_model(m.dims), cpu), probed(m.ck, m.dims, Engine::whole_model(m.dims), probe);
  auto want = decode(plain, 3, 6, 4);
  EXPECT_EQ(decode(probed, 3, 6, 4), want);  // the same arithmetic, whichever way the steps ran
  // Six steps of one batch size: the first runs directly (its buffers may still grow), the second is
  // recorded, the other four replay it. Prompts (several tokens per sequence) are never recorded.
  EXPECT_EQ(probe.records, 1);
  EXPECT_EQ(probe.replays, 4);
}

TEST(StepRecording, StaleOrRefusedRecordingsFallBackToDirectSteps) {
  Models m(shared_dir() + "/models/tiny-rwkv-5v2-730K.pth");
  CpuBackend cpu;
  ProbeBackend probe;
  Engine plain(m.ck, m.dims, Engine::whole_model(m.dims), cpu), probed(m.ck, m.dims, Engine::whole_model(m.dims), probe);
  decode(probed, 2, 4, 3);
  const int records = probe.records;
  EXPECT_EQ(records, 1);
  // A longer prompt grows the scratch buffers: recordings made before point at the old ones and are
  // dropped, so the same batch size is recorded again.
  decode(probed, 2, 4, 300);
  EXPECT_EQ(probe.records, records + 1);
  // A backend that refuses a replay gets a direct step instead, with the same results.
  probe.refuse_replays = true;
  EXPECT_EQ(decode(probed, 2, 5, 3), decode(plain, 2, 5, 3));
  EXPECT_GT(probe.refused, 0);
}

// The CPU backend, told to keep streamed layers in host memory, logging the streaming calls.
class StreamProbe final : public CpuBackend {
 public:
  std::vector<std::string> calls;
  std::map<const LayerWeights*, int> layer_of;
  int next_id = 0;
  bool streams_from_host() const override { return true; }
  void hold_in_host(const LayerWeights& lw) override { calls.push_back("hold " + std::to_string(layer_of[&lw] = next_id++)); }
  void prefetch(const LayerWeights& lw) override { calls.push_back("prefetch " + std::to_string(layer_of.at(&lw))); }
  void bring_in(const LayerWeights& lw) override { calls.push_back("in " + std::to_string(layer_of.at(&lw))); }
  void let_go(const LayerWeights& lw) override { calls.push_back("out " + std::to_string(layer_of.at(&lw))); }
};

TEST(LayerStreaming, HeldOnceAndBroughtInAroundTheirOps) {
  Models m(shared_dir() + "/models/tiny-rwkv-7v0-834K.pth");
  CpuBackend cpu;
  StreamProbe probe;
  Engine plain(m.ck, m.dims, Engine::whole_model(m.dims), cpu);
  StageSpec spec = Engine::whole_model(m.dims).front();
  const int L = m.dims.n_layer;
  spec.streamed = {L - 3, L - 2, L - 1};  // the last three layers streamed, as "*N+" places them
  Engine streamed(m.ck, m.dims, {spec}, probe);
  EXPECT_EQ(probe.calls, (std::vector<std::string>{"hold 0", "hold 1", "hold 2"}));
  probe.calls.clear();
  EXPECT_EQ(decode(streamed, 2, 2, 3), decode(plain, 2, 2, 3));
  // Every forward call: each streamed layer brought in, the next one prefetched while it runs (after
  // the last, the first again, for the next call), then let go.
  const std::vector<std::string> one_call = {"in 0", "prefetch 1", "out 0", "in 1", "prefetch 2", "out 1", "in 2", "prefetch 0", "out 2"};
  ASSERT_EQ(probe.calls.size() % one_call.size(), 0u);
  for (size_t i = 0; i < probe.calls.size(); ++i) EXPECT_EQ(probe.calls[i], one_call[i % one_call.size()]) << i;
}

// Profiling changes no result, counts each op of a step once, and its times add up to no more than
// the step took.
TEST(OpProfile, ForwardsEveryOpAndSplitsTheStepTime) {
  Models m(shared_dir() + "/models/tiny-rwkv-7v0-834K.pth");
  CpuBackend cpu;
  ProfilingBackend profiled_cpu(std::make_unique<CpuBackend>());
  Engine plain(m.ck, m.dims, Engine::whole_model(m.dims), cpu), profiled(m.ck, m.dims, Engine::whole_model(m.dims), profiled_cpu);
  EXPECT_EQ(decode(profiled, 2, 3, 4), decode(plain, 2, 3, 4));

  profiled_cpu.reset();
  EXPECT_TRUE(profiled_cpu.totals().empty());
  // The window starts before the states are made: making one uploads zeros, an op of its own.
  const auto t0 = std::chrono::steady_clock::now();
  SessionState a = profiled.new_state(), b = profiled.new_state();
  int32_t ta = 65, tb = 66;
  std::vector<float> logits(2 * size_t(m.dims.vocab));
  std::vector<EngineSequence> step = {{std::span<const int32_t>(&ta, 1), &a, logits.data(), false},
                                      {std::span<const int32_t>(&tb, 1), &b, logits.data() + m.dims.vocab, false}};
  profiled.forward(step);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const int L = m.dims.n_layer;
  std::map<std::string, ProfilingBackend::OpTime> by_op;
  double sum = 0;
  for (auto& t : profiled_cpu.totals()) {
    by_op[t.op] = t;
    sum += t.seconds;
    EXPECT_GE(t.seconds, 0.0) << t.op;
  }
  EXPECT_EQ(by_op["v7_attention"].calls, L);
  EXPECT_EQ(by_op["norm_shift_mix"].calls, 2 * L);     // ln1 and ln2 with their shifts and mixes
  EXPECT_EQ(by_op["layer_norm"].calls, 1);             // the head's ln_out
  // Per layer, r, k, v and the LoRAs' first factors as one set, their second factors as another.
  EXPECT_EQ(by_op["linears 7x fp32"].calls, L - 1);    // v's LoRA from the second layer on
  EXPECT_EQ(by_op["linears 6x fp32"].calls, 1);
  EXPECT_EQ(by_op["linears 3x fp32"].calls, 1);
  EXPECT_EQ(by_op["linears 4x fp32"].calls, L - 1);
  EXPECT_EQ(by_op["embed"].calls, 1);
  EXPECT_EQ(by_op["download"].calls, 1);
  const auto& head = by_op["linear fp32 256x64"];  // the head, one product per step
  EXPECT_EQ(head.weight_bytes, double(head.calls) * 256 * 64 * 4);
  EXPECT_GT(sum, 0.0);
  EXPECT_LE(sum, wall);
}

// The CPU backend, counting the device memory the model asks for: live and the most at once.
class AllocationProbe final : public CpuBackend {
 public:
  uint64_t live = 0, peak = 0;
  float* allocate(size_t n) override {
    float* p = CpuBackend::allocate(n);
    sizes_[p] = n * sizeof(float);
    peak = std::max(peak, live += n * sizeof(float));
    return p;
  }
  void release(float* p) override {
    if (auto it = sizes_.find(p); it != sizes_.end()) {
      live -= it->second;
      sizes_.erase(it);
    }
    CpuBackend::release(p);
  }

 private:
  std::map<float*, uint64_t> sizes_;
};

// The plan counts a step's working memory against the device before a byte loads (placement.cpp);
// RwkvModel::scratch_bytes is its part for the model's buffers, checked here against what steps really
// allocate: a prompt of R rows with logits at every position, then decode steps of R sequences, after
// steps of other sizes have grown the buffers piecemeal.
TEST(StepMemory, ScratchBoundHoldsWhatStepsAllocate) {
  for (std::string path : {"models/tiny-rwkv-4v0-660K.pth", "models/tiny-rwkv-5v1-730K.pth", "models/tiny-rwkv-5v2-730K.pth",
                           "models/tiny-rwkv-6v0-3m-Q5_1dq.pth", "models/tiny-rwkv-7v0-834K.pth"}) {
    Models m(shared_dir() + "/" + path);
    const ModelDims& d = m.dims;
    constexpr int R = 96;
    AllocationProbe probe;
    Engine e(m.ck, d, Engine::whole_model(d), probe);
    std::vector<SessionState> states;
    for (int b = 0; b < R; ++b) states.push_back(e.new_state());
    const uint64_t before = probe.live;
    std::vector<float> logits(size_t(R) * size_t(d.vocab));
    std::vector<int32_t> tokens(R);
    for (int b = 0; b < R; ++b) tokens[size_t(b)] = int32_t(32 + b % 90);
    for (int rows : {1, 7, 40, 65, R}) e.forward(std::span<const int32_t>(tokens.data(), size_t(rows)), states[0], logits.data(), true);
    for (int B : {3, 50, R}) {
      std::vector<EngineSequence> seqs;
      for (int b = 0; b < B; ++b) seqs.push_back({std::span<const int32_t>(&tokens[size_t(b)], 1), &states[size_t(b)], logits.data() + size_t(b) * d.vocab, false});
      e.forward(seqs);
    }
    const uint64_t used = probe.peak - before;
    const uint64_t activations = 2 * uint64_t(R) * uint64_t(d.n_embd) * sizeof(float);  // the engine's x and v_first
    const uint64_t bound = RwkvModel::scratch_bytes(d, R, true, true) + activations;
    EXPECT_LE(used, bound) << path;
    // Not a bound by a mile: v7 uses every slot, and the others most of them.
    EXPECT_GE(double(used), (d.arch == Arch::V7 ? 0.6 : 0.3) * double(bound)) << path << ": " << used << " of " << bound;
  }
}

}  // namespace
}  // namespace skein::test
