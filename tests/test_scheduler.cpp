// Continuous batching: requests of different lengths that join at different times get exactly the
// tokens each would get alone.
#include <gtest/gtest.h>

#include <map>

#include "common/error.h"
#include "coordinator/scheduler.h"
#include "kernels/cpu/linear.h"
#include "tests/golden_cases.h"
#include "tests/test_support.h"
#include "worker/local_model.h"

namespace skein::test {
namespace {

TEST(Scheduler, BatchedRequestsGetTheirAloneTokens) {
  for (std::string m : {"tiny-rwkv-5v2-730K", "tiny-rwkv-7v0-834K", "tiny-rwkv-4v0-660K"}) {
    auto mut = load_for_test(shared_dir() + "/models/" + m + ".pth");
    ByteTokenizer tok;
    const std::vector<std::string> prompts = {"The man said", "\nIn the ", "It was a dark and stormy night, and the rain fell in torrents",
                                              "A", "The quick brown fox jumps over the lazy dog."};
    auto request = [&](size_t i) {
      GenerateRequest r;
      r.prompt = tok.encode(prompts[i]);
      r.max_tokens = 10 + int(i) * 7;
      r.sampling.temperature = 0;
      r.sampling.alpha_presence = 0.3f;
      r.sampling.alpha_frequency = 0.2f;
      return r;
    };
    std::map<size_t, std::vector<int32_t>> alone, batched;
    for (size_t i = 0; i < prompts.size(); ++i) alone[i] = generate_fresh(*mut.model, tok, request(i)).tokens;

    LocalModel local(*mut.model, 64);
    Scheduler sched(local, 16, 8, penalty_free_tokens(tok, 256));  // small budget and chunks: prompts span several steps
    auto submit = [&](size_t i) {
      GenerateRequest g = request(i);
      sched.submit({g.prompt, g.max_tokens, g.sampling, [&, i](const SampledToken& t) { batched[i].push_back(t.token); }, {}});
    };
    submit(0);
    submit(1);
    for (int s = 0; s < 3; ++s) sched.step();
    submit(2);
    for (int s = 0; s < 5; ++s) sched.step();
    submit(3);
    submit(4);
    sched.run_until_idle();
    for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(batched[i], alone[i]) << m << " request " << i;
    EXPECT_LT(sched.steps(), 200u);
  }
}

// With batch invariance on, a sequence's logits in a batch are bit for bit its logits alone, whatever
// the other sequences, their lengths and their states; without it they agree to rounding.
TEST(Scheduler, BatchInvariantLogitsAreBitwiseTheAloneLogits) {
  for (std::string m : {"tiny-rwkv-7v0-834K", "tiny-rwkv-6v0-3m-Q5_1dq", "tiny-rwkv-4v0-660K"}) {
    auto mut = load_for_test(shared_dir() + "/models/" + m + ".pth");
    Engine& e = *mut.model;
    const size_t V = 256;
    std::vector<std::vector<int32_t>> history = {{84, 104, 101}, {}, {73, 116, 32, 119, 97, 115}};
    std::vector<std::vector<int32_t>> step = {{32, 113, 117, 105, 99, 107, 32}, {65}, {32, 97, 32, 100, 97, 114, 107, 32, 97, 110, 100, 32}};
    for (bool invariant : {true, false}) {
      cpu::set_batch_invariant(invariant);
      std::vector<std::vector<float>> alone(3), batched(3);
      std::vector<SessionState> states;
      for (size_t i = 0; i < 3; ++i) {
        SessionState s = e.new_state();
        if (!history[i].empty()) e.forward(history[i], s, nullptr);
        SessionState b = s.clone();
        alone[i].resize(step[i].size() * V);
        e.forward(step[i], s, alone[i].data(), true);
        states.push_back(std::move(b));
        batched[i].resize(step[i].size() * V);
      }
      std::vector<EngineSequence> batch;
      for (size_t i = 0; i < 3; ++i) batch.push_back({step[i], &states[i], batched[i].data(), true});
      e.forward(batch);
      for (size_t i = 0; i < 3; ++i) {
        if (invariant) EXPECT_EQ(batched[i], alone[i]) << m << " sequence " << i;
        else EXPECT_LE(max_abs_diff(batched[i], alone[i]), 1e-4) << m << " sequence " << i;
      }
    }
    cpu::set_batch_invariant(false);
  }
}

TEST(Scheduler, InvalidRequestIsRefusedWithoutDisturbingOthers) {
  auto mut = load_for_test(shared_dir() + "/models/tiny-rwkv-7v0-834K.pth");
  LocalModel local(*mut.model, 64);
  Scheduler sched(local, 64, 64, {});
  ScheduledRequest r;
  r.prompt = {1, 2, 3};
  r.max_tokens = 5;
  r.sampling.temperature = 0;
  std::string reason;
  r.on_finish = [&](const std::string& s) { reason = s; };
  sched.submit(r);
  sched.run_until_idle();
  EXPECT_EQ(reason, "length");
  r.prompt = {};
  EXPECT_THROW(sched.submit(r), Error);
  EXPECT_TRUE(sched.idle());
}

}  // namespace
}  // namespace skein::test
