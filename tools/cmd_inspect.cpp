#include <iomanip>
#include <iostream>
#include <map>

#include "model/architecture.h"
#include "model/fingerprint.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

void add_inspect_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto* c = app.add_subcommand("inspect", "Print a checkpoint's version, dimensions and sizes");
  c->add_option("--model", *path, "checkpoint")->required();
  c->callback([path] {
    auto ck = Checkpoint::open(*path);
    ModelDims d = detect_architecture(*ck);
    uint64_t params = 0;
    std::map<DType, uint64_t> bytes;
    for (auto& [name, t] : ck->tensors()) {
      params += uint64_t(t.numel());
      bytes[t.dtype] += t.nbytes;
    }
    std::cout << "file            " << *path << " (" << ck->format() << ", " << ck->file_size() << " bytes)\n"
              << "version         " << arch_name(d.arch) << "\n"
              << "n_layer         " << d.n_layer << "\n"
              << "n_embd          " << d.n_embd << "\n"
              << "n_head          " << d.n_head << " x head_size " << d.head_size << "\n"
              << "vocab           " << d.vocab << "\n"
              << "dim_ffn         " << d.dim_ffn << "\n"
              << "time_state      " << (d.has_time_state ? "yes" : "no") << "\n"
              << "parameters      " << params << " (" << std::fixed << std::setprecision(2)
              << (params >= 1000000000 ? double(params) / 1e9 : double(params) / 1e6) << (params >= 1000000000 ? "B" : "M") << ")\n";
    for (auto& [dt, b] : bytes) std::cout << "bytes " << std::left << std::setw(10) << dtype_name(dt) << b << "\n";
    std::cout << "state bytes     " << d.state_floats() * sizeof(float) << " per request (fp32)\n"
              << "fingerprint     " << fingerprint_hex(model_fingerprint(*ck)) << "\n";
  });
}

}  // namespace skein::cli
