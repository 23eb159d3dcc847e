// Scoring for evaluation: the log-probability the model gives a sequence's target tokens, and whether
// greedy decoding would have produced them. No sampling: items are packed into micro-batches (prefix
// chunks without logits, then the scored part with every position's logits), pipelined through the
// stages like serving traffic, and scored on the coordinator. Neighbouring items with the same prefix
// (a question's choices) run it once: the others start from a copy of that state, made on the workers.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "coordinator/model_handle.h"

namespace skein {

// tokens[first_target..] are the targets; each is predicted from the tokens before it (fresh state).
struct ScoreItem {
  std::vector<int32_t> tokens;
  size_t first_target = 1;
};

struct ItemScore {
  double logprob = 0;   // sum over targets of log softmax(logits)[target]
  bool greedy = true;   // every target is the argmax (the first, on ties) of its logits
  size_t targets = 0;
};

class Evaluator {
 public:
  // micro_batch_tokens: tokens per step (a longer item is chunked); sessions: states it may hold at once.
  Evaluator(ModelHandle& model, int micro_batch_tokens, int sessions);
  // Scores the items, in order. Throws skein::Error for an item without targets or with a bad token.
  std::vector<ItemScore> score(const std::vector<ScoreItem>& items);
  // Tokens run through the model so far (a shared prefix counts once).
  uint64_t tokens_run() const { return tokens_run_; }

 private:
  struct Group;
  void submit(Group& g);
  void finish(Group& g, std::vector<ItemScore>& out);

  ModelHandle& model_;
  size_t budget_;
  size_t sessions_;
  uint64_t tokens_run_ = 0;
};

}  // namespace skein
