#include <iostream>

#include "common/error.h"
#include "model/make_model.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

void add_make_model_command(CLI::App& app) {
  struct Opts {
    std::string arch = "v7", dtype = "bf16", out;
    MakeModelOptions m;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("make-model", "Write a random-weight checkpoint in the official .pth layout");
  c->add_option("--arch", o->arch, "v4 | v5.2 | v6 | v7")->capture_default_str();
  c->add_option("--layers", o->m.n_layer, "number of layers")->required();
  c->add_option("--embd", o->m.n_embd, "embedding width")->required();
  c->add_option("--vocab", o->m.vocab, "vocabulary size")->required();
  c->add_option("--ffn", o->m.dim_ffn, "FFN width (default: the generation's usual)");
  auto* head_size = c->add_option("--head-size", o->m.head_size, "head size (v5-v7)")->capture_default_str();
  c->add_option("--seed", o->m.seed, "random seed")->capture_default_str()->check(kWholeNumber);
  c->add_option("--dtype", o->dtype, "bf16 | fp16 | fp32")->capture_default_str();
  c->add_option("-o,--out", o->out, "output .pth file")->required();
  c->callback([o, head_size] {
    o->m.arch = parse_make_model_arch(o->arch);
    if (o->m.arch == Arch::V4 && head_size->count()) fail("make-model: --head-size applies to v5.2, v6 and v7; v4 has no heads");
    if (o->dtype == "bf16") o->m.dtype = DType::BF16;
    else if (o->dtype == "fp16") o->m.dtype = DType::F16;
    else if (o->dtype == "fp32") o->m.dtype = DType::F32;
    else fail("make-model: --dtype must be bf16, fp16 or fp32, got '", o->dtype, "'");
    uint64_t params = make_model(o->m, o->out);
    std::cerr << "wrote " << o->out << ": " << o->arch << ", " << params << " parameters\n";
  });
}

}  // namespace skein::cli
