#include <iostream>

#include "coordinator/generator.h"
#include "model/state_file.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

void add_generate_command(CLI::App& app) {
  struct Opts {
    std::string model, prompt = "\nIn the ", tokenizer, state_in, state_out, strategy;
    int max_tokens = 200, threads = 0;
    SamplingParams sampling;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("generate", "Generate text from a prompt, streaming it to stdout");
  c->add_option("--model", o->model, "checkpoint (.pth or .safetensors); default: a small model made on first use");
  c->add_option("--prompt", o->prompt, "prompt text")->capture_default_str();
  c->add_option("--tokenizer", o->tokenizer, "bytes | world:PATH (default: bytes for vocab-256 models)");
  c->add_option("--max-tokens", o->max_tokens, "tokens to generate")->capture_default_str();
  c->add_option("--state-in", o->state_in, "continue from this saved state");
  c->add_option("--state-out", o->state_out, "save the final state here");
  add_strategy_option(c, o->strategy);
  add_sampling_options(c, o->sampling);
  add_threads_option(c, o->threads);
  c->callback([o] {
    apply_threads(o->threads);
    std::string path = o->model.empty() ? default_model_path() : o->model;
    LoadedModel m = load_model(path, o->strategy);
    auto tok = tokenizer_for(o->tokenizer, m.model->dims().vocab);
    if (o->tokenizer.rfind("world:", 0) == 0 && o->sampling.token_stop.empty()) o->sampling.token_stop = {0};  // end of text
    GenerateRequest req;
    req.prompt = tok->encode(o->prompt);
    req.max_tokens = o->max_tokens;
    req.sampling = o->sampling;
    SessionState state = m.model->new_state();
    StateFileHeader hdr{m.model->dims(), 0, m.model->dims().n_layer, m.fingerprint};
    if (!o->state_in.empty()) state.from_host(load_state_file(o->state_in, hdr));
    std::cout << o->prompt << std::flush;
    GenerateResult r = generate(*m.model, *tok, state, req, [](std::string_view s) { std::cout << s << std::flush; });
    std::cout << "\n";
    if (!o->state_out.empty()) save_state_file(o->state_out, hdr, state.to_host());
    double dtps = r.decode_seconds > 0 ? double(r.tokens.size()) / r.decode_seconds : 0;
    std::cerr << "[" << req.prompt.size() << " prompt tokens in " << r.prefill_seconds << " s, " << r.tokens.size()
              << " generated at " << dtps << " tok/s, finish: " << r.finish_reason << "]\n";
  });
}

}  // namespace skein::cli
