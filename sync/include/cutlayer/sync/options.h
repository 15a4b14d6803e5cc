// The client config's "sync" object: how this client's front joins the server's
// aggregation (compressor, density, wire encoding of the sparse gradients).
#pragma once

#include <cstdint>
#include <string>

namespace cutlayer::config {
class Object;
}

namespace cutlayer::sync {

// Present (and "enabled" not false) means this client's front joins the server's
// aggregation instead of stepping on its own.
struct SyncOptions {
  bool enabled = false;
  std::string compressor = "gaussiank";  // none | topk | gaussiank | sampledk | randomk
  double density = 0.01;
  std::string density_schedule;  // per epoch, e.g. "0.25,0.0625,0.0156,0.004"; "" constant
  bool error_feedback = true;
  bool per_layer = false;  // select k per parameter tensor instead of model-wide
  bool fp16_values = false;
  bool varint_indices = true;  // delta + LEB128 indices (about 1 byte each at density 0.01)
  std::uint64_t seed = 0;      // randomk
  // With optimizer "kfac": consent to send this front's K-FAC factors (the covariance of its
  // inputs, docs/privacy.md) for an aggregation that averages them (the server's
  // aggregation.kfac_factors "average"). Both sides must agree: a client that does not
  // consent cannot join such an aggregation, nor one that consents a "local" one.
  bool share_kfac_factors = false;
};

// Reads a present "sync" object (enabled unless it says "enabled": false).
SyncOptions read_sync_options(config::Object& sync);

}  // namespace cutlayer::sync
