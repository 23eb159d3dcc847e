// Opening a listening socket, shared by the TCP and HTTP servers.
#pragma once
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it

#include <boost/asio.hpp>
#include <string>

#include "common/error.h"

namespace skein {

// Binds `acceptor` to address:port (port 0: any free port); throws skein::Error naming `what` and the address.
inline void open_acceptor(boost::asio::ip::tcp::acceptor& acceptor, const std::string& address, uint16_t port, const char* what) {
  boost::system::error_code ec;
  auto addr = boost::asio::ip::make_address(address, ec);
  if (ec) fail("server: '", address, "' is not an IP address");
  boost::asio::ip::tcp::endpoint ep(addr, port);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(boost::asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) fail("server: cannot listen for ", what, " on ", address, ":", port, ": ", ec.message());
}

}  // namespace skein
