// Training state as checkpoint bytes: LibTorch archives of modules and optimizers, the
// global generator's state, counters; and a model's fingerprint for the checkpoint header.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cutlayer/crypto/crypto.h"

namespace cutlayer::state {

using torch::serialize::InputArchive;
using torch::serialize::OutputArchive;

// The archive as bytes (LibTorch's own format, what torch::save writes).
std::string to_bytes(OutputArchive& a);
// Reads bytes made by to_bytes; throws CheckpointRefused when they are not such an archive.
void from_bytes(InputArchive& a, const std::string& bytes);

// A module's parameters and buffers, or an optimizer's state, under `key`.
void save_part(OutputArchive& a, const std::string& key, const torch::nn::Module& m);
void save_part(OutputArchive& a, const std::string& key, const torch::optim::Optimizer& o);
// Loads them back in place (the module's tensors keep their identity, so an optimizer
// over them stays valid); throws CheckpointRefused when a key or tensor is missing or its
// shape differs.
void load_part(InputArchive& a, const std::string& key, torch::nn::Module& m);
void load_part(InputArchive& a, const std::string& key, torch::optim::Optimizer& o);

void save_int(OutputArchive& a, const std::string& key, std::int64_t v);
std::int64_t load_int(InputArchive& a, const std::string& key);
void save_bytes(OutputArchive& a, const std::string& key, const std::vector<std::uint8_t>& v);
// `optional`: a missing key reads as empty (a field newer than the checkpoint).
std::vector<std::uint8_t> load_bytes(InputArchive& a, const std::string& key, bool optional = false);
// Names (at most 65535 bytes each) and their counts; loading refuses more than
// `max_entries` or a malformed encoding (CheckpointRefused).
void save_counts(OutputArchive& a, const std::string& key, const std::map<std::string, std::uint64_t>& m);
std::map<std::string, std::uint64_t> load_counts(InputArchive& a, const std::string& key, std::size_t max_entries,
                                                 bool optional = false);

// LibTorch's default CPU generator (dropout, noise, random init): saved and restored, so
// a resumed run draws the same numbers the uninterrupted one would have.
void save_rng(OutputArchive& a);
void load_rng(InputArchive& a);
// The generator's state now, and saving such a state taken earlier (a checkpoint written
// after an unfinished step saves the state from before it).
torch::Tensor rng_state();
void set_rng_state(const torch::Tensor& state);
// Restores the generator when the scope ends: an evaluation (whose noise draws from it)
// then leaves training's random numbers, and so a resumed run, as they were.
class RngGuard {
 public:
  RngGuard() : state_(rng_state()) {}
  ~RngGuard() { set_rng_state(state_); }
  RngGuard(const RngGuard&) = delete;
  RngGuard& operator=(const RngGuard&) = delete;

 private:
  torch::Tensor state_;
};
void save_rng(OutputArchive& a, const torch::Tensor& state);

// SHA-256 of `description` and every parameter's and buffer's name, dtype and shape in
// `parts`, and of a TorchScript part's code: two runs agree on it exactly when their models
// have the same structure.
crypto::Digest fingerprint(const std::string& description,
                           const std::vector<const torch::nn::Module*>& parts);

// fingerprint("", {&part}) in hex: what a client tells the server of each part at Join;
// "" for an empty part (a client that holds no back).
std::string part_fingerprint(const torch::nn::Module& part);

// SHA-256 of every parameter's and buffer's values in `parts` (in order, as raw bytes): two
// models are bit-identical exactly when it agrees. Printed in summaries as "model_sha256".
crypto::Digest values_hash(const std::vector<const torch::nn::Module*>& parts);

}  // namespace cutlayer::state
