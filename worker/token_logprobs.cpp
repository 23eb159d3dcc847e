#include "worker/token_logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace skein {

void score_logprobs(const float* logits, int V, int n_top, SampledToken& t) {
  // log-softmax with the log-sum-exp taken in double: a 65536-token row sums without losing the tail.
  float mx = -INFINITY;
  for (int i = 0; i < V; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int i = 0; i < V; ++i) sum += std::exp(double(logits[i]) - double(mx));
  const double lse = double(mx) + std::log(sum);
  auto logprob = [&](int32_t i) { return float(double(logits[i]) - lse); };
  t.scored = true;
  t.logprob = t.token >= 0 && t.token < V ? logprob(t.token) : -INFINITY;
  const int n = std::clamp(n_top, 0, V);
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  // NaN (a broken model) orders last, so the comparison stays a strict weak order.
  auto key = [&](int32_t i) { return std::isnan(logits[i]) ? -INFINITY : logits[i]; };
  std::partial_sort(order.begin(), order.begin() + n, order.end(),
                    [&](int32_t a, int32_t b) { return key(a) > key(b) || (key(a) == key(b) && a < b); });
  t.top.clear();
  for (int i = 0; i < n; ++i) t.top.push_back({order[size_t(i)], logprob(order[size_t(i)])});
}

}  // namespace skein
