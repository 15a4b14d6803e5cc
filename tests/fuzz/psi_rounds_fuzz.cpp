// psi_rounds: what a party of the private set intersection (vertical/psi.h) takes from
// the wire, for a party holding the IDs "id0".."id4":
//   input := u8 mode (mod 3), then
//     mode 0: round-1 points of a peer (the rest of the input)      -> reblind
//     mode 1: u16 L, the peer's round 2 for this party (L bytes), then
//             this party's round 2 for the peer (the rest)          -> intersect
//     mode 2: u32 positions (the rest, little-endian)               -> indices_at
// Refusal is ProtocolError. Accepted: reblind gives one 16-byte tag per 32-byte point,
// its points were canonical (top bit clear, u < 2^255 - 19), on the curve and distinct; intersect took
// exactly one tag per point of this party and its indices ascend below 5; indices_at's
// are distinct, below 5 and as many as the positions.
#include <algorithm>
#include <cstring>
#include <set>
#include <string>

#include "cutlayer/error.h"
#include "cutlayer/vertical/psi.h"
#include "field25519.h"  // vertical/src
#include "fuzz_common.h"

namespace cutlayer::fuzz::psi_rounds {
namespace {

constexpr std::size_t kIds = 5;

const vertical::PsiParty& party() {
  // One party for the process (its scalar drawn once): the same input meets the same party.
  static const vertical::PsiParty p({"id0", "id1", "id2", "id3", "id4"}, vertical::PsiOptions{1, 4096});
  return p;
}

const auto* bytes_of(const std::string& s) { return reinterpret_cast<const std::uint8_t*>(s.data()); }

void reblind(const std::string& points) {
  const auto tags = party().reblind(bytes_of(points), points.size());
  const std::size_t n = points.size() / vertical::kPointBytes;
  check(points.size() % vertical::kPointBytes == 0 && tags.size() == n * vertical::kTagBytes,
        "reblind accepted a partial point or gave the wrong number of tags");
  std::set<std::string> seen;
  for (std::size_t k = 0; k < n; ++k) {
    const std::string u = points.substr(k * vertical::kPointBytes, vertical::kPointBytes);
    check((static_cast<std::uint8_t>(u[31]) & 0x80) == 0, "a point with the top bit set was accepted");
    check(u != std::string("\xed") + std::string(30, '\xff') + "\x7f", "u = p was accepted");
    check(vertical::field25519::curve_or_twist(bytes_of(u)) == 1, "a point off the curve was accepted");
    check(seen.insert(u).second, "a repeated point was accepted");
  }
}

void intersect(Input& in) {
  const std::string returned = in.bytes(in.take<std::uint16_t>());
  const std::string peer = in.rest();
  const auto common = party().intersect(bytes_of(returned), returned.size(), bytes_of(peer), peer.size());
  check(returned.size() == kIds * vertical::kTagBytes, "a round 2 of the wrong size was accepted");
  check(std::is_sorted(common.begin(), common.end()) &&
            std::adjacent_find(common.begin(), common.end()) == common.end(),
        "intersect's indices are not strictly ascending");
  check(common.size() <= kIds && (common.empty() || common.back() < kIds), "an index past the party's IDs");
}

void indices_at(Input& in) {
  std::vector<std::uint32_t> positions;
  while (in.left() >= 4) positions.push_back(in.take<std::uint32_t>());
  const auto idx = party().indices_at(positions);
  check(idx.size() == positions.size(), "indices_at lost or made up positions");
  for (std::size_t k = 0; k < idx.size(); ++k) {
    check(idx[k] < kIds, "an index past the party's IDs");
    check(k == 0 || idx[k] > idx[k - 1], "indices_at's indices are not strictly ascending");
  }
}

}  // namespace

int fuzz_one(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  try {
    switch (in.take<std::uint8_t>() % 3) {
      case 0: reblind(in.rest()); break;
      case 1: intersect(in); break;
      default: indices_at(in); break;
    }
  } catch (const ProtocolError&) {
  }
  return 0;
}

}  // namespace cutlayer::fuzz::psi_rounds

CUTLAYER_FUZZ_ENTRY(psi_rounds)
