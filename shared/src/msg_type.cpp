// wire/msg_type.h: the message type codes and their names.
#include "cutlayer/wire/msg_type.h"

namespace cutlayer::wire {

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
    case MsgType::kPsi: return "Psi";
  }
  return "Unknown";
}

}  // namespace cutlayer::wire
