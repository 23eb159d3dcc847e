// World tokenizer against the official TRIE_TOKENIZER cases; byte tokenizer; streaming UTF-8.
#include <gtest/gtest.h>

#include "common/error.h"
#include "model/tokenizer.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

std::string unhex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out += char(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

const WorldTokenizer& world() {
  static WorldTokenizer t(shared_dir() + "/tokenizers/rwkv_vocab_v20230424.txt");
  return t;
}

TEST(WorldTokenizer, MatchesOfficialCasesByteForByte) {
  auto j = read_json(golden("tokenizer/world_cases.json"));
  ASSERT_GE(j["cases"].size(), 40u);
  for (auto& c : j["cases"]) {
    std::string input = unhex(c["input_bytes_hex"]);
    auto want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(world().encode(input), want) << c["name"];
    EXPECT_EQ(world().decode(want), unhex(c["decoded_bytes_hex"])) << c["name"];
    auto tokens = c["token_bytes_hex"].get<std::vector<std::string>>();
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_EQ(world().decode(std::span<const int32_t>(&want[i], 1)), unhex(tokens[i])) << c["name"] << " token " << i;
  }
}

TEST(WorldTokenizer, StreamingDecodeNeverEmitsBrokenUtf8) {
  auto j = read_json(golden("tokenizer/world_cases.json"));
  for (auto& c : j["partial_decode_cases"]) {
    auto ids = c["ids"].get<std::vector<int32_t>>();
    std::string bytes = world().decode(ids);
    EXPECT_EQ(bytes, unhex(c["decoded_bytes_hex"])) << c["name"];
    Utf8Stream u;
    std::string out;
    for (int32_t id : ids) {
      std::string piece = u.push(world().decode(std::span<const int32_t>(&id, 1)));
      EXPECT_TRUE(is_utf8(piece)) << c["name"];
      out += piece;
    }
    // What was released is exactly the complete-character prefix of the bytes.
    EXPECT_EQ(out + std::string(bytes.end() - long(u.pending()), bytes.end()), bytes) << c["name"];
    // When the official decode succeeds, nothing is held back.
    if (c["decode_text"] != "\xEF\xBF\xBD") {
      EXPECT_EQ(u.pending(), 0u) << c["name"];
    }
  }
}

TEST(WorldTokenizer, IdZeroHasNoText) {
  std::vector<int32_t> ids = {0};
  EXPECT_THROW(world().decode(ids), Error);
  EXPECT_EQ(world().vocab_size(), 65530);
}

TEST(WorldTokenizer, MalformedVocabularyNamesFileAndLine) {
  std::string dir = temp_dir();
  write_file(dir + "/v.txt", "1 '\\x00' 1\n2 'ab 2\n");
  try {
    WorldTokenizer t(dir + "/v.txt");
    FAIL() << "accepted a malformed vocabulary";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("v.txt:2"), std::string::npos) << e.what();
  }
  write_file(dir + "/w.txt", "1 'a' 2\n");
  EXPECT_THROW(WorldTokenizer(dir + "/w.txt"), Error);

  // Every single byte, then one line under test: what the official reader (which eval()s the literal
  // and encodes it to UTF-8) refuses is refused here with the line's number and the reason.
  std::string bytes;
  for (int b = 0; b < 256; ++b) bytes += std::to_string(b + 1) + " b'\\x" + "0123456789abcdef"[b >> 4] + "0123456789abcdef"[b & 15] + "' 1\n";
  auto refused = [&](const std::string& line, const std::string& says) {
    write_file(dir + "/x.txt", bytes + line + "\n");
    try {
      WorldTokenizer t(dir + "/x.txt");
      ADD_FAILURE() << "accepted: " << line;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("x.txt:257: " + says), std::string::npos) << line << " -> " << e.what();
    }
  };
  refused("300 'a' 1 extra", "bad length field '1 extra'");
  refused("300x 'ab' 2", "bad token id '300x'");
  refused("300 'ab'", "expected ' <length>' after the literal");
  refused("300 '' 0", "empty token");
  refused("300 '\\ud800' 3", "\\ud800 is not a Unicode scalar value");
  refused("300 '\\U00110000' 4", "\\U00110000 is not a Unicode scalar value");
  refused("300 b'\\777' 1", "octal escape of 511 in bytes literal is beyond 0o377");
  auto token_300 = [&](const std::string& line) {
    write_file(dir + "/y.txt", bytes + line + "\n");
    return WorldTokenizer(dir + "/y.txt").decode(std::vector<int32_t>{300});
  };
  EXPECT_EQ(token_300("300 '\\101b' 2"), "Ab");  // octal, as Python reads it
  EXPECT_EQ(token_300("300 '\\0' 1"), std::string(1, '\0'));
  EXPECT_EQ(token_300("300  'ab'  2\r"), "ab");  // spaces around the literal, a CRLF file
}

TEST(ByteTokenizer, RoundTripsAnyBytes) {
  ByteTokenizer t;
  std::string s("\x00\xff hello \xe4\xb8\xad", 11);
  auto ids = t.encode(s);
  ASSERT_EQ(ids.size(), s.size());
  EXPECT_EQ(ids[1], 255);
  EXPECT_EQ(t.decode(ids), s);
  std::vector<int32_t> bad = {256};
  EXPECT_THROW(t.decode(bad), Error);
}

TEST(Utf8Stream, HoldsIncompleteCharactersAndReplacesInvalidBytes) {
  Utf8Stream u;
  EXPECT_EQ(u.push("a\xe4"), "a");
  EXPECT_EQ(u.push("\xb8"), "");
  EXPECT_EQ(u.push("\xad!"), "\xe4\xb8\xad!");
  EXPECT_EQ(u.push("\xff"), "\xEF\xBF\xBD");         // can never start a character
  EXPECT_EQ(u.push("\xe4x"), "\xEF\xBF\xBDx");       // lead byte not continued
  EXPECT_EQ(u.push("\xed\xa0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(u.push("\xf0\x9f"), "");
  EXPECT_EQ(u.finish(), "\xEF\xBF\xBD");
}

}  // namespace
}  // namespace skein::test
