// The TCP API: newline-delimited JSON over Boost.Asio (docs/protocol.md). One Connection object per
// client; every handler runs on the I/O thread and none of them blocks: requests go to the
// InferenceService queue, and its events come back posted onto the I/O thread.
#pragma once
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it

#include <boost/asio.hpp>
#include <memory>

#include "coordinator/inference_service.h"
#include "net/api_request.h"

namespace skein {

class TcpServer {
 public:
  TcpServer(boost::asio::io_context& io, const std::string& address, uint16_t port, InferenceService& service, const Tokenizer& tok,
            int vocab, const ApiLimits& limits, size_t max_line_bytes, int per_connection_requests);
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  std::string address() const { return acceptor_.local_endpoint().address().to_string(); }

 private:
  void accept();
  boost::asio::io_context& io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  InferenceService& service_;
  const Tokenizer& tok_;
  int vocab_;
  ApiLimits limits_;
  size_t max_line_;
  int per_connection_;
};

}  // namespace skein
