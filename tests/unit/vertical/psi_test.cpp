#include "cutlayer/vertical/psi.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"

using namespace cutlayer;
using namespace cutlayer::vertical;

namespace {

std::vector<std::string> names(const std::string& prefix, int from, int to) {
  std::vector<std::string> out;
  for (int i = from; i < to; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

std::vector<std::string> pick(const PsiParty& p, const std::vector<std::size_t>& idx) {
  std::vector<std::string> out;
  for (auto i : idx) out.push_back(p.ids().at(i));
  return out;
}

std::vector<std::string> sorted_intersection(std::vector<std::string> a, std::vector<std::string> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  std::vector<std::string> out;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

// The whole two-party exchange as bytes (what would cross the wire), and each side's result.
struct Run {
  std::vector<std::string> a_common, b_common;  // sorted
  std::vector<std::uint8_t> transcript;
};

Run two_party(std::vector<std::string> a_ids, std::vector<std::string> b_ids) {
  PsiParty a(std::move(a_ids)), b(std::move(b_ids));
  const auto& a1 = a.blinded();
  const auto& b1 = b.blinded();
  const auto a2 = a.reblind(b1.data(), b1.size());  // A's round 2, for B
  const auto b2 = b.reblind(a1.data(), a1.size());  // B's round 2, for A
  Run r;
  r.a_common = pick(a, shared_order(a, a.intersect(b2.data(), b2.size(), a2.data(), a2.size())));
  r.b_common = pick(b, shared_order(b, b.intersect(a2.data(), a2.size(), b2.data(), b2.size())));
  for (const auto* part : {&a1, &b1, &a2, &b2}) r.transcript.insert(r.transcript.end(), part->begin(), part->end());
  return r;
}

std::vector<std::uint8_t> hex(const std::string& h) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<std::uint8_t>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

}  // namespace

TEST(Psi, EmptySets) {
  auto r = two_party({}, {});
  EXPECT_TRUE(r.a_common.empty());
  EXPECT_TRUE(r.b_common.empty());
  r = two_party({}, {"x", "y"});
  EXPECT_TRUE(r.a_common.empty());
  EXPECT_TRUE(r.b_common.empty());
}

TEST(Psi, Singletons) {
  auto r = two_party({"alice"}, {"alice"});
  EXPECT_EQ(r.a_common, std::vector<std::string>{"alice"});
  EXPECT_EQ(r.b_common, std::vector<std::string>{"alice"});
  r = two_party({"alice"}, {"bob"});
  EXPECT_TRUE(r.a_common.empty());
  EXPECT_TRUE(r.b_common.empty());
}

TEST(Psi, DisjointAndIdentical) {
  auto r = two_party(names("a", 0, 300), names("b", 0, 300));
  EXPECT_TRUE(r.a_common.empty());
  EXPECT_TRUE(r.b_common.empty());
  const auto same = names("id", 0, 300);
  r = two_party(same, same);
  auto want = same;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(r.a_common, want);
  EXPECT_EQ(r.b_common, want);
}

TEST(Psi, TenThousandIdsHalfShared) {
  // Two parties of 10k IDs each, 5k in common, in shuffled row orders.
  auto a = names("person-", 0, 10000), b = names("person-", 5000, 15000);
  std::mt19937 g(7);
  std::shuffle(a.begin(), a.end(), g);
  std::shuffle(b.begin(), b.end(), g);
  const auto r = two_party(a, b);
  const auto want = sorted_intersection(a, b);
  ASSERT_EQ(want.size(), 5000u);
  EXPECT_EQ(r.a_common, want);
  EXPECT_EQ(r.b_common, want);  // the same IDs in the same (shared) order on both sides
}

TEST(Psi, DuplicateOrEmptyIdsAreRefused) {
  try {
    PsiParty p({"a", "b", "c", "b"});
    FAIL() << "a repeated ID was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'b' appears more than once (rows 1 and 3)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(PsiParty({"a", ""}), ConfigError);
  PsiOptions small;
  small.max_ids = 2;
  EXPECT_THROW(PsiParty({"a", "b", "c"}, small), ConfigError);
}

TEST(Psi, TranscriptCarriesNoIdNorItsUnblindedPoint) {
  const auto a = names("customer-0000", 0, 200), b = names("customer-0000", 100, 300);
  const auto r = two_party(a, b);
  ASSERT_EQ(r.a_common.size(), 100u);
  const std::string bytes(r.transcript.begin(), r.transcript.end());
  for (const auto* set : {&a, &b})
    for (const auto& id : *set) {
      ASSERT_EQ(bytes.find(id), std::string::npos) << id;
      // H(id) (the point before blinding): its first 16 bytes nowhere in the transcript.
      const std::string msg = "cutlayer psi x25519 v1: id\n" + id;
      const auto h = crypto::sha256(msg.data(), msg.size());
      ASSERT_EQ(bytes.find(std::string(h.begin(), h.begin() + 16)), std::string::npos) << id;
    }
}

TEST(Psi, BlindingIsFreshEachRun) {
  PsiParty a({"x"}), b({"x"});
  EXPECT_NE(a.blinded(), b.blinded());  // different scalars: unlinkable across runs
}

TEST(Psi, BadRoundOnePointsAreRefused) {
  PsiParty p({"a", "b"});
  const auto try_point = [&](const std::string& h) {
    const auto pt = hex(h);
    return p.reblind(pt.data(), pt.size());
  };
  // Small order (the identity after multiplying): 0, 1, p - 1 and the two of order 8.
  for (const char* h : {"0000000000000000000000000000000000000000000000000000000000000000",
                        "0100000000000000000000000000000000000000000000000000000000000000",
                        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
                        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
                        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"}) {
    try {
      try_point(h);
      FAIL() << h << " was accepted";
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find("small order"), std::string::npos) << e.what();
    }
  }
  // Not canonical: p, p + 1, the top bit set.
  for (const char* h : {"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
                        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
                        "0900000000000000000000000000000000000000000000000000000000000080"}) {
    try {
      try_point(h);
      FAIL() << h << " was accepted";
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find("canonical"), std::string::npos) << e.what();
    }
  }
  // A good point (the base point, u = 9) passes; twice in one round, or a short round, not.
  EXPECT_EQ(try_point("0900000000000000000000000000000000000000000000000000000000000000").size(), kTagBytes);
  EXPECT_THROW(try_point("0900000000000000000000000000000000000000000000000000000000000000"
                         "0900000000000000000000000000000000000000000000000000000000000000"),
               ProtocolError);
  EXPECT_THROW(try_point("09000000"), ProtocolError);
  PsiOptions small;
  small.max_ids = 1;
  PsiParty q({"a"}, small);
  const auto two = PsiParty({"c", "d"}).blinded();
  EXPECT_THROW(q.reblind(two.data(), two.size()), ProtocolError);
}

TEST(Psi, BadRoundTwoAndPositionsAreRefused) {
  PsiParty a({"a", "b", "c"}), b({"b", "c"});
  const auto& b1 = b.blinded();
  const auto a2 = a.reblind(b1.data(), b1.size());
  const auto b2 = b.reblind(a.blinded().data(), a.blinded().size());
  // One tag short, or a tag's worth of bytes less one.
  EXPECT_THROW(a.intersect(b2.data(), b2.size() - kTagBytes, a2.data(), a2.size()), ProtocolError);
  EXPECT_THROW(a.intersect(b2.data(), b2.size(), a2.data(), a2.size() - 1), ProtocolError);
  EXPECT_EQ(a.intersect(b2.data(), b2.size(), a2.data(), a2.size()).size(), 2u);
  EXPECT_THROW(b.indices_at({2}), ProtocolError);     // past b's two points
  EXPECT_THROW(b.indices_at({0, 0}), ProtocolError);  // repeated
  EXPECT_EQ(b.indices_at({1, 0}).size(), 2u);
}

TEST(Psi, ThreePartiesAgreeOnTheCommonIdsInOneOrder) {
  // Party 0 (coordinator) and two others, each with a random 80% of 2,000 people.
  const auto everyone = names("p", 0, 2000);
  std::mt19937 g(11);
  std::vector<std::vector<std::string>> sets;
  for (int k = 0; k < 3; ++k) {
    auto s = everyone;
    std::shuffle(s.begin(), s.end(), g);
    s.resize(1600);
    sets.push_back(s);
  }
  PsiParty p0(sets[0]), p1(sets[1]), p2(sets[2]);
  const auto out = align({&p0, &p1, &p2});
  ASSERT_EQ(out.size(), 3u);
  const auto want = sorted_intersection(sorted_intersection(sets[0], sets[1]), sets[2]);
  ASSERT_GT(want.size(), 900u);  // ~0.8^3 of 2,000
  EXPECT_EQ(pick(p0, out[0]), want);
  EXPECT_EQ(pick(p1, out[1]), want);
  EXPECT_EQ(pick(p2, out[2]), want);
  // Two parties through align() give what the two-party exchange gives.
  const auto pair = align({&p1, &p2});
  EXPECT_EQ(pick(p1, pair[0]), sorted_intersection(sets[1], sets[2]));
  EXPECT_EQ(pick(p2, pair[1]), sorted_intersection(sets[1], sets[2]));
}
