// A listening socket, shared by the TCP and HTTP servers, that hands every accepted connection on.
// Out of file descriptors, accept fails while the connection stays queued, so accepting again at once
// would spin the I/O thread for as long as the shortage lasts. The listener keeps one descriptor in
// reserve for that case: it frees it, accepts the waiting connection, writes it the server's refusal
// (a line of the client's own protocol), closes it and takes the reserve back, so waiting clients
// hear at once why instead of hanging. With nobody waiting it waits for the next client; where even
// the reserve fails (another thread took the descriptor), it pauses before accepting again.
#pragma once
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it

#include <boost/asio.hpp>
#include <cstdint>
#include <functional>
#include <string>

namespace skein {

class Listener {
 public:
  using OnAccept = std::function<void(boost::asio::ip::tcp::socket)>;
  // Binds address:port (port 0: any free port); throws skein::Error naming `what` ("TCP", "HTTP") and
  // the address. Clients that connect wait in the backlog until start(). (`skein serve` binds before it
  // loads the model, so a port in use stops it at once, not after minutes of loading.)
  Listener(boost::asio::io_context& io, const std::string& address, uint16_t port, std::string what);
  ~Listener();
  // Accepts from now on. `refusal`: the bytes a client refused for want of descriptors gets;
  // `on_refused` is told of each such client.
  void start(std::string refusal, OnAccept on_accept, std::function<void()> on_refused);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  boost::asio::ip::tcp::endpoint endpoint() const { return acceptor_.local_endpoint(); }

 private:
  void accept();
  void short_of_descriptors(const boost::system::error_code& ec);
  enum class Refusal { Refused, NobodyWaiting, NoReserve };
  Refusal refuse_waiting_client();  // with the reserve descriptor
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer pause_;
  std::string what_, refusal_;
  OnAccept on_accept_;
  std::function<void()> on_refused_;
  int reserve_ = -1;
  bool short_ = false;    // in a shortage (logged once when it starts and once when it ends)
  uint64_t refused_ = 0;  // clients refused in this shortage
};

// The refusal's text, for the servers to wrap in their protocols.
inline constexpr const char* kNoDescriptorsRefusal =
    "server: too many open connections (the server is out of file descriptors); try again later";

// Raises this process's soft limit on open files to its hard limit (every client takes one, and
// Debian's soft limit is 1024).
void raise_open_files_limit();

}  // namespace skein
