// Strategy strings: the official rwkv grammar plus a node prefix.
//   strategy = segment ("->" segment)*
//   segment  = [NODE ":"] device " " dtype ["i8"] [" *" N ["+"]]
//   device   = "cpu" | "cuda" | "cuda:" K;  dtype = "fp32" | "fp16" | "bf16"
// Spaces are tolerated where the official regex tolerates them: around "->" and at both ends.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace skein {

struct DeviceSpec {
  enum Kind { Cpu, Cuda } kind = Cpu;
  int index = 0;  // cuda:K; plain "cuda" is cuda:0
  std::string str() const { return kind == Cpu ? "cpu" : "cuda:" + std::to_string(index); }
  bool operator==(const DeviceSpec&) const = default;
};

struct StrategySegment {
  std::string node;  // empty: any host
  DeviceSpec device;
  DType dtype = DType::F32;
  bool i8 = false;
  std::optional<int> count;  // *N
  bool stream = false;       // *N+
  int column = 1;            // where the segment starts in the string (1-based), for messages
};

// Throws skein::Error("strategy: <what> at column C, got \"...\"") on any deviation from the grammar.
std::vector<StrategySegment> parse_strategy(const std::string& s);

std::string format_segment(const StrategySegment& seg);

// A host name or alias as a strategy's NODE prefix may spell it: letters, digits, '-', '_' and '.'.
bool is_node_name(const std::string& name);

// "[NODE:]device" by the grammar above (a config's [devices] key), written as the planner looks it up:
// "cpu", "cuda:K" or "NODE:cuda:K" ("cuda" is "cuda:0"). Throws skein::Error("'KEY' is not a device: ...").
std::string device_name(const std::string& key);

}  // namespace skein
