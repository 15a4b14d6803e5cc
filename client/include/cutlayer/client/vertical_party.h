// One party of vertical split learning (docs/vertical.md): it holds some features (a strip
// of each image, a group of a table's columns) of some people, named by sample IDs. It
// joins the server as party `party` of `parties`, finds the people every party holds by the
// private set intersection relayed by the server (vertical/psi.h; party 0 coordinates),
// then trains its front on them in the shared order: each step it sends its cut of the
// batch (party 0, the active party, with the labels), the server joins all parties' cuts
// and answers each with its share of the gradient. Test evaluation goes the same way over
// the test split, which every party holds whole (its own strip of each test sample).
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "cutlayer/client/dispatcher.h"
#include "cutlayer/client/vertical_options.h"
#include "cutlayer/data/dataset.h"
#include "cutlayer/privacy/nopeek.h"
#include "cutlayer/report/json.h"
#include "cutlayer/train/train_options.h"
#include "cutlayer/transport/client_transport.h"
#include "cutlayer/vertical/parties.h"

namespace cutlayer::vertical {
class PsiParty;
}

namespace cutlayer::client {

class VerticalParty {
 public:
  struct Options {
    std::string name = "party";
    train::TrainOptions train;
    privacy::PrivacyOptions nopeek;
    VerticalPartyOptions vertical;
    std::chrono::milliseconds reply_timeout{120000};
    std::string save_front;  // torch::save the trained front here (cutlayer-leakage reads it)
  };
  VerticalParty(transport::ClientTransport& link, Options options);
  ~VerticalParty();

  // Joins, aligns, trains until done (or `stop`), evaluates, leaves. Returns a JSON summary.
  std::string run(const std::atomic<bool>& stop);

 private:
  struct Totals {
    std::int64_t steps = 0, samples = 0;
    double last_loss = 0, seconds = 0;
    std::uint64_t train_bytes = 0;  // both ways, over the training steps
  };
  struct StepResult {
    double loss = 0, dcor = 0;
    std::int64_t correct = 0;
  };
  std::string train_all(vertical::PsiParty& psi, const std::atomic<bool>& stop);
  void join();
  // The training rows all parties hold (indices into data_.train), in the shared order.
  std::vector<std::int64_t> align(vertical::PsiParty& psi);
  template <class Work>
  auto listening(const std::string& what, Work&& work) -> decltype(work());
  Dispatcher& psi_wait();
  std::vector<std::size_t> coordinate(vertical::PsiParty& psi);
  std::vector<std::size_t> follow(vertical::PsiParty& psi);
  StepResult step(const torch::Tensor& x, const torch::Tensor& y, std::int64_t step);
  Totals train_loop(const data::Dataset& set, const std::atomic<bool>& stop);
  std::pair<double, double> evaluate();  // test accuracy, loss (-1, -1 without a test split)
  report::Json summary(const Totals& t, double acc, double loss) const;
  bool active() const { return options_.vertical.party == 0; }

  transport::ClientTransport& link_;
  Options options_;
  Dispatcher dispatch_;
  std::unique_ptr<Dispatcher> psi_dispatch_;  // the PSI's longer waits (vertical.start_timeout_ms)
  const std::atomic<bool>* stop_ = nullptr;
  data::Split data_;        // this party's strip of every sample
  std::vector<std::int64_t> rows_;  // the training rows it holds, in row order
  std::vector<std::string> ids_;    // their IDs
  torch::nn::Sequential front_;
  std::int64_t width_ = 0;  // the cut's features per sample
  std::unique_ptr<torch::optim::Optimizer> opt_;
  std::int64_t aligned_ = 0;
  double psi_seconds_ = 0;
  std::uint64_t eval_id_ = 1ull << 62;
};

}  // namespace cutlayer::client
