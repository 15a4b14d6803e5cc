// Message types. New types are appended; a number is never reused.
#pragma once

#include <cstdint>
#include <string_view>

namespace cutlayer::wire {

enum class MsgType : std::uint16_t {
  kJoin = 1,
  kJoinAck = 2,
  kLeave = 3,
  kHeartbeat = 4,
  kError = 5,
  kActivations = 6,
  kCutGrad = 7,
  kSparseGrad = 8,
  kUpdate = 9,
  kModelSnapshot = 10,
  kEvalRequest = 11,  // reserved, never sent: evaluation travels as Activations{train=false}
  kEvalResult = 12,
  kProbe = 13,       // a client's link self-check: tensors the server echoes back
  kProbeReply = 14,
  kServerActivations = 15,  // U-shaped: the server's output activations for the head
  kHeadGrad = 16,           // U-shaped: dL/d(server output) from the client's head
  kSyncReject = 17,         // aggregation: a contribution the server did not use
  kSnapshotRequest = 18,    // aggregation: a joined client asks for the current front
  kPsi = 19,                // vertical: a private-set-intersection round, relayed by the server
};
constexpr std::uint16_t kMaxMsgType = 19;

bool is_valid_msg_type(std::uint16_t code);
std::string_view msg_type_name(MsgType t);

}  // namespace cutlayer::wire
