// The tiny trained byte-level models: greedy continuations recorded in the golden manifests, and the
// official PIPELINE.generate runs with penalties, bans and stop tokens (sampling/generate_greedy.json).
#include <gtest/gtest.h>

#include "coordinator/generator.h"
#include "tests/golden_cases.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

TEST(TinyModels, GreedyContinuationsMatchManifests) {
  int checked = 0;
  for (std::string id : {"tiny-rwkv-4v0-660K", "tiny-rwkv-5v1-730K", "tiny-rwkv-5v2-730K", "tiny-rwkv-6v0-3m-Q5_1dq", "tiny-rwkv-7v0-834K"}) {
    std::string dir = golden("cases/" + id);
    auto man = read_json(dir + "/manifest.json");
    auto mut = load_for_test(dir + "/" + man["model"].get<std::string>());
    ByteTokenizer tok;
    for (auto& g : man["greedy"]) {
      GenerateRequest req;
      req.prompt = g["prompt_tokens"].get<std::vector<int32_t>>();
      auto want = g["generated_tokens"].get<std::vector<int32_t>>();
      req.max_tokens = int(want.size());
      req.sampling.temperature = 0;
      req.sampling.alpha_decay = 1;
      GenerateResult r = generate_fresh(*mut.model, tok, req);
      EXPECT_EQ(r.tokens, want) << id << " " << g["name"];
      ++checked;
    }
  }
  EXPECT_GE(checked, 5);
}

TEST(TinyModels, OfficialGenerateRunsWithPenalties) {
  auto runs = read_json(golden("sampling/generate_greedy.json"))["runs"];
  ASSERT_FALSE(runs.empty());
  for (auto& run : runs) {
    auto mut = load_for_test(shared_dir() + "/models/" + run["model"].get<std::string>());
    ByteTokenizer tok;
    const auto& a = run["args"];
    GenerateRequest req;
    req.prompt = tok.encode(run["prompt"].get<std::string>());
    req.max_tokens = run["token_count"];
    req.sampling.temperature = a["temperature"];
    req.sampling.top_p = a["top_p"];
    req.sampling.top_k = a["top_k"];
    req.sampling.alpha_frequency = a["alpha_frequency"];
    req.sampling.alpha_presence = a["alpha_presence"];
    req.sampling.alpha_decay = a["alpha_decay"];
    req.sampling.token_ban = a["token_ban"].get<std::vector<int32_t>>();
    req.sampling.token_stop = a["token_stop"].get<std::vector<int32_t>>();
    req.prefill_chunk = a["chunk_len"];
    std::string streamed;
    GenerateResult r = generate_fresh(*mut.model, tok, req, [&](std::string_view piece) { streamed += piece; });
    EXPECT_EQ(r.text, run["text"].get<std::string>()) << run["model"] << " " << run["prompt"] << " " << a.dump();
    EXPECT_EQ(streamed, r.text);
  }
}

TEST(TinyModels, StopStringEndsGenerationBeforeIt) {
  auto mut = load_for_test(shared_dir() + "/models/tiny-rwkv-5v2-730K.pth");
  ByteTokenizer tok;
  GenerateRequest req;
  req.prompt = tok.encode("The man said");
  req.max_tokens = 120;
  req.sampling.temperature = 0;
  GenerateResult full = generate_fresh(*mut.model, tok, req);
  ASSERT_NE(full.text.find(" stress"), std::string::npos);
  req.sampling.stop = {" stress"};
  std::string streamed;
  GenerateResult cut = generate_fresh(*mut.model, tok, req, [&](std::string_view p) { streamed += p; });
  EXPECT_EQ(cut.finish_reason, "stop_string");
  EXPECT_EQ(cut.text, full.text.substr(0, full.text.find(" stress")));
  EXPECT_EQ(streamed, cut.text);
}

}  // namespace
}  // namespace skein::test
