#include "sealed_channel.h"

#include <openssl/crypto.h>

#include <cstring>
#include <string>

#include "cutlayer/crypto/crypto.h"
#include "frame_pool.h"

namespace cutlayer::transport {
namespace {

constexpr std::size_t kSequenceOffset = 24;  // in the serialized envelope

// An AEAD context keyed with HKDF-SHA256(secret, session, direction). The key passes
// through two buffers here (the HKDF output and the Key array); both are wiped before
// returning, so afterwards it lives only in the context (OpenSSL wipes that when the
// context is freed: EVP_CIPHER_CTX_free clears the cipher's key schedule).
crypto::Aead keyed_aead(const SessionSecret& secret, std::uint64_t session_id,
                        const char* direction) {
  std::string info = std::string("cutlayer v1 ") + direction + " ";
  info.append(reinterpret_cast<const char*>(&session_id), sizeof session_id);
  auto bytes =
      crypto::hkdf_sha256(secret.data(), secret.size(), "cutlayer sealed channel", info, 32);
  crypto::Aead::Key key{};
  std::memcpy(key.data(), bytes.data(), key.size());
  OPENSSL_cleanse(bytes.data(), bytes.size());
  struct Wipe {
    crypto::Aead::Key& k;
    ~Wipe() { OPENSSL_cleanse(k.data(), k.size()); }
  } wipe{key};  // also when the context cannot be made
  return crypto::Aead(key);
}

crypto::Aead::Nonce make_nonce(const wire::Envelope::Bytes& env, std::uint32_t index) {
  crypto::Aead::Nonce n{};
  std::memcpy(n.data(), &index, 4);
  std::memcpy(n.data() + 4, env.data() + kSequenceOffset, 8);
  return n;
}

}  // namespace

SealedChannel::SealedChannel(std::uint64_t session_id, const SessionSecret& secret, Side side)
    : session_id_(session_id),
      tx_(keyed_aead(secret, session_id, side == Side::kClient ? "c2s" : "s2c")),
      rx_(keyed_aead(secret, session_id, side == Side::kClient ? "s2c" : "c2s")) {}

zmq::message_t SealedChannel::Codec::make_frame(const wire::Envelope::Bytes& env,
                                                std::uint32_t index, const void* data,
                                                std::size_t n, const torch::Tensor*) {
  // Seal straight into the outgoing frame: ciphertext ‖ tag.
  zmq::message_t frame = detail::FramePool::instance().make(n + crypto::Aead::kTagBytes);
  auto* out = frame.data<std::uint8_t>();
  aead_.seal(make_nonce(env, index), env.data(), env.size(), data, n, out, out + n);
  return frame;
}

bool SealedChannel::Codec::open_frame(const wire::Envelope::Bytes& env, std::uint32_t index,
                                      zmq::message_t& frame) {
  if (frame.size() < crypto::Aead::kTagBytes) return false;
  const std::size_t n = frame.size() - crypto::Aead::kTagBytes;
  auto* p = frame.data<std::uint8_t>();
  const bool ok = aead_.open(make_nonce(env, index), env.data(), env.size(), p, n, p, p + n);
  if (ok && index == 1) meta_opened = true;
  return ok;
}

bool SealedChannel::Codec::open_frame_into(const wire::Envelope::Bytes& env, std::uint32_t index,
                                           const zmq::message_t& frame, void* out) {
  // Out of place: a chunk decrypted straight into its slot of the tensor's buffer.
  if (frame.size() < crypto::Aead::kTagBytes) return false;
  const std::size_t n = frame.size() - crypto::Aead::kTagBytes;
  const auto* p = frame.data<std::uint8_t>();
  const bool ok = aead_.open(make_nonce(env, index), env.data(), env.size(), p, n, out, p + n);
  if (ok && index == 1) meta_opened = true;
  return ok;
}

std::vector<zmq::message_t> SealedChannel::seal(const wire::Message& msg) {
  return wire::encode(msg, session_id_, next_tx_seq_++, tx_);
}

wire::Message SealedChannel::open(const wire::Envelope& env, std::vector<zmq::message_t>& frames,
                                  const wire::Limits& limits, bool& authenticated) {
  authenticated = false;
  if (env.session_id != session_id_)
    throw ProtocolError("message for session " + std::to_string(env.session_id) +
                        " offered to session " + std::to_string(session_id_));
  if (!env.sealed()) throw ProtocolError("unsealed message on the sealed channel");
  if (env.sequence <= last_rx_seq_)
    throw ReplayError("sequence " + std::to_string(env.sequence) + " is not above " +
                      std::to_string(last_rx_seq_) + " (replayed or reordered)");
  rx_.meta_opened = false;
  try {
    wire::Message msg = wire::decode_body(env, frames, limits, rx_);
    authenticated = true;
    last_rx_seq_ = env.sequence;
    return msg;
  } catch (...) {
    // An authentic but malformed message still consumes its sequence number.
    authenticated = rx_.meta_opened;
    if (authenticated) last_rx_seq_ = env.sequence;
    throw;
  }
}

}  // namespace cutlayer::transport
