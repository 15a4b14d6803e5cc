#include "cutlayer/transport/client_transport.h"

#include <openssl/crypto.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "admission.h"
#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "frame_codec.h"
#include "frames_io.h"
#include "sealed_channel.h"
#include "socket_setup.h"

namespace cutlayer::transport {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<std::uint64_t> g_monitor_counter{0};

}  // namespace

struct ClientTransport::Impl {
  explicit Impl(ClientTransportOptions options);
  ~Impl();

  wire::JoinAck join(const wire::Join& join);
  void send(const wire::Message& msg);
  std::optional<wire::Message> recv(std::chrono::milliseconds timeout);
  void leave(const std::string& reason);
  void send_heartbeat_if_due();
  void close_data();

  ClientTransportOptions options_;
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> data_;
  std::unique_ptr<SealedChannel> channel_;
  std::chrono::milliseconds heartbeat_{1000};
  std::chrono::milliseconds session_timeout_{30000};
  std::chrono::steady_clock::time_point last_tx_;
  std::chrono::steady_clock::time_point last_rx_;
  TransportStats stats_;
};

ClientTransport::ClientTransport(ClientTransportOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

ClientTransport::~ClientTransport() = default;

wire::JoinAck ClientTransport::join(const wire::Join& join) { return impl_->join(join); }

void ClientTransport::send(const wire::Message& msg) { impl_->send(msg); }

std::optional<wire::Message> ClientTransport::recv(std::chrono::milliseconds timeout) {
  return impl_->recv(timeout);
}

void ClientTransport::leave(const std::string& reason) { impl_->leave(reason); }

bool ClientTransport::joined() const { return impl_->channel_ != nullptr; }

std::uint64_t ClientTransport::session_id() const {
  return impl_->channel_ ? impl_->channel_->session_id() : 0;
}

const TransportStats& ClientTransport::stats() const { return impl_->stats_; }

ClientTransport::Impl::Impl(ClientTransportOptions options)
    : options_(std::move(options)), ctx_(1) {
  if (!is_z85_key(options_.server_public_key))
    throw ConfigError("server public key is missing or not Z85 (it comes from the server's "
                      "server.pub, made by cutlayer-keygen)");
  if (!is_z85_key(options_.client_keys.public_key) || !is_z85_key(options_.client_keys.secret_key))
    throw ConfigError("client key pair is missing or not Z85; make one with cutlayer-keygen");
}

ClientTransport::Impl::~Impl() { close_data(); }

void ClientTransport::Impl::close_data() {
  channel_.reset();
  data_.reset();
}

wire::JoinAck ClientTransport::Impl::join(const wire::Join& join) {
  auto log = log::get("transport");
  close_data();
  const std::string server = "tcp://" + options_.server_host + ":" + std::to_string(options_.join_port);
  auto backoff = options_.backoff_initial;
  std::string last_problem = "no answer";
  for (int attempt = 1; attempt <= options_.join_attempts; ++attempt) {
    zmq::socket_t sock(ctx_, zmq::socket_type::dealer);
    SocketOptions opts = options_.socket;
    opts.max_frame_bytes = 64 * 1024;
    apply_socket_options(sock, opts);
    sock.set(zmq::sockopt::curve_serverkey, options_.server_public_key);
    sock.set(zmq::sockopt::curve_publickey, options_.client_keys.public_key);
    sock.set(zmq::sockopt::curve_secretkey, options_.client_keys.secret_key);
    const std::string mon_ep = "inproc://cutlayer-join-monitor-" + std::to_string(++g_monitor_counter);
    if (zmq_socket_monitor(sock.handle(), mon_ep.c_str(),
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0)
      throw IoError(std::string("cannot monitor the join socket: ") + zmq_strerror(zmq_errno()));
    zmq::socket_t mon(ctx_, zmq::socket_type::pair);
    mon.set(zmq::sockopt::linger, 0);
    mon.connect(mon_ep);
    sock.connect(server);

    wire::PlainCodec plain;
    auto frames = wire::encode(wire::make_message(join), 0, 0, plain);
    detail::send_frames(sock, nullptr, frames);

    const auto deadline = Clock::now() + options_.join_timeout;
    while (Clock::now() < deadline) {
      zmq::pollitem_t items[] = {{sock.handle(), 0, ZMQ_POLLIN, 0},
                                 {mon.handle(), 0, ZMQ_POLLIN, 0}};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      detail::poll_items(items, 2, std::max(left, std::chrono::milliseconds(1)));
      if (items[1].revents & ZMQ_POLLIN) {
        zmq::message_t ev, addr;
        (void)mon.recv(ev);
        if (ev.more()) (void)mon.recv(addr);
        std::uint16_t event = 0;
        std::uint32_t value = 0;
        if (ev.size() >= 6) {
          std::memcpy(&event, ev.data(), 2);
          std::memcpy(&value, static_cast<const char*>(ev.data()) + 2, 4);
        }
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
          zmq_socket_monitor(sock.handle(), nullptr, 0);
          throw AuthError("server at " + server + " refused this client's key (ZAP status " +
                          std::to_string(value) +
                          "): add its public key to the server's allow-list");
        }
        last_problem = "CURVE handshake failed (is server_public_key the server's key?)";
      }
      if (items[0].revents & ZMQ_POLLIN) {
        std::vector<zmq::message_t> reply;
        bool truncated = false;
        if (!detail::recv_frames(sock, 4, reply, truncated)) continue;
        wire::Message msg;
        try {
          msg = wire::decode(reply, options_.limits);
        } catch (const Error& e) {
          last_problem = "bad reply: " + log::peer_text(e.what());
          continue;
        }
        zmq_socket_monitor(sock.handle(), nullptr, 0);
        if (msg.type == wire::MsgType::kError) {
          const auto err = wire::meta_as<wire::ErrorMsg>(msg);
          throw AuthError("server refused the join: " + log::peer_text(err.message, 1000));
        }
        auto ack = wire::meta_as<wire::JoinAck>(msg);
        // The secret's other copies: the reply frame and the decoded meta (wiped below).
        for (auto& f : reply)
          if (f.size() > 0) OPENSSL_cleanse(f.data(), f.size());
        OPENSSL_cleanse(msg.meta.data(), msg.meta.size());
        channel_ = std::make_unique<SealedChannel>(ack.session_id, ack.secret, Side::kClient);
        DataPortCredentials creds;
        data_port_credentials(ack.session_id, ack.secret, creds);
        // The channel's keys and the admission token are derived: the secret is not kept
        // (the returned JoinAck has it zeroed).
        OPENSSL_cleanse(ack.secret.data(), ack.secret.size());
        data_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
        SocketOptions data_opts = options_.socket;
        data_opts.max_frame_bytes = std::min(data_opts.max_frame_bytes, data_frame_cap(options_.limits));
        apply_socket_options(*data_, data_opts);
        // Admission to the data port: PLAIN with the session id and its token (the server's
        // ZAP handler checks them before anything from this connection is buffered).
        data_->set(zmq::sockopt::plain_username, creds.username);
        data_->set(zmq::sockopt::plain_password, creds.password);
        data_->connect("tcp://" + options_.server_host + ":" + std::to_string(ack.data_port));
        heartbeat_ = std::chrono::milliseconds(std::max<std::uint32_t>(ack.heartbeat_ms, 50));
        session_timeout_ = std::chrono::milliseconds(std::max<std::uint32_t>(ack.session_timeout_ms, 500));
        last_rx_ = Clock::now();
        send(wire::make_message(wire::Heartbeat{}));  // tells the server our data route
        log->info("joined {} as session {:#x} (attempt {})", server, ack.session_id, attempt);
        return ack;
      }
    }
    zmq_socket_monitor(sock.handle(), nullptr, 0);
    if (attempt < options_.join_attempts) {
      log->warn("join attempt {}/{} to {}: {}; retrying in {} ms", attempt, options_.join_attempts,
                server, last_problem, backoff.count());
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, options_.backoff_max);
    }
  }
  throw IoError("could not join " + server + " after " + std::to_string(options_.join_attempts) +
                " attempts (" + last_problem +
                "): is cutlayer-server running there, and is server_public_key its key?");
}

void ClientTransport::Impl::send(const wire::Message& msg) {
  if (!channel_) throw InternalError("not joined: call join() first");
  auto frames = channel_->seal(msg);
  const std::size_t bytes = detail::total_bytes(frames);
  if (!detail::send_frames(*data_, nullptr, frames)) {
    ++stats_.send_failures;
    throw IoError("send to the server timed out after " +
                  std::to_string(options_.socket.send_timeout_ms) + " ms");
  }
  last_tx_ = Clock::now();
  ++stats_.messages_out;
  stats_.bytes_out += bytes;
}

void ClientTransport::Impl::send_heartbeat_if_due() {
  if (channel_ && Clock::now() - last_tx_ >= heartbeat_) send(wire::make_message(wire::Heartbeat{}));
}

std::optional<wire::Message> ClientTransport::Impl::recv(std::chrono::milliseconds timeout) {
  if (!channel_) throw InternalError("not joined: call join() first");
  auto log = log::get("transport");
  const auto deadline = Clock::now() + timeout;
  const std::size_t max_parts = options_.limits.max_frames();
  std::vector<zmq::message_t> frames;
  while (true) {
    send_heartbeat_if_due();
    const auto now = Clock::now();
    if (now - last_rx_ > session_timeout_)
      throw IoError("the server has been silent for " +
                    std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - last_rx_).count()) +
                    " ms (session timeout): re-join");
    if (now >= deadline) return std::nullopt;
    const auto wait = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now),
                               heartbeat_);
    zmq::pollitem_t item{data_->handle(), 0, ZMQ_POLLIN, 0};
    detail::poll_items(&item, 1, std::max(wait, std::chrono::milliseconds(1)));
    bool truncated = false;
    while (detail::recv_frames(*data_, max_parts, frames, truncated)) {
      const std::size_t bytes = detail::total_bytes(frames);
      wire::Message msg;
      try {
        if (truncated) throw ProtocolError("too many frames");
        const auto env = wire::parse_envelope(frames, options_.limits);
        if (env.session_id != channel_->session_id()) {
          ++stats_.unknown_session;
          continue;
        }
        bool authenticated = false;
        msg = channel_->open(env, frames, options_.limits, authenticated);
      } catch (const ReplayError& e) {
        ++stats_.replayed;
        log->warn("dropped server message: {}", log::peer_text(e.what()));
        continue;
      } catch (const AuthError& e) {
        ++stats_.bad_tag;
        log->warn("dropped server message: {}", log::peer_text(e.what()));
        continue;
      } catch (const Error& e) {
        ++stats_.protocol_errors;
        log->warn("dropped server message: {}", log::peer_text(e.what()));
        continue;
      }
      last_rx_ = Clock::now();
      ++stats_.messages_in;
      stats_.bytes_in += bytes;
      if (msg.type == wire::MsgType::kHeartbeat) continue;
      return msg;
    }
  }
}

void ClientTransport::Impl::leave(const std::string& reason) {
  if (!channel_) return;
  try {
    send(wire::make_message(wire::Leave{reason}));
    data_->set(zmq::sockopt::linger, 1000);  // let the Leave go out, but never wait long
  } catch (const Error&) {
    // best effort: the server's session timeout ends it anyway
  }
  close_data();
}

}  // namespace cutlayer::transport
