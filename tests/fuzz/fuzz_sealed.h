// The sealed_open target's fixed session, and the client side of its sealing done by hand:
// the same HKDF-SHA256 derivation and nonce layout as shared/src/sealed_channel.cpp, frame
// by frame, so the fuzzer can hand in plaintext. cutlayer_fuzz_regressions checks that
// this sealer and SealedChannel::seal produce the same frames: change both together.
#pragma once

#include <zmq.hpp>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cutlayer/crypto/aead.h"
#include "cutlayer/crypto/crypto.h"
#include "cutlayer/wire/envelope.h"

namespace cutlayer::fuzz {

constexpr std::uint64_t kFuzzSession = 0x1122334455667788ull;

inline std::array<std::uint8_t, 32> fuzz_secret() {
  std::array<std::uint8_t, 32> s{};
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<std::uint8_t>(0xa0 + i);
  return s;
}

class ClientSealer {
 public:
  ClientSealer() : aead_(derive()) {}

  // Frames 1.. become ciphertext ‖ tag under the nonce (frame index ‖ the envelope's
  // sequence) with the envelope as associated data. Only when frame 0 is an envelope's size.
  void seal_in_place(std::vector<zmq::message_t>& frames) {
    if (frames.empty() || frames[0].size() != wire::Envelope::kBytes) return;
    const auto* env = frames[0].data<std::uint8_t>();
    for (std::size_t i = 1; i < frames.size(); ++i) {
      const std::size_t n = frames[i].size();
      zmq::message_t out(n + crypto::Aead::kTagBytes);
      crypto::Aead::Nonce nonce{};
      const auto index = static_cast<std::uint32_t>(i);
      std::memcpy(nonce.data(), &index, 4);
      std::memcpy(nonce.data() + 4, env + 24, 8);
      auto* o = out.data<std::uint8_t>();
      aead_.seal(nonce, env, wire::Envelope::kBytes, frames[i].data(), n, o, o + n);
      frames[i] = std::move(out);
    }
  }

 private:
  static crypto::Aead::Key derive() {
    const auto secret = fuzz_secret();
    std::string info = "cutlayer v1 c2s ";
    const std::uint64_t session = kFuzzSession;
    info.append(reinterpret_cast<const char*>(&session), sizeof session);
    auto bytes = crypto::hkdf_sha256(secret.data(), secret.size(), "cutlayer sealed channel", info, 32);
    crypto::Aead::Key key{};
    std::memcpy(key.data(), bytes.data(), key.size());
    return key;
  }
  crypto::Aead aead_;
};

}  // namespace cutlayer::fuzz
