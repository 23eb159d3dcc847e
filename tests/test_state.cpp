// State objects and state files: an interrupted run resumes exactly; files for other models, corrupt or
// truncated files are refused with a clear error.
#include <gtest/gtest.h>

#include "common/error.h"
#include "model/architecture.h"
#include "model/fingerprint.h"
#include "model/state_file.h"
#include "tests/golden_cases.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

struct Fixture {
  std::shared_ptr<const Checkpoint> ck;
  ModelUnderTest mut;
  StateFileHeader header;
};

Fixture open_model(const std::string& path) {
  Fixture f{Checkpoint::open(path), load_for_test(path), {}};
  f.header = {f.mut.model->dims(), 0, f.mut.model->dims().n_layer, model_fingerprint(*f.ck)};
  return f;
}

std::vector<int32_t> fox() {
  std::string s = "The quick brown fox jumps over the lazy dog.";
  return std::vector<int32_t>(s.begin(), s.end());
}

TEST(State, SaveLoadMidwayGivesExactlyTheUninterruptedLogits) {
  for (std::string m : {"tiny-rwkv-4v0-660K", "tiny-rwkv-5v2-730K", "tiny-rwkv-6v0-3m-Q5_1dq", "tiny-rwkv-7v0-834K"}) {
    Fixture f = open_model(shared_dir() + "/models/" + m + ".pth");
    Engine& model = *f.mut.model;
    auto tokens = fox();
    const size_t V = size_t(model.dims().vocab);
    std::vector<float> want(V), got(V);
    SessionState a = model.new_state();
    model.forward(std::span(tokens).subspan(0, 20), a, want.data());
    model.forward(std::span(tokens).subspan(20), a, want.data());

    SessionState b = model.new_state();
    model.forward(std::span(tokens).subspan(0, 20), b, got.data());
    std::string path = temp_dir() + "/s.state";
    save_state_file(path, f.header, b.to_host());
    SessionState c = model.new_state();
    c.from_host(load_state_file(path, f.header));
    model.forward(std::span(tokens).subspan(20), c, got.data());
    EXPECT_EQ(got, want) << m;
    EXPECT_EQ(c.to_host(), a.to_host()) << m;
  }
}

TEST(State, CloneIsIndependent) {
  Fixture f = open_model(shared_dir() + "/models/tiny-rwkv-7v0-834K.pth");
  Engine& model = *f.mut.model;
  auto tokens = fox();
  SessionState a = model.new_state();
  std::vector<float> la(256), lb(256);
  model.forward(std::span(tokens).subspan(0, 10), a, la.data());
  SessionState b = a.clone();
  model.forward(std::span(tokens).subspan(10, 5), a, la.data());
  model.forward(std::span(tokens).subspan(10, 5), b, lb.data());
  EXPECT_EQ(la, lb);
  EXPECT_EQ(a.to_host(), b.to_host());
  EXPECT_EQ(a.bytes(), model.dims().state_floats() * 4);
}

TEST(State, FileForAnotherModelIsRefused) {
  Fixture a = open_model(shared_dir() + "/models/tiny-rwkv-5v2-730K.pth");
  Fixture b = open_model(shared_dir() + "/models/tiny-rwkv-5v1-730K.pth");  // same dims, other weights
  Fixture c = open_model(shared_dir() + "/models/tiny-rwkv-7v0-834K.pth");
  std::string path = temp_dir() + "/a.state";
  save_state_file(path, a.header, a.mut.model->new_state().to_host());
  EXPECT_NO_THROW(load_state_file(path, a.header));
  try {
    load_state_file(path, c.header);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("different model architecture"), std::string::npos) << e.what();
  }
  b.header.dims.arch = a.header.dims.arch;  // force same architecture: the fingerprint still differs
  try {
    load_state_file(path, b.header);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another model"), std::string::npos) << e.what();
  }
}

TEST(State, CorruptOrTruncatedFilesAreRefused) {
  Fixture f = open_model(shared_dir() + "/models/tiny-rwkv-4v0-660K.pth");
  std::string dir = temp_dir();
  save_state_file(dir + "/s.state", f.header, f.mut.model->new_state().to_host());
  std::string good = read_file(dir + "/s.state");
  auto msg = [&](const std::string& bytes) -> std::string {
    write_file(dir + "/bad.state", bytes);
    try {
      load_state_file(dir + "/bad.state", f.header);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  std::string flipped = good;
  flipped[200] ^= 1;
  EXPECT_NE(msg(flipped).find("checksum"), std::string::npos);
  EXPECT_NE(msg(good.substr(0, good.size() - 100)).find("truncated"), std::string::npos);
  EXPECT_NE(msg("SKEIN???garbage-garbage-garbage-garbage-garbage-garbage-garbage-garbage-garbage").find("bad magic"), std::string::npos);
  EXPECT_NE(msg("x").find("too short"), std::string::npos);
}

}  // namespace
}  // namespace skein::test
