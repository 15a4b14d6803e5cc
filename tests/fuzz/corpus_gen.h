// The seed corpus: a few valid inputs per target, made from the real encoders (wire::encode,
// SealedChannel::seal, sync::encode, the Aggregator's own snapshot), the configs/ files and
// fixed test keys, made fresh rather than kept in the repository.
// `cutlayer_fuzz_regressions --write-corpus DIR` (in the fuzz build:
// `cutlayer_fuzz_corpus build-fuzz/seeds`, as scripts/fuzz.sh does) writes them; the test
// binary also checks that they are still accepted, so a wire-format change shows up as a failing test
// and not as a corpus that silently stopped reaching anything.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace cutlayer::fuzz {

using Seeds = std::vector<std::pair<std::string, std::string>>;  // file name, bytes

// target name -> its seeds. `configs_dir`: the repository's configs/.
std::map<std::string, Seeds> generate_corpus(const std::string& configs_dir);

// Writes them as <dir>/<target>/<name>; prints what it wrote. Returns a process exit status.
int write_corpus(const std::string& dir, const std::string& configs_dir);

}  // namespace cutlayer::fuzz
