#include "cutlayer/vertical/psi.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <openssl/bn.h>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"
#include "field25519.h"  // vertical/src

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

// A coordinates, B is the party (psi.h's rounds); the transcript is everything sent.
Run two_party(std::vector<std::string> a_ids, std::vector<std::string> b_ids, PsiOptions o = {}) {
  PsiParty a(std::move(a_ids), o), b(std::move(b_ids), o);
  const auto& a1 = a.blinded();
  const auto& b1 = b.blinded();
  const auto kept = a.reblind(b1.data(), b1.size());  // A's round 2 for B: stays with A
  const auto b2 = b.reblind(a1.data(), a1.size());    // B's round 2, sent to A
  Run r;
  const auto common = a.intersect(b2.data(), b2.size(), kept.data(), kept.size());
  const auto positions = a.positions_of(common, b2.data(), b2.size(), kept.data(), kept.size());
  r.a_common = pick(a, shared_order(a, common));
  r.b_common = pick(b, shared_order(b, b.indices_at(positions)));
  for (const auto* part : {&a1, &b1, &b2}) r.transcript.insert(r.transcript.end(), part->begin(), part->end());
  const auto* p = reinterpret_cast<const std::uint8_t*>(positions.data());
  r.transcript.insert(r.transcript.end(), p, p + positions.size() * sizeof(std::uint32_t));
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

TEST(Psi, ManyWorkersGiveTheSameResult) {
  PsiOptions four;
  four.threads = 4;  // more workers than this machine may have cores
  const auto a = names("x", 0, 3000), b = names("x", 1000, 4000);
  const auto r = two_party(a, b, four);
  EXPECT_EQ(r.a_common, sorted_intersection(a, b));
  EXPECT_EQ(r.b_common, sorted_intersection(a, b));
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
      // H(id) (the point before blinding, whichever counter it took): its first 16 bytes
      // nowhere in the transcript.
      for (int counter = 0; counter < 8; ++counter) {
        const std::string msg = "cutlayer psi x25519 v2: id\n" + std::string(1, static_cast<char>(counter)) + id;
        const auto h = crypto::sha256(msg.data(), msg.size());
        ASSERT_EQ(bytes.find(std::string(h.begin(), h.begin() + 16)), std::string::npos) << id;
      }
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
  // Each round (hex) is refused with a message containing `why`.
  const auto refused = [&](std::initializer_list<const char*> rounds, const std::string& why) {
    for (const char* h : rounds) {
      try {
        try_point(h);
        ADD_FAILURE() << h << " was accepted";
      } catch (const ProtocolError& e) {
        EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
      }
    }
  };
  // Small order on the curve (the identity after multiplying): 0, 1 (order 4) and the two
  // of order 8.
  refused({"0000000000000000000000000000000000000000000000000000000000000000",
           "0100000000000000000000000000000000000000000000000000000000000000",
           "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
           "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"},
          "small order");
  // On the twist, not the curve: p - 1 (of order 4 there), 2 and 3.
  refused({"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
           "0200000000000000000000000000000000000000000000000000000000000000",
           "0300000000000000000000000000000000000000000000000000000000000000"},
          "not on the curve");
  // Not canonical: p, p + 1, the top bit set.
  refused({"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
           "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
           "0900000000000000000000000000000000000000000000000000000000000080"},
          "canonical");
  // A good point (the base point, u = 9) passes; twice in one round, or a short round, not.
  EXPECT_EQ(try_point("0900000000000000000000000000000000000000000000000000000000000000").size(), kTagBytes);
  refused({"0900000000000000000000000000000000000000000000000000000000000000"
           "0900000000000000000000000000000000000000000000000000000000000000",
           // P and P + T (T = (0, 0), of order 2): u = 9 and u = 1/9 differ but blind alike.
           "0900000000000000000000000000000000000000000000000000000000000000"
           "12c7711cc7711cc7711cc7711cc7711cc7711cc7711cc7711cc7711cc7711c47"},
          "repeats a point");
  EXPECT_THROW(try_point("09000000"), ProtocolError);
  PsiOptions small;
  small.max_ids = 1;
  PsiParty q({"a"}, small);
  const auto two = PsiParty({"c", "d"}).blinded();
  EXPECT_THROW(q.reblind(two.data(), two.size()), ProtocolError);
  // A bad point far into a round that several workers share: refused all the same.
  PsiOptions four;
  four.threads = 4;
  PsiParty r({"a"}, four);
  PsiParty big(names("n", 0, 2000));
  auto round1 = big.blinded();
  std::fill(round1.begin() + 1900 * kPointBytes, round1.begin() + 1901 * kPointBytes, 0);  // u = 0
  try {
    r.reblind(round1.data(), round1.size());
    FAIL() << "a small-order point at 1900 was accepted";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("point 1900 "), std::string::npos) << e.what();
  }
}

TEST(Psi, CurveOrTwistAgreesWithOpenSsl) {
  // field25519's Euler criterion against BN_kronecker on random and edge u values.
  BN_CTX* ctx = BN_CTX_new();
  BIGNUM *p = BN_new(), *u = BN_new(), *t = BN_new(), *v = BN_new();
  BN_set_bit(p, 255);
  BN_sub_word(p, 19);
  std::mt19937_64 g(5);
  int on = 0;
  for (int i = 0; i < 3000; ++i) {
    std::uint8_t b[32];
    for (auto& x : b) x = static_cast<std::uint8_t>(g());
    b[31] &= 0x7f;
    if (i < 40) {  // 0..19, and 2^255 - 1 down to 2^255 - 20 (p and above: not canonical)
      std::fill(b, b + 32, i < 20 ? 0 : 0xff);
      b[31] = i < 20 ? 0 : 0x7f;
      b[0] = static_cast<std::uint8_t>(i < 20 ? i : 0xff - (i - 20));
    }
    BN_lebin2bn(b, 32, u);
    BN_mod(u, u, p, ctx);
    BN_set_word(t, 486662);
    BN_add(t, t, u);
    BN_mod_mul(t, t, u, p, ctx);
    BN_add_word(t, 1);
    BN_mod_mul(v, t, u, p, ctx);
    const int want = BN_is_zero(v) ? 0 : BN_kronecker(v, p, ctx);
    ASSERT_EQ(field25519::curve_or_twist(b), want) << i;
    on += want == 1;
  }
  EXPECT_GT(on, 1300);  // about half of all u are on the curve
  EXPECT_LT(on, 1700);
  BN_free(p), BN_free(u), BN_free(t), BN_free(v);
  BN_CTX_free(ctx);
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
