// The OpenAI-compatible HTTP API (Boost.Beast): POST /v1/completions and /v1/chat/completions (JSON or
// server-sent events), GET /v1/models, GET /health, GET /metrics (Prometheus text), the tokenizer at
// vLLM's routes, and sessions under /v1/sessions (list, fork, save, delete, and their state files down
// and up). One connection object per client on the I/O thread; generation and session operations run on
// the InferenceService and their results are posted back.
#pragma once
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it

#include <boost/asio.hpp>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/config.h"
#include "coordinator/inference_service.h"
#include "net/api_request.h"
#include "net/listener.h"

namespace skein {

struct HttpOptions {
  ApiLimits limits;  // auth_token: required as "Authorization: Bearer <token>" on /v1/*
  ChatConfig chat;
  size_t max_body_bytes = 1 << 20;
  size_t client_buffer_bytes = 4 << 20;
  double client_timeout_s = 30;  // reading a request, and each write to a client
  size_t state_file_bytes = 0;  // a session upload's body: a state file of the served model
  std::vector<std::string> allow_origins;  // web pages that may call it from a browser (CORS); "*": any
};

class HttpServer {
 public:
  // Serves the clients `listener` (bound beforehand, on `io`) accepts.
  HttpServer(boost::asio::io_context& io, std::unique_ptr<Listener> listener, InferenceService& service, const Tokenizer& tok,
             int vocab, HttpOptions opts);
  uint16_t port() const { return listener_->endpoint().port(); }

 private:
  boost::asio::io_context& io_;
  InferenceService& service_;
  const Tokenizer& tok_;
  int vocab_;
  HttpOptions opts_;
  std::unique_ptr<Listener> listener_;  // last: destroyed first, so no accept outlives the members above
};

}  // namespace skein
