// wire/envelope.h: the 32-byte envelope every message starts with.
#include "cutlayer/wire/envelope.h"

#include <cstring>
#include <string>

#include "cutlayer/error.h"
#include "cutlayer/wire/msg_type.h"

namespace cutlayer::wire {

namespace {
template <class T>
void put(std::uint8_t*& p, T v) {
  std::memcpy(p, &v, sizeof v);
  p += sizeof v;
}
template <class T>
T get(const std::uint8_t*& p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  p += sizeof v;
  return v;
}
}  // namespace

Envelope::Bytes Envelope::serialize() const {
  Bytes b{};
  std::uint8_t* p = b.data();
  put<std::uint32_t>(p, kMagic);
  put<std::uint16_t>(p, kVersion);
  put<std::uint16_t>(p, static_cast<std::uint16_t>(type));
  put<std::uint32_t>(p, flags);
  put<std::uint32_t>(p, frame_count);
  put<std::uint64_t>(p, session_id);
  put<std::uint64_t>(p, sequence);
  return b;
}

Envelope Envelope::parse(const void* data, std::size_t n) {
  if (n != kBytes)
    throw ProtocolError("envelope is " + std::to_string(n) + " bytes, expected " +
                        std::to_string(kBytes));
  const auto* p = static_cast<const std::uint8_t*>(data);
  if (get<std::uint32_t>(p) != kMagic) throw ProtocolError("bad magic: not a cutlayer message");
  const auto version = get<std::uint16_t>(p);
  if (version != kVersion)
    throw ProtocolError("protocol version " + std::to_string(version) +
                        " not supported (this is version " + std::to_string(kVersion) +
                        "): both ends need a cutlayer build with the same wire format");
  const auto type = get<std::uint16_t>(p);
  if (!is_valid_msg_type(type))
    throw ProtocolError("unknown message type " + std::to_string(type));
  Envelope e;
  e.type = static_cast<MsgType>(type);
  e.flags = get<std::uint32_t>(p);
  if ((e.flags & ~std::uint32_t{kFlagSealed}) != 0)
    throw ProtocolError("unknown envelope flags " + std::to_string(e.flags));
  e.frame_count = get<std::uint32_t>(p);
  e.session_id = get<std::uint64_t>(p);
  e.sequence = get<std::uint64_t>(p);
  return e;
}

}  // namespace cutlayer::wire
