// Tokenizers: the RWKV World vocabulary (greedy longest match over UTF-8 bytes, as the official
// TRIE_TOKENIZER), the byte tokenizer of the tiny models (token id = byte value) and byte-level BPE
// (bpe_tokenizer.h, for the RWKV-4 Pile models). Each maps text to ids and ids to bytes; Utf8Stream turns a stream of bytes into text that never splits a character.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace skein {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  virtual int vocab_size() const = 0;  // ids are < vocab_size()
  virtual std::vector<int32_t> encode(std::string_view bytes) const = 0;
  // Bytes of the ids; throws skein::Error for an id with no bytes in the vocabulary.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  // The id that ends a text (generation stops there unless told otherwise), if the vocabulary has one.
  virtual std::optional<int32_t> end_of_text() const { return std::nullopt; }
  // The text that encodes to end_of_text() (a special token's name), if there is one: World's id 0 has
  // no text, BPE's is "<|endoftext|>".
  virtual std::optional<std::string> end_of_text_name() const { return std::nullopt; }
};

class ByteTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "bytes"; }
  int vocab_size() const override { return 256; }
  std::vector<int32_t> encode(std::string_view bytes) const override;
  std::string decode(std::span<const int32_t> ids) const override;
};

class WorldTokenizer final : public Tokenizer {
 public:
  explicit WorldTokenizer(const std::string& vocab_path);
  std::string name() const override { return "world"; }
  int vocab_size() const override { return int(tokens_.size()); }
  std::vector<int32_t> encode(std::string_view bytes) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  std::optional<int32_t> end_of_text() const override { return 0; }

 private:
  std::vector<std::string> tokens_;  // id -> bytes; id 0 (end of text) has none
  std::vector<bool> present_;
  // Trie over bytes: (node << 8 | byte) -> child node; node -> token id ending there (or -1).
  std::unordered_map<uint64_t, int32_t> children_;
  std::vector<int32_t> node_token_;
};

// Bytes of generated ids, where an id the vocabulary has no bytes for gives none: World's 0, or any id of
// a head wider than its tokenizer (65536 outputs for World's 65529 entries; random-weight models sample
// them). A sampled id is the model's answer, so it must not end a stream (or a server) as a bad input does.
std::string generated_bytes(const Tokenizer& tok, std::span<const int32_t> ids);

// "bytes", "world:PATH" (rwkv_vocab_v20230424.txt) or "bpe:PATH" (a byte-level BPE tokenizer.json, e.g.
// 20B_tokenizer.json; model/bpe_tokenizer.h). Throws skein::Error on an unknown spec or a bad file.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);

// Accumulates bytes and releases only complete UTF-8 characters; an incomplete sequence at the end is
// held until its remaining bytes arrive, and a byte that can never start or continue a character is
// released as U+FFFD.
class Utf8Stream {
 public:
  std::string push(std::string_view bytes);
  std::string finish();  // releases what is held (an unfinished character becomes U+FFFD)
  size_t pending() const { return held_.size(); }

 private:
  std::string held_;
};

// Whole, valid UTF-8 (what Utf8Stream passes through unchanged).
bool is_utf8(std::string_view bytes);

}  // namespace skein
