#include "tests/golden_cases.h"

#include "model/architecture.h"
#include "model/weights.h"
#include "tests/test_support.h"

namespace skein::test {

ModelUnderTest load_for_test(const std::string& path, const std::string& emb_ln0) {
  ModelUnderTest t;
  auto ck = Checkpoint::open(path);
  ModelDims d = detect_architecture(*ck);
  ModelWeights w = load_all_weights(ck, d);
  if (!emb_ln0.empty()) w.emb_override = std::make_shared<std::vector<float>>(read_f32(emb_ln0));
  t.backend = std::make_unique<CpuBackend>();
  t.model = std::make_unique<RwkvModel>(std::move(w), *t.backend);
  return t;
}

ModeOutputs run_modes(RwkvModel& m, const std::vector<int32_t>& tokens, const std::vector<int>& chunks) {
  const size_t V = size_t(m.dims().vocab), T = tokens.size();
  ModeOutputs o;
  {
    State s = m.new_state();
    o.seq_full.resize(T * V);
    m.forward(tokens, s, o.seq_full.data(), true);
    o.seq_last.assign(o.seq_full.end() - long(V), o.seq_full.end());
    o.state_seq = s.to_host();
  }
  {
    State s = m.new_state();
    o.rnn.resize(T * V);
    for (size_t t = 0; t < T; ++t) m.forward(std::span<const int32_t>(&tokens[t], 1), s, o.rnn.data() + t * V);
    o.state_rnn = s.to_host();
  }
  {
    State s = m.new_state();
    o.chunked_full.resize(T * V);
    size_t pos = 0;
    for (int n : chunks) {
      m.forward(std::span<const int32_t>(tokens.data() + pos, size_t(n)), s, o.chunked_full.data() + pos * V, true);
      pos += size_t(n);
      o.chunked_last.insert(o.chunked_last.end(), o.chunked_full.begin() + long((pos - 1) * V), o.chunked_full.begin() + long(pos * V));
    }
    o.state_chunked = s.to_host();
  }
  return o;
}

}  // namespace skein::test
