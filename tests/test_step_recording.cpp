// The model's decode-step recording logic (RwkvModel::run_recorded), on the CPU: a backend that
// "records" by remembering the step and "replays" by running it again stands in for CUDA graphs, so the
// bookkeeping (first step direct, second recorded, later ones replayed, recordings dropped when a
// buffer moves or the backend refuses them) is tested without a GPU, with the real model arithmetic.
#include <gtest/gtest.h>

#include "model/checkpoint.h"
#include "model/architecture.h"
#include "model/weights.h"
#include "tests/test_support.h"
#include "worker/cpu_backend.h"
#include "worker/engine.h"

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

}  // namespace
}  // namespace skein::test
