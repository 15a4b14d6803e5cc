// Durable training state: sealed checkpoint files in a directory, written atomically,
// the newest `keep` kept, and the newest good one found again after a crash.
//
// A checkpoint file is
//   header (128 bytes, authenticated) | state (AES-256-GCM ciphertext) | tag (16 bytes)
// The header carries the magic "cutlayer" "ckpt", a format version, the kind of party
// ("train", "client", "server"), the step, a key id, the model's fingerprint, the config
// hash, the nonce and the state's length. The key is derived with HKDF-SHA256 (its own
// label) from the party's own Curve25519 secret key, so a stolen checkpoint reveals nothing
// without the key file. The state itself is opaque bytes here (state/archive.h makes them
// from modules and optimizers).
#pragma once

#include <array>
#include <chrono>
#include <functional>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cutlayer/crypto/aead.h"
#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"

namespace cutlayer::config {
class Object;
}

namespace cutlayer::state {

inline constexpr std::uint32_t kCheckpointVersion = 1;
inline constexpr std::size_t kHeaderBytes = 128;

// The "checkpoint" object of a config file.
struct CheckpointOptions {
  std::string dir;                // "" : no checkpoints (relative paths: against the config file)
  std::int64_t every_steps = 0;   // write every this many steps (0: not by step count)
  double every_seconds = 300;     // and at least this often (0: not by time)
  int keep = 3;                   // the newest this many stay on disk
  bool resume = false;            // start from the newest good checkpoint (or --resume)
  bool enabled() const { return !dir.empty(); }
};
// Reads the object; throws ConfigError naming file, field and fix. `dir` is as written.
CheckpointOptions read_checkpoint_options(config::Object& o);

// What a checkpoint must match to be used: the same kind of party, model and training config.
struct Identity {
  std::string kind;         // "train", "client" or "server" (at most 8 characters)
  crypto::Digest model{};   // the model's fingerprint (state/archive.h: fingerprint)
  crypto::Digest config{};  // hash of the options that decide the run (not its length or logging)
};

// A checkpoint file that cannot be used, and why (the text names neither file nor step).
// `damaged`: the file itself is broken (truncated, not a checkpoint, failed authentication)
// and is set aside; otherwise it is sound but not this run's (another key, kind, model or
// config, a newer format) and is left where it is.
class CheckpointRefused : public Error {
 public:
  explicit CheckpointRefused(const std::string& what, bool damaged = false) : Error(what), damaged_(damaged) {}
  bool damaged() const { return damaged_; }

 private:
  bool damaged_;
};

// The largest state a checkpoint may hold (checked against the header before allocating).
inline constexpr std::uint64_t kMaxStateBytes = std::uint64_t{16} << 30;

// The sealing key: HKDF-SHA256 of the party's secret key, label "cutlayer checkpoint v1",
// and a public 8-byte id of it (another HKDF output) that tells "sealed under another key"
// apart from "corrupted".
class CheckpointKey {
 public:
  // From a key pair file (checked as a secret: 0600, owned by this user).
  static CheckpointKey from_key_file(const std::string& key_pair_path);
  // From 32 bytes of key material (the decoded secret key); `ikm` is not kept.
  explicit CheckpointKey(const std::array<std::uint8_t, 32>& ikm);

  const std::array<std::uint8_t, 8>& id() const { return id_; }
  crypto::Aead& aead() { return *aead_; }

 private:
  std::unique_ptr<crypto::Aead> aead_;
  std::array<std::uint8_t, 8> id_{};
};

struct Opened {
  std::int64_t step = 0;
  std::string state;
  std::string file;
};

// The sealed file's bytes for `state` at `step`.
std::string seal_checkpoint(CheckpointKey& key, const Identity& id, std::int64_t step,
                            const std::string& state);
// Reads and opens one file; throws CheckpointRefused with the reason (truncated, not a
// checkpoint, newer format, another key, corrupted, another kind/model/config) and IoError
// when it cannot be read. Nothing is allocated before the header and size check out.
Opened open_checkpoint(CheckpointKey& key, const Identity& id, const std::string& path);

// A directory of checkpoints "ckpt-<step, 12 digits>.cutlayer" (0700, files 0600).
class CheckpointStore {
 public:
  CheckpointStore(CheckpointOptions o, CheckpointKey key, Identity id);
  ~CheckpointStore();
  CheckpointStore(const CheckpointStore&) = delete;
  CheckpointStore& operator=(const CheckpointStore&) = delete;

  // True when a checkpoint is due after `steps_done` steps: by count (a multiple of
  // every_steps passed since the last write: an absolute grid, the same for every party with
  // the same every_steps) or by time since the last write or since the store was made.
  bool due(std::int64_t steps_done) const { return due_by_steps(steps_done) || due_by_time(steps_done); }
  bool due_by_steps(std::int64_t steps_done) const;
  bool due_by_time(std::int64_t steps_done) const;
  // Seals `state` after `steps_done` steps and writes it atomically (temp file, fsync,
  // rename, fsync of the directory); then removes the checkpoints of later steps (an
  // abandoned future: a run started over, or rewound) and all but the newest `keep`. A crash at any
  // point leaves the previous checkpoints intact. Returns the path.
  std::string write(std::int64_t steps_done, const std::string& state);
  // The newest checkpoint that opens and that `apply` takes (apply loads the state and may
  // throw CheckpointRefused when it does not fit). Each refused one is logged with its
  // reason and the previous one tried; a damaged one is renamed "<name>.refused" (kept for
  // inspection, never tried again). nullopt when the directory has no checkpoint;
  // ConfigError when it has some and none can be used.
  std::optional<Opened> load_newest(const std::function<void(const Opened&)>& apply = {});
  // Records that `steps_done` steps are done (a small plain file "progress" beside the
  // checkpoints, overwritten in place, not fsynced: cheap enough for every step). After a
  // crash it tells how many steps past the newest checkpoint are redone.
  void note_progress(std::int64_t steps_done);
  // The steps done when the last run stopped, as noted; -1 when nothing was noted.
  std::int64_t noted_progress() const;
  // The checkpoint of exactly `steps_done` steps, when there is one that opens and that
  // `apply` takes (a refused one is logged, and set aside when damaged); else nullopt.
  std::optional<Opened> load_step(std::int64_t steps_done, const std::function<void(const Opened&)>& apply = {});
  // Checkpoint files, newest first.
  std::vector<std::string> files() const;
  const CheckpointOptions& options() const { return o_; }
  // Milliseconds the last write took (sealing, writing, fsync, pruning).
  double last_write_ms() const { return last_write_ms_; }

 private:
  std::optional<Opened> try_load(const std::string& path, const std::function<void(const Opened&)>& apply,
                                 std::string& reasons);
  CheckpointOptions o_;
  CheckpointKey key_;
  Identity id_;
  std::int64_t last_step_ = 0;
  std::chrono::steady_clock::time_point last_time_;
  double last_write_ms_ = 0;
  int progress_fd_ = -1;
};

}  // namespace cutlayer::state
