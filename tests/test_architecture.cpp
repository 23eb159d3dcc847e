// Generation detection does not depend on key order or layer count; state-tuned checkpoints start from
// their time_state.
#include <gtest/gtest.h>

#include <random>

#include "model/architecture.h"
#include "model/make_model.h"
#include "tests/golden_cases.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

TEST(Architecture, OneLayerModelsOfEveryGeneration) {
  for (auto [name, arch] : {std::pair{"v4", Arch::V4}, {"v5.2", Arch::V5_2}, {"v6", Arch::V6}, {"v7", Arch::V7}}) {
    MakeModelOptions o;
    o.arch = parse_make_model_arch(name);
    o.n_layer = 1;
    o.n_embd = 64;
    o.vocab = 40;
    o.head_size = 16;
    std::string path = temp_dir() + "/one.pth";
    make_model(o, path);
    ModelDims d = detect_architecture(*Checkpoint::open(path));
    EXPECT_EQ(d.arch, arch) << name;
    EXPECT_EQ(d.n_layer, 1) << name;
    auto mut = load_for_test(path);
    std::vector<float> logits(40);
    SessionState s = mut.model->new_state();
    std::vector<int32_t> t = {1, 2, 3};
    mut.model->forward(t, s, logits.data());
  }
}

TEST(Architecture, KeyOrderDoesNotMatter) {
  std::string src = golden("models/rand-v5_2-bf16vals-fp32.pth");
  std::string rev = rewrite_checkpoint(src, "rev.pth", [](PthTensorSpec&) { return true; }, {}, {}, true);
  auto a = load_for_test(src), b = load_for_test(rev);
  std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6};
  EXPECT_EQ(run_modes(*a.model, tokens, {8}).seq_full, run_modes(*b.model, tokens, {8}).seq_full);
}

// v5/v6 files store time_state [head][value][key] (the official demos transpose it into the
// [key][value] state); v7 files store it in v7's own layout.
void check_time_state(const std::string& model, bool transposed) {
  auto base = Checkpoint::open(golden("models/" + model));
  ModelDims d = detect_architecture(*base);
  const int H = d.n_head, N = d.head_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  std::vector<std::vector<float>> values;
  std::mt19937 g(1);
  for (int l = 0; l < d.n_layer; ++l) {
    shapes.push_back({"blocks." + std::to_string(l) + ".att.time_state", {H, N, N}});
    std::vector<float> v(size_t(H) * N * N);
    for (auto& x : v) x = std::uniform_real_distribution<float>(-1, 1)(g);
    values.push_back(v);
  }
  std::string path = rewrite_checkpoint(golden("models/" + model), "ts.pth", [](PthTensorSpec&) { return true; }, shapes, values);
  auto mut = load_for_test(path);
  ASSERT_TRUE(mut.model->dims().has_time_state);
  auto st = mut.model->new_state().to_host();
  const size_t C = size_t(d.n_embd), per = d.state_floats_per_layer();
  for (int l = 0; l < d.n_layer; ++l)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
          float want = transposed ? values[l][(size_t(h) * N + j) * N + i] : values[l][(size_t(h) * N + i) * N + j];
          ASSERT_EQ(st[l * per + C + (size_t(h) * N + i) * N + j], want) << model;
        }
  // The same with the later layers streamed from the file (*N+): their time_state is kept for resets.
  auto streamed = load_for_test(path, "", "cpu fp32 *2+");
  EXPECT_EQ(streamed.model->new_state().to_host(), st) << model;
  // And generation starts from it: the first logits differ from the plain model's.
  auto plain = load_for_test(golden("models/" + model));
  std::vector<int32_t> t = {7};
  EXPECT_NE(run_modes(*mut.model, t, {1}).seq_last, run_modes(*plain.model, t, {1}).seq_last);
}

TEST(Architecture, TimeStateBecomesTheInitialState) {
  check_time_state("rand-v6-bf16vals-fp32.pth", true);
  check_time_state("rand-v5_2-bf16vals-fp32.pth", true);
  check_time_state("rand-v7-fp32.pth", false);
}

}  // namespace
}  // namespace skein::test
