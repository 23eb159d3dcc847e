#include <iostream>

#include "common/error.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

void add_tokenize_commands(CLI::App& app) {
  auto spec = std::make_shared<std::string>("bytes");
  auto* t = app.add_subcommand("tokenize", "Text on stdin -> token ids (space-separated) on stdout");
  t->add_option("--tokenizer", *spec, "bytes | world:PATH | bpe:PATH")->capture_default_str();
  t->callback([spec] {
    auto tok = make_tokenizer(*spec);
    auto ids = tok->encode(read_all(std::cin));
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
  });
  auto spec2 = std::make_shared<std::string>("bytes");
  auto* d = app.add_subcommand("detokenize", "Token ids on stdin (spaces, commas or newlines) -> text on stdout");
  d->add_option("--tokenizer", *spec2, "bytes | world:PATH | bpe:PATH")->capture_default_str();
  d->callback([spec2] {
    auto tok = make_tokenizer(*spec2);
    std::string in = read_all(std::cin);
    for (auto& ch : in)
      if (ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r') ch = ',';
    std::string cleaned;
    for (size_t i = 0; i < in.size(); ++i)
      if (!(in[i] == ',' && (cleaned.empty() || cleaned.back() == ','))) cleaned += in[i];
    while (!cleaned.empty() && cleaned.back() == ',') cleaned.pop_back();
    std::vector<int32_t> ids = cleaned.empty() ? std::vector<int32_t>{} : parse_int_list(cleaned, "token ids");
    std::cout << tok->decode(ids);
  });
}

}  // namespace skein::cli
