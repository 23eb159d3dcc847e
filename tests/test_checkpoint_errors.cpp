// Every malformed checkpoint gives one clear error naming the file and the problem, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "common/error.h"
#include "model/architecture.h"
#include "model/checkpoint.h"
#include "model/mapped_file.h"
#include "model/pth_writer.h"
#include "model/weights.h"
#include "tests/golden_cases.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

// Loads like `skein` does; returns the error message, or "" when the file loads.
std::string load_error(const std::string& path) {
  try {
    auto ck = Checkpoint::open(path);
    ModelDims d = detect_architecture(*ck);
    load_all_weights(ck, d);
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

void expect_error(const std::string& path, const std::string& needle) {
  std::string msg = load_error(path);
  ASSERT_FALSE(msg.empty()) << path << " loaded without error";
  EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
  EXPECT_NE(msg.find(needle), std::string::npos) << "expected '" << needle << "' in: " << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "message is not one line: " << msg;
}

const std::string kModel = "models/rand-v7-bf16.pth";

std::string rewrite(const std::string& name, const std::function<bool(PthTensorSpec&)>& edit) {
  return rewrite_checkpoint(golden(kModel), name, edit);
}

TEST(CheckpointErrors, RewrittenCopyLoads) { EXPECT_EQ(load_error(rewrite("same.pth", [](PthTensorSpec&) { return true; })), ""); }

TEST(CheckpointErrors, Truncated) {
  std::string bytes = read_file(golden(kModel));
  for (double frac : {0.999, 0.5, 0.01}) {
    std::string p = temp_dir() + "/trunc.pth";
    write_file(p, bytes.substr(0, size_t(double(bytes.size()) * frac)));
    std::string msg = load_error(p);
    EXPECT_FALSE(msg.empty()) << frac;
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
  }
}

TEST(CheckpointErrors, WrongMagicAndEmpty) {
  std::string d = temp_dir();
  write_file(d + "/text.pth", "this is not a checkpoint at all, just text");
  expect_error(d + "/text.pth", "unrecognised file format");
  write_file(d + "/empty.pth", "");
  expect_error(d + "/empty.pth", "empty");
  expect_error(d + "/missing.pth", "cannot open");
}

TEST(CheckpointErrors, MissingTensor) {
  expect_error(rewrite("missing.pth", [](PthTensorSpec& s) { return s.name != "blocks.1.att.key.weight"; }),
               "missing tensor 'blocks.1.att.key.weight'");
}

TEST(CheckpointErrors, WrongShape) {
  expect_error(rewrite("shape.pth",
                       [](PthTensorSpec& s) {
                         if (s.name == "blocks.2.ffn.value.weight") std::swap(s.shape[0], s.shape[1]);
                         return true;
                       }),
               "'blocks.2.ffn.value.weight' has shape [512,128], expected [128,512]");
}

TEST(CheckpointErrors, UnknownArchitectureAndGaps) {
  expect_error(rewrite("arch.pth", [](PthTensorSpec& s) { return s.name.find(".att.") == std::string::npos; }), "unknown architecture");
  expect_error(rewrite("gap.pth", [](PthTensorSpec& s) { return s.name.rfind("blocks.2.", 0) != 0; }), "without gaps");
  expect_error(rewrite("noemb.pth", [](PthTensorSpec& s) { return s.name != "emb.weight"; }), "missing tensor 'emb.weight'");
}

TEST(CheckpointErrors, HostilePickleIsRefusedByName) {
  std::string d = temp_dir();
  // Protocol-0 pickle calling os.system("echo pwned > FILE"): must be refused before anything runs.
  std::string marker = d + "/pwned";
  write_stored_zip(d + "/evil.pth", {{"evil/data.pkl", "cos\nsystem\n(S'echo pwned > " + marker + "'\ntR."}});
  expect_error(d + "/evil.pth", "refusing global 'os.system'");
  EXPECT_FALSE(std::filesystem::exists(marker));
  write_stored_zip(d + "/eval.pth", {{"x/data.pkl", "c__builtin__\neval\n(S'1'\ntR."}});
  expect_error(d + "/eval.pth", "refusing global '__builtin__.eval'");
  write_stored_zip(d + "/junk.pth", {{"x/data.pkl", std::string("\x80\x02\xff\xfe garbage", 12)}});
  expect_error(d + "/junk.pth", "unsupported pickle opcode");
  write_stored_zip(d + "/nopkl.pth", {{"x/other", "abc"}});
  expect_error(d + "/nopkl.pth", "no data.pkl");
}

TEST(CheckpointErrors, CompressedMemberIsRefused) {
  std::string d = temp_dir();
  write_stored_zip(d + "/z.pth", {{"x/data.pkl", "}."}});
  std::string b = read_file(d + "/z.pth");
  size_t cd = b.find("PK\x01\x02");
  ASSERT_NE(cd, std::string::npos);
  b[cd + 10] = 8;  // method: deflate
  write_file(d + "/z.pth", b);
  expect_error(d + "/z.pth", "compressed");
}

// Weights are read in place from the map: a file truncated under a running process would end it with
// SIGBUS and a core dump; it ends with the one-line error instead (exit status 2), naming the file.
TEST(CheckpointErrors, AFileCutShortWhileMappedEndsWithAnErrorLine) {
  const std::string path = temp_dir() + "/cut.pth";
  write_file(path, std::string(3 << 16, 'x'));
  EXPECT_EXIT(
      {
        MappedFile m(path);
        std::filesystem::resize_file(path, 0);
        volatile uint8_t byte = m.data()[2 << 16];
        (void)byte;
        std::exit(0);
      },
      testing::ExitedWithCode(2), "skein: error: .*cut.pth: the file was cut short while in use");
}

TEST(CheckpointErrors, BadSafetensors) {
  std::string d = temp_dir();
  auto st = [&](const std::string& name, const std::string& header, size_t data_bytes, uint64_t hlen_override = 0) {
    std::string b(8, '\0');
    uint64_t n = hlen_override ? hlen_override : header.size();
    std::memcpy(b.data(), &n, 8);
    b += header + std::string(data_bytes, '\0');
    write_file(d + "/" + name, b);
    return d + "/" + name;
  };
  expect_error(st("json.safetensors", "{\"a\": [1,2,", 16), "not valid JSON");
  expect_error(st("len.safetensors", "{}", 0, 1u << 30), "exceeds the file size");
  expect_error(st("off.safetensors", R"({"emb.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", 8), "outside the file");
  expect_error(st("dtype.safetensors", R"({"emb.weight":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", 16), "unsupported dtype");
  expect_error(st("size.safetensors", R"({"emb.weight":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "does not match its shape");
}

}  // namespace
}  // namespace skein::test
