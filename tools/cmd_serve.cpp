// `skein serve`: the TCP API in front of the model (one process, or rank 0 of an mpirun cluster).
#include <atomic>
#include <chrono>
#include <iostream>
#include <thread>

#include "common/error.h"
#include "common/stop_signal.h"
#include "coordinator/inference_service.h"
#include "net/tcp_server.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

void add_serve_command(CLI::App& app) {
  struct Opts {
    RunFlags run;
    std::string listen, auth_token;
    int port = -1;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("serve", "Serve generation requests over TCP (newline-delimited JSON, docs/protocol.md)");
  o->run.add(c, true);
  c->add_option("--listen", o->listen, "address to listen on (default 127.0.0.1)");
  c->add_option("--port", o->port, "TCP port (0: any free port; default 7700)");
  c->add_option("--auth-token", o->auth_token, "require \"auth\": TOKEN in every request");
  c->callback([o] {
    Config cfg = o->run.resolve();
    if (!o->listen.empty()) cfg.server.listen = o->listen;
    if (!o->auth_token.empty()) cfg.server.auth_token = o->auth_token;
    if (o->port >= 0) cfg.server.port = o->port;
    if (cfg.server.port > 65535) fail("--port must be 0..65535");
    apply_run_config(cfg);
    std::string path = cfg.model.empty() ? default_model_path() : cfg.model;
    LoadedModel m = load_model(path, cfg.strategy, cfg.limits);
    if (!m.handle) return;  // a stage rank: served until the coordinator shut it down
    auto tok = tokenizer_for(cfg.tokenizer, m.dims.vocab);
    if (cfg.tokenizer.rfind("world:", 0) == 0 && cfg.sampling.token_stop.empty()) cfg.sampling.token_stop = {0};

    InferenceService service(*m.handle, *tok, cfg.scheduler, cfg.server.queue_length);
    boost::asio::io_context io;
    ApiLimits limits{cfg.server.max_prompt_tokens, cfg.server.max_tokens_cap, cfg.max_tokens, cfg.sampling, cfg.server.auth_token};
    TcpServer server(io, cfg.server.listen, uint16_t(cfg.server.port), service, *tok, m.dims.vocab, limits, size_t(cfg.server.max_request_bytes),
                     cfg.server.per_connection_requests);
    auto work = boost::asio::make_work_guard(io);
    std::thread io_thread([&] { io.run(); });
    std::atomic<bool> done{false};
    std::thread watcher([&] {  // SIGTERM/SIGINT: stop taking requests, end the running ones, exit 0
      while (!done && !stop_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      service.stop();
    });
    std::cout << "skein: serving " << path << " (" << arch_name(m.dims.arch) << ") on tcp://" << server.address() << ":" << server.port() << std::endl;
    service.run();
    done = true;
    watcher.join();
    // Let the final events reach the clients, then close.
    io.post([&] { work.reset(); });
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    while (!io.stopped() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    io.stop();
    io_thread.join();
    std::cerr << "skein: server stopped\n";
  });
}

}  // namespace skein::cli
