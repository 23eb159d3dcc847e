// `skein eval`: perplexity and LAMBADA scores equal a direct computation from `skein logits`, the
// cluster gives the single process's figures, and a killed eval resumes where it stopped.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "coordinator/eval_tasks.h"
#include "coordinator/evaluator.h"
#include "model/tokenizer.h"
#include "tests/golden_cases.h"
#include "kernels/cpu/linear.h"
#include "worker/local_model.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

const std::string kModel = "tiny-rwkv-5v2-730K.pth";
std::string model() { return shared_dir() + "/models/" + kModel; }

nlohmann::json result_of(const CommandResult& r) {
  size_t p = r.output.find("{\"");
  EXPECT_NE(p, std::string::npos) << r.output;
  if (p == std::string::npos) return {};
  return nlohmann::json::parse(r.output.substr(p, r.output.find('\n', p) - p));
}

// Sum of log-softmax at the targets, from `skein logits --all-positions` over tokens[0..n-1).
double direct_logprob(const std::vector<int32_t>& tokens, size_t first_target, bool& greedy) {
  const std::string out = temp_dir() + "/direct.f32";
  auto r = run_skein("logits --model " + model() + " --tokens " + join({tokens.begin(), tokens.end() - 1}) + " --all-positions --out " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto logits = read_f32(out);
  const size_t V = 256;
  double sum = 0;
  greedy = true;
  for (size_t j = first_target; j < tokens.size(); ++j) {
    const float* z = logits.data() + (j - 1) * V;
    size_t best = size_t(std::max_element(z, z + V) - z);
    double mx = z[best], s = 0;
    for (size_t v = 0; v < V; ++v) s += std::exp(double(z[v]) - mx);
    sum += double(z[tokens[j]]) - mx - std::log(s);
    greedy = greedy && best == size_t(tokens[j]);
  }
  return sum;
}

TEST(Eval, PerplexityEqualsADirectComputation) {
  std::string text = "The man said to the woman that it was a fine day. She did not agree, and the rain began to fall on the town.";
  std::string path = temp_dir() + "/corpus.txt";
  write_file(path, text);
  auto r = run_skein("eval --task perplexity --model " + model() + " --data " + path + " --context 48 --stride 20");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = result_of(r);
  // The same windows by hand: [0,48) scores 1..47, then every window moves by 20 and scores its last 20.
  ByteTokenizer tok;
  auto t = tok.encode(text);
  double sum = 0;
  size_t n = 0;
  for (size_t s = 0;; s += 20) {
    size_t end = std::min(t.size(), s + 48), first = s == 0 ? 1 : 28;
    if (s > 0 && first >= end - s) break;
    bool g;
    sum += direct_logprob(std::vector<int32_t>(t.begin() + long(s), t.begin() + long(end)), first, g);
    n += end - s - first;
    if (end == t.size()) break;
  }
  EXPECT_EQ(j["targets"], n);
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(-sum / double(n)), 1e-5 * std::exp(-sum / double(n)));
  EXPECT_NE(r.output.find("perplexity: " + std::to_string(n) + " tokens"), std::string::npos) << r.output;
}

TEST(Eval, LambadaFollowsTheChatRwkvMethod) {
  std::string data = temp_dir() + "/lambada.jsonl";
  write_file(data, R"({"text": "It was a dark and stormy night, and the rain fell in torrents"})" "\n"
                   R"({"text": "The man said to a state of the state of the state"})" "\n");
  auto r = run_skein("eval --model " + model() + " --data " + data + " --pad-token 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = result_of(r);
  double sum = 0;
  int correct = 0;
  for (auto [ctx, tgt] : {std::pair<std::string, std::string>{"It was a dark and stormy night, and the rain fell in", " torrents"},
                          {"The man said to a state of the state of the", " state"}}) {
    std::vector<int32_t> tokens = {0};
    for (unsigned char c : ctx) tokens.push_back(c);
    size_t first = tokens.size();
    for (unsigned char c : tgt) tokens.push_back(c);
    bool greedy;
    sum += direct_logprob(tokens, first, greedy);
    correct += greedy;
  }
  EXPECT_EQ(j["n"], 2);
  EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), correct / 2.0);
  // The eval batches and chunks differently from one parallel forward: equal to float rounding.
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(-sum / 2), 1e-4 * std::exp(-sum / 2));
}

TEST(Eval, ClusterGivesTheSingleProcessFigures) {
  std::string args = "eval --model " + model() + " --data " + shared_dir() + "/data/lambada_test.jsonl --limit 60 --block 16";
  auto one = run_skein(args);
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto many = run_shell(mpirun_skein(3, args));
  ASSERT_EQ(many.exit_code, 0) << many.output;
  auto a = result_of(one), b = result_of(many);
  EXPECT_EQ(a["n"], 60);
  EXPECT_EQ(a["accuracy"], b["accuracy"]);
  EXPECT_EQ(a["perplexity"], b["perplexity"]);  // bit for bit: the pipeline computes what one process does
  EXPECT_EQ(a["model_fingerprint"], b["model_fingerprint"]);
}

TEST(Eval, AKilledEvalResumesWithoutRedoingItsWork) {
  std::string dir = temp_dir();
  std::string args = "eval --model " + model() + " --data " + shared_dir() + "/data/lambada_test.jsonl --limit 400 --block 20";
  auto whole = run_skein(args + " --output " + dir + "/whole.json");
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  EXPECT_FALSE(std::filesystem::exists(dir + "/whole.json.progress"));  // removed once finished
  // Kill a second run once it has checkpointed some blocks, then run it again.
  std::string cmd = std::string(SKEIN_BINARY) + " " + args + " --output " + dir + "/r.json";
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd + " > /dev/null 2>&1").c_str(), nullptr);
    _exit(127);
  }
  size_t at = 0;
  for (int i = 0; i < 400 && at < 60; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    try {
      at = read_json(dir + "/r.json.progress")["tally"]["next"].get<size_t>();
    } catch (...) {
    }
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  ASSERT_GE(at, 60u);
  ASSERT_LT(at, 400u) << "the eval finished before it could be killed";
  auto resumed = run_skein(args + " --output " + dir + "/r.json");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resuming from"), std::string::npos) << resumed.output;
  auto a = read_json(dir + "/whole.json"), b = read_json(dir + "/r.json");
  EXPECT_EQ(a["accuracy"], b["accuracy"]);
  EXPECT_EQ(a["perplexity"], b["perplexity"]);
  // A checkpoint of another eval is refused, not silently mixed in.
  write_file(dir + "/other.progress", R"({"eval": {"task": "perplexity"}, "tally": {"next": 3, "logprob": -1.0, "correct": 0, "targets": 3}})");
  auto refused = run_skein(args + " --resume " + dir + "/other.progress");
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.output.find("belongs to another eval"), std::string::npos) << refused.output;
}

// A data file whose name is not UTF-8 (Linux allows any bytes): the checkpoint and the result carry
// the name with U+FFFD, and a checkpoint written so is recognised as this eval's on resume.
TEST(Eval, ADataPathThatIsNotUtf8IsCheckpointedAndResumed) {
  const std::string dir = std::filesystem::absolute(temp_dir()).string(), data = dir + "/lambada\xe9.jsonl";
  std::filesystem::copy_file(shared_dir() + "/data/lambada_test.jsonl", data);
  const std::string args = "eval --model " + model() + " --data '" + data + "' --limit 40 --block 20";
  auto whole = run_skein(args + " --output " + dir + "/whole.json");
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  auto a = read_json(dir + "/whole.json");
  // A checkpoint at item 0, as the eval writes it: resuming from it must give the whole run's figures.
  nlohmann::json what = {{"task", "lambada"},
                         {"data", dir + "/lambada\xef\xbf\xbd.jsonl"},
                         {"data_bytes", std::filesystem::file_size(data)},
                         {"model_fingerprint", a["model_fingerprint"]},
                         {"items", 40},
                         {"pad_token", 0}};
  write_file(dir + "/p.progress", nlohmann::json{{"eval", what}, {"tally", {{"next", 0}, {"logprob", 0.0}, {"correct", 0}, {"targets", 0}}}}.dump());
  auto resumed = run_skein(args + " --resume " + dir + "/p.progress --output " + dir + "/r.json");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resuming from"), std::string::npos) << resumed.output;
  auto b = read_json(dir + "/r.json");
  EXPECT_EQ(a["perplexity"], b["perplexity"]);
  EXPECT_EQ(a["accuracy"], b["accuracy"]);
}

// A checkpoint of this eval whose tally is damaged stops the eval with what is wrong, where a count of
// -1 read as 2^64 - 1 once made the accuracy 1.8e17.
TEST(Eval, ADamagedCheckpointTallyIsRefused) {
  const std::string dir = temp_dir(), data = shared_dir() + "/data/lambada_test.jsonl";
  const std::string args = "eval --model " + model() + " --data " + data + " --limit 8 --block 4";
  auto whole = run_skein(args + " --output " + dir + "/whole.json");
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  const nlohmann::json what = {{"task", "lambada"},
                               {"data", std::filesystem::absolute(data).string()},
                               {"data_bytes", std::filesystem::file_size(data)},
                               {"model_fingerprint", read_json(dir + "/whole.json")["model_fingerprint"]},
                               {"items", 8},
                               {"pad_token", 0}};
  const nlohmann::json good = {{"next", 4}, {"logprob", -20.5}, {"correct", 1}, {"targets", 9}};
  auto with = [&](const char* key, nlohmann::json v) {
    nlohmann::json t = good;
    t[key] = std::move(v);
    return t;
  };
  write_file(dir + "/ok.progress", nlohmann::json{{"eval", what}, {"tally", good}}.dump());
  auto ok = run_skein(args + " --resume " + dir + "/ok.progress");
  ASSERT_EQ(ok.exit_code, 0) << ok.output;  // the undamaged one is this eval's
  for (auto [tally, says] : std::vector<std::pair<nlohmann::json, std::string>>{
           {with("correct", -1), "'correct' must be a whole number >= 0, got -1"},
           {with("correct", 1e308), "'correct' must be a whole number >= 0"},
           {with("next", -3), "'next' must be a whole number >= 0"},
           {with("logprob", 5.0), "'logprob' must be a finite number <= 0"},
           {with("logprob", "x"), "'logprob' must be a finite number <= 0"},
           {with("correct", 5), "does not add up (5 correct of 4 items with 9 targets)"},
           {with("targets", 2), "does not add up"}}) {
    write_file(dir + "/bad.progress", nlohmann::json{{"eval", what}, {"tally", tally}}.dump());
    auto r = run_skein(args + " --resume " + dir + "/bad.progress");
    EXPECT_EQ(r.exit_code, 2) << tally.dump() << "\n" << r.output;
    EXPECT_NE(r.output.find("bad.progress: not an eval checkpoint"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(says), std::string::npos) << r.output;
  }
}

// Multiple choice: each choice is scored after pad + context (tokenized apart) and the picks by sum and
// per character are those a direct computation makes.
TEST(Eval, MultipleChoicePicksWhatADirectComputationPicks) {
  struct Doc {
    std::string context;
    std::vector<std::string> choices;
    size_t label;
  };
  const std::vector<Doc> docs = {{"The man said to", {" a state of the", " zq xv kkj qpw", " the"}, 0},
                                 {"It was a dark", {" vvx qqz jjk", " and the state of the world", " night"}, 2},
                                 {"She went to the", {" house of the", " qzx"}, 0},
                                 {"He was", {" in the state of the man and the state", " in", " \u00e9t\u00e9 \u00e0 la"}, 1}};
  std::string lines;
  for (auto& d : docs) lines += nlohmann::json{{"context", d.context}, {"choices", d.choices}, {"label", d.label}}.dump() + "\n";
  const std::string data = temp_dir() + "/choice.jsonl";
  write_file(data, lines);
  auto r = run_skein("eval --task choice --model " + model() + " --data " + data + " --pad-token 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto j = result_of(r);
  int correct = 0, correct_norm = 0;
  double label_logprob = 0;
  for (auto& d : docs) {
    size_t best = 0, best_norm = 0;
    std::vector<double> lp, per_char;
    for (auto& c : d.choices) {
      std::vector<int32_t> tokens = {0};
      for (unsigned char ch : d.context) tokens.push_back(ch);
      const size_t first = tokens.size();
      for (unsigned char ch : c) tokens.push_back(ch);
      bool greedy;
      lp.push_back(direct_logprob(tokens, first, greedy));
      size_t chars = 0;
      for (unsigned char ch : c) chars += (ch & 0xC0) != 0x80;
      per_char.push_back(lp.back() / double(chars));
      if (lp.back() > lp[best]) best = lp.size() - 1;
      if (per_char.back() > per_char[best_norm]) best_norm = lp.size() - 1;
    }
    correct += best == d.label;
    correct_norm += best_norm == d.label;
    label_logprob += lp[d.label];
  }
  EXPECT_EQ(j["n"], 4);
  EXPECT_EQ(j["choices"], 11);
  EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), correct / 4.0);
  EXPECT_DOUBLE_EQ(j["accuracy_norm"].get<double>(), correct_norm / 4.0);
  EXPECT_NE(correct, correct_norm) << "the documents should tell acc from acc_norm";
  EXPECT_NEAR(j["label_logprob"].get<double>(), label_logprob / 4, 1e-4);
  // On 3 ranks (the choices' states copied on the stages) the figures are the same.
  auto many = run_shell(mpirun_skein(3, "eval --task choice --model " + model() + " --data " + data + " --pad-token 0 --block 3"));
  ASSERT_EQ(many.exit_code, 0) << many.output;
  auto k = result_of(many);
  for (const char* key : {"accuracy", "accuracy_norm", "targets", "n"}) EXPECT_EQ(k[key], j[key]) << key;
  EXPECT_NEAR(k["label_logprob"].get<double>(), j["label_logprob"].get<double>(), 1e-6);
  // Checkpoints fall between documents: one inside a document's choices is refused.
  const nlohmann::json what = {{"task", "choice"},         {"data", std::filesystem::absolute(data).string()},
                               {"data_bytes", lines.size()}, {"model_fingerprint", j["model_fingerprint"]},
                               {"items", 11},               {"pad_token", 0}};
  const std::string ckpt = temp_dir() + "/c.progress";
  write_file(ckpt, nlohmann::json{{"eval", what}, {"tally", {{"next", 2}, {"logprob", -1.0}, {"correct", 0}, {"targets", 9}}}}.dump());
  auto inside = run_skein("eval --task choice --model " + model() + " --data " + data + " --pad-token 0 --resume " + ckpt);
  EXPECT_EQ(inside.exit_code, 2) << inside.output;
  EXPECT_NE(inside.output.find("c.progress: the checkpoint stops inside a document (item 2)"), std::string::npos) << inside.output;
  write_file(ckpt, nlohmann::json{{"eval", what}, {"tally", {{"next", 3}, {"logprob", -1.0}, {"correct", 0}, {"targets", 9}}}}.dump());
  auto after_first = run_skein("eval --task choice --model " + model() + " --data " + data + " --pad-token 0 --resume " + ckpt);
  EXPECT_EQ(after_first.exit_code, 0) << after_first.output;
  // The resumed eval scored the documents after the first: the crafted tally's 9 targets plus theirs
  // (the first document's three choices have 15 + 14 + 4 byte tokens).
  EXPECT_EQ(result_of(after_first)["targets"], 9 + j["targets"].get<int>() - 33);
}

// A document's choices start from a copy of their context's state instead of running it again: the
// scores are those of each item run alone, and the context's tokens run once (also when it takes several
// micro-batches).
TEST(Eval, ChoicesRunTheirSharedContextOnce) {
  cpu::set_batch_invariant(true);  // an item's numbers must not depend on what it is batched with
  auto mut = load_for_test(model());
  LocalModel local(*mut.model, 8);
  ByteTokenizer tok;
  const std::vector<ChoiceDoc> docs = {{"The man said to the", {" a", " of", " the"}, 0}, {"It was", {" a dark", " not"}, 1}};
  const auto items = choice_items(docs, tok, 0);
  Evaluator together(local, 16, 8);  // 16 tokens a chunk: the first context takes two, the choices' scored rows fit
  const auto scores = together.score(items);
  uint64_t expected = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const size_t split = items[i].first_target - 1, run = items[i].tokens.size() - 1;
    expected += (i == 0 || items[i - 1].first_target != items[i].first_target || i == 3) ? run : run - split;
    Evaluator alone(local, 16, 8);
    const auto one = alone.score({items[i]});
    EXPECT_EQ(scores[i].logprob, one[0].logprob) << "item " << i;
    EXPECT_EQ(scores[i].greedy, one[0].greedy) << "item " << i;
    EXPECT_EQ(scores[i].targets, one[0].targets) << "item " << i;
  }
  EXPECT_EQ(together.tokens_run(), expected);
  EXPECT_EQ(local.free_slots(), 8);  // every copy closed
  // Choices whose scored rows pass the budget together run alone (a step's logits stay bounded), with
  // the same scores.
  const auto long_items = choice_items({{"The man said", {" to a state of the state", " of the world and the man"}, 0}}, tok, 0);
  Evaluator bounded(local, 16, 8);
  const auto long_scores = bounded.score(long_items);
  EXPECT_EQ(bounded.tokens_run(), long_items[0].tokens.size() - 1 + long_items[1].tokens.size() - 1);
  for (size_t i = 0; i < long_items.size(); ++i) {
    Evaluator alone(local, 16, 8);
    EXPECT_EQ(long_scores[i].logprob, alone.score({long_items[i]})[0].logprob) << "long item " << i;
  }
  cpu::set_batch_invariant(false);
}

// Lines of only spaces, tabs or a CR (a CRLF file's blank line, an editor's indent) hold no record: each
// reader skips them, as it skips empty lines, where they were "not JSON" errors.
TEST(Eval, BlankLinesBetweenRecordsAreSkipped) {
  const std::string d = temp_dir(), blanks = "\r\n   \r\n\t\n";
  write_file(d + "/l.jsonl", "{\"text\": \"the cat sat\"}\r\n" + blanks + "{\"text\": \"a dog ran\"}\r\n" + blanks);
  write_file(d + "/c.jsonl", "{\"context\": \"x\", \"choices\": [\"y\", \"z\"], \"label\": 1}\n" + blanks +
                                 "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": 0}\n");
  for (auto [args, says] : {std::pair<std::string, std::string>{"--data " + d + "/l.jsonl", "\"n\":2"},
                            {"--task perplexity --context 4 --stride 2 --data " + d + "/l.jsonl", "\"task\":\"perplexity\""},
                            {"--task choice --data " + d + "/c.jsonl", "\"n\":2"}}) {
    auto r = run_skein("eval --model " + model() + " " + args);
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(says), std::string::npos) << args << "\n" << r.output;
  }
}

TEST(Eval, BadDataIsAOneLineErrorNamingTheLine) {
  std::string data = temp_dir() + "/bad.jsonl";
  write_file(data, "{\"text\": \"fine words here\"}\n{\"txt\": 1}\n");
  auto r = run_skein("eval --model " + model() + " --data " + data);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("bad.jsonl:2: expected {\"text\""), std::string::npos) << r.output;
  std::string text = temp_dir() + "/t.txt";
  write_file(text, "some text to score");
  auto p = run_skein("eval --task perplexity --model " + model() + " --data " + text + " --context 8 --stride 8");
  EXPECT_NE(p.output.find("--stride must be between 1 and context - 1"), std::string::npos) << p.output;
  // A flag of another task is refused, not ignored.
  p = run_skein("eval --task choice --model " + model() + " --data " + text + " --context 2048");
  EXPECT_EQ(p.output, "skein: error: eval: --context and --stride apply to --task perplexity, not choice\n");
  p = run_skein("eval --model " + model() + " --data " + text + " --stride 4");
  EXPECT_EQ(p.output, "skein: error: eval: --context and --stride apply to --task perplexity, not lambada\n");
  p = run_skein("eval --task perplexity --model " + model() + " --data " + text + " --pad-token 0");
  EXPECT_EQ(p.output, "skein: error: eval: --pad-token applies to --task lambada and choice, not perplexity\n");
  for (auto [line, says] : {std::pair<std::string, std::string>{R"({"context": "a", "choices": ["b", "c"]})", "choice.jsonl:2: expected {\"context\""},
                            {R"({"context": "a", "choices": ["b"], "label": 0})", "choice.jsonl:2: a document needs two choices or more"},
                            {R"({"context": "a", "choices": ["b", ""], "label": 0})", "choice.jsonl:2: every choice must be a non-empty string"},
                            {R"({"context": "a", "choices": ["b", 3], "label": 0})", "choice.jsonl:2: every choice must be a non-empty string"},
                            {R"({"context": "a", "choices": ["b", "c"], "label": 2})", "choice.jsonl:2: label 2 is not the index of one of the 2 choices"},
                            {R"({"context": "a", "choices": ["b", "c"], "label": 1.5})", "choice.jsonl:2: expected {\"context\""},
                            {"[1, 2]", "choice.jsonl:2: expected {\"context\""}}) {
    const std::string path = temp_dir() + "/choice.jsonl";
    write_file(path, "{\"context\": \"x\", \"choices\": [\"y\", \"z\"], \"label\": 1}\n" + line + "\n");
    auto c = run_skein("eval --task choice --model " + model() + " --data " + path);
    EXPECT_EQ(c.exit_code, 2) << line;
    EXPECT_NE(c.output.find(says), std::string::npos) << c.output;
    EXPECT_EQ(std::count(c.output.begin(), c.output.end(), '\n'), 1) << c.output;
  }
}

}  // namespace
}  // namespace skein::test
