// The data port admits only session holders (ZMTP PLAIN: session id + admission token,
// checked by ZAP before anything is buffered), and a peer that stops reading cannot stall
// the server loop (non-blocking sends, bounded outbox, "not draining" sessions end).
// Peers without a session speak ZMTP 3.0 themselves over raw TCP (test::ZmtpPeer), so
// that an unterminated multipart message or a bare 1 GiB frame header really reaches the
// server. Assertions on counters and events, with bounded waits, never on sleeps.
#include <gtest/gtest.h>

#include <zmq.hpp>

#include <algorithm>
#include <cstdio>
#include <string>

#include "admission.h"
#include "cutlayer/crypto/crypto.h"
#include "cutlayer/log.h"
#include "raw_peer.h"
#include "sealed_channel.h"
#include "test_support.h"

namespace cutlayer::transport {
namespace {

using test::Keys;
using test::ServerThread;
using test::Snapshot;
using test::ZmtpPeer;
using namespace std::chrono_literals;

constexpr std::uint64_t kGiB = std::uint64_t{1} << 30;

std::string random_token_hex() {
  std::uint8_t t[kAdmissionTokenBytes];
  crypto::random_bytes(t, sizeof t);
  return crypto::to_hex(t, sizeof t);
}

class DataPortTest : public ::testing::Test {
 protected:
  Keys keys;
  CurveKeyPair bob_keys = generate_key_pair();
  std::unique_ptr<ServerThread> server;

  void start(ServerTransportOptions opts) {
    opts.allow_list.add("bob", bob_keys.public_key);
    server = std::make_unique<ServerThread>(opts);
  }
  void SetUp() override { start(test::server_options(keys)); }
  ClientTransportOptions client_opts(const CurveKeyPair& k) {
    auto o = test::client_options(keys, server->join_port());
    o.client_keys = k;
    return o;
  }
  void join_bob(test::RawSession& bob) { bob.join(bob_keys, keys.server.public_key, server->join_port()); }

  // Joins `alice`, echoes a probe, and waits until the server thread's snapshot (which
  // trails its sends a little) shows her admitted with that probe.
  bool join_and_probe(ClientTransport& alice) {
    alice.join(wire::Join{});
    return probe(alice, 1) &&
           server->wait_for([](const Snapshot& s) { return s.probes_echoed == 1 && s.data_admitted == 1; });
  }

  static bool probe(ClientTransport& c, std::uint32_t id, std::chrono::milliseconds wait = 10s) {
    const auto t = torch::randn({1000});
    c.send(wire::make_message(wire::Probe{id}, {t}));
    const auto deadline = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < deadline) {
      auto reply = c.recv(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
      if (!reply) return false;
      if (reply->type != wire::MsgType::kProbeReply || wire::meta_as<wire::ProbeReply>(*reply).id != id) continue;
      return reply->tensors.size() == 1 && torch::equal(reply->tensors[0], t);
    }
    return false;
  }
};

TEST(Admission, TokenAndUserFormat) {
  SessionSecret secret{};
  for (std::size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<std::uint8_t>(i);
  DataPortCredentials a, b;
  data_port_credentials(0x0123456789abcdefull, secret, a);
  data_port_credentials(0x0123456789abcdefull, secret, b);
  EXPECT_EQ(a.username, "0123456789abcdef");
  EXPECT_EQ(a.password.size(), 32u);
  EXPECT_EQ(a.password, b.password);  // deterministic: both ends compute it
  DataPortCredentials other_id, other_secret;
  data_port_credentials(0x0123456789abcdeeull, secret, other_id);
  secret[0] ^= 1;
  data_port_credentials(0x0123456789abcdefull, secret, other_secret);
  EXPECT_NE(a.password, other_id.password);
  EXPECT_NE(a.password, other_secret.password);
  EXPECT_EQ(parse_session_user("0123456789abcdef"), 0x0123456789abcdefull);
  EXPECT_FALSE(parse_session_user("0123456789ABCDEF"));
  EXPECT_FALSE(parse_session_user("0123456789abcde"));
  EXPECT_FALSE(parse_session_user("0x23456789abcdef"));
}

TEST(Admission, RegistryChecksSessionTokenAndCount) {
  AdmissionRegistry reg(3);
  SessionSecret secret{};
  crypto::random_bytes(secret.data(), secret.size());
  const std::uint64_t id = 0xfeedface12345678ull;
  reg.add(id, admission_token(id, secret));
  DataPortCredentials c;
  data_port_credentials(id, secret, c);
  std::uint64_t got = 0;
  using V = AdmissionRegistry::Verdict;
  EXPECT_EQ(reg.admit(c.username, random_token_hex(), got), V::kBadToken);
  EXPECT_EQ(reg.admit(session_user(id + 1), c.password, got), V::kUnknownSession);
  EXPECT_EQ(reg.admit("alice", c.password, got), V::kMalformed);
  EXPECT_EQ(reg.admit(c.username, c.password.substr(1), got), V::kMalformed);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(reg.admit(c.username, c.password, got), V::kAdmitted);
  EXPECT_EQ(got, id);
  EXPECT_EQ(reg.admit(c.username, c.password, got), V::kExhausted);
  reg.remove(id);
  EXPECT_EQ(reg.admit(c.username, c.password, got), V::kUnknownSession);
}

TEST(PeerText, EscapesControlCharactersAndCaps) {
  EXPECT_EQ(log::peer_text("done"), "done");
  EXPECT_EQ(log::peer_text("a\nb\x1b[31mc\\d\x7f\xc3"), "a\\x0ab\\x1b[31mc\\x5cd\\x7f\\xc3");
  const std::string long_text(4096, 'z');
  const auto capped = log::peer_text(long_text);
  EXPECT_EQ(capped, std::string(200, 'z') + "... (3896 more bytes)");
  for (char c : log::peer_text(std::string("\r\n\t\0\x01", 5))) EXPECT_TRUE(c >= 0x20 && c < 0x7f);
}

TEST(LogLimiter, FirstFewThenEveryNth) {
  log::Limiter lim(3, 10);
  int passed = 0;
  std::uint64_t n = 0;
  for (int i = 0; i < 100; ++i) passed += lim.allow(n) ? 1 : 0;
  EXPECT_EQ(n, 100u);
  EXPECT_EQ(passed, 3 + 10);  // 1, 2, 3, then 10, 20, ..., 100
}

// A peer with no session, speaking ZMTP 3.0 with NULL: the server hangs up after its
// greeting, so nothing it streams becomes a message or stays in the server's memory.
TEST_F(DataPortTest, NullPeerIsClosedAndCannotMakeTheServerHoldMemory) {
  ClientTransport alice(client_opts(keys.alice));
  ASSERT_TRUE(join_and_probe(alice));
  const auto before = server->snapshot();
  {
    ZmtpPeer p(server->data_port());
    ASSERT_TRUE(p.connected());
    p.null_handshake();
    p.stream_unterminated(16 << 20, 64 << 10);
    EXPECT_TRUE(p.closed_by_server(5s));
  }
  {
    ZmtpPeer p(server->data_port());
    p.null_handshake();
    p.header(kGiB, true);  // a 1 GiB frame, MORE set
    p.stream_unterminated(4 << 20, 64 << 10);
    EXPECT_TRUE(p.closed_by_server(5s));
  }
  // 256 MiB of unterminated multipart in all (the server closes each connection at the
  // greeting; the peer reconnects and goes on): the server's memory does not follow.
  const std::uint64_t rss0 = test::held_bytes();
  std::uint64_t pushed = 0;
  int connections = 0;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (pushed < (std::uint64_t{256} << 20) && std::chrono::steady_clock::now() < deadline) {
    ZmtpPeer p(server->data_port());
    ++connections;
    if (!p.null_handshake()) continue;
    pushed += p.stream_unterminated(std::uint64_t{64} << 20, 64 << 10);
  }
  const std::uint64_t rss1 = test::held_bytes();
  std::printf("[ measure ] NULL peers: %d connections, %.1f MiB taken by the kernel, memory held %+.1f MiB\n",
              connections, pushed / 1048576.0, (static_cast<double>(rss1) - rss0) / 1048576.0);
  EXPECT_LT(rss1, rss0 + (std::uint64_t{32} << 20));
  const auto after = server->snapshot();
  EXPECT_EQ(after.stats.dropped(), before.stats.dropped());  // nothing even reached the loop
  EXPECT_EQ(after.stats.messages_in, before.stats.messages_in);
  EXPECT_EQ(after.data_admitted, before.data_admitted);
  EXPECT_TRUE(probe(alice, 2));
}

TEST_F(DataPortTest, PlainWithAWrongTokenIsRefused) {
  ClientTransport alice(client_opts(keys.alice));
  ASSERT_TRUE(join_and_probe(alice));
  const auto before = server->snapshot();
  {
    ZmtpPeer p(server->data_port());
    EXPECT_FALSE(p.plain_handshake(session_user(alice.session_id()), random_token_hex()));
    EXPECT_TRUE(p.closed_by_server(5s));
  }
  {
    ZmtpPeer p(server->data_port());
    EXPECT_FALSE(p.plain_handshake("alice", "password"));  // not even the right form
  }
  EXPECT_TRUE(server->wait_for([&](const Snapshot& s) { return s.data_refused >= before.data_refused + 2; }));
  {
    // A HELLO announcing 1 GiB: over the data socket's frame cap, refused before ZAP is asked
    // and before anything is allocated.
    ZmtpPeer p(server->data_port());
    p.greet("PLAIN");
    p.header(kGiB, false, true);
    p.stream_unterminated(4 << 20, 64 << 10);
    EXPECT_TRUE(p.closed_by_server(5s));
  }
  const auto after = server->snapshot();
  EXPECT_EQ(after.data_refused, before.data_refused + 2);
  EXPECT_EQ(after.data_admitted, before.data_admitted);
  EXPECT_EQ(after.stats.dropped(), 0u);
  EXPECT_TRUE(probe(alice, 2));
}

// bob holds a session; his token does not open alice's, and his admitted connection
// cannot speak for her session.
TEST_F(DataPortTest, TokenOfAnotherSessionIsRefusedAndEnvelopesAreBoundToTheConnection) {
  ClientTransport alice(client_opts(keys.alice));
  alice.join(wire::Join{});
  ASSERT_TRUE(probe(alice, 1));
  test::RawSession bob;
  ASSERT_NO_FATAL_FAILURE(join_bob(bob));
  {
    ZmtpPeer p(server->data_port());
    EXPECT_FALSE(p.plain_handshake(session_user(alice.session_id()), bob.password));
  }
  ZmtpPeer p(server->data_port());
  ASSERT_TRUE(p.plain_handshake(bob.user, bob.password));  // bob's own: admitted
  // On his admitted connection, a message naming alice's session: dropped unopened.
  SessionSecret secret{};
  crypto::random_bytes(secret.data(), secret.size());
  SealedChannel as_alice(alice.session_id(), secret, Side::kClient);
  auto frames = as_alice.seal(wire::make_message(wire::Probe{5}, {torch::ones({4})}));
  for (std::size_t i = 0; i < frames.size(); ++i)
    ASSERT_TRUE(p.frame(frames[i].to_string(), i + 1 < frames.size()));
  EXPECT_TRUE(server->wait_for([](const Snapshot& s) { return s.stats.wrong_session == 1; }));
  // His own message on the same raw connection is served.
  frames = bob.channel->seal(wire::make_message(wire::Probe{6}, {torch::ones({4})}));
  for (std::size_t i = 0; i < frames.size(); ++i)
    ASSERT_TRUE(p.frame(frames[i].to_string(), i + 1 < frames.size()));
  EXPECT_TRUE(server->wait_for([](const Snapshot& s) { return s.probes_echoed == 2; }));
  const auto s = server->snapshot();
  EXPECT_EQ(s.stats.bad_tag, 0u);
  EXPECT_EQ(s.stats.unknown_session, 0u);
  EXPECT_TRUE(probe(alice, 2));
}

TEST_F(DataPortTest, HandshakesPerSessionAreCappedAndEndWithTheSession) {
  test::RawSession bob;
  ASSERT_NO_FATAL_FAILURE(join_bob(bob));
  int admitted = 0;
  for (int i = 0; i < 10; ++i) {
    ZmtpPeer p(server->data_port());
    if (p.plain_handshake(bob.user, bob.password)) ++admitted;
  }
  EXPECT_EQ(admitted, ServerTransportOptions{}.max_data_handshakes);
  // A re-join replaces the session: the old credentials open nothing, the new ones do.
  test::RawSession bob2;
  ASSERT_NO_FATAL_FAILURE(join_bob(bob2));
  EXPECT_TRUE(server->wait_for([](const Snapshot& s) { return s.ended.size() == 1; }));
  {
    ZmtpPeer p(server->data_port());
    EXPECT_FALSE(p.plain_handshake(bob.user, bob.password));
  }
  auto data = bob2.data_socket();
  EXPECT_TRUE(bob2.probe(data, 1));
}

// A real client that sends probes and never reads the echoes: its outbox fills while
// alice keeps being served, then its session ends as not draining.
class StuckReaderTest : public DataPortTest {
 protected:
  void SetUp() override {}
};

TEST_F(StuckReaderTest, AClientThatNeverReadsDoesNotStallOthersAndIsEnded) {
  auto opts = test::server_options(keys);
  opts.outbox_max_messages = 32;
  opts.outbox_stall_ms = 120000;  // this test ends it by overflow
  start(opts);
  ClientTransport alice(client_opts(keys.alice));
  alice.join(wire::Join{});
  ClientTransport stuck(client_opts(bob_keys));
  stuck.join(wire::Join{});
  ASSERT_TRUE(probe(alice, 1));
  const auto big = torch::randn({64 * 1024});  // 256 KiB echoes fill the pipes quickly
  std::uint64_t sent = 0;
  auto send_stuck = [&] {
    const auto echoed = server->snapshot().probes_echoed;
    stuck.send(wire::make_message(wire::Probe{static_cast<std::uint32_t>(1000 + sent)}, {big}));
    ++sent;
    // The server has handled it (echo sent or queued) before the next step.
    return server->wait_for([&](const Snapshot& s) { return s.probes_echoed > echoed || !s.ended.empty(); });
  };
  // 1. Until the peer's queues are full and an echo waits in its outbox.
  while (server->snapshot().stats.sends_deferred == 0 && sent < 1000) ASSERT_TRUE(send_stuck());
  ASSERT_GE(server->snapshot().stats.sends_deferred, 1u) << "the stuck peer never filled its queue";
  std::printf("[ measure ] stuck peer: %llu echoes before the first one waited\n",
              static_cast<unsigned long long>(sent));
  // 2. While it stays full, further echoes to it wait in the outbox and alice is served
  // each time (the old blocking send held the loop 10 s per echo here). (Not every echo
  // need wait: the kernel may grow a loopback socket's buffers and take one more.)
  const auto deferred_before = server->snapshot().stats.sends_deferred;
  int served = 0;
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(send_stuck());
    if (probe(alice, 100 + i, 5s)) ++served;
  }
  auto s = server->snapshot();
  EXPECT_EQ(served, 10);
  EXPECT_TRUE(s.ended.empty()) << s.ended.front();
  EXPECT_GE(s.stats.sends_deferred, deferred_before + 5);
  std::printf("[ measure ] phase 2: %llu of 10 echoes waited in the outbox\n",
              static_cast<unsigned long long>(s.stats.sends_deferred - deferred_before));
  EXPECT_EQ(s.stats.sessions_not_draining, 0u);
  // 3. More than the outbox holds: the stuck session ends, alice's goes on.
  for (int i = 0; i < 64 && server->snapshot().ended.empty(); ++i) ASSERT_TRUE(send_stuck());
  ASSERT_TRUE(server->wait_for([](const Snapshot& x) { return !x.ended.empty(); }));
  s = server->snapshot();
  ASSERT_EQ(s.ended.size(), 1u);
  EXPECT_EQ(s.ended[0].rfind("not draining", 0), 0u) << s.ended[0];
  EXPECT_EQ(s.stats.sessions_not_draining, 1u);
  EXPECT_TRUE(probe(alice, 2));
}

TEST_F(StuckReaderTest, AnOutboxThatDoesNotMoveEndsItsSession) {
  auto opts = test::server_options(keys);
  opts.outbox_stall_ms = 300;
  start(opts);
  ClientTransport alice(client_opts(keys.alice));
  alice.join(wire::Join{});
  ClientTransport stuck(client_opts(bob_keys));
  stuck.join(wire::Join{});
  const auto big = torch::randn({64 * 1024});
  std::uint32_t id = 0;
  while (server->snapshot().stats.sends_deferred == 0 && server->snapshot().ended.empty() && id < 1000) {
    const auto echoed = server->snapshot().probes_echoed;
    stuck.send(wire::make_message(wire::Probe{++id}, {big}));
    ASSERT_TRUE(server->wait_for([&](const Snapshot& s) { return s.probes_echoed > echoed || !s.ended.empty(); }));
  }
  ASSERT_TRUE(server->wait_for([](const Snapshot& s) { return !s.ended.empty(); }));
  const auto s = server->snapshot();
  EXPECT_EQ(s.ended[0].rfind("not draining", 0), 0u) << s.ended[0];
  EXPECT_TRUE(probe(alice, 1));
}

}  // namespace
}  // namespace cutlayer::transport
