// The placement plan: which stage (node, device, precision) holds which of the model's n_layer + 1
// placement units (blocks 0..n_layer-1, then ln_out + head), and what each stage costs in memory. Built
// from the strategy and the checkpoint's header alone: no weight byte is read.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "coordinator/strategy.h"
#include "model/architecture.h"
#include "model/checkpoint.h"
#include "worker/engine.h"

namespace skein {

struct PlanLimits {
  std::map<std::string, std::string> node_aliases;  // alias -> host name
  std::set<std::string> known_nodes;                // when set, every node prefix must be one of these (or an alias)
  std::map<std::string, uint64_t> device_memory;    // "host:cuda:0", "cuda:0" or "cpu" -> bytes
  int slots = 1;                                    // request slots each stage keeps state for
  int tuned_states = 0;                             // start states each stage keeps beside them (a server's tuned states)
  int step_rows = 512;                              // rows one forward step carries at most ([scheduler] micro_batch_tokens)
};

struct PlanStage {
  StrategySegment segment;         // node resolved through the aliases
  int first_unit = 0, last_unit = 0;  // inclusive; unit n_layer is ln_out + head
  int streamed_units = 0;          // the last `streamed_units` units of the range stream (as officially counted)
  // Layers whose matrices stream: the streamed units minus the head (the official loader streams only
  // block matrices).
  std::vector<int> streamed_layers(int n_layer) const;
  // The streamed layers' bytes on the device at once: one on a CPU, two on a GPU (running, copying in).
  uint64_t streaming_bytes(int n_layer) const;
  uint64_t weight_bytes = 0;       // prepared weights kept resident (embedding table on the first stage)
  uint64_t streamed_bytes = 0;     // prepared weights of the streamed units (one unit in memory at a time)
  uint64_t state_bytes_per_slot = 0;
  uint64_t activation_bytes_per_token = 0;  // sent to the next stage (x, and v_first for v7); 0 on the last
  // What a step of PlanLimits::step_rows rows works in: its activations, the ops' scratch and the
  // head's logits, and on a GPU the products' scratch and cuBLAS workspaces.
  uint64_t working_bytes = 0;
};

struct Plan {
  ModelDims dims;
  int n_units = 0;
  int step_rows = 0;  // the step size its stages' working memory was counted for
  std::vector<PlanStage> stages;
};

// Units per segment exactly as the official package assigns them: {count, streamed} per segment.
std::vector<std::pair<int, int>> official_unit_assignment(const std::vector<StrategySegment>& segs, int n_units);

// Throws skein::Error("strategy: ...") for plans that cannot work: more segments than units, counts
// beyond the model, a segment left without units, an unknown node, or a device whose memory (when
// known) is too small for every stage it holds, with the numbers. Segments may share a device, as in the
// official guide's "cuda fp16i8 *1 -> cuda fp16" (two precisions on one GPU).
Plan make_plan(const std::vector<StrategySegment>& segs, const Checkpoint& ck, const ModelDims& dims, const PlanLimits& limits);

// What a stage keeps on its device: resident weights, the streamed layers in flight, state for every
// slot and tuned state, and the working memory of its largest step.
uint64_t device_bytes(const PlanStage& st, int n_layer, int slots, int tuned = 0);
// Throws skein::Error("strategy: ...") when `device_name` (the GPU that runs plan stage `stage`, as
// measured where it runs) has less than device_bytes free, with the stage's figures and the remedies.
void check_stage_fits(const Plan& p, size_t stage, int slots, uint64_t free_bytes, const std::string& device_name, int tuned = 0);

// What plan stages `stages` keep in their host's memory: a CPU stage's device_bytes, a GPU stage's
// streamed layers (pinned host copies).
uint64_t host_bytes(const Plan& p, const std::vector<size_t>& stages, int slots, int tuned = 0);
// Throws skein::Error("strategy: ...") when `host_name`, with `memory` bytes, cannot hold what
// `stages` (every stage it runs) keep there: make_plan checks only this host's unprefixed CPU stages,
// while a process runs node-prefixed ones here too, and cluster ranks share their host.
void check_host_fits(const Plan& p, const std::vector<size_t>& stages, int slots, uint64_t memory, const std::string& host_name, int tuned = 0);
uint64_t host_memory();  // this machine's physical memory

std::string plan_table(const Plan& p);
nlohmann::json plan_json(const Plan& p);

// The stages of a plan as the in-process engine runs them (CPU segments only in this build).
std::vector<StageSpec> local_stages(const Plan& p);

// Under mpirun: a strategy of one segment without a count ("cpu fp32") is spread over every worker rank
// (as the official grammar shares units between segments without counts); otherwise unchanged.
std::vector<StrategySegment> spread_over_workers(const std::vector<StrategySegment>& segs, int workers);

// Which rank runs each stage: ranks 1..N-1 are the workers, one stage each, in order; a node prefix
// must match the rank's host. Errors say what does not match (every rank computes the same answer, so
// every rank reports it).
std::vector<int> assign_stage_ranks(const Plan& p, const std::vector<std::string>& hosts);

}  // namespace skein
