// A decoded or to-be-encoded message: its type, the serialized type-specific meta struct,
// and its tensors.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cutlayer/wire/msg_type.h"

namespace cutlayer::wire {

struct Message {
  MsgType type = MsgType::kHeartbeat;
  std::string meta;                    // PortableBinary of the type's struct
  std::vector<torch::Tensor> tensors;  // CPU, contiguous after decode
  std::uint64_t session_id = 0;        // filled on receive
  std::uint64_t sequence = 0;          // filled on receive
};

// Serializes `meta` (a struct from messages.h) into a Message with the given tensors.
template <class M>
Message make_message(const M& meta, std::vector<torch::Tensor> tensors = {});

// Parses the message's meta as M; throws ProtocolError when the type differs or the
// bytes do not parse (a peer's input).
template <class M>
M meta_as(const Message& msg);

}  // namespace cutlayer::wire

#include "cutlayer/wire/message_impl.h"
