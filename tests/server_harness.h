// Test harness for the serving tests: `skein serve` as a child process on free ports, a blocking NDJSON
// line client, and a minimal HTTP/1.1 client (one request per connection).
#pragma once
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_support.h"

namespace skein::test {

// `skein serve` as a child process on a free port.
class Server {
 public:
  // ranks > 1: under mpirun, rank 0 serving and the others running the stages. `model`: a checkpoint
  // other than the tiny v5.2 model.
  explicit Server(const std::string& extra = "", int ranks = 1, const std::string& model = "") {
    out_ = temp_dir() + "/serve.out";
    std::string launcher = ranks > 1 ? "mpirun -np " + std::to_string(ranks) + " --oversubscribe --mca mpi_yield_when_idle 1 --bind-to none " : "";
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    std::string cmd = launcher + SKEIN_BINARY + " serve --model " + (model.empty() ? shared_dir() + "/models/tiny-rwkv-5v2-730K.pth" : model) +
                      " --port 0 --http-port 0 " + extra;
    pid_ = fork();
    if (pid_ == 0) {
      int fd = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), nullptr);
      _exit(127);
    }
    for (int i = 0; i < 200 && port_ == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
      std::ifstream f(out_);
      std::string line;
      while (std::getline(f, line))
        if (line.find(" on tcp://") != std::string::npos) {
          port_ = port_of(line, " on tcp://");
          http_port_ = port_of(line, " and http://");
        }
    }
  }
  // SIGTERM first: mpirun forwards it and every rank exits through MPI_Finalize, which removes Open MPI's
  // shared-memory segments (/dev/shm/vader_segment.*); SIGKILL left them behind, 12 MB a cluster test.
  // A server that does not exit in time (a test stopped a stage) is killed.
  ~Server() {
    if (pid_ > 0 && terminate(std::chrono::seconds(5)) == -1) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // The port of "<scheme>ADDR:PORT" in the serving line (ADDR may be a bracketed IPv6 address); 0 if absent.
  static int port_of(const std::string& line, const std::string& scheme) {
    const auto at = line.find(scheme);
    if (at == std::string::npos) return 0;
    const std::string url = line.substr(at + scheme.size(), line.find(' ', at + scheme.size()) - at - scheme.size());
    return std::stoi(url.substr(url.rfind(':') + 1));
  }
  int port() const { return port_; }
  int http_port() const { return http_port_; }
  pid_t pid() const { return pid_; }  // alone: the server itself; with ranks: mpirun
  // SIGTERM, then the exit status (or -1 if it did not exit within the wait).
  int terminate(std::chrono::milliseconds wait = std::chrono::seconds(10)) {
    kill(pid_, SIGTERM);
    for (int i = 0; i < wait.count() / 25; ++i) {
      int st;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return -1;
  }
  // SIGKILL: a crash, nothing saved on the way out (Open MPI's segments too: keep to one process).
  void crash() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  std::string output() const { return read_file(out_); }

 private:
  pid_t pid_ = -1;
  int port_ = 0, http_port_ = 0;
  std::string out_;
};

// A blocking line client with a receive timeout.
class Client {
 public:
  // rcvbuf > 0: a small receive buffer, so a client that does not read fills up fast.
  explicit Client(int port, int rcvbuf = 0) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{30, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("connect failed");
  }
  ~Client() { close(); }
  void set_timeout(int seconds) {
    timeval tv{seconds, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  void send_raw(const std::string& bytes) { (void)::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL); }
  void send(const std::string& line) { send_raw(line + "\n"); }
  // Every byte, then our side's end (as a client that writes a whole request before it reads); false
  // when the server stopped taking them (a reset or a broken pipe).
  bool send_all_then_end(const std::string& bytes) {
    for (size_t done = 0; done < bytes.size();) {
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += size_t(n);
    }
    return ::shutdown(fd_, SHUT_WR) == 0;
  }
  // Next line, or "" on timeout or close.
  std::string line() {
    while (true) {
      if (auto p = buf_.find('\n'); p != std::string::npos) {
        std::string l = buf_.substr(0, p);
        buf_.erase(0, p + 1);
        return l;
      }
      char tmp[4096];
      ssize_t n = recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) return "";
      buf_.append(tmp, size_t(n));
    }
  }
  // Everything until the server closes (or the timeout).
  std::string rest() {
    std::string all = buf_;
    buf_.clear();
    char tmp[4096];
    ssize_t n;
    while ((n = recv(fd_, tmp, sizeof tmp, 0)) > 0) all.append(tmp, size_t(n));
    return all;
  }
  nlohmann::json event() {
    std::string l = line();
    return l.empty() ? nlohmann::json() : nlohmann::json::parse(l);
  }
  // Events until the final one of request `id` (done or error), in order.
  std::vector<nlohmann::json> until_done(const std::string& id) {
    std::vector<nlohmann::json> out;
    while (true) {
      auto e = event();
      if (e.is_null()) return out;
      out.push_back(e);
      if (e["id"] == id && (e["event"] == "done" || e["event"] == "error")) return out;
    }
  }

 private:
  int fd_ = -1;
  std::string buf_;
};

// One HTTP/1.1 request on its own connection ("Connection: close"); the raw response.
struct HttpReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  nlohmann::json json() const { return nlohmann::json::parse(body); }
};

inline HttpReply http_request(int port, const std::string& method, const std::string& target, const std::string& body = "",
                              const std::string& extra_headers = "") {
  Client c(port);
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra_headers;
  if (!body.empty() || method == "POST") req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  c.send_raw(req + "\r\n" + body);
  std::string all = c.rest();
  HttpReply r;
  auto end = all.find("\r\n\r\n");
  if (all.rfind("HTTP/1.1 ", 0) != 0 || end == std::string::npos) return r;
  r.status = std::stoi(all.substr(9, 3));
  size_t pos = all.find("\r\n") + 2;
  while (pos < end) {
    size_t e = all.find("\r\n", pos);
    std::string h = all.substr(pos, e - pos);
    if (auto colon = h.find(':'); colon != std::string::npos) {
      std::string name = h.substr(0, colon);
      for (auto& ch : name) ch = char(std::tolower(static_cast<unsigned char>(ch)));
      r.headers[name] = h.substr(colon + 2);
    }
    pos = e + 2;
  }
  r.body = all.substr(end + 4);
  return r;
}

// The JSON payloads of a server-sent-events body ("data: ..." lines), "[DONE]" as a string.
inline std::vector<nlohmann::json> sse_events(const std::string& body) {
  std::vector<nlohmann::json> out;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    size_t e = body.find("\n\n", pos);
    std::string payload = body.substr(pos + 6, e - pos - 6);
    out.push_back(payload == "[DONE]" ? nlohmann::json("[DONE]") : nlohmann::json::parse(payload));
    pos = e;
  }
  return out;
}

}  // namespace skein::test
