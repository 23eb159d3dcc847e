// The byte-level BPE tokenizer (20B_tokenizer.json, the RWKV-4 Pile models' vocabulary) against
// Hugging Face's own `tokenizers` library, run through its npm binding (tests/hf_tokenizers, installed
// by scripts/setup.sh), on fixed and seeded random texts; round trips; malformed files.
#include <gtest/gtest.h>

#include <random>

#include "common/error.h"
#include "model/bpe_tokenizer.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

std::string neox_path() { return shared_dir() + "/tokenizers/20B_tokenizer.json"; }

const BpeTokenizer& neox() {
  static BpeTokenizer t(neox_path());
  return t;
}

// Texts that reach every branch: contractions, each character class with and without a leading space,
// whitespace runs (the added tokens of 2-24 spaces, \s+(?!\S)), special tokens in text, characters NFC
// changes, scripts, numbers that are not digits, emoji sequences, Unicode spaces and near-spaces.
std::vector<std::string> fixed_cases() {
  return {"Hello  world", "The quick brown fox's jumped!!  ", "<|endoftext|>hi", "caf\u00e9 \u6771\u4eac \U0001F389 12345", "a\n\n  b\t\tc",
          "I'm sure they'll say we've, you're, he'd, it's, don't", "'S 'T 'RE 'x '' '", "x                                          y",
          "trailing spaces   ", "   leading", "\n", " ", "", "e\u0301 vs \u00e9, A\u030a vs \u00c5, \u1100\u1161\u11a8 (jamo)",
          "\u00bd \u0663\u0664 \u216b \u00b2 9\u20ac", "\U0001F468\u200D\U0001F469\u200D\U0001F467 \U0001F1EF\U0001F1F5 \u2764\ufe0f",
          "nbsp\u00a0here, ideographic\u3000space, nel\u0085, zwsp\u200bnot a space, line\u2028sep",
          "<|padding|><|endoftext|><|endof <|endoftext|", "def f(x):\n    return x**2  # square\n\n\tpass\r\n",
          "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u0928\u092e\u0938\u094d\u0924\u0947 \ud55c\uad6d\uc5b4 \u0416\u0443\u043a",
          "http://example.com/a?b=c&d=e#f", "1,234,567.89 and 3.14159e-10", "!!!???...---___***", "a'b'c'd 's's's"};
}

// Seeded random texts from the same kinds of pieces.
std::vector<std::string> random_cases(int n) {
  const std::vector<std::string> pieces = {"the", "The", " cat", "'s", "'ll", "'", " ", "  ", "   ", "\t", "\n", "\r\n", "42", " 7", "3.5",
                                           ",", "!", " (", ")", "\u00e9", "e\u0301", "\u00df", "\u03a9", "\u0416", "\u6771\u4eac", "\ud55c",
                                           "\u0628", "\u0939\u093f", "\u0663", "\u00bd", "\U0001F389", "\u200d", "\ufe0f", "\u00a0", "\u3000",
                                           "\u2028", "\u200b", "<|endoftext|>", "<|", "|>", "_", "\\", "\"", "{}", "->", "\u2192", "\u2122"};
  std::mt19937 rng(20260427);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    std::string s;
    const int len = 1 + int(rng() % 16);
    for (int k = 0; k < len; ++k) {
      const std::string& p = pieces[rng() % pieces.size()];
      const int repeat = rng() % 8 == 0 ? 1 + int(rng() % 30) : 1;  // now and then a long run
      for (int r = 0; r < repeat; ++r) s += p;
    }
    out.push_back(s);
  }
  return out;
}

TEST(BpeTokenizer, MatchesHuggingFaceTokenizers) {
  const std::string here = std::string(SKEIN_SOURCE_DIR) + "/tests/hf_tokenizers";
  std::vector<std::string> cases = fixed_cases(), more = random_cases(600);
  cases.insert(cases.end(), more.begin(), more.end());
  const nlohmann::json world_cases = read_json(golden("tokenizer/world_cases.json"));  // a temporary's ["cases"] dangles in a range-for
  for (auto& c : world_cases["cases"])
    if (c["text"].is_string()) cases.push_back(c["text"].get<std::string>());
  const std::string dir = temp_dir();
  write_file(dir + "/cases.json", nlohmann::json(cases).dump());
  auto r = run_shell("node " + here + "/encode.mjs " + neox_path() + " " + dir + "/cases.json");
  ASSERT_EQ(r.exit_code, 0) << "the reference did not run (scripts/setup.sh installs node and tests/hf_tokenizers): " << r.output;
  const auto want = nlohmann::json::parse(r.output).get<std::vector<std::vector<int32_t>>>();
  ASSERT_EQ(want.size(), cases.size());
  int mismatches = 0;
  for (size_t i = 0; i < cases.size() && mismatches < 10; ++i) {
    const auto got = neox().encode(cases[i]);
    if (got != want[i]) ++mismatches;
    EXPECT_EQ(got, want[i]) << "case " << i << ": " << nlohmann::json(cases[i]).dump();
  }
}

TEST(BpeTokenizer, DecodesWhatItEncodesAfterNfc) {
  EXPECT_EQ(neox().vocab_size(), 50277);  // the RWKV-4 Pile models' vocabulary
  ASSERT_TRUE(neox().end_of_text());
  EXPECT_EQ(*neox().end_of_text(), 0);
  ASSERT_TRUE(neox().end_of_text_name());  // its name, for clients that count tokens as the server does
  EXPECT_EQ(neox().encode(*neox().end_of_text_name()), std::vector<int32_t>{0});
  for (const std::string& s : random_cases(200)) {
    std::string want = s;  // special tokens decode to nothing; e + U+0301 composes
    for (const std::string special : {"<|endoftext|>"})
      for (size_t p; (p = want.find(special)) != std::string::npos;) want.erase(p, special.size());
    for (size_t p; (p = want.find("e\u0301")) != std::string::npos;) want.replace(p, 3, "\u00e9");
    EXPECT_EQ(neox().decode(neox().encode(s)), want) << nlohmann::json(s).dump();
  }
  std::vector<int32_t> bad = {50277};
  EXPECT_THROW(neox().decode(bad), Error);
  try {
    neox().encode("\xc0\x80");  // never UTF-8, and the vocabulary has no token for 0xC0
    ADD_FAILURE() << "0xC0 was encoded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("byte 0xc0, which this vocabulary has no token for (no UTF-8 text holds it)"), std::string::npos) << e.what();
  }
  EXPECT_EQ(neox().decode(neox().encode("\xe9t\xe9")), "\xe9t\xe9");  // stray Latin-1 bytes pass through
}

TEST(BpeTokenizer, LongWordsStayFast) {
  // One "word" of 200k letters: merges go through a heap, not a rescan per merge.
  const std::string word(200000, 'a');
  const auto ids = neox().encode(word);
  EXPECT_LT(ids.size(), word.size() / 4);
  EXPECT_EQ(neox().decode(ids), word);
}

TEST(BpeTokenizer, MalformedFilesAreOneLineErrorsNamingTheFile) {
  const std::string dir = temp_dir();
  auto expect_error = [&](const std::string& name, const std::string& body, const std::string& says) {
    write_file(dir + "/" + name, body);
    try {
      BpeTokenizer t(dir + "/" + name);
      ADD_FAILURE() << name << " was accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.rfind(dir + "/" + name + ": ", 0), 0u) << what;
      EXPECT_NE(what.find(says), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
      EXPECT_LT(what.size(), dir.size() + 200) << what;
    }
  };
  const std::string byte_level = R"("pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"})";
  expect_error("a.json", "{\"model\": ", "not a tokenizer.json");
  expect_error("b.json", "[1, 2]", "expected a JSON object");
  expect_error("c.json", "{" + byte_level + R"(, "model": {"type": "WordPiece"}})", "model WordPiece is not supported");
  expect_error("d.json", R"({"pre_tokenizer": {"type": "Whitespace"}, "model": {"type": "BPE"}})", "pre_tokenizer Whitespace is not supported");
  expect_error("e.json", R"({"normalizer": {"type": "NFKC"}, )" + byte_level + R"(, "model": {"type": "BPE"}})", "normalizer NFKC");
  expect_error("f.json", "{" + byte_level + R"(, "model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}})", "must be an integer id");
  expect_error("g.json", "{" + byte_level + R"(, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}})", "'ab' is not in the vocabulary");
  expect_error("h.json", "{" + byte_level + R"(, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["ab"]}})", "is not two tokens");
  expect_error("i.json", "{" + byte_level + R"(, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1}})", "dropout");
  expect_error("j.json", "{" + byte_level + R"(, "model": {"type": "BPE", "vocab": {"a": -4}, "merges": []}})", "outside 0..2^24");
  expect_error("k.json", "{" + byte_level + R"(, "model": {"type": "BPE", "vocab": {}, "merges": []}, "added_tokens": [{"id": 1}]})",
               "need an integer id and a string content");
  expect_error("l.json", "{" + byte_level + R"(, "model": {"type": "BPE", "vocab": {}, "merges": []}, "added_tokens": [{"id": 1, "content": "x", "special": 1}]})",
               "type must be boolean");
  expect_error("m.json", "{" + byte_level + R"(, "model": {"type": "BPE", "vocab": {}, "merges": []}, "added_tokens": [{"id": 4294967296, "content": "x"}]})",
               "outside 0..2^24");
  std::string long_vocab;  // a model without a type is named as such, not printed with its whole vocabulary
  for (int i = 0; i < 2000; ++i) long_vocab += (i ? ", \"t" : "\"t") + std::to_string(i) + "\": " + std::to_string(i);
  expect_error("n.json", "{" + byte_level + R"(, "model": {"vocab": {)" + long_vocab + R"(}, "merges": []}})", "model without a \"type\" is not supported");
  try {
    make_tokenizer("bpe:" + dir + "/missing.json");
    ADD_FAILURE() << "a missing file was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.json: cannot open"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace skein::test
