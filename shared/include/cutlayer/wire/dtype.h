// Element types on the wire and their mapping to LibTorch scalar types.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace cutlayer::wire {

enum class DType : std::uint8_t {
  kFloat32 = 1,
  kFloat64 = 2,
  kFloat16 = 3,
  kBFloat16 = 4,
  kInt8 = 5,
  kUInt8 = 6,
  kInt16 = 7,
  kInt32 = 8,
  kInt64 = 9,
  kBool = 10,
};

// True when `code` names a DType this version understands.
bool is_valid_dtype(std::uint8_t code);
std::size_t dtype_size(DType t);
std::string_view dtype_name(DType t);
DType from_torch(c10::ScalarType t);  // throws ProtocolError for unsupported types
c10::ScalarType to_torch(DType t);

}  // namespace cutlayer::wire
