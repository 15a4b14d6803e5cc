// Loopback throughput of 8 MiB tensor messages through (a) plain ZeroMQ, (b) ZeroMQ CURVE,
// (c) cutlayer's sealed channel (the real ServerTransport/ClientTransport), in one run.
// Prints one JSON object per mode; ratios compare modes measured in this same run.
#include <CLI/CLI.hpp>
#include <zmq.hpp>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <thread>

#include "cutlayer/log.h"
#include "cutlayer/process_tuning.h"
#include "cutlayer/transport/client_transport.h"
#include "cutlayer/transport/server_transport.h"
#include "frame_codec.h"  // shared/src: the baselines send raw frames
#include "socket_setup.h"

using namespace cutlayer;
using Clock = std::chrono::steady_clock;

namespace {

struct Result {
  double gbps = 0;
  double seconds = 0;
};

// Sender thread: DEALER (optionally CURVE) pushes `total` messages of one tensor each.
// Receiver (this thread): ROUTER, decodes every message; timed after `warmup`.
Result run_zmq(bool curve, const torch::Tensor& payload, int warmup, int count) {
  const auto server_keys = transport::generate_key_pair();
  const auto client_keys = transport::generate_key_pair();
  zmq::context_t rx_ctx(1), tx_ctx(1);
  zmq::socket_t rx(rx_ctx, zmq::socket_type::router);
  transport::SocketOptions opts;
  transport::apply_socket_options(rx, opts);
  if (curve) {
    rx.set(zmq::sockopt::curve_server, 1);
    rx.set(zmq::sockopt::curve_secretkey, server_keys.secret_key);
  }
  rx.bind("tcp://127.0.0.1:*");
  const std::string ep = rx.get(zmq::sockopt::last_endpoint);
  const int total = warmup + count;

  std::thread sender([&] {
    zmq::socket_t tx(tx_ctx, zmq::socket_type::dealer);
    transport::apply_socket_options(tx, opts);
    tx.set(zmq::sockopt::sndtimeo, -1);
    if (curve) {
      tx.set(zmq::sockopt::curve_serverkey, server_keys.public_key);
      tx.set(zmq::sockopt::curve_publickey, client_keys.public_key);
      tx.set(zmq::sockopt::curve_secretkey, client_keys.secret_key);
    }
    tx.connect(ep);
    wire::PlainCodec plain;
    for (int i = 0; i < total; ++i) {
      auto frames = wire::encode(wire::make_message(wire::Activations{static_cast<std::uint64_t>(i)},
                                                    {payload}),
                                 0, static_cast<std::uint64_t>(i + 1), plain);
      for (std::size_t k = 0; k < frames.size(); ++k)
        tx.send(frames[k], k + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
    // Keep the socket until the receiver has everything (linger 0 would drop the tail).
    zmq::message_t done;
    zmq::pollitem_t item{tx.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::seconds(60));
  });

  Clock::time_point t0;
  std::vector<zmq::message_t> frames;
  zmq::message_t route;
  for (int i = 0; i < total; ++i) {
    if (i == warmup) t0 = Clock::now();
    frames.clear();
    (void)rx.recv(route);
    do {
      frames.emplace_back();
      (void)rx.recv(frames.back());
    } while (frames.back().more());
    wire::Message m = wire::decode(frames, wire::Limits{});
    if (m.tensors.at(0).nbytes() != payload.nbytes()) throw std::runtime_error("short message");
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  rx.send(route, zmq::send_flags::sndmore);
  rx.send(zmq::str_buffer("done"));
  sender.join();
  return {count * static_cast<double>(payload.nbytes()) / s / 1e9, s};
}

// The sealed channel through the real transports: a client thread sends Activations,
// the server (this thread) polls them out of its ServerTransport.
Result run_sealed(const torch::Tensor& payload, int warmup, int count) {
  const auto server_keys = transport::generate_key_pair();
  const auto client_keys = transport::generate_key_pair();
  transport::ServerTransportOptions so;
  so.server_keys = server_keys;
  so.allow_list.add("bench", client_keys.public_key);
  transport::ServerTransport server(so);
  const int total = warmup + count;

  std::thread client_thread([&] {
    transport::ClientTransportOptions co;
    co.join_port = server.join_port();
    co.server_public_key = server_keys.public_key;
    co.client_keys = client_keys;
    transport::ClientTransport client(co);
    client.join(wire::Join{});
    for (int i = 0; i < total; ++i)
      client.send(wire::make_message(wire::Activations{static_cast<std::uint64_t>(i)}, {payload}));
    (void)client.recv(std::chrono::seconds(60));  // the server's "done"
  });

  Clock::time_point t0;
  int received = 0;
  std::uint64_t session = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (received < total && Clock::now() < deadline) {
    auto ev = server.poll(std::chrono::milliseconds(100));
    if (!ev) continue;
    if (auto* j = std::get_if<transport::JoinRequest>(&*ev)) {
      session = server.accept(*j);
    } else if (auto* rx = std::get_if<transport::Received>(&*ev)) {
      if (rx->message.tensors.at(0).nbytes() != payload.nbytes())
        throw std::runtime_error("short message");
      if (++received == warmup) t0 = Clock::now();
    }
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  server.send(session, wire::make_message(wire::Probe{0}));
  client_thread.join();
  if (received < total) throw std::runtime_error("sealed bench timed out");
  return {count * static_cast<double>(payload.nbytes()) / s / 1e9, s};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"transport throughput: plain ZeroMQ vs CURVE vs the sealed channel"};
  double mib = 8;
  int count = 200, warmup = 10, repeats = 3;
  std::string modes = "plain,curve,sealed";
  app.add_option("--mib", mib, "MiB per tensor message");
  app.add_option("--count", count, "timed messages per mode");
  app.add_option("--warmup", warmup, "untimed messages first");
  app.add_option("--repeats", repeats, "runs per mode; the best is reported");
  app.add_option("--modes", modes, "comma-separated subset of plain,curve,sealed (profiling)");
  CLI11_PARSE(app, argc, argv);
  log::set_level("warn");
  tune_allocator();

  const auto payload = torch::randn({static_cast<std::int64_t>(mib * 1024 * 1024 / 4)});
  Result plain, curve, sealed;
  // Interleave the modes so that machine noise hits all of them alike.
  for (int r = 0; r < repeats; ++r) {
    const auto want = [&](const char* m) { return modes.find(m) != std::string::npos; };
    Result p, c, s;
    if (want("plain")) p = run_zmq(false, payload, warmup, count);
    if (want("curve")) c = run_zmq(true, payload, warmup, std::max(count / 4, 10));  // slow
    if (want("sealed")) s = run_sealed(payload, warmup, count);
    if (p.gbps > plain.gbps) plain = p;
    if (c.gbps > curve.gbps) curve = c;
    if (s.gbps > sealed.gbps) sealed = s;
  }
  auto line = [&](const char* mode, const Result& r) {
    std::printf("{\"bench\":\"transport\",\"mode\":\"%s\",\"mib\":%.1f,\"gbps\":%.3f,"
                "\"ratio_to_plain\":%.3f,\"ratio_to_curve\":%.3f}\n",
                mode, mib, r.gbps, r.gbps / plain.gbps, r.gbps / curve.gbps);
  };
  if (plain.gbps > 0) line("plain", plain);
  if (curve.gbps > 0) line("curve", curve);
  if (sealed.gbps > 0) line("sealed", sealed);
  return 0;
}
