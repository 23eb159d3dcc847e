// `skein plan`: the placement a strategy gives a model, from the checkpoint's header alone.
#include <iostream>

#include "common/error.h"
#include "coordinator/placement.h"
#include "model/architecture.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

void add_plan_command(CLI::App& app) {
  struct Opts {
    RunFlags run;
    bool json = false;
    int slots = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("plan", "Show which stage holds which layers, and what each stage costs");
  o->run.add(c, false);
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
    else std::cout << "strategy: " << strategy << "\n" << plan_table(p);
  });
}

}  // namespace skein::cli
