// make-model writes real checkpoints: Skein reads them back as the right generation and shape, every
// mode agrees, and Python's own zipfile + pickle (what torch.load is built on) read the archive.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "common/error.h"
#include "model/architecture.h"
#include "model/make_model.h"
#include "tests/golden_cases.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

struct MakeCase {
  const char* arch;
  DType dtype;
  Arch expect;
};

class MakeModelTest : public ::testing::TestWithParam<MakeCase> {};

TEST_P(MakeModelTest, LoadsAndModesAgree) {
  const MakeCase& c = GetParam();
  MakeModelOptions o;
  o.arch = parse_make_model_arch(c.arch);
  o.n_layer = 3;
  o.n_embd = 128;
  o.vocab = 300;
  o.head_size = 32;
  o.seed = 7;
  o.dtype = c.dtype;
  std::string path = temp_dir() + "/m.pth";
  make_model(o, path);
  auto ck = Checkpoint::open(path);
  ModelDims d = detect_architecture(*ck);
  EXPECT_EQ(d.arch, c.expect);
  EXPECT_EQ(d.n_layer, 3);
  EXPECT_EQ(d.n_embd, 128);
  EXPECT_EQ(d.vocab, 300);
  if (c.expect != Arch::V4) {
    EXPECT_EQ(d.head_size, 32);
  }
  auto mut = load_for_test(path);
  std::vector<int32_t> tokens = {1, 299, 17, 5, 5, 42, 100, 7, 0, 250, 3};
  ModeOutputs m = run_modes(*mut.model, tokens, {4, 7});
  for (float v : m.seq_full) ASSERT_TRUE(std::isfinite(v));
  EXPECT_LE(max_abs_diff(m.seq_full, m.rnn), 1e-4);
  EXPECT_LE(max_abs_diff(m.seq_full, m.chunked_full), 1e-4);
  EXPECT_LE(max_abs_diff(m.state_seq, m.state_rnn), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Archs, MakeModelTest,
                         ::testing::Values(MakeCase{"v4", DType::BF16, Arch::V4}, MakeCase{"v5.2", DType::BF16, Arch::V5_2},
                                           MakeCase{"v6", DType::F16, Arch::V6}, MakeCase{"v7", DType::BF16, Arch::V7},
                                           MakeCase{"v7", DType::F32, Arch::V7}),
                         [](const auto& info) { return std::string(info.param.arch[1] == '5' ? "v5_2" : info.param.arch) + "_" + dtype_name(info.param.dtype); });

TEST(MakeModel, PythonPickleAndZipfileReadTheArchive) {
  if (std::system("python3 -c 'import zipfile, pickle' >/dev/null 2>&1") != 0) GTEST_SKIP() << "python3 not available";
  MakeModelOptions o;
  o.arch = Arch::V7;
  o.n_layer = 2;
  o.n_embd = 64;
  o.vocab = 256;
  std::string dir = temp_dir(), path = dir + "/py.pth";
  make_model(o, path);
  // The same unpickling torch.load performs: torch globals resolved by name, storages by persistent id.
  write_file(dir + "/check.py", R"PY(
import sys, zipfile, pickle, collections
z = zipfile.ZipFile(sys.argv[1])
names = z.namelist()
pkl = [n for n in names if n.endswith('/data.pkl')][0]
stem = pkl[:-len('data.pkl')]
assert z.read(stem + 'byteorder') == b'little' and z.read(stem + 'version').strip() == b'3'
class U(pickle.Unpickler):
    def find_class(self, mod, name):
        if (mod, name) == ('collections', 'OrderedDict'): return collections.OrderedDict
        if (mod, name) == ('torch._utils', '_rebuild_tensor_v2'):
            return lambda st, off, size, stride, rg, hooks, *a: (st, off, size, stride)
        if mod == 'torch' and name.endswith('Storage'): return name
        raise pickle.UnpicklingError(mod + '.' + name)
    def persistent_load(self, pid):
        assert pid[0] == 'storage' and pid[3] == 'cpu'
        return pid
sd = U(z.open(pkl)).load()
size = {'BFloat16Storage': 2, 'HalfStorage': 2, 'FloatStorage': 4}
for k, (st, off, shape, stride) in sd.items():
    n = 1
    for s in shape: n *= s
    assert st[4] == n, k
    info = z.getinfo(stem + 'data/' + st[2])
    assert info.file_size == n * size[st[1]], k
    assert info.header_offset >= 0
print(len(sd), 'tensors ok')
)PY");
  auto r = std::system(("python3 " + dir + "/check.py " + path + " > " + dir + "/out.txt 2>&1").c_str());
  EXPECT_EQ(r, 0) << read_file(dir + "/out.txt");
}

// A shape larger than the disk's free space is refused before a byte is written (it once wrote until
// the disk was full, failing every other writer there meanwhile).
TEST(MakeModel, AShapeLargerThanTheDiskIsRefusedBeforeWriting) {
  MakeModelOptions o;
  o.arch = Arch::V7;
  o.n_layer = 1;
  o.n_embd = 65536;
  o.vocab = 2000000000;  // 262 TB of embedding alone
  const std::string dir = temp_dir();
  try {
    make_model(o, dir + "/huge.pth");
    FAIL() << "a 500 TB checkpoint was written";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("make-model: the checkpoint takes 5", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find(" GB but " + dir + " has "), std::string::npos) << e.what();
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}

}  // namespace
}  // namespace skein::test
