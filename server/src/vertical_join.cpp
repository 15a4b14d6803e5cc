#include "cutlayer/server/vertical_join.h"

#include <fmt/format.h>

#include "cutlayer/cut/codec.h"
#include "cutlayer/error.h"
#include "cutlayer/server/checks.h"
#include "cutlayer/vertical/psi.h"

namespace cutlayer::server {

vertical::VerticalModel vertical_model(const VerticalOptions& o, std::uint64_t seed) {
  return vertical::build_vertical(o.input_shape, o.parties, o.classes, seed, o.join);
}

VerticalJoin::VerticalJoin(BackTrainer& trainer, VerticalOptions options, std::vector<std::int64_t> widths)
    : trainer_(trainer), options_(std::move(options)), widths_(std::move(widths)) {
  if (static_cast<int>(widths_.size()) != options_.parties)
    throw InternalError("VerticalJoin: one cut width per party");
  parties_.resize(static_cast<std::size_t>(options_.parties));
}

int VerticalJoin::joined() const {
  int n = 0;
  for (const auto& p : parties_) n += p.has_value();
  return n;
}

bool VerticalJoin::started() const {
  for (const auto& p : parties_)
    if (!p || !p->ready) return false;
  return true;
}

std::optional<int> VerticalJoin::index_of(std::uint64_t session) const {
  for (std::size_t k = 0; k < parties_.size(); ++k)
    if (parties_[k] && parties_[k]->session == session) return static_cast<int>(k);
  return std::nullopt;
}

std::optional<std::string> VerticalJoin::check_join(const wire::Join& j) const {
  const auto k = options_.parties;
  if (j.vertical_parties == 0)
    return fmt::format("this server trains vertical split learning among {} parties: add a \"vertical\" object "
                       "(party, parties) to the client config",
                       k);
  if (j.vertical_parties != static_cast<std::uint32_t>(k))
    return fmt::format("this server's vertical training has {} parties, the client says {} (vertical.parties)", k,
                       j.vertical_parties);
  if (j.vertical_party >= static_cast<std::uint32_t>(k))
    return fmt::format("vertical.party must be in [0, {}), got {}", k, j.vertical_party);
  if (gone_)
    return "a party of the last cohort left (" + gone_->reason + "); join again once the others have gone";
  if (const auto& p = parties_[j.vertical_party])
    return fmt::format("party {} has joined already (as '{}'); each party joins once", j.vertical_party, p->name);
  for (const auto& p : parties_)
    if (p && p->order != j.vertical_order)
      return fmt::format("this party's batch order ({}) is not party {}'s ({}): every party needs the same",
                         j.vertical_order, p->name, p->order);
  if (j.model != "vertical")
    return "this server trains a vertical model; the client asked for '" + j.model + "'";
  if (j.u_shaped || j.sync || j.inference || !(j.cut == wire::CutCoding{}))
    return std::string("a vertical party trains vanilla with a float32 cut: leave out train.u_shaped, sync, cut and "
                       "predict");
  const std::vector<std::int64_t> want{widths_[j.vertical_party]};
  if (j.cut_shape != want)
    return fmt::format("party {}'s cut has shape [{}], this server's model expects [{}] (the same input_shape, "
                       "parties and join on both sides?)",
                       j.vertical_party, fmt::join(j.cut_shape, ", "), want[0]);
  if (j.samples == 0 || j.samples > options_.max_ids)
    return fmt::format("a party brings 1 to {} sample IDs (vertical.max_ids in the server config), not {}",
                       options_.max_ids, j.samples);
  return std::nullopt;
}

void VerticalJoin::admit(std::uint64_t session, const std::string& name, const wire::Join& join) {
  auto& slot = parties_.at(join.vertical_party);
  slot = Party{session, name, join.samples, join.vertical_order, std::vector<bool>(parties_.size(), false)};
}

// Round 0 from a party: it is listening on its sealed channel (what the server sends
// before that may be lost). Once all K are, round 0 goes to every party: start.
VerticalJoin::Result VerticalJoin::ready(int k) {
  auto& p = *parties_[static_cast<std::size_t>(k)];
  if (p.ready) throw ProtocolError("Psi round 0 (ready) was sent already");
  p.ready = true;
  Result r;
  if (!started()) return r;
  // A new cohort is a new run: the back starts again from the weights the parties'
  // reference starts from.
  if (trainer_.stats().steps > 0) trainer_.restart();
  began_ = r.started = true;
  for (const auto& q : parties_) r.out.emplace_back(q->session, wire::make_message(wire::Psi{0, 0}));
  return r;
}

bool VerticalJoin::aligned() const {
  if (!started()) return false;
  for (std::size_t k = 1; k < parties_.size(); ++k)
    if (!parties_[k]->round3) return false;
  return true;
}

// Round 1: party 0 ↔ each other party, its own points, once per peer. Round 2: a party's
// tags of party 0's points, to party 0, after it got them. Round 3: party 0's positions for
// a party whose round 1 and round 2 it has, once.
void VerticalJoin::check_psi(int from, int to, std::uint8_t round, const torch::Tensor& t) const {
  const auto& f = *parties_[static_cast<std::size_t>(from)];
  const auto& t0 = *parties_[0];
  if (to < 0 || to >= options_.parties || to == from || (from != 0 && to != 0))
    throw ProtocolError(fmt::format("Psi from party {} to party {}: the rounds run between party 0 and each other "
                                    "party",
                                    from, to));
  const auto peer = static_cast<std::size_t>(from == 0 ? to : from);
  const auto& p = *parties_[peer];
  auto bytes = [&](std::uint64_t want, torch::ScalarType type, const char* what) {
    if (t.scalar_type() != type || t.dim() != 1 || static_cast<std::uint64_t>(t.numel()) != want)
      throw ProtocolError(fmt::format("Psi round {} from party {} must be {} (a 1-D {} tensor of {} elements)", round,
                                      from, what, c10::toString(type), want));
  };
  switch (round) {
    case 1:
      if (f.round1_to[static_cast<std::size_t>(to)])
        throw ProtocolError(fmt::format("Psi round 1 from party {} to party {} was sent already", from, to));
      bytes(f.ids * vertical::kPointBytes, torch::kUInt8, "its announced IDs' points");
      return;
    case 2:
      if (from == 0) throw ProtocolError("party 0 keeps its round 2; only the other parties send one");
      if (!t0.round1_to[peer] || p.round2)
        throw ProtocolError(fmt::format("Psi round 2 from party {} is out of turn (once, after party 0's round 1)", from));
      bytes(t0.ids * vertical::kTagBytes, torch::kUInt8, "one tag per point of party 0's round 1");
      return;
    case 3:
      if (from != 0) throw ProtocolError("only party 0 sends round 3 (the positions of the common IDs)");
      if (!p.round1_to[0] || !p.round2 || p.round3)
        throw ProtocolError(fmt::format("Psi round 3 to party {} is out of turn (once, after its rounds 1 and 2)", to));
      if (t.scalar_type() != torch::kInt64 || t.dim() != 1 ||
          static_cast<std::uint64_t>(t.numel()) > std::min(p.ids, t0.ids))
        throw ProtocolError(fmt::format("Psi round 3 must be 1-D int64 positions, at most {}", std::min(p.ids, t0.ids)));
      return;
    default:
      throw ProtocolError(fmt::format("Psi round {} from a party: parties send rounds 1 to 3", round));
  }
}

VerticalJoin::Result VerticalJoin::psi(std::uint64_t session, const wire::Message& msg) {
  const auto from = index_of(session);
  if (!from) throw ProtocolError("Psi from a session that is not a vertical party");
  if (gone_) return end_all(gone_->reason);
  const auto m = wire::meta_as<wire::Psi>(msg);
  if (m.round == 0 && msg.tensors.empty()) return ready(*from);
  if (!started())
    throw ProtocolError(fmt::format("Psi before all {} parties are ready (wait for round 0)", options_.parties));
  if (msg.tensors.size() != 1) throw ProtocolError("Psi carries exactly one tensor");
  const int to = static_cast<int>(std::min<std::uint32_t>(m.peer, 1u << 16));
  check_psi(*from, to, m.round, msg.tensors[0]);
  auto& f = *parties_[static_cast<std::size_t>(*from)];
  auto& p = *parties_[static_cast<std::size_t>(*from == 0 ? to : *from)];
  if (m.round == 1) f.round1_to[static_cast<std::size_t>(to)] = true;
  if (m.round == 2) p.round2 = true;
  if (m.round == 3) p.round3 = true;
  Result r;
  r.out.emplace_back(parties_[static_cast<std::size_t>(to)]->session,
                     wire::make_message(wire::Psi{m.round, static_cast<std::uint32_t>(*from)}, {msg.tensors[0]}));
  return r;
}

// Party k's cut of a step as the back takes it (and, from party 0, the labels).
torch::Tensor VerticalJoin::check_cut(int k, const wire::Activations& a, const wire::Message& msg,
                                      torch::Tensor& labels) const {
  const bool active = k == 0;
  if (a.has_labels != active)
    throw ProtocolError(active ? "party 0 (the active party) sends its labels with every cut"
                               : fmt::format("party {} holds no labels: only party 0 (the active party) sends them", k));
  if (msg.tensors.size() != (active ? 2u : 1u))
    throw ProtocolError(fmt::format("a party's Activations carry {} tensor(s): its cut{}", active ? 2 : 1,
                                    active ? " and the labels" : ""));
  // Summed, K cuts within max_abs_value / K stay within max_abs_value: no party's cut,
  // however large, makes the joined cut the back refuses. The margin covers float32's
  // rounding of the bound and of the K - 1 additions (K * 2^-23 relative).
  const int k_sum = options_.join == vertical::JoinMode::kSum ? options_.parties : 1;
  const double bound = trainer_.limits().max_abs_value / k_sum * (k_sum > 1 ? 1.0 - k_sum * 0x1p-23 : 1.0);
  auto z = cut::decode_activations({msg.tensors[0]}, wire::CutCoding{}, {widths_[static_cast<std::size_t>(k)]},
                                   BackTrainer::kMaxBatch, bound)
               .z;
  if (!active) return z;
  const auto& y = msg.tensors[1];
  if (y.scalar_type() != torch::kInt64 || y.dim() != 1 || y.size(0) != z.size(0))
    throw ProtocolError("party 0's labels must be int64 [B] matching its cut");
  if (y.numel() > 0 && (y.min().item<std::int64_t>() < 0 || y.max().item<std::int64_t>() >= trainer_.classes()))
    throw ProtocolError("party 0's labels must be class numbers in [0, " + std::to_string(trainer_.classes()) + ")");
  labels = y;
  return z;
}

VerticalJoin::Result VerticalJoin::cut(std::uint64_t session, const wire::Message& msg, Clock::time_point now) {
  const auto k = index_of(session);
  if (!k) throw ProtocolError("Activations from a session that is not a vertical party");
  if (gone_) return end_all(gone_->reason);
  if (!aligned())
    throw ProtocolError(fmt::format("a cut before the {} parties' private set intersection is done", options_.parties));
  const auto a = wire::meta_as<wire::Activations>(msg);
  torch::Tensor labels;
  auto z = check_cut(*k, a, msg, labels);
  if (!assembly_) {
    assembly_ = Assembly{a.step, a.train, z.size(0), now + options_.step_timeout,
                         std::vector<torch::Tensor>(parties_.size()), {}};
  } else if (assembly_->step != a.step || assembly_->train != a.train || assembly_->batch != z.size(0)) {
    return end_all(fmt::format("party {} ('{}') sent {} {} of {} samples while {} {} of {} is being gathered: the "
                               "parties are not in step (the same train.seed, batch_size, epochs and data?)",
                               *k, parties_[static_cast<std::size_t>(*k)]->name, a.train ? "step" : "evaluation",
                               a.step, z.size(0), assembly_->train ? "step" : "evaluation", assembly_->step,
                               assembly_->batch));
  }
  auto& slot = assembly_->cuts[static_cast<std::size_t>(*k)];
  if (slot.defined()) throw ProtocolError(fmt::format("party {} sent step {}'s cut twice", *k, a.step));
  slot = z;
  if (labels.defined()) assembly_->labels = labels;
  for (const auto& c : assembly_->cuts)
    if (!c.defined()) return {};
  return take_step();
}

// All cuts are in: the back's step on the joined cut; each party gets its share.
VerticalJoin::Result VerticalJoin::take_step() {
  auto a = std::move(*assembly_);
  assembly_.reset();
  stepped_ = true;
  auto joined = vertical::join_cuts(a.cuts, options_.join);
  auto msg = wire::make_message(wire::Activations{a.step, true, a.train}, {joined, a.labels});
  Outbox replies;
  try {
    replies = trainer_.handle(parties_[0]->session, std::move(msg));
  } catch (const std::exception& e) {
    return end_all(fmt::format("step {} was refused: {}", a.step, error_text(e)));
  }
  Result r;
  for (auto& [session, reply] : replies) {
    if (reply.type == wire::MsgType::kError) return end_all("step " + std::to_string(a.step) + " was refused");
    for (std::size_t k = 0; k < parties_.size(); ++k) {
      auto each = reply;
      if (reply.type == wire::MsgType::kCutGrad)
        each.tensors = {vertical::cut_grad_of(reply.tensors.at(0), widths_, static_cast<int>(k), options_.join)};
      r.out.emplace_back(parties_[k]->session, std::move(each));
    }
  }
  return r;
}

VerticalJoin::Result VerticalJoin::tick(Clock::time_point now) {
  if (gone_ && now >= gone_->deadline) return end_all(gone_->reason);
  if (!assembly_ || now < assembly_->deadline) return {};
  std::string late;
  for (std::size_t k = 0; k < parties_.size(); ++k)
    if (!assembly_->cuts[k].defined())
      late += fmt::format("{}party {} ('{}')", late.empty() ? "" : ", ", k, parties_[k]->name);
  return end_all(fmt::format("{} sent no cut for {} {} within {} ms of the first (vertical.step_timeout_ms)", late,
                             assembly_->train ? "step" : "evaluation", assembly_->step,
                             options_.step_timeout.count()));
}

// Between steps, the others may be done too (their Leave is on its way): they get
// kLeaveGrace to leave on their own, and are ended at their next message or after it.
// During the PSI or a step they wait on the party that left: ended now.
VerticalJoin::Result VerticalJoin::left(std::uint64_t session, const std::string& why, Clock::time_point now) {
  const auto k = index_of(session);
  if (!k) return {};
  const auto name = parties_[static_cast<std::size_t>(*k)]->name;
  parties_[static_cast<std::size_t>(*k)].reset();
  const auto reason = gone_ ? gone_->reason : fmt::format("party {} ('{}') left ({})", *k, name, why);
  if (joined() == 0) {
    gone_.reset();
    began_ = stepped_ = false;
    return {};
  }
  if (!began_) return {};  // before the start nothing waits on it: its place is free again
  if (assembly_ || !stepped_) return end_all(reason);
  if (!gone_) gone_ = Gone{reason, now + kLeaveGrace};
  return {};
}

VerticalJoin::Result VerticalJoin::end_all(const std::string& reason) {
  Result r;
  const auto text = reason + fmt::format(": vertical training needs all {} parties, so the session ended for every "
                                         "party",
                                         options_.parties);
  for (auto& p : parties_)
    if (p) r.end.push_back({p->session, text});
  for (auto& p : parties_) p.reset();
  assembly_.reset();
  gone_.reset();
  began_ = stepped_ = false;
  return r;
}

}  // namespace cutlayer::server
