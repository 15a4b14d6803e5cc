// cutlayer_fuzz_corpus <dir>: writes the seed corpus (corpus_gen.h) in the fuzz build,
// which has no GoogleTest; the normal build's cutlayer_fuzz_regressions --write-corpus
// does the same.
#include <iostream>

#include "corpus_gen.h"
#include "fuzz_common.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: cutlayer_fuzz_corpus <dir>   (scripts/fuzz.sh: build-fuzz/seeds)\n";
    return 2;
  }
  cutlayer::fuzz::init_once();
  return cutlayer::fuzz::write_corpus(argv[1], CUTLAYER_CONFIGS_DIR);
}
