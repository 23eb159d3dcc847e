#include "net/api_client.h"

#include "common/error.h"

namespace skein {

namespace asio = boost::asio;

bool refuses_the_connection(const nlohmann::json& event) {
  return event.is_object() && event.value("event", nlohmann::json()) == "error" && event.value("id", nlohmann::json()).is_null();
}

ApiClient::ApiClient(const std::string& host_port) {
  size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) fail("--server: expected HOST:PORT, got '", host_port, "'");
  std::string host = host_port.substr(0, colon), port = host_port.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);  // [::1]:7700
  boost::system::error_code ec;
  auto endpoints = asio::ip::tcp::resolver(io_).resolve(host, port, ec);
  if (!ec) asio::connect(socket_, endpoints, ec);
  if (ec) fail("cannot connect to ", host_port, ": ", ec.message());
}

void ApiClient::send(const nlohmann::ordered_json& line) {
  std::string s;
  try {
    s = line.dump() + "\n";
  } catch (const nlohmann::ordered_json::type_error&) {
    fail("client: the request's text is not UTF-8 (the protocol carries JSON text)");
  }
  boost::system::error_code ec;
  asio::write(socket_, asio::buffer(s), ec);
  if (ec) fail("server connection lost: ", ec.message());
}

nlohmann::json ApiClient::next_event() {
  boost::system::error_code ec;
  size_t n = asio::read_until(socket_, buf_, '\n', ec);
  if (ec) fail("server closed the connection");
  std::string line(asio::buffers_begin(buf_.data()), asio::buffers_begin(buf_.data()) + long(n));
  buf_.consume(n);
  try {
    return nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception&) {
    fail("server sent a line that is not JSON");
  }
}

nlohmann::json ApiClient::generate(nlohmann::ordered_json request, const std::function<void(const std::string&)>& on_text) {
  if (!request.contains("id")) request["id"] = "1";
  if (request.value("n", 1) != 1) fail("ApiClient::generate streams one sample; read the events of an \"n\" request with next_event()");
  std::string id = request["id"];
  send(request);
  while (true) {
    nlohmann::json e = next_event();
    if (refuses_the_connection(e))
      fail(e["error"].is_string() ? e["error"].get<std::string>() : "the server refused the connection");
    if (e.value("id", nlohmann::json()) != id) continue;
    if (e["event"] == "delta" && on_text) on_text(e["text"].get<std::string>());
    if (e["event"] == "done" || e["event"] == "error") {
      if (e.contains("text") && on_text) on_text(e["text"].get<std::string>());
      return e;
    }
  }
}

}  // namespace skein
