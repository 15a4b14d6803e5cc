// vertical_join: the server's side of vertical split learning (server/vertical_join.h), driven
// event by event as the service drives it: parties join, say they listen, relay their PSI
// rounds, send their cuts of each step; the clock advances, parties leave. Each input meets a
// fresh VerticalJoin over a fresh BackTrainer (a clone of the back of vertical_join_test's
// table model, 8 features, 2 classes, every cut 64 wide, built once per setup), so inputs
// are independent.
//   input  := u8 setup, u8 ids{K}, op{at most kMaxOps}        (integers little-endian)
//   setup  := bit 0: K = 3 parties (else 2); bit 1: cuts summed (else concatenated)
//   ids    := party k announces 1 + ids % 64 sample IDs at Join (vertical.max_ids: 64)
//   op     := u8 code, then by code % 8
//     0 join   u8 party (mod K + 1: K is out of range), u8 flaw (mod 13; 0: none, 12: another
//              batch order, else one field wrong)        -> check_join; admit when accepted
//     1 ready  u8 who                                    -> psi: round 0, no tensor
//     2 psi    u8 who, u8 round, u8 peer (0xff: a u32 peer follows), tensor
//     3 cut    u8 who, u8 flags, u8 step (0xff: a u64 step follows), tensor{flags >> 2 & 3}
//              flags bit 0: has_labels, bit 1: evaluation (train false)
//     4 tick   u16 ms the clock advances                 -> tick
//     5 left   u8 who                                    -> left
//     6 raw    u8 who, u8 to (bit 0: cut, else psi), u8 message type, u8 n, n meta bytes,
//              u8 count (mod 3), tensor{count}            (any type, any meta)
//     7 wait   u16 ms the clock advances
//   who    := session 1 + who % (sessions admitted + 1): the last one was never admitted
//   tensor := u8 dtype (wire::DType code; unknown: float32), u8 ndim (mod 3), u16 dim{ndim}
//             (past the op's element bound: all zero), u8 fill, then by fill % 4
//               0: u8 b            every byte b
//               1: u8 n, n bytes   repeated over the tensor's bytes
//               2: u8 n, n bytes   repeated over the elements, each picking a special value
//                                  (NaN, ±Inf, the bound and just past it, 3.4e38, ...)
//               3: the tensor's bytes (zeros past the end of the input)
//             A bool tensor's bytes are made 0 or 1.
// Only ProtocolError escapes psi and cut; nothing escapes check_join, admit, tick or left.
// Every outcome is checked against a model of the session as docs/vertical.md defines it:
// - check_join accepts exactly a flawless Join for a free index, with the batch order of the
//   parties in, before the parties started and while no party of the last cohort is gone;
// - round 0 goes out (Result.started) to all K parties once each has sent its own, once,
//   and the back is then the initial one (a new cohort restarts it);
// - a relayed Psi is taken exactly when the rules allow it (all ready; between party 0 and
//   another party; round 1 exactly 32 x the sender's IDs, round 2 exactly 16 x party 0's
//   after party 0's round 1 to it, round 3 at most the smaller count after the party's
//   rounds 1 and 2; each once), goes to the party named with its sender's index and carries
//   the tensor sent byte for byte;
// - a cut is taken exactly when the PSI is done (party 0's round 3 to every party), it is well
//   formed (float32 [B x 64], 1 <= B <= 4096, finite, within max_abs_value, over K less a margin when
//   summed; party 0's int64 labels [B] in [0, 2), no labels from the others), in step with
//   the step gathered and the party's first of it; once all K cuts are in, each party gets
//   one CutGrad (finite float32 [B x its width]; summed, [B x the joined width] and the same
//   for every party) or the EvalResult; the back refuses such a step only for a non-finite
//   loss or gradient;
// - an out-of-step cut, a late step (tick past step_timeout) and a party leaving after the
//   start end every party (between steps only after kLeaveGrace, or at their next message);
// - ended sessions are distinct, were parties and are parties no more; is_party and joined()
//   agree with the model, joined() <= K.
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cutlayer/error.h"
#include "cutlayer/server/back_trainer.h"
#include "cutlayer/server/vertical_join.h"
#include "cutlayer/vertical/parties.h"
#include "cutlayer/vertical/psi.h"
#include "cutlayer/wire/dtype.h"
#include "cutlayer/wire/message.h"
#include "cutlayer/wire/messages.h"
#include "fuzz_common.h"

namespace cutlayer::fuzz::vertical_join {
namespace {

using server::VerticalJoin;
using Clock = VerticalJoin::Clock;
using namespace std::chrono_literals;

constexpr std::size_t kMaxOps = 128;
constexpr std::uint64_t kMaxIds = 64;
constexpr std::int64_t kClasses = 2;
constexpr std::int64_t kPsiElements = 4096;  // round 1 of 64 IDs: 2048 bytes
constexpr std::int64_t kCutElements = 512;   // [8 x 64]
constexpr std::chrono::milliseconds kStepTimeout = 1000ms;
constexpr std::uint64_t kSeed = 7;
constexpr const char* kOrder = "seed 1";  // Join.vertical_order: every party's the same

server::VerticalOptions options_of(int parties, bool sum) {
  server::VerticalOptions o;
  o.parties = parties;
  o.join = sum ? vertical::JoinMode::kSum : vertical::JoinMode::kConcat;
  o.input_shape = {8};
  o.classes = kClasses;
  o.step_timeout = kStepTimeout;
  o.max_ids = kMaxIds;
  return o;
}

// The model of a setup, built once per process; each input trains a clone of its back.
const vertical::VerticalModel& model_of(int parties, bool sum) {
  static std::map<int, vertical::VerticalModel> built;
  const int key = parties * 2 + (sum ? 1 : 0);
  auto it = built.find(key);
  if (it == built.end()) it = built.emplace(key, server::vertical_model(options_of(parties, sum), kSeed)).first;
  return it->second;
}

// ---------------------------------------------------------------------------------------
// Tensors from the input

const std::array<double, 18> kFloatSpecials{
    0.0, 1.0, -1.0, 0.5, -0.0, std::numeric_limits<double>::quiet_NaN(),
    std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
    1e6, -1e6, 1e6 / 3, 1e6 / 2, 1000000.0625 /* the float after 1e6 */, 333333.375 /* past 1e6 / 3 */,
    3.4e38, 1.4e-45 /* a denormal float */, 65504.0, 1e30};
const std::array<std::int64_t, 16> kIntSpecials{0,     1,      -1,         2,
                                                3,     63,     64,         127,
                                                -128,  255,    32767,      -32768,
                                                2048,  2147483647, std::numeric_limits<std::int64_t>::min(),
                                                std::numeric_limits<std::int64_t>::max()};

torch::Tensor read_tensor_bounded(Input& in, std::int64_t max_elements) {
  const auto code = in.take<std::uint8_t>();
  const auto dt = wire::is_valid_dtype(code) ? static_cast<wire::DType>(code) : wire::DType::kFloat32;
  const auto type = wire::to_torch(dt);
  const int ndim = in.take<std::uint8_t>() % 3;
  std::vector<std::int64_t> shape;
  std::int64_t numel = 1;
  for (int k = 0; k < ndim; ++k) {
    const std::int64_t d = in.take<std::uint16_t>();
    numel *= d;
    if (numel > max_elements) {
      shape.assign(static_cast<std::size_t>(ndim), 0);
      break;
    }
    shape.push_back(d);
  }
  auto t = torch::zeros(shape, torch::TensorOptions().dtype(type));
  const auto bytes = t.nbytes();
  auto* p = static_cast<std::uint8_t*>(t.data_ptr());
  const auto fill = in.take<std::uint8_t>() % 4;
  if (fill == 0) {
    const auto b = in.take<std::uint8_t>();
    if (bytes > 0) std::memset(p, b, bytes);
  } else if (fill == 1) {
    const std::string pattern = in.bytes(in.take<std::uint8_t>());
    if (!pattern.empty())
      for (std::size_t i = 0; i < bytes; ++i) p[i] = static_cast<std::uint8_t>(pattern[i % pattern.size()]);
  } else if (fill == 2) {
    const std::string picks = in.bytes(in.take<std::uint8_t>());
    if (!picks.empty() && t.numel() > 0) {
      const auto n = static_cast<std::size_t>(t.numel());
      if (c10::isFloatingType(type)) {
        std::vector<double> v(n);
        for (std::size_t i = 0; i < n; ++i)
          v[i] = kFloatSpecials[static_cast<std::uint8_t>(picks[i % picks.size()]) % kFloatSpecials.size()];
        t = torch::tensor(v, torch::kFloat64).to(type).reshape(shape).contiguous();
      } else {
        std::vector<std::int64_t> v(n);
        for (std::size_t i = 0; i < n; ++i)
          v[i] = kIntSpecials[static_cast<std::uint8_t>(picks[i % picks.size()]) % kIntSpecials.size()];
        auto w = torch::tensor(v, torch::kInt64);
        t = (type == torch::kBool ? w.ne(0) : w.to(type)).reshape(shape).contiguous();
      }
    }
  } else {
    const std::string b = in.bytes(bytes);
    if (!b.empty()) std::memcpy(p, b.data(), b.size());
  }
  if (type == torch::kBool && t.numel() > 0) {  // a bool byte other than 0 or 1 is no bool
    auto* q = static_cast<std::uint8_t*>(t.data_ptr());
    for (std::int64_t i = 0; i < t.numel(); ++i) q[i] = q[i] != 0;
  }
  return t;
}

bool same_bytes(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const auto x = a.contiguous(), y = b.contiguous();
  return x.nbytes() == y.nbytes() && (x.nbytes() == 0 || std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0);
}

bool finite_within(const torch::Tensor& t, double bound) {
  if (t.numel() == 0) return true;
  const auto a = t.abs();
  return torch::isfinite(t).all().item<bool>() && a.max().item<float>() <= static_cast<float>(bound);
}

// ---------------------------------------------------------------------------------------
// The session, driven and checked

// What one input reached (the throwaway drivers read it; the target does not).
struct Reached {
  int ops = 0, admitted = 0, refused_joins = 0, started = 0, relayed = 0, round3 = 0, cuts = 0, steps = 0,
      evaluations = 0, ended = 0, late = 0, refusals = 0;
};

class Session {
 public:
  Session(int parties, bool sum, std::vector<std::uint64_t> ids)
      : k_(parties),
        sum_(sum),
        ids_(std::move(ids)),
        options_(options_of(parties, sum)),
        model_(model_of(parties, sum)),
        trainer_(train_options(), clone_back(model_.back), {model_.joined_width()}),
        join_(trainer_, options_, model_.widths),
        now_(Clock::time_point{} + 1h) {}

  Reached reached;

  void step(Input& in) {
    ++reached.ops;
    switch (in.take<std::uint8_t>() % 8) {
      case 0: join(in); break;
      case 1: {
        const auto s = who(in);
        deliver_psi(s, wire::make_message(wire::Psi{0, 0}));
        break;
      }
      case 2: {
        const auto s = who(in);
        const auto round = in.take<std::uint8_t>();
        const auto p = in.take<std::uint8_t>();
        const std::uint32_t peer = p == 0xff ? in.take<std::uint32_t>() : p;
        auto t = read_tensor_bounded(in, kPsiElements);
        deliver_psi(s, wire::make_message(wire::Psi{round, peer}, {std::move(t)}));
        break;
      }
      case 3: {
        const auto s = who(in);
        const auto flags = in.take<std::uint8_t>();
        const auto b = in.take<std::uint8_t>();
        const std::uint64_t step = b == 0xff ? in.take<std::uint64_t>() : b;
        std::vector<torch::Tensor> t;
        for (int i = 0; i < ((flags >> 2) & 3); ++i) t.push_back(read_tensor_bounded(in, kCutElements));
        deliver_cut(s, wire::make_message(wire::Activations{step, (flags & 1) != 0, (flags & 2) == 0}, std::move(t)));
        break;
      }
      case 4:
        now_ += std::chrono::milliseconds(in.take<std::uint16_t>());
        tick();
        break;
      case 5: left(who(in)); break;
      case 6: {
        const auto s = who(in);
        const bool to_cut = (in.take<std::uint8_t>() & 1) != 0;
        wire::Message m;
        m.type = static_cast<wire::MsgType>(in.take<std::uint8_t>());
        m.meta = in.bytes(in.take<std::uint8_t>());
        const int count = in.take<std::uint8_t>() % 3;
        for (int i = 0; i < count; ++i) m.tensors.push_back(read_tensor_bounded(in, kCutElements));
        if (to_cut)
          deliver_cut(s, m);
        else
          deliver_psi(s, m);
        break;
      }
      default: now_ += std::chrono::milliseconds(in.take<std::uint16_t>()); break;
    }
    agree();
  }

 private:
  struct Sess {
    int party = 0;
    std::string order;  // Join.vertical_order
    bool live = true;  // a party, as far as the model knows
    bool ready = false;
  };
  struct Gathering {  // the step being gathered
    std::uint64_t step = 0;
    bool train = true;
    std::int64_t batch = 0;
    Clock::time_point deadline;
    std::set<std::uint64_t> in;
  };

  static train::TrainOptions train_options() {
    train::TrainOptions t;
    t.lr = 0.1;
    return t;
  }
  static torch::nn::Sequential clone_back(const torch::nn::Sequential& back) {
    return torch::nn::Sequential(std::dynamic_pointer_cast<torch::nn::SequentialImpl>(back->clone()));
  }

  std::uint64_t who(Input& in) const { return 1 + in.take<std::uint8_t>() % (sessions_.size() + 1); }
  Sess* sess(std::uint64_t s) { return s >= 1 && s <= sessions_.size() ? &sessions_[s - 1] : nullptr; }
  bool live(std::uint64_t s) {
    const auto* x = sess(s);
    return x != nullptr && x->live;
  }
  std::vector<std::uint64_t> parties() const {
    std::vector<std::uint64_t> p;
    for (std::size_t i = 0; i < sessions_.size(); ++i)
      if (sessions_[i].live) p.push_back(i + 1);
    return p;
  }
  std::optional<std::uint64_t> session_of(int k) const {
    for (std::size_t i = 0; i < sessions_.size(); ++i)
      if (sessions_[i].live && sessions_[i].party == k) return i + 1;
    return std::nullopt;
  }
  bool started() const {
    const auto p = parties();
    if (static_cast<int>(p.size()) != k_) return false;
    for (auto s : p)
      if (!sessions_[s - 1].ready) return false;
    return true;
  }
  // Started, and party 0's round 3 relayed to every other party: the steps may begin.
  bool aligned() const {
    if (!started()) return false;
    const auto s0 = *session_of(0);
    for (int k = 1; k < k_; ++k)
      if (!was_relayed(3, s0, *session_of(k))) return false;
    return true;
  }
  std::int64_t width(int k) const { return model_.widths.at(static_cast<std::size_t>(k)); }
  // VerticalJoin's per-party bound: summed, max_abs_value / K less a margin for float32's
  // rounding (K * 2^-23 relative).
  double bound() const {
    return trainer_.limits().max_abs_value / (sum_ ? k_ : 1) * (sum_ && k_ > 1 ? 1.0 - k_ * 0x1p-23 : 1.0);
  }

  // is_party and joined() as the model has them.
  void agree() const {
    const int n = join_.joined();
    check(n >= 0 && n <= k_, "joined() is " + std::to_string(n) + " of " + std::to_string(k_) + " parties");
    int live_n = 0;
    for (std::size_t i = 0; i < sessions_.size(); ++i) {
      check(join_.is_party(i + 1) == sessions_[i].live,
            "session " + std::to_string(i + 1) + (sessions_[i].live ? " is no party, yet was never ended"
                                                                     : " is still a party after it ended or left"));
      live_n += sessions_[i].live;
    }
    check(!join_.is_party(0) && !join_.is_party(sessions_.size() + 1), "a session never admitted is a party");
    check(n == live_n, "joined() is " + std::to_string(n) + ", the parties' sessions " + std::to_string(live_n));
  }

  // The sessions ended: every party (`gone`: the one that left is one no more), distinct; the
  // messages out go to parties.
  void settle(const VerticalJoin::Result& r, std::optional<std::uint64_t> gone = std::nullopt) {
    if (!r.end.empty()) {
      std::set<std::uint64_t> ended;
      for (const auto& e : r.end) {
        check(ended.insert(e.session).second, "session " + std::to_string(e.session) + " ended twice in one result");
        check(live(e.session) && e.session != gone, "session " + std::to_string(e.session) + " ended but was no party");
        check(!join_.is_party(e.session), "session " + std::to_string(e.session) + " ended but is still a party");
        check(!e.reason.empty(), "an ending without a reason");
      }
      auto all = parties();
      all.erase(std::remove(all.begin(), all.end(), gone.value_or(0)), all.end());
      check(ended == std::set<std::uint64_t>(all.begin(), all.end()), "an ending that leaves some parties on");
      check(join_.joined() == 0, "parties remain after every party's session ended");
      check(r.out.empty(), "messages sent along with the end of every session");
      for (auto s : ended) sessions_[s - 1].live = false;
      gathering_.reset();
      gone_deadline_.reset();
      began_ = stepped_ = false;
      ++reached.ended;
    }
    for (const auto& [s, m] : r.out)
      check(join_.is_party(s), "a message to session " + std::to_string(s) + ", no party");
    check(!r.started || !r.out.empty(), "a start without round 0 to the parties");
  }

  void join(Input& in) {
    const int k = in.take<std::uint8_t>() % (k_ + 1);
    const int flaw = in.take<std::uint8_t>() % 13;
    wire::Join j;
    j.client_name = "p" + std::to_string(k);
    j.model = "vertical";
    j.cut_shape = {k < k_ ? width(k) : 64};
    j.samples = ids_.at(static_cast<std::size_t>(std::min(k, k_ - 1)));
    j.vertical_party = static_cast<std::uint32_t>(k);
    j.vertical_parties = static_cast<std::uint32_t>(k_);
    j.vertical_order = kOrder;
    switch (flaw) {
      case 1: j.model = "fmnist-cnn"; break;
      case 2: j.u_shaped = true; break;
      case 3: j.sync = true; break;
      case 4: j.inference = true; break;
      case 5: j.cut.values = wire::CutValues::kBf16; break;
      case 6: j.cut_shape = {j.cut_shape[0] + 1}; break;
      case 7: j.cut_shape = {}; break;
      case 8: j.samples = 0; break;
      case 9: j.samples = kMaxIds + 1; break;
      case 10: j.vertical_parties = static_cast<std::uint32_t>(k_ + 1); break;
      case 11: j.vertical_parties = 0; break;
      case 12: j.vertical_order = "seed 2"; break;
      default: break;
    }
    const auto why = join_.check_join(j);
    bool same_order = true;  // as every party's in
    for (const auto& x : sessions_) same_order &= !x.live || x.order == j.vertical_order;
    const bool fits = (flaw == 0 || flaw == 12) && same_order && k < k_ && !session_of(k) && !gone_deadline_ && !began_;
    if (why) {
      check(!fits, "an honest Join for the free index " + std::to_string(k) + " refused: " + *why);
      ++reached.refused_joins;
      return;
    }
    check(fits, "a Join accepted with flaw " + std::to_string(flaw) + " for index " + std::to_string(k) +
                    (same_order ? "" : " with another batch order than the parties'") +
                    (gone_deadline_ ? " while a party of the last cohort is gone" : "") +
                    (began_ ? " after the parties started" : ""));
    const std::uint64_t s = sessions_.size() + 1;
    join_.admit(s, j.client_name, j);
    sessions_.push_back(Sess{k, j.vertical_order});
    ++reached.admitted;
  }

  // psi() or cut() from session s: only ProtocolError, and only from where the model expects one.
  template <class F>
  std::optional<VerticalJoin::Result> call(F&& f) {
    try {
      return f();
    } catch (const ProtocolError&) {
      ++reached.refusals;
      return std::nullopt;
    }
  }

  bool was_relayed(std::uint8_t round, std::uint64_t from, std::uint64_t to) const {
    return relayed_.count({round, from, to}) == 1;
  }

  // Whether the join should take this Psi from the party of session s (docs/vertical.md:
  // round 0 once; then, all ready, each round once, in turn, between party 0 and another
  // party, of the size announced).
  bool psi_fits(std::uint64_t s, const wire::Message& msg) const {
    wire::Psi m;
    try {
      m = wire::meta_as<wire::Psi>(msg);
    } catch (const ProtocolError&) {
      return false;
    }
    const auto& from = sessions_[s - 1];
    if (m.round == 0 && msg.tensors.empty()) return !from.ready;
    if (!started() || msg.tensors.size() != 1) return false;
    const int f = from.party;
    if (m.peer >= static_cast<std::uint32_t>(k_) || m.peer == static_cast<std::uint32_t>(f) || (f != 0 && m.peer != 0))
      return false;
    const int t = static_cast<int>(m.peer);
    const std::uint64_t s0 = *session_of(0), st = *session_of(t);
    const auto& x = msg.tensors[0];
    const auto n = static_cast<std::uint64_t>(x.numel());
    auto bytes = [&](std::uint64_t want) { return x.scalar_type() == torch::kUInt8 && x.dim() == 1 && n == want; };
    switch (m.round) {
      case 1: return !was_relayed(1, s, st) && bytes(ids_.at(static_cast<std::size_t>(f)) * vertical::kPointBytes);
      case 2:
        return f != 0 && was_relayed(1, s0, s) && !was_relayed(2, s, s0) && bytes(ids_.at(0) * vertical::kTagBytes);
      case 3:
        return f == 0 && was_relayed(1, st, s0) && was_relayed(2, st, s0) && !was_relayed(3, s0, st) &&
               x.scalar_type() == torch::kInt64 && x.dim() == 1 &&
               n <= std::min(ids_.at(0), ids_.at(static_cast<std::size_t>(t)));
      default: return false;
    }
  }

  void deliver_psi(std::uint64_t s, const wire::Message& msg) {
    const bool party = live(s);
    const bool fits = party && !gone_deadline_ && psi_fits(s, msg);
    auto r = call([&] { return join_.psi(s, msg); });
    if (!party) {
      check(!r, "a Psi from session " + std::to_string(s) + ", no party, was taken");
      return;
    }
    if (gone_deadline_) {  // a party of a cohort that stepped left: the others end at their next message
      check(r && !r->end.empty(), "a Psi while a party is gone did not end the others");
      settle(*r);
      return;
    }
    check(r.has_value() == fits, fits ? "a Psi refused that the rules allow" : "a Psi taken that the rules refuse");
    if (!r) return;
    check(r->end.empty(), "a Psi ended sessions");
    check(!r->started || (msg.tensors.empty()), "a relay said the start");
    const auto m = wire::meta_as<wire::Psi>(msg);
    auto& from = sessions_[s - 1];
    if (m.round == 0 && msg.tensors.empty()) {
      check(!from.ready, "round 0 taken twice from session " + std::to_string(s));
      from.ready = true;
      if (!started()) {
        check(r->out.empty() && !r->started, "round 0 went out before all parties were ready");
      } else {
        check(r->started, "the start not said");
        std::set<std::uint64_t> to;
        for (const auto& [d, o] : r->out) {
          check(o.type == wire::MsgType::kPsi && o.tensors.empty(), "the start is not a bare Psi");
          const auto go = wire::meta_as<wire::Psi>(o);
          check(go.round == 0 && go.peer == 0, "the start is not round 0");
          check(to.insert(d).second, "round 0 twice to one party");
        }
        const auto p = parties();
        check(to == std::set<std::uint64_t>(p.begin(), p.end()), "round 0 did not go to every party");
        // A new cohort is a new run: the back as the parties' reference starts it.
        check(trainer_.stats().steps == 0, "a new cohort started on a back that has taken steps");
        const auto now_params = trainer_.back()->parameters(), initial = model_.back->parameters();
        for (std::size_t i = 0; i < initial.size(); ++i)
          check(torch::equal(now_params.at(i), initial[i]),
                "a new cohort started on a back that is not the initial one");
        began_ = true;
        ++reached.started;
      }
      settle(*r);
      return;
    }
    // A relay.
    check(started(), "a Psi relayed before all parties were ready");
    check(msg.tensors.size() == 1 && r->out.size() == 1, "a relay is one Psi of one tensor");
    const auto& [d, o] = r->out[0];
    check(live(d), "a Psi relayed to session " + std::to_string(d) + ", no party");
    const int f = from.party, t = sessions_[d - 1].party;
    check(o.type == wire::MsgType::kPsi, "a relay that is no Psi");
    const auto go = wire::meta_as<wire::Psi>(o);
    check(go.round == m.round && go.peer == static_cast<std::uint32_t>(f),
          "a relay names another round or sender than the one sent");
    check(static_cast<std::uint32_t>(t) == m.peer, "a Psi relayed to another party than the one named");
    check(o.tensors.size() == 1 && same_bytes(o.tensors[0], msg.tensors[0]), "a relay's tensor is not the one sent");
    check(f != t && (f == 0 || t == 0), "a Psi relayed between two parties other than party 0");
    const auto& x = msg.tensors[0];
    const std::uint64_t n = static_cast<std::uint64_t>(x.numel());
    const bool vec = x.dim() == 1;
    const std::uint64_t s0 = *session_of(0), other = f == 0 ? d : s;
    const auto ids0 = ids_.at(0), ids_other = ids_.at(static_cast<std::size_t>(f == 0 ? t : f));
    switch (m.round) {
      case 1:
        check(x.scalar_type() == torch::kUInt8 && vec &&
                  n == ids_.at(static_cast<std::size_t>(f)) * vertical::kPointBytes,
              "round 1 relayed without 32 bytes per announced ID");
        break;
      case 2:
        check(f != 0, "party 0's round 2 relayed");
        check(was_relayed(1, s0, s), "round 2 relayed before party 0's round 1 to its sender");
        check(x.scalar_type() == torch::kUInt8 && vec && n == ids0 * vertical::kTagBytes,
              "round 2 relayed without 16 bytes per ID of party 0");
        break;
      case 3:
        check(f == 0, "round 3 relayed from a party other than party 0");
        check(was_relayed(1, other, s0) && was_relayed(2, other, s0),
              "round 3 relayed before the party's rounds 1 and 2");
        check(x.scalar_type() == torch::kInt64 && vec && n <= std::min(ids0, ids_other),
              "round 3 relayed with more positions than the smaller count of IDs");
        ++reached.round3;
        break;
      default: check(false, "round " + std::to_string(m.round) + " relayed");
    }
    const bool fresh = relayed_.insert({m.round, s, d}).second;
    check(fresh, "round " + std::to_string(m.round) + " relayed twice from one party to another");
    ++reached.relayed;
    settle(*r);
  }

  // Whether party k's Activations are a well-formed cut (a parses into a).
  bool well_formed(int k, const wire::Message& msg, wire::Activations& a) const {
    try {
      a = wire::meta_as<wire::Activations>(msg);
    } catch (const ProtocolError&) {
      return false;
    }
    const bool active = k == 0;
    if (a.has_labels != active || msg.tensors.size() != (active ? 2u : 1u)) return false;
    const auto& z = msg.tensors[0];
    if (z.scalar_type() != torch::kFloat32 || z.dim() != 2 || z.size(0) < 1 ||
        z.size(0) > server::BackTrainer::kMaxBatch || z.size(1) != width(k) || !finite_within(z, bound()))
      return false;
    if (!active) return true;
    const auto& y = msg.tensors[1];
    return y.scalar_type() == torch::kInt64 && y.dim() == 1 && y.size(0) == z.size(0) &&
           y.min().item<std::int64_t>() >= 0 && y.max().item<std::int64_t>() < kClasses;
  }

  void deliver_cut(std::uint64_t s, const wire::Message& msg) {
    const bool party = live(s);
    const bool was_aligned = aligned();
    wire::Activations a;
    const bool good = party && well_formed(sessions_[s - 1].party, msg, a);
    auto r = call([&] { return join_.cut(s, msg, now_); });
    if (!party) {
      check(!r, "Activations from session " + std::to_string(s) + ", no party, were taken");
      return;
    }
    if (gone_deadline_) {
      check(r && !r->end.empty(), "a cut while a party is gone did not end the others");
      settle(*r);
      return;
    }
    if (!was_aligned || !good) {
      check(!r, std::string("a cut taken ") + (was_aligned ? "that is not well formed" : "before the PSI was done"));
      return;
    }
    const bool in_step = !gathering_ || (gathering_->step == a.step && gathering_->train == a.train &&
                                         gathering_->batch == msg.tensors[0].size(0));
    if (!in_step) {
      check(r && !r->end.empty() && r->out.empty(), "a cut out of step with the step gathered did not end the parties");
      settle(*r);
      return;
    }
    if (gathering_ && gathering_->in.count(s)) {
      check(!r, "a party's second cut of a step was taken");
      return;
    }
    check(r.has_value(), "a well-formed cut in step was refused");
    ++reached.cuts;
    const std::int64_t batch = msg.tensors[0].size(0);
    if (!gathering_) gathering_ = Gathering{a.step, a.train, batch, now_ + kStepTimeout, {}};
    gathering_->in.insert(s);
    const bool complete = static_cast<int>(gathering_->in.size()) == k_;
    if (!complete) {
      check(r->out.empty() && r->end.empty(), "a step answered before every party's cut was in");
      return;
    }
    if (!r->end.empty()) {
      for (const auto& e : r->end)
        check(e.reason.find("was refused") == std::string::npos || e.reason.find("not finite") != std::string::npos,
              "the back refused a step whose cuts the join took: " + e.reason);
      settle(*r);
      return;
    }
    gathering_.reset();
    stepped_ = true;
    std::set<std::uint64_t> to;
    const torch::Tensor* first = nullptr;  // summed, every party gets the whole gradient
    for (const auto& [d, o] : r->out) {
      check(to.insert(d).second, "two answers to one party for one step");
      check(live(d), "a step's answer to a session that is no party");
      if (!a.train) {
        check(o.type == wire::MsgType::kEvalResult && o.tensors.empty(), "an evaluation answered with no EvalResult");
        const auto e = wire::meta_as<wire::EvalResult>(o);
        check(e.id == a.step && e.samples == static_cast<std::uint64_t>(batch), "an EvalResult of another step");
        continue;
      }
      check(o.type == wire::MsgType::kCutGrad, "a training step answered with no CutGrad");
      check(wire::meta_as<wire::CutGrad>(o).step == a.step, "a CutGrad of another step");
      const std::int64_t w = sum_ ? model_.joined_width() : width(sessions_[d - 1].party);
      check(o.tensors.size() == 1, "a CutGrad without exactly one tensor");
      const auto& g = o.tensors[0];
      check(g.scalar_type() == torch::kFloat32 && g.dim() == 2 && g.size(0) == batch && g.size(1) == w,
            "a CutGrad of shape " + torch::str(g.sizes()) + " for a cut of " + std::to_string(batch) + " x " +
                std::to_string(w));
      check(torch::isfinite(g).all().item<bool>(), "a CutGrad that is not finite");
      if (sum_ && first != nullptr) check(same_bytes(g, *first), "summed cuts, yet the parties' CutGrads differ");
      if (first == nullptr) first = &g;
    }
    const auto p = parties();
    check(to == std::set<std::uint64_t>(p.begin(), p.end()), "a step not answered to every party");
    ++(a.train ? reached.steps : reached.evaluations);
    settle(*r);
  }

  void tick() {
    const bool gone_due = gone_deadline_ && now_ >= *gone_deadline_;
    const bool late = gathering_ && now_ >= gathering_->deadline;
    const auto r = join_.tick(now_);
    check(r.out.empty(), "tick sent messages");
    check(r.end.empty() == !(gone_due || late),
          r.end.empty() ? "tick ended no one past a deadline" : "tick ended the parties before a deadline");
    reached.late += late && !gone_due;
    settle(r);
  }

  void left(std::uint64_t s) {
    const bool party = live(s);
    const auto r = join_.left(s, "gone", now_);
    check(!join_.is_party(s), "a session that left is still a party");
    if (!party) {
      check(r.end.empty() && r.out.empty(), "a session that was no party left and ended others");
      return;
    }
    const bool last = parties().size() == 1;
    const bool end_now = !last && began_ && (gathering_ || !stepped_);
    check(r.out.empty(), "left sent messages");
    check(r.end.empty() == !end_now, r.end.empty() ? "a party left during the PSI or a step and the others go on"
                                                   : "a party left before the start or between steps and the others "
                                                     "were ended at once");
    settle(r, s);
    sessions_[s - 1].live = false;
    if (last) {
      gathering_.reset();
      gone_deadline_.reset();
      began_ = stepped_ = false;
    } else if (!end_now && began_ && !gone_deadline_) {
      gone_deadline_ = now_ + VerticalJoin::kLeaveGrace;
    }
  }

  const int k_;
  const bool sum_;
  const std::vector<std::uint64_t> ids_;
  const server::VerticalOptions options_;
  const vertical::VerticalModel& model_;
  server::BackTrainer trainer_;
  VerticalJoin join_;
  Clock::time_point now_;

  std::vector<Sess> sessions_;  // session s is sessions_[s - 1]
  std::optional<Gathering> gathering_;
  std::optional<Clock::time_point> gone_deadline_;  // a party left between steps
  bool began_ = false;                              // this cohort's round 0 went out
  bool stepped_ = false;                            // this cohort took a step
  std::set<std::array<std::uint64_t, 3>> relayed_;  // {round, from session, to session}
};

Reached play(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  const auto setup = in.take<std::uint8_t>();
  const int parties = 2 + (setup & 1);
  std::vector<std::uint64_t> ids;
  for (int k = 0; k < parties; ++k) ids.push_back(1 + in.take<std::uint8_t>() % kMaxIds);
  Session session(parties, (setup & 2) != 0, std::move(ids));
  for (std::size_t i = 0; i < kMaxOps && !in.empty(); ++i) session.step(in);
  return session.reached;
}

}  // namespace

int fuzz_one(const std::uint8_t* data, std::size_t size) {
  (void)play(data, size);
  return 0;
}

}  // namespace cutlayer::fuzz::vertical_join

CUTLAYER_FUZZ_ENTRY(vertical_join)
