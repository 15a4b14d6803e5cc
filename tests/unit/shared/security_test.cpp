// Security of the transport, named by behaviour (as libzmq's test_security_curve.cpp).
// Fresh keys per test; assertions on monitor events and counters, never on sleeps.
#include <gtest/gtest.h>
#include <zmq.h>

#include <zmq.hpp>

#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <thread>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"
#include "frame_codec.h"  // shared/src: raw frames
#include "raw_peer.h"
#include "sealed_channel.h"
#include "test_support.h"

namespace cutlayer::transport {
namespace {

using test::Keys;
using test::ServerThread;
using test::Snapshot;
using namespace std::chrono_literals;

// A raw socket's monitor: collects event numbers.
class Monitor {
 public:
  Monitor(zmq::context_t& ctx, zmq::socket_t& s) : pair_(ctx, zmq::socket_type::pair) {
    static int counter = 0;
    const std::string ep = "inproc://test-monitor-" + std::to_string(++counter);
    EXPECT_EQ(zmq_socket_monitor(s.handle(), ep.c_str(), ZMQ_EVENT_ALL), 0);
    pair_.set(zmq::sockopt::linger, 0);
    pair_.connect(ep);
  }
  // Waits for any event in `wanted`; returns it, or 0 after the timeout.
  int wait_for_any(std::initializer_list<int> wanted, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      zmq::pollitem_t item{pair_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 50ms);
      if (!(item.revents & ZMQ_POLLIN)) continue;
      zmq::message_t ev, addr;
      (void)pair_.recv(ev);
      if (ev.more()) (void)pair_.recv(addr);
      std::uint16_t event = 0;
      std::memcpy(&event, ev.data(), 2);
      seen_.push_back(event);
      for (int w : wanted)
        if (w == event) return event;
    }
    return 0;
  }
  const std::vector<int>& seen() const { return seen_; }

 private:
  zmq::socket_t pair_;
  std::vector<int> seen_;
};

std::vector<zmq::message_t> copy_frames(const std::vector<zmq::message_t>& f) {
  std::vector<zmq::message_t> out;
  for (const auto& m : f) out.emplace_back(m.data(), m.size());
  return out;
}

using test::send_message;

// alice is a real ClientTransport; bob joins by hand (test::RawSession), so the test holds
// his session secret and can seal, tamper and replay on his own admitted connection.
class SecurityTest : public ::testing::Test {
 protected:
  Keys keys;
  CurveKeyPair bob_keys = generate_key_pair();
  std::unique_ptr<ServerThread> server;
  void SetUp() override {
    auto opts = test::server_options(keys);
    opts.allow_list.add("bob", bob_keys.public_key);
    server = std::make_unique<ServerThread>(opts);
  }
  ClientTransportOptions alice() { return test::client_options(keys, server->join_port()); }
  void join_bob(test::RawSession& bob) { bob.join(bob_keys, keys.server.public_key, server->join_port()); }

  // A probe round trip through the real client, compared bit for bit.
  void expect_probe_works(ClientTransport& client, std::int64_t numel = 1000) {
    auto t = torch::randn({numel});
    client.send(wire::make_message(wire::Probe{99}, {t}));
    auto reply = client.recv(10s);
    ASSERT_TRUE(reply.has_value());
    ASSERT_EQ(reply->type, wire::MsgType::kProbeReply);
    EXPECT_EQ(wire::meta_as<wire::ProbeReply>(*reply).id, 99u);
    ASSERT_EQ(reply->tensors.size(), 1u);
    EXPECT_TRUE(torch::equal(reply->tensors[0], t));
  }
};

TEST_F(SecurityTest, ValidKeyAccepted) {
  ClientTransport client(alice());
  const auto ack = client.join(wire::Join{});
  EXPECT_NE(ack.session_id, 0u);
  EXPECT_TRUE(server->wait_for([](const Snapshot& s) { return s.stats.joins_accepted == 1; }));
  EXPECT_EQ(server->snapshot().zap_accepted, 1u);
  EXPECT_EQ(server->snapshot().zap_rejected, 0u);
  expect_probe_works(client);
}

TEST_F(SecurityTest, UnknownKeyRejected) {
  auto opts = alice();
  opts.client_keys = generate_key_pair();  // not on the allow-list
  ClientTransport stranger(opts);
  try {
    stranger.join(wire::Join{});
    FAIL() << "join with an unknown key succeeded";
  } catch (const AuthError& e) {
    EXPECT_NE(std::string(e.what()).find("allow-list"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(server->wait_for([](const Snapshot& s) { return s.zap_rejected >= 1; }));
  const auto s = server->snapshot();
  EXPECT_EQ(s.zap_accepted, 0u);
  EXPECT_EQ(s.joins_seen, 0u);

  // The same raw attempt, watched on the client's monitor: ZAP's refusal arrives.
  zmq::context_t ctx(1);
  zmq::socket_t sock(ctx, zmq::socket_type::dealer);
  sock.set(zmq::sockopt::linger, 0);
  const auto k = generate_key_pair();
  sock.set(zmq::sockopt::curve_serverkey, keys.server.public_key);
  sock.set(zmq::sockopt::curve_publickey, k.public_key);
  sock.set(zmq::sockopt::curve_secretkey, k.secret_key);
  Monitor mon(ctx, sock);
  sock.connect("tcp://127.0.0.1:" + std::to_string(server->join_port()));
  EXPECT_EQ(mon.wait_for_any({ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, ZMQ_EVENT_HANDSHAKE_SUCCEEDED}, 5s),
            ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
}

TEST_F(SecurityTest, NullMechanismRejected) {
  zmq::context_t ctx(1);
  zmq::socket_t sock(ctx, zmq::socket_type::dealer);  // no CURVE: NULL mechanism
  sock.set(zmq::sockopt::linger, 0);
  Monitor mon(ctx, sock);
  sock.connect("tcp://127.0.0.1:" + std::to_string(server->join_port()));
  wire::PlainCodec plain;
  auto frames = wire::encode(wire::make_message(wire::Join{}), 0, 0, plain);
  // Queued; a NULL peer never gets past the handshake, so they are never delivered.
  (void)sock.send(frames[0], zmq::send_flags::sndmore | zmq::send_flags::dontwait);
  (void)sock.send(frames[1], zmq::send_flags::dontwait);
  EXPECT_EQ(mon.wait_for_any({ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL,
                              ZMQ_EVENT_HANDSHAKE_SUCCEEDED},
                             5s) != ZMQ_EVENT_HANDSHAKE_SUCCEEDED,
            true);
  for (int e : mon.seen()) EXPECT_NE(e, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
  zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
  EXPECT_EQ(zmq::poll(&item, 1, 300ms), 0);  // no answer
  const auto s = server->snapshot();
  EXPECT_EQ(s.joins_seen, 0u);
  EXPECT_EQ(s.zap_accepted, 0u);
}

TEST_F(SecurityTest, WrongServerKeyFails) {
  auto opts = alice();
  opts.server_public_key = generate_key_pair().public_key;  // pinned key is not the server's
  opts.join_attempts = 1;
  opts.join_timeout = 1500ms;
  ClientTransport client(opts);
  EXPECT_THROW(client.join(wire::Join{}), IoError);
  const auto s = server->snapshot();
  EXPECT_EQ(s.joins_seen, 0u);
  EXPECT_EQ(s.zap_accepted, 0u);
  EXPECT_FALSE(client.joined());
}

TEST_F(SecurityTest, JoinAckSecretIsNotReturned) {
  // ClientTransport derives the channel keys and the admission token, then wipes the
  // secret: what join() returns has none.
  ClientTransport client(alice());
  const auto ack = client.join(wire::Join{});
  EXPECT_NE(ack.session_id, 0u);
  for (auto b : ack.secret) EXPECT_EQ(b, 0u);
  expect_probe_works(client);
}

TEST_F(SecurityTest, TamperedFrameDropped) {
  ClientTransport client(alice());
  client.join(wire::Join{});
  test::RawSession bob;
  ASSERT_NO_FATAL_FAILURE(join_bob(bob));
  auto data = bob.data_socket();
  ASSERT_TRUE(bob.probe(data, 1));
  const auto t = torch::randn({256});
  // A flipped ciphertext bit in the meta frame, then in the envelope (the AAD).
  auto frames = bob.channel->seal(wire::make_message(wire::Probe{2}, {t}));
  frames[1].data<std::uint8_t>()[0] ^= 0x01;
  send_message(data, frames);
  EXPECT_TRUE(server->wait_for([](const Snapshot& s) { return s.stats.bad_tag == 1; }));
  frames = bob.channel->seal(wire::make_message(wire::Probe{3}, {t}));
  frames[0].data<std::uint8_t>()[31] ^= 0x01;  // the sequence number's top byte
  send_message(data, frames);
  EXPECT_TRUE(server->wait_for([](const Snapshot& s) { return s.stats.bad_tag == 2; }));
  EXPECT_EQ(server->snapshot().probes_echoed, 1u);
  // Nothing tampered was accepted; both sessions still work.
  EXPECT_TRUE(bob.probe(data, 4));
  expect_probe_works(client);
  EXPECT_EQ(server->snapshot().stats.bad_tag, 2u);
}

TEST_F(SecurityTest, ReplayedFrameDropped) {
  test::RawSession bob;
  ASSERT_NO_FATAL_FAILURE(join_bob(bob));
  auto data = bob.data_socket();
  auto frames = bob.channel->seal(wire::make_message(wire::Probe{7}, {torch::ones({16})}));
  auto replay = copy_frames(frames);
  send_message(data, frames);
  EXPECT_TRUE(server->wait_for([](const Snapshot& s) { return s.probes_echoed == 1; }));
  send_message(data, replay);
  EXPECT_TRUE(server->wait_for([](const Snapshot& s) { return s.stats.replayed == 1; }));
  EXPECT_EQ(server->snapshot().probes_echoed, 1u);
}

// A session holder's connection speaks only for its own session: a message whose envelope
// names another (live or made up) is dropped before it is opened.
TEST_F(SecurityTest, EnvelopeNamingAnotherSessionDropped) {
  ClientTransport client(alice());
  client.join(wire::Join{});
  test::RawSession bob;
  ASSERT_NO_FATAL_FAILURE(join_bob(bob));
  auto data = bob.data_socket();
  ASSERT_TRUE(bob.probe(data, 1));
  SessionSecret secret{};
  crypto::random_bytes(secret.data(), secret.size());
  SealedChannel made_up(0x1234567812345678ull, secret, Side::kClient);
  auto frames = made_up.seal(wire::make_message(wire::Probe{2}, {torch::ones({8})}));
  send_message(data, frames);
  EXPECT_TRUE(server->wait_for([](const Snapshot& s) { return s.stats.wrong_session == 1; }));
  SealedChannel as_alice(client.session_id(), secret, Side::kClient);
  frames = as_alice.seal(wire::make_message(wire::Probe{3}, {torch::ones({8})}));
  send_message(data, frames);
  EXPECT_TRUE(server->wait_for([](const Snapshot& s) { return s.stats.wrong_session == 2; }));
  const auto s = server->snapshot();
  EXPECT_EQ(s.probes_echoed, 1u);
  EXPECT_EQ(s.stats.bad_tag, 0u);  // never opened
  EXPECT_EQ(s.stats.unknown_session, 0u);
  EXPECT_TRUE(bob.probe(data, 4));
  expect_probe_works(client);
}

TEST_F(SecurityTest, GarbageOnTheDataPortDoesNotStopOtherClients) {
  ClientTransport client(alice());
  client.join(wire::Join{});
  test::RawSession bob;
  ASSERT_NO_FATAL_FAILURE(join_bob(bob));
  auto raw = bob.data_socket();  // admitted: the garbage reaches the server's decoder
  std::mt19937 rng(3);
  for (int i = 0; i < 300; ++i) {
    std::string junk(1 + rng() % 200, '\0');
    for (auto& c : junk) c = static_cast<char>(rng());
    raw.send(zmq::buffer(junk), i % 3 ? zmq::send_flags::none : zmq::send_flags::sndmore);
  }
  raw.send(zmq::str_buffer("end"), zmq::send_flags::none);
  EXPECT_TRUE(server->wait_for([](const Snapshot& s) { return s.stats.dropped() >= 100; }));
  expect_probe_works(client);
}

TEST_F(SecurityTest, SixtyFourMiBTensorArrivesBitExact) {
  ClientTransport client(alice());
  client.join(wire::Join{});
  expect_probe_works(client, 16 * 1024 * 1024);  // 16M floats = 64 MiB
}

TEST_F(SecurityTest, LeaveEndsTheSession) {
  ClientTransport client(alice());
  client.join(wire::Join{});
  EXPECT_TRUE(server->wait_for([](const Snapshot& s) { return s.stats.messages_in >= 1; }));
  client.leave("test done");
  EXPECT_FALSE(client.joined());
  // A re-join gets a new session with fresh keys.
  const auto ack = client.join(wire::Join{});
  EXPECT_NE(ack.session_id, 0u);
  expect_probe_works(client);
}

// The heartbeat-echo race: a client sends a heartbeat, then its Leave, and is gone before
// the server reads either. The echo of that heartbeat fails (the peer's connection is
// closed), yet the session must end as left, by the Leave already queued behind it, not
// as "send failed" with the Leave then dropped for an unknown session. The server is
// polled here, on this thread, so that nothing reads the two messages early.
TEST(ServerTransportRace, LeaveBehindAHeartbeatEndsTheSessionAsLeft) {
  Keys keys;
  ServerTransport server(test::server_options(keys));
  std::optional<ClientTransport> client(std::in_place,
                                        test::client_options(keys, server.join_port()));
  std::thread joiner([&] { client->join(wire::Join{}); });
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (server.stats().messages_in < 1 && std::chrono::steady_clock::now() < deadline) {
    auto ev = server.poll(20ms);
    if (ev)
      if (auto* j = std::get_if<JoinRequest>(&*ev)) server.accept(*j);
  }
  joiner.join();
  ASSERT_EQ(server.stats().messages_in, 1u);  // the client's first heartbeat: its route
  client->send(wire::make_message(wire::Heartbeat{}));
  client->leave("done");
  client.reset();  // its context flushes the Leave, then the connection closes
  // Not a timing assertion: only so that the close reaches the server first and its echo
  // fails, the case this test is about (the result must hold either way).
  std::this_thread::sleep_for(200ms);
  std::string ended;
  while (ended.empty() && std::chrono::steady_clock::now() < deadline + 10s) {
    auto ev = server.poll(20ms);
    if (ev)
      if (auto* e = std::get_if<SessionEnded>(&*ev)) ended = e->reason;
  }
  std::printf("[ measure ] echo send failures: %llu\n",
              static_cast<unsigned long long>(server.stats().send_failures));
  EXPECT_EQ(ended, "left: done");
  EXPECT_EQ(server.stats().unknown_session, 0u);
  EXPECT_EQ(server.session_count(), 0u);
}

}  // namespace
}  // namespace cutlayer::transport
