// `skein client`: send one generation request to a running `skein serve` and stream the text.
#include <iostream>
#include <optional>

#include "common/error.h"
#include "net/api_client.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

void add_client_command(CLI::App& app) {
  struct Opts {
    std::string server = "127.0.0.1:7700", prompt, json_schema;
    // Unset: the server's default. Set: sent as given (an empty session name too), so the server's
    // checks answer for bad values.
    std::optional<std::string> token, session, model;
    std::optional<int64_t> max_tokens, top_k, seed, priority;
    std::optional<double> temperature, top_p;
    std::vector<std::string> stop;
    bool no_stream = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("client", "Send a generation request to `skein serve` and stream the reply");
  c->add_option("--server", o->server, "HOST:PORT, [IPv6]:PORT, or tcp://... as serve prints it")->capture_default_str();
  c->add_option("--prompt", o->prompt, "prompt text")->required();
  c->add_option("--max-tokens", o->max_tokens, "tokens to generate (default: the server's)");
  c->add_option("--temperature", o->temperature, "0 = greedy (default: the server's)");
  c->add_option("--top-p", o->top_p, "nucleus cutoff (default: the server's)");
  c->add_option("--top-k", o->top_k, "0 disables (default: the server's)");
  c->add_option("--seed", o->seed, "random seed for reproducible sampling (default: the server's)");
  c->add_option("--stop", o->stop, "stop string (repeatable)");
  c->add_flag("--no-stream", o->no_stream, "wait for the whole text");
  c->add_flag("--json", o->json, "JSON mode: the reply is one JSON object");
  c->add_option("--json-schema", o->json_schema, "JSON mode with a JSON Schema file: the reply is one of its texts")->excludes("--json");
  c->add_option("--token", o->token, "the server's auth token");
  c->add_option("--session", o->session, "continue (or start) this named session on the server");
  c->add_option("--priority", o->priority, "lower runs first and may preempt less urgent requests (default 0)");
  c->add_option("--model", o->model, "one of the server's tuned states (`skein serve --tuned-state`), by name; default: the model");
  c->callback([o] {
    nlohmann::ordered_json req = {{"id", "cli"}, {"prompt", o->prompt}, {"stream", !o->no_stream}};
    if (o->max_tokens) req["max_tokens"] = *o->max_tokens;
    if (o->temperature) req["temperature"] = *o->temperature;
    if (o->top_p) req["top_p"] = *o->top_p;
    if (o->top_k) req["top_k"] = *o->top_k;
    if (o->seed) req["seed"] = *o->seed;
    if (!o->stop.empty()) req["stop"] = o->stop;
    if (o->token) req["auth"] = *o->token;
    if (o->session) req["session"] = *o->session;
    if (o->model) req["model"] = *o->model;
    if (o->priority) req["priority"] = *o->priority;
    if (o->json) req["response_format"] = {{"type", "json_object"}};
    if (!o->json_schema.empty()) req["response_format"] = json_schema_format("schema", read_json_schema_file(o->json_schema));
    ApiClient client(o->server);
    // The prompt is echoed once the server has taken the request: a refusal prints only its error.
    bool echoed = false;
    auto echo = [&] {
      if (!echoed) std::cout << o->prompt << std::flush;
      echoed = true;
    };
    auto done = client.generate(req, [&](const std::string& t) {
      echo();
      std::cout << t << std::flush;
    });
    if (done["event"] == "error") {
      if (echoed) std::cout << "\n";  // the request failed midway: the error goes below what was streamed
      fail("server: ", done["error"].get<std::string>());
    }
    echo();
    std::cout << "\n";
    std::cerr << "[" << done["completion_tokens"] << " tokens, finish: " << done["finish_reason"].get<std::string>();
    if (done.contains("session_tokens")) std::cerr << ", session " << *o->session << ": " << done["session_tokens"] << " tokens";
    if (done.contains("preemptions")) std::cerr << ", parked " << done["preemptions"] << "x for more urgent requests";
    std::cerr << "]\n";
  });
}

}  // namespace skein::cli
