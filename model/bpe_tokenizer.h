// Byte-level BPE from a Hugging Face tokenizer.json, as the `tokenizers` library runs it: the
// 20B_tokenizer.json of the RWKV-4 Pile models (GPT-NeoX's vocabulary), GPT-2's and their kin. Only that
// family is accepted (NFC or no normalizer, ByteLevel pre-tokenizer and decoder, BPE model); anything
// else is refused by name rather than tokenized differently.
//
// encode: added tokens are cut out first (leftmost-longest; "special" ones on the raw text, the others
// after NFC), the rest is split by GPT-2's pattern, each piece's bytes become GPT-2's printable
// characters and are merged pair by pair in merge-rank order. decode: the reverse; special tokens (e.g.
// <|endoftext|>) decode to nothing, as `tokenizers` does by default.
#pragma once
#include <array>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/tokenizer.h"

namespace skein {

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(const std::string& json_path);
  std::string name() const override { return "bpe"; }
  int vocab_size() const override { return int(id_bytes_.size()); }
  std::vector<int32_t> encode(std::string_view bytes) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  std::optional<int32_t> end_of_text() const override { return end_of_text_; }
  std::optional<std::string> end_of_text_name() const override {
    return end_of_text_ ? std::optional<std::string>("<|endoftext|>") : std::nullopt;
  }

 private:
  struct AddedToken {
    std::string text;
    int32_t id;
  };
  // Cuts `text` at the leftmost-longest occurrences of `tokens`, handing each piece between them to
  // `piece` and each token's id to `ids`.
  template <typename Piece>
  static void split_added(std::string_view text, const std::vector<AddedToken>& tokens, std::vector<int32_t>& ids, Piece&& piece);
  void load(const nlohmann::json& file, const std::string& path);
  void encode_piece(std::string_view normalized, std::vector<int32_t>& ids) const;
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;

  bool nfc_ = false;
  std::vector<AddedToken> raw_added_, normalized_added_;   // special tokens match the raw text
  std::unordered_map<std::string, int32_t> vocab_;          // GPT-2 characters (UTF-8) -> id
  std::unordered_map<std::string, int32_t> merge_rank_;     // "left right" -> rank
  std::vector<std::string> id_bytes_;                       // id -> the bytes it decodes to
  std::vector<char> id_known_;                              // ids the file defines
  std::array<bool, 256> byte_known_{};                      // bytes whose character is a token
  std::optional<int32_t> end_of_text_;
};

}  // namespace skein
