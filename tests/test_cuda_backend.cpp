// The CUDA backend against the CPU fp32 engine: every generation (random golden models and the tiny
// trained models) in fp32, fp16, bf16 and fp16i8, a mixed CPU/GPU plan, batched decode, and state
// round trips, tuned initial states and slot copies. Without a GPU every test skips with the reason.
//
// Tolerances (max |logit difference| against CPU fp32, after a 24-token prompt and 8 decode steps):
//   cuda fp32 1e-3 (cuBLAS summation order), fp16 0.05, bf16 0.25 (the weights themselves are rounded),
//   fp16i8 0.5 (the official uint8 scheme's own error, see tests/test_quantization.cpp), and greedy
//   tokens of the tiny trained models in fp32 identical to the CPU's.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "coordinator/placement.h"
#include "coordinator/strategy.h"
#include "kernels/cuda/cuda_ops.h"
#include "model/architecture.h"
#include "tests/golden_cases.h"
#include "tests/server_harness.h"
#include "tests/test_support.h"
#include "worker/cuda_backend.h"

namespace skein::test {
namespace {

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or found none)";
  }
};

std::vector<std::string> models() {
  std::vector<std::string> out;
  for (std::string g : {"rand-v4-bf16", "rand-v5_2-bf16", "rand-v6-bf16", "rand-v7-bf16"})
    out.push_back(shared_dir() + "/golden/models/" + g + ".pth");
  for (std::string t : {"tiny-rwkv-4v0-660K", "tiny-rwkv-5v1-730K", "tiny-rwkv-5v2-730K", "tiny-rwkv-6v0-3m-Q5_1dq", "tiny-rwkv-7v0-834K"})
    out.push_back(shared_dir() + "/models/" + t + ".pth");
  return out;
}

// Logits after a prompt (parallel mode) and after each of `steps` single-token steps.
std::vector<float> trace(Engine& e, int steps) {
  const int V = e.dims().vocab;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 24; ++i) prompt.push_back((i * 37 + 11) % V);
  SessionState s = e.new_state();
  std::vector<float> all, logits(static_cast<size_t>(V));
  e.forward(prompt, s, logits.data());
  all.insert(all.end(), logits.begin(), logits.end());
  for (int t = 0; t < steps; ++t) {
    int32_t tok = int32_t((t * 101 + 7) % V);
    e.forward(std::span<const int32_t>(&tok, 1), s, logits.data());
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

TEST_F(CudaBackendTest, EveryGenerationAndDtypeMatchesCpuFp32) {
  struct Dtype {
    const char* strategy;
    double tolerance;
  };
  for (const std::string& path : models()) {
    auto cpu = load_for_test(path, "", "cpu fp32");
    auto want = trace(*cpu.model, 8);
    for (Dtype d : {Dtype{"cuda fp32", 1e-3}, Dtype{"cuda fp16", 0.05}, Dtype{"cuda bf16", 0.25}, Dtype{"cuda fp16i8", 0.5}}) {
      auto gpu = load_for_test(path, "", d.strategy);
      auto got = trace(*gpu.model, 8);
      double diff = max_abs_diff(got, want);
      EXPECT_LE(diff, d.tolerance) << path << " " << d.strategy;
      if (std::getenv("SKEIN_TEST_VERBOSE")) std::printf("%s %s: max |dlogit| %.3g\n", path.c_str(), d.strategy, diff);
    }
  }
}

TEST_F(CudaBackendTest, MixedCpuGpuPlanAndGreedyTokens) {
  for (std::string t : {"tiny-rwkv-5v2-730K", "tiny-rwkv-7v0-834K"}) {
    std::string path = shared_dir() + "/models/" + t + ".pth";
    auto cpu = load_for_test(path, "", "cpu fp32");
    auto mixed = load_for_test(path, "", "cpu fp32 *2 -> cuda fp32 *3 -> cpu fp32");
    EXPECT_LE(max_abs_diff(trace(*mixed.model, 4), trace(*cpu.model, 4)), 1e-3) << t;
    auto gpu = load_for_test(path, "", "cuda fp32");
    ByteTokenizer tok;
    GenerateRequest r;
    r.prompt = tok.encode("The man said");
    r.max_tokens = 40;
    r.sampling.temperature = 0;
    EXPECT_EQ(generate_fresh(*gpu.model, tok, r).tokens, generate_fresh(*cpu.model, tok, r).tokens) << t;
  }
}

// Log-probabilities of tokens drawn on a GPU stage are the CPU's: the raw logits' log-softmax, taken
// before the GPU sampler penalises them in place; rows that do not ask stay unscored; prompt positions
// scored against their next tokens agree too.
TEST_F(CudaBackendTest, LogprobsOfTokensDrawnOnTheGpuAreTheCpusFigures) {
  for (std::string t : {"tiny-rwkv-5v2-730K", "tiny-rwkv-7v0-834K"}) {
    const std::string path = shared_dir() + "/models/" + t + ".pth";
    auto cpu = load_for_test(path, "", "cpu fp32");
    auto gpu = load_for_test(path, "", "cuda fp32");
    const std::vector<std::vector<int32_t>> prompts = {{84, 104, 101, 32}, {73, 116, 32}, {65}, {10, 73, 110, 32}};
    auto draw = [&](Engine& e) {
      std::vector<SessionState> states;
      std::vector<SampleRequest> requests(prompts.size());
      std::vector<SampledToken> out(prompts.size() * 5);  // the draws, then each prompt's scored positions
      std::vector<EngineSequence> seqs;
      for (size_t i = 0; i < prompts.size(); ++i) states.push_back(e.new_state());
      for (size_t i = 0; i < prompts.size(); ++i) {
        requests[i].temperature = 0;
        requests[i].penalties = {{101, 4.0f}, {32, INFINITY}};  // the draw avoids them; the scores do not know
        requests[i].logprobs = i == 2 ? -1 : int(i) * 3;
        EngineSequence q{prompts[i], &states[i], nullptr, false};
        q.sample = &requests[i];
        q.token = &out[i];
        q.score_targets = std::span<const int32_t>(prompts[i]).subspan(1);  // each position against the next token
        q.score_top = 2;
        q.scores = out.data() + prompts.size() + i * 4;
        seqs.push_back(q);
      }
      e.forward(seqs);
      return out;
    };
    const auto want = draw(*cpu.model), got = draw(*gpu.model);
    EXPECT_TRUE(want[prompts.size()].scored && want[0].scored);
    for (size_t i = 0; i < got.size(); ++i) {  // (a short prompt leaves some of its four places unused: equal too)
      EXPECT_EQ(got[i].token, want[i].token) << t << " row " << i;
      EXPECT_EQ(got[i].scored, want[i].scored) << t << " row " << i;
      EXPECT_NEAR(got[i].logprob, want[i].logprob, 1e-3) << t << " row " << i;
      ASSERT_EQ(got[i].top.size(), want[i].top.size()) << t << " row " << i;
      for (size_t k = 0; k < want[i].top.size(); ++k) {
        EXPECT_EQ(got[i].top[k].token, want[i].top[k].token) << t << " row " << i << " rank " << k;
        EXPECT_NEAR(got[i].top[k].logprob, want[i].top[k].logprob, 1e-3) << t << " row " << i << " rank " << k;
      }
    }
  }
}

// Batched decode (many sequences in one step) gives each sequence its own logits.
TEST_F(CudaBackendTest, BatchedDecodeMatchesSequencesAlone) {
  std::string path = shared_dir() + "/models/tiny-rwkv-7v0-834K.pth";
  auto gpu = load_for_test(path, "", "cuda fp32");
  Engine& e = *gpu.model;
  const size_t V = 256;
  const int B = 16;
  std::vector<SessionState> states;
  std::vector<std::vector<int32_t>> prompts;
  for (int b = 0; b < B; ++b) {
    states.push_back(e.new_state());
    prompts.push_back({int32_t(65 + b), int32_t(97 + b), 32});
  }
  std::vector<float> batched(B * V);
  std::vector<EngineSequence> seqs;
  for (int b = 0; b < B; ++b) seqs.push_back({prompts[size_t(b)], &states[size_t(b)], batched.data() + size_t(b) * V, false});
  e.forward(seqs);
  for (int b = 0; b < B; ++b) {
    SessionState alone = e.new_state();
    std::vector<float> logits(V);
    e.forward(prompts[size_t(b)], alone, logits.data());
    EXPECT_LE(max_abs_diff(logits, std::vector<float>(batched.begin() + long(size_t(b) * V), batched.begin() + long(size_t(b + 1) * V))), 1e-4) << b;
    EXPECT_LE(max_abs_diff(alone.to_host(), states[size_t(b)].to_host()), 1e-5) << b;
  }
}

// Decode steps replayed from CUDA graphs give exactly the directly launched kernels' results, also when
// the same batch size is run for different sessions in turn (the graph's state tables are refilled):
// at a batch of 4 (tensor-core products) and of 12 (cuBLAS GEMMs forked onto side streams and joined
// back, which the graph must capture as edges).
TEST_F(CudaBackendTest, RecordedDecodeStepsEqualDirectOnes) {
  std::string path = shared_dir() + "/models/tiny-rwkv-7v0-834K.pth";
  const size_t V = 256;
  for (const int B : {4, 12}) {
    auto graphs = load_for_test(path, "", "cuda fp16");
    setenv("SKEIN_CUDA_GRAPHS", "0", 1);
    auto direct = load_for_test(path, "", "cuda fp16");
    unsetenv("SKEIN_CUDA_GRAPHS");
    auto run = [&](Engine& e) {
      std::vector<SessionState> a, b;
      for (int i = 0; i < B; ++i) {
        a.push_back(e.new_state());
        b.push_back(e.new_state());
      }
      std::vector<float> out;
      for (int step = 0; step < 8; ++step) {
        auto& group = step % 2 ? b : a;  // two sets of sessions take turns at the same batch size
        std::vector<int32_t> toks(static_cast<size_t>(B));
        std::vector<float> logits(size_t(B) * V);
        std::vector<EngineSequence> seqs;
        for (int i = 0; i < B; ++i) {
          toks[size_t(i)] = int32_t(32 + (step * 7 + i * 13) % 90);
          seqs.push_back({std::span<const int32_t>(&toks[size_t(i)], 1), &group[size_t(i)], logits.data() + size_t(i) * V, false});
        }
        e.forward(seqs);
        out.insert(out.end(), logits.begin(), logits.end());
      }
      for (auto& s : a) for (float f : s.to_host()) out.push_back(f);
      return out;
    };
    auto g = run(*graphs.model), d = run(*direct.model);
    // Step 0 runs directly, step 1 is recorded, steps 2..7 replay it: a capture that silently fell back
    // to direct launches would pass the comparison below untested.
    auto* recorder = dynamic_cast<CudaBackend*>(&graphs.model->stages().front()->backend());
    ASSERT_NE(recorder, nullptr);
    EXPECT_EQ(recorder->recorded_steps(), 1) << "batch " << B;
    EXPECT_EQ(recorder->replayed_steps(), 6) << "batch " << B;
    ASSERT_EQ(g.size(), d.size());
    // The same kernels on the same shapes: equal up to cuBLAS picking another algorithm for other
    // addresses (a wrong state table or stale buffer would be off by far more).
    EXPECT_LE(max_abs_diff(g, d), 1e-5) << "batch " << B;
  }
}

// Layers streamed to the GPU from pinned host memory (*N+, two device slots taking turns) compute what
// resident layers do, for one, two and all-but-one streamed layers, in one process and batched.
TEST_F(CudaBackendTest, LayersStreamedFromHostEqualResidentOnes) {
  for (std::string t : {"tiny-rwkv-7v0-834K", "tiny-rwkv-6v0-3m-Q5_1dq"}) {
    std::string path = shared_dir() + "/models/" + t + ".pth";
    auto resident = load_for_test(path, "", "cuda fp16");
    auto want = trace(*resident.model, 4);
    const int L = resident.model->dims().n_layer;
    for (int keep : {L - 1, L - 2, 1}) {
      auto streamed = load_for_test(path, "", "cuda fp16 *" + std::to_string(keep) + "+");
      EXPECT_LE(max_abs_diff(trace(*streamed.model, 4), want), 1e-5) << t << " keeping " << keep;
    }
  }
}

// A GPU plan streaming layers is set against the pinned copy to its GPU, measured in the same run.
TEST_F(CudaBackendTest, BenchSetsStreamedLayersAgainstAPinnedCopy) {
  auto r = run_skein("bench --model " + shared_dir() + "/models/tiny-rwkv-7v0-834K.pth --strategy 'cuda fp16 *6+' --prompt-tokens 8 --decode-tokens 8");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output.substr(r.output.rfind("\n{") + 1));
  EXPECT_GT(j["streamed_bytes_per_token"].get<double>(), 0);
  EXPECT_EQ(j["streaming_limit"], "measured pinned host-to-cuda:0 copy");
  EXPECT_GT(j["streaming_limit_gb_s"].get<double>(), 1.0) << "slower than any PCIe link";
}

// stdout of a command (stderr kept apart: the ranks' start-up lines go there).
std::string stdout_of(const std::string& cmd, int* exit_code, std::string* err = nullptr) {
  std::string dir = temp_dir();
  int status = std::system(("timeout 180 " + cmd + " > " + dir + "/out 2> " + dir + "/err < /dev/null").c_str());
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  if (err) *err = read_file(dir + "/err");
  return read_file(dir + "/out");
}

std::string tiny(const std::string& name) { return shared_dir() + "/models/" + name + ".pth"; }

// Seeded sampling (top-p, penalties) on a GPU last stage: the cluster (activations CPU -> GPU over MPI
// host buffers, tokens drawn on the GPU rank) writes the text of the same plan in one process. (The
// kernel's draws equal the CPU reference's for equal logits: CudaKernels.SamplingMatchesCpuReference.)
TEST_F(CudaBackendTest, GpuSamplingOnAClusterStageGivesTheOneProcessText) {
  std::string gen = "generate --model " + tiny("tiny-rwkv-7v0-834K") +
                    " --prompt 'The little' --max-tokens 40 --temperature 0.8 --top-p 0.7 --alpha-presence 0.4 --alpha-frequency 0.2 --seed 7"
                    " --strategy 'cpu fp32 *3 -> cuda:0 fp32'";
  int rc = 0;
  std::string err;
  std::string one = stdout_of(std::string(SKEIN_BINARY) + " " + gen, &rc, &err);
  ASSERT_EQ(rc, 0) << err;
  std::string cluster = stdout_of(mpirun_skein(3, gen), &rc, &err);
  ASSERT_EQ(rc, 0) << err;
  EXPECT_EQ(cluster, one);
  EXPECT_GT(one.size(), 40u);
  EXPECT_NE(err.find("in over MPI"), std::string::npos) << err;
}

// Logits of a pipeline whose last stage is a GPU rank equal the one-process run of the same plan.
TEST_F(CudaBackendTest, ClusterLogitsWithAGpuStageMatchOneProcess) {
  std::string dir = temp_dir();
  std::string args = "logits --model " + tiny("tiny-rwkv-6v0-3m-Q5_1dq") + " --tokens 84,104,101,32,113,117,105,99,107 --all-positions --strategy 'cpu fp32 *2 -> cuda:0 fp32'";
  auto one = run_skein(args + " --out " + dir + "/one.f32");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto many = run_shell(mpirun_skein(3, args + " --out " + dir + "/many.f32"));
  ASSERT_EQ(many.exit_code, 0) << many.output;
  EXPECT_LE(max_abs_diff(read_f32(dir + "/one.f32"), read_f32(dir + "/many.f32")), 1e-5);
}

// Two segments on one GPU, as the official guide fits models ("cuda fp16i8 *1 -> cuda fp16"): in one
// process the stages share the GPU's backend, on a cluster two ranks share the GPU and the hop between
// them goes through MPI host buffers (NCCL cannot pair a GPU with itself). Both give the CPU's logits.
TEST_F(CudaBackendTest, SegmentsSharingAGpuGiveTheCpusLogits) {
  std::string dir = temp_dir();
  std::string args = "logits --model " + tiny("tiny-rwkv-7v0-834K") + " --tokens 84,104,101,32,113,117,105,99,107 --all-positions";
  auto cpu = run_skein(args + " --strategy 'cpu fp32' --out " + dir + "/cpu.f32");
  ASSERT_EQ(cpu.exit_code, 0) << cpu.output;
  const std::string shared = " --strategy 'cuda fp32 *5 -> cuda:0 fp32'";
  auto one = run_skein(args + shared + " --out " + dir + "/one.f32");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  EXPECT_LE(max_abs_diff(read_f32(dir + "/cpu.f32"), read_f32(dir + "/one.f32")), 1e-3);
  auto many = run_shell(mpirun_skein(3, args + shared + " --out " + dir + "/many.f32"));
  ASSERT_EQ(many.exit_code, 0) << many.output;
  EXPECT_LE(max_abs_diff(read_f32(dir + "/one.f32"), read_f32(dir + "/many.f32")), 1e-5);
  EXPECT_NE(many.output.find("over MPI"), std::string::npos) << many.output;
  // Two precisions on one GPU, within fp16i8's tolerance of the CPU.
  auto mixed = run_skein(args + " --strategy 'cuda fp16i8 *4 -> cuda fp16' --out " + dir + "/mixed.f32");
  ASSERT_EQ(mixed.exit_code, 0) << mixed.output;
  EXPECT_LE(max_abs_diff(read_f32(dir + "/cpu.f32"), read_f32(dir + "/mixed.f32")), 0.5);
}

// States made on a GPU stage from outside it: a state-tuning file's initial states (copied in at every
// reset) and copies of a slot (a multiple-choice document's choices start from their context's state)
// give the CPU's figures, in one process and on a cluster whose last stage is the GPU rank; so does a tuned
// state served by name (kept on the GPU stage, a slot started from it there).
TEST_F(CudaBackendTest, TunedInitialStatesAndSlotCopiesOnAGpuStage) {
  const std::string model = tiny("tiny-rwkv-7v0-834K"), dir = temp_dir();
  const ModelDims d = detect_architecture(*Checkpoint::open(model));
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  std::vector<std::vector<float>> values;
  for (int l = 0; l < d.n_layer; ++l) {
    shapes.push_back({"blocks." + std::to_string(l) + ".att.time_state", {d.n_head, d.head_size, d.head_size}});
    std::vector<float> v(size_t(d.n_head) * d.head_size * d.head_size);
    for (size_t i = 0; i < v.size(); ++i) v[i] = float(std::sin(double(i * 7 + size_t(l))));
    values.push_back(v);
  }
  const std::string states = rewrite_checkpoint(model, "states.pth", [](PthTensorSpec&) { return false; }, shapes, values);
  const std::string logits = "logits --model " + model + " --initial-state " + states + " --tokens 84,104,101,32,109,97,110 --all-positions";
  ASSERT_EQ(run_skein(logits + " --out " + dir + "/cpu.f32").exit_code, 0);
  auto gpu = run_skein(logits + " --strategy 'cuda fp32' --out " + dir + "/gpu.f32");
  ASSERT_EQ(gpu.exit_code, 0) << gpu.output;
  EXPECT_LE(max_abs_diff(read_f32(dir + "/cpu.f32"), read_f32(dir + "/gpu.f32")), 1e-3);

  write_file(dir + "/choice.jsonl", R"({"context": "The man said to", "choices": [" a state of the", " zq xv kkj", " the"], "label": 0})" "\n"
                                    R"({"context": "It was a dark", "choices": [" vvx qqz", " and the state of it", " night"], "label": 2})" "\n");
  const std::string eval = "eval --task choice --model " + model + " --data " + dir + "/choice.jsonl";
  auto cpu = run_skein(eval);
  ASSERT_EQ(cpu.exit_code, 0) << cpu.output;
  for (const std::string& run : {run_skein(eval + " --strategy 'cpu fp32 *3 -> cuda:0 fp32'").output,
                                 run_shell(mpirun_skein(3, eval + " --strategy 'cpu fp32 *3 -> cuda:0 fp32'")).output}) {
    auto result = [](const std::string& out) { return nlohmann::json::parse(out.substr(out.find("{\""), out.find('\n', out.find("{\"")) - out.find("{\""))); };
    ASSERT_NE(run.find("{\""), std::string::npos) << run;
    auto a = result(cpu.output), b = result(run);
    EXPECT_EQ(a["accuracy"], b["accuracy"]) << run;
    EXPECT_NEAR(a["label_logprob"].get<double>(), b["label_logprob"].get<double>(), 1e-3) << run;
  }

  // Served by name: the GPU stage keeps the tuned state in its memory and starts a slot from it.
  const std::string prompt = "Th";
  auto cli = run_skein("generate --model " + model + " --initial-state " + states + " --temperature 0 --max-tokens 8 --prompt " + prompt);
  ASSERT_EQ(cli.exit_code, 0) << cli.output;
  const std::string want = cli.output.substr(prompt.size(), cli.output.find('\n') - prompt.size());
  for (int ranks : {1, 3}) {
    Server server("--strategy 'cpu fp32 *3 -> cuda:0 fp32' --tuned-state chat=" + states, ranks, model);
    ASSERT_GT(server.http_port(), 0) << server.output();
    for (int i = 0; i < 2; ++i) {
      const HttpReply r = http_request(server.http_port(), "POST", "/v1/completions",
                                       R"({"model": "chat", "prompt": "Th", "max_tokens": 8, "temperature": 0})");
      ASSERT_EQ(r.status, 200) << r.body;
      EXPECT_EQ(r.json()["choices"][0]["text"], want) << ranks << " ranks, request " << i;
    }
  }
}

// JSON mode (any object, and a schema's) where the last stage is a GPU: every draw bans the tokens
// outside the allowed mask (up to 65,000 of a World-sized head per row), on the GPU sampler. Greedy
// replies equal the CPU's.
void json_mode_matches_the_cpu(const std::vector<std::string>& strategies) {
  const std::string dir = temp_dir(), model = dir + "/world.pth", world = "world:" + shared_dir() + "/tokenizers/rwkv_vocab_v20230424.txt";
  ASSERT_EQ(run_skein("make-model --arch v7 --layers 2 --embd 64 --vocab 65536 --seed 3 --dtype fp32 -o " + model).exit_code, 0);
  const std::string schema = R"({"type": "object", "properties": {"answer": {"type": "string"}, "n": {"type": "integer"}}, "required": ["answer", "n"]})";
  write_file(dir + "/schema.json", schema);
  const std::string prompt = "The answer:";
  // Any object, then the schema's objects.
  for (auto [flag, format] : {std::pair<std::string, std::string>{"--json", R"({"type": "json_object"})"},
                              {"--json-schema " + dir + "/schema.json", R"({"type": "json_schema", "json_schema": {"name": "a", "schema": )" + schema + "}}"}}) {
    auto cli = run_shell(std::string(SKEIN_BINARY) + " generate --model " + model + " --tokenizer " + world + " " + flag +
                         " --temperature 0 --max-tokens 24 --prompt '" + prompt + "'");
    ASSERT_EQ(cli.exit_code, 0) << cli.output;
    const std::string want = cli.output.substr(prompt.size(), cli.output.find("\n[") - prompt.size());
    ASSERT_FALSE(want.empty()) << cli.output;
    for (const std::string& strategy : strategies)
      for (int ranks : {1, 3}) {
        Server server("--tokenizer " + world + " --strategy '" + strategy + "'", ranks, model);
        ASSERT_GT(server.http_port(), 0) << server.output();
        const HttpReply r = http_request(server.http_port(), "POST", "/v1/completions",
                                         R"({"prompt": ")" + prompt + R"(", "max_tokens": 24, "temperature": 0, "response_format": )" + format + "}");
        ASSERT_EQ(r.status, 200) << r.body;
        EXPECT_EQ(r.json()["choices"][0]["text"].get<std::string>(), want) << flag << ", " << strategy << ", " << ranks << " ranks";
      }
  }
}

TEST_F(CudaBackendTest, JsonModeDrawsOnAGpuWhatItDrawsOnTheCpu) { json_mode_matches_the_cpu({"cuda fp32", "cpu fp32 *1 -> cuda:0 fp32"}); }

// A plan that cannot fit the GPU (state for 2^20 slots of 11 of the tiny v7's layers: 195 GB) stops
// before loading, with the stage's figures on one line, in one process and on the cluster rank that
// runs the stage. serve: a server keeps every configured slot (generate holds a state per prompt).
std::string serve_args(const std::string& config, const std::string& strategy) {
  return "serve --config " + config + " --model " + tiny("tiny-rwkv-7v0-834K") + " --strategy '" + strategy + "' --port 0 --http-port -1";
}
TEST_F(CudaBackendTest, OversizedGpuStageStopsAtStartWithTheFigures) {
  std::string dir = temp_dir();
  write_file(dir + "/big.toml", "[scheduler]\nmax_slots = 1048576\n");
  const std::string args = serve_args(dir + "/big.toml", "cpu fp32 *1 -> cuda:0 fp32");
  auto one = run_shell("timeout 60 " + std::string(SKEIN_BINARY) + " " + args);
  EXPECT_EQ(one.exit_code, 2) << one.output;
  EXPECT_NE(one.output.find("strategy: stage 1 (layers 1-11 + head"), std::string::npos) << one.output;
  EXPECT_NE(one.output.find("of state for 1048576 slots"), std::string::npos) << one.output;
  auto many = run_shell("timeout 60 " + mpirun_skein(3, args));
  EXPECT_NE(many.exit_code, 0);
  EXPECT_NE(many.exit_code, 124) << "the cluster started: " << many.output;
  EXPECT_NE(many.output.find("free: "), std::string::npos) << many.output;

  // Two stages of one process on one GPU add up: slots for which each stage's state takes 60% of the
  // free memory fit one stage, not both.
  const std::string two = "cuda:0 fp32 *6 -> cuda:0 fp32";
  auto ck = Checkpoint::open(tiny("tiny-rwkv-7v0-834K"));
  const Plan p = make_plan(parse_strategy(two), *ck, detect_architecture(*ck), {});
  const uint64_t slots = uint64_t(0.6 * double(cuda::device_info(0).free_bytes)) / p.stages[0].state_bytes_per_slot;
  ASSERT_LE(slots, 1u << 20);
  write_file(dir + "/two.toml", "[scheduler]\nmax_slots = " + std::to_string(slots) + "\n");
  auto both = run_shell("timeout 60 " + std::string(SKEIN_BINARY) + " " + serve_args(dir + "/two.toml", two));
  EXPECT_EQ(both.exit_code, 2) << both.output;
  EXPECT_NE(both.output.find("strategy: stage 1 (layers 6-11 + head"), std::string::npos) << both.output;
  EXPECT_NE(both.output.find("beside the stages before it"), std::string::npos) << both.output;
  // On a cluster the two stages are two ranks loading side by side: together they must fit the GPU.
  auto ranks = run_shell("timeout 60 " + mpirun_skein(3, serve_args(dir + "/two.toml", two)));
  EXPECT_NE(ranks.exit_code, 0);
  EXPECT_NE(ranks.exit_code, 124) << "the cluster started: " << ranks.output;
  EXPECT_NE(ranks.output.find("strategy: stages 0, 1 share cuda:0"), std::string::npos) << ranks.output;
}

// Two GPU stages on two ranks: the hop goes over NCCL (or over MPI with SKEIN_NCCL=0), with the same
// logits either way as the one-process run of the plan.
TEST_F(CudaBackendTest, NcclHopBetweenTwoGpuRanks) {
  if (cuda::device_count() < 2) GTEST_SKIP() << "needs two GPUs: NCCL cannot pair a GPU with itself";
  std::string dir = temp_dir();
  for (std::string m : {"tiny-rwkv-7v0-834K", "tiny-rwkv-5v2-730K"}) {
    std::string args = "logits --model " + tiny(m) + " --tokens 84,104,101,32,113,117,105,99,107 --all-positions --strategy 'cuda:0 fp32 -> cuda:1 fp32'";
    auto one = run_skein(args + " --out " + dir + "/one.f32");
    ASSERT_EQ(one.exit_code, 0) << one.output;
    auto nccl = run_shell(mpirun_skein(3, args + " --out " + dir + "/nccl.f32"));
    ASSERT_EQ(nccl.exit_code, 0) << nccl.output;
    EXPECT_NE(nccl.output.find("out over NCCL"), std::string::npos) << nccl.output;
    auto mpi = run_shell("SKEIN_NCCL=0 " + mpirun_skein(3, args + " --out " + dir + "/mpi.f32"));
    ASSERT_EQ(mpi.exit_code, 0) << mpi.output;
    EXPECT_NE(mpi.output.find("out over MPI"), std::string::npos) << mpi.output;
    EXPECT_LE(max_abs_diff(read_f32(dir + "/one.f32"), read_f32(dir + "/nccl.f32")), 1e-5) << m;
    EXPECT_EQ(read_file(dir + "/nccl.f32"), read_file(dir + "/mpi.f32")) << m;
  }
}

}  // namespace
}  // namespace skein::test
