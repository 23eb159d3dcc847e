#include "net/http_server.h"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "common/error.h"
#include "common/json_text.h"
#include "net/json_fields.h"
#include "net/lingering_close.h"
#include "net/openai_logprobs.h"
#include "net/openai_request.h"

namespace skein {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using json = nlohmann::json;

namespace {

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

json error_body(const std::string& message, const std::string& type) {
  return {{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}}}};
}

std::string openai_finish(const std::string& reason) {
  return reason == "length" ? "length" : "stop";  // stop_token, stop_string, cancelled
}

class HttpConnection : public std::enable_shared_from_this<HttpConnection> {
 public:
  HttpConnection(tcp::socket socket, asio::io_context& io, InferenceService& service, const Tokenizer& tok, int vocab, const HttpOptions& opts)
      : stream_(std::move(socket)), io_(io), read_timer_(io), service_(service), tok_(tok), vocab_(vocab), opts_(opts) {}

  void start() { read(); }

 private:
  using Response = http::response<http::string_body>;

  void read() {
    parser_.emplace();
    cors_origin_.clear();
    // Beast checks a Content-Length against the limit with the headers, so the largest body any route
    // takes is the limit until the headers say which route this is.
    body_limit_ = std::max(opts_.max_body_bytes, opts_.state_file_bytes);
    parser_->body_limit(body_limit_);
    // Beast's 8 KiB would refuse a session upload whose pending tokens (a prompt cut short by a cancel)
    // fill its header: room for a prompt's worth of ids.
    parser_->header_limit(uint32_t(std::min<int64_t>(int64_t(1) << 20, 8192 + 8 * int64_t(std::max(0, opts_.limits.max_prompt_tokens)))));
    // A slow or stalled client cannot hold the connection: our own timer (beast's stream timeout would
    // close the socket before we could say why).
    stream_.expires_never();
    timed_out_ = false;
    auto self = shared_from_this();
    read_timer_.expires_after(timeout());
    read_timer_.async_wait([this, self](beast::error_code ec) {
      if (ec) return;
      timed_out_ = true;
      beast::error_code ignored;
      stream_.socket().cancel(ignored);
    });
    // Headers first: a session upload's body is a state file, larger than any JSON request may be.
    http::async_read_header(stream_, buffer_, *parser_, [this, self](beast::error_code ec, size_t) {
      if (ec) return received(ec);
      cors_origin_ = allowed_origin(parser_->get());  // its refusals (401, 413) are read by the page too
      const bool upload = is_state_upload(parser_->get());
      if (upload && !authorized(parser_->get())) {  // before taking a state file's worth of body
        read_timer_.cancel();
        req_ = parser_->release();
        keep_alive_ = false;
        return unauthorized();
      }
      if (!upload) {
        body_limit_ = opts_.max_body_bytes;
        parser_->body_limit(body_limit_);
        if (parser_->content_length().value_or(0) > body_limit_) return received(http::error::body_limit);
      }
      auto read_body = [this, self] {
        http::async_read(stream_, buffer_, *parser_, [this, self](beast::error_code ec2, size_t) { received(ec2); });
      };
      // curl and others wait up to a second for this before sending a large body (a state file).
      const auto expect = parser_->get().find(http::field::expect);
      if (expect == parser_->get().end() || !beast::iequals(expect->value(), "100-continue") || parser_->is_done()) return read_body();
      auto go_on = std::make_shared<http::response<http::empty_body>>(http::status::continue_, parser_->get().version());
      http::async_write(stream_, *go_on, [this, self, go_on, read_body](beast::error_code ec2, size_t) {
        if (ec2) return close();
        read_body();
      });
    });
  }

  // CORS: what Access-Control-Allow-Origin answers a request from a web page whose origin the server
  // allows ("*" when any is), or "" (no such header: the browser keeps the answer from the page).
  std::string allowed_origin(const http::request<http::string_body>& r) const {
    const auto it = r.find(http::field::origin);
    if (it == r.end()) return "";
    const std::string origin(it->value());
    for (const std::string& allowed : opts_.allow_origins)
      if (allowed == "*" || allowed == origin) return allowed;
    return "";
  }
  std::vector<std::pair<std::string, std::string>> cors_headers() const {
    if (cors_origin_.empty()) return {};
    return {{"Access-Control-Allow-Origin", cors_origin_}, {"Vary", "Origin"}, {"Access-Control-Expose-Headers", "Skein-Session-Tokens, Skein-Session-Pending"}};
  }
  // A browser asks before a cross-origin call that has a body or an Authorization header: any route,
  // method and header it names is allowed to an allowed origin (the route answers for itself then).
  void preflight() {
    const auto origin = req_.find(http::field::origin);
    if (origin == req_.end() || req_.find(http::field::access_control_request_method) == req_.end()) return method_not_allowed();
    if (cors_origin_.empty())
      return reply(403, error_body("cross-origin requests from " + std::string(origin->value()).substr(0, 200) +
                                       " are not allowed (skein serve --allow-origin, [server] allow_origins)", "invalid_request_error"),
                   keep_alive_);
    std::vector<std::pair<std::string, std::string>> headers = {{"Access-Control-Allow-Methods", "GET, POST, PUT, DELETE"}, {"Access-Control-Max-Age", "600"}};
    if (auto asked = req_.find(http::field::access_control_request_headers); asked != req_.end())
      headers.emplace_back("Access-Control-Allow-Headers", std::string(asked->value()));
    reply_text(204, "", "", keep_alive_, headers);
  }

  bool authorized(const http::request<http::string_body>& r) const {
    if (opts_.limits.auth_token.empty()) return true;
    auto it = r.find(http::field::authorization);
    if (it == r.end()) return false;
    const beast::string_view value = it->value(), scheme = "Bearer ";  // the scheme is case-insensitive (RFC 7235)
    if (value.size() < scheme.size() || !beast::iequals(value.substr(0, scheme.size()), scheme)) return false;
    return token_accepted(opts_.limits, std::string_view(value.data() + scheme.size(), value.size() - scheme.size()));
  }
  void unauthorized() { reply(401, error_body("unauthorized: send 'Authorization: Bearer <token>'", "authentication_error"), keep_alive_); }

  static bool is_state_upload(const http::request<http::string_body>& r) {
    std::string_view target(r.target().data(), r.target().size());
    target = target.substr(0, target.find('?'));
    return r.method() == http::verb::put && target.rfind("/v1/sessions/", 0) == 0 && target.size() > 6 &&
           target.substr(target.size() - 6) == "/state";
  }

  void received(beast::error_code ec) {
    read_timer_.cancel();
    if (timed_out_ && parser_->got_some())
      return reply(408, error_body("request not received within " + std::to_string(opts_.client_timeout_s) + " s", "invalid_request_error"), false);
    if (timed_out_) return close();
    if (ec == http::error::body_limit)
      return reply(413, error_body("request body exceeds " + std::to_string(body_limit_) + " bytes", "invalid_request_error"), false);
    if (ec == http::error::header_limit) return reply(431, error_body("request headers too large", "invalid_request_error"), false);
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted) return close();
    if (ec) return reply(400, error_body(std::string("malformed HTTP request: ") + ec.message(), "invalid_request_error"), false);
    req_ = parser_->release();
    keep_alive_ = req_.keep_alive();
    route();
  }

  std::chrono::steady_clock::duration timeout() const {
    return std::chrono::milliseconds(int64_t(opts_.client_timeout_s * 1000));
  }

  void route() {
    std::string target(req_.target());
    if (auto q = target.find('?'); q != std::string::npos) target.resize(q);
    const auto verb = req_.method();
    if (verb == http::verb::options) return preflight();  // before the token check: a browser sends none with it
    if (target == "/health") {
      if (verb != http::verb::get) return method_not_allowed();
      auto h = service_.health();
      json j = {{"status", h.status}, {"queued", service_.queued()}, {"running", service_.running()}};
      if (!h.detail.empty()) j["detail"] = h.detail;
      return reply(h.ok ? 200 : 503, j, keep_alive_);
    }
    if (target == "/metrics") {
      if (verb != http::verb::get) return method_not_allowed();
      return reply_text(200, "text/plain; version=0.0.4; charset=utf-8", service_.metrics().prometheus(), keep_alive_);
    }
    const bool tokenizer = target == "/tokenize" || target == "/detokenize" || target == "/tokenizer_info";
    if (target.rfind("/v1/", 0) != 0 && !tokenizer)
      return reply(404, error_body("no route for " + target.substr(0, 200), "invalid_request_error"), keep_alive_);
    if (!authorized(req_)) return unauthorized();
    if (tokenizer) return tokenizer_route(target, verb);
    if (target == "/v1/models") {
      if (verb != http::verb::get) return method_not_allowed();
      // The model, then its tuned states (vLLM lists LoRA adapters the same way, with their parent).
      json data = json::array();
      for (const std::string& name : service_.model_names()) {
        data.push_back({{"id", name}, {"object", "model"}, {"created", 0}, {"owned_by", "skein"}});
        if (name != service_.model_name()) data.back()["parent"] = service_.model_name();
      }
      return reply(200, {{"object", "list"}, {"data", data}}, keep_alive_);
    }
    if (target == "/v1/completions" || target == "/v1/chat/completions") {
      if (verb != http::verb::post) return method_not_allowed();
      return generate(target == "/v1/chat/completions");
    }
    if (target == "/v1/sessions" || target.rfind("/v1/sessions/", 0) == 0) return session(target, verb);
    reply(404, error_body("no route for " + target.substr(0, 200), "invalid_request_error"), keep_alive_);
  }

  // The served model's tokenizer, at vLLM's routes, so a client counts and cuts tokens as the server
  // does (lm-evaluation-harness's remote tokenizer uses them: RWKV's World vocabulary has no Hugging
  // Face tokenizer of its own). POST /tokenize {"prompt"} gives {"tokens", "count", "max_model_len"},
  // POST /detokenize {"tokens"} gives {"prompt"}, GET /tokenizer_info the special tokens' texts.
  void tokenizer_route(const std::string& target, http::verb verb) {
    if (target == "/tokenizer_info") {
      if (verb != http::verb::get) return method_not_allowed();
      json eos = nullptr;  // the text that encodes to the end-of-text token, where there is one
      if (auto name = tok_.end_of_text_name()) eos = *name;
      return reply(200, {{"eos_token", eos}, {"bos_token", nullptr}, {"pad_token", nullptr}, {"model_max_length", opts_.limits.max_prompt_tokens}},
                   keep_alive_);
    }
    if (verb != http::verb::post) return method_not_allowed();
    try {
      json body = json_fields::body_object(req_.body());
      if (target == "/tokenize") {
        if (!body.contains("prompt") || !body["prompt"].is_string()) fail("prompt: must be a string");
        const std::vector<int32_t> ids = tok_.encode(body["prompt"].get<std::string>());
        return reply(200, {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", opts_.limits.max_prompt_tokens}}, keep_alive_);
      }
      if (!body.contains("tokens")) fail("tokens: required");
      return reply(200, {{"prompt", tok_.decode(json_fields::token_ids(body["tokens"], "tokens", vocab_))}}, keep_alive_);
    } catch (const Error& e) {
      return reply(400, error_body(e.what(), "invalid_request_error"), keep_alive_);
    }
  }

  // The TCP protocol's session operations (docs/protocol.md) for HTTP clients: GET /v1/sessions lists
  // them, DELETE /v1/sessions/NAME forgets one, POST /v1/sessions/NAME/save writes it to the sessions
  // folder and POST /v1/sessions/NAME/fork with {"to": "NEW"} branches it. GET and PUT
  // /v1/sessions/NAME/state download and upload a session as a state file (HTTP only: it is binary).
  void session(const std::string& target, http::verb verb) {
    SessionOp op = SessionOp::List;
    std::string name, to;
    if (target != "/v1/sessions") {
      const std::string rest = target.substr(std::string("/v1/sessions/").size());
      const size_t slash = rest.find('/');
      name = rest.substr(0, slash);
      const std::string action = slash == std::string::npos ? "" : rest.substr(slash + 1);
      if (action.empty()) op = SessionOp::Delete;
      else if (action == "save") op = SessionOp::Save;
      else if (action == "fork") op = SessionOp::Fork;
      else if (action == "state") op = verb == http::verb::put ? SessionOp::Import : SessionOp::Export;
      else return reply(404, error_body("no route for " + target.substr(0, 200), "invalid_request_error"), keep_alive_);
    }
    const http::verb want = op == SessionOp::List || op == SessionOp::Export ? http::verb::get
                            : op == SessionOp::Delete                        ? http::verb::delete_
                            : op == SessionOp::Import                        ? http::verb::put
                                                                             : http::verb::post;
    if (verb != want) return method_not_allowed();
    SessionSnapshot upload;
    if (op == SessionOp::Import) {
      try {
        upload = snapshot_of_request();
      } catch (const Error& e) {
        return reply(400, error_body(e.what(), "invalid_request_error"), keep_alive_);
      }
    }
    if (op == SessionOp::Fork) {
      const json body = json::parse(req_.body(), nullptr, false);
      if (!body.is_object() || body.size() != 1 || !body.contains("to") || !body["to"].is_string())
        return reply(400, error_body("fork: the body must be {\"to\": \"<new session name>\"}", "invalid_request_error"), keep_alive_);
      to = body["to"];
    }
    auto self = shared_from_this();
    service_.session_op(op, name, [this, self, op, name, to](InferenceService::SessionOpResult r) {
      asio::post(io_, [this, self, op, name, to, r = std::move(r)]() mutable { session_done(op, name, to, std::move(r)); });
    }, to, std::move(upload));
  }

  // A session travels as its state file in the body and its bookkeeping in two headers: how many tokens
  // the state has seen, and the tokens it has not seen yet (comma-separated ids; they run before the
  // next prompt, so dropping them would lose the last generated token from the conversation).
  static constexpr const char* kTokensHeader = "Skein-Session-Tokens";
  static constexpr const char* kPendingHeader = "Skein-Session-Pending";

  SessionSnapshot snapshot_of_request() {
    SessionSnapshot s;
    s.state_file = std::move(req_.body());  // the request is done with its body
    if (auto it = req_.find(kTokensHeader); it != req_.end()) {
      const std::string v(it->value());
      const json n = json::parse(v, nullptr, false);
      if (!n.is_number_unsigned()) fail(kTokensHeader, ": must be a whole number >= 0, got '", v.substr(0, 40), "'");
      s.tokens = n.get<uint64_t>();
    }
    if (auto it = req_.find(kPendingHeader); it != req_.end()) {
      const std::string v(it->value());
      const json ids = json::parse("[" + v + "]", nullptr, false);
      if (ids.is_discarded()) fail(kPendingHeader, ": must be comma-separated token ids, got '", v.substr(0, 40), "'");
      s.pending = json_fields::token_ids(ids, kPendingHeader, vocab_);
    }
    return s;
  }

  void reply_snapshot(SessionSnapshot s) {
    std::string pending;
    for (int32_t t : s.pending) pending += (pending.empty() ? "" : ",") + std::to_string(t);
    reply_text(200, "application/octet-stream", std::move(s.state_file), keep_alive_,
               {{kTokensHeader, std::to_string(s.tokens)}, {kPendingHeader, pending}});
  }

  void session_refused(SessionFault fault, const std::string& error) {
    switch (fault) {
      case SessionFault::BadRequest: return reply(400, error_body(error, "invalid_request_error"), keep_alive_);
      case SessionFault::NotFound: return reply(404, error_body(error, "not_found_error"), keep_alive_);
      case SessionFault::Conflict: return reply(409, error_body(error, "conflict_error"), keep_alive_);
      case SessionFault::NoRoom: return reply(503, error_body(error, "overloaded"), keep_alive_);
      case SessionFault::Failed: return reply(500, error_body(error, "server_error"), keep_alive_);
    }
  }

  // A generation the service refused: a session's refusal with its status (409 for a busy session), a
  // full queue 429, anything else 400.
  void refused(const GenerationSummary& s) {
    if (s.session_fault) return session_refused(*s.session_fault, s.error);
    reply(s.error.rfind("overloaded", 0) == 0 ? 429 : 400, error_body(s.error, "invalid_request_error"), keep_alive_);
  }

  void session_done(SessionOp op, const std::string& name, const std::string& to, InferenceService::SessionOpResult r) {
    if (!r.error.empty()) return session_refused(r.fault, r.error);
    if (op == SessionOp::List) {
      json data = json::array();
      for (auto& s : r.sessions)
        data.push_back({{"id", s.name}, {"object", "session"}, {"tokens", s.tokens}, {"where", s.where}, {"busy", s.busy}, {"idle_s", s.idle_seconds}});
      return reply(200, {{"object", "list"}, {"data", data}}, keep_alive_);
    }
    if (op == SessionOp::Fork) return reply(200, {{"id", to}, {"object", "session"}, {"forked_from", name}}, keep_alive_);
    if (op == SessionOp::Export) return reply_snapshot(std::move(r.snapshot));
    if (op == SessionOp::Import) return reply(201, {{"id", name}, {"object", "session"}, {"imported", true}}, keep_alive_);
    reply(200, {{"id", name}, {"object", "session"}, {op == SessionOp::Save ? "saved" : "deleted", true}}, keep_alive_);
  }

  void method_not_allowed() { reply(405, error_body("method not allowed", "invalid_request_error"), keep_alive_); }

  void generate(bool chat) {
    OpenAiRequest r;
    try {
      r = parse_openai_request(req_.body(), chat, tok_, vocab_, opts_.limits, opts_.chat);
    } catch (const Error& e) {
      return reply(400, error_body(e.what(), "invalid_request_error"), keep_alive_);
    }
    std::string tuned_state;
    try {
      tuned_state = service_.tuned_state_for(r.model);
    } catch (const Error& e) {
      json body = error_body(e.what(), "invalid_request_error");
      body["error"]["code"] = "model_not_found";  // OpenAI's answer for a model it does not have
      return reply(404, body, keep_alive_);
    }
    model_ = tuned_state.empty() ? service_.model_name() : tuned_state;
    chat_ = chat;
    stream_mode_ = r.stream;
    include_usage_ = r.include_usage;
    logprobs_ = r.sampling.logprobs >= 0;
    echo_ = r.echo;
    n_ = r.n;
    tools_ = r.tools;
    refusal_.reset();
    running_ = 0;
    id_ = std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(unix_now()) + "-" + std::to_string(++g_next_id);
    created_ = unix_now();
    choices_.assign(r.prompts.size() * size_t(r.n), Choice{});
    if (chat)
      for (auto& c : choices_) c.watch.emplace(tools_);
    std::weak_ptr<HttpConnection> weak = shared_from_this();
    service_ids_.clear();
    // Prompt p's n samples are choices p*n .. p*n+n-1; each prompt is a service request of its own.
    for (size_t p = 0; p < r.prompts.size(); ++p) {
      ServiceRequest base;
      base.prompt = r.prompts[p].tokens;
      base.preamble = r.prompts[p].preamble;
      base.max_tokens = r.max_tokens;
      base.sampling = r.sampling;
      base.session = r.session;
      base.priority = r.priority;
      base.tuned_state = tuned_state;
      base.score_prompt = echo_ && logprobs_;
      ServiceRequest first = samples_of(base, r.n, [&](ServiceRequest& sr, int sample) {
        const int i = int(p) * r.n + sample;
        // on_delta may run after the connection is gone: it holds the io_context and a weak pointer only.
        asio::io_context& io = io_;
        if (r.stream && sr.score_prompt)
          sr.on_prompt_scores = [&io, weak, i](const std::vector<SampledToken>& scores) {
            asio::post(io, [weak, scores, i] {
              if (auto c = weak.lock()) c->stream_echo(i, scores);
            });
          };
        if (r.stream)
          sr.on_delta = [&io, weak, i](const std::string& text, const std::vector<SampledToken>& tokens) {
            std::vector<SampledToken> scored;
            if (!tokens.empty() && tokens.front().scored) scored = tokens;
            asio::post(io, [weak, text, i, scored = std::move(scored)] {
              if (auto c = weak.lock()) c->stream_delta(i, text, scored);
            });
          };
        // The connection lives until its requests are done (the service calls on_done exactly once each).
        sr.on_done = [this, self = shared_from_this(), i](const GenerationSummary& s) {
          asio::post(io_, [self, s, i] { self->done(i, s); });
        };
      });
      try {
        service_ids_.push_back(service_.submit(std::move(first)));
        running_ += r.n;
      } catch (const Error& e) {
        std::string what = e.what();
        bool overloaded = what.rfind("overloaded", 0) == 0;
        Refusal no{overloaded ? 429 : 503, error_body(what, overloaded ? "overloaded" : "server_error")};
        if (service_ids_.empty()) return reply(no.status, no.body, keep_alive_);
        // Earlier prompts of the batch are running: they are cancelled, and the answer waits for them.
        refusal_ = std::move(no);
        for (uint64_t id : service_ids_) service_.cancel(id);
        watch_disconnect();
        return;
      }
    }
    prompts_ = std::move(r.prompts);
    if (r.stream) {
      std::string head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\nServer: skein\r\n";
      for (auto& [k, v] : cors_headers()) head += k + ": " + v + "\r\n";
      head += "\r\n";
      service_.metrics().http_request(200);
      send_raw(std::move(head));
      if (chat_)
        for (int i = 0; i < int(choices_.size()); ++i) send_event(chunk(i, json{{"role", "assistant"}, {"content", ""}}, nullptr));
      if (echo_ && !logprobs_)  // else once the prompt is scored
        for (int i = 0; i < int(choices_.size()); ++i) send_event(chunk(i, json(prompt_of(i).text), nullptr));
    }
    watch_disconnect();
  }

  // While a request runs the client normally sends nothing; a read that ends means it went away (and its
  // request is cancelled). Bytes that do come (a pipelined request) are kept for the next read.
  void watch_disconnect() {
    auto self = shared_from_this();
    auto buf = buffer_.prepare(4096);
    stream_.expires_never();
    stream_.async_read_some(buf, [this, self](beast::error_code ec, size_t n) {
      if (ec) {
        if (running_) close();
        return;
      }
      buffer_.commit(n);
      if (running_) watch_disconnect();
    });
  }

  json chunk(int index, const json& delta_or_text, const json& finish, const json& logprobs = nullptr) {
    json choice = {{"index", index}, {"finish_reason", finish}, {"logprobs", logprobs}};
    if (chat_) choice["delta"] = delta_or_text;
    else choice["text"] = delta_or_text;
    return {{"id", id_}, {"object", chat_ ? "chat.completion.chunk" : "text_completion"}, {"created", created_}, {"model", model_},
            {"choices", json::array({choice})}};
  }

  // The assistant's reply follows "Assistant:"; the space the model writes first is not content.
  std::string content(int index, std::string text) {
    bool& started = choices_[size_t(index)].content_started;
    if (chat_ && !started) {
      size_t i = text.find_first_not_of(' ');
      text = i == std::string::npos ? "" : text.substr(i);
      if (!text.empty()) started = true;
    }
    return text;
  }

  const OpenAiPrompt& prompt_of(int choice) const { return prompts_[size_t(choice / n_)]; }

  void stream_echo(int index, const std::vector<SampledToken>& scores) {
    if (refusal_) return;
    const OpenAiPrompt& p = prompt_of(index);
    send_event(chunk(index, json(p.text), nullptr, echo_logprobs(tok_, p.tokens, scores, choices_[size_t(index)].text_offset)));
  }

  // Tokens whose text the chat reply drops (its first space) still carry their log-probabilities.
  // Text that may still become a tool call waits in the choice's watch, its tokens' scores with it.
  void stream_delta(int index, const std::string& text, const std::vector<SampledToken>& scored) {
    if (refusal_) return;
    std::string t = content(index, text);
    Choice& c = choices_[size_t(index)];
    if (c.watch) {
      t = c.watch->feed(t);
      c.held_scores.insert(c.held_scores.end(), scored.begin(), scored.end());
      if (c.watch->holding()) return;
    } else {
      c.held_scores = scored;
    }
    if (t.empty() && c.held_scores.empty()) return;
    send_event(chunk(index, chat_ ? json{{"content", t}} : json(t), nullptr, logprobs(index, std::exchange(c.held_scores, {}))));
  }

  // A tool call as OpenAI gives it in a message, and in a stream's delta with its index.
  json tool_calls(int index, const ToolCall& call, bool delta) const {
    json c = {{"id", "call_" + id_.substr(id_.find('-') + 1) + "_" + std::to_string(index)}, {"type", "function"},
              {"function", {{"name", call.name}, {"arguments", call.arguments}}}};
    if (delta) c["index"] = 0;
    return json::array({c});
  }
  // OpenAI ends a call it chose with "tool_calls", one the request named with "stop".
  std::string finish_of(const GenerationSummary& s, bool called) const {
    if (called && tools_.choice != ChatTools::Choice::Named) return "tool_calls";
    return openai_finish(s.finish_reason);
  }

  json logprobs(int index, const std::vector<SampledToken>& scored) {
    if (!logprobs_) return nullptr;
    if (chat_) return chat_logprobs(tok_, scored);
    return completion_logprobs(tok_, scored, choices_[size_t(index)].text_offset);
  }

  // Choice `index` ended; the reply (or the stream's end) waits for every choice.
  void done(int index, const GenerationSummary& s) {
    choices_[size_t(index)].summary = s;
    --running_;
    if (abandoned_) return;  // the client is gone
    if (refusal_) {  // a batch that could not be queued whole: the answer waits for its cancelled prompts
      if (running_ > 0) return;
      beast::error_code ignored;
      stream_.socket().cancel(ignored);
      return reply(refusal_->status, refusal_->body, keep_alive_);
    }
    if (stream_mode_) {
      Choice& c = choices_[size_t(index)];
      std::optional<ToolCall> call;
      if (c.watch && s.finish_reason != "error") {  // what the watch held is a call or content
        ToolCallWatch::End end = c.watch->finish();
        call = end.call;
        json delta = call ? json{{"tool_calls", tool_calls(index, *call, true)}} : json{{"content", end.content}};
        if (call || !end.content.empty() || !c.held_scores.empty())
          send_event(chunk(index, delta, nullptr, logprobs(index, std::exchange(c.held_scores, {}))));
      }
      if (s.finish_reason == "error") send_event(error_body(s.error, "server_error"));
      else send_event(chunk(index, chat_ ? json::object() : json(""), finish_of(s, call.has_value())));
    }
    if (running_ > 0) return;
    beast::error_code ignored;
    stream_.socket().cancel(ignored);  // ends watch_disconnect's read before the next one starts
    // Usage counts each prompt once (its first choice's figures) and every choice's tokens.
    int prompt = 0, cached = 0, completion = 0;
    for (size_t i = 0; i < choices_.size(); ++i) {
      const GenerationSummary& c = choices_[i].summary;
      if (i % size_t(n_) == 0) {
        prompt += c.prompt_tokens;
        cached += c.cached_tokens;
      }
      completion += c.completion_tokens;
    }
    json usage = {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion},
                  {"prompt_tokens_details", {{"cached_tokens", cached}}}};
    if (stream_mode_) {
      if (include_usage_) {
        json u = chunk(0, json::object(), nullptr);
        u["choices"] = json::array();
        u["usage"] = usage;
        send_event(u);
      }
      send_raw("data: [DONE]\n\n");
      closing_ = true;
      return;
    }
    for (auto& c : choices_)
      if (c.summary.finish_reason == "error") return refused(c.summary);
    json list = json::array();
    for (size_t i = 0; i < choices_.size(); ++i) {
      const GenerationSummary& c = choices_[i].summary;
      json choice = {{"index", i}, {"finish_reason", openai_finish(c.finish_reason)}};
      if (chat_) {
        ToolCallWatch watch(tools_);
        std::string text = watch.feed(content(int(i), c.text));
        ToolCallWatch::End end = watch.finish();
        choice["message"] = {{"role", "assistant"}, {"content", end.call ? json(nullptr) : json(text + end.content)}};
        if (end.call) choice["message"]["tool_calls"] = tool_calls(int(i), *end.call, false);
        choice["finish_reason"] = finish_of(c, end.call.has_value());
      } else {
        choice["text"] = (echo_ ? prompt_of(int(i)).text : "") + c.text;
      }
      if (echo_ && logprobs_) {
        json lp = echo_logprobs(tok_, prompt_of(int(i)).tokens, c.prompt_logprobs, choices_[i].text_offset);
        append_logprobs(lp, logprobs(int(i), c.logprobs));
        choice["logprobs"] = lp;
      } else {
        choice["logprobs"] = logprobs(int(i), c.logprobs);
      }
      list.push_back(choice);
    }
    json body = {{"id", id_}, {"object", chat_ ? "chat.completion" : "text_completion"}, {"created", created_}, {"model", model_},
                 {"choices", list}, {"usage", usage}};
    reply(200, body, keep_alive_);
  }

  void send_event(const json& j) { send_raw("data: " + json_text(j) + "\n\n"); }

  // Streamed bytes wait here while the client is slow; past the buffer bound the client is dropped.
  void send_raw(std::string bytes) {
    if (!stream_.socket().is_open()) return;
    out_bytes_ += bytes.size();
    out_.push_back(std::move(bytes));
    if (out_bytes_ > opts_.client_buffer_bytes) return close();
    if (out_.size() == 1) flush();
  }

  void flush() {
    auto self = shared_from_this();
    stream_.expires_after(timeout());
    asio::async_write(stream_, asio::buffer(out_.front()), [this, self](beast::error_code ec, size_t) {
      if (ec) return close();
      out_bytes_ -= out_.front().size();
      out_.pop_front();
      if (!out_.empty()) flush();
      else if (closing_) close();
    });
  }

  void reply(int status, const json& body, bool keep_alive) {
    reply_text(status, "application/json", json_text(body), keep_alive);
  }

  void reply_text(int status, const std::string& type, std::string body, bool keep_alive,
                  const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    service_.metrics().http_request(status);
    auto res = std::make_shared<Response>(http::status(status), req_.version() ? req_.version() : 11);
    res->set(http::field::server, "skein");
    if (!type.empty()) res->set(http::field::content_type, type);
    for (auto& [k, v] : cors_headers()) res->set(k, v);
    for (auto& [k, v] : headers) res->set(k, v);
    res->keep_alive(keep_alive);
    res->body() = std::move(body);
    res->prepare_payload();
    auto self = shared_from_this();
    stream_.expires_after(timeout());
    http::async_write(stream_, *res, [this, self, res](beast::error_code ec, size_t) {
      if (ec) return close();
      if (!res->keep_alive()) return linger();
      read();
    });
  }

  // The reply is sent and the connection ends: a client still sending (a refused body) may finish and
  // read it, for at most a timeout period.
  void linger() {
    auto self = shared_from_this();
    read_timer_.expires_after(timeout());
    read_timer_.async_wait([this, self](beast::error_code ec) {
      if (!ec) close();
    });
    close_lingering(stream_.socket(), self, [this, self] { close(); });
  }

  void close() {
    if (running_ > 0 && !abandoned_) {
      abandoned_ = true;
      for (uint64_t id : service_ids_) service_.cancel(id);  // a client that went away frees its slots
    }
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);  // a write in flight ends with an error; out_ stays valid until then
    read_timer_.cancel();
  }

  static inline std::atomic<uint64_t> g_next_id{0};
  beast::tcp_stream stream_;
  asio::io_context& io_;
  asio::steady_timer read_timer_;
  bool timed_out_ = false;
  InferenceService& service_;
  const Tokenizer& tok_;
  int vocab_;
  const HttpOptions& opts_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> req_;
  bool keep_alive_ = true;
  size_t body_limit_ = 0;    // of the request being read
  std::string cors_origin_;  // of the request being read: allowed_origin's answer
  // The request being generated (one at a time per connection, as HTTP/1.1 has it): its n choices.
  struct Choice {
    bool content_started = false;
    std::optional<ToolCallWatch> watch;      // chat: tells a tool call from content as the reply streams
    std::vector<SampledToken> held_scores;  // the scores of the text the watch holds
    size_t text_offset = 0;  // characters of the completion so far (completions' logprobs)
    GenerationSummary summary;
  };
  std::vector<Choice> choices_;
  bool chat_ = false, stream_mode_ = false, include_usage_ = false, closing_ = false, abandoned_ = false;
  bool logprobs_ = false;  // the request asked for log-probabilities
  bool echo_ = false;      // completions: the prompt starts the reply (and, with logprobs, is scored)
  std::vector<OpenAiPrompt> prompts_;
  int n_ = 1;  // choices per prompt
  ChatTools tools_;  // chat: the tools the request offers
  struct Refusal {
    int status;
    json body;
  };
  std::optional<Refusal> refusal_;  // a batch refused part way: sent once its running prompts are cancelled
  int running_ = 0;  // choices not yet done
  std::vector<uint64_t> service_ids_;  // each prompt's first choice: cancelling it cancels the prompt's choices
  std::string id_;
  std::string model_;  // the model or tuned state answering, as responses name it
  int64_t created_ = 0;
  std::deque<std::string> out_;
  size_t out_bytes_ = 0;
};

}  // namespace

namespace {
// What a client gets when the server is out of file descriptors (net/listener.h): written whole
// before the connection is read, so it is plain bytes.
std::string no_descriptors_reply() {
  const std::string body = json_text(error_body(kNoDescriptorsRefusal, "overloaded"));
  return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}
}  // namespace

HttpServer::HttpServer(asio::io_context& io, std::unique_ptr<Listener> listener, InferenceService& service, const Tokenizer& tok,
                       int vocab, HttpOptions opts)
    : io_(io),
      service_(service),
      tok_(tok),
      vocab_(vocab),
      opts_(std::move(opts)),
      listener_(std::move(listener)) {
  listener_->start(
      no_descriptors_reply(), [this](tcp::socket socket) { std::make_shared<HttpConnection>(std::move(socket), io_, service_, tok_, vocab_, opts_)->start(); },
      [this] { service_.metrics().connection_refused("http"); });
}

}  // namespace skein
