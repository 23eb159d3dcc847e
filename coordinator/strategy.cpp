#include "coordinator/strategy.h"

#include <cctype>

#include "common/error.h"

namespace skein {

namespace {

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}

  std::vector<StrategySegment> run() {
    std::vector<StrategySegment> out;
    if (s_.find_first_not_of(' ') == std::string::npos) bad("expected a segment such as \"cpu fp32\"");
    while (true) {
      skip_spaces();
      out.push_back(segment());
      skip_spaces();
      if (pos_ == s_.size()) break;
      if (s_.compare(pos_, 2, "->") != 0) bad("expected \"->\" or the end of the strategy");
      pos_ += 2;
    }
    return out;
  }

 private:
  [[noreturn]] void bad(const std::string& what) {
    std::string w = pos_ < s_.size() ? word() : "";
    std::string got = !w.empty()          ? "\"" + w + "\""
                      : pos_ >= s_.size() ? "the end of the string"
                      : s_[pos_] == ' '   ? "a space"
                                          : "\"" + s_.substr(pos_, 2) + "\"";
    fail("strategy: ", what, " at column ", pos_ + 1, ", got ", got);
  }
  void skip_spaces() {
    while (pos_ < s_.size() && s_[pos_] == ' ') ++pos_;
  }
  // A word: everything up to the next space or "->".
  std::string word() {
    size_t e = pos_;
    while (e < s_.size() && s_[e] != ' ' && s_.compare(e, 2, "->") != 0) ++e;
    return s_.substr(pos_, e - pos_);
  }

  StrategySegment segment() {
    StrategySegment seg;
    seg.column = int(pos_) + 1;
    std::string w = word();
    if (w.empty()) bad("expected a device (cpu, cuda or cuda:K)");
    if (!is_device(w)) {
      size_t colon = w.find(':');
      if (colon == std::string::npos) bad("expected a device (cpu, cuda or cuda:K)");
      std::string node = w.substr(0, colon);
      if (node.empty()) bad("empty node name before ':'");
      if (!is_node_name(node)) bad("node names use letters, digits, '-', '_' and '.'");
      seg.node = node;
      pos_ += colon + 1;
      w = word();
      // "cuda:abc" is far likelier a mistyped GPU than a host called "cuda".
      if (node == "cuda" && !is_device(w)) bad("expected a GPU index (0 to 999) after \"cuda:\"");
      if (!is_device(w)) bad("expected a device (cpu, cuda or cuda:K) after the node name");
    }
    if (w == "cpu") {
      seg.device = {DeviceSpec::Cpu, 0};
    } else {
      seg.device.kind = DeviceSpec::Cuda;
      seg.device.index = w.size() > 5 ? std::stoi(w.substr(5)) : 0;
    }
    pos_ += w.size();
    if (pos_ >= s_.size() || s_[pos_] != ' ') bad("expected one space then a dtype (fp32, fp16, bf16)");
    ++pos_;
    w = word();
    std::string base = w.size() >= 4 ? w.substr(0, 4) : w;
    if (base == "fp32") seg.dtype = DType::F32;
    else if (base == "fp16") seg.dtype = DType::F16;
    else if (base == "bf16") seg.dtype = DType::BF16;
    else bad("expected dtype fp32, fp16 or bf16");
    std::string suffix = w.substr(base.size());
    if (suffix == "i8") seg.i8 = true;
    else if (suffix == "i4" || suffix == "i3") { pos_ += 4; bad("quantization " + suffix + " is not supported (only i8)"); }
    else if (!suffix.empty()) { pos_ += 4; bad("expected \"i8\" or nothing after the dtype"); }
    pos_ += w.size();
    // Optional " *N" or " *N+": exactly one space before '*', as officially.
    if (pos_ + 1 < s_.size() && s_[pos_] == ' ' && s_[pos_ + 1] == '*') {
      pos_ += 2;
      size_t d = pos_;
      while (d < s_.size() && std::isdigit(static_cast<unsigned char>(s_[d]))) ++d;
      if (d == pos_) bad("expected a layer count after '*'");
      if (d - pos_ > 6) bad("layer count is too large");
      seg.count = std::stoi(s_.substr(pos_, d - pos_));
      pos_ = d;
      if (pos_ < s_.size() && s_[pos_] == '+') { seg.stream = true; ++pos_; }
    }
    if (pos_ < s_.size() && s_[pos_] != ' ' && s_.compare(pos_, 2, "->") != 0) bad("unexpected text after the segment");
    return seg;
  }

  static bool is_device(const std::string& w) {
    if (w == "cpu" || w == "cuda") return true;
    if (w.rfind("cuda:", 0) == 0 && w.size() > 5 && w.size() <= 8) {
      for (size_t i = 5; i < w.size(); ++i)
        if (!std::isdigit(static_cast<unsigned char>(w[i]))) return false;
      return true;
    }
    return false;
  }

  const std::string& s_;
  size_t pos_ = 0;
};

}  // namespace

std::vector<StrategySegment> parse_strategy(const std::string& s) { return Parser(s).run(); }

std::string format_segment(const StrategySegment& seg) {
  std::string out = (seg.node.empty() ? "" : seg.node + ":") + seg.device.str() + " " + dtype_name(seg.dtype) + (seg.i8 ? "i8" : "");
  if (seg.count) out += " *" + std::to_string(*seg.count) + (seg.stream ? "+" : "");
  return out;
}

bool is_node_name(const std::string& name) {
  if (name.empty()) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

std::string device_name(const std::string& key) {
  std::vector<StrategySegment> segs;
  if (key.find(' ') == std::string::npos) {  // a space would let a count or a second segment in
    try {
      segs = parse_strategy(key + " fp32");  // the strategy's own rules, so both spell devices alike
    } catch (const Error&) {
    }
  }
  if (segs.size() != 1) fail("'", key, "' is not a device: expected cpu, cuda or cuda:K, optionally after a node (node001:cuda:0)");
  return (segs[0].node.empty() ? "" : segs[0].node + ":") + segs[0].device.str();
}

}  // namespace skein
