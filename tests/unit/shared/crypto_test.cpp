#include <gtest/gtest.h>

#include <vector>

#include "cutlayer/crypto/aead.h"
#include "cutlayer/crypto/crypto.h"

namespace cutlayer::crypto {
namespace {

Bytes from_hex(const std::string& h) {
  Bytes b;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    b.push_back(static_cast<std::uint8_t>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return b;
}

TEST(Crypto, Sha256KnownAnswer) {
  const auto d = sha256("abc", 3);
  EXPECT_EQ(to_hex(d.data(), d.size()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Crypto, HkdfRfc5869TestCase1) {
  const Bytes ikm(22, 0x0b);
  const Bytes salt = from_hex("000102030405060708090a0b0c");
  const Bytes info = from_hex("f0f1f2f3f4f5f6f7f8f9");
  const auto okm = hkdf_sha256(ikm.data(), ikm.size(),
                               std::string_view(reinterpret_cast<const char*>(salt.data()), salt.size()),
                               std::string_view(reinterpret_cast<const char*>(info.data()), info.size()), 42);
  EXPECT_EQ(to_hex(okm.data(), okm.size()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
}

TEST(Crypto, AesGcmKnownAnswer) {
  // McGrew & Viega, GCM spec test case 16 (AES-256, 60-byte plaintext, 20-byte AAD).
  Aead::Key key{};
  const auto k = from_hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
  std::copy(k.begin(), k.end(), key.begin());
  Aead::Nonce iv{};
  const auto n = from_hex("cafebabefacedbaddecaf888");
  std::copy(n.begin(), n.end(), iv.begin());
  const auto pt = from_hex(
      "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b5"
      "25b16aedf5aa0de657ba637b39");
  const auto aad = from_hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
  Aead aead(key);
  Bytes ct(pt.size());
  std::uint8_t tag[16];
  aead.seal(iv, aad.data(), aad.size(), pt.data(), pt.size(), ct.data(), tag);
  EXPECT_EQ(to_hex(ct.data(), ct.size()),
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b10"
            "56828838c5f61e6393ba7a0abcc9f662");
  EXPECT_EQ(to_hex(tag, 16), "76fc6ece0f4e1768cddf8853bb2d551b");
}

TEST(Crypto, AeadOpensInPlaceAndRejectsTampering) {
  Aead::Key key{};
  random_bytes(key.data(), key.size());
  Aead aead(key);
  Aead::Nonce nonce{};
  random_bytes(nonce.data(), nonce.size());
  Bytes msg(1000);
  random_bytes(msg.data(), msg.size());
  const Bytes original = msg;
  const std::string aad = "envelope";
  std::uint8_t tag[16];
  aead.seal(nonce, aad.data(), aad.size(), msg.data(), msg.size(), msg.data(), tag);  // in place
  EXPECT_NE(msg, original);

  Bytes copy = msg;
  ASSERT_TRUE(aead.open(nonce, aad.data(), aad.size(), copy.data(), copy.size(), copy.data(), tag));
  EXPECT_EQ(copy, original);

  copy = msg;
  copy[500] ^= 1;
  EXPECT_FALSE(aead.open(nonce, aad.data(), aad.size(), copy.data(), copy.size(), copy.data(), tag));
  copy = msg;
  const std::string other_aad = "envelopf";
  EXPECT_FALSE(aead.open(nonce, other_aad.data(), other_aad.size(), copy.data(), copy.size(),
                         copy.data(), tag));
  copy = msg;
  Aead::Nonce other = nonce;
  other[0] ^= 1;
  EXPECT_FALSE(aead.open(other, aad.data(), aad.size(), copy.data(), copy.size(), copy.data(), tag));
  copy = msg;
  tag[15] ^= 0x80;
  EXPECT_FALSE(aead.open(nonce, aad.data(), aad.size(), copy.data(), copy.size(), copy.data(), tag));
}

}  // namespace
}  // namespace cutlayer::crypto
