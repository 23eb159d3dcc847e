#include "net/tcp_server.h"

#include <cstdio>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/log.h"
#include "common/json_text.h"
#include "net/lingering_close.h"

namespace skein {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// [{"token": id, "logprob": x, "top": [{"token": id, "logprob": y}, ...]}, ...] (docs/protocol.md)
nlohmann::json logprobs_json(const std::vector<SampledToken>& tokens) {
  nlohmann::json out = nlohmann::json::array();
  for (const SampledToken& t : tokens) {
    nlohmann::json top = nlohmann::json::array();
    for (const TokenLogprob& a : t.top) top.push_back({{"token", a.token}, {"logprob", json_float(a.logprob)}});
    out.push_back({{"token", t.token}, {"logprob", json_float(t.logprob)}, {"top", top}});
  }
  return out;
}

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, asio::io_context& io, InferenceService& service, const Tokenizer& tok, int vocab, const TcpOptions& opts)
      : socket_(std::move(socket)), io_(io), timer_(io), service_(service), tok_(tok), vocab_(vocab), limits_(opts.limits), opts_(opts),
        buf_(opts.max_line_bytes), max_requests_(opts.per_connection_requests) {}

  void start() {
    read();
    watch();
  }

 private:
  // A client that starts a line and stalls (or trickles it) is told so and dropped: a line still
  // unfinished at two consecutive ticks, with no line completed in between, took longer than the timeout.
  // An idle connection between lines may stay open.
  void watch() {
    timer_.expires_after(std::chrono::milliseconds(int64_t(opts_.client_timeout_s * 1000)));
    auto self = shared_from_this();
    timer_.async_wait([this, self](boost::system::error_code ec) {
      if (ec || !socket_.is_open() || lingering_) return;
      if (closing_) return close();  // the goodbye could not be delivered in a whole period
      if (buf_.size() > 0 && partial_at_tick_ && lines_read_ == lines_at_tick_)
        send_error("", "request line not finished within " + std::to_string(opts_.client_timeout_s) + " s", true);
      partial_at_tick_ = buf_.size() > 0;
      lines_at_tick_ = lines_read_;
      watch();
    });
  }

  void read() {
    auto self = shared_from_this();
    reading_ = true;
    asio::async_read_until(socket_, buf_, '\n', [this, self](boost::system::error_code ec, size_t n) {
      reading_ = false;
      if (ec == asio::error::not_found) {  // a line longer than the limit: say so, then hang up
        send_error("", "request line exceeds " + std::to_string(buf_.max_size()) + " bytes", true);
        return;
      }
      if (ec) return close();
      std::string line(asio::buffers_begin(buf_.data()), asio::buffers_begin(buf_.data()) + long(n));
      buf_.consume(n);
      ++lines_read_;
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
      if (!line.empty()) handle(line);
      if (!closing_) read();
    });
  }

  void handle(const std::string& line) {
    if (!is_utf8(line)) {
      send_error("", "not UTF-8 text: this port speaks newline-delimited JSON", true);
      return;
    }
    ApiLine req;
    try {
      req = parse_api_line(line, tok_, vocab_, limits_);
    } catch (const Error& e) {
      std::string id;
      try {
        auto j = nlohmann::json::parse(line);
        if (j.is_object() && j.contains("id") && j["id"].is_string()) id = j["id"];
      } catch (...) {
      }
      send_error(id, e.what(), false);
      return;
    }
    if (req.session_op && req.session_op->op == "list_models") {
      nlohmann::json j = {{"event", "models"}, {"models", service_.model_names()}};
      if (!req.session_op->id.empty()) j["id"] = req.session_op->id;
      return write(json_text(j));
    }
    if (req.session_op) return session_op(*req.session_op);
    if (req.cancel) {
      auto it = running_.find(req.cancel->id);
      if (it == running_.end()) send_error(req.cancel->id, "no running request with this id", false);
      else service_.cancel(it->second.service_id);  // every sample of it
      return;
    }
    ApiGenerate& g = *req.generate;
    std::string tuned_state;
    try {
      tuned_state = service_.tuned_state_for(g.model);
    } catch (const Error& e) {
      return send_error(g.id, e.what(), false);
    }
    if (running_.count(g.id)) return send_error(g.id, "a request with this id is already running on this connection", false);
    if (int(running_.size()) >= max_requests_)
      return send_error(g.id, "too many requests on this connection (limit " + std::to_string(max_requests_) + ")", false);
    std::weak_ptr<Connection> weak = shared_from_this();
    std::string id = g.id;
    const bool stream = g.stream;
    const int n = g.n;
    const bool logprobs = g.sampling.logprobs >= 0, score_prompt = g.score_prompt;
    ServiceRequest base;
    base.prompt = std::move(g.prompt);
    base.max_tokens = g.max_tokens;
    base.sampling = std::move(g.sampling);
    base.session = g.session;
    base.priority = g.priority;
    base.tuned_state = tuned_state;
    base.score_prompt = g.score_prompt;
    // Sample i (samples_of); with several, every event carries its "index".
    ServiceRequest first = samples_of(base, n, [&](ServiceRequest& sr, int i) {
      // Called on the service thread, possibly after this connection is gone: they hold only the
      // io_context (which outlives every connection) and a weak pointer; format there, write on the I/O thread.
      asio::io_context& io = io_;
      if (stream && sr.score_prompt)
        sr.on_prompt_scores = [&io, weak, id](const std::vector<SampledToken>& scores) {
          post(io, weak, json_text({{"id", id}, {"event", "prompt"}, {"logprobs", logprobs_json(scores)}}));
        };
      if (stream)
        sr.on_delta = [&io, weak, id, i, n, logprobs](const std::string& text, const std::vector<SampledToken>& tokens) {
          nlohmann::json ids = nlohmann::json::array();
          for (const SampledToken& t : tokens) ids.push_back(t.token);
          nlohmann::json j = {{"id", id}, {"event", "delta"}, {"text", text}, {"tokens", ids}};
          if (logprobs) j["logprobs"] = logprobs_json(tokens);  // also [] beside "tokens": [] (a character finished late)
          if (n > 1) j["index"] = i;
          post(io, weak, json_text(j));
        };
      sr.on_done = [&io, weak, id, stream, i, n, logprobs, score_prompt](const GenerationSummary& s) {
        nlohmann::json j = {{"id", id},
                            {"event", s.finish_reason == "error" ? "error" : "done"},
                            {"finish_reason", s.finish_reason},
                            {"prompt_tokens", s.prompt_tokens},
                            {"completion_tokens", s.completion_tokens},
                            {"cached_tokens", s.cached_tokens},
                            {"timing_ms", {{"queue", s.queue_ms}, {"prefill", s.prefill_ms}, {"decode", s.decode_ms}}}};
        if (n > 1) j["index"] = i;
        if (!stream) j["text"] = s.text;
        if (!stream && logprobs && s.error.empty()) j["logprobs"] = logprobs_json(s.logprobs);
        if (!stream && score_prompt && s.error.empty()) j["prompt_logprobs"] = logprobs_json(s.prompt_logprobs);
        if (s.session_tokens) j["session_tokens"] = s.session_tokens;
        if (s.preemptions) j["preemptions"] = s.preemptions;
        if (!s.error.empty()) j["error"] = s.error;
        std::string line = json_text(j);
        asio::post(io, [weak, id, line] {
          if (auto c = weak.lock()) {
            auto it = c->running_.find(id);
            if (it != c->running_.end() && --it->second.left == 0) c->running_.erase(it);  // its last sample
            c->write(line);
          }
        });
      };
    });
    try {
      running_[id] = {service_.submit(std::move(first)), n};
    } catch (const Error& e) {
      send_error(id, e.what(), false);
    }
  }

  void session_op(const ApiSessionOp& o) {
    SessionOp op = o.op == "list_sessions"  ? SessionOp::List
                   : o.op == "save_session" ? SessionOp::Save
                   : o.op == "fork_session" ? SessionOp::Fork
                                            : SessionOp::Delete;
    std::weak_ptr<Connection> weak = shared_from_this();
    asio::io_context& io = io_;
    service_.session_op(op, o.session, [&io, weak, o](const InferenceService::SessionOpResult& r) {
      nlohmann::json j = {{"id", o.id.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.id)}};
      if (!r.error.empty()) {
        j["event"] = "error";
        j["error"] = r.error;
      } else if (o.op == "list_sessions") {
        j["event"] = "sessions";
        j["sessions"] = nlohmann::json::array();
        for (auto& i : r.sessions)
          j["sessions"].push_back({{"session", i.name}, {"tokens", i.tokens}, {"where", i.where}, {"busy", i.busy}, {"idle_s", i.idle_seconds}});
      } else {
        j["event"] = "ok";
        j["op"] = o.op;
        j["session"] = o.session;
        if (o.op == "fork_session") j["to"] = o.to;
      }
      post(io, weak, json_text(j));
    }, o.to);
  }

  static void post(asio::io_context& io, const std::weak_ptr<Connection>& weak, std::string line) {
    asio::post(io, [weak, line = std::move(line)] {
      if (auto c = weak.lock()) c->write(line);
    });
  }

  void send_error(const std::string& id, const std::string& what, bool then_close) {
    nlohmann::json j = {{"event", "error"}, {"error", what}};
    j["id"] = id.empty() ? nlohmann::json(nullptr) : nlohmann::json(id);
    write(json_text(j));
    if (then_close) closing_ = true;
  }

  // Events wait in out_ while the client is slow; a client that stops reading altogether is dropped
  // (its requests cancelled) before its queue eats the server's memory.
  void write(const std::string& line) {
    if (!socket_.is_open() || lingering_) return;  // lingering: our side has ended (cancelled requests' last events)
    out_.push_back(line + "\n");
    out_bytes_ += out_.back().size();
    if (out_bytes_ > opts_.client_buffer_bytes) {
      logging::warn("dropping a client that does not read its events (", out_bytes_, " bytes unsent)");
      return close();
    }
    if (out_.size() == 1) flush();
  }

  void flush() {
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(out_.front()), [this, self](boost::system::error_code ec, size_t) {
      if (ec) return close();
      out_bytes_ -= out_.front().size();
      out_.pop_front();
      if (!out_.empty()) flush();
      else if (closing_) linger();
    });
  }

  // The goodbye is sent: a client still sending (an over-long line) may finish and read it, for at
  // most a timeout period. A stalled client's read is still in flight: it is cut off as before.
  void linger() {
    if (reading_) return close();
    lingering_ = true;
    cancel_requests();
    auto self = shared_from_this();
    timer_.expires_after(std::chrono::milliseconds(int64_t(opts_.client_timeout_s * 1000)));  // watch() ends
    timer_.async_wait([this, self](boost::system::error_code ec) {
      if (!ec) close();
    });
    close_lingering(socket_, self, [this, self] { close(); });
  }

  void cancel_requests() {
    for (auto& [id, r] : running_) service_.cancel(r.service_id);
    running_.clear();
  }

  // A client that goes away cancels its requests and frees their slots.
  void close() {
    cancel_requests();
    boost::system::error_code ignored;
    timer_.cancel();
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);  // a write in flight ends with an error; out_ stays valid until then
  }

  tcp::socket socket_;
  asio::io_context& io_;
  asio::steady_timer timer_;
  InferenceService& service_;
  const Tokenizer& tok_;
  int vocab_;
  const ApiLimits& limits_;
  const TcpOptions& opts_;
  asio::streambuf buf_;
  bool partial_at_tick_ = false;
  uint64_t lines_read_ = 0, lines_at_tick_ = 0;
  size_t out_bytes_ = 0;
  int max_requests_;
  struct Running {
    uint64_t service_id;  // the first sample's: cancelling it cancels every sample
    int left;             // samples not yet done
  };
  std::map<std::string, Running> running_;  // by client id
  std::deque<std::string> out_;
  bool closing_ = false, lingering_ = false, reading_ = false;
};

}  // namespace

TcpServer::TcpServer(asio::io_context& io, std::unique_ptr<Listener> listener, InferenceService& service, const Tokenizer& tok,
                     int vocab, TcpOptions opts)
    : io_(io),
      service_(service),
      tok_(tok),
      vocab_(vocab),
      opts_(std::move(opts)),
      listener_(std::move(listener)) {
  listener_->start(json_text({{"event", "error"}, {"id", nullptr}, {"error", kNoDescriptorsRefusal}}) + "\n",
                   [this](tcp::socket socket) { std::make_shared<Connection>(std::move(socket), io_, service_, tok_, vocab_, opts_)->start(); },
                   [this] { service_.metrics().connection_refused("tcp"); });
}

}  // namespace skein
