// sealed_open: up to four messages offered, in order, to one server-side SealedChannel
// (fixed test secret and session), each first through parse_envelope as the server does.
// A message is either taken as it is (ciphertext from the input: the seeds are real
// sealed messages) or, when its first byte says so, sealed here: frames 1.. of the input
// are plaintext that the harness seals under the client's key for the nonce and
// associated data the envelope gives, so that the fuzzer reaches everything behind the
// tags (meta limits, tensor frames, chunk assembly) and not only their failure.
//   input := message{0..4},  message := u8 mode (bit 0: seal here), frames (fuzz_common.h)
// Invariants: an accepted message authenticated and moved the sequence to its own; a
// refusal moves it only when the meta authenticated; a replay is refused without
// touching it; a message sealed here never fails authentication.
#include "fuzz_sealed.h"

#include <torch/torch.h>

#include "cutlayer/error.h"
#include "fuzz_common.h"
#include "sealed_channel.h"

namespace cutlayer::fuzz::sealed_open {

int fuzz_one(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  FillBudget budget;
  const auto limits = fuzz_limits();
  transport::SealedChannel channel(kFuzzSession, fuzz_secret(), transport::Side::kServer);
  ClientSealer sealer;
  for (int m = 0; m < 4 && !in.empty(); ++m) {
    const bool seal_here = (in.take<std::uint8_t>() & 1) != 0;
    auto frames = read_frames(in, budget);
    if (seal_here) sealer.seal_in_place(frames);
    wire::Envelope env;
    try {
      env = wire::parse_envelope(frames, limits);
    } catch (const ProtocolError&) {
      continue;
    }
    const std::uint64_t before = channel.last_rx_sequence();
    bool authenticated = false;
    try {
      wire::Message msg = channel.open(env, frames, limits, authenticated);
      check(authenticated, "open() returned a message but says it did not authenticate");
      check(env.sequence > before && channel.last_rx_sequence() == env.sequence,
            "accepted message did not move the sequence to its own");
      frames.clear();
      check_tensors(msg);
      exercise_meta(msg);
    } catch (const transport::ReplayError&) {
      check(env.sequence <= before, "ReplayError for a sequence above the last accepted");
      check(!authenticated && channel.last_rx_sequence() == before,
            "a replay changed the channel's sequence");
    } catch (const AuthError& e) {
      check(!(seal_here && env.session_id == kFuzzSession),
            std::string("a message sealed under the session key failed authentication: ") + e.what());
      check(channel.last_rx_sequence() == (authenticated ? env.sequence : before),
            "sequence moved by a message whose meta did not authenticate");
    } catch (const ProtocolError&) {
      check(channel.last_rx_sequence() == (authenticated ? env.sequence : before),
            "sequence moved by a message whose meta did not authenticate");
    }
  }
  return 0;
}

}  // namespace cutlayer::fuzz::sealed_open

CUTLAYER_FUZZ_ENTRY(sealed_open)
