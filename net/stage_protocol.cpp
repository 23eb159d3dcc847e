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
  explicit Reader(const std::string& s) : s_(s) {}
  template <typename T>
  T get() {
    if (sizeof(T) > s_.size() - pos_) fail("stage protocol: truncated control message");
    T v;
    std::memcpy(&v, s_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  template <typename T>
  std::vector<T> get_vec() {
    uint64_t n = get<uint64_t>();
    if (n > (s_.size() - pos_) / sizeof(T)) fail("stage protocol: truncated control message");
    std::vector<T> v(n);
    std::memcpy(v.data(), s_.data() + pos_, n * sizeof(T));
    pos_ += n * sizeof(T);
    return v;
  }

 private:
  const std::string& s_;
  size_t pos_ = 0;
};

}  // namespace

std::string ControlMessage::encode() const {
  std::string s;
  put(s, op);
  put(s, step);
  put_vec(s, entries);
  put_vec(s, tokens);
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
  m.slot = r.get<int32_t>();
  m.slot2 = r.get<int32_t>();
  m.state = r.get_vec<float>();
  auto b = r.get_vec<char>();
  m.blob.assign(b.begin(), b.end());
  return m;
}

}  // namespace skein
