#include "cutlayer/client/report.h"

#include <fmt/format.h>

namespace cutlayer::client {

SyncReport SyncReport::of(const FrontSync& s) {
  return SyncReport{s.options(), s.stats(), s.version(), s.numel(), s.hash()};
}

double SyncReport::ratio_to_dense() const {
  if (stats.contributions == 0 || stats.updates == 0) return 0;
  const double dense = 4.0 * static_cast<double>(numel);
  return (static_cast<double>(stats.bytes_up) / stats.contributions +
          static_cast<double>(stats.bytes_down) / stats.updates) /
         (2 * dense);
}

std::string SyncReport::progress() const {
  return fmt::format("  round {}  sync {:.1f} KB up {:.1f} KB down/round ({:.3f} of dense)", round,
                     stats.contributions ? stats.bytes_up / 1e3 / stats.contributions : 0.0,
                     stats.updates ? stats.bytes_down / 1e3 / stats.updates : 0.0, ratio_to_dense());
}

report::Json SyncReport::json() const {
  const auto per = [&](std::uint64_t nnz, std::uint64_t n) {
    return n ? static_cast<double>(nnz) / (static_cast<double>(n) * static_cast<double>(numel)) : 0.0;
  };
  report::Json j;
  j.add("compressor", options.compressor)
      .add("density", options.density)
      .add("error_feedback", options.error_feedback)
      .add("round", round)
      .add("snapshot_round", stats.snapshot_round)
      .add("contributions", stats.contributions)
      .add("updates", stats.updates)
      .add("rejected", stats.rejected)
      .add("waits", stats.waits)
      .add("bytes_up", stats.bytes_up)
      .add("bytes_down", stats.bytes_down)
      .add("density_up", per(stats.nnz_up, stats.contributions), 6)
      .add("density_down", per(stats.nnz_down, stats.updates), 6)
      .add("bytes_ratio_to_dense", ratio_to_dense(), 6)
      .add("front_hash", front_hash);
  if (options.share_kfac_factors)
    j.add("kfac_bytes_up", stats.kfac_bytes_up).add("kfac_bytes_down", stats.kfac_bytes_down);
  return j;
}

void Window::add(double batch_loss, double batch_dcor, std::int64_t batch_correct, std::int64_t n) {
  loss += batch_loss * n;
  dcor += batch_dcor * n;
  correct += batch_correct;
  seen += n;
}

report::Json Window::json(std::int64_t step, double samples_per_s, const transport::TransportStats& ts,
                          const std::optional<SyncReport>& sync) const {
  report::Json j;
  j.add("step", step)
      .add("loss", mean_loss(), 6)
      .add("acc", accuracy(), 4)
      .add("dcor", mean_dcor(), 6)
      .add("samples_per_s", samples_per_s, 1)
      .add("bytes_up", ts.bytes_out)
      .add("bytes_down", ts.bytes_in);
  if (sync) j.add("sync", sync->json());
  return j;
}

report::Json Evaluation::json(std::int64_t step, std::optional<std::uint64_t> round) const {
  report::Json j;
  j.add("step", step)
      .add("test_acc", accuracy, 4)
      .add("test_loss", loss, 4)
      .add("eval_dcor", dcor, 4)
      .add("eval_dcor2_u", dcor2_u, 4);
  if (round) j.add("round", *round);
  return j;
}

report::Json ClientSummary::json() const {
  report::Json j;
  j.add("client", client)
      .add("mode", mode)
      .add("alpha", alpha)
      .add("steps", steps)
      .add("samples", samples)
      .add("seconds", seconds, 3)
      .add("samples_per_s", samples / seconds, 1)
      .add("final_loss", final_loss, 6)
      .add("test_acc", eval.accuracy, 4)
      .add("test_loss", eval.loss, 4)
      .add("eval_dcor", eval.dcor, 4)
      .add("eval_dcor2_u", eval.dcor2_u, 4)
      .add("bytes_up", bytes_up)
      .add("bytes_down", bytes_down);
  if (step_ms > 0) j.add("step_ms", step_ms, 3).add("wait_ms", wait_ms, 3);
  if (!model_sha256.empty()) j.add("model_sha256", model_sha256);
  if (sync) j.add("sync", sync->json());
  return j;
}

report::Json ClientSummary::interrupted(const std::string& client) {
  report::Json j;
  j.add("client", client).add("interrupted", true).add("steps", 0);
  return j;
}

}  // namespace cutlayer::client
