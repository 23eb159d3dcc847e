// Every kind of untrusted input, corrupted thousands of ways from valid seeds: each must load with its
// invariants holding or be refused with one skein::Error line (tests/fuzz/input_checks.h). The libFuzzer
// targets run the same checks for longer under sanitizers; what they found is kept in
// tests/fuzz/regressions/ and replayed here.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "common/error.h"
#include "model/make_model.h"
#include "model/state_file.h"
#include "test_support.h"
#include "tests/fuzz/corruptor.h"
#include "tests/fuzz/input_checks.h"

namespace skein {
namespace {

namespace fs = std::filesystem;

std::string regressions_dir() { return std::string(SKEIN_SOURCE_DIR) + "/tests/fuzz/regressions"; }

TEST(FuzzInputs, KeptFuzzerFindingsStayFixed) {
  int replayed = 0;
  for (const char* target : fuzz::kTargets) {
    fs::path dir = fs::path(regressions_dir()) / target;
    if (!fs::exists(dir)) continue;
    for (auto& entry : fs::directory_iterator(dir)) {
      SCOPED_TRACE(entry.path().string());
      fuzz::run_check(target, test::read_file(entry.path().string()), test::shared_dir());
      ++replayed;
    }
  }
  EXPECT_GT(replayed, 0) << "no inputs under " << regressions_dir();
}

TEST(FuzzInputs, CorruptedModelFilesLoadOrAreRefusedInOneLine) {
  const std::string dir = test::temp_dir();
  std::vector<std::string> seeds;
  int seed_no = 0;
  for (auto [arch, dtype] : {std::pair{Arch::V4, DType::F16}, {Arch::V5_2, DType::F32}, {Arch::V6, DType::BF16}, {Arch::V7, DType::F16}}) {
    MakeModelOptions o;
    o.arch = arch;
    o.dtype = dtype;
    o.n_layer = 2;
    o.n_embd = 32;
    o.head_size = 16;
    o.vocab = 64;
    std::string path = dir + "/seed" + std::to_string(seed_no++) + ".pth";
    make_model(o, path);
    seeds.push_back(test::read_file(path));
  }
  seeds.push_back(test::read_file(test::golden("models/rand-v7-bf16.safetensors")));
  for (size_t s = 0; s < seeds.size(); ++s) {
    SCOPED_TRACE("seed " + std::to_string(s));
    EXPECT_NO_THROW(fuzz::checkpoint_file(seeds[s]));
    fuzz::Corruptor c(s);
    // Accepted and refused both: otherwise the corruptions never reached past the first check.
    int accepted = 0, refused = 0;
    for (int i = 0, n = s + 1 == seeds.size() ? 60 : 250; i < n; ++i) {
      try {
        if (fuzz::checkpoint_file(c.bytes(seeds[s]))) ++accepted;
        else ++refused;
      } catch (const fuzz::Finding& f) {
        ADD_FAILURE() << "case " << i << ": " << f.what();
      }
    }
    EXPECT_GT(accepted, 0);
    EXPECT_GT(refused, 0);
  }
}

TEST(FuzzInputs, EveryCorruptedStateFileIsRefused) {
  const StateFileHeader h = fuzz::state_file_header();
  const std::string path = test::temp_dir() + "/s.state";
  std::vector<float> data(h.dims.state_floats());
  for (size_t i = 0; i < data.size(); ++i) data[i] = float(i % 97) * 0.25f;
  save_state_file(path, h, data);
  const std::string good = test::read_file(path);
  EXPECT_NO_THROW(fuzz::state_file(good));
  ASSERT_EQ(load_state_file(path, h), data);
  fuzz::Corruptor c(7);
  for (int i = 0; i < 400; ++i) {
    std::string bad = c.bytes(good);
    if (bad == good) continue;
    test::write_file(path, bad);
    try {
      (void)load_state_file(path, h);
      ADD_FAILURE() << "corruption " << i << " was loaded";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
}

TEST(FuzzInputs, CorruptedRequestsAreAcceptedSoundlyOrRefusedInOneLine) {
  for (const char* target : {"api_line", "openai_completion", "openai_chat"}) {
    SCOPED_TRACE(target);
    const auto valid = fuzz::seeds(target);
    ASSERT_FALSE(valid.empty());
    for (auto& s : valid) EXPECT_NO_THROW(fuzz::run_check(target, s, test::shared_dir())) << s;
    fuzz::Corruptor c(11);
    for (int i = 0; i < 3000; ++i) {
      std::string bad = c.json(valid[c.below(valid.size())]);
      try {
        fuzz::run_check(target, bad, test::shared_dir());
      } catch (const std::exception& f) {
        ADD_FAILURE() << f.what() << "\ninput: " << bad;
      }
    }
  }
}

TEST(FuzzInputs, CorruptedJsonThroughJsonModesRecognizerKeepsItsPromises) {
  const auto valid = fuzz::seeds("json_text");
  ASSERT_FALSE(valid.empty());
  fuzz::Corruptor c(13);
  for (int i = 0; i < 3000; ++i) {
    std::string bytes = c.json(valid[c.below(valid.size())]);
    try {
      fuzz::json_text(bytes);
    } catch (const std::exception& f) {
      ADD_FAILURE() << f.what() << "\ninput: " << bytes;
    }
  }
}

TEST(FuzzInputs, CorruptedEvalDataIsReadSoundlyOrRefusedInOneLine) {
  std::vector<std::string> lines;
  for (auto& file : fuzz::seeds("eval_data_file")) {
    EXPECT_NO_THROW(fuzz::eval_data_file(file));
    std::istringstream in(file);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  }
  fuzz::Corruptor c(29);
  for (int i = 0; i < 600; ++i) {
    std::string file;
    for (int n = 1 + int(c.below(3)); n > 0; --n) {
      const std::string& line = lines[c.below(lines.size())];
      file += (c.below(3) ? c.json(line) : line) + "\n";
    }
    if (c.below(8) == 0) file = c.bytes(file);
    try {
      fuzz::eval_data_file(file);
    } catch (const std::exception& f) {
      ADD_FAILURE() << f.what() << "\ninput:\n" << file;
    }
  }
}

TEST(FuzzInputs, CorruptedConfigFilesAreAcceptedSoundlyOrRefusedInOneLine) {
  for (const char* name : {"tiny-cpu.toml", "gpu-cluster.toml"}) {
    const std::string seed = test::read_file(std::string(SKEIN_SOURCE_DIR) + "/configs/" + name);
    EXPECT_NO_THROW(fuzz::config_file(seed));
    fuzz::Corruptor c(13);
    for (int i = 0; i < 1500; ++i) {
      std::string bad = c.toml(seed);
      try {
        fuzz::config_file(bad);
      } catch (const std::exception& f) {
        ADD_FAILURE() << name << ": " << f.what() << "\ninput:\n" << bad;
      }
    }
  }
}

TEST(FuzzInputs, CorruptedTokenizerFilesLoadOrAreRefusedInOneLine) {
  // Small seeds cut from the real files, so each corruption loads in a moment.
  std::string world;
  {
    std::ifstream f(test::shared_dir() + "/tokenizers/rwkv_vocab_v20230424.txt");
    std::string line;
    for (int i = 0; i < 600 && std::getline(f, line); ++i) world += line + "\n";
  }
  nlohmann::json bpe = test::read_json(test::shared_dir() + "/tokenizers/20B_tokenizer.json");
  {
    auto& model = bpe["model"];
    nlohmann::json vocab = nlohmann::json::object(), merges = nlohmann::json::array();
    for (auto& [token, id] : model["vocab"].items())
      if (id.get<int>() < 400) vocab[token] = id;
    for (auto& m : model["merges"]) {
      std::string key = m.get<std::string>();
      size_t sp = key.find(' ');
      if (vocab.contains(key.substr(0, sp)) && vocab.contains(key.substr(sp + 1)) && vocab.contains(key.substr(0, sp) + key.substr(sp + 1)))
        merges.push_back(m);
    }
    model["vocab"] = vocab;
    model["merges"] = merges;
    nlohmann::json added = nlohmann::json::array();
    for (auto& a : bpe["added_tokens"])
      if (a["id"].get<int>() < 2) added.push_back(a);
    bpe["added_tokens"] = added;
  }
  const std::string bpe_seed = bpe.dump();
  EXPECT_NO_THROW(fuzz::world_vocab_file(world));
  EXPECT_NO_THROW(fuzz::bpe_tokenizer_file(bpe_seed));
  fuzz::Corruptor c(17);
  for (int i = 0; i < 400; ++i) {
    try {
      fuzz::world_vocab_file(c.bytes(world));
      fuzz::bpe_tokenizer_file(i % 2 ? c.json(bpe_seed) : c.bytes(bpe_seed));
    } catch (const fuzz::Finding& f) {
      ADD_FAILURE() << "case " << i << ": " << f.what();
    }
  }
}

TEST(FuzzInputs, AnyTextSurvivesTheTokenizersAndUtf8Stream) {
  for (auto& s : fuzz::seeds("tokenizer_text")) EXPECT_NO_THROW(fuzz::tokenizer_text(s, test::shared_dir())) << s;
  std::mt19937_64 rng(19);
  auto pick = [&](uint32_t lo, uint32_t hi) { return std::uniform_int_distribution<uint32_t>(lo, hi)(rng); };
  auto utf8 = [](uint32_t cp) {
    std::string s;
    if (cp < 0x80) s += char(cp);
    else if (cp < 0x800) s += {char(0xC0 | cp >> 6), char(0x80 | (cp & 0x3F))};
    else if (cp < 0x10000) s += {char(0xE0 | cp >> 12), char(0x80 | (cp >> 6 & 0x3F)), char(0x80 | (cp & 0x3F))};
    else s += {char(0xF0 | cp >> 18), char(0x80 | (cp >> 12 & 0x3F)), char(0x80 | (cp >> 6 & 0x3F)), char(0x80 | (cp & 0x3F))};
    return s;
  };
  for (int i = 0; i < 1500; ++i) {
    std::string text;
    for (uint32_t n = pick(0, 40); n > 0; --n) {
      switch (pick(0, 4)) {
        case 0: text += char(pick(0, 255)); break;                            // any byte
        case 1: text += utf8(pick(0x80, 0xD7FF)); break;                      // two and three bytes
        case 2: text += utf8(pick(0x10000, 0x10FFFF)); break;                 // four bytes
        case 3: text += " \n\t'sll<|endoftext|>"[pick(0, 19)]; break;         // what pre-tokenizers split on
        default: text += char(pick(0x20, 0x7E));
      }
    }
    try {
      fuzz::tokenizer_text(text, test::shared_dir());
    } catch (const fuzz::Finding& f) {
      ADD_FAILURE() << f.what() << " for " << testing::PrintToString(text);
    }
  }
}

TEST(FuzzInputs, AnyStrategyParsesBackToItselfOrIsRefusedInOneLine) {
  for (auto& s : fuzz::seeds("strategy_text")) EXPECT_NO_THROW(fuzz::strategy_text(s)) << s;
  static const char* words[] = {"cpu", "cuda", "cuda:0", "cuda:1", ":", "node2:", "fp16", "bf16", "fp32", "i8", "fp16i8", "*", "*3", "*0",
                                "*99999999999", "+", "*2+", "->", " ", "  ", "-", "x", "\t", "\n", "cuda:-1", "cuda:2147483648", "*-1"};
  std::mt19937_64 rng(23);
  for (int i = 0; i < 5000; ++i) {
    std::string s;
    for (int n = int(rng() % 8); n > 0; --n) s += words[rng() % std::size(words)];
    try {
      fuzz::strategy_text(s);
    } catch (const fuzz::Finding& f) {
      ADD_FAILURE() << f.what() << " for \"" << s << "\"";
    }
  }
}

}  // namespace
}  // namespace skein
