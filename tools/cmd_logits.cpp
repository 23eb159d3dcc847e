#include <iostream>

#include "common/atomic_file.h"
#include "common/error.h"
#include "model/architecture.h"
#include "model/fingerprint.h"
#include "model/state_file.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

void add_logits_command(CLI::App& app) {
  struct Opts {
    std::string tokens, mode = "parallel", out, state_in, state_out;
    bool all_positions = false;
    RunFlags run;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("logits", "Run token ids through the model and write raw float32 logits");
  c->add_option("--tokens", o->tokens, "comma-separated token ids")->required();
  c->add_option("--mode", o->mode, "parallel | recurrent | chunks:5,11,8")->capture_default_str();
  c->add_flag("--all-positions", o->all_positions, "write [T x vocab] instead of the last position's [vocab]");
  c->add_option("--out", o->out, "output file (little-endian float32)")->required();
  c->add_option("--state-in", o->state_in, "start from this state file");
  c->add_option("--state-out", o->state_out, "write the final state here");
  o->run.add(c, RunFlags::kIds);
  c->callback([o] {
    Config cfg = o->run.resolve();
    if (cfg.model.empty()) fail("logits: no model given (--model or [model] path in --config)");
    apply_run_config(cfg);
    std::vector<int32_t> tokens = parse_int_list(o->tokens, "--tokens");
    std::vector<int32_t> chunks;
    if (o->mode == "parallel") chunks = {int32_t(tokens.size())};
    else if (o->mode == "recurrent") chunks.assign(tokens.size(), 1);
    else if (o->mode.rfind("chunks:", 0) == 0) chunks = parse_int_list(o->mode.substr(7), "--mode chunks");
    else fail("--mode must be parallel, recurrent or chunks:N,N,..., got '", o->mode, "'");
    size_t total = 0;
    for (auto n : chunks) {
      if (n <= 0) fail("--mode chunks: chunk sizes must be positive");
      total += size_t(n);
    }
    if (total != tokens.size()) fail("--mode chunks: sizes add up to ", total, " but there are ", tokens.size(), " tokens");
    // The token ids, a --state-in file and the outputs are checked before the model loads.
    std::shared_ptr<const Checkpoint> checkpoint;
    std::vector<float> state_in;
    if (faces_the_user()) {
      checkpoint = open_checkpoint(cfg.model, cfg.initial_state);
      const ModelDims dims = detect_architecture(*checkpoint);
      for (int32_t t : tokens)
        if (t >= dims.vocab) fail("--tokens: token id ", t, " is out of range for vocabulary size ", dims.vocab);
      if (!o->state_in.empty()) state_in = load_state_file(o->state_in, StateFileHeader{dims, 0, dims.n_layer, model_fingerprint(*checkpoint)});
      check_writable(o->out);
      if (!o->state_out.empty()) check_writable(o->state_out);
    }
    cfg.limits.slots = 1;  // one sequence: the memory check counts one state, not a server's slots
    LoadedModel m = checkpoint ? load_model(std::move(checkpoint), cfg) : load_model(cfg.model, cfg);
    if (!m.handle) return;  // a stage-worker rank
    ModelHandle& model = *m.handle;
    const int V = model.dims().vocab;

    int session = model.open_session();
    StateFileHeader hdr{model.dims(), 0, model.dims().n_layer, m.fingerprint};
    if (!o->state_in.empty()) model.import_state(session, state_in);
    std::vector<float> out(o->all_positions ? tokens.size() * size_t(V) : size_t(V));
    size_t pos = 0;
    for (auto n : chunks) {
      float* dst = o->all_positions ? out.data() + pos * size_t(V) : out.data();
      model.run(session, std::span<const int32_t>(tokens.data() + pos, size_t(n)), n, dst, o->all_positions);
      pos += size_t(n);
    }
    write_floats(o->out, out);
    if (!o->state_out.empty()) save_state_file(o->state_out, hdr, model.export_state(session));
  });
}

}  // namespace skein::cli
