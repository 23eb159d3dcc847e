#include "coordinator/placement.h"

#include <unistd.h>

#include <cstdio>
#include <sstream>

#include "common/error.h"
#include "kernels/cuda/product_memory.h"
#include "model/rwkv_model.h"
#include "model/weights.h"

namespace skein {

std::vector<int> PlanStage::streamed_layers(int n_layer) const {
  std::vector<int> out;
  for (int u = last_unit - streamed_units + 1; streamed_units > 0 && u <= last_unit; ++u)
    if (u < n_layer) out.push_back(u);
  return out;
}

std::vector<std::pair<int, int>> official_unit_assignment(const std::vector<StrategySegment>& segs, int n_units) {
  // A transcription of rwkv/model.py's "Compute strategy" block, quirks included.
  const size_t n = segs.size();
  std::vector<int> plan(n, 0);
  int stream_i = -1, stream_count = 0, allocated = 0, free_slots = 0;
  for (size_t i = 0; i < n; ++i) {
    if (segs[i].count) {
      plan[i] = *segs[i].count;
      if (segs[i].stream) stream_i = int(i);
      allocated += plan[i];
      if (allocated >= n_units) {
        plan[i] += n_units - allocated;
        break;
      }
    } else {
      ++free_slots;
    }
  }
  if (stream_i < 0) {
    if (free_slots > 0 && n_units > allocated)
      for (size_t i = 0; i < n; ++i)
        if (plan[i] == 0 && free_slots > 0) {  // officially a ZeroDivisionError once an explicit *0 used the last slot
          plan[i] = (n_units - allocated) / free_slots;
          allocated += plan[i];
          --free_slots;
        }
    if (n_units > allocated) plan[n - 1] += n_units - allocated;
  } else if (n_units > allocated) {
    stream_count = n_units - allocated;
    plan[size_t(stream_i)] += stream_count;
  }
  std::vector<std::pair<int, int>> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = {plan[i], int(i) == stream_i ? stream_count : 0};
  return out;
}

namespace {

std::string gib(uint64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(1ull << 30));
  return buf;
}

std::string human(uint64_t b) {
  char buf[32];
  if (b < (1u << 10)) std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  else if (b < (1u << 20)) std::snprintf(buf, sizeof buf, "%.1f KiB", double(b) / 1024.0);
  else if (b < (1u << 30)) std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / double(1 << 20));
  else std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(1u << 30));
  return buf;
}

int unit_of(const std::string& name, int n_layer) {
  if (name.rfind("blocks.", 0) == 0) return std::stoi(name.substr(7));
  if (name.rfind("ln_out.", 0) == 0 || name.rfind("head.", 0) == 0) return n_layer;
  return 0;  // emb.weight: looked up on the first stage
}

}  // namespace

uint64_t PlanStage::streaming_bytes(int n_layer) const {
  const auto sl = streamed_layers(n_layer);
  const uint64_t one = sl.empty() ? 0 : streamed_bytes / uint64_t(sl.size());
  return one * (segment.device.kind == DeviceSpec::Cuda ? 2 : 1);  // a GPU's: the one running, the one being copied in
}

namespace {
uint64_t states_kept(int slots, int tuned) { return uint64_t(std::max(1, slots)) + uint64_t(std::max(0, tuned)); }
// "64 slots", or "64 slots and 2 tuned states": what the state bytes of an error are for.
std::string states_text(int slots, int tuned) {
  return std::to_string(std::max(1, slots)) + " slots" + (tuned > 0 ? " and " + std::to_string(tuned) + (tuned == 1 ? " tuned state" : " tuned states") : "");
}
}  // namespace

uint64_t device_bytes(const PlanStage& st, int n_layer, int slots, int tuned) {
  return st.weight_bytes + st.streaming_bytes(n_layer) + st.state_bytes_per_slot * states_kept(slots, tuned) + st.working_bytes;
}

namespace {
// A step of `rows` rows on the stage's device: x and v_first (the stage's own and, on a cluster rank,
// the ones it receives), the model's scratch, and on a GPU what the products and sampling add.
uint64_t step_working_bytes(const PlanStage& st, const ModelDims& d, int rows) {
  const uint64_t R = uint64_t(rows), C = uint64_t(d.n_embd), V = uint64_t(d.vocab);
  const bool layers = st.first_unit < d.n_layer, head = st.last_unit == d.n_layer;
  uint64_t bytes = 4 * R * C * sizeof(float) + RwkvModel::scratch_bytes(d, rows, layers, head);
  if (st.segment.device.kind == DeviceSpec::Cuda) {
    bytes += cuda::kProductLibraryBytes + cuda::product_scratch_bytes(int64_t(R), d.n_embd, d.dim_ffn, st.segment.i8);
    if (head) bytes += 2 * R * V * sizeof(float);  // the sampler's probabilities (its buffer doubles as it grows)
  }
  return bytes;
}
}  // namespace

void check_stage_fits(const Plan& p, size_t stage, int slots, uint64_t free_bytes, const std::string& device_name, int tuned) {
  const PlanStage& st = p.stages.at(stage);
  const uint64_t need = device_bytes(st, p.dims.n_layer, slots, tuned);
  if (need <= free_bytes) return;
  const int last_layer = std::min(st.last_unit, p.dims.n_layer - 1);
  std::string layers = st.first_unit > last_layer ? "the head" : "layers " + std::to_string(st.first_unit) + "-" + std::to_string(last_layer);
  if (st.last_unit == p.dims.n_layer && st.first_unit <= last_layer) layers += " + head";
  fail("strategy: stage ", stage, " (", layers, ", \"", format_segment(st.segment), "\") needs ", gib(need), " on ", device_name, " but it has ",
       gib(free_bytes), " free: ", gib(st.weight_bytes), " of weights, ", gib(st.streaming_bytes(p.dims.n_layer)), " of streamed layers in flight, ",
       gib(st.state_bytes_per_slot * states_kept(slots, tuned)), " of state for ", states_text(slots, tuned), ", ", gib(st.working_bytes),
       " of working memory for steps of ", p.step_rows, " rows; use an i8 format, stream layers (*N+), fewer slots, smaller micro-batches or more stages");
}

uint64_t host_memory() { return uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE)); }

namespace {
// One stage's share of its host's memory: a CPU stage's device_bytes, a GPU stage's pinned streamed layers.
uint64_t stage_host_bytes(const PlanStage& st, int n_layer, int slots, int tuned) {
  return st.segment.device.kind == DeviceSpec::Cuda ? st.streamed_bytes : device_bytes(st, n_layer, slots, tuned);
}
}  // namespace

uint64_t host_bytes(const Plan& p, const std::vector<size_t>& stages, int slots, int tuned) {
  uint64_t bytes = 0;
  for (size_t k : stages) bytes += stage_host_bytes(p.stages.at(k), p.dims.n_layer, slots, tuned);
  return bytes;
}

void check_host_fits(const Plan& p, const std::vector<size_t>& stages, int slots, uint64_t memory, const std::string& host_name, int tuned) {
  const uint64_t need = host_bytes(p, stages, slots, tuned);
  if (need <= memory) return;
  std::string list;
  for (size_t k : stages) list += (list.empty() ? "" : ", ") + std::to_string(k);
  fail("strategy: the stages on ", host_name, " (", list, ") need ", gib(need), " of its memory (CPU stages' weights, streamed layer, state for ",
       states_text(slots, tuned), " and working memory for steps of ", p.step_rows, " rows; GPU stages' streamed layers) but it has ", gib(memory),
       "; use an i8 format, stream layers (*N+), fewer slots, smaller micro-batches or another host");
}

Plan make_plan(const std::vector<StrategySegment>& segs_in, const Checkpoint& ck, const ModelDims& dims, const PlanLimits& limits) {
  Plan plan;
  plan.dims = dims;
  plan.n_units = dims.n_layer + 1;
  plan.step_rows = std::max(1, limits.step_rows);
  std::vector<StrategySegment> segs = segs_in;
  auto where = [](const StrategySegment& s) { return "segment \"" + format_segment(s) + "\" (column " + std::to_string(s.column) + ")"; };

  if (int(segs.size()) > plan.n_units)
    fail("strategy: ", segs.size(), " segments but the model has only ", plan.n_units, " placement units (", dims.n_layer, " layers + head)");
  int explicit_total = 0, streaming = 0;
  for (auto& s : segs) {
    // Officially a *0 segment takes the share of the first segment without a count (a quirk of the
    // strategy block), so the segment meant to hold the layers would get none.
    if (s.count == 0 && !s.stream)
      fail("strategy: ", where(s), " places no layers: leave the segment out, or write *0+ to stream all of its layers from host memory");
    if (s.count) explicit_total += *s.count;
    streaming += s.stream;
  }
  if (streaming > 1) fail("strategy: only one segment may stream its layers (*N+), found ", streaming);
  if (explicit_total > plan.n_units)
    fail("strategy: segments ask for ", explicit_total, " units but the model has only ", plan.n_units, " (", dims.n_layer, " layers + head)");

  // Nodes: aliases resolve to host names; unknown names are refused when the hosts are known.
  for (auto& s : segs) {
    if (s.node.empty()) continue;
    if (auto a = limits.node_aliases.find(s.node); a != limits.node_aliases.end()) s.node = a->second;
    else if (!limits.known_nodes.empty() && !limits.known_nodes.count(s.node))
      fail("strategy: unknown node '", s.node, "' in ", where(s), "; known: ",
           [&] { std::string k; for (auto& n : limits.known_nodes) k += (k.empty() ? "" : ", ") + n; for (auto& [a, h] : limits.node_aliases) k += ", " + a; return k; }());
  }

  auto units = official_unit_assignment(segs, plan.n_units);
  int next = 0;
  for (size_t i = 0; i < segs.size(); ++i) {
    auto [count, streamed] = units[i];
    if (count <= 0 && !(segs[i].stream && segs[i].count == 0))
      fail("strategy: ", where(segs[i]), " gets no layers (the units before it already cover the model)");
    if (count <= 0) continue;
    PlanStage st;
    st.segment = segs[i];
    st.first_unit = next;
    st.last_unit = next + count - 1;
    st.streamed_units = streamed;
    next += count;
    plan.stages.push_back(st);
  }

  // Memory per stage from tensor headers.
  const uint64_t per_layer_state = dims.state_floats_per_layer() * sizeof(float);
  for (size_t k = 0; k < plan.stages.size(); ++k) {
    PlanStage& st = plan.stages[k];
    int layers = std::min(st.last_unit, dims.n_layer - 1) - st.first_unit + 1;
    st.state_bytes_per_slot = uint64_t(std::max(0, layers)) * per_layer_state;
    bool last = k + 1 == plan.stages.size();
    st.activation_bytes_per_token = last ? 0 : uint64_t(dims.n_embd) * sizeof(float) * (dims.arch == Arch::V7 ? 2 : 1);
    st.working_bytes = step_working_bytes(st, dims, plan.step_rows);
  }
  for (auto& [name, t] : ck.tensors()) {
    int u = unit_of(name, dims.n_layer);
    for (auto& st : plan.stages) {
      if (u < st.first_unit || u > st.last_unit) continue;
      uint64_t b = prepared_tensor_bytes(t, dims, WeightFormat{st.segment.dtype, st.segment.i8});
      if (u > st.last_unit - st.streamed_units && name.rfind("blocks.", 0) == 0) st.streamed_bytes += b;
      else st.weight_bytes += b;
    }
  }

  // Fit: per GPU, what its stages keep there (device_bytes); per host's memory ("cpu"), what its
  // stages keep there (the rule host_bytes sums). Memory is known from the limits ("host:device" or
  // "device") or, for this host's CPU, from the OS.
  std::map<std::pair<std::string, std::string>, uint64_t> need;
  for (auto& st : plan.stages) {
    if (st.segment.device.kind == DeviceSpec::Cuda) need[{st.segment.node, st.segment.device.str()}] += device_bytes(st, dims.n_layer, limits.slots, limits.tuned_states);
    need[{st.segment.node, "cpu"}] += stage_host_bytes(st, dims.n_layer, limits.slots, limits.tuned_states);  // a GPU stage's streamed layers too
  }
  std::map<std::string, uint64_t> memory;  // limits.device_memory, node aliases turned into the hosts they name
  for (auto& [key, bytes] : limits.device_memory) {
    const auto colon = key.find(':');
    const auto alias = colon == std::string::npos ? limits.node_aliases.end() : limits.node_aliases.find(key.substr(0, colon));
    memory[alias == limits.node_aliases.end() ? key : alias->second + key.substr(colon)] = bytes;
  }
  for (auto& [where_key, bytes] : need) {
    auto& [node, dev] = where_key;
    uint64_t have = 0;
    if (auto a = memory.find(node + ":" + dev); !node.empty() && a != memory.end()) have = a->second;
    else if (auto b = memory.find(dev); b != memory.end()) have = b->second;
    else if (dev == "cpu" && node.empty()) have = host_memory();
    if (have && bytes > have)
      fail("strategy: the plan does not fit: ", node.empty() ? "" : node + ":", dev, " needs ", gib(bytes), " (weights, one streamed layer, state for ",
           states_text(limits.slots, limits.tuned_states), " and working memory for steps of ", plan.step_rows, " rows) but has ", gib(have));
  }
  return plan;
}

std::string plan_table(const Plan& p) {
  std::ostringstream os;
  os << "model: " << arch_name(p.dims.arch) << ", " << p.dims.n_layer << " layers + head = " << p.n_units << " units; working memory for steps of "
     << p.step_rows << " rows\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-5s %-22s %-8s %-9s %-12s %12s %12s %12s %10s %12s\n", "stage", "device", "dtype", "units", "streamed",
                "weights", "streamed wt", "state/slot", "act/token", "working");
  os << line;
  for (size_t i = 0; i < p.stages.size(); ++i) {
    const PlanStage& s = p.stages[i];
    std::string dev = (s.segment.node.empty() ? "" : s.segment.node + ":") + s.segment.device.str();
    std::string dt = std::string(dtype_name(s.segment.dtype)) + (s.segment.i8 ? "i8" : "");
    std::string units = std::to_string(s.first_unit) + "-" + std::to_string(s.last_unit) + (s.last_unit == p.dims.n_layer ? "H" : "");
    auto sl = s.streamed_layers(p.dims.n_layer);
    std::string str = sl.empty() ? "-" : std::to_string(sl.front()) + "-" + std::to_string(sl.back());
    std::snprintf(line, sizeof line, "%-5zu %-22s %-8s %-9s %-12s %12s %12s %12s %10s %12s\n", i, dev.c_str(), dt.c_str(), units.c_str(),
                  str.c_str(), human(s.weight_bytes).c_str(), human(s.streamed_bytes).c_str(), human(s.state_bytes_per_slot).c_str(),
                  human(s.activation_bytes_per_token).c_str(), human(s.working_bytes).c_str());
    os << line;
  }
  return os.str();
}

nlohmann::json plan_json(const Plan& p) {
  nlohmann::json stages = nlohmann::json::array();
  for (auto& s : p.stages) {
    nlohmann::json streamed = s.streamed_layers(p.dims.n_layer);
    stages.push_back({{"node", s.segment.node},
                      {"device", s.segment.device.str()},
                      {"dtype", dtype_name(s.segment.dtype)},
                      {"quant", s.segment.i8 ? "i8" : "none"},
                      {"first_unit", s.first_unit},
                      {"last_unit", s.last_unit},
                      {"streamed_units", streamed},
                      {"weight_bytes", s.weight_bytes},
                      {"streamed_weight_bytes", s.streamed_bytes},
                      {"state_bytes_per_slot", s.state_bytes_per_slot},
                      {"activation_bytes_per_token", s.activation_bytes_per_token},
                      {"working_bytes", s.working_bytes}});
  }
  return {{"arch", arch_name(p.dims.arch)}, {"n_layer", p.dims.n_layer}, {"n_units", p.n_units}, {"step_rows", p.step_rows}, {"stages", stages}};
}

std::vector<StrategySegment> spread_over_workers(const std::vector<StrategySegment>& segs, int workers) {
  if (segs.size() == 1 && !segs[0].count && workers > 1) return std::vector<StrategySegment>(size_t(workers), segs[0]);
  return segs;
}

std::vector<int> assign_stage_ranks(const Plan& p, const std::vector<std::string>& hosts) {
  const int workers = int(hosts.size()) - 1;
  if (workers < 1) fail("cluster: mpirun started 1 rank; a cluster needs the coordinator plus at least one stage rank");
  if (int(p.stages.size()) != workers)
    fail("cluster: the strategy has ", p.stages.size(), " stages but mpirun started ", workers, " stage ranks (ranks 1..", workers,
         "); start ", p.stages.size() + 1, " ranks or change the strategy");
  // Pinned stages first, so an unpinned stage never takes the only rank a pinned one could use.
  std::vector<int> ranks(p.stages.size(), -1);
  std::vector<bool> used(hosts.size(), false);
  for (bool pinned : {true, false})
    for (size_t k = 0; k < p.stages.size(); ++k) {
      const StrategySegment& seg = p.stages[k].segment;
      if (seg.node.empty() == pinned) continue;
      for (int r = 1; r <= workers && ranks[k] < 0; ++r)
        if (!used[size_t(r)] && (seg.node.empty() || hosts[size_t(r)] == seg.node)) ranks[k] = r;
      if (ranks[k] < 0) {
        std::string list;
        for (int r = 1; r <= workers; ++r) list += (r > 1 ? ", " : "") + std::to_string(r) + "=" + hosts[size_t(r)];
        fail("cluster: segment \"", format_segment(seg), "\" needs a free rank on node '", seg.node, "' (ranks: ", list, ")");
      }
      used[size_t(ranks[k])] = true;
    }
  return ranks;
}

std::vector<StageSpec> local_stages(const Plan& p) {
  std::vector<StageSpec> out;
  for (size_t i = 0; i < p.stages.size(); ++i) {
    const PlanStage& s = p.stages[i];
    StageSpec spec;
    if (s.segment.device.kind == DeviceSpec::Cuda) {
      spec.cuda_device = s.segment.device.index;
    }
    spec.first_layer = s.first_unit;
    spec.last_layer = std::min(s.last_unit + 1, p.dims.n_layer);
    spec.embedding = i == 0;
    spec.head = s.last_unit == p.dims.n_layer;
    spec.format = WeightFormat{s.segment.dtype, s.segment.i8};
    for (int l : s.streamed_layers(p.dims.n_layer)) spec.streamed.insert(l);
    out.push_back(spec);
  }
  return out;
}

}  // namespace skein
