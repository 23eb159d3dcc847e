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

// A .jsonl file (one document per line's "text") or any other file as one text.
std::vector<std::string> read_corpus(const std::string& path);
std::vector<ScoreItem> perplexity_items(const std::vector<std::string>& docs, const Tokenizer& tok, int context, int stride);

}  // namespace skein
