#include <algorithm>
#include <iostream>
#include <optional>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/stop_signal.h"
#include "coordinator/generator.h"
#include "coordinator/json_constraint.h"
#include "coordinator/scheduler.h"
#include "model/architecture.h"
#include "model/fingerprint.h"
#include "model/state_file.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

namespace {
// Several prompts at once through the continuous-batching scheduler; each result printed when all end.
void generate_batch(ModelHandle& model, const Tokenizer& tok, const std::vector<std::string>& prompts, const Config& cfg) {
  Scheduler sched(model, cfg.scheduler.micro_batch_tokens, cfg.scheduler.prefill_chunk, penalty_free_tokens(tok, model.dims().vocab));
  std::vector<std::vector<int32_t>> out(prompts.size());
  std::vector<std::string> reason(prompts.size());
  std::optional<JsonVocabulary> json;  // JSON modes: one vocabulary's masks for every prompt
  if (cfg.sampling.format != ResponseFormat::Text) json.emplace(tok, model.dims().vocab);
  for (size_t i = 0; i < prompts.size(); ++i) {
    ScheduledRequest r{tok.encode(prompts[i]), cfg.max_tokens, cfg.sampling, [&out, i](const SampledToken& t) { out[i].push_back(t.token); },
                       [&reason, i](const std::string& r) { reason[i] = r; }};
    if (json) r.constraint = json->constraint(cfg.sampling.format, cfg.sampling.json_schema);
    sched.submit(std::move(r));
  }
  while (!sched.idle()) {
    if (stop_requested()) sched.cancel_all();
    else sched.step();
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::string text = generated_bytes(tok, out[i]);
    for (auto& s : cfg.sampling.stop)
      if (auto p = text.find(s); p != std::string::npos) { text.resize(p); reason[i] = "stop_string"; }
    Utf8Stream u;
    std::cout << "--- [" << i << "] " << out[i].size() << " tokens, finish: " << reason[i] << "\n" << prompts[i] << u.push(text) << u.finish() << "\n";
  }
  std::cerr << "[" << prompts.size() << " requests in " << sched.steps() << " micro-batches]\n";
}
}  // namespace

void add_generate_command(CLI::App& app) {
  struct Opts {
    std::vector<std::string> prompts;
    std::string state_in, state_out;
    RunFlags run;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("generate", "Generate text from a prompt, streaming it to stdout");
  c->add_option("--prompt", o->prompts, "prompt text (default \"\\nIn the \"); several --prompt run together, continuously batched");
  c->add_option("--state-in", o->state_in, "continue from this saved state");
  c->add_option("--state-out", o->state_out, "save the final state here");
  o->run.add(c, RunFlags::kSampledText);
  c->callback([o] {
    Config cfg = o->run.resolve();
    apply_run_config(cfg);
    std::string path = cfg.model.empty() ? default_model_path() : cfg.model;
    // States held at once: one per prompt (up to the configured slots), which is what the memory check counts.
    cfg.limits.slots = std::min(cfg.limits.slots, int(std::max<size_t>(1, o->prompts.size())));
    // The tokenizer, the sampling ids, a --state-in file and the folder of --state-out are checked before
    // the model loads.
    std::shared_ptr<const Checkpoint> checkpoint;
    std::unique_ptr<Tokenizer> tok;
    std::vector<float> state_in;
    if (faces_the_user()) {
      if (o->prompts.size() > 1 && (!o->state_in.empty() || !o->state_out.empty())) fail("--state-in/--state-out take a single --prompt");
      checkpoint = open_checkpoint(path, cfg.initial_state);
      const ModelDims dims = detect_architecture(*checkpoint);
      tok = tokenizer_for(cfg.tokenizer, dims.vocab);
      stop_at_end_of_text(cfg.sampling, *tok);
      cfg.sampling.validate(dims.vocab);  // before the prompt is echoed
      if (!o->state_in.empty()) state_in = load_state_file(o->state_in, StateFileHeader{dims, 0, dims.n_layer, model_fingerprint(*checkpoint)});
      if (!o->state_out.empty()) check_writable(o->state_out);
    }
    LoadedModel m = checkpoint ? load_model(std::move(checkpoint), cfg) : load_model(path, cfg);
    if (!m.handle) return;  // a stage-worker rank: its stage ran until the coordinator finished
    ModelHandle& model = *m.handle;
    if (o->prompts.empty()) o->prompts = {"\nIn the "};
    if (o->prompts.size() > 1) {
      generate_batch(model, *tok, o->prompts, cfg);
      return;
    }
    const std::string& prompt = o->prompts.front();
    GenerateRequest req;
    req.prompt = tok->encode(prompt);
    req.max_tokens = cfg.max_tokens;
    req.sampling = cfg.sampling;
    req.prefill_chunk = cfg.scheduler.prefill_chunk;
    int session = model.open_session();
    StateFileHeader hdr{model.dims(), 0, model.dims().n_layer, m.fingerprint};
    if (!o->state_in.empty()) model.import_state(session, state_in);
    std::cout << prompt << std::flush;
    GenerateResult r = generate(model, session, *tok, req, [](std::string_view s) { std::cout << s << std::flush; });
    std::cout << "\n" << std::flush;  // ends the text before any --state-out error on stderr
    if (!o->state_out.empty()) {
      // The saved state holds all the text shown: the last generated token still has to run.
      std::vector<float> ignored(size_t(model.dims().vocab));
      if (!r.unfed.empty()) model.run(session, r.unfed, int(r.unfed.size()), ignored.data());
      save_state_file(o->state_out, hdr, model.export_state(session));
    }
    double dtps = r.decode_seconds > 0 ? double(r.tokens.size()) / r.decode_seconds : 0;
    std::cerr << "[" << req.prompt.size() << " prompt tokens in " << r.prefill_seconds << " s, " << r.tokens.size()
              << " generated at " << dtps << " tok/s, finish: " << r.finish_reason << "]\n";
  });
}

}  // namespace skein::cli
