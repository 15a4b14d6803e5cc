#include "cutlayer/client/vertical_party.h"

#include <fmt/format.h>

#include <algorithm>
#include <future>

#include "cutlayer/client/report.h"
#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/privacy/adversary.h"
#include "cutlayer/report/json.h"
#include "cutlayer/state/archive.h"
#include "cutlayer/train/loop.h"
#include "cutlayer/train/optimizer.h"
#include "cutlayer/vertical/psi.h"

namespace cutlayer::client {
namespace {

constexpr double kMaxCutGrad = 1e18;
constexpr std::int64_t kEvalBatch = 500;

std::vector<std::uint8_t> bytes_of(const torch::Tensor& t) {
  const auto* p = t.data_ptr<std::uint8_t>();
  return std::vector<std::uint8_t>(p, p + t.numel());
}

torch::Tensor tensor_of(const std::vector<std::uint8_t>& b) {
  return torch::from_blob(const_cast<std::uint8_t*>(b.data()), {static_cast<std::int64_t>(b.size())}, torch::kUInt8)
      .clone();
}

// A Psi round from the server: one 1-D tensor of `type` (what its round carries).
torch::Tensor psi_tensor(const Reply<wire::Psi>& r, torch::ScalarType type) {
  if (r.msg.tensors.size() != 1 || r.msg.tensors[0].dim() != 1 || r.msg.tensors[0].scalar_type() != type)
    throw ProtocolError(fmt::format("server: Psi round {} must carry one 1-D {} tensor", r.meta.round,
                                    c10::toString(type)));
  return r.msg.tensors[0];
}

}  // namespace

VerticalParty::VerticalParty(transport::ClientTransport& link, Options options)
    : link_(link), options_(std::move(options)), dispatch_(link, DispatcherOptions{options_.reply_timeout}) {
  const auto& v = options_.vertical;
  const auto& o = options_.train;
  auto data = data::load_split(o.data, o.eval_samples, o.seed);
  const auto input_shape = data.train.x.sizes().slice(1).vec();
  auto model = vertical::build_vertical(input_shape, v.parties, /*classes=*/10, o.seed,
                                        vertical::join_mode(v.join, "vertical.join"));
  front_ = model.fronts.at(static_cast<std::size_t>(v.party));
  width_ = model.widths.at(static_cast<std::size_t>(v.party));
  opt_ = train::make_optimizer(front_->parameters(), o);
  const auto held = vertical::holding(data.train.size(), v.party, v.keep, o.seed, v.id_prefix);
  rows_ = held.rows;
  ids_ = held.ids;
  data_.train = data.train.subset(rows_);
  data_.train.x = vertical::strip(data_.train.x, v.parties, v.party).contiguous();
  data_.test = data.test;
  if (data_.test.size() > 0) data_.test.x = vertical::strip(data_.test.x, v.parties, v.party).contiguous();
  if (!active()) {  // a passive party holds no labels: what it loaded is not kept
    data_.train.y = torch::full({data_.train.size()}, -1, torch::kInt64);
    if (data_.test.size() > 0) data_.test.y = torch::full({data_.test.size()}, -1, torch::kInt64);
  }
}

VerticalParty::~VerticalParty() = default;

void VerticalParty::join() {
  const auto& v = options_.vertical;
  const auto& o = options_.train;
  wire::Join j;
  j.client_name = options_.name;
  j.model = "vertical";
  j.cut_shape = {width_};
  j.samples = ids_.size();
  j.vertical_party = static_cast<std::uint32_t>(v.party);
  j.vertical_parties = static_cast<std::uint32_t>(v.parties);
  j.vertical_order = fmt::format("train.seed {}, batch_size {}, epochs {}, max_steps {}", o.seed, o.batch_size,
                                 o.epochs, o.max_steps);
  link_.join(j);
  log::get("client")->info("joined as party {} of {} ({} sample IDs, cut of {} features{})", v.party, v.parties,
                           ids_.size(), width_, active() ? ", with the labels" : "");
}

// `work` on a worker thread while this one keeps the session alive (heartbeats, the
// server's Errors, the stop flag): blinding a large set takes longer than the session
// timeout. No other message is due meanwhile.
template <class Work>
auto VerticalParty::listening(const std::string& what, Work&& work) -> decltype(work()) {
  auto done = std::async(std::launch::async, std::forward<Work>(work));
  psi_wait().wait_for([&] { return done.wait_for(std::chrono::seconds(0)) == std::future_status::ready; },
                      [&] { return what; });
  return done.get();
}

// The PSI's waits: the other parties' curve work can take minutes (the start's deadline).
Dispatcher& VerticalParty::psi_wait() {
  if (!psi_dispatch_) {
    psi_dispatch_ = std::make_unique<Dispatcher>(link_, DispatcherOptions{options_.vertical.start_timeout});
    psi_dispatch_->set_stop(stop_);
  }
  return *psi_dispatch_;
}

// Party 0: round 1 to every party, their rounds 1 and 2 back, the common IDs, each party
// its positions (round 3).
std::vector<std::size_t> VerticalParty::coordinate(vertical::PsiParty& psi) {
  const auto k = static_cast<std::size_t>(options_.vertical.parties);
  const auto mine = tensor_of(psi.blinded());
  for (std::size_t i = 1; i < k; ++i)
    dispatch_.send(wire::make_message(wire::Psi{1, static_cast<std::uint32_t>(i)}, {mine}));
  std::vector<std::vector<std::uint8_t>> round1(k), round2(k);
  std::vector<bool> got1(k, false), got2(k, false);
  for (std::size_t left = 2 * (k - 1); left > 0; --left) {
    const auto r = psi_wait().await_where<wire::Psi>(
        [&](const wire::Psi& m) {
          return m.peer >= 1 && m.peer < k && ((m.round == 1 && !got1[m.peer]) || (m.round == 2 && !got2[m.peer]));
        },
        [] { return std::string("the other parties' PSI rounds 1 and 2"); });
    auto bytes = bytes_of(psi_tensor(r, torch::kUInt8));
    (r.meta.round == 1 ? round1 : round2)[r.meta.peer] = std::move(bytes);
    (r.meta.round == 1 ? got1 : got2)[r.meta.peer] = true;
  }
  const auto c = listening("the intersection (party 0's curve work)",
                           [&] { return vertical::coordinate(psi, round1, round2); });
  for (std::size_t i = 1; i < k; ++i) {
    auto pos = torch::empty({static_cast<std::int64_t>(c.positions[i].size())}, torch::kInt64);
    std::copy(c.positions[i].begin(), c.positions[i].end(), pos.data_ptr<std::int64_t>());
    dispatch_.send(wire::make_message(wire::Psi{3, static_cast<std::uint32_t>(i)}, {pos}));
  }
  return c.common;
}

// Another party: its round 1 to party 0, party 0's round 1 re-blinded back (round 2), the
// positions of the common IDs (round 3).
std::vector<std::size_t> VerticalParty::follow(vertical::PsiParty& psi) {
  dispatch_.send(wire::make_message(wire::Psi{1, 0}, {tensor_of(psi.blinded())}));
  auto match = [](std::uint8_t round) {
    return [round](const wire::Psi& m) { return m.round == round && m.peer == 0; };
  };
  const auto r1 = psi_wait().await_where<wire::Psi>(match(1), [] { return std::string("party 0's PSI round 1"); });
  const auto points = psi_tensor(r1, torch::kUInt8);
  const auto tags = listening("this party's round 2 (re-blinding party 0's points)", [&] {
    return psi.reblind(points.data_ptr<std::uint8_t>(), static_cast<std::size_t>(points.numel()));
  });
  dispatch_.send(wire::make_message(wire::Psi{2, 0}, {tensor_of(tags)}));
  const auto r3 = psi_wait().await_where<wire::Psi>(match(3), [] { return std::string("party 0's PSI round 3"); });
  const auto pos = psi_tensor(r3, torch::kInt64);
  const auto* p = pos.data_ptr<std::int64_t>();
  std::vector<std::uint32_t> positions;
  positions.reserve(static_cast<std::size_t>(pos.numel()));
  for (std::int64_t i = 0; i < pos.numel(); ++i) {
    if (p[i] < 0 || p[i] >= static_cast<std::int64_t>(ids_.size()))
      throw ProtocolError(fmt::format("server: PSI round 3 names position {} of {} points", p[i], ids_.size()));
    positions.push_back(static_cast<std::uint32_t>(p[i]));
  }
  return psi.indices_at(positions);
}

// The PSI (its round 1 blinded before the join, so that the session never waits on it).
std::vector<std::int64_t> VerticalParty::align(vertical::PsiParty& psi) {
  dispatch_.send(wire::make_message(wire::Psi{0, 0}));  // ready: listening on the sealed channel
  psi_wait().await_where<wire::Psi>([](const wire::Psi& m) { return m.round == 0; },
                                    [] { return std::string("the start of the PSI (all parties joined)"); });
  const auto t0 = std::chrono::steady_clock::now();
  log::get("client")->info("all {} parties joined: private set intersection of the sample IDs",
                           options_.vertical.parties);
  const auto common = vertical::shared_order(psi, active() ? coordinate(psi) : follow(psi));
  psi_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<std::int64_t> local;  // into this party's rows
  for (const auto i : common) local.push_back(static_cast<std::int64_t>(i));
  aligned_ = static_cast<std::int64_t>(local.size());
  log::get("client")->info("private set intersection: {} of this party's {} people are held by all parties ({:.2f} s)",
                           aligned_, ids_.size(), psi_seconds_);
  if (local.empty()) throw ConfigError("no person is held by all parties: nothing to train on");
  return local;
}

// One step: this party's cut of the batch out (party 0: with the labels), its share of
// dL/d(joined cut) back through the front. NoPeek's α·dCor(x, z) joins the front's loss.
VerticalParty::StepResult VerticalParty::step(const torch::Tensor& x, const torch::Tensor& y, std::int64_t step) {
  const auto s = static_cast<std::uint64_t>(step);
  train::set_lr(*opt_, train::lr_at(options_.train, step));
  opt_->zero_grad();
  auto z = front_->forward(x);
  std::vector<torch::Tensor> tensors{privacy::cut_to_send(z.detach(), options_.nopeek)};
  if (active()) tensors.push_back(y);
  dispatch_.send(wire::make_message(wire::Activations{s, active(), true}, tensors));
  StepResult r;
  const auto local_terms = privacy::client_terms(options_.nopeek, step, x, z, nullptr, &r.dcor);
  const auto reply = dispatch_.await<wire::CutGrad>(s);
  const auto& g = reply.msg.tensors;
  if (g.size() != 1 || g[0].scalar_type() != torch::kFloat32 || g[0].sizes() != z.sizes() ||
      !torch::isfinite(g[0]).all().item<bool>() || g[0].abs().max().item<double>() > kMaxCutGrad)
    throw ProtocolError("server: CutGrad for step " + std::to_string(step) + " is not a finite gradient of the cut's shape");
  if (local_terms.defined()) torch::autograd::backward({z, local_terms}, {g[0], torch::Tensor()});
  else z.backward(g[0]);
  opt_->step();
  r.loss = reply.meta.loss;
  r.correct = reply.meta.correct;
  return r;
}

VerticalParty::Totals VerticalParty::train_loop(const data::Dataset& set, const std::atomic<bool>& stop) {
  const auto& o = options_.train;
  train::Batches batches(set, o.batch_size, o.epochs, o.max_steps, o.seed);  // the same order at every party
  train::Progress progress(options_.name, batches.total_steps());
  train::MetricsFile metrics(o.metrics_file);
  const auto t0 = std::chrono::steady_clock::now();
  Totals t;
  Window w;
  train::Batch b;
  while (!stop && batches.next(b)) {
    const auto r = step(b.x, b.y, b.step);
    t.steps = b.step + 1;
    t.samples += b.x.size(0);
    t.last_loss = r.loss;
    w.add(r.loss, r.dcor, r.correct, b.x.size(0));
    if (o.metrics_every_step)
      metrics.write(report::Json().add("step", b.step).add_significant("loss", r.loss, 9).add_significant("dcor", r.dcor, 6));
    if (t.steps % o.log_every != 0 && t.steps != batches.total_steps()) continue;
    const auto& ts = link_.stats();
    log::get("client")->info("{}", progress.line(t.steps, w.mean_loss(), w.accuracy(), t.samples, ts.bytes_out, ts.bytes_in));
    if (!o.metrics_every_step) metrics.write(w.json(t.steps, t.samples / progress.seconds(), ts, std::nullopt));
    w = Window{};
  }
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return t;
}

// The test split through every party's front and the server's back; the server answers
// each party with the same accuracy and loss.
std::pair<double, double> VerticalParty::evaluate() {
  const auto& d = data_.test;
  if (d.size() == 0) return {-1, -1};
  torch::NoGradGuard no_grad;
  front_->eval();
  double correct = 0, loss = 0;
  for (std::int64_t b = 0; b < d.size(); b += kEvalBatch) {
    const auto n = std::min<std::int64_t>(kEvalBatch, d.size() - b);
    std::vector<torch::Tensor> tensors{privacy::cut_to_send(front_->forward(d.x.narrow(0, b, n)), options_.nopeek)};
    if (active()) tensors.push_back(d.y.narrow(0, b, n).contiguous());
    const auto id = eval_id_++;
    dispatch_.send(wire::make_message(wire::Activations{id, active(), false}, tensors));
    const auto er = dispatch_.await<wire::EvalResult>(id).meta;
    correct += er.accuracy * n;
    loss += er.loss * n;
  }
  front_->train();
  return {correct / d.size(), loss / d.size()};
}

std::string VerticalParty::run(const std::atomic<bool>& stop) {
  dispatch_.set_stop(&stop);
  stop_ = &stop;
  const auto t0 = std::chrono::steady_clock::now();
  vertical::PsiParty psi(ids_);  // round 1: the slow part, before the session starts
  psi_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  try {
    return train_all(psi, stop);
  } catch (const Interrupted&) {
    link_.leave("interrupted");
    return ClientSummary::interrupted(options_.name).str();
  } catch (const std::exception& e) {  // the others are told at once, not at a timeout
    link_.leave(std::string("failed: ") + e.what());
    throw;
  }
}

// Joined, aligned, trained and evaluated; leaves.
std::string VerticalParty::train_all(vertical::PsiParty& psi, const std::atomic<bool>& stop) {
  join();
  const auto local = align(psi);
  const auto train_set = data_.train.subset(local);
  const auto before = link_.stats().bytes_out + link_.stats().bytes_in;
  Totals t;
  // A SIGINT/SIGTERM during a wait for the server ends the wait (Interrupted); the party
  // then leaves cleanly as between steps, and the server ends the others' sessions.
  try {
    t = train_loop(train_set, stop);
  } catch (const Interrupted&) {
    log::get("client")->info("{}: interrupted while waiting for the server", options_.name);
  }
  t.train_bytes = link_.stats().bytes_out + link_.stats().bytes_in - before;
  const auto [acc, loss] = stop ? std::pair<double, double>{-1, -1} : evaluate();
  if (acc >= 0) log::get("client")->info("test accuracy {:.4f}, test loss {:.4f}", acc, loss);
  if (acc >= 0 && !options_.train.metrics_file.empty()) {
    train::MetricsFile metrics(options_.train.metrics_file, /*append=*/true);
    metrics.write(report::Json().add("step", t.steps).add("test_acc", acc, 4).add("test_loss", loss, 4).add("final", true));
  }
  link_.leave(stop ? "interrupted" : "training done");
  if (!options_.save_front.empty()) {
    torch::save(front_, options_.save_front);
    log::get("client")->info("front saved to {} (cutlayer-leakage -c CONFIG --front {})", options_.save_front,
                             options_.save_front);
  }
  return summary(t, acc, loss).str();
}

report::Json VerticalParty::summary(const Totals& t, double acc, double loss) const {
  const auto& ts = link_.stats();
  const auto h = state::values_hash({front_.ptr().get()});
  report::Json j;
  j.add("client", options_.name)
      .add("mode", "vertical")
      .add("party", options_.vertical.party)
      .add("parties", options_.vertical.parties)
      .add("held", static_cast<std::int64_t>(ids_.size()))
      .add("aligned", aligned_)
      .add("psi_s", psi_seconds_, 3)
      .add("alpha", options_.nopeek.alpha)
      .add("steps", t.steps)
      .add("samples", t.samples)
      .add("seconds", t.seconds, 3)
      .add("samples_per_s", t.samples / std::max(t.seconds, 1e-9), 1)
      .add("final_loss", t.last_loss, 6)
      .add("test_acc", acc, 4)
      .add("test_loss", loss, 4)
      .add("bytes_up", ts.bytes_out)
      .add("bytes_down", ts.bytes_in)
      .add("bytes_per_step", t.steps > 0 ? static_cast<double>(t.train_bytes) / t.steps : 0.0, 1)
      .add("model_sha256", crypto::to_hex(h.data(), h.size()));
  return j;
}

}  // namespace cutlayer::client
