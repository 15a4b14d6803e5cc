// Private set intersection of the parties' sample IDs (vertical split learning): each
// party learns which of its own IDs all parties hold and the others' set sizes, the
// coordinator also each pairwise intersection with it (align()), nothing else about the
// others' IDs; whoever relays the messages learns the set sizes and the size of the common set
// (a server trains on that many samples anyway), nothing about any ID. Honest-but-curious
// parties: a party that deviates can make the result wrong (docs/vertical.md).
//
// Diffie–Hellman PSI on X25519 (RFC 7748). Each ID is hashed to a point H(id) of the curve
// (SHA-256, domain-separated, the first of a few counters whose u-coordinate is on the
// curve and not its twist); a party blinds its points with its secret scalar a, the other
// re-blinds them with b, and since X25519(b, X25519(a, H)) == X25519(a, X25519(b, H)) the
// twice-blinded values of common IDs match, while a value blinded once reveals nothing
// of the ID (DDH) and the scalars never leave their parties.
//
// Two roles: a coordinator C and a party P (K parties: C and each other party, align()).
//   1. C sends C.blinded() to P, P sends P.blinded() to C;
//   2. P sends P.reblind(C's round 1) to C; C computes C.reblind(P's round 1) and keeps it
//      (sent, it would let anyone holding both round 2s match them);
//   3. C: common = C.intersect(P's round 2, its own round 2), and sends P
//      C.positions_of(common, ...); P: P.indices_at(those positions).
// Points from the wire are checked before use: the byte count (a multiple of 32, at most
// `max_ids` points, the count each later round expects), canonical encodings (u < 2^255
// - 19, top bit clear), on the curve (not its twist), not of small order (the
// multiplication would give the identity), no point repeated (even up to a point of small
// order: equal tags). Refusals are ProtocolErrors.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cutlayer::vertical {

inline constexpr std::size_t kPointBytes = 32;  // an X25519 u-coordinate
inline constexpr std::size_t kTagBytes = 16;    // a twice-blinded point, hashed and cut short

struct PsiOptions {
  int threads = 0;                   // workers for the curve arithmetic; 0: all cores
  std::size_t max_ids = 10'000'000;  // the most IDs a party may bring or a peer may send
};

// One party's side of the two-party protocol. Its scalar is drawn at construction and
// wiped with the object.
class PsiParty {
 public:
  // `ids`: this party's sample IDs, each unique and non-empty (ConfigError naming the
  // first repeated or empty one, and its rows).
  explicit PsiParty(std::vector<std::string> ids, PsiOptions options = {});
  ~PsiParty();
  PsiParty(const PsiParty&) = delete;
  PsiParty& operator=(const PsiParty&) = delete;

  // Round 1: this party's points blinded, n x 32 bytes in an order drawn at random (the
  // order of a party's IDs says nothing on the wire). Sent to the other role.
  const std::vector<std::uint8_t>& blinded() const { return blinded_; }

  // Round 2: the peer's round-1 points blinded again, as tags (n x 16 bytes) in the
  // peer's order: a party sends its round 2 to the coordinator; the coordinator keeps its
  // own. Throws ProtocolError when the bytes are not valid round-1 points.
  std::vector<std::uint8_t> reblind(const std::uint8_t* points, std::size_t bytes) const;

  // The coordinator's side: indices into ids() of the IDs the peer holds too, ascending.
  // `returned`: the peer's round 2 for this party's round 1; `peer_tags`: this party's
  // round 2 for the peer (its own computation, never sent).
  // Throws ProtocolError when `returned` does not have one tag per point sent.
  std::vector<std::size_t> intersect(const std::uint8_t* returned, std::size_t returned_bytes,
                                     const std::uint8_t* peer_tags, std::size_t peer_tag_bytes) const;

  // The coordinator's answer to a party: the positions in the party's round 1 (the order
  // of `peer_tags`) whose IDs are among `mine` (indices into ids() that the party holds
  // too, e.g. those common to all parties). `returned` and `peer_tags` as for intersect().
  std::vector<std::uint32_t> positions_of(const std::vector<std::size_t>& mine, const std::uint8_t* returned,
                                          std::size_t returned_bytes, const std::uint8_t* peer_tags,
                                          std::size_t peer_tag_bytes) const;

  // A party's result: the IDs at `positions` of its own round 1 (the coordinator's
  // positions_of()), as indices into ids(), ascending. ProtocolError on a position out of
  // range or repeated.
  std::vector<std::size_t> indices_at(const std::vector<std::uint32_t>& positions) const;

  const std::vector<std::string>& ids() const { return ids_; }

 private:
  class Curve;
  std::vector<std::string> ids_;
  PsiOptions options_;
  std::array<std::uint8_t, 32> scalar_{};
  std::vector<std::uint8_t> blinded_;     // round 1, in the drawn order
  std::vector<std::uint32_t> order_;      // blinded_ point k is ids_[order_[k]]
  void check_returned(std::size_t bytes) const;  // one tag per point of blinded()
  void blind_own();                              // round 1 (the constructor's work)
};

// Party 0's side of the star below, over any transport: from each other party i's round 1
// (`round1[i]`) and its round 2 for party 0's round 1 (`round2[i]`; entries 0 unused),
// the indices into party 0's ids() that all parties hold (ascending) and, per party, the
// positions to send it (positions_of). Throws ProtocolError for bad points or sizes.
struct Coordination {
  std::vector<std::size_t> common;
  std::vector<std::vector<std::uint32_t>> positions;  // by party; entry 0 empty
};
Coordination coordinate(const PsiParty& coordinator, const std::vector<std::vector<std::uint8_t>>& round1,
                        const std::vector<std::vector<std::uint8_t>>& round2);

// K parties, star-shaped around party 0 (the coordinator, e.g. the one with the labels):
// party 0 runs the rounds above with each other party, intersects the results and tells
// each party the positions of its own round-1 points that all parties hold. Every party
// ends with the same IDs; party 0 also learns each pairwise intersection with it
// (docs/vertical.md). This is the in-process form (tests, benchmarks): `parties[i]` is
// party i. Returns, per party, the indices into its ids() of the common IDs, in the
// shared order (the IDs sorted bytewise, which every party can compute alone).
std::vector<std::vector<std::size_t>> align(const std::vector<PsiParty*>& parties);

// `common`'s IDs of `party` sorted bytewise: the shared order of the intersection.
std::vector<std::size_t> shared_order(const PsiParty& party, std::vector<std::size_t> common);

}  // namespace cutlayer::vertical
