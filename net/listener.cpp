#include "net/listener.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "common/error.h"
#include "common/log.h"
#include "common/process_stats.h"

namespace skein {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

int open_reserve() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

bool is_shortage(const boost::system::error_code& ec) {
  return ec == asio::error::no_descriptors || ec == boost::system::errc::too_many_files_open_in_system || ec == asio::error::no_buffer_space ||
         ec == asio::error::no_memory;
}

}  // namespace

Listener::Listener(asio::io_context& io, const std::string& address, uint16_t port, std::string what)
    : acceptor_(io), pause_(io), what_(std::move(what)), reserve_(open_reserve()) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(address, ec);
  if (ec) fail("server: '", address, "' is not an IP address");
  tcp::endpoint ep(addr, port);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (!ec) acceptor_.native_non_blocking(true, ec);  // the refusal's own accept must never wait
  if (ec) fail("server: cannot listen for ", what_, " on ", address, ":", port, ": ", ec.message());
}

void Listener::start(std::string refusal, OnAccept on_accept, std::function<void()> on_refused) {
  refusal_ = std::move(refusal);
  on_accept_ = std::move(on_accept);
  on_refused_ = std::move(on_refused);
  accept();
}

Listener::~Listener() {
  if (reserve_ >= 0) ::close(reserve_);
}

void Listener::accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;  // closed: the listener is going away
    if (!ec) {
      if (short_) logging::info(what_, ": accepting connections again (", refused_, " refused meanwhile)");
      short_ = false;
      refused_ = 0;
      if (reserve_ < 0) reserve_ = open_reserve();
      on_accept_(std::move(socket));
    } else if (is_shortage(ec)) {
      return short_of_descriptors(ec);
    }
    // Any other error concerns that one client (it reset the connection while it waited).
    accept();
  });
}

void Listener::short_of_descriptors(const boost::system::error_code& ec) {
  // Sockets take kernel memory too; out of it, accept fails the same way and the same remedy holds.
  const bool memory = ec == asio::error::no_buffer_space || ec == asio::error::no_memory;
  if (!short_)
    logging::warn(what_, memory ? ": out of socket memory (" + ec.message() + ")"
                                : ": out of file descriptors (" + ec.message() + "; " + std::to_string(open_files_limit()) + " open files allowed)",
                  ": refusing new connections until clients leave");
  short_ = true;
  const auto accept_after_wait = [this](const boost::system::error_code& ec) {
    if (ec != asio::error::operation_aborted) accept();
  };
  switch (refuse_waiting_client()) {
    case Refusal::Refused: return accept();  // the next one, if any
    // Linux takes the descriptor before it looks for a connection, so accepting now would fail at
    // once again: wait until a client is there.
    case Refusal::NobodyWaiting: return acceptor_.async_wait(tcp::acceptor::wait_read, accept_after_wait);
    case Refusal::NoReserve:
      pause_.expires_after(std::chrono::milliseconds(100));
      return pause_.async_wait(accept_after_wait);
  }
}

Listener::Refusal Listener::refuse_waiting_client() {
  if (reserve_ >= 0) ::close(reserve_);  // without one, accept may still find a descriptor free
  const int fd = ::accept4(acceptor_.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  const int why = fd >= 0 ? 0 : errno;
  if (fd >= 0) {
    (void)::send(fd, refusal_.data(), refusal_.size(), MSG_NOSIGNAL);
    // What the client sent already is read first: closing with unread bytes would reset the
    // connection, and the client could lose the refusal.
    char sink[4096];
    for (int i = 0; i < 16 && ::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
    }
    ::shutdown(fd, SHUT_WR);
    ::close(fd);
    ++refused_;
    on_refused_();
  }
  reserve_ = open_reserve();
  if (fd >= 0) return Refusal::Refused;
  if (why == EAGAIN || why == EWOULDBLOCK || why == ECONNABORTED) return Refusal::NobodyWaiting;  // or the client left meanwhile
  return Refusal::NoReserve;  // another thread took the descriptor
}

void raise_open_files_limit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

}  // namespace skein
