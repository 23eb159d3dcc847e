#include "model/tokenizer.h"

#include <charconv>
#include <fstream>

#include "common/error.h"
#include "common/refuse_folder.h"
#include "model/bpe_tokenizer.h"

namespace skein {

std::string generated_bytes(const Tokenizer& tok, std::span<const int32_t> ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    try {
      out += tok.decode(ids.subspan(i, 1));
    } catch (const Error&) {  // no bytes for this id
    }
  }
  return out;
}

std::vector<int32_t> ByteTokenizer::encode(std::string_view bytes) const {
  std::vector<int32_t> ids;
  ids.reserve(bytes.size());
  for (unsigned char c : bytes) ids.push_back(int32_t(c));
  return ids;
}

std::string ByteTokenizer::decode(std::span<const int32_t> ids) const {
  std::string s;
  for (int32_t id : ids) {
    if (id < 0 || id > 255) fail("byte tokenizer: token id ", id, " is not a byte");
    s += char(id);
  }
  return s;
}

namespace {

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) out += char(cp);
  else if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); out += char(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) { out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
  else { out += char(0xF0 | (cp >> 18)); out += char(0x80 | ((cp >> 12) & 0x3F)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Parses a Python str or bytes literal ('...', "...", b'...', b"...") starting at s[pos]; returns its
// UTF-8 bytes and advances pos past the closing quote.
std::string parse_py_literal(const std::string& s, size_t& pos, const std::string& where) {
  bool is_bytes = false;
  if (pos < s.size() && s[pos] == 'b') { is_bytes = true; ++pos; }
  if (pos >= s.size() || (s[pos] != '\'' && s[pos] != '"')) fail(where, ": expected a quoted literal");
  char q = s[pos++];
  std::string out;
  while (true) {
    if (pos >= s.size()) fail(where, ": unterminated literal");
    char c = s[pos++];
    if (c == q) break;
    if (c != '\\') { out += c; continue; }
    if (pos >= s.size()) fail(where, ": dangling backslash");
    char e = s[pos++];
    auto hex_n = [&](int n) {
      uint32_t v = 0;
      for (int i = 0; i < n; ++i) {
        int h = pos < s.size() ? hexval(s[pos]) : -1;
        if (h < 0) fail(where, ": bad hex escape");
        v = v * 16 + uint32_t(h);
        ++pos;
      }
      return v;
    };
    switch (e) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'x': {
        uint32_t v = hex_n(2);
        if (is_bytes) out += char(v);
        else append_utf8(out, v);
        break;
      }
      case 'u':
      case 'U': {
        if (is_bytes) fail(where, ": \\", e, " in bytes literal");
        const size_t escape = pos - 2;
        const uint32_t cp = hex_n(e == 'u' ? 4 : 8);
        // Python's str.encode("utf-8") refuses surrogates, and no code point lies beyond U+10FFFF.
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) fail(where, ": ", s.substr(escape, pos - escape), " is not a Unicode scalar value (UTF-8 cannot hold it)");
        append_utf8(out, cp);
        break;
      }
      default: {
        if (e < '0' || e > '7') fail(where, ": unknown escape \\", e);
        uint32_t v = uint32_t(e - '0');  // octal: up to three digits, as Python reads them
        for (int i = 0; i < 2 && pos < s.size() && s[pos] >= '0' && s[pos] <= '7'; ++i) v = v * 8 + uint32_t(s[pos++] - '0');
        if (is_bytes && v > 0xFF) fail(where, ": octal escape of ", v, " in bytes literal is beyond 0o377");
        if (is_bytes) out += char(v);
        else append_utf8(out, v);
      }
    }
  }
  return out;
}

}  // namespace

WorldTokenizer::WorldTokenizer(const std::string& path) {
  refuse_folder(path);
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open vocabulary file");
  std::string line;
  int lineno = 0;
  node_token_.push_back(-1);  // root
  while (std::getline(f, line)) {
    ++lineno;
    if (line.empty()) continue;
    std::string where = path + ":" + std::to_string(lineno);
    size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0) fail(where, ": expected '<id> <literal> <length>'");
    const auto whole_number = [&](std::string_view text, const char* what) {  // digits only: "1 extra" is no length
      long v = -1;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc() || end != text.data() + text.size() || text.empty() || v < 0) fail(where, ": bad ", what, " '", text, "'");
      return v;
    };
    const long id = whole_number(std::string_view(line).substr(0, sp), "token id");
    if (id <= 0 || id > (1 << 20)) fail(where, ": token id ", id, " out of range");
    size_t pos = line.find_first_not_of(' ', sp);  // the official reader eval()s the middle, which skips spaces
    if (pos == std::string::npos) pos = line.size();
    std::string bytes = parse_py_literal(line, pos, where);
    if (bytes.empty()) fail(where, ": empty token");
    std::string_view rest = std::string_view(line).substr(pos);
    while (!rest.empty() && (rest.back() == '\r' || rest.back() == ' ')) rest.remove_suffix(1);
    if (rest.empty() || rest.front() != ' ') fail(where, ": expected ' <length>' after the literal");
    const long len = whole_number(rest.substr(rest.find_first_not_of(' ')), "length field");
    if (len != long(bytes.size())) fail(where, ": token is ", bytes.size(), " bytes but the length field says ", len);
    if (size_t(id) >= tokens_.size()) { tokens_.resize(size_t(id) + 1); present_.resize(size_t(id) + 1, false); }
    if (present_[size_t(id)]) fail(where, ": duplicate token id ", id);
    tokens_[size_t(id)] = bytes;
    present_[size_t(id)] = true;
    int32_t node = 0;
    for (unsigned char c : bytes) {
      uint64_t key = (uint64_t(node) << 8) | c;
      auto it = children_.find(key);
      if (it == children_.end()) {
        int32_t child = int32_t(node_token_.size());
        node_token_.push_back(-1);
        children_.emplace(key, child);
        node = child;
      } else {
        node = it->second;
      }
    }
    node_token_[size_t(node)] = int32_t(id);
  }
  if (tokens_.empty()) fail(path, ": vocabulary file holds no tokens");
  for (int b = 0; b < 256; ++b) {
    auto it = children_.find(uint64_t(b));
    if (it == children_.end() || node_token_[size_t(it->second)] < 0)
      fail(path, ": vocabulary lacks the single byte 0x", "0123456789abcdef"[b >> 4], "0123456789abcdef"[b & 15], ", so some text cannot be encoded");
  }
}

std::vector<int32_t> WorldTokenizer::encode(std::string_view s) const {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < s.size()) {
    int32_t node = 0, best = -1;
    size_t best_len = 0;
    for (size_t j = i; j < s.size(); ++j) {
      auto it = children_.find((uint64_t(node) << 8) | uint8_t(s[j]));
      if (it == children_.end()) break;
      node = it->second;
      if (node_token_[size_t(node)] >= 0) { best = node_token_[size_t(node)]; best_len = j - i + 1; }
    }
    ids.push_back(best);  // every single byte is a token, so best is set
    i += best_len;
  }
  return ids;
}

std::string WorldTokenizer::decode(std::span<const int32_t> ids) const {
  std::string s;
  for (int32_t id : ids) {
    if (id < 0 || size_t(id) >= tokens_.size() || !present_[size_t(id)]) fail("world tokenizer: token id ", id, " has no text");
    s += tokens_[size_t(id)];
  }
  return s;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec == "bytes") return std::make_unique<ByteTokenizer>();
  if (spec.rfind("world:", 0) == 0) return std::make_unique<WorldTokenizer>(spec.substr(6));
  if (spec.rfind("bpe:", 0) == 0) return std::make_unique<BpeTokenizer>(spec.substr(4));
  fail("tokenizer: unknown spec '", spec, "' (expected 'bytes', 'world:PATH' or 'bpe:PATH')");
}

namespace {
// Length of the UTF-8 sequence a lead byte starts, 0 if it cannot start one.
int utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}
// Whether bytes [p, p+n) form one valid UTF-8 character (no overlongs, surrogates or > U+10FFFF).
bool utf8_valid_prefix(const unsigned char* p, size_t avail, int n, bool& complete) {
  complete = false;
  for (int k = 1; k < n && size_t(k) < avail; ++k) {
    unsigned char c = p[k];
    unsigned char lo = 0x80, hi = 0xBF;
    if (k == 1) {
      if (p[0] == 0xE0) lo = 0xA0;
      else if (p[0] == 0xED) hi = 0x9F;
      else if (p[0] == 0xF0) lo = 0x90;
      else if (p[0] == 0xF4) hi = 0x8F;
    }
    if (c < lo || c > hi) return false;
  }
  complete = avail >= size_t(n);
  return true;
}
}  // namespace

std::string Utf8Stream::push(std::string_view bytes) {
  held_.append(bytes);
  std::string out;
  size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(held_.data());
  while (i < held_.size()) {
    int n = utf8_len(p[i]);
    if (n == 0) { out += "\xEF\xBF\xBD"; ++i; continue; }
    bool complete;
    if (!utf8_valid_prefix(p + i, held_.size() - i, n, complete)) { out += "\xEF\xBF\xBD"; ++i; continue; }
    if (!complete) break;  // wait for the rest of this character
    out.append(held_, i, size_t(n));
    i += size_t(n);
  }
  held_.erase(0, i);
  return out;
}

std::string Utf8Stream::finish() {
  std::string out = held_.empty() ? "" : "\xEF\xBF\xBD";
  held_.clear();
  return out;
}

bool is_utf8(std::string_view bytes) {
  Utf8Stream u;
  return u.push(bytes) == bytes && u.pending() == 0;
}

}  // namespace skein
