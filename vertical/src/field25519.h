// Internal: whether an X25519 u-coordinate names a point of the curve itself (not of its
// quadratic twist): u^3 + A u^2 + u (A = 486662) is a square mod p = 2^255 - 19. OpenSSL
// does the curve arithmetic; this is the one field computation it does not offer (its
// BN_kronecker takes ~18 µs, this ~4 µs): Euler's criterion, v^((p-1)/2), with ref10's
// addition chain. Radix 2^51, five limbs. The inputs are public or the caller's own
// hashes, so it need not run in constant time.
#pragma once

#include <cstdint>
#include <cstring>

namespace cutlayer::vertical::field25519 {

using u128 = unsigned __int128;
struct Fe {
  std::uint64_t v[5];
};
constexpr std::uint64_t kMask = (std::uint64_t{1} << 51) - 1;

inline Fe from_bytes(const std::uint8_t* s) {  // little-endian, the top bit ignored
  std::uint64_t w[4];
  std::memcpy(w, s, 32);  // x86-64 and every target here are little-endian
  Fe f;
  f.v[0] = w[0] & kMask;
  f.v[1] = ((w[0] >> 51) | (w[1] << 13)) & kMask;
  f.v[2] = ((w[1] >> 38) | (w[2] << 26)) & kMask;
  f.v[3] = ((w[2] >> 25) | (w[3] << 39)) & kMask;
  f.v[4] = (w[3] >> 12) & kMask;
  return f;
}

inline Fe carry(const u128 t[5]) {
  Fe r;
  u128 c = 0;
  std::uint64_t out[5];
  for (int i = 0; i < 5; ++i) {
    const u128 x = t[i] + c;
    out[i] = static_cast<std::uint64_t>(x) & kMask;
    c = x >> 51;
  }
  // 2^255 = 19 (mod p): the carry out of limb 4 comes back into limb 0.
  u128 x = u128{out[0]} + c * 19;
  r.v[0] = static_cast<std::uint64_t>(x) & kMask;
  x = u128{out[1]} + (x >> 51);
  r.v[1] = static_cast<std::uint64_t>(x) & kMask;
  r.v[2] = out[2] + static_cast<std::uint64_t>(x >> 51);
  r.v[3] = out[3];
  r.v[4] = out[4];
  return r;
}

inline Fe mul(const Fe& a, const Fe& b) {
  const std::uint64_t* f = a.v;
  const std::uint64_t* g = b.v;
  const std::uint64_t g1 = 19 * g[1], g2 = 19 * g[2], g3 = 19 * g[3], g4 = 19 * g[4];
  u128 t[5];
  t[0] = u128{f[0]} * g[0] + u128{f[1]} * g4 + u128{f[2]} * g3 + u128{f[3]} * g2 + u128{f[4]} * g1;
  t[1] = u128{f[0]} * g[1] + u128{f[1]} * g[0] + u128{f[2]} * g4 + u128{f[3]} * g3 + u128{f[4]} * g2;
  t[2] = u128{f[0]} * g[2] + u128{f[1]} * g[1] + u128{f[2]} * g[0] + u128{f[3]} * g4 + u128{f[4]} * g3;
  t[3] = u128{f[0]} * g[3] + u128{f[1]} * g[2] + u128{f[2]} * g[1] + u128{f[3]} * g[0] + u128{f[4]} * g4;
  t[4] = u128{f[0]} * g[4] + u128{f[1]} * g[3] + u128{f[2]} * g[2] + u128{f[3]} * g[1] + u128{f[4]} * g[0];
  return carry(t);
}

inline Fe square(const Fe& a) {  // mul(a, a) in 15 products instead of 25
  const std::uint64_t* f = a.v;
  const std::uint64_t d0 = 2 * f[0], d1 = 2 * f[1], d2 = 2 * f[2];
  const std::uint64_t f3_19 = 19 * f[3], f4_19 = 19 * f[4];
  u128 t[5];
  t[0] = u128{f[0]} * f[0] + u128{d1} * f4_19 + u128{d2} * f3_19;
  t[1] = u128{d0} * f[1] + u128{d2} * f4_19 + u128{f[3]} * f3_19;
  t[2] = u128{d0} * f[2] + u128{f[1]} * f[1] + u128{2 * f[3]} * f4_19;
  t[3] = u128{d0} * f[3] + u128{d1} * f[2] + u128{f[4]} * f4_19;
  t[4] = u128{d0} * f[4] + u128{d1} * f[3] + u128{f[2]} * f[2];
  return carry(t);
}

inline Fe sq(const Fe& a, int times = 1) {
  Fe r = a;
  for (int i = 0; i < times; ++i) r = square(r);
  return r;
}

inline Fe add(const Fe& a, const Fe& b) {
  Fe r;
  for (int i = 0; i < 5; ++i) r.v[i] = a.v[i] + b.v[i];  // < 2^53: fine as a mul input
  return r;
}

inline Fe small(std::uint64_t x) { return Fe{{x & kMask, x >> 51, 0, 0, 0}}; }

// The unique representative in [0, p), as four 64-bit words.
inline void to_words(Fe f, std::uint64_t w[4]) {
  for (int round = 0; round < 2; ++round) {  // every limb < 2^51 (the value < 2^255)
    for (int i = 0; i < 4; ++i) {
      f.v[i + 1] += f.v[i] >> 51;
      f.v[i] &= kMask;
    }
    f.v[0] += 19 * (f.v[4] >> 51);
    f.v[4] &= kMask;
  }
  // Subtract p when f >= p: f + 19 reaches 2^255 exactly then.
  std::uint64_t q = (f.v[0] + 19) >> 51;
  for (int i = 1; i < 5; ++i) q = (f.v[i] + q) >> 51;
  f.v[0] += 19 * q;
  for (int i = 0; i < 4; ++i) {
    f.v[i + 1] += f.v[i] >> 51;
    f.v[i] &= kMask;
  }
  f.v[4] &= kMask;
  w[0] = f.v[0] | (f.v[1] << 51);
  w[1] = (f.v[1] >> 13) | (f.v[2] << 38);
  w[2] = (f.v[2] >> 26) | (f.v[3] << 25);
  w[3] = (f.v[3] >> 39) | (f.v[4] << 12);
}

// z^((p-1)/2) = z^(2^254 - 10) = (z^(2^252 - 3))^4 * z^2 (ref10's fe_pow22523 chain).
inline Fe euler(const Fe& z) {
  Fe t0 = sq(z);                    // z^2
  Fe t1 = mul(z, sq(t0, 2));        // z^9
  t0 = mul(t0, t1);                 // z^11
  t0 = mul(t1, sq(t0));             // z^31 = z^(2^5 - 1)
  t0 = mul(sq(t0, 5), t0);          // 2^10 - 1
  t1 = mul(sq(t0, 10), t0);         // 2^20 - 1
  t1 = mul(sq(t1, 20), t1);         // 2^40 - 1
  t0 = mul(sq(t1, 10), t0);         // 2^50 - 1
  t1 = mul(sq(t0, 50), t0);         // 2^100 - 1
  t1 = mul(sq(t1, 100), t1);        // 2^200 - 1
  t0 = mul(sq(t1, 50), t0);         // 2^250 - 1
  const Fe p22523 = mul(sq(t0, 2), z);  // 2^252 - 3
  return mul(sq(p22523, 2), sq(z));     // 2^254 - 12 + 2
}

// +1: u is on the curve (v a non-zero square); -1: on the twist; 0: v = 0 (u of order 2).
inline int curve_or_twist(const std::uint8_t* u_bytes) {
  const Fe u = from_bytes(u_bytes);
  const Fe v = mul(u, add(mul(u, add(u, small(486662))), small(1)));  // u (u (u + A) + 1)
  std::uint64_t w[4];
  to_words(v, w);
  if ((w[0] | w[1] | w[2] | w[3]) == 0) return 0;
  to_words(euler(v), w);
  return w[0] == 1 && (w[1] | w[2] | w[3]) == 0 ? 1 : -1;
}

}  // namespace cutlayer::vertical::field25519
