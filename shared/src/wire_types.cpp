#include "cutlayer/error.h"
#include "cutlayer/wire/dtype.h"
#include "cutlayer/wire/envelope.h"
#include "cutlayer/wire/msg_type.h"

#include <cstring>
#include <string>

namespace cutlayer::wire {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the wire format is little-endian and frames are used in place");

bool is_valid_dtype(std::uint8_t code) { return code >= 1 && code <= 10; }

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::kFloat64:
    case DType::kInt64:
      return 8;
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16:
      return 2;
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kBool:
      return 1;
  }
  throw ProtocolError("unknown dtype code " + std::to_string(static_cast<int>(t)));
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kBool: return "bool";
  }
  return "unknown";
}

DType from_torch(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float: return DType::kFloat32;
    case c10::ScalarType::Double: return DType::kFloat64;
    case c10::ScalarType::Half: return DType::kFloat16;
    case c10::ScalarType::BFloat16: return DType::kBFloat16;
    case c10::ScalarType::Char: return DType::kInt8;
    case c10::ScalarType::Byte: return DType::kUInt8;
    case c10::ScalarType::Short: return DType::kInt16;
    case c10::ScalarType::Int: return DType::kInt32;
    case c10::ScalarType::Long: return DType::kInt64;
    case c10::ScalarType::Bool: return DType::kBool;
    default:
      throw ProtocolError(std::string("tensor dtype ") + c10::toString(t) +
                          " cannot be sent; convert it to a supported type first");
  }
}

c10::ScalarType to_torch(DType t) {
  switch (t) {
    case DType::kFloat32: return c10::ScalarType::Float;
    case DType::kFloat64: return c10::ScalarType::Double;
    case DType::kFloat16: return c10::ScalarType::Half;
    case DType::kBFloat16: return c10::ScalarType::BFloat16;
    case DType::kInt8: return c10::ScalarType::Char;
    case DType::kUInt8: return c10::ScalarType::Byte;
    case DType::kInt16: return c10::ScalarType::Short;
    case DType::kInt32: return c10::ScalarType::Int;
    case DType::kInt64: return c10::ScalarType::Long;
    case DType::kBool: return c10::ScalarType::Bool;
  }
  throw ProtocolError("unknown dtype code " + std::to_string(static_cast<int>(t)));
}

bool is_valid_msg_type(std::uint16_t code) { return code >= 1 && code <= kMaxMsgType; }

std::string_view msg_type_name(MsgType t) {
  switch (t) {
    case MsgType::kJoin: return "Join";
    case MsgType::kJoinAck: return "JoinAck";
    case MsgType::kLeave: return "Leave";
    case MsgType::kHeartbeat: return "Heartbeat";
    case MsgType::kError: return "Error";
    case MsgType::kActivations: return "Activations";
    case MsgType::kCutGrad: return "CutGrad";
    case MsgType::kSparseGrad: return "SparseGrad";
    case MsgType::kUpdate: return "Update";
    case MsgType::kModelSnapshot: return "ModelSnapshot";
    case MsgType::kEvalRequest: return "EvalRequest";
    case MsgType::kEvalResult: return "EvalResult";
    case MsgType::kProbe: return "Probe";
    case MsgType::kProbeReply: return "ProbeReply";
    case MsgType::kServerActivations: return "ServerActivations";
    case MsgType::kHeadGrad: return "HeadGrad";
    case MsgType::kSyncReject: return "SyncReject";
    case MsgType::kSnapshotRequest: return "SnapshotRequest";
  }
  return "Unknown";
}

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
    throw ProtocolError("protocol version " + std::to_string(version) + " not supported (this is " +
                        std::to_string(kVersion) + ")");
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
