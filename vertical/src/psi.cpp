#include "cutlayer/vertical/psi.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <mutex>
#include <numeric>
#include <string_view>
#include <system_error>
#include <thread>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"
#include "field25519.h"

namespace cutlayer::vertical {
namespace {

using Point = std::array<std::uint8_t, kPointBytes>;
using Tag = std::array<std::uint8_t, kTagBytes>;

constexpr std::string_view kHashDomain = "cutlayer psi x25519 v2: id\n";
constexpr std::string_view kTagDomain = "cutlayer psi x25519 v2: tag\n";

// H(id): SHA-256 over the domain, a counter byte and the ID, top bit cleared, for the
// first counter whose u is on the curve itself (about two tries): a point of the twist
// would tell anyone who tests it one bit of its ID, a bit blinding does not change.
Point hash_to_point(const std::string& id) {
  std::string msg(kHashDomain);
  msg += '\0';
  const std::size_t counter_at = msg.size() - 1;
  msg += id;
  for (int counter = 0; counter < 256; ++counter) {
    msg[counter_at] = static_cast<char>(counter);
    const auto d = crypto::sha256(msg.data(), msg.size());
    Point p;
    std::memcpy(p.data(), d.data(), p.size());
    p[31] &= 0x7f;
    if (field25519::curve_or_twist(p.data()) == 1) return p;
  }
  throw CryptoError("PSI: no curve point in 256 tries (probability 2^-256)");
}

Tag tag_of(const std::uint8_t* twice) {
  std::uint8_t msg[kTagDomain.size() + kPointBytes];
  std::memcpy(msg, kTagDomain.data(), kTagDomain.size());
  std::memcpy(msg + kTagDomain.size(), twice, kPointBytes);
  const auto d = crypto::sha256(msg, sizeof msg);
  Tag t;
  std::memcpy(t.data(), d.data(), t.size());
  return t;
}

// u < 2^255 - 19 with the top bit clear (little-endian): the one encoding of each u.
bool canonical(const std::uint8_t* u) {
  if (u[31] & 0x80) return false;
  if (u[31] != 0x7f) return true;
  for (int i = 30; i >= 1; --i)
    if (u[i] != 0xff) return true;
  return u[0] < 0xed;
}

// Splits [0, n) over `threads` workers (the caller's thread among them); each gets its
// own state from make() (OpenSSL contexts are not shared between threads). The first
// exception a worker throws is rethrown here once all have stopped.
template <class Make, class Body>
void parallel(std::size_t n, int threads, Make&& make, Body&& body) {
  std::size_t workers = threads > 0 ? static_cast<std::size_t>(threads)
                                    : std::max<std::size_t>(1, std::thread::hardware_concurrency());
  workers = std::max<std::size_t>(1, std::min(workers, n / 256 + 1));  // small sets: no threads
  std::exception_ptr error;
  std::mutex mu;
  auto run = [&](std::size_t w) {
    try {
      auto state = make();
      const std::size_t begin = n * w / workers, end = n * (w + 1) / workers;
      for (std::size_t k = begin; k < end; ++k) body(state, k);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);  // no reallocation (and no throw) once threads run
  std::size_t started = 1;
  try {
    for (; started < workers; ++started) pool.emplace_back(run, started);
  } catch (const std::system_error&) {  // no more threads: this one takes their ranges
  }
  run(0);
  for (std::size_t w = started; w < workers; ++w) run(w);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

template <std::size_t N>
std::vector<std::array<std::uint8_t, N>> as_arrays(const std::uint8_t* data, std::size_t count) {
  std::vector<std::array<std::uint8_t, N>> out(count);
  for (std::size_t k = 0; k < count; ++k) std::memcpy(out[k].data(), data + k * N, N);
  return out;
}

}  // namespace

// X25519 with this party's scalar: u -> u-coordinate of scalar * (u's point). One per
// worker thread.
class PsiParty::Curve {
 public:
  explicit Curve(const std::array<std::uint8_t, 32>& scalar) {
    key_ = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, scalar.data(), scalar.size());
    if (key_ == nullptr) throw CryptoError(crypto::openssl_error("PSI: X25519 key setup failed"));
    ctx_ = EVP_PKEY_CTX_new(key_, nullptr);
    if (ctx_ == nullptr || EVP_PKEY_derive_init(ctx_) <= 0) {
      free();
      throw CryptoError(crypto::openssl_error("PSI: X25519 context setup failed"));
    }
  }
  ~Curve() { free(); }
  Curve(const Curve&) = delete;
  Curve& operator=(const Curve&) = delete;

  // False when the point has small order (the product is the identity, u = 0).
  bool mul(const std::uint8_t* u, std::uint8_t* out) {
    // One peer key per worker, its value replaced each time (an EVP_PKEY per point costs
    // an allocation and a key-manager fetch: ~15% of the multiplication).
    const bool imported = peer_ == nullptr
                              ? (peer_ = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, u, kPointBytes)) != nullptr
                              : EVP_PKEY_set1_encoded_public_key(peer_, u, kPointBytes) > 0;
    if (!imported) throw CryptoError(crypto::openssl_error("PSI: X25519 point import failed"));
    std::size_t len = kPointBytes;
    // No "peer key check" (validate 0): the caller checked the encoding, and the all-zero
    // result that a point of small order gives is refused by the derive itself.
    const bool ok = EVP_PKEY_derive_set_peer_ex(ctx_, peer_, 0) > 0 && EVP_PKEY_derive(ctx_, out, &len) > 0 &&
                    len == kPointBytes;
    if (!ok) ERR_clear_error();
    return ok;
  }

 private:
  void free() {
    EVP_PKEY_CTX_free(ctx_);
    EVP_PKEY_free(peer_);
    EVP_PKEY_free(key_);
    ctx_ = nullptr;
    peer_ = key_ = nullptr;
  }
  EVP_PKEY* key_ = nullptr;
  EVP_PKEY* peer_ = nullptr;
  EVP_PKEY_CTX* ctx_ = nullptr;
};

PsiParty::PsiParty(std::vector<std::string> ids, PsiOptions options) : ids_(std::move(ids)), options_(options) {
  const std::size_t n = ids_.size();
  if (n > options_.max_ids || n > UINT32_MAX)
    throw ConfigError("PSI: " + std::to_string(n) + " IDs, more than the limit of " +
                      std::to_string(options_.max_ids));
  std::vector<std::uint32_t> by_id(n);
  std::iota(by_id.begin(), by_id.end(), 0u);
  std::sort(by_id.begin(), by_id.end(), [&](auto a, auto b) { return ids_[a] < ids_[b]; });
  for (std::size_t k = 0; k < n; ++k) {
    if (ids_[by_id[k]].empty()) throw ConfigError("PSI: the ID of row " + std::to_string(by_id[k]) + " is empty");
    if (k > 0 && ids_[by_id[k]] == ids_[by_id[k - 1]])
      throw ConfigError("PSI: ID '" + ids_[by_id[k]] + "' appears more than once (rows " +
                        std::to_string(std::min(by_id[k - 1], by_id[k])) + " and " +
                        std::to_string(std::max(by_id[k - 1], by_id[k])) + "); IDs must be unique");
  }
  crypto::random_bytes(scalar_.data(), scalar_.size());
  try {
    blind_own();
  } catch (...) {  // no destructor runs for a half-built party
    crypto::wipe(scalar_.data(), scalar_.size());
    throw;
  }
}

void PsiParty::blind_own() {
  const std::size_t n = ids_.size();
  // A random order for round 1 (Fisher-Yates over OpenSSL's generator).
  order_.resize(n);
  std::iota(order_.begin(), order_.end(), 0u);
  std::vector<std::uint64_t> draws(n);
  if (n > 0) crypto::random_bytes(draws.data(), draws.size() * sizeof(std::uint64_t));
  for (std::size_t k = n; k > 1; --k) std::swap(order_[k - 1], order_[draws[k - 1] % k]);
  blinded_.resize(n * kPointBytes);
  parallel(
      n, options_.threads, [&] { return Curve(scalar_); },
      [&](Curve& c, std::size_t k) {
        const Point h = hash_to_point(ids_[order_[k]]);
        if (!c.mul(h.data(), blinded_.data() + k * kPointBytes))  // probability ~2^-250
          throw CryptoError("PSI: the ID of row " + std::to_string(order_[k]) + " hashed to a point of small order");
      });
}

PsiParty::~PsiParty() { crypto::wipe(scalar_.data(), scalar_.size()); }

std::vector<std::uint8_t> PsiParty::reblind(const std::uint8_t* points, std::size_t bytes) const {
  if (bytes % kPointBytes != 0)
    throw ProtocolError("PSI: round 1 of " + std::to_string(bytes) + " bytes is not a whole number of " +
                        std::to_string(kPointBytes) + "-byte points");
  const std::size_t n = bytes / kPointBytes;
  if (n > options_.max_ids)
    throw ProtocolError("PSI: round 1 carries " + std::to_string(n) + " points, more than the limit of " +
                        std::to_string(options_.max_ids));
  for (std::size_t k = 0; k < n; ++k)
    if (!canonical(points + k * kPointBytes))
      throw ProtocolError("PSI: point " + std::to_string(k) + " of round 1 is not a canonical X25519 encoding");
  std::vector<std::uint8_t> tags(n * kTagBytes);
  parallel(
      n, options_.threads, [&] { return Curve(scalar_); },
      [&](Curve& c, std::size_t k) {
        const std::uint8_t* u = points + k * kPointBytes;
        const int on = field25519::curve_or_twist(u);
        if (on < 0) throw ProtocolError("PSI: point " + std::to_string(k) + " of round 1 is not on the curve (it is on the twist)");
        Point twice;
        if (on == 0 || !c.mul(u, twice.data()))
          throw ProtocolError("PSI: point " + std::to_string(k) + " of round 1 has small order");
        const Tag t = tag_of(twice.data());
        std::memcpy(tags.data() + k * kTagBytes, t.data(), kTagBytes);
      });
  // Each ID is blinded once: equal tags mean a point repeated, or repeated up to a point of
  // small order (P and P + T have different u but the same multiple by a clamped scalar).
  auto sorted = as_arrays<kTagBytes>(tags.data(), n);
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
    throw ProtocolError("PSI: round 1 repeats a point (each ID is blinded once)");
  return tags;
}

void PsiParty::check_returned(std::size_t bytes) const {
  const std::size_t want = blinded_.size() / kPointBytes * kTagBytes;
  if (bytes != want)
    throw ProtocolError("PSI: round 2 of " + std::to_string(bytes) + " bytes, expected " + std::to_string(want) +
                        " (one " + std::to_string(kTagBytes) + "-byte tag per point sent)");
}

namespace {

std::vector<Tag> sorted_tags(const std::uint8_t* data, std::size_t bytes, std::size_t max_ids) {
  if (bytes % kTagBytes != 0 || bytes / kTagBytes > max_ids)
    throw ProtocolError("PSI: " + std::to_string(bytes) + " bytes of tags: not a whole number of " +
                        std::to_string(kTagBytes) + "-byte tags within the limit of " + std::to_string(max_ids));
  auto tags = as_arrays<kTagBytes>(data, bytes / kTagBytes);
  std::sort(tags.begin(), tags.end());
  return tags;
}

bool contains(const std::vector<Tag>& sorted, const std::uint8_t* tag) {
  Tag t;
  std::memcpy(t.data(), tag, kTagBytes);
  return std::binary_search(sorted.begin(), sorted.end(), t);
}

}  // namespace

std::vector<std::size_t> PsiParty::intersect(const std::uint8_t* returned, std::size_t returned_bytes,
                                             const std::uint8_t* peer_tags, std::size_t peer_tag_bytes) const {
  check_returned(returned_bytes);
  const auto theirs = sorted_tags(peer_tags, peer_tag_bytes, options_.max_ids);
  std::vector<std::size_t> common;
  for (std::size_t k = 0; k < order_.size(); ++k)
    if (contains(theirs, returned + k * kTagBytes)) common.push_back(order_[k]);
  std::sort(common.begin(), common.end());
  return common;
}

std::vector<std::uint32_t> PsiParty::positions_of(const std::vector<std::size_t>& mine, const std::uint8_t* returned,
                                                  std::size_t returned_bytes, const std::uint8_t* peer_tags,
                                                  std::size_t peer_tag_bytes) const {
  check_returned(returned_bytes);
  std::vector<std::uint32_t> slot(ids_.size());  // ids_ index -> its place in round 1
  for (std::size_t k = 0; k < order_.size(); ++k) slot[order_[k]] = static_cast<std::uint32_t>(k);
  std::vector<std::uint8_t> chosen;
  chosen.reserve(mine.size() * kTagBytes);
  for (const auto i : mine) {
    if (i >= ids_.size()) throw InternalError("PsiParty::positions_of: index " + std::to_string(i) + " out of range");
    const auto* t = returned + std::size_t{slot[i]} * kTagBytes;
    chosen.insert(chosen.end(), t, t + kTagBytes);
  }
  const auto wanted = sorted_tags(chosen.data(), chosen.size(), options_.max_ids);
  if (peer_tag_bytes % kTagBytes != 0) throw ProtocolError("PSI: peer tags are not whole tags");
  std::vector<std::uint32_t> out;
  for (std::size_t p = 0; p < peer_tag_bytes / kTagBytes; ++p)
    if (contains(wanted, peer_tags + p * kTagBytes)) out.push_back(static_cast<std::uint32_t>(p));
  return out;
}

std::vector<std::size_t> PsiParty::indices_at(const std::vector<std::uint32_t>& positions) const {
  if (positions.size() > order_.size())
    throw ProtocolError("PSI: " + std::to_string(positions.size()) + " positions for this party's " +
                        std::to_string(order_.size()) + " points");
  std::vector<std::size_t> out;
  out.reserve(positions.size());
  for (const auto p : positions) {
    if (p >= order_.size())
      throw ProtocolError("PSI: position " + std::to_string(p) + " is past this party's " +
                          std::to_string(order_.size()) + " points");
    out.push_back(order_[p]);
  }
  std::sort(out.begin(), out.end());
  if (std::adjacent_find(out.begin(), out.end()) != out.end())
    throw ProtocolError("PSI: the coordinator named a position twice");
  return out;
}

std::vector<std::size_t> shared_order(const PsiParty& party, std::vector<std::size_t> common) {
  const auto& ids = party.ids();
  std::sort(common.begin(), common.end(), [&](auto a, auto b) { return ids.at(a) < ids.at(b); });
  return common;
}

Coordination coordinate(const PsiParty& coordinator, const std::vector<std::vector<std::uint8_t>>& round1,
                        const std::vector<std::vector<std::uint8_t>>& round2) {
  const std::size_t k = round1.size();
  if (round2.size() != k) throw InternalError("coordinate: one round 1 and one round 2 per party");
  // Party 0's round 2 for each other party (kept, never sent).
  std::vector<std::vector<std::uint8_t>> kept(k);
  Coordination c;
  c.common.resize(coordinator.ids().size());
  std::iota(c.common.begin(), c.common.end(), std::size_t{0});
  for (std::size_t i = 1; i < k; ++i) {
    kept[i] = coordinator.reblind(round1[i].data(), round1[i].size());
    const auto pair = coordinator.intersect(round2[i].data(), round2[i].size(), kept[i].data(), kept[i].size());
    std::vector<std::size_t> both;
    std::set_intersection(c.common.begin(), c.common.end(), pair.begin(), pair.end(), std::back_inserter(both));
    c.common.swap(both);
  }
  c.positions.resize(k);
  for (std::size_t i = 1; i < k; ++i)
    c.positions[i] =
        coordinator.positions_of(c.common, round2[i].data(), round2[i].size(), kept[i].data(), kept[i].size());
  return c;
}

std::vector<std::vector<std::size_t>> align(const std::vector<PsiParty*>& parties) {
  if (parties.empty()) return {};
  PsiParty& coordinator = *parties[0];
  const std::size_t k = parties.size();
  std::vector<std::vector<std::uint8_t>> round1(k), round2(k);
  for (std::size_t i = 1; i < k; ++i) {
    round1[i] = parties[i]->blinded();
    round2[i] = parties[i]->reblind(coordinator.blinded().data(), coordinator.blinded().size());
  }
  const auto c = coordinate(coordinator, round1, round2);
  std::vector<std::vector<std::size_t>> out(k);
  out[0] = shared_order(coordinator, c.common);
  for (std::size_t i = 1; i < k; ++i) out[i] = shared_order(*parties[i], parties[i]->indices_at(c.positions[i]));
  return out;
}

}  // namespace cutlayer::vertical
