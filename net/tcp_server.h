// The TCP API: newline-delimited JSON over Boost.Asio (docs/protocol.md). One Connection object per
// client; every handler runs on the I/O thread and none of them blocks: requests go to the
// InferenceService queue, and its events come back posted onto the I/O thread.
#pragma once
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it

#include <boost/asio.hpp>
#include <memory>

#include "coordinator/inference_service.h"
#include "net/api_request.h"
#include "net/listener.h"

namespace skein {

struct TcpOptions {
  ApiLimits limits;
  size_t max_line_bytes = 1 << 20;
  int per_connection_requests = 8;
  size_t client_buffer_bytes = 4 << 20;  // unsent events past which a client that does not read is dropped
  double client_timeout_s = 30;          // a started line must be finished within it
};

class TcpServer {
 public:
  // Serves the clients `listener` (bound beforehand, on `io`) accepts.
  TcpServer(boost::asio::io_context& io, std::unique_ptr<Listener> listener, InferenceService& service, const Tokenizer& tok,
            int vocab, TcpOptions opts);
  uint16_t port() const { return listener_->endpoint().port(); }
  std::string address() const { return listener_->endpoint().address().to_string(); }

 private:
  boost::asio::io_context& io_;
  InferenceService& service_;
  const Tokenizer& tok_;
  int vocab_;
  TcpOptions opts_;
  std::unique_ptr<Listener> listener_;  // last: destroyed first, so no accept outlives the members above
};

}  // namespace skein
