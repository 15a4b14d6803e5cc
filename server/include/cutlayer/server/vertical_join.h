// Vertical split learning at the server: K parties hold different features of the same
// people. It admits one session per party index, relays their private set intersection
// (vertical/psi.h) between party 0 and each other party, bounding every round by the
// counts announced at Join, and then assembles each step: it waits for all K parties' cuts
// of the step, joins them (vertical::join_cuts) with party 0's labels, lets the BackTrainer
// take the step on the joined cut, and returns each party its share of the gradient.
//
// Defined behaviour when a party fails the others (docs/vertical.md): a party that leaves,
// is late past step_timeout with its cut, or sends a step out of line with the others ends
// the session of every party, with an Error naming it; training cannot go on with a
// column missing (a party that leaves between steps: the others have kLeaveGrace to leave
// on their own, as parties that are done do). The BackTrainer's model stays; a new cohort
// may join.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cutlayer/server/back_trainer.h"
#include "cutlayer/vertical/parties.h"
#include "cutlayer/wire/message.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::server {

// The server config's "vertical" object.
struct VerticalOptions {
  int parties = 2;
  vertical::JoinMode join = vertical::JoinMode::kConcat;
  std::vector<std::int64_t> input_shape{1, 28, 28};  // the whole sample, before the parties' cut
  std::int64_t classes = 10;
  std::chrono::milliseconds step_timeout{60000};  // from a step's first cut to its last
  std::uint64_t max_ids = 10'000'000;             // the most sample IDs a party may announce
};

// The vertical model's parts as the server holds them: the parties' cut widths and the back.
vertical::VerticalModel vertical_model(const VerticalOptions& o, std::uint64_t seed);

class VerticalJoin {
 public:
  using Clock = std::chrono::steady_clock;
  using Outbox = BackTrainer::Outbox;
  struct Ending {
    std::uint64_t session = 0;
    std::string reason;
  };
  // What to send, and the sessions to end (each told why).
  struct Result {
    Outbox out;
    std::vector<Ending> end;
    bool started = false;  // this message made the last party ready: the PSI starts
  };

  // `trainer`'s back takes the joined cut; widths[k]: party k's cut features per sample.
  VerticalJoin(BackTrainer& trainer, VerticalOptions options, std::vector<std::int64_t> widths);

  // Why `join` cannot be a party here, or nullopt.
  std::optional<std::string> check_join(const wire::Join& join) const;
  // An accepted party.
  void admit(std::uint64_t session, const std::string& name, const wire::Join& join);
  // A PSI round from `session`, checked and relayed: round 0 (no tensor) says the party
  // listens; once all K do, round 0 goes to every party. ProtocolError when a round is out
  // of turn or its size is not the announced one.
  Result psi(std::uint64_t session, const wire::Message& msg);
  // A party's cut of a step (Activations). ProtocolError for a malformed cut.
  Result cut(std::uint64_t session, const wire::Message& msg, Clock::time_point now = Clock::now());
  // Ends the sessions when a step's cuts are overdue.
  Result tick(Clock::time_point now = Clock::now());
  // A party's session ended: the others' end too (between steps, after kLeaveGrace or at
  // their next message, so that parties that are done leave on their own).
  Result left(std::uint64_t session, const std::string& why, Clock::time_point now = Clock::now());
  static constexpr std::chrono::milliseconds kLeaveGrace{5000};

  bool is_party(std::uint64_t session) const { return index_of(session).has_value(); }
  int joined() const;
  const VerticalOptions& options() const { return options_; }

 private:
  struct Party {
    std::uint64_t session = 0;
    std::string name;
    std::uint64_t ids = 0;                // announced at Join
    std::string order;                    // Join.vertical_order
    std::vector<bool> round1_to;          // round 1 relayed to each party
    bool round2 = false, round3 = false;  // (party 0 to it: round 3)
    bool ready = false;                   // its round 0 came
  };
  struct Assembly {  // the step being gathered
    std::uint64_t step = 0;
    bool train = true;
    std::int64_t batch = 0;
    Clock::time_point deadline;
    std::vector<torch::Tensor> cuts;  // by party; undefined until it arrives
    torch::Tensor labels;
  };
  std::optional<int> index_of(std::uint64_t session) const;
  bool started() const;  // every party joined and ready
  bool aligned() const;  // ... and party 0's round 3 relayed to every other party
  Result ready(int k);
  void check_psi(int from, int to, std::uint8_t round, const torch::Tensor& t) const;
  torch::Tensor check_cut(int k, const wire::Activations& a, const wire::Message& msg, torch::Tensor& labels) const;
  Result end_all(const std::string& reason);
  Result take_step();

  BackTrainer& trainer_;
  VerticalOptions options_;
  std::vector<std::int64_t> widths_;
  std::vector<std::optional<Party>> parties_;
  std::optional<Assembly> assembly_;
  struct Gone {  // a party left between steps: the others are ended at the deadline
    std::string reason;
    Clock::time_point deadline;
  };
  std::optional<Gone> gone_;
  bool began_ = false;    // this cohort's round 0 went out (its PSI started)
  bool stepped_ = false;  // this cohort has taken a step (its PSI is done)
};

}  // namespace cutlayer::server
