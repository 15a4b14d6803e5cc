// Vertical split learning at the server (VerticalJoin), driven message by message with an
// explicit clock: which Joins make a party, the PSI relay and its bounds, the assembly of
// a step from every party's cut (and the gradient each party gets back, against a
// reference computed on the same model), and how a party that fails the others ends them all.
#include "cutlayer/server/vertical_join.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cutlayer/error.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/vertical/parties.h"
#include "cutlayer/vertical/psi.h"
#include "cutlayer/wire/message.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::server {
namespace {

using namespace std::chrono_literals;
using Clock = VerticalJoin::Clock;

constexpr std::uint64_t kSeed = 7;
constexpr std::int64_t kBatch = 4;

testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos)
    return testing::AssertionSuccess() << "'" << text << "' has '" << part << "'";
  return testing::AssertionFailure() << "'" << text << "' lacks '" << part << "'";
}

// The back's parameters, cloned.
std::vector<torch::Tensor> params_of(const BackTrainer& t) {
  std::vector<torch::Tensor> p;
  for (const auto& x : t.back()->parameters()) p.push_back(x.detach().clone());
  return p;
}

bool same(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i])) return false;
  return true;
}

// The text of the ProtocolError `f` throws ("(not refused)" when it throws none).
template <class F>
std::string refusal_of(F&& f) {
  try {
    f();
  } catch (const ProtocolError& e) {
    return e.what();
  }
  return "(not refused)";
}
// The statement throws a ProtocolError whose text has `part`.
#define EXPECT_REFUSED(part, ...) EXPECT_TRUE(contains(refusal_of([&] { __VA_ARGS__; }), part))

std::uint64_t session_of(int k) { return 101 + static_cast<std::uint64_t>(k); }

// A table of 8 features (or `input_shape`) cut among `parties`, two classes.
VerticalOptions table(int parties, vertical::JoinMode join = vertical::JoinMode::kConcat,
                      std::vector<std::int64_t> input_shape = {8}, std::int64_t classes = 2) {
  VerticalOptions o;
  o.parties = parties;
  o.join = join;
  o.input_shape = std::move(input_shape);
  o.classes = classes;
  o.step_timeout = 1000ms;
  o.max_ids = 100;
  return o;
}

train::TrainOptions sgd() {
  train::TrainOptions t;
  t.lr = 0.1;
  return t;
}

// The server's side as main.cpp builds it: the vertical model's back in a BackTrainer,
// and the join over the parties' widths.
struct Server {
  explicit Server(VerticalOptions o)
      : options(std::move(o)),
        vm(vertical_model(options, kSeed)),
        trainer(sgd(), vm.back, {vm.joined_width()}),
        join(trainer, options, vm.widths) {}
  VerticalOptions options;
  vertical::VerticalModel vm;
  BackTrainer trainer;
  VerticalJoin join;

  std::int64_t width(int k) const { return vm.widths.at(static_cast<std::size_t>(k)); }
};

wire::Join join_of(const Server& s, int k, std::uint64_t samples = 10) {
  wire::Join j;
  j.client_name = "p" + std::to_string(k);
  j.model = "vertical";
  j.cut_shape = {s.width(k)};
  j.samples = samples;
  j.vertical_party = static_cast<std::uint32_t>(k);
  j.vertical_parties = static_cast<std::uint32_t>(s.options.parties);
  return j;
}

// Every party admitted (party k as session 101 + k, announcing samples[k] IDs).
void admit_all(Server& s, std::vector<std::uint64_t> samples = {}) {
  for (int k = 0; k < s.options.parties; ++k) {
    const auto n = samples.empty() ? 10 : samples.at(static_cast<std::size_t>(k));
    const auto j = join_of(s, k, n);
    const auto why = s.join.check_join(j);
    ASSERT_FALSE(why.has_value()) << *why;
    s.join.admit(session_of(k), "p" + std::to_string(k), j);
  }
  ASSERT_EQ(s.join.joined(), s.options.parties);
}

wire::Message psi(std::uint8_t round, std::uint32_t peer, std::vector<torch::Tensor> t = {}) {
  return wire::make_message(wire::Psi{round, peer}, std::move(t));
}

// A Psi from `session`: what the server sends on (no session ends in these tests).
VerticalJoin::Outbox relay(Server& s, std::uint64_t session, const wire::Message& m) {
  auto r = s.join.psi(session, m);
  EXPECT_TRUE(r.end.empty());
  return std::move(r.out);
}

// Admitted and every party's round 0 in: started.
void start(Server& s, std::vector<std::uint64_t> samples = {}) {
  admit_all(s, std::move(samples));
  for (int k = 0; k < s.options.parties; ++k) relay(s, session_of(k), psi(0, 0));
}

torch::Tensor bytes(std::uint64_t n);

// Started and the PSI's rounds relayed for every party (round 3 empty): cuts are taken.
void start_aligned(Server& s) {
  start(s);
  const std::uint64_t n0 = 10;
  for (int k = 1; k < s.options.parties; ++k) {
    relay(s, session_of(0), psi(1, static_cast<std::uint32_t>(k), {bytes(n0 * vertical::kPointBytes)}));
    relay(s, session_of(k), psi(1, 0, {bytes(10 * vertical::kPointBytes)}));
    relay(s, session_of(k), psi(2, 0, {bytes(n0 * vertical::kTagBytes)}));
    relay(s, session_of(0), psi(3, static_cast<std::uint32_t>(k), {torch::zeros({0}, torch::kInt64)}));
  }
}

torch::Tensor bytes(std::uint64_t n) {
  return torch::randint(0, 256, {static_cast<std::int64_t>(n)}, torch::kUInt8);
}

wire::Message cut_msg(std::uint64_t step, torch::Tensor z, bool train = true) {
  return wire::make_message(wire::Activations{step, false, train}, {std::move(z)});
}

wire::Message labelled(std::uint64_t step, torch::Tensor z, torch::Tensor y, bool train = true) {
  return wire::make_message(wire::Activations{step, true, train}, {std::move(z), std::move(y)});
}

const wire::Message* to_session(const VerticalJoin::Outbox& out, std::uint64_t session) {
  const wire::Message* found = nullptr;
  for (const auto& [s, m] : out)
    if (s == session) {
      EXPECT_EQ(found, nullptr) << "two messages for session " << session;
      found = &m;
    }
  return found;
}

std::vector<std::uint64_t> ended(const VerticalJoin::Result& r) {
  std::vector<std::uint64_t> s;
  for (const auto& e : r.end) s.push_back(e.session);
  std::sort(s.begin(), s.end());
  return s;
}

// ---------------------------------------------------------------------------------------
// Join

TEST(VerticalJoin, CheckJoinAcceptsAPartyAndSaysWhyItRefusesOne) {
  Server s(table(2));
  ASSERT_NE(s.width(0), 0);
  auto refusal = [&](const wire::Join& j) {
    const auto why = s.join.check_join(j);
    return why ? *why : std::string("(accepted)");
  };
  const auto good = join_of(s, 0);
  EXPECT_FALSE(s.join.check_join(good).has_value());
  EXPECT_FALSE(s.join.check_join(join_of(s, 1)).has_value());

  auto j = good;
  j.vertical_parties = 0;  // a horizontal client
  EXPECT_TRUE(contains(refusal(j), "vertical split learning among 2 parties"));
  j = good;
  j.vertical_parties = 3;
  EXPECT_TRUE(contains(refusal(j), "has 2 parties, the client says 3"));
  j = good;
  j.vertical_party = 2;
  EXPECT_TRUE(contains(refusal(j), "vertical.party must be in [0, 2), got 2"));
  j = good;
  j.vertical_party = 1u << 31;
  EXPECT_TRUE(contains(refusal(j), "vertical.party must be in [0, 2)"));
  j = good;
  j.model = "fmnist-cnn";
  EXPECT_TRUE(contains(refusal(j), "asked for 'fmnist-cnn'"));
  for (int flag = 0; flag < 3; ++flag) {
    j = good;
    (flag == 0 ? j.u_shaped : flag == 1 ? j.sync : j.inference) = true;
    EXPECT_TRUE(contains(refusal(j), "vanilla with a float32 cut")) << flag;
  }
  j = good;
  j.cut.values = wire::CutValues::kBf16;
  EXPECT_TRUE(contains(refusal(j), "float32 cut"));
  j = good;
  j.cut.grad_values = wire::CutValues::kInt8;
  EXPECT_TRUE(contains(refusal(j), "float32 cut"));
  j = good;
  j.cut.kept = 4;
  EXPECT_TRUE(contains(refusal(j), "float32 cut"));
  j = good;
  j.cut_shape = {s.width(0) + 1};
  EXPECT_TRUE(contains(refusal(j), "expects [" + std::to_string(s.width(0)) + "]"));
  j = good;
  j.cut_shape = {1, s.width(0)};
  EXPECT_TRUE(
      contains(refusal(j), "party 0's cut has shape [1, " + std::to_string(s.width(0)) + "]"));
  j = good;
  j.cut_shape = {};
  EXPECT_TRUE(contains(refusal(j), "expects ["));
  j = good;
  j.samples = 0;
  EXPECT_TRUE(contains(refusal(j), "1 to 100 sample IDs (vertical.max_ids"));
  j = good;
  j.samples = 101;
  EXPECT_TRUE(contains(refusal(j), "not 101"));
  j = good;
  j.samples = 100;  // the bound itself
  EXPECT_FALSE(s.join.check_join(j).has_value());

  // An index taken: refused for that index only.
  s.join.admit(session_of(0), "alice", good);
  EXPECT_TRUE(s.join.is_party(session_of(0)));
  EXPECT_FALSE(s.join.is_party(session_of(1)));
  EXPECT_EQ(s.join.joined(), 1);
  EXPECT_TRUE(contains(refusal(good), "party 0 has joined already (as 'alice')"));
  EXPECT_FALSE(s.join.check_join(join_of(s, 1)).has_value());
}

TEST(VerticalJoin, CheckJoinWantsEachPartysOwnWidth) {
  // 15 image columns between 2 parties: strips of 8 and 7 columns, cuts of different widths.
  Server s(table(2, vertical::JoinMode::kConcat, {1, 4, 15}, 3));
  ASSERT_NE(s.width(0), s.width(1));
  auto j = join_of(s, 0);
  EXPECT_FALSE(s.join.check_join(j).has_value());
  j.cut_shape = {s.width(1)};  // party 1's width claimed by party 0
  const auto why = s.join.check_join(j);
  ASSERT_TRUE(why.has_value());
  EXPECT_TRUE(contains(*why, "party 0's cut"));
}

// ---------------------------------------------------------------------------------------
// Ready and PSI relay

TEST(VerticalJoin, RoundZeroFromEveryPartyStartsThem) {
  Server s(table(3));
  admit_all(s);
  // Rounds 1 to 3 before everyone is ready.
  EXPECT_REFUSED("Psi before all 3 parties are ready",
                 relay(s, session_of(0), psi(1, 1, {bytes(10 * vertical::kPointBytes)})));
  // A cut too.
  EXPECT_REFUSED("a cut before the 3 parties' private set intersection is done",
                 s.join.cut(session_of(1), cut_msg(0, torch::randn({kBatch, s.width(1)}))));

  EXPECT_TRUE(relay(s, session_of(0), psi(0, 0)).empty());
  EXPECT_REFUSED("Psi round 0 (ready) was sent already",
                 relay(s, session_of(0), psi(0, 0)));  // twice
  EXPECT_TRUE(relay(s, session_of(2), psi(0, 0)).empty());
  EXPECT_REFUSED("Psi before all 3 parties are ready",
                 relay(s, session_of(0), psi(1, 1, {bytes(10 * vertical::kPointBytes)})));
  EXPECT_REFUSED("Psi before all 3 parties are ready",
                 relay(s, session_of(1), psi(1, 0, {bytes(10 * vertical::kPointBytes)})));
  EXPECT_REFUSED("Psi before all 3 parties are ready",
                 relay(s, session_of(1), psi(2, 0, {bytes(10 * vertical::kTagBytes)})));
  EXPECT_REFUSED("Psi before all 3 parties are ready",
                 relay(s, session_of(0), psi(3, 1, {torch::arange(3, torch::kInt64)})));
  // Round 0 carrying a tensor is not "ready".
  EXPECT_REFUSED("Psi before all 3 parties are ready",
                 relay(s, session_of(1), psi(0, 0, {bytes(4)})));

  const auto out = relay(s, session_of(1), psi(0, 0));
  ASSERT_EQ(out.size(), 3u);
  for (int k = 0; k < 3; ++k) {
    const auto* m = to_session(out, session_of(k));
    ASSERT_NE(m, nullptr) << k;
    ASSERT_EQ(m->type, wire::MsgType::kPsi);
    EXPECT_EQ(wire::meta_as<wire::Psi>(*m).round, 0);
    EXPECT_TRUE(m->tensors.empty());
  }
  EXPECT_REFUSED("Psi round 0 (ready) was sent already",
                 relay(s, session_of(1), psi(0, 0)));  // once started, still once
  EXPECT_REFUSED("Psi from a session that is not a vertical party",
                 relay(s, 999, psi(0, 0)));  // not a party
}

TEST(VerticalJoin, PsiRoundsAreRelayedInTurnAndBoundedByTheAnnouncedCounts) {
  Server s(table(2));
  const std::uint64_t n0 = 10, n1 = 7;
  start(s, {n0, n1});
  const auto p0 = session_of(0), p1 = session_of(1);

  // Malformed whatever the round.
  EXPECT_REFUSED("Psi carries exactly one tensor", relay(s, p0, psi(1, 1)));  // no tensor
  EXPECT_REFUSED("Psi carries exactly one tensor",
                 relay(s, p0, psi(1, 1, {bytes(n0 * vertical::kPointBytes), bytes(1)})));
  EXPECT_REFUSED("Psi round 4 from a party: parties send rounds 1 to 3",
                 relay(s, p0, psi(4, 1, {bytes(n0 * vertical::kPointBytes)})));
  EXPECT_REFUSED("Psi round 0 from a party",
                 relay(s, p0, psi(0, 1, {bytes(n0 * vertical::kPointBytes)})));
  // Not between party 0 and another party.
  EXPECT_REFUSED("Psi from party 0 to party 0",
                 relay(s, p0, psi(1, 0, {bytes(n0 * vertical::kPointBytes)})));  // itself
  EXPECT_REFUSED("Psi from party 0 to party 2",
                 relay(s, p0, psi(1, 2, {bytes(n0 * vertical::kPointBytes)})));  // no party 2
  EXPECT_REFUSED("Psi from party 0 to party 65536",
                 relay(s, p0, psi(1, 0xFFFFFFFFu, {bytes(n0 * vertical::kPointBytes)})));

  // Round 2 before party 0's round 1 reached party 1.
  EXPECT_REFUSED("Psi round 2 from party 1 is out of turn",
                 relay(s, p1, psi(2, 0, {bytes(n0 * vertical::kTagBytes)})));
  // Round 3 before party 1's rounds.
  EXPECT_REFUSED("Psi round 3 to party 1 is out of turn",
                 relay(s, p0, psi(3, 1, {torch::arange(3, torch::kInt64)})));

  // Round 1, party 0 → party 1: exactly its announced IDs' points.
  EXPECT_REFUSED(
      "Psi round 1 from party 0 must be its announced IDs' points (a 1-D Byte tensor of 320 "
      "elements)",
      relay(s, p0, psi(1, 1, {bytes(n0 * vertical::kPointBytes - 1)})));
  EXPECT_REFUSED(
      "Psi round 1 from party 0 must be its announced IDs' points (a 1-D Byte tensor of 320 "
      "elements)",
      relay(s, p0, psi(1, 1, {bytes(n0 * vertical::kPointBytes + 32)})));
  EXPECT_REFUSED(
      "Psi round 1 from party 0 must be its announced IDs' points (a 1-D Byte tensor of 320 "
      "elements)",
      relay(s, p0, psi(1, 1, {bytes(n1 * vertical::kPointBytes)})));  // the peer's count
  EXPECT_REFUSED(
      "Psi round 1 from party 0 must be its announced IDs' points (a 1-D Byte tensor of 320 "
      "elements)",
      relay(s, p0, psi(1, 1,
                         {torch::zeros({static_cast<std::int64_t>(n0 * vertical::kPointBytes)},
                                       torch::kInt8)})));  // not uint8
  EXPECT_REFUSED(
      "Psi round 1 from party 0 must be its announced IDs' points (a 1-D Byte tensor of 320 "
      "elements)",
      relay(s, p0, psi(1, 1,
                         {bytes(n0 * vertical::kPointBytes)
                              .reshape({static_cast<std::int64_t>(n0), 32})})));  // not 1-D
  const auto points0 = bytes(n0 * vertical::kPointBytes);
  auto out = relay(s, p0, psi(1, 1, {points0}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, p1);
  ASSERT_EQ(out[0].second.type, wire::MsgType::kPsi);
  EXPECT_EQ(wire::meta_as<wire::Psi>(out[0].second).round, 1);
  EXPECT_EQ(wire::meta_as<wire::Psi>(out[0].second).peer, 0u);
  ASSERT_EQ(out[0].second.tensors.size(), 1u);
  EXPECT_TRUE(torch::equal(out[0].second.tensors[0], points0));
  EXPECT_REFUSED("Psi round 1 from party 0 to party 1 was sent already",
                 relay(s, p0, psi(1, 1, {bytes(n0 * vertical::kPointBytes)})));  // twice

  // Party 0 keeps its own round 2.
  EXPECT_REFUSED("party 0 keeps its round 2",
                 relay(s, p0, psi(2, 1, {bytes(n1 * vertical::kTagBytes)})));
  // Round 2, party 1 → party 0: one tag per point of party 0's round 1.
  EXPECT_REFUSED(
      "Psi round 2 from party 1 must be one tag per point of party 0's round 1 (a 1-D Byte tensor "
      "of 160 elements)",
      relay(s, p1, psi(2, 0, {bytes(n1 * vertical::kTagBytes)})));  // its own count
  EXPECT_REFUSED(
      "Psi round 2 from party 1 must be one tag per point of party 0's round 1 (a 1-D Byte tensor "
      "of 160 elements)",
      relay(s, p1, psi(2, 0, {bytes(n0 * vertical::kPointBytes)})));
  EXPECT_REFUSED(
      "Psi round 2 from party 1 must be one tag per point of party 0's round 1 (a 1-D Byte tensor "
      "of 160 elements)",
      relay(s, p1, psi(2, 0, {bytes(n0 * vertical::kTagBytes - 1)})));
  const auto tags = bytes(n0 * vertical::kTagBytes);
  out = relay(s, p1, psi(2, 0, {tags}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, p0);
  EXPECT_EQ(wire::meta_as<wire::Psi>(out[0].second).round, 2);
  EXPECT_EQ(wire::meta_as<wire::Psi>(out[0].second).peer, 1u);
  EXPECT_TRUE(torch::equal(out[0].second.tensors.at(0), tags));
  EXPECT_REFUSED("Psi round 2 from party 1 is out of turn",
                 relay(s, p1, psi(2, 0, {bytes(n0 * vertical::kTagBytes)})));  // twice

  // Round 3 still waits for party 1's round 1.
  EXPECT_REFUSED("Psi round 3 to party 1 is out of turn",
                 relay(s, p0, psi(3, 1, {torch::arange(3, torch::kInt64)})));
  EXPECT_REFUSED(
      "Psi round 1 from party 1 must be its announced IDs' points (a 1-D Byte tensor of 224 "
      "elements)",
      relay(s, p1, psi(1, 0, {bytes(n0 * vertical::kPointBytes)})));  // party 0's count
  const auto points1 = bytes(n1 * vertical::kPointBytes);
  out = relay(s, p1, psi(1, 0, {points1}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, p0);
  EXPECT_EQ(wire::meta_as<wire::Psi>(out[0].second).round, 1);
  EXPECT_EQ(wire::meta_as<wire::Psi>(out[0].second).peer, 1u);
  EXPECT_TRUE(torch::equal(out[0].second.tensors.at(0), points1));
  EXPECT_REFUSED("Psi round 1 from party 1 to party 0 was sent already",
                 relay(s, p1, psi(1, 0, {bytes(n1 * vertical::kPointBytes)})));  // twice

  // Round 3: only party 0, int64 1-D, at most min(n0, n1) positions, once.
  EXPECT_REFUSED("only party 0 sends round 3",
                 relay(s, p1, psi(3, 0, {torch::arange(3, torch::kInt64)})));
  EXPECT_REFUSED("Psi round 3 must be 1-D int64 positions, at most 7",
                 relay(s, p0, psi(3, 1, {torch::arange(3, torch::kInt32)})));
  EXPECT_REFUSED("Psi round 3 must be 1-D int64 positions, at most 7",
                 relay(s, p0, psi(3, 1, {torch::arange(4, torch::kInt64).reshape({2, 2})})));
  EXPECT_REFUSED(
      "Psi round 3 must be 1-D int64 positions, at most 7",
      relay(s, p0, psi(3, 1, {torch::arange(static_cast<std::int64_t>(n1) + 1, torch::kInt64)})));
  const auto positions = torch::arange(static_cast<std::int64_t>(n1), torch::kInt64);
  out = relay(s, p0, psi(3, 1, {positions}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, p1);
  EXPECT_EQ(wire::meta_as<wire::Psi>(out[0].second).round, 3);
  EXPECT_EQ(wire::meta_as<wire::Psi>(out[0].second).peer, 0u);
  EXPECT_TRUE(torch::equal(out[0].second.tensors.at(0), positions));
  EXPECT_REFUSED("Psi round 3 to party 1 is out of turn",
                 relay(s, p0, psi(3, 1, {torch::arange(2, torch::kInt64)})));  // twice
}

TEST(VerticalJoin, PsiRunsBetweenPartyZeroAndEachOtherPartyOnly) {
  Server s(table(3));
  start(s, {10, 6, 8});
  // Party 1 → party 2: not a round of the star.
  EXPECT_REFUSED("Psi from party 1 to party 2",
                 relay(s, session_of(1), psi(1, 2, {bytes(6 * vertical::kPointBytes)})));
  EXPECT_REFUSED("Psi from party 2 to party 1",
                 relay(s, session_of(2), psi(2, 1, {bytes(10 * vertical::kTagBytes)})));
  // Party 0's round 1 goes to each other party separately, once each.
  for (int to : {1, 2}) {
    const auto out =
        relay(s, session_of(0), psi(1, static_cast<std::uint32_t>(to), {bytes(10 * 32)}));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].first, session_of(to));
  }
  EXPECT_REFUSED("Psi round 1 from party 0 to party 2 was sent already",
                 relay(s, session_of(0), psi(1, 2, {bytes(10 * 32)})));
  // Party 2's turn does not depend on party 1's; round 3 to party 2 is bounded by min(10, 8).
  EXPECT_EQ(relay(s, session_of(2), psi(1, 0, {bytes(8 * 32)})).size(), 1u);
  EXPECT_EQ(relay(s, session_of(2), psi(2, 0, {bytes(10 * 16)})).size(), 1u);
  EXPECT_REFUSED("Psi round 3 to party 1 is out of turn",
                 relay(s, session_of(0), psi(3, 1, {torch::arange(2, torch::kInt64)})));
  EXPECT_REFUSED("Psi round 3 must be 1-D int64 positions, at most 8",
                 relay(s, session_of(0), psi(3, 2, {torch::arange(9, torch::kInt64)})));
  const auto out = relay(s, session_of(0), psi(3, 2, {torch::arange(8, torch::kInt64)}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, session_of(2));
  // An empty intersection is an answer too.
  EXPECT_EQ(relay(s, session_of(1), psi(1, 0, {bytes(6 * 32)})).size(), 1u);
  EXPECT_EQ(relay(s, session_of(1), psi(2, 0, {bytes(10 * 16)})).size(), 1u);
  EXPECT_EQ(relay(s, session_of(0), psi(3, 1, {torch::zeros({0}, torch::kInt64)})).size(), 1u);
}

// ---------------------------------------------------------------------------------------
// Steps

// One training step through the join against the reference: the same vertical model
// (same seed) taking the joined cut, its gradient cut into the parties' shares.
void expect_step_matches_reference(const VerticalOptions& o) {
  SCOPED_TRACE(std::string(vertical::join_name(o.join)) + ", " + std::to_string(o.parties) +
               " parties");
  Server s(o);
  start_aligned(s);
  const auto K = o.parties;
  torch::manual_seed(1234);
  std::vector<torch::Tensor> z;
  for (int k = 0; k < K; ++k) z.push_back(torch::randn({kBatch, s.width(k)}));
  const auto y = torch::randint(0, o.classes, {kBatch}, torch::kInt64);

  // The reference, before the server's step changes its back.
  auto ref = vertical_model(o, kSeed);
  std::vector<torch::Tensor> leaves;
  for (const auto& t : z) leaves.push_back(t.clone().requires_grad_(true));
  const auto loss = torch::nn::functional::cross_entropy(
      ref.back->forward(vertical::join_cuts(leaves, o.join)), y);
  loss.backward();

  // Every party but 0 first: nothing until party 0's cut and labels.
  const auto t0 = Clock::time_point{} + 1h;
  for (int k = K - 1; k >= 1; --k) {
    const auto r = s.join.cut(session_of(k), cut_msg(0, z[static_cast<std::size_t>(k)]), t0);
    EXPECT_TRUE(r.out.empty());
    EXPECT_TRUE(r.end.empty());
  }
  EXPECT_EQ(s.trainer.stats().steps, 0);
  const auto r = s.join.cut(session_of(0), labelled(0, z[0], y), t0 + 10ms);
  EXPECT_TRUE(r.end.empty());
  ASSERT_EQ(r.out.size(), static_cast<std::size_t>(K));
  EXPECT_EQ(s.trainer.stats().steps, 1);
  for (int k = 0; k < K; ++k) {
    const auto* m = to_session(r.out, session_of(k));
    ASSERT_NE(m, nullptr) << k;
    ASSERT_EQ(m->type, wire::MsgType::kCutGrad) << k;
    const auto g = wire::meta_as<wire::CutGrad>(*m);
    EXPECT_EQ(g.step, 0u);
    EXPECT_NEAR(g.loss, loss.item<float>(), 1e-5);
    ASSERT_EQ(m->tensors.size(), 1u);
    const auto& dz = m->tensors[0];
    EXPECT_EQ(dz.sizes(), (std::vector<std::int64_t>{kBatch, s.width(k)})) << k;
    const auto& want = leaves[static_cast<std::size_t>(k)].grad();
    ASSERT_TRUE(want.defined());
    EXPECT_TRUE(torch::allclose(dz, want, 1e-5, 1e-7)) << "party " << k << "\n"
                                                       << dz << "\n"
                                                       << want;
    EXPECT_GT(want.abs().sum().item<float>(), 0.f);  // a real comparison
  }
  if (o.join == vertical::JoinMode::kSum) {  // every party the whole gradient
    for (int k = 1; k < K; ++k)
      EXPECT_TRUE(torch::equal(to_session(r.out, session_of(0))->tensors.at(0),
                               to_session(r.out, session_of(k))->tensors.at(0)));
  }

  // The step is done: nothing left to time out, and the next step assembles afresh.
  EXPECT_TRUE(s.join.tick(t0 + 1h).end.empty());
  for (int k = 1; k < K; ++k)
    EXPECT_TRUE(
        s.join.cut(session_of(k), cut_msg(1, torch::randn({2, s.width(k)})), t0 + 2h).out.empty());
  const auto r1 = s.join.cut(
      session_of(0), labelled(1, torch::randn({2, s.width(0)}), torch::zeros({2}, torch::kInt64)),
      t0 + 2h);
  EXPECT_TRUE(r1.end.empty());
  ASSERT_EQ(r1.out.size(), static_cast<std::size_t>(K));
  for (int k = 0; k < K; ++k) {
    const auto* m = to_session(r1.out, session_of(k));
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(wire::meta_as<wire::CutGrad>(*m).step, 1u);
    EXPECT_EQ(m->tensors.at(0).sizes(), (std::vector<std::int64_t>{2, s.width(k)}));
  }
  EXPECT_EQ(s.trainer.stats().steps, 2);
}

TEST(VerticalJoin, ConcatStepGivesEachPartyItsSliceOfTheGradient) {
  // Images cut into strips of unequal widths: the slices' offsets matter.
  const auto image = table(2, vertical::JoinMode::kConcat, {1, 4, 15}, 3);
  {
    Server s(image);
    ASSERT_NE(s.width(0), s.width(1));
  }
  expect_step_matches_reference(image);
  expect_step_matches_reference(table(3));
}

TEST(VerticalJoin, SumStepGivesEachPartyTheWholeGradient) {
  expect_step_matches_reference(table(2, vertical::JoinMode::kSum));
  expect_step_matches_reference(table(3, vertical::JoinMode::kSum, {9}, 3));
}

TEST(VerticalJoin, MalformedCutsAreRefusedAndLeaveTheStepAsItWas) {
  Server s(table(2));
  start_aligned(s);
  const auto p0 = session_of(0), p1 = session_of(1);
  const auto t0 = Clock::time_point{} + 1h;
  const auto y = torch::randint(0, 2, {kBatch}, torch::kInt64);
  const auto z0 = torch::randn({kBatch, s.width(0)});
  const auto z1 = torch::randn({kBatch, s.width(1)});
  auto nan = z1.clone();
  nan[1][3] = std::numeric_limits<float>::quiet_NaN();
  auto inf = z1.clone();
  inf[0][0] = std::numeric_limits<float>::infinity();

  EXPECT_REFUSED("Activations from a session that is not a vertical party",
                 s.join.cut(999, cut_msg(0, z1), t0));  // not a party
  EXPECT_REFUSED("party 1 holds no labels",
                 s.join.cut(p1, labelled(0, z1, y), t0));  // labels from party 1
  EXPECT_REFUSED("party 0 (the active party) sends its labels",
                 s.join.cut(p0, cut_msg(0, z0), t0));  // party 0 without
  EXPECT_REFUSED("carry 2 tensor(s): its cut and the labels",
                 s.join.cut(p0, wire::make_message(wire::Activations{0, true, true}, {z0}),
                            t0));  // says labels, has none
  EXPECT_REFUSED("carry 1 tensor(s): its cut",
                 s.join.cut(p1, wire::make_message(wire::Activations{0, false, true}, {z1, y}),
                            t0));  // a second tensor
  EXPECT_REFUSED("cut activations: expected fp32 values of shape [4, 64]",
                 s.join.cut(p1, cut_msg(0, torch::randn({kBatch, s.width(1) + 1})), t0));  // width
  EXPECT_REFUSED("cut activations: expected fp32 values of shape [4, 64]",
                 s.join.cut(p1, cut_msg(0, torch::randn({kBatch, s.width(1), 1})), t0));
  EXPECT_REFUSED("cut activations: expected fp32 values of shape [4, 64]",
                 s.join.cut(p1, cut_msg(0, z1.to(torch::kFloat64)), t0));  // dtype
  EXPECT_REFUSED("cut activations: batch of 0",
                 s.join.cut(p1, cut_msg(0, torch::zeros({0, s.width(1)})), t0));  // empty batch
  EXPECT_REFUSED("NaN or infinite", s.join.cut(p1, cut_msg(0, nan), t0));
  EXPECT_REFUSED("NaN or infinite", s.join.cut(p1, cut_msg(0, inf), t0));
  EXPECT_REFUSED("expected a ",
                 s.join.cut(p1, wire::make_message(wire::Psi{1, 0}, {z1}), t0));  // not Activations
  // None of those started a step: no deadline runs.
  EXPECT_TRUE(s.join.tick(t0 + 24h).end.empty());
  EXPECT_EQ(s.join.joined(), 2);

  // The same party's cut twice: refused, its first cut stays.
  EXPECT_TRUE(s.join.cut(p1, cut_msg(0, z1), t0).out.empty());
  EXPECT_REFUSED("party 1 sent step 0's cut twice", s.join.cut(p1, cut_msg(0, z1), t0));
  // Refused cuts of the missing party do not fill its place.
  EXPECT_REFUSED("party 0 (the active party) sends its labels", s.join.cut(p0, cut_msg(0, z0), t0));
  EXPECT_REFUSED("cut activations: expected fp32 values of shape [4, 64]",
                 s.join.cut(p0, labelled(0, torch::randn({kBatch, s.width(0) - 1}), y), t0));
  const auto r = s.join.cut(p0, labelled(0, z0, y), t0);
  EXPECT_TRUE(r.end.empty());
  ASSERT_EQ(r.out.size(), 2u);
  for (const auto& [session, m] : r.out) EXPECT_EQ(m.type, wire::MsgType::kCutGrad) << session;
  EXPECT_EQ(s.trainer.stats().steps, 1);
}

TEST(VerticalJoin, BadLabelsAreRefusedToPartyZeroOnArrival) {
  Server s(table(2));
  start_aligned(s);
  EXPECT_TRUE(
      s.join.cut(session_of(1), cut_msg(0, torch::randn({kBatch, s.width(1)}))).out.empty());
  const auto z0 = torch::randn({kBatch, s.width(0)});
  EXPECT_REFUSED("class numbers in [0, 2)",  // class 5 of 2
                 s.join.cut(session_of(0), labelled(0, z0, torch::full({kBatch}, 5, torch::kInt64))));
  EXPECT_REFUSED("int64 [B] matching its cut",
                 s.join.cut(session_of(0), labelled(0, z0, torch::zeros({kBatch}, torch::kInt32))));
  EXPECT_REFUSED("int64 [B] matching its cut",
                 s.join.cut(session_of(0), labelled(0, z0, torch::zeros({kBatch + 1}, torch::kInt64))));
  EXPECT_EQ(s.trainer.stats().steps, 0);
  EXPECT_EQ(s.join.joined(), 2);  // nobody ended; the step completes with good labels
  const auto r = s.join.cut(session_of(0), labelled(0, z0, torch::zeros({kBatch}, torch::kInt64)));
  EXPECT_EQ(r.out.size(), 2u);
  EXPECT_EQ(s.trainer.stats().steps, 1);
}

TEST(VerticalJoin, SummedCutsStayWithinTheBoundTheBackChecks) {
  Server s(table(2, vertical::JoinMode::kSum));
  start_aligned(s);
  const double bound = s.trainer.limits().max_abs_value;
  // Each within the bound, their sum not: refused to the party, per party bound / K.
  EXPECT_REFUSED("", s.join.cut(session_of(1), cut_msg(0, torch::full({kBatch, s.width(1)}, 0.6 * bound))));
  EXPECT_TRUE(
      s.join.cut(session_of(1), cut_msg(0, torch::full({kBatch, s.width(1)}, 0.4 * bound))).out.empty());
  const auto r = s.join.cut(session_of(0), labelled(0, torch::full({kBatch, s.width(0)}, 0.4 * bound),
                                                    torch::zeros({kBatch}, torch::kInt64)));
  EXPECT_TRUE(r.end.empty());
}

TEST(VerticalJoin, APartyThatLeavesBetweenStepsGivesTheOthersTimeToLeave) {
  Server s(table(3));
  start_aligned(s);
  auto step = [&](std::uint64_t n) {
    for (int k = 2; k >= 1; --k) s.join.cut(session_of(k), cut_msg(n, torch::randn({kBatch, s.width(k)})));
    return s.join.cut(session_of(0), labelled(n, torch::randn({kBatch, s.width(0)}),
                                             torch::zeros({kBatch}, torch::kInt64)));
  };
  ASSERT_EQ(step(0).out.size(), 3u);
  const auto t0 = Clock::time_point{} + 1h;
  EXPECT_TRUE(s.join.left(session_of(2), "left: training done", t0).end.empty());
  EXPECT_TRUE(contains(s.join.check_join(join_of(s, 2)).value_or(""), "party 2 ('p2') left"));
  EXPECT_TRUE(s.join.tick(t0 + VerticalJoin::kLeaveGrace - 1ms).end.empty());
  // Party 1 leaves on its own in time: nothing to end. Party 0 still training: its next
  // cut ends it, naming the first to leave.
  EXPECT_TRUE(s.join.left(session_of(1), "left: training done", t0).end.empty());
  const auto r = s.join.cut(session_of(0), labelled(1, torch::randn({kBatch, s.width(0)}),
                                                    torch::zeros({kBatch}, torch::kInt64)));
  EXPECT_EQ(ended(r), (std::vector<std::uint64_t>{session_of(0)}));
  EXPECT_TRUE(contains(r.end[0].reason, "party 2 ('p2') left (left: training done)")) << r.end[0].reason;

  // Or at the grace's end; then all leave and a new cohort may join.
  start_aligned(s);
  ASSERT_EQ(step(0).out.size(), 3u);
  EXPECT_TRUE(s.join.left(session_of(0), "left: interrupted", t0).end.empty());
  EXPECT_EQ(ended(s.join.tick(t0 + VerticalJoin::kLeaveGrace)), (std::vector<std::uint64_t>{session_of(1), session_of(2)}));
  EXPECT_EQ(s.join.joined(), 0);
  EXPECT_FALSE(s.join.check_join(join_of(s, 0)).has_value());
}

TEST(VerticalJoin, PartiesOutOfStepEndEveryParty) {
  struct Case {
    std::uint64_t step1;
    std::int64_t batch1;
    bool train1;
  };
  for (const auto& c : {Case{1, kBatch, true}, Case{0, kBatch + 1, true}, Case{0, kBatch, false}}) {
    SCOPED_TRACE(std::to_string(c.step1) + " " + std::to_string(c.batch1) + " " +
                 std::to_string(c.train1));
    Server s(table(2));
    start_aligned(s);
    const auto y = torch::randint(0, 2, {kBatch}, torch::kInt64);
    EXPECT_TRUE(
        s.join.cut(session_of(0), labelled(0, torch::randn({kBatch, s.width(0)}), y)).out.empty());
    const auto r =
        s.join.cut(session_of(1), cut_msg(c.step1, torch::randn({c.batch1, s.width(1)}), c.train1));
    EXPECT_TRUE(r.out.empty());
    EXPECT_EQ(ended(r), (std::vector<std::uint64_t>{session_of(0), session_of(1)}));
    for (const auto& e : r.end) {
      EXPECT_TRUE(contains(e.reason, "not in step"));
      EXPECT_TRUE(contains(e.reason, "party 1 ('p1')"));
    }
    EXPECT_FALSE(s.join.is_party(session_of(0)));
    EXPECT_FALSE(s.join.is_party(session_of(1)));
    EXPECT_EQ(s.join.joined(), 0);
    EXPECT_EQ(s.trainer.stats().steps, 0);
    // Nothing pending: no deadline, and a new cohort may join.
    EXPECT_TRUE(s.join.tick(Clock::now() + 24h).end.empty());
    EXPECT_FALSE(s.join.check_join(join_of(s, 0)).has_value());
    EXPECT_FALSE(s.join.check_join(join_of(s, 1)).has_value());
  }
}

TEST(VerticalJoin, AStepOverdueEndsEveryPartyNamingTheLateOne) {
  Server s(table(3));
  start_aligned(s);
  const auto t0 = Clock::time_point{} + 1h;
  const auto timeout = s.options.step_timeout;
  EXPECT_TRUE(s.join.tick(t0 + 24h).end.empty());  // nothing being gathered
  EXPECT_TRUE(s.join
                  .cut(session_of(0),
                       labelled(3, torch::randn({kBatch, s.width(0)}),
                                torch::randint(0, 2, {kBatch}, torch::kInt64)),
                       t0)
                  .out.empty());
  // The deadline runs from the first cut, not the last.
  EXPECT_TRUE(
      s.join.cut(session_of(2), cut_msg(3, torch::randn({kBatch, s.width(2)})), t0 + timeout / 2)
          .out.empty());
  EXPECT_TRUE(s.join.tick(t0).end.empty());
  EXPECT_TRUE(s.join.tick(t0 + timeout - 1ms).end.empty());
  EXPECT_EQ(s.join.joined(), 3);
  const auto r = s.join.tick(t0 + timeout + 1ms);
  EXPECT_TRUE(r.out.empty());
  EXPECT_EQ(ended(r), (std::vector<std::uint64_t>{session_of(0), session_of(1), session_of(2)}));
  for (const auto& e : r.end) {
    EXPECT_TRUE(contains(e.reason, "party 1 ('p1') sent no cut for step 3"));
    EXPECT_TRUE(contains(e.reason, "vertical.step_timeout_ms"));
    EXPECT_FALSE(contains(e.reason, "party 0"));
    EXPECT_FALSE(contains(e.reason, "party 2"));
  }
  EXPECT_EQ(s.join.joined(), 0);
  EXPECT_TRUE(s.join.tick(t0 + timeout + 2ms).end.empty());  // once
}

TEST(VerticalJoin, AnOverdueEvaluationNamesEveryLateParty) {
  Server s(table(3));
  start_aligned(s);
  const auto t0 = Clock::time_point{} + 1h;
  EXPECT_TRUE(s.join.cut(session_of(1), cut_msg(9, torch::randn({kBatch, s.width(1)}), false), t0)
                  .out.empty());
  const auto r = s.join.tick(t0 + s.options.step_timeout + 1ms);
  ASSERT_EQ(r.end.size(), 3u);
  EXPECT_TRUE(
      contains(r.end[0].reason, "party 0 ('p0'), party 2 ('p2') sent no cut for evaluation 9"));
}

TEST(VerticalJoin, APartyThatLeavesEndsTheOthers) {
  Server s(table(3));
  start_aligned(s);
  EXPECT_TRUE(s.join.left(999, "gone").end.empty());  // not a party
  EXPECT_EQ(s.join.joined(), 3);
  EXPECT_TRUE(s.join
                  .cut(session_of(0), labelled(0, torch::randn({kBatch, s.width(0)}),
                                               torch::randint(0, 2, {kBatch}, torch::kInt64)))
                  .out.empty());
  const auto r = s.join.left(session_of(1), "heartbeat timeout");
  EXPECT_TRUE(r.out.empty());
  EXPECT_EQ(ended(r), (std::vector<std::uint64_t>{session_of(0), session_of(2)}));
  for (const auto& e : r.end) {
    EXPECT_TRUE(contains(e.reason, "party 1 ('p1') left (heartbeat timeout)"));
    EXPECT_TRUE(contains(e.reason, "all 3 parties"));
  }
  for (int k = 0; k < 3; ++k) EXPECT_FALSE(s.join.is_party(session_of(k)));
  EXPECT_TRUE(s.join.left(session_of(0), "again").end.empty());
  EXPECT_TRUE(s.join.tick(Clock::now() + 24h).end.empty());  // the step being gathered is gone

  // Before the start nothing waits on a party: its place is free again, the others stay.
  admit_all(s);
  const auto r2 = s.join.left(session_of(0), "bye");
  EXPECT_TRUE(r2.end.empty());
  EXPECT_EQ(s.join.joined(), 2);
  EXPECT_FALSE(s.join.check_join(join_of(s, 0)).has_value());
}

TEST(VerticalJoin, CutsWaitForTheIntersectionAndJoinsForTheStart) {
  Server s(table(2));
  start(s);
  EXPECT_REFUSED("private set intersection is done",
                 s.join.cut(session_of(1), cut_msg(0, torch::randn({kBatch, s.width(1)}))));
  relay(s, session_of(0), psi(1, 1, {bytes(10 * vertical::kPointBytes)}));
  relay(s, session_of(1), psi(1, 0, {bytes(10 * vertical::kPointBytes)}));
  relay(s, session_of(1), psi(2, 0, {bytes(10 * vertical::kTagBytes)}));
  EXPECT_REFUSED("private set intersection is done",  // round 3 not yet relayed
                 s.join.cut(session_of(1), cut_msg(0, torch::randn({kBatch, s.width(1)}))));
  relay(s, session_of(0), psi(3, 1, {torch::arange(2, torch::kInt64)}));
  EXPECT_TRUE(s.join.cut(session_of(1), cut_msg(0, torch::randn({kBatch, s.width(1)}))).out.empty());
}

TEST(VerticalJoin, PartiesWithAnotherBatchOrderAreRefused) {
  Server s(table(2));
  auto j0 = join_of(s, 0);
  j0.vertical_order = "train.seed 1, batch_size 64, epochs 1, max_steps 0";
  s.join.admit(session_of(0), "alice", j0);
  auto j1 = join_of(s, 1);
  j1.vertical_order = "train.seed 2, batch_size 64, epochs 1, max_steps 0";
  EXPECT_TRUE(contains(s.join.check_join(j1).value_or(""), "is not party alice's (train.seed 1"));
  j1.vertical_order = j0.vertical_order;
  EXPECT_FALSE(s.join.check_join(j1).has_value());
}

TEST(VerticalJoin, ANewCohortStartsFromTheInitialBack) {
  Server s(table(2));
  const auto initial = params_of(s.trainer);
  start_aligned(s);
  s.join.cut(session_of(1), cut_msg(0, torch::randn({kBatch, s.width(1)})));
  s.join.cut(session_of(0), labelled(0, torch::randn({kBatch, s.width(0)}), torch::zeros({kBatch}, torch::kInt64)));
  ASSERT_EQ(s.trainer.stats().steps, 1);
  ASSERT_FALSE(same(params_of(s.trainer), initial));
  // Joins wait while this cohort runs; then it ends and a new one starts again.
  EXPECT_TRUE(contains(s.join.check_join(join_of(s, 1)).value_or(""), "party 1 has joined already"));
  s.join.left(session_of(0), "left: training done", Clock::time_point{});
  s.join.left(session_of(1), "left: training done", Clock::time_point{});
  ASSERT_EQ(s.join.joined(), 0);
  start_aligned(s);
  EXPECT_EQ(s.trainer.stats().steps, 0);
  EXPECT_TRUE(same(params_of(s.trainer), initial));
}

TEST(VerticalJoin, AnEvaluationGivesEveryPartyTheResult) {
  Server s(table(2));
  start_aligned(s);
  const auto before = params_of(s.trainer);
  const auto y = torch::randint(0, 2, {kBatch}, torch::kInt64);
  EXPECT_TRUE(
      s.join.cut(session_of(1), cut_msg(5, torch::randn({kBatch, s.width(1)}), false)).out.empty());
  const auto r =
      s.join.cut(session_of(0), labelled(5, torch::randn({kBatch, s.width(0)}), y, false));
  EXPECT_TRUE(r.end.empty());
  ASSERT_EQ(r.out.size(), 2u);
  std::vector<wire::EvalResult> results;
  for (int k = 0; k < 2; ++k) {
    const auto* m = to_session(r.out, session_of(k));
    ASSERT_NE(m, nullptr) << k;
    ASSERT_EQ(m->type, wire::MsgType::kEvalResult) << k;
    EXPECT_TRUE(m->tensors.empty());
    results.push_back(wire::meta_as<wire::EvalResult>(*m));
  }
  EXPECT_EQ(results[0].id, 5u);
  EXPECT_EQ(results[1].id, 5u);
  EXPECT_EQ(results[0].samples, static_cast<std::uint64_t>(kBatch));
  EXPECT_DOUBLE_EQ(results[0].loss, results[1].loss);
  EXPECT_TRUE(std::isfinite(results[0].loss));
  EXPECT_EQ(s.trainer.stats().steps, 0);
  EXPECT_EQ(s.trainer.stats().eval_batches, 1);
  EXPECT_TRUE(same(params_of(s.trainer), before));  // no step taken
}

}  // namespace
}  // namespace cutlayer::server
