// Evaluation tasks turned into scoring items. LAMBADA follows ChatRWKV's v2/benchmark.py, so figures
// compare with published RWKV results: context = text before the last space, target = " " + last word,
// input = pad + tokens(context) + tokens(target); an item is correct when every target token is the
// argmax, and ppl = exp(-mean item log-probability). Perplexity scores every token of a corpus with
// windows of `context` tokens moved by `stride` (each window from a fresh state; the first scores all
// its tokens but the first, later ones their last `stride`), ppl = exp(-mean token log-probability).
#pragma once
#include <string>
#include <vector>

#include "coordinator/evaluator.h"
#include "model/tokenizer.h"

namespace skein {

struct LambadaDoc {
  std::string context, target;
};

// One {"text": ...} per line; errors name the file and line.
std::vector<LambadaDoc> read_lambada(const std::string& path);
std::vector<ScoreItem> lambada_items(const std::vector<LambadaDoc>& docs, const Tokenizer& tok, int32_t pad_token);

// Multiple choice, the shape of HellaSwag, PIQA, ARC and the like, scored as lm-evaluation-harness scores
// them: one {"context": ..., "choices": [...], "label": k} per line. Each choice's log-probability is
// that of its tokens after pad + the context's tokens (context and choice tokenized apart); a document
// is right (acc) when its label's choice has the highest, and (acc_norm) the highest per character of
// the choice. A document's choices are neighbouring items with one prefix, so the context runs once.
struct ChoiceDoc {
  std::string context;
  std::vector<std::string> choices;
  size_t label = 0;
};
std::vector<ChoiceDoc> read_choices(const std::string& path);
std::vector<ScoreItem> choice_items(const std::vector<ChoiceDoc>& docs, const Tokenizer& tok, int32_t pad_token);
// Which of a document's choices wins: by log-probability, and by log-probability per character (UTF-8
// code point); the first on ties.
struct ChoicePick {
  size_t best = 0, best_norm = 0;
};
ChoicePick pick_choice(const ChoiceDoc& doc, const std::vector<double>& logprobs);

// A .jsonl file (one document per line's "text") or any other file as one text.
std::vector<std::string> read_corpus(const std::string& path);
std::vector<ScoreItem> perplexity_items(const std::vector<std::string>& docs, const Tokenizer& tok, int context, int stride);

}  // namespace skein
