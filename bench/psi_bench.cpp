// Private set intersection of sample IDs (vertical/psi.h): K parties of `ids` IDs each,
// party k holding [k * shift, k * shift + ids) with shift = ids * (1 - overlap), so that
// neighbours share `overlap` of their IDs, in shuffled row orders; all parties in this one
// process, as align() runs them (party 0 coordinates). One JSON line: wall seconds from the first party's round 1 to
// the last party's result, the bytes the rounds would put on the wire, and a check that
// every party found the true intersection.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cutlayer/vertical/psi.h"

using namespace cutlayer::vertical;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  CLI::App app{"PSI of sample IDs: K parties, wall time and bytes"};
  std::size_t ids = 100000;
  double overlap = 0.5;
  int parties = 2, threads = 0;
  app.add_option("--ids", ids, "IDs per party");
  app.add_option("--overlap", overlap, "share of a party's IDs that the other party holds (2 parties)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--parties", parties, "parties (party 0 coordinates)")->check(CLI::Range(2, 16));
  app.add_option("--threads", threads, "workers per party for the curve arithmetic (0: all cores)");
  CLI11_PARSE(app, argc, argv);

  // Party k holds IDs [k * shift, k * shift + ids): consecutive parties share `overlap`.
  const auto shift = static_cast<std::size_t>(static_cast<double>(ids) * (1.0 - overlap) + 0.5);
  std::mt19937_64 g(1);
  std::vector<std::vector<std::string>> sets(static_cast<std::size_t>(parties));
  for (std::size_t k = 0; k < sets.size(); ++k) {
    for (std::size_t i = 0; i < ids; ++i) sets[k].push_back("person-" + std::to_string(k * shift + i));
    std::shuffle(sets[k].begin(), sets[k].end(), g);
  }
  const std::size_t want = ids > shift * (sets.size() - 1) ? ids - shift * (sets.size() - 1) : 0;

  PsiOptions o;
  o.threads = threads;
  const auto t0 = Clock::now();
  std::vector<std::unique_ptr<PsiParty>> owned;
  std::vector<PsiParty*> ps;
  for (auto& s : sets) {
    owned.push_back(std::make_unique<PsiParty>(s, o));
    ps.push_back(owned.back().get());
  }
  const double round1_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const auto out = align(ps);
  const double psi_s = std::chrono::duration<double>(Clock::now() - t0).count();

  bool correct = true;
  for (std::size_t k = 0; k < out.size(); ++k) {
    correct = correct && out[k].size() == want;
    for (std::size_t j = 0; correct && j < out[k].size(); ++j)
      correct = ps[k]->ids()[out[k][j]] == ps[0]->ids()[out[0][j]];
  }
  // Between party 0 and each other party: round 1 both ways, the party's round 2 for party
  // 0's points, and the positions party 0 sends back (4 bytes each).
  std::size_t bytes = 0;
  for (std::size_t k = 1; k < ps.size(); ++k)
    bytes += (ids + ids) * kPointBytes + ids * kTagBytes + out[k].size() * 4;
  std::printf("{\"bench\":\"psi\",\"parties\":%d,\"psi_ids\":%zu,\"overlap\":%.2f,\"common\":%zu,\"psi_s\":%.3f,"
              "\"round1_s\":%.3f,\"bytes\":%zu,\"threads\":%u,\"correct\":%s}\n",
              parties, ids, overlap, out.empty() ? 0 : out[0].size(), psi_s, round1_s, bytes,
              threads > 0 ? static_cast<unsigned>(threads) : std::thread::hardware_concurrency(),
              correct ? "true" : "false");
  return correct ? 0 : 1;
}
