// sync_messages: the aggregation's incoming messages through the code that validates
// them, with no sockets: the client's FrontSync (ModelSnapshot via load_snapshot; Update
// and SyncReject via offer + settle) and the server's Aggregator (SparseGrad via
// contribute; membership and round deadlines driven by the input). Messages are decoded
// from the frame container by wire::decode first, as they arrive.
//   input := u8 setup, op{0..10}
//   setup : bit 0 Adam (else SGD), bits 1-2 staleness bound, bit 3 norm clip (2 x median),
//           bit 4 K-FAC with averaged factors (the client consents; Adam off), bit 5 the
//           members decompose them (else the server)
//   op    := u8 code, then by code % 6:
//            0 client.load_snapshot(message)     1 client.offer(message) + settle
//            2 aggregator.contribute(session, message)
//            3 aggregator.add_member(session); its snapshot loaded by the client when
//              the session is the client's (1)
//            4 clock += (code >> 3) x 2 s; aggregator.tick   5 aggregator.remove_member
//            session = 1 + (code >> 3) % 3; a message is in the container (fuzz_common.h)
// Refusal is ProtocolError, with nothing applied (and ConfigError for a snapshot from an
// aggregation whose K-FAC factor sharing the client's config does not match, before
// anything is loaded). Invariants: the server's own snapshot loads into the client; while
// the client follows only the server (its snapshot, then the Updates addressed to session
// 1) its front equals the server's replica whenever their versions agree, and with shared
// K-FAC its preconditioner is the one the server shipped; a refused SparseGrad changes
// neither the replica nor the shared factors; the replica stays finite.
#include <torch/torch.h>

#include <chrono>

#include "cutlayer/client/front_sync.h"
#include "cutlayer/error.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/server/aggregator.h"
#include "cutlayer/sync/flat_params.h"
#include "cutlayer/train/optimizer.h"
#include "frame_codec.h"
#include "fuzz_common.h"

namespace cutlayer::fuzz::sync_messages {
namespace {

train::TrainOptions tiny(std::uint8_t setup) {
  train::TrainOptions o;
  o.model = "fuzz-tiny";
  o.front = "linear(4,3) relu linear(3,2)";
  o.back = "linear(2,2)";
  o.input_shape = {4};
  o.optimizer = (setup & 16) != 0 ? "kfac" : (setup & 1) != 0 ? "adam" : "sgd";
  o.kfac.factor_every = 1;
  o.kfac.inverse_every = 1;
  o.lr = 0.1;
  o.momentum = 0.9;
  return o;
}

struct Client {
  model::SplitModel model;
  sync::FlatParams flat;
  std::unique_ptr<torch::optim::Optimizer> opt;
  std::unique_ptr<train::Kfac> kfac;
  std::unique_ptr<client::FrontSync> sync;
  explicit Client(const train::TrainOptions& o)
      : model(model::build_split(train::split_spec(o), o.seed + 7)),  // not the server's weights
        flat(sync::flat_params(model.front, &model.head)),
        opt(train::make_optimizer(flat.params(), o)),
        kfac(train::make_kfac({model.front, model.head}, {"front", "head"}, o, "fuzz")) {
    sync::SyncOptions so;
    so.enabled = true;
    so.compressor = "topk";
    so.density = 0.25;
    so.share_kfac_factors = o.optimizer == "kfac";
    sync = std::make_unique<client::FrontSync>(so, flat, *opt, kfac.get());
  }
};

bool all_finite(const std::vector<torch::Tensor>& ts) {
  for (const auto& t : ts)
    if (!torch::isfinite(t).all().item<bool>()) return false;
  return true;
}

}  // namespace

int fuzz_one(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  FillBudget budget;
  const auto limits = fuzz_limits();
  const auto setup = in.take<std::uint8_t>();
  const auto train = tiny(setup);
  server::AggregatorOptions ao;
  if ((setup & 16) != 0) ao.kfac_factors = "average";
  ao.kfac_decompositions = (setup & 32) != 0 ? "members" : "server";
  ao.staleness = (setup >> 1) & 3;
  ao.clip = (setup & 8) != 0 ? 2.0 : 0.0;
  ao.deadline = std::chrono::milliseconds(5000);
  server::Aggregator agg(train, ao);
  Client cl(train);
  bool in_step = false;  // the client follows only the server's snapshot and its Updates
  auto now = server::Aggregator::Clock::time_point{} + std::chrono::hours(1);

  // Updates and rejects the server addressed to the client's session.
  auto deliver = [&](server::Aggregator::Outbox& out) {
    for (auto& [session, msg] : out) {
      if (session != 1) continue;
      if (msg.type == wire::MsgType::kModelSnapshot) {
        try {
          cl.sync->reset();
          cl.sync->load_snapshot(msg);
        } catch (const ProtocolError& e) {
          throw Finding(std::string("the server's own snapshot does not load: ") + e.what());
        }
        in_step = true;
        continue;
      }
      if (!cl.sync->offer(msg)) continue;
      try {
        cl.sync->settle(1000);
      } catch (const ProtocolError& e) {
        check(!in_step, std::string("the server's Update refused by a client in step: ") + e.what());
      }
    }
    if (in_step && cl.sync->version() == agg.version()) {
      check(cl.sync->hash() == agg.hash(), "client front differs from the server's replica at the same version");
      if (ao.kfac_factors == "average" && ao.kfac_decompositions == "server")
        check(cl.sync->kfac_hash() == agg.kfac_hash(), "the client's preconditioner is not the one the server shipped");
    }
  };

  for (int step = 0; step < 10 && !in.empty(); ++step) {
    const auto code = in.take<std::uint8_t>();
    const std::uint64_t session = 1 + (code >> 3) % 3;
    server::Aggregator::Outbox out;
    auto next_message = [&]() -> std::optional<wire::Message> {
      auto frames = read_frames(in, budget);
      try {
        auto msg = wire::decode(frames, limits);
        return msg;
      } catch (const ProtocolError&) {
        return std::nullopt;
      }
    };
    switch (code % 6) {
      case 0: {
        auto msg = next_message();
        if (!msg) break;
        const auto hash = cl.sync->hash();
        try {
          cl.sync->load_snapshot(*msg);
          in_step = false;
          check(all_finite(cl.flat.params()), "a snapshot made the client's front non-finite");
        } catch (const ProtocolError&) {
        } catch (const ConfigError&) {  // another K-FAC sharing than this client's: nothing loaded
          check(cl.sync->hash() == hash, "a snapshot refused for its K-FAC sharing changed the front");
        }
        break;
      }
      case 1: {
        auto msg = next_message();
        if (!msg) break;
        if (!cl.sync->offer(*msg)) break;
        const auto version = cl.sync->version();
        try {
          cl.sync->settle(1000);
        } catch (const ProtocolError&) {
        }
        if (cl.sync->version() != version) in_step = false;
        break;
      }
      case 2: {
        auto msg = next_message();
        if (!msg) break;
        const auto hash = agg.hash(), kfac_state = agg.kfac_state_hash();
        const auto version = agg.version();
        try {
          out = agg.contribute(session, *msg, now);
        } catch (const ProtocolError&) {
          check(agg.hash() == hash && agg.version() == version, "a refused SparseGrad changed the replica");
          check(agg.kfac_state_hash() == kfac_state, "a refused SparseGrad changed the shared K-FAC state");
          break;
        }
        deliver(out);
        break;
      }
      case 3:
        try {
          out = agg.add_member(session, "m" + std::to_string(session), 0);
        } catch (const ProtocolError&) {
          break;
        }
        deliver(out);
        break;
      case 4:
        now += std::chrono::seconds(2 * (code >> 3));
        out = agg.tick(now);
        deliver(out);
        break;
      case 5:
        out = agg.remove_member(session, now);
        deliver(out);
        break;
    }
    check(all_finite(agg.params()), "the server's replica holds a NaN or infinity");
  }
  return 0;
}

}  // namespace cutlayer::fuzz::sync_messages

CUTLAYER_FUZZ_ENTRY(sync_messages)
