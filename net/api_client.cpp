#include "net/api_client.h"

#include "common/error.h"

namespace skein {

namespace asio = boost::asio;

bool refuses_the_connection(const nlohmann::json& event) {
  return event.is_object() && event.value("event", nlohmann::json()) == "error" && event.value("id", nlohmann::json()).is_null();
}

ServerAddress parse_server_address(const std::string& address) {
  std::string s = address;
  if (s.rfind("http://", 0) == 0 || s.rfind("https://", 0) == 0)
    fail("--server: '", address, "' is an HTTP address; skein client speaks the TCP protocol: give the tcp:// address `skein serve` prints");
  if (s.rfind("tcp://", 0) == 0) s = s.substr(6);
  const size_t colon = s.rfind(':');
  const auto wrong = [&] { fail("--server: expected HOST:PORT, [IPv6]:PORT or tcp://HOST:PORT, got '", address, "'"); };
  if (colon == std::string::npos || colon == 0) wrong();
  ServerAddress a{s.substr(0, colon), s.substr(colon + 1)};
  if (a.host.front() == '[' || a.host.back() == ']') {  // [::1]:7700
    if (a.host.size() < 3 || a.host.front() != '[' || a.host.back() != ']') wrong();
    a.host = a.host.substr(1, a.host.size() - 2);
  } else if (a.host.find(':') != std::string::npos) {
    wrong();  // an IPv6 address without brackets: its last group would be read as the port
  }
  if (a.port.empty() || a.port.size() > 5 || a.port.find_first_not_of("0123456789") != std::string::npos || std::stoi(a.port) < 1 ||
      std::stoi(a.port) > 65535)
    fail("--server: port '", a.port, "' of '", address, "' is not a number from 1 to 65535");
  return a;
}

ApiClient::ApiClient(const std::string& host_port) {
  const ServerAddress a = parse_server_address(host_port);
  boost::system::error_code ec;
  auto endpoints = asio::ip::tcp::resolver(io_).resolve(a.host, a.port, ec);
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
    // `skein serve` prints a TCP and an HTTP address; the HTTP one answers a JSON line with a 400.
    if (line.rfind("HTTP/", 0) == 0) fail("the server answered in HTTP: --server takes the TCP address `skein serve` prints (tcp://...)");
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
