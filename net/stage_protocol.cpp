#include "net/stage_protocol.h"

#include <cstring>

#include "common/error.h"

namespace skein {

namespace {

template <typename T>
void put(std::string& s, const T& v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <typename T>
void put_vec(std::string& s, const std::vector<T>& v) {
  put(s, uint64_t(v.size()));
  s.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

class Reader {
 public:
  explicit Reader(const std::string& s, const char* what = "control message") : s_(s), what_(what) {}
  bool done() const { return pos_ == s_.size(); }
  template <typename T>
  T get() {
    if (sizeof(T) > s_.size() - pos_) fail("stage protocol: truncated ", what_);
    T v;
    std::memcpy(&v, s_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  template <typename T>
  std::vector<T> get_vec() {
    uint64_t n = get<uint64_t>();
    if (n > (s_.size() - pos_) / sizeof(T)) fail("stage protocol: truncated ", what_);
    std::vector<T> v(n);
    std::memcpy(v.data(), s_.data() + pos_, n * sizeof(T));
    pos_ += n * sizeof(T);
    return v;
  }

 private:
  const std::string& s_;
  const char* what_;
  size_t pos_ = 0;
};

}  // namespace

std::string ControlMessage::encode() const {
  std::string s;
  put(s, op);
  put(s, step);
  put_vec(s, entries);
  put_vec(s, tokens);
  put_vec(s, targets);
  put_vec(s, allowed);
  put(s, slot);
  put(s, slot2);
  put_vec(s, state);
  put_vec(s, std::vector<char>(blob.begin(), blob.end()));
  return s;
}

ControlMessage ControlMessage::decode(const std::string& bytes) {
  Reader r(bytes);
  ControlMessage m;
  m.op = r.get<StageOp>();
  if (uint8_t(m.op) < 1 || uint8_t(m.op) > uint8_t(StageOp::Shutdown)) fail("stage protocol: unknown operation ", int(m.op));
  m.step = r.get<uint64_t>();
  m.entries = r.get_vec<StepEntry>();
  m.tokens = r.get_vec<int32_t>();
  m.targets = r.get_vec<int32_t>();
  m.allowed = r.get_vec<uint64_t>();
  m.slot = r.get<int32_t>();
  m.slot2 = r.get<int32_t>();
  m.state = r.get_vec<float>();
  auto b = r.get_vec<char>();
  m.blob.assign(b.begin(), b.end());
  return m;
}

// Per row: the token, then -1, or the alternatives' count, the token's log-probability and the
// alternatives as (token, log-probability) pairs.
std::string encode_sampled(const std::vector<SampledToken>& rows) {
  std::string s;
  s.reserve(rows.size() * 8);
  for (const SampledToken& t : rows) {
    put(s, t.token);
    put(s, int32_t(t.scored ? int32_t(t.top.size()) : -1));
    if (!t.scored) continue;
    put(s, t.logprob);
    for (const TokenLogprob& a : t.top) {
      put(s, a.token);
      put(s, a.logprob);
    }
  }
  return s;
}

std::vector<SampledToken> decode_sampled(const std::string& bytes, size_t rows) {
  Reader r(bytes, "sampled tokens");
  std::vector<SampledToken> out(rows);
  for (SampledToken& t : out) {
    t.token = r.get<int32_t>();
    const int32_t n = r.get<int32_t>();
    if (n < -1 || n > kMaxLogprobs) fail("stage protocol: ", n, " alternatives for a sampled token");
    if (n < 0) continue;
    t.scored = true;
    t.logprob = r.get<float>();
    for (int32_t i = 0; i < n; ++i) {
      TokenLogprob a;
      a.token = r.get<int32_t>();
      a.logprob = r.get<float>();
      t.top.push_back(a);
    }
  }
  if (!r.done()) fail("stage protocol: ", bytes.size(), " bytes for ", rows, " sampled tokens");
  return out;
}

}  // namespace skein
