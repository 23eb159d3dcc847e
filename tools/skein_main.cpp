// `skein`: the command-line front end. Every failure the user can cause ends in one line on stderr,
// "skein: error: <what and where>", and exit status 2.
#include <CLI/CLI.hpp>
#include <iostream>

#include <memory>

#include "common/error.h"
#include "common/stop_signal.h"
#include "net/mpi_world.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

int main(int argc, char** argv) {
  // SIGTERM drains: generation stops at the next token, stage ranks keep serving until the coordinator
  // shuts them down, and every rank exits 0.
  skein::install_stop_handlers();
  // Under mpirun every rank runs the same command line: rank 0 coordinates, the others run stages.
  std::unique_ptr<skein::MpiWorld> world;
  if (skein::MpiWorld::launched()) {
    world = std::make_unique<skein::MpiWorld>(&argc, &argv);
    if (world->size() > 1) skein::cli::set_mpi_world(world.get());
  }
  auto report = [&](const std::string& msg) {
    std::cout.flush();
    if (world && world->size() > 1) {
      std::cerr << "skein: error: rank " << world->rank() << ": " << msg << "\n";
      world->abort(2);  // a failure on one rank must end the job, never leave the others waiting
    }
    std::cerr << "skein: error: " << msg << "\n";
    return 2;
  };
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
  skein::cli::add_serve_command(app);
  skein::cli::add_client_command(app);
  skein::cli::add_eval_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {  // a flag that is missing, unknown, malformed or out of range
    return report(std::string(e.what()) + " (--help lists the options)");
  } catch (const skein::Error& e) {
    return report(e.what());
  } catch (const std::bad_alloc&) {
    return report("out of memory");
  } catch (const std::exception& e) {
    return report(e.what());
  }
  return 0;
}
