// Hanging up on a client that may still be sending (a refused over-long line or body) without a reset.
// Closing a socket with unread bytes queued answers them with a TCP reset, and a client still writing
// (most HTTP libraries send a whole body before they read) then reports a broken pipe instead of the
// error we sent. So the server ends its side (the client reads our reply, then end of stream), reads
// and drops what still comes until the client closes or kLingerBytes have come, and then closes. The
// caller bounds the time with its own timer, which calls the same close.
#pragma once
#include <boost/asio.hpp>

#include <cstddef>
#include <memory>
#include <vector>

namespace skein {

constexpr size_t kLingerBytes = size_t(64) << 20;

template <typename Close>
class LingeringClose {
 public:
  // `keep` holds the connection (and so `socket`) alive until `close` has run.
  static void start(boost::asio::ip::tcp::socket& socket, std::shared_ptr<void> keep, Close close) {
    boost::system::error_code ignored;
    socket.shutdown(boost::asio::ip::tcp::socket::shutdown_send, ignored);
    auto self = std::shared_ptr<LingeringClose>(new LingeringClose(socket, std::move(keep), std::move(close)));
    read(self);
  }

 private:
  LingeringClose(boost::asio::ip::tcp::socket& socket, std::shared_ptr<void> keep, Close close)
      : socket_(socket), keep_(std::move(keep)), close_(std::move(close)), buffer_(64 << 10) {}

  static void read(const std::shared_ptr<LingeringClose>& self) {
    self->socket_.async_read_some(boost::asio::buffer(self->buffer_), [self](boost::system::error_code ec, size_t n) {
      if (ec || n >= self->left_) return self->close_();  // closed by the client, by the caller's timer, or too much
      self->left_ -= n;
      read(self);
    });
  }

  boost::asio::ip::tcp::socket& socket_;
  std::shared_ptr<void> keep_;
  Close close_;
  std::vector<char> buffer_;
  size_t left_ = kLingerBytes;
};

// LingeringClose<decltype(close)>::start, with the type deduced.
template <typename Close>
void close_lingering(boost::asio::ip::tcp::socket& socket, std::shared_ptr<void> keep, Close close) {
  LingeringClose<Close>::start(socket, std::move(keep), std::move(close));
}

}  // namespace skein
