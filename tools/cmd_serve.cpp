// `skein serve`: the TCP API in front of the model (one process, or rank 0 of an mpirun cluster).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <set>
#include <thread>

#include "common/error.h"
#include "common/log.h"
#include "common/stop_signal.h"
#include "coordinator/inference_service.h"
#include "coordinator/placement.h"
#include "coordinator/session_store.h"
#include "model/architecture.h"
#include "model/checkpoint.h"
#include "model/fingerprint.h"
#include "model/initial_state.h"
#include "model/state_file.h"
#include "net/http_server.h"
#include "net/listener.h"
#include "net/tcp_server.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

namespace {

// A tuned state's start: a state-tuning file (blocks.N.att.time_state), or a state file of this model
// (`--state-out`, a downloaded session): the state after some text, e.g. a long system prompt, that
// every request naming it then continues.
std::vector<float> start_state_in(const std::string& file, const Checkpoint& model, const StateFileHeader& header) {
  return is_state_file(file) ? load_state_file(file, header) : tuned_start_state(model, file);
}

}  // namespace

void add_serve_command(CLI::App& app) {
  struct Opts {
    RunFlags run;
    std::string listen, auth_token, sessions_dir;
    std::vector<std::string> tuned_states, allow_origins;
    int port = 0, http_port = 0;
    CLI::Option *port_flag = nullptr, *http_port_flag = nullptr;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("serve", "Serve generation requests: NDJSON over TCP (docs/protocol.md) and OpenAI-compatible HTTP");
  o->run.add(c, RunFlags::kSampledText);
  c->add_option("--listen", o->listen, "address to listen on (default 127.0.0.1)")->check(kNonEmpty);
  o->port_flag = c->add_option("--port", o->port, "TCP port (0: any free port; default 7700)")->check(CLI::Range(0, 65535));
  o->http_port_flag = c->add_option("--http-port", o->http_port, "HTTP port (0: any free port; -1: no HTTP; default 7701)")->check(CLI::Range(-1, 65535));
  c->add_option("--auth-token", o->auth_token, "require this token (TCP: \"auth\" field; HTTP: Authorization: Bearer)")->check(kNonEmpty);
  c->add_option("--allow-origin", o->allow_origins, "a web page's origin (https://chat.example.com) whose scripts may call the HTTP API from a browser (CORS), or * for any; repeatable");
  c->add_option("--sessions-dir", o->sessions_dir, "folder for saved sessions; they persist across restarts");
  c->add_option("--tuned-state", o->tuned_states, "NAME=FILE: also serve the model started from this state-tuning file (or state file), as model NAME (repeatable)");
  c->callback([o] {
    Config cfg = o->run.resolve();
    logging::configure(cfg.logging.level, cfg.logging.file);
    if (!o->listen.empty()) cfg.server.listen = o->listen;
    if (!o->auth_token.empty()) cfg.server.auth_token = o->auth_token;
    for (const std::string& origin : o->allow_origins) check_allowed_origin(origin);  // as the config's are
    if (!o->allow_origins.empty()) cfg.server.allow_origins = o->allow_origins;
    if (o->port_flag->count()) cfg.server.port = o->port;
    if (o->http_port_flag->count()) cfg.server.http_port = o->http_port;
    if (!o->sessions_dir.empty()) {
      cfg.sessions.dir = o->sessions_dir;
      cfg.sessions.persist = true;
    }
    if (cfg.sessions.save_interval_s > 0 && (!cfg.sessions.persist || cfg.sessions.dir.empty()))
      fail("[sessions] save_interval_s: needs persist = true and a dir (or --sessions-dir), where saved sessions are read back at start-up");
    std::set<std::string> flagged;  // a name flagged twice is a slip: the second file would silently win
    for (const std::string& flag : o->tuned_states) {
      const size_t eq = flag.find('=');
      if (eq == std::string::npos || eq + 1 == flag.size()) fail("--tuned-state: expected NAME=FILE, got '", flag, "'");
      check_tuned_state_name(flag.substr(0, eq));
      if (!flagged.insert(flag.substr(0, eq)).second) fail("--tuned-state: '", flag.substr(0, eq), "' is named twice");
      cfg.tuned_states[flag.substr(0, eq)] = flag.substr(eq + 1);
    }
    apply_run_config(cfg);
    std::string path = cfg.model.empty() ? default_model_path() : cfg.model;
    const std::string model_name = std::filesystem::path(path).stem().string();
    // Every rank reads them, so a file that does not fit stops the whole job with the same line.
    std::map<std::string, std::vector<float>> tuned_states;
    if (!cfg.tuned_states.empty()) {
      auto ck = open_checkpoint(path, cfg.initial_state);
      const ModelDims d = detect_architecture(*ck);
      for (auto& [name, file] : cfg.tuned_states) {
        if (name == model_name) fail("[tuned_states] ", name, ": the model itself is called that; name the tuned state otherwise");
        tuned_states[name] = start_state_in(file, *ck, {d, 0, d.n_layer, model_fingerprint(*ck)});
      }
    }
    cfg.limits.tuned_states = int(tuned_states.size());  // each stage keeps them: counted against its memory
    // The serving process binds its ports, reads its tokenizer (the file's header says the vocabulary)
    // and makes its sessions folder before the model loads: a port in use, a missing --tokenizer or a
    // folder it cannot make stops it at once.
    boost::asio::io_context io;
    std::unique_ptr<Listener> tcp_listener, http_listener;
    std::unique_ptr<Tokenizer> tok;
    std::shared_ptr<const Checkpoint> checkpoint;  // opened here once on the serving rank
    if (faces_the_user()) {
      // The serving process's own budgets fill as it serves: more than the host has would end in an
      // out-of-memory kill hours later, and the sessions held in memory with it.
      const double budgets = double(cfg.cache.prefix_bytes) + double(cfg.sessions.host_bytes) + double(cfg.scheduler.parked_bytes);
      if (budgets > double(host_memory())) {
        char sizes[128];
        std::snprintf(sizes, sizeof sizes, "%.1f GiB, more than this host's %.1f GiB", budgets / double(1ull << 30), double(host_memory()) / double(1ull << 30));
        fail("[cache] prefix_bytes, [sessions] host_bytes and [scheduler] parked_bytes add up to ", sizes, " of memory: the serving process holds them as they fill");
      }
      raise_open_files_limit();  // a descriptor per client: Debian's soft limit of 1024 would be the server's
      tcp_listener = std::make_unique<Listener>(io, cfg.server.listen, uint16_t(cfg.server.port), "TCP");
      if (cfg.server.http_port >= 0) http_listener = std::make_unique<Listener>(io, cfg.server.listen, uint16_t(cfg.server.http_port), "HTTP");
      checkpoint = open_checkpoint(path, cfg.initial_state);
      const int vocab = detect_architecture(*checkpoint).vocab;
      tok = tokenizer_for(cfg.tokenizer, vocab);
      stop_at_end_of_text(cfg.sampling, *tok);
      cfg.sampling.validate(vocab);  // the requests' defaults: a --ban past the vocabulary would fail every one
      if (!cfg.sessions.dir.empty()) SessionStore::make_folder(cfg.sessions.dir);
    }
    LoadedModel m = checkpoint ? load_model(std::move(checkpoint), cfg) : load_model(path, cfg);
    if (!m.handle) return;  // a stage rank: served until the coordinator shut it down

    ServiceOptions so;
    so.model_name = model_name;
    so.tuned_states = std::move(tuned_states);
    so.scheduler = cfg.scheduler;
    so.queue_limit = cfg.server.queue_length;
    so.sessions = cfg.sessions;
    so.cache = cfg.cache;
    so.state_header = {m.dims, 0, m.dims.n_layer, m.fingerprint};
    so.stall_seconds = cfg.server.stall_seconds;
    const size_t state_bytes = state_file_bytes(so.state_header);
    InferenceService service(*m.handle, *tok, std::move(so));
    const ApiLimits limits = api_limits(cfg);
    TcpServer server(io, std::move(tcp_listener), service, *tok, m.dims.vocab,
                     {limits, size_t(cfg.server.max_request_bytes), cfg.server.per_connection_requests, size_t(cfg.server.client_buffer_bytes),
                      cfg.server.client_timeout_s});
    std::unique_ptr<HttpServer> http;
    if (http_listener)
      http = std::make_unique<HttpServer>(io, std::move(http_listener), service, *tok, m.dims.vocab,
                                          HttpOptions{limits, cfg.chat, size_t(cfg.server.max_request_bytes),
                                                      size_t(cfg.server.client_buffer_bytes), cfg.server.client_timeout_s,
                                                      state_bytes, cfg.server.allow_origins});
    auto work = boost::asio::make_work_guard(io);
    std::thread io_thread([&] { io.run(); });
    std::atomic<bool> done{false};
    std::thread watcher([&] {  // SIGTERM/SIGINT: stop taking requests, end the running ones, exit 0
      while (!done && !stop_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      service.stop();
    });
    // Let the final events reach the clients, then close.
    auto drain = [&] {
      done = true;
      watcher.join();
      io.post([&] { work.reset(); });
      auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
      while (!io.stopped() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      io.stop();
      io_thread.join();
    };
    // An IPv6 address in brackets, as URLs (and skein client --server) write it.
    const std::string host = server.address().find(':') != std::string::npos ? "[" + server.address() + "]" : server.address();
    std::string where = "tcp://" + host + ":" + std::to_string(server.port());
    if (http) where += " and http://" + host + ":" + std::to_string(http->port());
    std::cout << "skein: serving " << path << " (" << arch_name(m.dims.arch) << ") on " << where << std::endl;
    try {
      service.run();
    } catch (...) {
      drain();  // every client has its error event before the job ends
      throw;
    }
    drain();
    logging::info("server stopped");
  });
}

}  // namespace skein::cli
