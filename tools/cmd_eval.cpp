// `skein eval`: LAMBADA (accuracy and perplexity, ChatRWKV's method), per-token perplexity of a corpus,
// or multiple-choice accuracy (lm-evaluation-harness's acc and acc_norm), on the same placement as
// serving (one process, or rank 0 of an mpirun cluster). Progress and ETA go to stderr; the result is
// one JSON line on stdout (and in --output) followed by a one-line summary.
// Resumable: after every block of items the running sums are written to a checkpoint file, and a
// restarted eval continues after the last block it finished.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/json_text.h"
#include "common/stop_signal.h"
#include "coordinator/eval_tasks.h"
#include "model/architecture.h"
#include "model/fingerprint.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

namespace {

using Clock = std::chrono::steady_clock;

// Running sums; doubles printed with full precision, so a resumed eval adds up exactly as an
// uninterrupted one.
struct Tally {
  size_t next = 0;  // items done
  double logprob = 0;
  uint64_t correct = 0, targets = 0;
  uint64_t correct_norm = 0;  // choice: documents right by log-probability per character
  nlohmann::json to_json() const {
    return {{"next", next}, {"logprob", logprob}, {"correct", correct}, {"targets", targets}, {"correct_norm", correct_norm}};
  }
  // Read strictly: a damaged checkpoint must stop the eval, not turn into a result (a "correct" of -1
  // read as 2^64 - 1 gave an accuracy of 1.8e17).
  static Tally from_json(const nlohmann::json& j) {
    auto count = [&](const char* key) {
      const auto& v = j.at(key);
      if (!v.is_number_unsigned()) fail("tally '", key, "' must be a whole number >= 0, got ", v.dump());
      return v.get<uint64_t>();
    };
    const auto& lp = j.at("logprob");
    if (!lp.is_number() || !std::isfinite(lp.get<double>()) || lp.get<double>() > 0) fail("tally 'logprob' must be a finite number <= 0, got ", lp.dump());
    Tally t{size_t(count("next")), lp.get<double>(), count("correct"), count("targets"), j.contains("correct_norm") ? count("correct_norm") : 0};
    if (t.correct > t.next || t.correct_norm > t.next || t.next > t.targets)  // every item has a target token, and is right or not
      fail("tally does not add up (", t.correct, " correct of ", t.next, " items with ", t.targets, " targets)");
    return t;
  }
};

void write_atomically(const std::string& path, const std::string& text) {
  write_file_atomically(path, [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::trunc);
    f << text;
    if (!f) fail(tmp, ": cannot write");
  });
}

std::string duration(double s) {
  char b[32];
  if (s >= 3600) std::snprintf(b, sizeof b, "%dh%02dm", int(s / 3600), int(std::fmod(s, 3600) / 60));
  else if (s >= 60) std::snprintf(b, sizeof b, "%dm%02ds", int(s / 60), int(std::fmod(s, 60)));
  else std::snprintf(b, sizeof b, "%.0fs", s);
  return b;
}

// A bar redrawn in place on a terminal; a line per 10% in a log file (Slurm's output).
class Progress {
 public:
  Progress(size_t total, size_t done) : total_(total), start_done_(done), tty_(isatty(2)) {}
  void update(size_t done) {
    auto now = Clock::now();
    double t = std::chrono::duration<double>(now - start_).count();
    double rate = t > 0 ? double(done - start_done_) / t : 0;
    double eta = rate > 0 ? double(total_ - done) / rate : 0;
    int pct = total_ ? int(100 * done / total_) : 100;
    if (tty_) {
      if (now - drawn_ < std::chrono::milliseconds(250) && done < total_) return;
      drawn_ = now;
      int w = 30, fill = int(w * double(done) / double(std::max<size_t>(1, total_)));
      std::fprintf(stderr, "\r[%s%s] %zu/%zu items, %.1f items/s, ETA %s   ", std::string(size_t(fill), '#').c_str(),
                   std::string(size_t(w - fill), '.').c_str(), done, total_, rate, duration(eta).c_str());
      if (done == total_) std::fprintf(stderr, "\n");
    } else if (pct / 10 > last_decile_ || done == total_) {
      last_decile_ = pct / 10;
      std::fprintf(stderr, "eval: %zu/%zu items (%d%%), %.1f items/s, ETA %s\n", done, total_, pct, rate, duration(eta).c_str());
    }
  }

 private:
  size_t total_, start_done_;
  bool tty_;
  Clock::time_point start_ = Clock::now(), drawn_{};
  int last_decile_ = -1;
};

}  // namespace

void add_eval_command(CLI::App& app) {
  struct Opts {
    RunFlags run;
    std::string task = "lambada", data, output, resume;
    int pad = 0, context = 1024, stride = 512, block = 64;
    int64_t limit = 0;  // signed, so that -1 is refused rather than wrapped to "all"
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("eval", "Evaluate a model: LAMBADA, corpus perplexity or multiple choice (resumable)");
  o->run.add(c, RunFlags::kText);
  c->add_option("--task", o->task, "lambada | perplexity | choice")->capture_default_str();
  c->add_option("--data", o->data,
                "lambada: a jsonl of {\"text\"}; perplexity: a .jsonl of {\"text\"} or a text file; choice: a jsonl of {\"context\", \"choices\", \"label\"}")
      ->required();
  auto* pad = c->add_option("--pad-token", o->pad, "lambada, choice: the token before each context")->capture_default_str();
  auto* context = c->add_option("--context", o->context, "perplexity: tokens per window")->capture_default_str();
  auto* stride = c->add_option("--stride", o->stride, "perplexity: tokens a window moves by")->capture_default_str();
  c->add_option("--limit", o->limit, "only the first N items (choice: documents; 0: all)")->check(CLI::Range(int64_t(0), INT64_MAX));
  c->add_option("--output", o->output, "also write the result JSON here");
  c->add_option("--resume", o->resume, "checkpoint file (default: OUTPUT.progress with --output); a restart continues from it");
  c->add_option("--block", o->block, "items (choice: documents) between checkpoints")->capture_default_str();
  c->callback([o, pad, context, stride] {
    if (o->task != "lambada" && o->task != "perplexity" && o->task != "choice")
      fail("eval: --task must be lambada, perplexity or choice, got '", o->task, "'");
    // A flag the task does not read would be ignored without a word (--context 2048 on a choice task
    // truncates nothing).
    if (o->task != "perplexity" && (context->count() || stride->count()))
      fail("eval: --context and --stride apply to --task perplexity, not ", o->task);
    if (o->task == "perplexity" && pad->count()) fail("eval: --pad-token applies to --task lambada and choice, not perplexity");
    if (o->block < 1) fail("eval: --block must be >= 1");
    Config cfg = o->run.resolve();
    apply_run_config(cfg);
    std::string path = cfg.model.empty() ? default_model_path() : cfg.model;
    // The tokenizer, the data and a checkpoint to resume from are checked before the model loads.
    std::shared_ptr<const Checkpoint> checkpoint;
    std::unique_ptr<Tokenizer> tok;
    std::vector<ScoreItem> items;
    std::vector<ChoiceDoc> docs;
    std::vector<size_t> unit_end;  // one past each unit's last item
    std::string ckpt;
    nlohmann::json what;
    Tally tally;
    if (faces_the_user()) {
      checkpoint = open_checkpoint(path, cfg.initial_state);
      const int vocab = detect_architecture(*checkpoint).vocab;
      tok = tokenizer_for(cfg.tokenizer, vocab);
      if (o->pad < 0 || o->pad >= vocab) fail("eval: --pad-token ", o->pad, " is outside the vocabulary (", vocab, ")");

      // Items, and the units they are counted, limited and checkpointed in: an item each, or (choice) a
      // document's choices together.
      if (o->task == "choice") {
        docs = read_choices(o->data);
        if (o->limit && size_t(o->limit) < docs.size()) docs.resize(size_t(o->limit));
        items = choice_items(docs, *tok, o->pad);
        for (auto& d : docs) unit_end.push_back((unit_end.empty() ? 0 : unit_end.back()) + d.choices.size());
      } else {
        items = o->task == "lambada" ? lambada_items(read_lambada(o->data), *tok, o->pad)
                                     : perplexity_items(read_corpus(o->data), *tok, o->context, o->stride);
        if (o->limit && size_t(o->limit) < items.size()) items.resize(size_t(o->limit));
        for (size_t i = 1; i <= items.size(); ++i) unit_end.push_back(i);
      }

      // What a checkpoint must agree on to be resumed.
      what = {{"task", o->task},
              {"data", std::filesystem::absolute(o->data).string()},
              {"data_bytes", std::filesystem::file_size(o->data)},
              {"model_fingerprint", fingerprint_hex(model_fingerprint(*checkpoint))},
              {"items", items.size()}};
      if (o->task != "perplexity") what["pad_token"] = o->pad;
      else {
        what["context"] = o->context;
        what["stride"] = o->stride;
      }
      what = nlohmann::json::parse(json_text(what));  // as a checkpoint stores it (a path that is not UTF-8 gets U+FFFD)
      ckpt = !o->resume.empty() ? o->resume : !o->output.empty() ? o->output + ".progress" : "";
      for (const std::string& out : {o->output, ckpt})  // written after each block and at the end
        if (!out.empty()) check_writable(out);
      if (!ckpt.empty() && std::filesystem::exists(ckpt)) {  // no folder: check_writable refused one
        nlohmann::json j;
        try {
          std::ifstream f(ckpt);
          j = nlohmann::json::parse(f);
          tally = Tally::from_json(j.at("tally"));
        } catch (const std::exception& e) {
          fail(ckpt, ": not an eval checkpoint (", e.what(), "); delete it to start over");
        }
        if (j.value("eval", nlohmann::json()) != what) fail(ckpt, ": the checkpoint belongs to another eval (", j.value("eval", nlohmann::json()).dump(), "); delete it to start over");
        if (tally.next > items.size()) fail(ckpt, ": the checkpoint is past the end of the data");
        if (tally.next > 0 && !std::binary_search(unit_end.begin(), unit_end.end(), tally.next))
          fail(ckpt, ": the checkpoint stops inside a document (item ", tally.next, ")");
        std::fprintf(stderr, "eval: resuming from %s at item %zu of %zu\n", ckpt.c_str(), tally.next, items.size());
      }
    }
    LoadedModel m = checkpoint ? load_model(std::move(checkpoint), cfg) : load_model(path, cfg);
    if (!m.handle) return;  // a stage rank: served until the coordinator finished

    Evaluator ev(*m.handle, cfg.scheduler.micro_batch_tokens, std::max(2, m.handle->slots()));
    Progress progress(items.size(), tally.next);
    auto t0 = Clock::now();
    while (tally.next < items.size()) {
      if (stop_requested()) fail("eval: interrupted at item ", tally.next, (ckpt.empty() ? "" : "; run again to resume from " + ckpt));
      const size_t units_done = size_t(std::upper_bound(unit_end.begin(), unit_end.end(), tally.next) - unit_end.begin());
      const size_t end = unit_end[std::min(unit_end.size(), units_done + size_t(o->block)) - 1];
      std::vector<ScoreItem> block(items.begin() + long(tally.next), items.begin() + long(end));
      auto scores = ev.score(block);
      for (size_t i = 0; i < scores.size(); ++i) {
        tally.targets += scores[i].targets;
        if (o->task != "choice") {
          tally.logprob += scores[i].logprob;
          tally.correct += scores[i].greedy;
        }
      }
      if (o->task == "choice")
        for (size_t d = units_done, first = tally.next; first < end; first = unit_end[d++]) {
          std::vector<double> logprobs;
          for (size_t i = first; i < unit_end[d]; ++i) logprobs.push_back(scores[i - tally.next].logprob);
          const ChoicePick p = pick_choice(docs[d], logprobs);
          tally.logprob += logprobs[docs[d].label];
          tally.correct += p.best == docs[d].label;
          tally.correct_norm += p.best_norm == docs[d].label;
        }
      tally.next = end;
      if (!ckpt.empty()) write_atomically(ckpt, json_text(nlohmann::json{{"eval", what}, {"tally", tally.to_json()}}) + "\n");
      progress.update(tally.next);
    }
    double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    const double n = double(unit_end.size());
    nlohmann::json result = {{"task", o->task},
                             {"model", path},
                             {"model_fingerprint", fingerprint_hex(m.fingerprint)},
                             {"strategy", cfg.strategy.empty() ? "cpu (stored dtype)" : cfg.strategy},
                             {"n", unit_end.size()},
                             {"targets", tally.targets},
                             {"tokens_per_s", wall > 0 ? double(ev.tokens_run()) / wall : 0.0},
                             {"wall_s", wall}};
    std::string summary;
    char b[256];
    if (o->task == "lambada") {
      result["accuracy"] = double(tally.correct) / n;
      result["perplexity"] = std::exp(-tally.logprob / n);
      std::snprintf(b, sizeof b, "lambada: %zu item%s, accuracy %.2f%%, ppl %.3f", items.size(), items.size() == 1 ? "" : "s", 100.0 * double(tally.correct) / n,
                    std::exp(-tally.logprob / n));
    } else if (o->task == "choice") {
      result["choices"] = items.size();
      result["accuracy"] = double(tally.correct) / n;
      result["accuracy_norm"] = double(tally.correct_norm) / n;
      result["label_logprob"] = tally.logprob / n;  // mean log-probability of the right choices
      std::snprintf(b, sizeof b, "choice: %zu documents (%zu choices), acc %.2f%%, acc_norm %.2f%%", docs.size(), items.size(),
                    100.0 * double(tally.correct) / n, 100.0 * double(tally.correct_norm) / n);
    } else {
      result["perplexity"] = std::exp(-tally.logprob / double(tally.targets));
      result["bits_per_token"] = -tally.logprob / double(tally.targets) / std::log(2.0);
      std::snprintf(b, sizeof b, "perplexity: %llu tokens in %zu windows, ppl %.4f", (unsigned long long)tally.targets, items.size(),
                    std::exp(-tally.logprob / double(tally.targets)));
    }
    summary = b;
    std::snprintf(b, sizeof b, " (%.1f tokens/s, %s)", double(result["tokens_per_s"]), duration(wall).c_str());
    summary += b;
    if (!o->output.empty()) write_atomically(o->output, json_text(result, 2) + "\n");
    std::cout << json_text(result) << "\n" << summary << std::endl;
    if (!ckpt.empty()) std::filesystem::remove(ckpt);
  });
}

}  // namespace skein::cli
