#include "cutlayer/server/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

namespace cutlayer::server {

namespace {

// "n0,n1,..": contributions per staleness.
std::string staleness_list(const std::vector<std::uint64_t>& hist) {
  std::string out;
  for (std::size_t t = 0; t < hist.size(); ++t) out += fmt::format("{}{}", t ? "," : "", hist[t]);
  return out;
}

}  // namespace

StepReport StepReport::since(const TrainerStats& st, std::int64_t samples_before, double seconds,
                             std::size_t clients, const transport::TransportStats& ts) {
  StepReport r;
  r.step = st.steps;
  r.loss = st.loss_samples ? st.loss_sum / st.loss_samples : 0.0;
  r.acc = st.loss_samples ? static_cast<double>(st.correct) / st.loss_samples : 0.0;
  r.samples_per_s = (st.samples - samples_before) / std::max(seconds, 1e-9);
  r.clients = clients;
  r.bytes_in = ts.bytes_in;
  r.bytes_out = ts.bytes_out;
  r.labels_received = st.labels_received;
  return r;
}

std::string StepReport::line() const {
  return fmt::format(
      "step {}  loss {:.4f}  acc {:.3f}  {:.0f} samples/s  clients {}  in {:.1f} MB  out {:.1f} MB",
      step, loss, acc, samples_per_s, clients, bytes_in / 1e6, bytes_out / 1e6);
}

report::Json StepReport::json() const {
  report::Json j;
  j.add("step", step)
      .add("loss", loss, 6)
      .add("acc", acc, 4)
      .add("samples_per_s", samples_per_s, 1)
      .add("clients", clients)
      .add("bytes_in", bytes_in)
      .add("bytes_out", bytes_out)
      .add("labels_received", labels_received);
  return j;
}

RoundReport RoundReport::since(const Aggregator& aggregator, const AggregatorStats& before) {
  return between(before, aggregator.stats(), aggregator.numel(), aggregator.members(),
                 aggregator.hash());
}

RoundReport RoundReport::between(const AggregatorStats& before, const AggregatorStats& now,
                                 std::int64_t front_numel, std::size_t members,
                                 std::string front_hash) {
  const auto& a = now;
  const auto& p = before;
  RoundReport r;
  r.round = a.rounds;
  r.members = members;
  r.contributions = a.contributions;
  r.bytes_up = a.bytes_up;
  r.bytes_down = a.bytes_down;
  r.closed_all = a.closed_all;
  r.closed_samples = a.closed_samples;
  r.closed_deadline = a.closed_deadline;
  r.rejected = a.rejected;
  r.front_hash = std::move(front_hash);

  const double rounds = static_cast<double>(a.rounds - p.rounds);
  const double numel = static_cast<double>(front_numel);
  const double contrib = static_cast<double>(a.contributions - p.contributions);
  const double dense_bytes = 4.0 * numel;
  const double up = static_cast<double>(a.bytes_up - p.bytes_up);
  const double down = static_cast<double>(a.bytes_down - p.bytes_down);
  const double updates = static_cast<double>(a.updates_sent - p.updates_sent);
  r.up_bytes_per_contribution = contrib ? up / contrib : 0.0;
  r.down_bytes_per_update = updates ? down / updates : 0.0;
  r.density_up = contrib > 0 ? (a.nnz_up - p.nnz_up) / (contrib * numel) : 0.0;
  r.density_down = rounds > 0 ? (a.nnz_down - p.nnz_down) / (rounds * numel) : 0.0;
  r.bytes_ratio_to_dense =
      (contrib > 0 && updates > 0) ? (up / contrib + down / updates) / (2 * dense_bytes) : 0.0;
  r.staleness_hist.resize(a.staleness.size());
  for (std::size_t t = 0; t < a.staleness.size(); ++t)
    r.staleness_hist[t] = a.staleness[t] - (t < p.staleness.size() ? p.staleness[t] : 0);
  return r;
}

std::string RoundReport::line() const {
  return fmt::format(
      "round {}  members {}  up {:.1f} KB/contribution (density {:.4f})  down {:.1f} KB/client "
      "(density {:.4f})  "
      "{:.3f} of dense  staleness [{}]  closed all/samples/deadline {}/{}/{}  rejected {}",
      round, members, up_bytes_per_contribution / 1e3, density_up, down_bytes_per_update / 1e3,
      density_down, bytes_ratio_to_dense, staleness_list(staleness_hist), closed_all,
      closed_samples, closed_deadline, rejected);
}

report::Json RoundReport::json() const {
  report::Json j;
  j.add("round", round)
      .add("members", members)
      .add("contributions", contributions)
      .add("bytes_up", bytes_up)
      .add("bytes_down", bytes_down)
      .add("density_up", density_up, 6)
      .add("density_down", density_down, 6)
      .add("bytes_ratio_to_dense", bytes_ratio_to_dense, 6)
      .add("staleness_hist", staleness_hist)
      .add("closed_all", closed_all)
      .add("closed_samples", closed_samples)
      .add("closed_deadline", closed_deadline)
      .add("rejected", rejected)
      .add("front_hash", front_hash);
  return j;
}

AggregationSummary AggregationSummary::of(const Aggregator& aggregator) {
  const auto& a = aggregator.stats();
  AggregationSummary s;
  s.rounds = a.rounds;
  s.staleness_bound = aggregator.options().staleness;
  s.max_staleness = a.max_staleness;
  s.staleness_hist = a.staleness;
  s.contributions = a.contributions;
  s.rejected = a.rejected;
  s.closed_all = a.closed_all;
  s.closed_samples = a.closed_samples;
  s.closed_deadline = a.closed_deadline;
  s.max_overrun_ms = a.max_overrun_ms;
  s.overdue = a.overdue;
  s.bytes_up = a.bytes_up;
  s.bytes_down = a.bytes_down;
  s.front_hash = aggregator.hash();
  if (aggregator.options().kfac_factors == "average")
    s.kfac = report::Json()
                 .add("decompositions", aggregator.options().kfac_decompositions)
                 .add("factor_rounds", a.kfac_rounds)
                 .add("shipped", a.kfac_shipped)
                 .add("bytes_up", a.kfac_bytes_up)
                 .add("bytes_down", a.kfac_bytes_down)
                 .add("decompose_ms", a.kfac_decompose_ms, 1)
                 .add("hash", aggregator.kfac_hash());
  return s;
}

report::Json AggregationSummary::json() const {
  report::Json j;
  j.add("rounds", rounds)
      .add("staleness_bound", staleness_bound)
      .add("max_staleness", max_staleness)
      .add("staleness_hist", staleness_hist)
      .add("contributions", contributions)
      .add("rejected", rejected)
      .add("closed_all", closed_all)
      .add("closed_samples", closed_samples)
      .add("closed_deadline", closed_deadline)
      .add("max_overrun_ms", max_overrun_ms)
      .add("overdue", overdue)
      .add("bytes_up", bytes_up)
      .add("bytes_down", bytes_down)
      .add("front_hash", front_hash);
  if (kfac) j.add("kfac", *kfac);
  return j;
}

report::Json ServerSummary::json() const {
  report::Json j;
  j.add("server", "summary")
      .add("seconds", seconds, 3)
      .add("steps", steps)
      .add("samples", samples)
      .add("labels_received", labels_received)
      .add("eval_batches", eval_batches)
      .add("predict_batches", predict_batches)
      .add("busy_ms_per_step", steps > 0 ? 1e3 * busy_seconds / static_cast<double>(steps) : 0.0, 3)
      .add("probes", probes)
      .add("sessions_open", sessions_open)
      .add("messages_in", messages_in)
      .add("messages_out", messages_out)
      .add("bytes_in", bytes_in)
      .add("bytes_out", bytes_out)
      .add("dropped", dropped);
  if (!back_sha256.empty()) j.add("back_sha256", back_sha256);
  if (aggregation) j.add("aggregation", aggregation->json());
  if (rounds) {
    const auto& r = rounds->stats;
    const double per_step = r.steps > 0 ? 1e3 / static_cast<double>(r.steps) : 0.0;
    report::Json k;
    k.add("rank", rounds->rank)
        .add("world", rounds->world)
        .add("rounds", r.rounds)
        .add("steps", r.steps)
        .add("allreduce_ms_per_step", r.allreduce_seconds * per_step, 3)
        .add("gradient_allreduce_ms_per_step", r.gradient_seconds * per_step, 3)
        .add("hash_checks", r.hash_checks);
    j.add("rounds", k);
  }
  return j;
}

}  // namespace cutlayer::server
