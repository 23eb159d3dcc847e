#include "coordinator/config.h"

#include <cctype>
#include <cmath>
#include <limits>
#include <filesystem>
#include <functional>
#include <toml++/toml.h>

#include "common/error.h"
#include "common/refuse_folder.h"

namespace skein {

uint64_t parse_size(const std::string& s, const std::string& what) {
  size_t i = 0;
  double v = 0;
  try {
    v = std::stod(s, &i);
  } catch (...) {
    fail(what, ": '", s, "' is not a size (e.g. 80GiB)");
  }
  std::string unit = s.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  static const std::map<std::string, double> units = {{"", 1},           {"B", 1},           {"kB", 1e3},          {"KB", 1e3},
                                                      {"MB", 1e6},        {"GB", 1e9},        {"TB", 1e12},         {"KiB", 1024.0},
                                                      {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  auto u = units.find(unit);
  if (u == units.end() || !std::isfinite(v) || v < 0) fail(what, ": '", s, "' is not a size (units B, kB or KB, MB, GB, TB, KiB, MiB, GiB, TiB)");
  const double bytes = v * u->second;
  if (bytes >= 18446744073709551616.0) fail(what, ": '", s, "' is more bytes than 64 bits count");  // the cast would be undefined
  return uint64_t(bytes);
}

void check_tuned_state_name(const std::string& name) {
  auto ok = [](char ch, bool first) {
    return std::isalnum(static_cast<unsigned char>(ch)) || (!first && (ch == '.' || ch == '_' || ch == '-' || ch == ':'));
  };
  bool good = !name.empty() && name.size() <= 64;
  for (size_t i = 0; good && i < name.size(); ++i) good = ok(name[i], i == 0);
  if (!good)
    fail("tuned state name '", name.substr(0, 80), "': use 1-64 letters, digits, '.', '_', '-' or ':', starting with a letter or digit");
}

void check_allowed_origin(const std::string& origin) {
  if (origin == "*") return;
  // RFC 6454's serialization: a lowercase scheme, "://", the host and an optional port; nothing after.
  const size_t sep = origin.find("://");
  bool good = sep != std::string::npos && sep > 0 && sep + 3 < origin.size() && std::islower(static_cast<unsigned char>(origin[0]));
  for (size_t i = 0; good && i < sep; ++i) {
    const char ch = origin[i];
    good = std::islower(static_cast<unsigned char>(ch)) || std::isdigit(static_cast<unsigned char>(ch)) || ch == '+' || ch == '-' || ch == '.';
  }
  for (size_t i = sep + 3; good && i < origin.size(); ++i) {
    const auto ch = static_cast<unsigned char>(origin[i]);
    good = ch > ' ' && ch < 0x7f && ch != '/' && ch != '?' && ch != '#' && ch != '*';
  }
  if (!good) fail("allowed origin '", origin.substr(0, 80), "': write it as a browser sends it, scheme://host[:port] without a path (https://chat.example.com), or *");
}

namespace {

class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {}

  [[noreturn]] void bad(const toml::node& n, const std::string& what) const {
    auto src = n.source();
    fail(path_, ":", src.begin.line, ":", src.begin.column, ": ", what);
  }

  // Visits a table: every key must be known; `on` reads one key.
  void table(const toml::table& t, const std::string& name, const std::map<std::string, std::function<void(const toml::node&)>>& keys) const {
    for (auto& [k, v] : t) {
      auto it = keys.find(std::string(k.str()));
      if (it == keys.end()) bad(v, "unknown key '" + std::string(k.str()) + "' in " + (name.empty() ? "the top level" : "[" + name + "]"));
      it->second(v);
    }
  }

  std::string str(const toml::node& n, const std::string& key) const {
    if (!n.is_string()) bad(n, "'" + key + "' must be a string");
    return n.value<std::string>().value();
  }
  int64_t integer(const toml::node& n, const std::string& key, int64_t lo, int64_t hi) const {
    if (!n.is_integer()) bad(n, "'" + key + "' must be an integer");
    int64_t v = n.value<int64_t>().value();
    if (v < lo || v > hi) bad(n, "'" + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + std::to_string(v));
    return v;
  }
  float number(const toml::node& n, const std::string& key) const {
    if (!n.is_number()) bad(n, "'" + key + "' must be a number");
    // An integer read as such: toml++ gives no double for one a double cannot hold exactly.
    double v = n.is_integer() ? double(n.as_integer()->get()) : n.as_floating_point()->get();
    if (!std::isfinite(v) || std::fabs(v) > std::numeric_limits<float>::max()) bad(n, "'" + key + "' must be a finite number");
    return float(v);
  }
  std::vector<int32_t> int_list(const toml::node& n, const std::string& key) const {
    if (!n.is_array()) bad(n, "'" + key + "' must be an array of token ids");
    std::vector<int32_t> out;
    for (auto& e : *n.as_array()) out.push_back(int32_t(integer(e, key, 0, 1 << 30)));
    return out;
  }
  std::vector<std::string> str_list(const toml::node& n, const std::string& key) const {
    if (!n.is_array()) bad(n, "'" + key + "' must be an array of strings");
    std::vector<std::string> out;
    for (auto& e : *n.as_array()) out.push_back(str(e, key));
    return out;
  }
  // f(), its error (a check shared with the command line, which knows no file) placed at n.
  template <typename F>
  auto at(const toml::node& n, F&& f) const -> decltype(f()) {
    try {
      return f();
    } catch (const Error& e) {
      bad(n, e.what());
    }
  }
  // A size such as "80GiB"; `what` names it in the error ("device memory: ...").
  uint64_t size(const toml::node& n, const std::string& key, const std::string& what) const {
    const std::string text = str(n, key);
    return at(n, [&] { return parse_size(text, what); });
  }
  double positive(const toml::node& n, const std::string& key) const {
    double v = number(n, key);
    if (!(v > 0)) bad(n, "'" + key + "' must be > 0");
    return v;
  }
  const toml::table& sub(const toml::node& n, const std::string& key) const {
    if (!n.is_table()) bad(n, "'" + key + "' must be a table ([" + key + "])");
    return *n.as_table();
  }

  std::string path_;
};

}  // namespace

Config load_config(const std::string& path) {
  refuse_folder(path);
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    auto src = e.source();
    if (src.begin.line == 0) fail(path, ": cannot read config file: ", e.description());
    fail(path, ":", src.begin.line, ":", src.begin.column, ": ", e.description());
  }
  Config c;
  c.source = path;
  Reader r(path);
  r.table(root, "", {
    {"model", [&](const toml::node& n) {
       r.table(r.sub(n, "model"), "model", {
         {"path", [&](const toml::node& v) { c.model = r.str(v, "path"); }},
         {"tokenizer", [&](const toml::node& v) { c.tokenizer = r.str(v, "tokenizer"); }},
         {"initial_state", [&](const toml::node& v) { c.initial_state = r.str(v, "initial_state"); }},
         {"strategy", [&](const toml::node& v) {
            c.strategy = r.str(v, "strategy");
            r.at(v, [&] { parse_strategy(c.strategy); });
          }},
         {"threads", [&](const toml::node& v) { c.threads = int(r.integer(v, "threads", 0, kMaxThreads)); }},
       });
     }},
    {"nodes", [&](const toml::node& n) {
       for (auto& [alias, host] : r.sub(n, "nodes")) {
         const std::string name(alias.str());
         if (!is_node_name(name) || name == "cpu" || name == "cuda")
           r.bad(host, "node alias '" + name + "': use letters, digits, '-', '_' and '.' (and not cpu or cuda), as a strategy's NODE: prefix must");
         c.limits.node_aliases[name] = r.str(host, name);
       }
     }},
    {"tuned_states", [&](const toml::node& n) {
       for (auto& [name, file] : r.sub(n, "tuned_states")) {
         const std::string key(name.str());
         r.at(file, [&] { check_tuned_state_name(key); });
         c.tuned_states[key] = r.str(file, key);
       }
     }},
    {"devices", [&](const toml::node& n) {
       for (auto& [dev, mem] : r.sub(n, "devices")) {
         const std::string key(dev.str());
         const std::string name = r.at(mem, [&] { return device_name(key); });  // "cuda" is cuda:0, as in a strategy
         c.limits.device_memory[name] = r.size(mem, key, "device memory");
       }
     }},
    {"scheduler", [&](const toml::node& n) {
       r.table(r.sub(n, "scheduler"), "scheduler", {
         {"max_slots", [&](const toml::node& v) { c.limits.slots = int(r.integer(v, "max_slots", 1, 1 << 20)); }},
         {"micro_batch_tokens", [&](const toml::node& v) { c.scheduler.micro_batch_tokens = int(r.integer(v, "micro_batch_tokens", 1, 1 << 20)); }},
         {"prefill_chunk", [&](const toml::node& v) { c.scheduler.prefill_chunk = int(r.integer(v, "prefill_chunk", 1, 1 << 20)); }},
         {"batch_invariant", [&](const toml::node& v) {
            if (!v.is_boolean()) r.bad(v, "'batch_invariant' must be true or false");
            c.scheduler.batch_invariant = v.value<bool>().value();
          }},
         {"parked_bytes", [&](const toml::node& v) { c.scheduler.parked_bytes = r.size(v, "parked_bytes", "parked_bytes"); }},
       });
     }},
    {"server", [&](const toml::node& n) {
       r.table(r.sub(n, "server"), "server", {
         {"listen", [&](const toml::node& v) { c.server.listen = r.str(v, "listen"); }},
         {"port", [&](const toml::node& v) { c.server.port = int(r.integer(v, "port", 0, 65535)); }},
         {"http_port", [&](const toml::node& v) { c.server.http_port = int(r.integer(v, "http_port", 0, 65535)); }},
         {"auth_token", [&](const toml::node& v) { c.server.auth_token = r.str(v, "auth_token"); }},
         {"max_request_bytes", [&](const toml::node& v) { c.server.max_request_bytes = r.integer(v, "max_request_bytes", 256, int64_t(1) << 32); }},
         {"max_prompt_tokens", [&](const toml::node& v) { c.server.max_prompt_tokens = int(r.integer(v, "max_prompt_tokens", 1, 1 << 24)); }},
         {"max_tokens_cap", [&](const toml::node& v) { c.server.max_tokens_cap = int(r.integer(v, "max_tokens_cap", 1, 1 << 24)); }},
         {"queue_length", [&](const toml::node& v) { c.server.queue_length = int(r.integer(v, "queue_length", 1, 1 << 24)); }},
         {"per_connection_requests", [&](const toml::node& v) { c.server.per_connection_requests = int(r.integer(v, "per_connection_requests", 1, 1 << 16)); }},
         {"client_buffer_bytes", [&](const toml::node& v) { c.server.client_buffer_bytes = r.integer(v, "client_buffer_bytes", 1024, int64_t(1) << 34); }},
         {"client_timeout_s", [&](const toml::node& v) { c.server.client_timeout_s = r.positive(v, "client_timeout_s"); }},
         {"stall_seconds", [&](const toml::node& v) { c.server.stall_seconds = r.positive(v, "stall_seconds"); }},
         {"allow_origins", [&](const toml::node& v) {
            c.server.allow_origins = r.str_list(v, "allow_origins");
            if (auto* a = v.as_array())
              for (size_t i = 0; i < a->size(); ++i) r.at(*a->get(i), [&] { check_allowed_origin(c.server.allow_origins[i]); });
          }},
       });
     }},
    {"sessions", [&](const toml::node& n) {
       r.table(r.sub(n, "sessions"), "sessions", {
         {"dir", [&](const toml::node& v) { c.sessions.dir = r.str(v, "dir"); }},
         {"host_bytes", [&](const toml::node& v) { c.sessions.host_bytes = r.size(v, "host_bytes", "host_bytes"); }},
         {"persist", [&](const toml::node& v) {
            if (!v.is_boolean()) r.bad(v, "'persist' must be true or false");
            c.sessions.persist = v.value<bool>().value();
          }},
         {"idle_ttl_s", [&](const toml::node& v) { c.sessions.idle_ttl_s = r.integer(v, "idle_ttl_s", 0, int64_t(1) << 40); }},
         {"save_interval_s", [&](const toml::node& v) { c.sessions.save_interval_s = r.integer(v, "save_interval_s", 0, int64_t(1) << 40); }},
       });
     }},
    {"cache", [&](const toml::node& n) {
       r.table(r.sub(n, "cache"), "cache", {
         {"prefix_bytes", [&](const toml::node& v) { c.cache.prefix_bytes = r.size(v, "prefix_bytes", "prefix_bytes"); }},
         {"block_tokens", [&](const toml::node& v) { c.cache.block_tokens = int(r.integer(v, "block_tokens", 1, 1 << 20)); }},
       });
     }},
    {"chat", [&](const toml::node& n) {
       r.table(r.sub(n, "chat"), "chat", {
         {"system_prefix", [&](const toml::node& v) { c.chat.system_prefix = r.str(v, "system_prefix"); }},
         {"user_prefix", [&](const toml::node& v) { c.chat.user_prefix = r.str(v, "user_prefix"); }},
         {"assistant_prefix", [&](const toml::node& v) { c.chat.assistant_prefix = r.str(v, "assistant_prefix"); }},
         {"tool_prefix", [&](const toml::node& v) { c.chat.tool_prefix = r.str(v, "tool_prefix"); }},
         {"tools_intro", [&](const toml::node& v) { c.chat.tools_intro = r.str(v, "tools_intro"); }},
         {"separator", [&](const toml::node& v) { c.chat.separator = r.str(v, "separator"); }},
         {"stop", [&](const toml::node& v) { c.chat.stop = r.str_list(v, "stop"); }},
       });
     }},
    {"sampling", [&](const toml::node& n) {
       // Each value is checked where it is written, so an error points at its key's line.
       auto checked = [&](auto set) {
         return [&, set](const toml::node& v) {
           set(v);
           r.at(v, [&] { c.sampling.validate_ranges(); });
         };
       };
       r.table(r.sub(n, "sampling"), "sampling", {
         {"temperature", checked([&](const toml::node& v) { c.sampling.temperature = r.number(v, "temperature"); })},
         {"top_p", checked([&](const toml::node& v) { c.sampling.top_p = r.number(v, "top_p"); })},
         {"top_k", [&](const toml::node& v) { c.sampling.top_k = int(r.integer(v, "top_k", 0, 1 << 24)); }},
         {"alpha_presence", checked([&](const toml::node& v) { c.sampling.alpha_presence = r.number(v, "alpha_presence"); })},
         {"alpha_frequency", checked([&](const toml::node& v) { c.sampling.alpha_frequency = r.number(v, "alpha_frequency"); })},
         {"alpha_decay", checked([&](const toml::node& v) { c.sampling.alpha_decay = r.number(v, "alpha_decay"); })},
         {"token_ban", [&](const toml::node& v) { c.sampling.token_ban = r.int_list(v, "token_ban"); }},
         {"token_stop", [&](const toml::node& v) { c.sampling.token_stop = r.int_list(v, "token_stop"); }},
         {"stop", checked([&](const toml::node& v) { c.sampling.stop = r.str_list(v, "stop"); })},
         {"seed", [&](const toml::node& v) { c.sampling.seed = uint64_t(r.integer(v, "seed", 0, INT64_MAX)); }},
         {"max_tokens", [&](const toml::node& v) { c.max_tokens = int(r.integer(v, "max_tokens", 0, 1 << 24)); }},
       });
     }},
    {"logging", [&](const toml::node& n) {
       r.table(r.sub(n, "logging"), "logging", {
         {"level", [&](const toml::node& v) {
            c.logging.level = r.str(v, "level");
            if (c.logging.level != "error" && c.logging.level != "warn" && c.logging.level != "info" && c.logging.level != "debug")
              r.bad(v, "'level' must be error, warn, info or debug");
          }},
         {"file", [&](const toml::node& v) { c.logging.file = r.str(v, "file"); }},
       });
     }},
  });
  // Relative paths are relative to the config file, so a config works from any directory.
  auto dir = std::filesystem::path(path).parent_path();
  auto resolve = [&](std::string& p) {
    if (!p.empty() && std::filesystem::path(p).is_relative()) p = (dir / p).lexically_normal().string();
  };
  resolve(c.model);
  resolve(c.initial_state);
  for (auto& [name, file] : c.tuned_states) resolve(file);
  for (std::string kind : {"world:", "bpe:"}) {
    if (c.tokenizer.rfind(kind, 0) != 0) continue;
    std::string v = c.tokenizer.substr(kind.size());
    resolve(v);
    c.tokenizer = kind + v;
  }
  resolve(c.logging.file);
  resolve(c.sessions.dir);
  return c;
}

}  // namespace skein
