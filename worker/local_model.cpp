#include "worker/local_model.h"

#include <algorithm>

#include "common/error.h"

namespace skein {

SessionState& LocalModel::get(int session) {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) fail("no session ", session);
  return it->second;
}

int LocalModel::open_session() {
  sessions_.emplace(next_, engine_.new_state());
  return next_++;
}

int LocalModel::clone_session(int session) {
  sessions_.emplace(next_, get(session).clone());
  return next_++;
}

void LocalModel::run(int session, std::span<const int32_t> tokens, int chunk, float* logits, bool all_positions) {
  SessionState& s = get(session);
  const size_t V = size_t(engine_.dims().vocab);
  const size_t step = size_t(std::max(1, chunk));
  for (size_t i = 0; i < tokens.size(); i += step) {
    size_t n = std::min(step, tokens.size() - i);
    engine_.forward(tokens.subspan(i, n), s, all_positions ? logits + i * V : logits, all_positions);
  }
}

}  // namespace skein
