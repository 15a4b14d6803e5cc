// The small per-type structs carried in a message's meta frame. Tensors travel in their
// own frames; the struct comment says which tensors a message carries, in order.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "cutlayer/wire/bounded.h"
#include "cutlayer/wire/msg_type.h"

namespace cutlayer::wire {

constexpr std::size_t kMaxName = 256;
constexpr std::size_t kMaxText = 4096;
constexpr std::size_t kMaxDims = 8;
constexpr std::size_t kFingerprintHex = 64;  // a SHA-256 in hex
// 2: JoinAck.steps_held, Join.inference; 3: Join's fingerprints; 4: shared K-FAC factors
// (SparseGrad.kfac_tensors, Update.kfac, ModelSnapshot.kfac); 5: Join.cut (compressed cut);
// 6: vertical split learning (Join.vertical_party/vertical_parties, Psi)
constexpr std::uint32_t kProtocolVersion = 6;
constexpr std::uint64_t kStepsUnknown = ~std::uint64_t{0};

// How cut values travel (the client's config "cut"): float32, bfloat16, float16, or int8
// with one float32 scale per sample (value = q * scale, |q| <= 127).
enum class CutValues : std::uint8_t { kFp32 = 0, kBf16 = 1, kFp16 = 2, kInt8 = 3 };

// How a session's cut crosses the wire, both ways (cut/codec.h encodes and decodes it).
// `kept` > 0: only that many of each sample's activations travel (top-k by magnitude), as
// [indices (delta-varint bytes over the batch's flat positions), values [B x kept]], and
// their gradients alone come back as [B x kept]; 0: every activation, [B x cut shape].
// int8 values are followed by their scales, float32 [B].
struct CutCoding {
  CutValues values = CutValues::kFp32;       // activations, client → server
  CutValues grad_values = CutValues::kFp32;  // their gradients, server → client
  std::uint32_t kept = 0;
  bool operator==(const CutCoding& o) const {
    return values == o.values && grad_values == o.grad_values && kept == o.kept;
  }
  template <class A>
  void serialize(A& ar) {
    ar(enum_in(values, CutValues::kInt8, "Join.cut.values"),
       enum_in(grad_values, CutValues::kInt8, "Join.cut.grad_values"), kept);
  }
};

// Client → server over the CURVE front door. No tensors.
struct Join {
  static constexpr MsgType kType = MsgType::kJoin;
  std::uint32_t protocol = kProtocolVersion;
  std::string client_name;            // informational; the server trusts the ZAP user id
  std::string model;                  // model spec name, checked by the server
  std::vector<std::int64_t> cut_shape;  // per-sample cut-layer shape, checked at join
  std::uint64_t samples = 0;          // size of the client's shard
  bool u_shaped = false;
  bool sync = false;                  // the client's front joins the cross-client aggregation
  bool inference = false;             // predictions only: evaluation batches without labels, no training
  // Hex SHA-256 of each part's structure as the client holds it (parameter and buffer names,
  // dtypes, shapes; a TorchScript part's code): the server refuses a front or head that is
  // not its own, and a back the client knows ("" when it holds none) that is not its own.
  std::string front_fingerprint, head_fingerprint, back_fingerprint;
  CutCoding cut;  // how this client's cut travels (the server refuses what it cannot decode)
  // Vertical split learning: this party's index among `vertical_parties` (0: none, a
  // horizontal client); `samples` is then the count of sample IDs it brings to the PSI;
  // `vertical_order` what decides its batch order (every party's must be the same).
  std::uint32_t vertical_party = 0, vertical_parties = 0;
  std::string vertical_order;
  template <class A>
  void serialize(A& ar) {
    ar(protocol, bounded(client_name, kMaxName, "Join.client_name"),
       bounded(model, kMaxName, "Join.model"), bounded(cut_shape, kMaxDims, "Join.cut_shape"),
       samples, flag(u_shaped, "Join.u_shaped"), flag(sync, "Join.sync"), flag(inference, "Join.inference"),
       bounded(front_fingerprint, kFingerprintHex, "Join.front_fingerprint"),
       bounded(head_fingerprint, kFingerprintHex, "Join.head_fingerprint"),
       bounded(back_fingerprint, kFingerprintHex, "Join.back_fingerprint"), cut, vertical_party, vertical_parties,
       bounded(vertical_order, kMaxName, "Join.vertical_order"));
  }
};

// Server → client over the front door: the session and its secret. No tensors.
struct JoinAck {
  static constexpr MsgType kType = MsgType::kJoinAck;
  std::uint64_t session_id = 0;
  std::array<std::uint8_t, 32> secret{};  // HKDF input for the sealed channel keys
  std::uint16_t data_port = 0;
  std::uint32_t heartbeat_ms = 0;
  std::uint32_t session_timeout_ms = 0;
  std::uint64_t round = 0;                // current aggregation round (for joiners)
  // The training steps of this client (by name) the server's back model holds, counted from
  // the client's first step: a client resuming from a checkpoint of a later step goes back
  // to its own checkpoint of this one. kStepsUnknown: the server has none of its steps.
  std::uint64_t steps_held = kStepsUnknown;
  template <class A>
  void serialize(A& ar) {
    ar(session_id, cereal::binary_data(secret.data(), secret.size()), data_port, heartbeat_ms,
       session_timeout_ms, round, steps_held);
  }
};

struct Leave {
  static constexpr MsgType kType = MsgType::kLeave;
  std::string reason;
  template <class A>
  void serialize(A& ar) {
    ar(bounded(reason, kMaxText, "Leave.reason"));
  }
};

struct Heartbeat {
  static constexpr MsgType kType = MsgType::kHeartbeat;
  template <class A>
  void serialize(A&) {}
};

enum class ErrorCode : std::uint16_t {
  kProtocol = 1,      // the peer's message broke the wire protocol
  kRefused = 2,       // join refused (shape, model, version, capacity)
};

struct ErrorMsg {
  static constexpr MsgType kType = MsgType::kError;
  std::uint16_t code = 0;
  std::string message;
  template <class A>
  void serialize(A& ar) {
    ar(code, bounded(message, kMaxText, "Error.message"));
  }
};

// Tensors: z (cut activations: one tensor, or as the session's CutCoding says), then y
// (labels) unless U-shaped. `train` false: an
// evaluation batch (vanilla: answered with EvalResult; U-shaped: ServerActivations, no
// gradient follows); vanilla without labels: a prediction, answered with the logits in a
// ServerActivations.
struct Activations {
  static constexpr MsgType kType = MsgType::kActivations;
  std::uint64_t step = 0;
  bool has_labels = true;
  bool train = true;
  template <class A>
  void serialize(A& ar) {
    ar(step,
       flag(has_labels, "Activations.has_labels"), flag(train, "Activations.train"));
  }
};

// Tensors: dL/dz (one tensor, or as the session's CutCoding says). Vanilla: the batch's loss and correct predictions ride along.
struct CutGrad {
  static constexpr MsgType kType = MsgType::kCutGrad;
  std::uint64_t step = 0;
  float loss = 0.f;
  std::uint32_t correct = 0;
  template <class A>
  void serialize(A& ar) {
    ar(step, loss, correct);
  }
};

// U-shaped. Tensors: h, the server's output for the client's head.
struct ServerActivations {
  static constexpr MsgType kType = MsgType::kServerActivations;
  std::uint64_t step = 0;
  template <class A>
  void serialize(A& ar) {
    ar(step);
  }
};

// U-shaped. Tensors: dL/dh from the client's head.
struct HeadGrad {
  static constexpr MsgType kType = MsgType::kHeadGrad;
  std::uint64_t step = 0;
  template <class A>
  void serialize(A& ar) {
    ar(step);
  }
};

// How a sparse vector travels: tensors [indices, values], or [values] alone when dense.
// Indices are int32/int64 (raw) or uint8 delta+varint bytes; values float32 or float16.
// The header beside kernels' packed tensors (kernels/sparse_codec.h), kept here because
// it is part of the meta's bytes and wire/ cannot see kernels/ (nor kernels/ wire/);
// sync/sparse_wire.h joins the two.
struct SparseLayout {
  std::uint64_t numel = 0;
  bool dense = false;             // one tensor, [values]; index_coding is then 0
  std::uint8_t index_coding = 0;  // kernels::IndexCoding: 0 raw, 1 delta+varint
  template <class A>
  void serialize(A& ar) {
    ar(numel, flag(dense, "SparseLayout.dense"), index_coding);
  }
};

// What a message's trailing K-FAC tensors are (shared factors, docs/kfac.md): per covered
// layer in order, kFactors: A, G; kDecompositions (inverse method): A⁻¹, G⁻¹, (eigen
// method): Q_A, Q_G, 1/(d_G d_Aᵀ + λ).
enum class KfacContent : std::uint8_t { kNone = 0, kFactors = 1, kDecompositions = 2 };

// Client → server: one compressed front-gradient contribution (see SparseLayout). With
// shared K-FAC factors, a factor step's batch factors (A, G per layer) follow the
// gradient's tensors: `kfac_tensors` of them.
struct SparseGrad {
  static constexpr MsgType kType = MsgType::kSparseGrad;
  std::uint64_t seq = 0;      // the client's contribution counter, from 1
  std::uint64_t base = 0;     // the model version (rounds applied) the gradient was computed on
  std::uint64_t samples = 0;  // examples behind it (its weight in the round)
  SparseLayout layout;
  std::uint32_t kfac_tensors = 0;
  template <class A>
  void serialize(A& ar) {
    ar(seq, base, samples, layout, kfac_tensors);
  }
};

// Server → every member: round `round`'s aggregated update (see SparseLayout); applying
// it takes a member's front from version round-1 to round.
struct Update {
  static constexpr MsgType kType = MsgType::kUpdate;
  std::uint64_t round = 0;
  std::uint64_t mine = 0;          // the recipient's contribution (seq) in this round, 0: none
  std::uint32_t contributors = 0;
  std::uint64_t samples = 0;
  double lr = 0;                   // the learning rate to apply it with
  SparseLayout layout;
  // Shared K-FAC: the update's tensors are followed by the aggregation's factors (each
  // member decomposes them) or decompositions (the server's), see KfacContent.
  KfacContent kfac = KfacContent::kNone;
  template <class A>
  void serialize(A& ar) {
    ar(round, mine, contributors, samples, lr, layout,
       enum_in(kfac, KfacContent::kDecompositions, "Update.kfac"));
  }
};

// Server → one member: its contribution `seq` was not used (too stale); with error
// feedback the client puts it back into its residual. No tensors.
struct SyncReject {
  static constexpr MsgType kType = MsgType::kSyncReject;
  std::uint64_t seq = 0;
  std::uint64_t staleness = 0;
  std::string reason;
  template <class A>
  void serialize(A& ar) {
    ar(seq, staleness, bounded(reason, kMaxText, "SyncReject.reason"));
  }
};

// Server → a joining member: the current front (and head) model and the optimizer state
// behind it. Tensors: one per parameter in `names` order, then `state_per_param` state
// tensors per parameter (SGD: momentum; Adam: exp_avg, exp_avg_sq, step) when the
// optimizer has stepped; then, when the aggregation shares K-FAC factors, its last shipped
// factors or decompositions (`kfac`, KfacContent).
struct ModelSnapshot {
  static constexpr MsgType kType = MsgType::kModelSnapshot;
  std::uint64_t round = 0;
  std::vector<std::string> names;
  std::string optimizer;
  std::uint32_t state_per_param = 0;
  std::uint32_t staleness = 0;  // the server's bound s: run at most s contributions ahead
  double momentum = 0, weight_decay = 0;  // the optimizer every member applies updates with
  // The aggregation's K-FAC: "" (none: each member keeps its factors), or how members
  // share them: "members" (the server averages the factors, each member decomposes) or
  // "server" (the server decomposes once); then the method and damping of the decompositions.
  std::string kfac_sharing, kfac_method;
  double kfac_damping = 0;  // λ of the decompositions (members must decompose with the same)
  KfacContent kfac = KfacContent::kNone;
  template <class A>
  void serialize(A& ar) {
    ar(round, bounded(names, 4096, "ModelSnapshot.names"),
       bounded(optimizer, kMaxName, "ModelSnapshot.optimizer"), state_per_param, staleness, momentum,
       weight_decay, bounded(kfac_sharing, kMaxName, "ModelSnapshot.kfac_sharing"),
       bounded(kfac_method, kMaxName, "ModelSnapshot.kfac_method"), kfac_damping,
       enum_in(kfac, KfacContent::kDecompositions, "ModelSnapshot.kfac"));
  }
};

// Client → server once joined, when the client syncs its front: answered with a
// ModelSnapshot, after which the client is a member of the aggregation. No tensors.
struct SnapshotRequest {
  static constexpr MsgType kType = MsgType::kSnapshotRequest;
  template <class A>
  void serialize(A&) {}
};

struct EvalResult {
  static constexpr MsgType kType = MsgType::kEvalResult;
  std::uint64_t id = 0;
  double loss = 0;
  double accuracy = 0;
  std::uint64_t samples = 0;
  template <class A>
  void serialize(A& ar) {
    ar(id, loss, accuracy, samples);
  }
};

// Vertical split learning: one round of the parties' private set intersection
// (vertical/psi.h), relayed by the server between party 0 and another party. From a party
// `peer` is the party it is for, from the server the party it came from. Round 0 (no
// tensor): from a party, "joined and listening"; from the server to every party once all
// are, "start". 1: blinded points, uint8 [n · 32] (1-D: n points of 32 bytes). 2: a
// party's re-blinded tags of party 0's points, uint8 [n · 16] (to party 0 only). 3: party
// 0's answer, the positions of the common IDs in the party's round 1, int64 [m]. The
// server checks each round's size against the counts announced at Join.
struct Psi {
  static constexpr MsgType kType = MsgType::kPsi;
  std::uint8_t round = 0;
  std::uint32_t peer = 0;
  template <class A>
  void serialize(A& ar) {
    ar(round, peer);
  }
};

// Tensors: any; the server echoes them back unchanged in a ProbeReply.
struct Probe {
  static constexpr MsgType kType = MsgType::kProbe;
  std::uint64_t id = 0;
  template <class A>
  void serialize(A& ar) {
    ar(id);
  }
};

struct ProbeReply {
  static constexpr MsgType kType = MsgType::kProbeReply;
  std::uint64_t id = 0;
  template <class A>
  void serialize(A& ar) {
    ar(id);
  }
};

}  // namespace cutlayer::wire
