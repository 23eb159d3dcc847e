// `skein`: the command-line front end. Every failure the user can cause ends in one line on stderr,
// "skein: error: <what and where>", and exit status 2.
#include <CLI/CLI.hpp>
#include <iostream>

#include "common/error.h"
#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"Skein: RWKV inference (v4, v5, v6, v7)", "skein"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "skein 0.1.0");
  skein::cli::add_generate_command(app);
  skein::cli::add_logits_command(app);
  skein::cli::add_tokenize_commands(app);
  skein::cli::add_inspect_command(app);
  skein::cli::add_make_model_command(app);
  skein::cli::add_bench_command(app);
  skein::cli::add_plan_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  } catch (const skein::Error& e) {
    std::cout.flush();
    std::cerr << "skein: error: " << e.what() << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    std::cerr << "skein: error: out of memory\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "skein: error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
