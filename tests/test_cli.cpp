// The `skein` command line end to end: logits files against the goldens, state files, tokenizers,
// generation, and one-line errors with exit status 2.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "coordinator/placement.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

TEST(Cli, LogitsMatchGoldenInEveryMode) {
  std::string dir = golden("cases/tiny-rwkv-6v0-3m-Q5_1dq");
  auto man = read_json(dir + "/manifest.json");
  auto c = man["cases"][0];
  std::string model = dir + "/" + man["model"].get<std::string>();
  std::string tokens = join(c["tokens"].get<std::vector<int32_t>>());
  std::string chunks = join(c["chunks"].get<std::vector<int32_t>>());
  std::string out = temp_dir();
  struct M { std::string mode, file; bool all; } modes[] = {
      {"parallel", "logits_seq_last", false}, {"parallel", "logits_seq_full", true},
      {"recurrent", "logits_rnn", true}, {"chunks:" + chunks, "logits_chunked_full", true}};
  for (auto& m : modes) {
    auto r = run_skein("logits --model " + model + " --tokens " + tokens + " --mode " + m.mode + (m.all ? " --all-positions" : "") +
                       " --out " + out + "/l.f32 --state-out " + out + "/s.state");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto want = read_f32(dir + "/" + c["files"][m.file]["file"].get<std::string>());
    EXPECT_LE(max_abs_diff(read_f32(out + "/l.f32"), want), 1e-3) << m.mode;
  }
  // Split the run at a state file: the second half's last logits equal the whole run's.
  auto all = c["tokens"].get<std::vector<int32_t>>();
  std::vector<int32_t> a(all.begin(), all.begin() + 10), b(all.begin() + 10, all.end());
  ASSERT_EQ(run_skein("logits --model " + model + " --tokens " + join(a) + " --out " + out + "/a.f32 --state-out " + out + "/a.state").exit_code, 0);
  auto r = run_skein("logits --model " + model + " --tokens " + join(b) + " --out " + out + "/b.f32 --state-in " + out + "/a.state");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LE(max_abs_diff(read_f32(out + "/b.f32"), read_f32(dir + "/" + c["files"]["logits_seq_last"]["file"].get<std::string>())), 1e-3);
  // A state from another model is refused.
  r = run_skein("logits --model " + shared_dir() + "/models/tiny-rwkv-7v0-834K.pth --tokens 1 --out " + out + "/c.f32 --state-in " + out + "/a.state");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("skein: error:"), std::string::npos) << r.output;
}

// generate --state-out saves the state after all the text it showed (the last generated token run too;
// a stop token never enters it), so the state continues exactly that text.
TEST(Cli, AGeneratedStateHoldsAllTheTextShown) {
  const std::string model = shared_dir() + "/models/tiny-rwkv-5v2-730K.pth", prompt = "It was a dark", out = temp_dir();
  for (const std::string stop : {"", " --stop-token 102"}) {
    SCOPED_TRACE(stop.empty() ? "max tokens" : "stop token");
    auto g = run_skein("generate --model " + model + " --prompt '" + prompt + "' --max-tokens 20 --temperature 0" + stop + " --state-out " + out + "/g.state");
    ASSERT_EQ(g.exit_code, 0) << g.output;
    const size_t end = g.output.rfind("\n[");
    ASSERT_NE(end, std::string::npos) << g.output;
    const std::string shown = g.output.substr(0, end);  // the prompt and the generated text
    ASSERT_GT(shown.size(), prompt.size() + 2) << g.output;
    std::vector<int32_t> all(shown.begin(), shown.end());
    all.push_back(' ');
    ASSERT_EQ(run_skein("logits --model " + model + " --state-in " + out + "/g.state --tokens 32 --out " + out + "/cont.f32").exit_code, 0);
    ASSERT_EQ(run_skein("logits --model " + model + " --tokens " + join(all) + " --out " + out + "/whole.f32").exit_code, 0);
    EXPECT_LE(max_abs_diff(read_f32(out + "/cont.f32"), read_f32(out + "/whole.f32")), 1e-4);
  }
}

TEST(Cli, TokenizeAndDetokenizeRoundTrip) {
  std::string world = "world:" + shared_dir() + "/tokenizers/rwkv_vocab_v20230424.txt";
  auto r = run_skein("tokenize --tokenizer " + world, "Hello, world!");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "33155 45 40213 34\n");
  r = run_skein("detokenize --tokenizer " + world, "33155 45 40213 34\n");
  EXPECT_EQ(r.output, "Hello, world!");
  r = run_skein("tokenize", "hi");
  EXPECT_EQ(r.output, "104 105\n");
  // Ids that are not ids: said once, with the item.
  r = run_skein("detokenize", "104 -5\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.output, "skein: error: token ids: '-5' at item 2 is not a non-negative integer\n");
  r = run_skein("detokenize", "104 99999999999999999999\n");
  EXPECT_EQ(r.output, "skein: error: token ids: 99999999999999999999 at item 2 is too large (at most 999999999)\n");
}

// A model with the RWKV-4 Pile vocabulary (50277 ids) reads and writes text through 20B_tokenizer.json,
// stops at <|endoftext|> by default, and the CLI's tokenize/detokenize use the same tokenizer.
TEST(Cli, PileVocabularyModelsTalkThroughTheBpeTokenizer) {
  const std::string bpe = "bpe:" + shared_dir() + "/tokenizers/20B_tokenizer.json", dir = temp_dir();
  auto r = run_skein("tokenize --tokenizer " + bpe, "Hello  world");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "12092 50276 10186\n");
  r = run_skein("detokenize --tokenizer " + bpe, "12092 50276 10186 0");
  EXPECT_EQ(r.output, "Hello  world");
  ASSERT_EQ(run_skein("make-model --arch v4 --layers 2 --embd 64 --vocab 50277 -o " + dir + "/pile.pth").exit_code, 0);
  r = run_skein("generate --model " + dir + "/pile.pth --prompt 'Hello world' --max-tokens 6 --temperature 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("bpe:PATH"), std::string::npos) << r.output;  // no default for this vocabulary: says which to choose
  r = run_skein("generate --model " + dir + "/pile.pth --tokenizer " + bpe + " --prompt 'Hello world' --max-tokens 6 --temperature 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("Hello world", 0), 0u) << r.output;
  EXPECT_NE(r.output.find("generated"), std::string::npos) << r.output;
}

TEST(Cli, GenerateStreamsGreedyText) {
  auto r = run_skein("generate --model " + shared_dir() + "/models/tiny-rwkv-5v2-730K.pth --prompt 'The man said' --temperature 0 --alpha-decay 0.996 --max-tokens 40");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("The man said to a state of the stress and"), std::string::npos) << r.output;
}

// cuBLAS is opened by the first GPU product, never by a CPU run: linked, it cost every process 216 MB
// and 0.6 s at start-up. glibc's loader names every library it loads under LD_DEBUG=files.
TEST(Cli, ACpuRunNeverLoadsCublas) {
  auto r = run_shell("env LD_DEBUG=files " + std::string(SKEIN_BINARY) + " generate --model " + shared_dir() +
                     "/models/tiny-rwkv-5v2-730K.pth --prompt 'The man said' --temperature 0 --max-tokens 4 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("file=libdnnl.so"), std::string::npos) << "LD_DEBUG names the libraries loaded:\n" << r.output;
  EXPECT_EQ(r.output.find("libcublas"), std::string::npos) << r.output;
}

TEST(Cli, InspectReportsShape) {
  auto r = run_skein("inspect --model " + golden("models/rand-v6-bf16.pth"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("version         v6"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("n_layer         4"), std::string::npos);
  EXPECT_NE(r.output.find("state bytes     "), std::string::npos);
}

TEST(Cli, PlanPrintsTableAndJson) {
  std::string model = golden("models/rand-v6-bf16.pth");
  auto r = run_skein("plan --model " + model + " --strategy 'cpu fp32 *2 -> cpu bf16i8'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("0-1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("2-4H"), std::string::npos) << r.output;
  r = run_skein("plan --model " + model + " --strategy 'cpu fp32 *2 -> cpu bf16i8' --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["stages"][1]["quant"], "i8");
  // A plan for this machine's GPUs says what each would hold (two stages on cuda:0 together) and, where
  // the GPU is here, whether it fits what is free now.
  r = run_skein("plan --model " + model + " --strategy 'cuda fp16i8 *2 -> cuda:0 fp16 *2 -> cpu fp32' --slots 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const size_t line = r.output.find("\ncuda:0");
  ASSERT_NE(line, std::string::npos) << r.output;
  const std::string gpu = r.output.substr(line + 1);
  EXPECT_NE(gpu.find(": needs "), std::string::npos) << gpu;
  EXPECT_TRUE(gpu.find("not checked (no such GPU here") != std::string::npos || gpu.find("fits") != std::string::npos) << gpu;
  EXPECT_EQ(std::count(gpu.begin(), gpu.end(), '\n'), 1) << gpu;  // one line for the one GPU
  r = run_skein("plan --model " + model + " --strategy 'cpu fp32 *9'");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("skein: error: strategy: segments ask for 9 units"), std::string::npos) << r.output;
}

// `bench`: figures and the JSON line; with --profile each phase's op table, one v7_attention per layer per step.
// The peak RSS includes the largest batch's states.
TEST(Cli, BenchPrintsFiguresAndAnOpProfile) {
  auto r = run_skein("bench --model " + shared_dir() + "/models/tiny-rwkv-7v0-834K.pth --prompt-tokens 32 --decode-tokens 8 --batches 2,600 --profile");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (std::string phase : {"profile prefill (32 tokens) on cpu", "profile decode batch 1 on cpu", "profile decode batch 2 on cpu"})
    EXPECT_NE(r.output.find(phase), std::string::npos) << phase << "\n" << r.output;
  size_t table = r.output.find("profile decode batch 1 on cpu");
  size_t row = r.output.find("\n  v7_attention ", table);
  ASSERT_NE(row, std::string::npos) << r.output;
  std::istringstream line(r.output.substr(row + 1, r.output.find('\n', row + 1) - row - 1));
  std::string op;
  double calls = 0;
  line >> op >> calls;
  EXPECT_EQ(calls, 12.0) << line.str();  // per step: one per layer
  auto j = nlohmann::json::parse(r.output.substr(r.output.rfind("\n{") + 1));
  EXPECT_GT(j["decode_tok_s"].get<double>(), 0);
  EXPECT_EQ(j["decode_batches"][0]["batch"], 2);
  EXPECT_GT(j["state_bytes_per_request"].get<double>(), 0);
  EXPECT_GT(j["peak_rss_mib"].get<double>(), 600 * j["state_bytes_per_request"].get<double>() / (1 << 20));
  EXPECT_FALSE(j.contains("streamed_bytes_per_token")) << "nothing is streamed without *N+";
}

// A plan streaming layers (*N+) moves them in at every step: bench reports those bytes, the same as the
// plan's streamed weight bytes, and their rate against the host link.
TEST(Cli, BenchReportsStreamedLayersAgainstTheirLimit) {
  const std::string model = shared_dir() + "/models/tiny-rwkv-7v0-834K.pth", strategy = " --strategy 'cpu fp32 *6+'";
  auto plan = run_skein("plan --json --model " + model + strategy);
  ASSERT_EQ(plan.exit_code, 0) << plan.output;
  auto p = nlohmann::json::parse(plan.output.substr(plan.output.rfind("\n{") == std::string::npos ? 0 : plan.output.rfind("\n{") + 1));
  const double planned = p["stages"][0]["streamed_weight_bytes"].get<double>();
  ASSERT_GT(planned, 0);
  auto r = run_skein("bench --model " + model + strategy + " --prompt-tokens 8 --decode-tokens 8");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\nstreamed         "), std::string::npos) << r.output;
  auto j = nlohmann::json::parse(r.output.substr(r.output.rfind("\n{") + 1));
  EXPECT_EQ(j["streamed_bytes_per_token"].get<double>(), planned);
  EXPECT_NEAR(j["streamed_gb_s"].get<double>(), j["decode_tok_s"].get<double>() * planned / 1e9, 1e-9);
  EXPECT_GT(j["streaming_limit_gb_s"].get<double>(), 0);
  EXPECT_EQ(j["streaming_limit"], "measured host read limit");
}

TEST(Cli, ErrorsAreOneLineWithExitCode2) {
  std::string d = temp_dir();
  write_file(d + "/bad.pth", "PK\x03\x04 not really a zip");
  for (std::string args : {"inspect --model " + d + "/bad.pth", "logits --model " + d + "/nope.pth --tokens 1 --out " + d + "/x",
                           "logits --model " + shared_dir() + "/models/tiny-rwkv-4v0-660K.pth --tokens 1,x --out " + d + "/x",
                           "logits --model " + shared_dir() + "/models/tiny-rwkv-4v0-660K.pth --tokens 1,999 --out " + d + "/x",
                           "generate --model " + shared_dir() + "/models/tiny-rwkv-4v0-660K.pth --temperature -1",
                           "make-model --arch v9 --layers 1 --embd 8 --vocab 8 -o " + d + "/m.pth",
                           "generate --model " + shared_dir() + "/models/tiny-rwkv-4v0-660K.pth --strategy \"cuda:7 fp16\"",
                           "generate --model " + shared_dir() + "/models/tiny-rwkv-4v0-660K.pth --strategy \"cuda fp16 *2+ -> cpu fp32 *1+\"",
                           std::string("bench --products --device 64")}) {
    auto r = run_skein(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    std::string last = r.output.substr(r.output.rfind("skein: error:") == std::string::npos ? 0 : r.output.rfind("skein: error:"));
    EXPECT_EQ(last.rfind("skein: error: ", 0), 0u) << args << "\n" << r.output;
    EXPECT_EQ(std::count(last.begin(), last.end(), '\n'), 1) << args << "\n" << r.output;
  }
}

// A flag out of range ends the command before anything loads or prints: --threads 100000 crashed
// OpenMP, a bad sampling flag failed only after the prompt had been echoed, and a batch of 10^8
// states (18 TiB) was allocated until the kernel killed the bench, and a seed of -3 ran as 2^64 - 3.
TEST(Cli, BadFlagsStopBeforeAnythingRuns) {
  const std::string model = shared_dir() + "/models/tiny-rwkv-4v0-660K.pth", gen = "generate --model " + model + " --prompt Hello ";
  for (std::string args : {gen + "--threads 100000", gen + "--threads -1", gen + "--temperature -1", gen + "--top-k -2",
                           gen + "--alpha-decay 2", gen + "--max-tokens 99999999999", gen + "--bogus", std::string("bench --threads 5000"),
                           "serve --model " + model + " --port 70000", "serve --model " + model + " --http-port -2", "plan --model " + model + " --slots 0",
                           "bench --model " + model + " --prompt-tokens 0", "bench --model " + model + " --batches 100000000",
                           "eval --model " + model + " --data " + model + " --limit -1", "make-model --layers 1 --embd 64 --vocab 8 --ffn -4 -o " + temp_dir() + "/m.pth",
                           gen + "--seed -3", gen + "--seed 18446744073709551616", "make-model --layers 1 --embd 64 --vocab 8 --seed -1 -o " + temp_dir() + "/m.pth",
                           "make-model --arch v4 --layers 1 --embd 64 --vocab 8 --head-size 32 -o " + temp_dir() + "/m.pth",
                           "serve --model " + model + " --auth-token ''", "serve --model " + model + " --listen ''",  // '': an unset $TOKEN
                           gen + "--ban 999", "serve --model " + model + " --port 0 --ban 999",  // ids past the vocabulary: before any output
                           "bench --model " + model + " --clients 8", std::string("bench --server 127.0.0.1:1 --batches 8"),  // another mode's flag: not ignored
                           std::string("bench --server 127.0.0.1:1 --duration -1"), std::string("bench --server 127.0.0.1:1 --clients 0")}) {
    auto r = run_skein(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_EQ(r.output.rfind("skein: error: ", 0), 0u) << args << "\n" << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << args << "\n" << r.output;
  }
}

// What only the user's process needs (a tokenizer, a --state-in file, eval data, an eval checkpoint,
// a sessions folder, folders that outputs go to) is checked before the model loads, which for a large model in an i8 format takes minutes: with a
// plan that cannot load (1 KiB of host memory), each mistake is still what the command reports.
TEST(Cli, InputsAreCheckedBeforeTheModelLoads) {
  const std::string d = temp_dir(), model = d + "/world.pth", world = " --tokenizer world:" + shared_dir() + "/tokenizers/rwkv_vocab_v20230424.txt";
  ASSERT_EQ(run_skein("make-model --arch v7 --layers 2 --embd 64 --vocab 65536 --seed 3 --dtype fp32 -o " + model).exit_code, 0);
  write_file(d + "/small.toml", "[devices]\ncpu = \"1KiB\"\n");
  write_file(d + "/lambada.jsonl", "{\"text\": \"the cat sat on the mat\"}\n");
  write_file(d + "/other.progress", "{\"eval\": 1}\n");
  write_file(d + "/budgets.toml", "[cache]\nprefix_bytes = \"1000TiB\"\n");
  const std::string run = " --model " + model + " --config " + d + "/small.toml";
  for (auto [args, says] : std::vector<std::pair<std::string, std::string>>{
           {"generate --prompt a" + run, "choose a tokenizer"},
           {"generate --prompt a --state-in " + d + "/none.state" + run + world, "none.state: cannot open state file"},
           {"generate --prompt a --state-out " + d + "/no/such/folder/x.state" + run + world, "x.state: cannot write there: No such file or directory"},
           {"eval --data " + d + "/lambada.jsonl --output " + d + "/no/r.json" + run + world, "r.json: cannot write there"},
           {"eval --data " + d + "/lambada.jsonl" + run, "choose a tokenizer"},
           {"eval --data " + d + "/none.jsonl" + run + world, "none.jsonl: cannot read the LAMBADA data"},
           {"eval --data " + d + "/lambada.jsonl --pad-token 70000" + run + world, "--pad-token 70000 is outside the vocabulary"},
           {"generate --prompt a --ban 70000" + run + world, "token_ban (--ban) id 70000 is outside the vocabulary (65536)"},
           {"generate --prompt a --stop-token 70000" + run + world, "token_stop (--stop-token) id 70000 is outside the vocabulary (65536)"},
           {"eval --data " + d + "/lambada.jsonl --resume " + d + "/other.progress" + run + world, "other.progress: not an eval checkpoint"},
           {"serve --port 0 --http-port -1 --sessions-dir " + d + "/small.toml/sessions" + run + world, "sessions: cannot create folder"},
           {"serve --port 0 --http-port -1 --model " + model + " --config " + d + "/budgets.toml", "[scheduler] parked_bytes add up to 1024002"},
           {"logits --tokens 1,70000 --out " + d + "/l.f32" + run, "token id 70000 is out of range for vocabulary size 65536"},
           {"logits --tokens 1 --out " + d + "/l.f32 --state-in " + d + "/lambada.jsonl" + run, "lambada.jsonl: not a Skein state file"},
           {"logits --tokens 1 --out " + d + "/no/l.f32" + run, "l.f32: cannot write there"},
           {"logits --tokens 1 --out " + d + "/l.f32 --state-out " + d + "/no/l.state" + run, "l.state: cannot write there"},
           {"logits --tokens 1 --out " + d + "/l.f32" + run, "the plan does not fit"},
           {"eval --data " + d + "/lambada.jsonl" + run + world, "the plan does not fit"}}) {  // all well: the load is what stops it
    const auto r = run_skein(args);
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_NE(r.output.find(says), std::string::npos) << args << ": " << r.output;
  }
}

// A folder named where a file belongs: refused by name (a config folder was read as an empty config,
// and other readers failed with "basic_filebuf::underflow ... Is a directory", naming nothing). Outputs
// too, before any work: a folder as an eval's --output failed its final rename after the whole eval.
TEST(Cli, AFolderWhereAFileBelongsIsRefusedByName) {
  const std::string d = temp_dir(), model = " --model " + shared_dir() + "/models/tiny-rwkv-7v0-834K.pth";
  const std::string lambada = shared_dir() + "/data/lambada_test.jsonl";
  for (const std::string& args : {"generate --prompt a --config " + d, "generate --prompt a --json-schema " + d, "generate --prompt a --tokenizer world:" + d,
                                 "generate --prompt a --tokenizer bpe:" + d, "generate --prompt a --state-in " + d, "eval --data " + d,
                                 "eval --task perplexity --data " + d, "eval --task choice --data " + d, "eval --data " + lambada + " --resume " + d,
                                 "eval --data " + lambada + " --output " + d, "generate --prompt a --state-out " + d, "logits --tokens 1 --out " + d,
                                 "logits --tokens 1 --out " + d + "/l.f32 --state-out " + d, "make-model --arch v7 --layers 1 --embd 64 --vocab 256 -o " + d}) {
    const auto r = run_skein(args + (args.starts_with("make-model") ? "" : model));
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_EQ(r.output, "skein: error: " + d + ": is a folder, not a file\n") << args;
  }
}

// Node-prefixed stages run on this host when there is no mpirun: a plan that cannot fit its memory
// stops before loading, with the figures (tiny-rwkv-7v0 keeps ~200 KiB of state a slot, so a million
// slots need ~200 GiB; state is allocated as slots fill, so without the check this would start).
TEST(Cli, StagesThatCannotFitThisHostStopAtStart) {
  if (host_memory() > (uint64_t(256) << 30))
    GTEST_SKIP() << "this host has more memory than a million slots of state need";
  std::string d = temp_dir();
  write_file(d + "/slots.toml", "[scheduler]\nmax_slots = 1048576\n");
  // serve: a server keeps every configured slot (generate holds one state per prompt)
  auto r = run_shell("timeout 60 " + std::string(SKEIN_BINARY) + " serve --model " + shared_dir() + "/models/tiny-rwkv-7v0-834K.pth --config " + d +
                     "/slots.toml --strategy \"a:cpu fp32 *2 -> b:cpu fp32\" --port 0 --http-port -1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("skein: error: strategy: the stages on this host (0, 1) need"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("state for 1048576 slots"), std::string::npos) << r.output;
  // generate holds a state per prompt, so the same config fits for it
  auto g = run_skein("generate --model " + shared_dir() + "/models/tiny-rwkv-7v0-834K.pth --config " + d +
                     "/slots.toml --strategy \"a:cpu fp32 *2 -> b:cpu fp32\" --prompt The --max-tokens 1");
  EXPECT_EQ(g.exit_code, 0) << g.output;
}

}  // namespace
}  // namespace skein::test
