#include "coordinator/evaluator.h"

#include <algorithm>
#include <cmath>
#include <deque>

#include "common/error.h"

namespace skein {

// Items scored together: their sessions, the steps submitted for them, and which rows of which step's
// logits belong to which item's targets.
struct Evaluator::Group {
  size_t first_item = 0;
  std::vector<const ScoreItem*> items;
  std::vector<size_t> leader;  // per item: the item that runs the prefix it shares (itself when none)
  std::vector<int> sessions;   // a leader's opened with the group; the others copied from it once its prefix ran
  struct Step {
    uint64_t id = 0;
    size_t rows = 0;
    std::vector<std::pair<size_t, size_t>> scored;  // (item index in group, first target index) per entry with logits, in order
    std::vector<size_t> lengths;                    // rows of each such entry
  };
  std::vector<Step> steps;
};

namespace {
// b can start from a's state after its prefix: the same tokens before the first target (one at least).
bool same_prefix(const ScoreItem& a, const ScoreItem& b) {
  return a.first_target == b.first_target && a.first_target > 1 &&
         std::equal(a.tokens.begin(), a.tokens.begin() + long(a.first_target - 1), b.tokens.begin());
}
}  // namespace

Evaluator::Evaluator(ModelHandle& model, int micro_batch_tokens, int sessions)
    : model_(model), budget_(size_t(std::max(1, micro_batch_tokens))), sessions_(size_t(std::max(2, sessions))) {}

// Each item runs tokens[0 .. first_target-1) without logits, then tokens[first_target-1 .. n-1) with
// logits (row j predicts tokens[first_target + j]). Both parts are cut into chunks of at most the
// budget; step k of the group carries the k-th chunk of every item, so an item's chunks run in order.
// An item that shares its leader's prefix skips it: its state is copied from the leader's when the
// leader's prefix has been submitted (stages apply slot operations in order with steps), and its
// scored chunks run beside the leader's.
void Evaluator::submit(Group& g) {
  struct Chunk {
    size_t begin, end;
    bool logits;
  };
  std::vector<std::vector<Chunk>> chunks(g.items.size());
  std::vector<size_t> start(g.items.size(), 0);  // the step of an item's first chunk
  size_t steps = 0;
  for (size_t i = 0; i < g.items.size(); ++i) {
    const ScoreItem& it = *g.items[i];
    size_t split = it.first_target - 1, n = it.tokens.size() - 1;
    if (g.leader[i] == i)
      for (size_t b = 0; b < split; b += budget_) chunks[i].push_back({b, std::min(split, b + budget_), false});
    else
      start[i] = (split + budget_ - 1) / budget_;  // after the leader's prefix chunks (the same split)
    for (size_t b = split; b < n; b += budget_) chunks[i].push_back({b, std::min(n, b + budget_), true});
    steps = std::max(steps, start[i] + chunks[i].size());
  }
  for (size_t k = 0; k < steps; ++k) {
    std::vector<ModelHandle::LogitsEntry> entries;
    Group::Step st;
    for (size_t i = 0; i < g.items.size(); ++i) {
      if (g.leader[i] != i && k == start[i]) g.sessions[i] = model_.clone_session(g.sessions[g.leader[i]]);
      if (k < start[i] || k - start[i] >= chunks[i].size()) continue;
      const Chunk& c = chunks[i][k - start[i]];
      const auto& t = g.items[i]->tokens;
      entries.push_back({g.sessions[i], std::vector<int32_t>(t.begin() + long(c.begin), t.begin() + long(c.end)), c.logits});
      tokens_run_ += c.end - c.begin;
      if (c.logits) {
        st.scored.push_back({i, c.begin + 1});
        st.lengths.push_back(c.end - c.begin);
        st.rows += c.end - c.begin;
      }
    }
    st.id = model_.submit_logits(entries);
    g.steps.push_back(std::move(st));
  }
}

void Evaluator::finish(Group& g, std::vector<ItemScore>& out) {
  const size_t V = size_t(model_.dims().vocab);
  std::vector<float> logits;
  for (auto& st : g.steps) {
    logits.resize(st.rows * V);
    model_.collect_logits(st.id, logits.data());
    size_t row = 0;
    for (size_t e = 0; e < st.scored.size(); ++e) {
      auto [i, target_at] = st.scored[e];
      ItemScore& s = out[g.first_item + i];
      const auto& t = g.items[i]->tokens;
      for (size_t j = 0; j < st.lengths[e]; ++j, ++row) {
        const float* z = logits.data() + row * V;
        int32_t target = t[target_at + j];
        size_t best = size_t(std::max_element(z, z + V) - z);
        double mx = z[best], sum = 0;
        for (size_t v = 0; v < V; ++v) sum += std::exp(double(z[v]) - mx);
        s.logprob += double(z[target]) - mx - std::log(sum);
        s.greedy = s.greedy && best == size_t(target);
        ++s.targets;
      }
    }
  }
  for (int session : g.sessions) model_.close_session(session);
}

std::vector<ItemScore> Evaluator::score(const std::vector<ScoreItem>& items) {
  const int V = model_.dims().vocab;
  for (size_t i = 0; i < items.size(); ++i) {
    const ScoreItem& it = items[i];
    if (it.first_target < 1 || it.first_target >= it.tokens.size()) fail("eval: item ", i, " has no target tokens");
    for (int32_t t : it.tokens)
      if (t < 0 || t >= V) fail("eval: item ", i, ": token id ", t, " is outside the vocabulary (", V, ")");
  }
  std::vector<ItemScore> out(items.size());
  // Two groups in flight: the next one's steps enter the pipeline while this one's logits come back.
  const size_t per_group = std::max<size_t>(1, sessions_ / 2);
  std::deque<Group> flying;
  size_t next = 0;
  while (next < items.size() || !flying.empty()) {
    if (next < items.size() && flying.size() < 2) {
      Group g;
      g.first_item = next;
      // Tokens of the group (a shared prefix once), and of its scored parts, the rows with logits: an item
      // joins while the group stays within the budget, and one sharing the last item's prefix while the
      // scored rows do (a long context then still serves its choices, and a step's logits stay bounded).
      size_t tokens = 0, scored = 0;
      while (next < items.size() && g.items.size() < per_group) {
        const ScoreItem& it = items[next];
        const bool shares = !g.items.empty() && same_prefix(*g.items.back(), it);
        const size_t own = it.tokens.size() - (it.first_target - 1), cost = shares ? own : it.tokens.size();
        if (!g.items.empty() && (shares ? scored + own : tokens + cost) > budget_) break;
        tokens += cost;
        scored += own;
        g.leader.push_back(shares ? g.leader.back() : g.items.size());
        g.items.push_back(&items[next++]);
      }
      for (size_t i = 0; i < g.items.size(); ++i) g.sessions.push_back(g.leader[i] == i ? model_.open_session() : -1);
      flying.push_back(std::move(g));
      submit(flying.back());
      continue;
    }
    finish(flying.front(), out);
    flying.pop_front();
  }
  return out;
}

}  // namespace skein
