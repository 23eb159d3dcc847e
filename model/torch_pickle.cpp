#include "model/torch_pickle.h"

#include <cstring>
#include <map>
#include <memory>

#include "common/error.h"

namespace skein {
namespace {

// The small object model of a state-dict pickle.
struct Obj;
using ObjPtr = std::shared_ptr<Obj>;
enum class Kind { None, Bool, Int, Float, Str, Tuple, List, Dict, Global, Storage, Tensor, Mark };

struct Obj {
  Kind kind = Kind::None;
  int64_t i = 0;
  double f = 0;
  std::string s;                                  // Str, Global ("module.name")
  std::vector<ObjPtr> items;                      // Tuple, List
  std::vector<std::pair<ObjPtr, ObjPtr>> dict;    // Dict
  PickledTensor tensor;                           // Storage (dtype/key/numel), Tensor
};

ObjPtr make(Kind k) { auto o = std::make_shared<Obj>(); o->kind = k; return o; }

const std::map<std::string, DType>& storage_types() {
  static const std::map<std::string, DType> m = {
      {"torch.FloatStorage", DType::F32}, {"torch.HalfStorage", DType::F16},
      {"torch.BFloat16Storage", DType::BF16}, {"torch.ByteStorage", DType::U8}};
  return m;
}

bool allowed_global(const std::string& g) {
  return g == "collections.OrderedDict" || g == "torch._utils._rebuild_tensor_v2" || storage_types().count(g) ||
         g == "torch.DoubleStorage" || g == "torch.LongStorage" || g == "torch.IntStorage" || g == "torch.CharStorage" ||
         g == "torch.ShortStorage" || g == "torch.BoolStorage";
}

class Unpickler {
 public:
  Unpickler(const uint8_t* d, size_t n, const std::string& label) : d_(d), n_(n), label_(label) {}

  ObjPtr run() {
    while (true) {
      uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;                      // PROTO
        case 0x95: take(8); break;                   // FRAME
        case '.': return pop();                      // STOP
        case '(': push(make(Kind::Mark)); break;     // MARK
        case 'N': push(make(Kind::None)); break;
        case 0x88: push_bool(true); break;           // NEWTRUE
        case 0x89: push_bool(false); break;          // NEWFALSE
        case 'J': push_int(int32_t(le(4))); break;   // BININT
        case 'K': push_int(int64_t(le(1))); break;   // BININT1
        case 'M': push_int(int64_t(le(2))); break;   // BININT2
        case 0x8a: {                                 // LONG1
          uint8_t len = u8();
          if (len > 8) bad("integer wider than 64 bits");
          const uint8_t* p = take(len);
          uint64_t v = 0;
          for (int k = 0; k < len; ++k) v |= uint64_t(p[k]) << (8 * k);
          if (len > 0 && len < 8 && (p[len - 1] & 0x80)) v |= ~uint64_t(0) << (8 * len);
          push_int(int64_t(v));
          break;
        }
        case 'G': {                                  // BINFLOAT, big-endian double
          const uint8_t* p = take(8);
          uint64_t v = 0;
          for (int k = 0; k < 8; ++k) v = (v << 8) | p[k];
          auto o = make(Kind::Float);
          std::memcpy(&o->f, &v, 8);
          push(o);
          break;
        }
        case 'X': push_str(take_str(le(4))); break;  // BINUNICODE
        case 0x8c: push_str(take_str(le(1))); break; // SHORT_BINUNICODE
        case 'c': {                                  // GLOBAL "module\nname\n"
          std::string mod = line(), name = line();
          push_global(mod + "." + name);
          break;
        }
        case 0x93: {                                 // STACK_GLOBAL
          auto name = pop(), mod = pop();
          if (name->kind != Kind::Str || mod->kind != Kind::Str) bad("STACK_GLOBAL needs two strings");
          push_global(mod->s + "." + name->s);
          break;
        }
        case 'q': memo_[le(1)] = top(); break;       // BINPUT
        case 'r': memo_[le(4)] = top(); break;       // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;  // MEMOIZE
        case 'h': push(memo_get(le(1))); break;      // BINGET
        case 'j': push(memo_get(le(4))); break;      // LONG_BINGET
        case ')': push(make(Kind::Tuple)); break;    // EMPTY_TUPLE
        case 0x85: case 0x86: case 0x87: {           // TUPLE1..3
          auto t = make(Kind::Tuple);
          int n = op - 0x84;
          t->items.resize(n);
          for (int k = n - 1; k >= 0; --k) t->items[k] = pop();
          push(t);
          break;
        }
        case 't': { auto t = make(Kind::Tuple); t->items = pop_to_mark(); push(t); break; }
        case ']': push(make(Kind::List)); break;     // EMPTY_LIST
        case 'l': { auto t = make(Kind::List); t->items = pop_to_mark(); push(t); break; }
        case 'a': { auto v = pop(); expect(top(), Kind::List)->items.push_back(v); break; }
        case 'e': { auto v = pop_to_mark(); auto& l = expect(top(), Kind::List)->items; l.insert(l.end(), v.begin(), v.end()); break; }
        case '}': push(make(Kind::Dict)); break;     // EMPTY_DICT
        case 's': { auto v = pop(), k = pop(); expect(top(), Kind::Dict)->dict.emplace_back(k, v); break; }
        case 'u': {                                  // SETITEMS
          auto kv = pop_to_mark();
          if (kv.size() % 2) bad("SETITEMS with an odd number of items");
          auto d = expect(top(), Kind::Dict);
          for (size_t k = 0; k < kv.size(); k += 2) d->dict.emplace_back(kv[k], kv[k + 1]);
          break;
        }
        case 'Q': persistent_load(); break;          // BINPERSID
        case 'R': reduce(); break;                   // REDUCE
        case 'b': {                                  // BUILD: only an OrderedDict's attribute dict (state_dict _metadata)
          auto state = pop();
          if (top()->kind != Kind::Dict) bad("BUILD on an object that is not a dict");
          (void)state;
          break;
        }
        default: bad("unsupported pickle opcode 0x" + hex(op));
      }
    }
  }

 private:
  [[noreturn]] void bad(const std::string& what) { fail(label_, ": data.pkl: ", what, " (at byte ", pos_, ")"); }
  static std::string hex(uint8_t v) { const char* h = "0123456789abcdef"; return {h[v >> 4], h[v & 15]}; }

  const uint8_t* take(size_t n) {
    if (n > n_ - pos_) bad("unexpected end of data");
    const uint8_t* p = d_ + pos_;
    pos_ += n;
    return p;
  }
  uint8_t u8() { return *take(1); }
  uint64_t le(int n) { const uint8_t* p = take(n); uint64_t v = 0; for (int k = 0; k < n; ++k) v |= uint64_t(p[k]) << (8 * k); return v; }
  std::string take_str(uint64_t n) { const uint8_t* p = take(n); return std::string(reinterpret_cast<const char*>(p), n); }
  std::string line() {
    std::string s;
    while (true) { char c = char(u8()); if (c == '\n') return s; s += c; if (s.size() > 256) bad("GLOBAL name too long"); }
  }

  void push(ObjPtr o) {
    if (stack_.size() > 1000000) bad("pickle stack too deep");
    stack_.push_back(std::move(o));
  }
  ObjPtr pop() { if (stack_.empty()) bad("stack underflow"); auto o = stack_.back(); stack_.pop_back(); return o; }
  ObjPtr top() { if (stack_.empty()) bad("stack underflow"); return stack_.back(); }
  ObjPtr expect(ObjPtr o, Kind k) { if (o->kind != k) bad("unexpected object type"); return o; }
  std::vector<ObjPtr> pop_to_mark() {
    std::vector<ObjPtr> out;
    while (true) {
      auto o = pop();
      if (o->kind == Kind::Mark) break;
      out.push_back(o);
    }
    return {out.rbegin(), out.rend()};
  }
  ObjPtr memo_get(uint64_t k) { auto it = memo_.find(k); if (it == memo_.end()) bad("memo key missing"); return it->second; }
  void push_bool(bool b) { auto o = make(Kind::Bool); o->i = b; push(o); }
  void push_int(int64_t v) { auto o = make(Kind::Int); o->i = v; push(o); }
  void push_str(std::string s) { auto o = make(Kind::Str); o->s = std::move(s); push(o); }
  void push_global(const std::string& g) {
    if (!allowed_global(g)) bad("refusing global '" + g + "': a state dict holds only tensors and containers");
    auto o = make(Kind::Global);
    o->s = g;
    push(o);
  }

  // ('storage', storage_type, key, location, numel)
  void persistent_load() {
    auto pid = pop();
    if (pid->kind != Kind::Tuple || pid->items.size() < 5 || pid->items[0]->kind != Kind::Str || pid->items[0]->s != "storage")
      bad("unknown persistent id");
    auto type = pid->items[1];
    auto key = pid->items[2];
    auto numel = pid->items[4];
    if (type->kind != Kind::Global || key->kind != Kind::Str || numel->kind != Kind::Int || numel->i < 0) bad("malformed storage reference");
    auto it = storage_types().find(type->s);
    if (it == storage_types().end()) bad("unsupported storage type " + type->s + " (expected fp32, fp16, bf16 or uint8)");
    auto o = make(Kind::Storage);
    o->tensor.dtype = it->second;
    o->tensor.storage_key = key->s;
    o->tensor.storage_numel = uint64_t(numel->i);
    push(o);
  }

  void reduce() {
    auto args = pop();
    auto fn = pop();
    if (fn->kind != Kind::Global || args->kind != Kind::Tuple) bad("REDUCE of a non-callable");
    if (fn->s == "collections.OrderedDict") { push(make(Kind::Dict)); return; }
    if (fn->s != "torch._utils._rebuild_tensor_v2") bad("refusing to call '" + fn->s + "'");
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    auto& a = args->items;
    if (a.size() < 4 || a[0]->kind != Kind::Storage || a[1]->kind != Kind::Int || a[2]->kind != Kind::Tuple || a[3]->kind != Kind::Tuple)
      bad("malformed _rebuild_tensor_v2 arguments");
    auto t = make(Kind::Tensor);
    t->tensor = a[0]->tensor;
    if (a[1]->i < 0) bad("negative storage offset");
    t->tensor.storage_offset = uint64_t(a[1]->i);
    for (auto& d : a[2]->items) { if (d->kind != Kind::Int || d->i < 0) bad("malformed tensor size"); t->tensor.shape.push_back(d->i); }
    for (auto& d : a[3]->items) { if (d->kind != Kind::Int || d->i < 0) bad("malformed tensor stride"); t->tensor.stride.push_back(d->i); }
    if (t->tensor.shape.size() != t->tensor.stride.size()) bad("tensor size and stride differ in rank");
    push(t);
  }

  const uint8_t* d_;
  size_t n_;
  size_t pos_ = 0;
  std::string label_;
  std::vector<ObjPtr> stack_;
  std::map<uint64_t, ObjPtr> memo_;
};

}  // namespace

std::vector<PickledTensor> read_state_dict_pickle(const uint8_t* data, size_t size, const std::string& label) {
  ObjPtr root = Unpickler(data, size, label).run();
  if (root->kind != Kind::Dict) fail(label, ": data.pkl does not hold a dict of tensors");
  std::vector<PickledTensor> out;
  for (auto& [k, v] : root->dict) {
    if (k->kind != Kind::Str) fail(label, ": data.pkl has a non-string key");
    if (v->kind != Kind::Tensor) continue;
    PickledTensor t = v->tensor;
    t.name = k->s;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace skein
