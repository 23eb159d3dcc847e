// A small C++ client for the TCP API (docs/protocol.md), used by `skein client`, the tests and benchmarks.
#pragma once
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it

#include <boost/asio.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace skein {

// An error event with no request id is the connection's: the server could not take it (out of file
// descriptors) and closes it.
bool refuses_the_connection(const nlohmann::json& event);

// The host and port of HOST:PORT, [IPv6]:PORT, or either after "tcp://" (as `skein serve` prints its
// address); throws skein::Error saying what is wrong with it.
struct ServerAddress {
  std::string host, port;
};
ServerAddress parse_server_address(const std::string& address);

class ApiClient {
 public:
  // Connects to an address parse_server_address takes; throws skein::Error naming it on failure.
  explicit ApiClient(const std::string& host_port);
  // Requests are ordered_json, so a JSON Schema's properties keep their order (it is the output's order);
  // a plain nlohmann::json converts.
  void send(const nlohmann::ordered_json& line);
  nlohmann::json next_event();  // blocks; throws skein::Error when the server closes the connection
  // Sends one request and streams its text; returns the request's final event (done or error). One
  // sample: a request with "n" > 1 ends with a final event per sample, for next_event() to read.
  nlohmann::json generate(nlohmann::ordered_json request, const std::function<void(const std::string&)>& on_text = {});

 private:
  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket socket_{io_};
  boost::asio::streambuf buf_;
};

}  // namespace skein
