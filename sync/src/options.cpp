#include "cutlayer/sync/options.h"

#include <limits>

#include "cutlayer/config/reader.h"
#include "cutlayer/error.h"
#include "cutlayer/kernels/compressor.h"
#include "cutlayer/kernels/density_schedule.h"

namespace cutlayer::sync {

SyncOptions read_sync_options(config::Object& s) {
  SyncOptions o;
  o.enabled = true;  // the object is there; "enabled": false keeps it written but off
  s.get("enabled", o.enabled);
  s.get_choice("compressor", o.compressor, kernels::compressor_names());
  s.get("density", o.density, 1e-6, 1.0);
  s.get("density_schedule", o.density_schedule);
  if (!o.density_schedule.empty()) {
    try {
      (void)kernels::DensitySchedule::parse(o.density_schedule);
    } catch (const ConfigError& e) {
      s.fail("density_schedule",
             std::string(e.what()) +
                 "; write densities in (0, 1] per epoch, e.g. \"0.25,0.0625,0.0156\"");
    }
  }
  s.get("error_feedback", o.error_feedback);
  s.get("per_layer", o.per_layer);
  std::string values = o.fp16_values ? "fp16" : "fp32";
  s.get_choice("values", values, {"fp32", "fp16"});
  o.fp16_values = values == "fp16";
  std::string indices = o.varint_indices ? "varint" : "raw";
  s.get_choice("indices", indices, {"varint", "raw"});
  o.varint_indices = indices == "varint";
  s.get_int("seed", o.seed, 0, std::numeric_limits<std::int64_t>::max());
  s.get("share_kfac_factors", o.share_kfac_factors);
  s.finish();
  return o;
}

}  // namespace cutlayer::sync
