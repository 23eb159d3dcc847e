#include <iostream>

#include "common/error.h"
#include "coordinator/generator.h"
#include "model/state_file.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

void add_generate_command(CLI::App& app) {
  struct Opts {
    std::string prompt = "\nIn the ", state_in, state_out;
    RunFlags run;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("generate", "Generate text from a prompt, streaming it to stdout");
  c->add_option("--prompt", o->prompt, "prompt text")->capture_default_str();
  c->add_option("--state-in", o->state_in, "continue from this saved state");
  c->add_option("--state-out", o->state_out, "save the final state here");
  o->run.add(c, true);
  c->callback([o] {
    Config cfg = o->run.resolve();
    apply_threads(cfg.threads);
    std::string path = cfg.model.empty() ? default_model_path() : cfg.model;
    LoadedModel m = load_model(path, cfg.strategy, cfg.limits);
    if (!m.handle) return;  // a stage-worker rank: its stage ran until the coordinator finished
    ModelHandle& model = *m.handle;
    auto tok = tokenizer_for(cfg.tokenizer, model.dims().vocab);
    if (cfg.tokenizer.rfind("world:", 0) == 0 && cfg.sampling.token_stop.empty()) cfg.sampling.token_stop = {0};  // end of text
    GenerateRequest req;
    req.prompt = tok->encode(o->prompt);
    req.max_tokens = cfg.max_tokens;
    req.sampling = cfg.sampling;
    req.prefill_chunk = cfg.scheduler.prefill_chunk;
    int session = model.open_session();
    StateFileHeader hdr{model.dims(), 0, model.dims().n_layer, m.fingerprint};
    if (!o->state_in.empty()) model.import_state(session, load_state_file(o->state_in, hdr));
    std::cout << o->prompt << std::flush;
    GenerateResult r = generate(model, session, *tok, req, [](std::string_view s) { std::cout << s << std::flush; });
    std::cout << "\n";
    if (!o->state_out.empty()) save_state_file(o->state_out, hdr, model.export_state(session));
    double dtps = r.decode_seconds > 0 ? double(r.tokens.size()) / r.decode_seconds : 0;
    std::cerr << "[" << req.prompt.size() << " prompt tokens in " << r.prefill_seconds << " s, " << r.tokens.size()
              << " generated at " << dtps << " tok/s, finish: " << r.finish_reason << "]\n";
  });
}

}  // namespace skein::cli
