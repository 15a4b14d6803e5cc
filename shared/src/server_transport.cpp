#include "cutlayer/transport/server_transport.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <deque>
#include <optional>
#include <unordered_map>

#include "admission.h"
#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "frame_codec.h"
#include "frames_io.h"
#include "sealed_channel.h"
#include "socket_setup.h"
#include "zap_handler.h"

namespace cutlayer::transport {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kDrainPerPoll = 64;  // messages per socket per poll round (fairness)

std::uint16_t bound_port(zmq::socket_t& s) {
  const std::string ep = s.get(zmq::sockopt::last_endpoint);
  return static_cast<std::uint16_t>(std::stoi(ep.substr(ep.rfind(':') + 1)));
}

std::string endpoint(const std::string& host, std::uint16_t port) {
  return "tcp://" + host + ":" + (port == 0 ? std::string("*") : std::to_string(port));
}

// Logs the first few drops of a kind, then every 1024th: a flood must not flood the log.
bool should_log(std::uint64_t count) { return log::Limiter::passes(count); }

// Sets ZMQ_ZAP_ENFORCE_DOMAIN: a handshake is refused unless the ZAP handler answers for
// the socket's domain (libzmq would otherwise admit any peer when no handler answers).
void enforce_zap_domain(zmq::socket_t& s) {
#ifdef ZMQ_ZAP_ENFORCE_DOMAIN
  s.set(zmq::sockopt::zap_enforce_domain, 1);
#else
  const int on = 1;  // draft option 93: honoured when libzmq has it, harmless otherwise
  zmq_setsockopt(s.handle(), 93, &on, sizeof on);
#endif
}

// Wipes every frame's bytes (frames that carried a secret in clear: the JoinAck).
void wipe_frames(std::vector<zmq::message_t>& frames) {
  for (auto& f : frames)
    if (f.size() > 0) OPENSSL_cleanse(f.data(), f.size());
}

}  // namespace

struct ServerTransport::Impl {
  struct Session {
    Session(std::uint64_t id, const SessionSecret& secret, std::string name)
        : channel(id, secret, Side::kServer), client_name(std::move(name)) {}
    SealedChannel channel;
    std::string client_name;
    zmq::message_t route;  // data-socket routing id, learned from the first sealed message
    bool has_route = false;
    Clock::time_point last_seen = Clock::now();
    // Sealed messages the peer's queue had no room for, oldest first; sent in order before
    // anything newer (the peer accepts only increasing sequence numbers).
    std::deque<std::vector<zmq::message_t>> outbox;
    std::size_t outbox_bytes = 0;
    Clock::time_point outbox_moved;  // when the outbox last became non-empty or shrank
    // Non-empty: the session is ending (its peer is gone, or does not drain). It ends once
    // the data queue is drained: what the peer sent before, its Leave among them, is read
    // first. Nothing more is sent to it.
    std::string ending;
  };
  enum class SendResult { kSent, kFull, kGone };

  explicit Impl(ServerTransportOptions options);

  std::optional<ServerEvent> poll(std::chrono::milliseconds timeout);
  std::uint64_t accept(const JoinRequest& req, std::uint64_t round, std::uint64_t steps_held);
  void refuse(const JoinRequest& req, const std::string& reason);
  bool send(std::uint64_t session_id, const wire::Message& msg);
  void end_session(std::uint64_t session_id, const std::string& reason);
  void on_front_door();
  bool on_data();  // true when the data queue was drained
  SendResult try_send(Session& s, std::vector<zmq::message_t>& frames);
  void flush_outboxes();
  void flush_outbox(std::uint64_t id, Session& s, Clock::time_point now);
  void mark_ending(std::uint64_t id, Session& s, std::string reason);
  bool any_outbox() const;
  void end_gone_sessions();
  void expire_sessions();
  void send_error(std::uint64_t session_id, wire::ErrorCode code, const std::string& text);

  ServerTransportOptions options_;
  zmq::context_t ctx_;
  std::shared_ptr<AdmissionRegistry> admissions_;
  ZapHandler zap_;
  zmq::socket_t front_;
  zmq::socket_t data_;
  std::uint16_t join_port_ = 0;
  std::uint16_t data_port_ = 0;
  std::unordered_map<std::uint64_t, std::unique_ptr<Session>> sessions_;
  std::deque<ServerEvent> events_;
  TransportStats stats_;
  std::chrono::steady_clock::time_point last_expiry_check_;
};

ServerTransport::ServerTransport(ServerTransportOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

ServerTransport::~ServerTransport() = default;

std::uint16_t ServerTransport::join_port() const { return impl_->join_port_; }
std::uint16_t ServerTransport::data_port() const { return impl_->data_port_; }

std::optional<ServerEvent> ServerTransport::poll(std::chrono::milliseconds timeout) {
  return impl_->poll(timeout);
}

std::uint64_t ServerTransport::accept(const JoinRequest& req, std::uint64_t round, std::uint64_t steps_held) {
  return impl_->accept(req, round, steps_held);
}

void ServerTransport::refuse(const JoinRequest& req, const std::string& reason) {
  impl_->refuse(req, reason);
}

bool ServerTransport::send(std::uint64_t session_id, const wire::Message& msg) {
  return impl_->send(session_id, msg);
}

void ServerTransport::end_session(std::uint64_t session_id, const std::string& reason) {
  impl_->end_session(session_id, reason);
}

bool ServerTransport::has_session(std::uint64_t session_id) const {
  return impl_->sessions_.count(session_id) != 0;
}
std::size_t ServerTransport::session_count() const { return impl_->sessions_.size(); }
const TransportStats& ServerTransport::stats() const { return impl_->stats_; }
std::uint64_t ServerTransport::zap_accepted() const { return impl_->zap_.accepted(); }
std::uint64_t ServerTransport::zap_rejected() const { return impl_->zap_.rejected(); }
std::uint64_t ServerTransport::data_admitted() const { return impl_->zap_.data_admitted(); }
std::uint64_t ServerTransport::data_refused() const { return impl_->zap_.data_refused(); }
std::size_t ServerTransport::outbox_size(std::uint64_t session_id) const {
  auto it = impl_->sessions_.find(session_id);
  return it == impl_->sessions_.end() ? 0 : it->second->outbox.size();
}

ServerTransport::Impl::Impl(ServerTransportOptions options)
    : options_(std::move(options)),
      ctx_(1),
      admissions_(std::make_shared<AdmissionRegistry>(options_.max_data_handshakes)),
      zap_(ctx_, options_.allow_list, options_.zap_domain, options_.data_zap_domain, admissions_),
      front_(ctx_, zmq::socket_type::router),
      data_(ctx_, zmq::socket_type::router),
      last_expiry_check_(Clock::now()) {
  if (!is_z85_key(options_.server_keys.public_key) || !is_z85_key(options_.server_keys.secret_key))
    throw ConfigError("server key pair is missing or not Z85; make one with cutlayer-keygen");

  SocketOptions front_opts = options_.socket;
  front_opts.max_frame_bytes = 64 * 1024;  // joins are small
  apply_socket_options(front_, front_opts);
  front_.set(zmq::sockopt::sndtimeo, 0);  // a join reply never blocks the loop
  front_.set(zmq::sockopt::curve_server, 1);
  front_.set(zmq::sockopt::curve_secretkey, options_.server_keys.secret_key);
  front_.set(zmq::sockopt::zap_domain, options_.zap_domain);
  enforce_zap_domain(front_);

  // Data port: only a connection proving a live session (PLAIN user = session id,
  // password = its admission token; checked by the ZAP handler) gets past the handshake,
  // so nothing from anyone else is ever buffered as a message. Sends never wait: a full
  // peer queue is EAGAIN at once (router_mandatory), and the message goes to the outbox.
  SocketOptions data_opts = options_.socket;
  data_opts.max_frame_bytes = std::min(data_opts.max_frame_bytes, data_frame_cap(options_.limits));
  apply_socket_options(data_, data_opts);
  data_.set(zmq::sockopt::sndtimeo, 0);
  data_.set(zmq::sockopt::router_mandatory, 1);
  data_.set(zmq::sockopt::plain_server, 1);
  data_.set(zmq::sockopt::zap_domain, options_.data_zap_domain);
  enforce_zap_domain(data_);
  try {
    front_.bind(endpoint(options_.bind_host, options_.join_port));
    data_.bind(endpoint(options_.bind_host, options_.data_port));
  } catch (const zmq::error_t& e) {
    throw IoError("cannot bind on " + options_.bind_host + " (join port " +
                  std::to_string(options_.join_port) + ", data port " +
                  std::to_string(options_.data_port) + "): " + e.what());
  }
  join_port_ = bound_port(front_);
  data_port_ = bound_port(data_);
  log::get("transport")
      ->info("front door (CURVE, {} allowed clients) on {}:{}, sealed data channel (session "
             "holders only) on {}:{}",
             options_.allow_list.size(), options_.bind_host, join_port_, options_.bind_host,
             data_port_);
}

std::optional<ServerEvent> ServerTransport::Impl::poll(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (events_.empty()) {
    expire_sessions();
    const auto now = Clock::now();
    if (now >= deadline && timeout.count() > 0) break;
    flush_outboxes();
    // A ROUTER is always "writable", so there is no event for a peer's queue having room:
    // with anything in an outbox, poll in short steps and retry.
    const auto step = any_outbox() ? std::chrono::milliseconds(5) : std::chrono::milliseconds(100);
    const auto wait = std::min<std::chrono::milliseconds>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now), step);
    zmq::pollitem_t items[] = {{front_.handle(), 0, ZMQ_POLLIN, 0},
                               {data_.handle(), 0, ZMQ_POLLIN, 0}};
    detail::poll_items(items, 2, std::max(wait, std::chrono::milliseconds(0)));
    if (items[0].revents & ZMQ_POLLIN) on_front_door();
    const bool drained = (items[1].revents & ZMQ_POLLIN) == 0 || on_data();
    flush_outboxes();
    if (drained) end_gone_sessions();
    if (timeout.count() <= 0) break;
  }
  if (events_.empty()) return std::nullopt;
  ServerEvent ev = std::move(events_.front());
  events_.pop_front();
  return ev;
}

void ServerTransport::Impl::on_front_door() {
  auto log = log::get("transport");
  std::vector<zmq::message_t> parts;
  bool truncated = false;
  for (int i = 0; i < kDrainPerPoll && detail::recv_frames(front_, 4, parts, truncated); ++i) {
    if (parts.size() < 2 || truncated) {
      if (should_log(++stats_.protocol_errors)) log->warn("front door: malformed message dropped");
      continue;
    }
    JoinRequest req;
    req.route = parts[0].to_string();
    const char* user = nullptr;
    try {
      user = parts[1].gets("User-Id");
    } catch (const zmq::error_t&) {
    }
    std::vector<zmq::message_t> frames;
    for (std::size_t k = 1; k < parts.size(); ++k) frames.push_back(std::move(parts[k]));
    try {
      wire::Message msg = wire::decode(frames, options_.limits);
      if (msg.type != wire::MsgType::kJoin)
        throw ProtocolError("front door accepts only Join, got " +
                            std::string(wire::msg_type_name(msg.type)));
      req.join = wire::meta_as<wire::Join>(msg);
    } catch (const Error& e) {
      // The peer passed CURVE + ZAP, so it is authenticated: tell it what was wrong.
      if (should_log(++stats_.protocol_errors))
        log->warn("front door: {} ({} so far)", log::peer_text(e.what()), stats_.protocol_errors);
      wire::PlainCodec plain;
      auto reply = wire::encode(
          wire::make_message(wire::ErrorMsg{static_cast<std::uint16_t>(wire::ErrorCode::kProtocol),
                                            std::string("bad join: ") + e.what()}),
          0, 0, plain);
      zmq::message_t route(req.route.data(), req.route.size());
      detail::send_frames(front_, &route, reply);
      continue;
    }
    if (user == nullptr || *user == '\0') {
      // Only possible if ZAP was bypassed; never serve such a peer.
      if (should_log(++stats_.protocol_errors)) log->error("front door: join without a ZAP identity");
      continue;
    }
    req.client_name = user;
    events_.push_back(std::move(req));
  }
}

bool ServerTransport::Impl::on_data() {
  auto log = log::get("transport");
  std::vector<zmq::message_t> parts;
  bool truncated = false;
  const std::size_t max_parts = 1 + options_.limits.max_frames();  // route + the message
  for (int i = 0; i < kDrainPerPoll; ++i) {
    if (!detail::recv_frames(data_, max_parts, parts, truncated)) return true;  // drained
    if (parts.size() < 3 || truncated) {
      if (should_log(++stats_.protocol_errors))
        log->warn("data channel: message with {} frames dropped ({} so far)", parts.size(), stats_.protocol_errors);
      continue;
    }
    zmq::message_t route = std::move(parts[0]);
    // The session this connection was admitted for (ZAP user id, on every message of it).
    std::optional<std::uint64_t> admitted;
    try {
      if (const char* user = parts[1].gets("User-Id")) admitted = parse_session_user(user);
    } catch (const zmq::error_t&) {
    }
    std::vector<zmq::message_t> frames;
    frames.reserve(parts.size() - 1);
    for (std::size_t k = 1; k < parts.size(); ++k) frames.push_back(std::move(parts[k]));
    const std::size_t bytes = detail::total_bytes(frames);

    wire::Envelope env;
    try {
      env = wire::parse_envelope(frames, options_.limits);
    } catch (const ProtocolError& e) {
      if (should_log(++stats_.protocol_errors))
        log->warn("data channel: {} ({} so far)", log::peer_text(e.what()), stats_.protocol_errors);
      continue;
    }
    if (!admitted || *admitted != env.session_id) {
      // A session holder speaking for another session (or, were ZAP bypassed, anyone).
      if (should_log(++stats_.wrong_session))
        log->warn("data channel: a connection admitted for session {} sent a message for {:#x}; "
                  "dropped ({} so far)",
                  admitted ? fmt::format("{:#x}", *admitted) : std::string("(none)"), env.session_id,
                  stats_.wrong_session);
      continue;
    }
    auto it = sessions_.find(env.session_id);
    if (it == sessions_.end()) {
      if (should_log(++stats_.unknown_session))
        log->warn("data channel: message for unknown session {:#x} dropped ({} so far)", env.session_id,
                  stats_.unknown_session);
      continue;
    }
    Session& s = *it->second;
    bool authenticated = false;
    wire::Message msg;
    try {
      msg = s.channel.open(env, frames, options_.limits, authenticated);
    } catch (const ReplayError& e) {
      if (should_log(++stats_.replayed))
        log->warn("session {:#x}: {} ({} so far)", env.session_id, log::peer_text(e.what()), stats_.replayed);
      continue;
    } catch (const AuthError& e) {
      if (should_log(++stats_.bad_tag))
        log->warn("session {:#x}: {} ({} so far)", env.session_id, log::peer_text(e.what()), stats_.bad_tag);
      continue;
    } catch (const Error& e) {
      if (should_log(++stats_.protocol_errors))
        log->warn("session {:#x} ({}): {}", env.session_id, s.client_name, log::peer_text(e.what()));
      if (authenticated) {
        s.last_seen = Clock::now();
        send_error(env.session_id, wire::ErrorCode::kProtocol, e.what());
      }
      continue;
    }
    // Authentic: this is the peer's current route.
    s.route.copy(route);
    s.has_route = true;
    s.last_seen = Clock::now();
    ++stats_.messages_in;
    stats_.bytes_in += bytes;
    switch (msg.type) {
      case wire::MsgType::kHeartbeat:
        send(env.session_id, wire::make_message(wire::Heartbeat{}));
        break;
      case wire::MsgType::kLeave: {
        std::string reason;
        try {
          reason = wire::meta_as<wire::Leave>(msg).reason;
        } catch (const Error&) {
        }
        end_session(env.session_id, "left: " + log::peer_text(reason));
        break;
      }
      default:
        events_.push_back(Received{env.session_id, s.client_name, std::move(msg)});
    }
  }
  return false;  // more may be queued
}

void ServerTransport::Impl::end_gone_sessions() {
  std::vector<std::pair<std::uint64_t, std::string>> gone;
  for (const auto& [id, s] : sessions_)
    if (!s->ending.empty()) gone.emplace_back(id, s->ending);
  for (const auto& [id, reason] : gone) end_session(id, reason);
}

void ServerTransport::Impl::mark_ending(std::uint64_t id, Session& s, std::string reason) {
  if (!s.ending.empty()) return;
  s.ending = std::move(reason);
  s.outbox.clear();  // its memory goes now, not when the session ends
  s.outbox_bytes = 0;
  log::get("transport")->info("session {:#x} ({}): {}", id, s.client_name, s.ending);
}

bool ServerTransport::Impl::any_outbox() const {
  for (const auto& [id, s] : sessions_)
    if (!s->outbox.empty()) return true;
  return false;
}

ServerTransport::Impl::SendResult ServerTransport::Impl::try_send(Session& s,
                                                                  std::vector<zmq::message_t>& frames) {
  zmq::message_t route;
  route.copy(s.route);
  try {
    // With router_mandatory and no send timeout, only the routing-id frame can fail:
    // EAGAIN (the peer's queue is at its HWM; nothing was queued, the frames are intact)
    // or EHOSTUNREACH (no such connection). Once it passes, the rest is queued whole.
    if (!detail::send_frames(data_, &route, frames)) return SendResult::kFull;
  } catch (const zmq::error_t&) {
    return SendResult::kGone;
  }
  return SendResult::kSent;
}

void ServerTransport::Impl::flush_outbox(std::uint64_t id, Session& s, Clock::time_point now) {
  while (!s.outbox.empty()) {
    auto& frames = s.outbox.front();
    const std::size_t bytes = detail::total_bytes(frames);
    const auto r = try_send(s, frames);
    if (r == SendResult::kFull) break;
    if (r == SendResult::kGone) {
      ++stats_.send_failures;
      mark_ending(id, s, "send failed: peer gone");
      return;
    }
    ++stats_.messages_out;
    stats_.bytes_out += bytes;
    s.outbox_bytes -= bytes;
    s.outbox.pop_front();
    s.outbox_moved = now;
  }
  if (!s.outbox.empty() && now - s.outbox_moved > std::chrono::milliseconds(options_.outbox_stall_ms)) {
    ++stats_.sessions_not_draining;
    mark_ending(id, s,
                fmt::format("not draining: {} messages waited {} ms without the peer reading", s.outbox.size(),
                            options_.outbox_stall_ms));
  }
}

void ServerTransport::Impl::flush_outboxes() {
  const auto now = Clock::now();
  for (auto& [id, s] : sessions_)
    if (!s->outbox.empty()) flush_outbox(id, *s, now);
}

std::uint64_t ServerTransport::Impl::accept(const JoinRequest& req, std::uint64_t round, std::uint64_t steps_held) {
  // One session per client: a re-join replaces the old session (fresh keys).
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
    if (it->second->client_name == req.client_name) {
      end_session(it->first, "replaced by a new join");
      break;
    }
  }
  std::uint64_t id = 0;
  while (id == 0 || sessions_.count(id) != 0) crypto::random_bytes(&id, sizeof id);
  wire::JoinAck ack;
  ack.session_id = id;
  crypto::random_bytes(ack.secret.data(), ack.secret.size());
  ack.data_port = data_port_;
  ack.heartbeat_ms = static_cast<std::uint32_t>(options_.client_heartbeat_ms);
  ack.session_timeout_ms = static_cast<std::uint32_t>(options_.session_timeout_ms);
  ack.round = round;
  ack.steps_held = steps_held;
  sessions_.emplace(id, std::make_unique<Session>(id, ack.secret, req.client_name));
  {
    AdmissionToken token = admission_token(id, ack.secret);
    admissions_->add(id, token);  // before the JoinAck leaves: the client connects at once
    OPENSSL_cleanse(token.data(), token.size());
  }

  auto msg = wire::make_message(ack);
  OPENSSL_cleanse(ack.secret.data(), ack.secret.size());
  wire::PlainCodec plain;
  auto frames = wire::encode(msg, 0, 0, plain);
  OPENSSL_cleanse(msg.meta.data(), msg.meta.size());
  zmq::message_t route(req.route.data(), req.route.size());
  detail::send_frames(front_, &route, frames);
  // Sent frames now belong to libzmq (it frees them without wiping: see docs/security.md);
  // any it did not take are wiped here.
  wipe_frames(frames);
  ++stats_.joins_accepted;
  log::get("transport")->info("client '{}' joined: session {:#x}", req.client_name, id);
  return id;
}

void ServerTransport::Impl::refuse(const JoinRequest& req, const std::string& reason) {
  wire::ErrorMsg err{static_cast<std::uint16_t>(wire::ErrorCode::kRefused), reason};
  wire::PlainCodec plain;
  auto frames = wire::encode(wire::make_message(err), 0, 0, plain);
  zmq::message_t route(req.route.data(), req.route.size());
  detail::send_frames(front_, &route, frames);
  ++stats_.joins_refused;
  // The reason may quote what the client declared (its model name, say): escaped.
  log::get("transport")->warn("refused join from '{}': {}", req.client_name, log::peer_text(reason, 1000));
}

bool ServerTransport::Impl::send(std::uint64_t session_id, const wire::Message& msg) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end() || !it->second->has_route || !it->second->ending.empty()) return false;
  Session& s = *it->second;
  const auto now = Clock::now();
  if (!s.outbox.empty()) {
    flush_outbox(session_id, s, now);  // older messages first
    if (!s.ending.empty()) return false;
  }
  auto frames = s.channel.seal(msg);
  const std::size_t bytes = detail::total_bytes(frames);
  if (s.outbox.empty()) {
    const auto r = try_send(s, frames);
    if (r == SendResult::kSent) {
      ++stats_.messages_out;
      stats_.bytes_out += bytes;
      return true;
    }
    if (r == SendResult::kGone) {
      ++stats_.send_failures;
      mark_ending(session_id, s, "send failed: peer gone");  // ended once the data queue is drained
      return false;
    }
  }
  // The peer's queue is full: wait in the outbox, within its caps.
  if (!s.outbox.empty() && (s.outbox.size() >= options_.outbox_max_messages ||
                            s.outbox_bytes + bytes > options_.outbox_max_bytes)) {
    ++stats_.send_failures;
    ++stats_.sessions_not_draining;
    mark_ending(session_id, s,
                fmt::format("not draining: outbox full ({} messages, {} bytes waiting)", s.outbox.size(),
                            s.outbox_bytes));
    return false;
  }
  if (s.outbox.empty()) s.outbox_moved = now;
  s.outbox.push_back(std::move(frames));
  s.outbox_bytes += bytes;
  ++stats_.sends_deferred;
  return true;
}

void ServerTransport::Impl::send_error(std::uint64_t session_id, wire::ErrorCode code,
                                       const std::string& text) {
  send(session_id, wire::make_message(wire::ErrorMsg{static_cast<std::uint16_t>(code), text}));
}

void ServerTransport::Impl::end_session(std::uint64_t session_id, const std::string& reason) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  log::get("transport")
      ->info("session {:#x} ({}) ended: {}", session_id, it->second->client_name, reason);
  events_.push_back(SessionEnded{session_id, it->second->client_name, reason});
  admissions_->remove(session_id);  // no new data connection for it from now on
  sessions_.erase(it);
}

void ServerTransport::Impl::expire_sessions() {
  const auto now = Clock::now();
  if (now - last_expiry_check_ < std::chrono::milliseconds(100)) return;
  last_expiry_check_ = now;
  const auto timeout = std::chrono::milliseconds(options_.session_timeout_ms);
  std::vector<std::uint64_t> expired;
  for (const auto& [id, s] : sessions_)
    if (now - s->last_seen > timeout) expired.push_back(id);
  for (auto id : expired) {
    ++stats_.sessions_expired;
    end_session(id, "timeout");
  }
}

}  // namespace cutlayer::transport
