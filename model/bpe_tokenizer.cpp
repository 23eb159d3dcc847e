#include "model/bpe_tokenizer.h"

#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <queue>

#include "common/error.h"
#include "common/json_text.h"
#include "common/refuse_folder.h"

namespace skein {

namespace {

// GPT-2's byte -> printable character table: bytes that print stand for themselves, the other 68 take
// U+0100 onwards in byte order (so BPE never sees a space or a control character).
struct ByteChars {
  std::string utf8[256];
  std::unordered_map<int32_t, uint8_t> byte_of;
  ByteChars() {
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool prints = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const int32_t c = prints ? b : next++;  // below U+0800: two bytes at most
      utf8[b] = c < 0x80 ? std::string(1, char(c)) : std::string{char(0xC0 | (c >> 6)), char(0x80 | (c & 0x3F))};
      byte_of[c] = uint8_t(b);
    }
  }
};
const ByteChars& byte_chars() {
  static const ByteChars table;
  return table;
}

// The character at s[i]: its code point (-1 for an ill-formed byte, which stands alone) and its length.
struct Next {
  int32_t cp;
  size_t len;
};
Next next_char(std::string_view s, size_t i) {
  ucs4_t c;
  const int n = u8_mbtoucr(&c, reinterpret_cast<const uint8_t*>(s.data()) + i, s.size() - i);
  return n > 0 ? Next{int32_t(c), size_t(n)} : Next{-1, 1};
}

// A token's text as bytes, as the ByteLevel decoder gives them: GPT-2's characters become their bytes,
// any other character (in an added token) stays as it is.
std::string byte_level_bytes(const std::string& token) {
  const ByteChars& bc = byte_chars();
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    const Next c = next_char(token, i);
    auto it = bc.byte_of.find(c.cp);
    if (it != bc.byte_of.end()) bytes += char(it->second);
    else bytes.append(token, i, c.len);
    i += c.len;
  }
  return bytes;
}

// The character classes of GPT-2's pattern; an ill-formed UTF-8 sequence counts as Other.
enum class CharClass { Letter, Number, Space, Other };
CharClass char_class(int32_t c) {
  if (c < 0) return CharClass::Other;
  if (uc_is_property_white_space(ucs4_t(c))) return CharClass::Space;  // \s: White_Space
  if (uc_is_general_category(ucs4_t(c), UC_CATEGORY_L)) return CharClass::Letter;
  if (uc_is_general_category(ucs4_t(c), UC_CATEGORY_N)) return CharClass::Number;
  return CharClass::Other;
}

struct Char {
  size_t begin, end;  // byte range
  int32_t cp;         // < 0: ill-formed
  CharClass cls;
};
std::vector<Char> decode_chars(std::string_view s) {
  std::vector<Char> out;
  for (size_t i = 0; i < s.size();) {
    const Next c = next_char(s, i);
    out.push_back({i, i + c.len, c.cp, char_class(c.cp)});
    i += c.len;
  }
  return out;
}

// GPT-2's pre-tokenizer pattern, matched by hand at each position in its alternatives' order:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// Returns the end (in chars) of the match starting at char i.
size_t match_pretoken(const std::vector<Char>& c, size_t i) {
  const size_t n = c.size();
  if (c[i].cp == '\'') {
    for (std::string_view suffix : {"s", "t", "re", "ve", "m", "ll", "d"}) {
      bool same = i + suffix.size() < n;
      for (size_t k = 0; k < suffix.size() && same; ++k) same = c[i + 1 + k].cp == int32_t(suffix[k]);
      if (same) return i + 1 + suffix.size();
    }
  }
  const size_t after_space = (c[i].cp == ' ' && i + 1 < n) ? i + 1 : i;
  auto run = [&](size_t j, auto&& in_class) {
    while (j < n && in_class(c[j].cls)) ++j;
    return j;
  };
  for (CharClass want : {CharClass::Letter, CharClass::Number}) {
    for (size_t j : {after_space, i}) {
      if (c[j].cls == want) return run(j, [want](CharClass k) { return k == want; });
    }
  }
  const auto other = [](CharClass k) { return k == CharClass::Other; };
  for (size_t j : {after_space, i})
    if (other(c[j].cls)) return run(j, other);
  // Whitespace: the run, less its last character when a non-space follows (\s+(?!\S)), else all of it.
  const size_t end = run(i, [](CharClass k) { return k == CharClass::Space; });
  return (end < n && end - i > 1) ? end - 1 : end;
}

// NFC of the well-formed runs of s; ill-formed bytes pass through.
std::string nfc(std::string_view s) {
  std::string out;
  size_t run_start = 0;
  auto flush = [&](size_t end) {
    if (end <= run_start) return;
    if (std::all_of(s.begin() + long(run_start), s.begin() + long(end), [](char ch) { return uint8_t(ch) < 0x80; })) {  // ASCII is NFC
      out.append(s, run_start, end - run_start);
      return;
    }
    size_t n = 0;
    uint8_t* r = u8_normalize(UNINORM_NFC, reinterpret_cast<const uint8_t*>(s.data()) + run_start, end - run_start, nullptr, &n);
    if (!r) fail("tokenizer: NFC normalization failed (out of memory)");
    out.append(reinterpret_cast<const char*>(r), n);
    std::free(r);
  };
  for (size_t i = 0; i < s.size();) {
    const Next c = next_char(s, i);
    if (c.cp < 0) {
      flush(i);
      out += s[i];
      run_start = i + 1;
    }
    i += c.len;
  }
  flush(s.size());
  return out;
}

// A component of the file as its error messages name it: its "type", else a short view of its JSON
// (a model object without a type holds the whole vocabulary: megabytes on one line).
std::string describe(const nlohmann::json& j) {
  if (j.is_null()) return "none";
  if (j.is_object() && j.contains("type") && j["type"].is_string()) return j["type"].get<std::string>();
  if (j.is_object()) return "without a \"type\"";
  const std::string text = j.dump();
  return text.size() <= 40 ? text : text.substr(0, 37) + "...";
}

}  // namespace

BpeTokenizer::BpeTokenizer(const std::string& path) {
  refuse_folder(path);
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open tokenizer file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not a tokenizer.json (", json_parse_failure(e), ")");
  }
  try {
    load(j, path);
  } catch (const nlohmann::json::exception& e) {  // a field of the wrong JSON type
    fail(path, ": ", e.what());
  }
}

void BpeTokenizer::load(const nlohmann::json& j, const std::string& path) {
  auto bad = [&](const std::string& what) { fail(path, ": ", what); };
  if (!j.is_object()) bad("not a tokenizer.json (expected a JSON object)");
  // Only what this class reproduces exactly.
  const nlohmann::json none;
  auto field = [&](const char* k) -> const nlohmann::json& { return j.contains(k) ? j[k] : none; };
  const auto& normalizer = field("normalizer");
  if (normalizer.is_object() && normalizer.value("type", "") == "NFC") nfc_ = true;
  else if (!normalizer.is_null()) bad("normalizer " + describe(normalizer) + " is not supported (NFC or none)");
  for (const char* k : {"pre_tokenizer", "decoder"}) {
    const auto& p = field(k);
    if (!p.is_object() || p.value("type", "") != "ByteLevel") bad(std::string(k) + " " + describe(p) + " is not supported (ByteLevel)");
    if (p.value("add_prefix_space", false)) bad(std::string(k) + " ByteLevel with add_prefix_space is not supported");
    if (!p.value("use_regex", true)) bad(std::string(k) + " ByteLevel without its regex is not supported");
  }
  const auto& model = field("model");
  if (!model.is_object() || model.value("type", "") != "BPE") bad("model " + describe(model) + " is not supported (BPE)");
  if (!model.value("continuing_subword_prefix", nlohmann::json()).is_null() || !model.value("end_of_word_suffix", nlohmann::json()).is_null() ||
      !model.value("dropout", nlohmann::json()).is_null() || model.value("ignore_merges", false) || model.value("byte_fallback", false))
    bad("BPE options beyond plain byte-level BPE (subword prefix or suffix, dropout, ignore_merges, byte_fallback) are not supported");
  if (!model.contains("vocab") || !model["vocab"].is_object()) bad("model.vocab must be an object of token -> id");
  if (!model.contains("merges") || !model["merges"].is_array()) bad("model.merges must be an array");

  auto define = [&](int64_t id, std::string bytes, const std::string& token) {
    if (id < 0 || id >= (int64_t(1) << 24)) bad("token '" + token + "' has id " + std::to_string(id) + ", outside 0..2^24");
    if (size_t(id) >= id_bytes_.size()) {
      id_bytes_.resize(size_t(id) + 1);
      id_known_.resize(size_t(id) + 1, 0);
    }
    id_bytes_[size_t(id)] = std::move(bytes);
    id_known_[size_t(id)] = 1;
  };
  for (auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) bad("model.vocab['" + token + "'] must be an integer id");
    define(id.get<int64_t>(), byte_level_bytes(token), token);
    vocab_[token] = int32_t(id.get<int64_t>());
  }
  int32_t rank = 0;
  for (auto& m : model["merges"]) {
    std::string key;
    if (m.is_string()) key = m.get<std::string>();
    else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) key = m[0].get<std::string>() + " " + m[1].get<std::string>();
    else bad("model.merges[" + std::to_string(rank) + "] must be \"left right\" or [left, right]");
    const size_t space = key.find(' ');
    if (space == std::string::npos || key.find(' ', space + 1) != std::string::npos)
      bad("model.merges[" + std::to_string(rank) + "] '" + key + "' is not two tokens");
    // As `tokenizers` loads them: both parts and what they merge into must be tokens.
    for (const std::string& t : {key.substr(0, space), key.substr(space + 1), key.substr(0, space) + key.substr(space + 1)})
      if (!vocab_.count(t)) bad("model.merges[" + std::to_string(rank) + "] '" + key + "': '" + t + "' is not in the vocabulary");
    merge_rank_.emplace(std::move(key), rank++);  // a repeated pair keeps its first rank
  }
  const auto& added = field("added_tokens");
  if (!added.is_null() && !added.is_array()) bad("added_tokens must be an array");
  if (added.is_array()) {
    for (auto& a : added) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") || !a["content"].is_string())
        bad("added_tokens entries need an integer id and a string content");
      const std::string content = a["content"].get<std::string>();
      if (content.empty()) bad("added token " + std::to_string(a["id"].get<int64_t>()) + " is empty");
      if (a.value("single_word", false) || a.value("lstrip", false) || a.value("rstrip", false))
        bad("added token '" + content + "': single_word, lstrip and rstrip are not supported");
      const bool special = a.value("special", false), normalized = a.value("normalized", !special);
      define(a["id"].get<int64_t>(), special ? std::string() : byte_level_bytes(content), content);
      const int32_t id = int32_t(a["id"].get<int64_t>());
      (normalized ? normalized_added_ : raw_added_).push_back({normalized && nfc_ ? nfc(content) : content, id});
      if (content == "<|endoftext|>") end_of_text_ = id;
    }
  }
  if (id_bytes_.empty()) bad("the vocabulary is empty");
  // Bytes that never occur in UTF-8 (0xC0, 0xC1, 0xF5..0xFF) may have no token: such input is refused.
  for (int b = 0; b < 256; ++b) byte_known_[size_t(b)] = vocab_.count(byte_chars().utf8[b]) > 0;
}

template <typename Piece>
void BpeTokenizer::split_added(std::string_view text, const std::vector<AddedToken>& tokens, std::vector<int32_t>& ids, Piece&& piece) {
  size_t from = 0;
  for (size_t i = 0; i < text.size();) {
    const AddedToken* best = nullptr;
    for (const auto& t : tokens)
      if (text.compare(i, t.text.size(), t.text) == 0 && (!best || t.text.size() > best->text.size())) best = &t;
    if (!best) {
      ++i;
      continue;
    }
    piece(text.substr(from, i - from));
    ids.push_back(best->id);
    i += best->text.size();
    from = i;
  }
  piece(text.substr(from));
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  split_added(text, raw_added_, ids, [&](std::string_view raw) {
    if (raw.empty()) return;
    const std::string normalized = nfc_ ? nfc(raw) : std::string(raw);
    split_added(normalized, normalized_added_, ids, [&](std::string_view p) { encode_piece(p, ids); });
  });
  return ids;
}

void BpeTokenizer::encode_piece(std::string_view s, std::vector<int32_t>& ids) const {
  if (s.empty()) return;
  const std::vector<Char> chars = decode_chars(s);
  for (size_t i = 0; i < chars.size();) {
    const size_t end = match_pretoken(chars, i);
    encode_word(s.substr(chars[i].begin, chars[end - 1].end - chars[i].begin), ids);
    i = end;
  }
}

// BPE over one pre-token: start from one symbol per byte, then merge the adjacent pair of lowest rank
// (leftmost among equals) until no pair is a merge; a heap keeps this n log n for long words.
void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  const ByteChars& bc = byte_chars();
  struct Symbol {
    std::string text;
    int prev, next;
  };
  for (char c : word) {
    const uint8_t b = uint8_t(c);
    const bool never_utf8 = b == 0xc0 || b == 0xc1 || b >= 0xf5;
    if (!byte_known_[b])
      fail("bpe tokenizer: the text has byte 0x", "0123456789abcdef"[b >> 4], "0123456789abcdef"[b & 15], ", which this vocabulary has no token for",
           never_utf8 ? " (no UTF-8 text holds it)" : "");
  }
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  for (size_t i = 0; i < word.size(); ++i) sym.push_back({bc.utf8[uint8_t(word[i])], int(i) - 1, i + 1 < word.size() ? int(i) + 1 : -1});
  struct Pair {
    int32_t rank;
    int left;
    std::string merged;  // what the pair made when queued; stale unless the left symbol and its neighbour still make it
    bool operator>(const Pair& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Pair, std::vector<Pair>, std::greater<Pair>> queue;
  std::string key;
  auto rank_of = [&](int l, int r) -> const int32_t* {
    key.assign(sym[size_t(l)].text).append(" ").append(sym[size_t(r)].text);
    auto it = merge_rank_.find(key);
    return it == merge_rank_.end() ? nullptr : &it->second;
  };
  auto consider = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    if (const int32_t* rank = rank_of(l, r)) queue.push({*rank, l, sym[size_t(l)].text + sym[size_t(r)].text});
  };
  for (size_t i = 0; i + 1 < sym.size(); ++i) consider(int(i), int(i) + 1);
  while (!queue.empty()) {
    const Pair p = queue.top();
    queue.pop();
    Symbol& l = sym[size_t(p.left)];
    if (l.text.empty() || l.next < 0) continue;
    Symbol& r = sym[size_t(l.next)];
    if (l.text.size() + r.text.size() != p.merged.size() || !rank_of(p.left, l.next) || l.text + r.text != p.merged) continue;
    l.text = p.merged;
    r.text.clear();  // gone
    l.next = r.next;
    if (r.next >= 0) sym[size_t(r.next)].prev = p.left;
    consider(l.prev, p.left);
    consider(p.left, l.next);
  }
  for (int i = sym.empty() ? -1 : 0; i >= 0; i = sym[size_t(i)].next) ids.push_back(vocab_.at(sym[size_t(i)].text));  // merges' results are tokens (checked at load)
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids) const {
  std::string s;
  for (int32_t id : ids) {
    if (id < 0 || size_t(id) >= id_bytes_.size() || !id_known_[size_t(id)]) fail("bpe tokenizer: token id ", id, " is not in the vocabulary");
    s += id_bytes_[size_t(id)];
  }
  return s;
}

}  // namespace skein
