#include "tests/golden_cases.h"

#include <algorithm>
#include <cstring>

#include "coordinator/placement.h"
#include "worker/local_model.h"
#include "model/architecture.h"
#include "model/weights.h"
#include "tests/test_support.h"

namespace skein::test {

ModelUnderTest load_for_test(const std::string& path, const std::string& emb_ln0, const std::string& strategy) {
  ModelUnderTest t;
  auto ck = Checkpoint::open(path);
  ModelDims d = detect_architecture(*ck);
  t.backend = std::make_unique<CpuBackend>();
  auto stages = strategy.empty() ? Engine::whole_model(d) : local_stages(make_plan(parse_strategy(strategy), *ck, d, {}));
  t.model = std::make_unique<Engine>(ck, d, stages, *t.backend);
  if (!emb_ln0.empty()) t.model->stages().front()->set_embedding_table(std::make_shared<std::vector<float>>(read_f32(emb_ln0)));
  return t;
}

std::string rewrite_checkpoint(const std::string& src, const std::string& name, const std::function<bool(PthTensorSpec&)>& edit,
                               const std::vector<std::pair<std::string, std::vector<int64_t>>>& extra_shapes,
                               const std::vector<std::vector<float>>& extra_values, bool reverse) {
  auto ck = Checkpoint::open(src);
  std::vector<PthTensorSpec> specs;
  std::vector<const void*> data;
  std::vector<size_t> sizes;
  for (auto& [n, t] : ck->tensors()) {
    PthTensorSpec s{n, t.dtype, t.shape};
    if (!edit(s)) continue;
    specs.push_back(s);
    data.push_back(t.data);
    sizes.push_back(t.nbytes);
  }
  for (size_t i = 0; i < extra_shapes.size(); ++i) {
    specs.push_back({extra_shapes[i].first, DType::F32, extra_shapes[i].second});
    data.push_back(extra_values[i].data());
    sizes.push_back(extra_values[i].size() * sizeof(float));
  }
  if (reverse) {
    std::reverse(specs.begin(), specs.end());
    std::reverse(data.begin(), data.end());
    std::reverse(sizes.begin(), sizes.end());
  }
  std::string out = temp_dir() + "/" + name;
  write_pth(out, specs, [&](size_t i, std::vector<uint8_t>& bytes) { std::memcpy(bytes.data(), data[i], std::min(bytes.size(), sizes[i])); });
  return out;
}

GenerateResult generate_fresh(Engine& m, const Tokenizer& tok, const GenerateRequest& req, const std::function<void(std::string_view)>& on_text) {
  LocalModel local(m, 64);
  return generate(local, local.open_session(), tok, req, on_text);
}

ModeOutputs run_modes(Engine& m, const std::vector<int32_t>& tokens, const std::vector<int>& chunks) {
  const size_t V = size_t(m.dims().vocab), T = tokens.size();
  ModeOutputs o;
  {
    SessionState s = m.new_state();
    o.seq_full.resize(T * V);
    m.forward(tokens, s, o.seq_full.data(), true);
    o.seq_last.assign(o.seq_full.end() - long(V), o.seq_full.end());
    o.state_seq = s.to_host();
  }
  {
    SessionState s = m.new_state();
    o.rnn.resize(T * V);
    for (size_t t = 0; t < T; ++t) m.forward(std::span<const int32_t>(&tokens[t], 1), s, o.rnn.data() + t * V);
    o.state_rnn = s.to_host();
  }
  {
    SessionState s = m.new_state();
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
