// `skein plan`: the placement a strategy gives a model, from the checkpoint's header alone.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <map>

#include "common/error.h"
#include "coordinator/placement.h"
#include "model/architecture.h"
#include "tools/cli_support.h"
#include "tools/commands.h"
#include "worker/backend_factory.h"

namespace skein::cli {

namespace {
// What this machine's GPUs would hold (stages without a node prefix, or naming this host), each GPU's
// stages together against what it has free now: the check a run does before it loads, made ahead.
void print_local_gpus(const Plan& p, int slots, int tuned) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::map<int, uint64_t> need;
  for (auto& st : p.stages)
    if (st.segment.device.kind == DeviceSpec::Cuda && (st.segment.node.empty() || st.segment.node == host))
      need[st.segment.device.index] += device_bytes(st, p.dims.n_layer, slots, tuned);
  const auto gib = [](uint64_t b) { return double(b) / double(1ull << 30); };
  for (auto& [dev, bytes] : need) {
    if (const auto gpu = gpu_memory(dev))
      std::printf("%s: needs %.2f GiB of the %.2f GiB free: %s\n", gpu->name.c_str(), gib(bytes), gib(gpu->free_bytes),
                  bytes <= gpu->free_bytes ? "fits" : "does not fit");
    else
      std::printf("cuda:%d: needs %.2f GiB; not checked (no such GPU here, or a build without CUDA)\n", dev, gib(bytes));
  }
}
}  // namespace

void add_plan_command(CLI::App& app) {
  struct Opts {
    RunFlags run;
    bool json = false;
    int slots = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("plan", "Show which stage holds which layers, and what each stage costs");
  o->run.add(c, RunFlags::kIds);
  c->add_flag("--json", o->json, "print the plan as JSON (for launch scripts)");
  c->add_option("--slots", o->slots, "request slots per stage for the memory check (default: config, else 1)")->check(CLI::Range(1, 1 << 20));
  c->callback([o] {
    Config cfg = o->run.resolve();
    if (cfg.model.empty()) fail("plan: no model given (--model or [model] path in --config)");
    if (o->slots > 0) cfg.limits.slots = o->slots;
    auto ck = open_checkpoint(cfg.model, cfg.initial_state);
    ModelDims dims = detect_architecture(*ck);
    std::string strategy = cfg.strategy.empty() ? default_strategy(*ck) : cfg.strategy;
    Plan p = make_plan(parse_strategy(strategy), *ck, dims, cfg.plan_limits());
    if (o->json) std::cout << plan_json(p).dump() << "\n";
    else {
      std::cout << "strategy: " << strategy << "\n" << plan_table(p) << std::flush;
      print_local_gpus(p, cfg.limits.slots, cfg.limits.tuned_states);
    }
  });
}

}  // namespace skein::cli
