// wire_decode: one message's frames (the container in fuzz_common.h) through the plain
// codec: parse_envelope (size, magic, version, type, flags, frame count), then
// decode_body (meta limits, tensor descriptors, every frame's size from shape x dtype,
// aliasing or assembling the tensors), then the type's meta struct (meta_as, bounded
// strings and vectors). Refusal is ProtocolError. An accepted message must hold readable,
// contiguous tensors that outlive its frames, encode back to frames that decode to the
// same message, and a meta that serializes back to its own bytes.
#include <torch/torch.h>

#include "cutlayer/error.h"
#include "frame_codec.h"
#include "fuzz_common.h"

namespace cutlayer::fuzz::wire_decode {

int fuzz_one(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  FillBudget budget;
  auto frames = read_frames(in, budget);
  const auto limits = fuzz_limits();
  wire::Message msg;
  try {
    msg = wire::decode(frames, limits);
  } catch (const ProtocolError&) {
    return 0;
  }
  frames.clear();  // the tensors that alias frames must keep them alive
  check_tensors(msg);
  exercise_meta(msg);

  // Round trip: the same message again, through encode and decode.
  wire::PlainCodec plain;
  auto again = wire::encode(msg, msg.session_id, msg.sequence, plain);
  wire::Message back;
  try {
    back = wire::decode(again, limits);
  } catch (const ProtocolError& e) {
    throw Finding(std::string("an accepted message re-encoded is refused: ") + e.what());
  }
  check(back.type == msg.type && back.session_id == msg.session_id &&
            back.sequence == msg.sequence && back.meta == msg.meta,
        "re-encoded message differs (type, session, sequence or meta)");
  check(back.tensors.size() == msg.tensors.size(), "re-encoded message has another tensor count");
  for (std::size_t i = 0; i < msg.tensors.size(); ++i) {
    const auto& a = msg.tensors[i];
    const auto& b = back.tensors[i];
    check(a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes(),
          "re-encoded tensor " + std::to_string(i) + " changed dtype or shape");
    check(a.nbytes() == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0,
          "re-encoded tensor " + std::to_string(i) + " changed bytes");
  }
  return 0;
}

}  // namespace cutlayer::fuzz::wire_decode

CUTLAYER_FUZZ_ENTRY(wire_decode)
