// Test peers below the transports: a raw join through the front door that keeps the
// session secret (ClientTransport wipes it), a data-port DEALER with chosen PLAIN
// credentials, and ZmtpPeer, which speaks ZMTP 3.0 itself over a plain TCP socket (a
// ZeroMQ library keeps an unfinished multipart message in its own pipe, so only a peer
// writing the wire itself can put one, or a bare frame header, in front of the server).
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <zmq.hpp>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "admission.h"
#include "cutlayer/transport/keys.h"
#include "frame_codec.h"
#include "sealed_channel.h"

#if defined(__SANITIZE_ADDRESS__)
// libasan's interface (GCC ships the library but not <sanitizer/allocator_interface.h>).
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#endif

namespace cutlayer::test {

// Receives one whole multipart message within `timeout`; false if none came.
inline bool recv_message(zmq::socket_t& s, std::vector<zmq::message_t>& frames,
                         std::chrono::milliseconds timeout) {
  frames.clear();
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, timeout) <= 0) return false;
  while (true) {
    zmq::message_t part;
    if (!s.recv(part, zmq::recv_flags::dontwait)) return !frames.empty();
    const bool more = part.more();
    frames.push_back(std::move(part));
    if (!more) return true;
  }
}

inline void send_message(zmq::socket_t& s, std::vector<zmq::message_t>& frames) {
  for (std::size_t i = 0; i < frames.size(); ++i)
    s.send(frames[i], i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
}

// A DEALER on the data port presenting `user` / `password` (PLAIN); no credentials: NULL.
inline zmq::socket_t data_dealer(zmq::context_t& ctx, std::uint16_t port, const std::string& user = "",
                                 const std::string& password = "") {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  if (!user.empty()) {
    s.set(zmq::sockopt::plain_username, user);
    s.set(zmq::sockopt::plain_password, password);
  }
  s.connect("tcp://127.0.0.1:" + std::to_string(port));
  return s;
}

// A session joined by hand: the JoinAck with its secret, a client-side sealed channel and
// the session's data-port credentials.
struct RawSession {
  zmq::context_t ctx{1};
  wire::JoinAck ack;
  std::unique_ptr<transport::SealedChannel> channel;
  std::string user, password;

  void join(const transport::CurveKeyPair& me, const std::string& server_public_key, std::uint16_t port) {
    zmq::socket_t sock(ctx, zmq::socket_type::dealer);
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::curve_serverkey, server_public_key);
    sock.set(zmq::sockopt::curve_publickey, me.public_key);
    sock.set(zmq::sockopt::curve_secretkey, me.secret_key);
    sock.connect("tcp://127.0.0.1:" + std::to_string(port));
    wire::PlainCodec plain;
    auto frames = wire::encode(wire::make_message(wire::Join{}), 0, 0, plain);
    send_message(sock, frames);
    std::vector<zmq::message_t> reply;
    ASSERT_TRUE(recv_message(sock, reply, std::chrono::seconds(10))) << "no JoinAck";
    const auto msg = wire::decode(reply, wire::Limits{});
    ASSERT_EQ(msg.type, wire::MsgType::kJoinAck);
    ack = wire::meta_as<wire::JoinAck>(msg);
    channel = std::make_unique<transport::SealedChannel>(ack.session_id, ack.secret, transport::Side::kClient);
    transport::DataPortCredentials creds;
    transport::data_port_credentials(ack.session_id, ack.secret, creds);
    user = creds.username;
    password = creds.password;
  }

  zmq::socket_t data_socket() { return data_dealer(ctx, ack.data_port, user, password); }

  // Probe round trip on `s`: true when the echo came back intact within `timeout`.
  bool probe(zmq::socket_t& s, std::uint32_t id, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto t = torch::randn({64});
    auto frames = channel->seal(wire::make_message(wire::Probe{id}, {t}));
    send_message(s, frames);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<zmq::message_t> in;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!recv_message(s, in, std::chrono::milliseconds(50))) continue;
      const auto env = wire::parse_envelope(in, wire::Limits{});
      bool authenticated = false;
      const auto msg = channel->open(env, in, wire::Limits{}, authenticated);
      if (msg.type != wire::MsgType::kProbeReply) continue;  // heartbeats
      return wire::meta_as<wire::ProbeReply>(msg).id == id && msg.tensors.size() == 1 &&
             torch::equal(msg.tensors[0], t);
    }
    return false;
  }
};

// ZMTP 3.0 over a bare TCP socket (RFC 23 / 24 / 27), as a client.
class ZmtpPeer {
 public:
  explicit ZmtpPeer(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~ZmtpPeer() {
    if (fd_ >= 0) ::close(fd_);
  }
  ZmtpPeer(const ZmtpPeer&) = delete;
  ZmtpPeer& operator=(const ZmtpPeer&) = delete;

  bool connected() const { return connected_; }

  // The 64-byte greeting: signature, version 3.0, mechanism, as-server 0, filler.
  bool greet(const std::string& mechanism) {
    std::string g(64, '\0');
    g[0] = '\xff';
    g[9] = '\x7f';
    g[10] = 3;
    g[11] = 0;
    std::memcpy(&g[12], mechanism.data(), std::min<std::size_t>(mechanism.size(), 20));
    return write_all(g.data(), g.size());
  }

  // A frame header: flags (MORE 0x01, LONG 0x02 chosen by size, COMMAND 0x04) and size.
  bool header(std::uint64_t size, bool more, bool command = false) {
    std::string h;
    std::uint8_t flags = (more ? 0x01 : 0) | (command ? 0x04 : 0);
    if (size > 255) {
      h.push_back(static_cast<char>(flags | 0x02));
      for (int i = 7; i >= 0; --i) h.push_back(static_cast<char>(size >> (8 * i)));
    } else {
      h.push_back(static_cast<char>(flags));
      h.push_back(static_cast<char>(size));
    }
    return write_all(h.data(), h.size());
  }
  bool frame(const std::string& body, bool more, bool command = false) {
    return header(body.size(), more, command) && write_all(body.data(), body.size());
  }
  static std::string property(const std::string& name, const std::string& value) {
    std::string p(1, static_cast<char>(name.size()));
    p += name;
    for (int i = 3; i >= 0; --i) p.push_back(static_cast<char>(value.size() >> (8 * i)));
    return p + value;
  }
  bool command(const std::string& name, const std::string& body) {
    return frame(std::string(1, static_cast<char>(name.size())) + name + body, false, true);
  }

  // NULL: greeting + READY (the server answers READY only if it speaks NULL).
  bool null_handshake() {
    return greet("NULL") && command("READY", property("Socket-Type", "DEALER"));
  }

  // PLAIN: greeting, HELLO, then INITIATE after WELCOME. True when the server's READY came:
  // the connection was admitted.
  bool plain_handshake(const std::string& user, const std::string& password,
                       std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    if (!greet("PLAIN")) return false;
    std::string hello;
    hello.push_back(static_cast<char>(user.size()));
    hello += user;
    hello.push_back(static_cast<char>(password.size()));
    hello += password;
    if (!command("HELLO", hello)) return false;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string name;
    if (!skip_greeting(deadline) || !read_command(name, deadline) || name != "WELCOME") return false;
    if (!command("INITIATE", property("Socket-Type", "DEALER"))) return false;
    return read_command(name, deadline) && name == "READY";
  }

  // Writes `n` bytes of frames with MORE set (never a last frame), in frames of `frame_bytes`.
  // Returns the bytes the kernel took before the server closed the connection.
  std::uint64_t stream_unterminated(std::uint64_t n, std::size_t frame_bytes) {
    std::string body(frame_bytes, 'x');
    std::uint64_t sent = 0;
    while (sent < n) {
      if (!frame(body, true)) break;
      sent += body.size();
    }
    return sent;
  }

  // True when the server closed the connection (EOF or reset) within `timeout`; whatever
  // it sent before that (its greeting, an ERROR) is read and dropped.
  bool closed_by_server(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const ssize_t r = ::recv(fd_, buf, sizeof buf, 0);
      if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) return true;
    }
    return false;
  }

 private:
  bool write_all(const char* p, std::size_t n) {
    while (n > 0) {
      const ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }
  bool read_exact(char* p, std::size_t n, std::chrono::steady_clock::time_point deadline) {
    while (n > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd pf{fd_, POLLIN, 0};
      if (::poll(&pf, 1, static_cast<int>(left.count())) <= 0) continue;
      const ssize_t r = ::recv(fd_, p, n, 0);
      if (r <= 0) return false;
      p += r;
      n -= static_cast<std::size_t>(r);
    }
    return true;
  }
  bool skip_greeting(std::chrono::steady_clock::time_point deadline) {
    char g[64];
    return read_exact(g, sizeof g, deadline);
  }
  bool read_command(std::string& name, std::chrono::steady_clock::time_point deadline) {
    unsigned char flags = 0;
    if (!read_exact(reinterpret_cast<char*>(&flags), 1, deadline)) return false;
    std::uint64_t size = 0;
    if (flags & 0x02) {
      unsigned char b[8];
      if (!read_exact(reinterpret_cast<char*>(b), 8, deadline)) return false;
      for (unsigned char c : b) size = size << 8 | c;
    } else {
      unsigned char b = 0;
      if (!read_exact(reinterpret_cast<char*>(&b), 1, deadline)) return false;
      size = b;
    }
    if (!(flags & 0x04) || size == 0 || size > 4096) return false;
    std::string body(size, '\0');
    if (!read_exact(body.data(), body.size(), deadline)) return false;
    const std::size_t len = static_cast<unsigned char>(body[0]);
    if (len + 1 > body.size()) return false;
    name = body.substr(1, len);
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
};

// The memory this process holds, in bytes: its resident set size (VmRSS), or, under
// AddressSanitizer, the heap bytes in use. ASan keeps freed blocks in a quarantine (256 MiB
// by default) to catch use-after-free, so RSS there grows with everything freed, not with
// what is held; its allocator counts live blocks only, the libraries' included (it replaces
// malloc for the whole process).
inline std::uint64_t held_bytes() {
#if defined(__SANITIZE_ADDRESS__)
  return __sanitizer_get_current_allocated_bytes();
#endif
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      std::uint64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
    std::getline(in, key);
  }
  return 0;
}

}  // namespace cutlayer::test
