// What the binaries share on their command line: the checkpoint flags laid over a config's
// "checkpoint" object, and a main that reports errors instead of aborting. Header-only, for
// the binaries (which link CLI11); the libraries never include it.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <exception>
#include <iostream>
#include <string>

#include "cutlayer/error.h"
#include "cutlayer/state/checkpoint.h"

namespace cutlayer::cli {

struct CheckpointFlags {
  std::string dir;
  std::int64_t every = -1;
  bool resume = false;

  // `unit`: what --checkpoint-every counts ("steps", "back steps").
  void add(CLI::App& app, const std::string& unit) {
    app.add_option("--checkpoint-dir", dir, "write sealed checkpoints here (overrides checkpoint.dir)");
    app.add_option("--checkpoint-every", every, unit + " between checkpoints (overrides checkpoint.every_steps)")
        ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 40));
    app.add_flag("--resume", resume, "start from the newest good checkpoint (checkpoint.resume)");
  }
  // Lays the flags over `o`; ConfigError naming `config_path` for --resume without a directory.
  void apply(state::CheckpointOptions& o, const std::string& config_path) const {
    if (!dir.empty()) o.dir = dir;
    if (every >= 0) o.every_steps = every;
    if (resume) o.resume = true;
    if (o.resume && !o.enabled())
      throw ConfigError(config_path + ": --resume needs a checkpoint directory (checkpoint.dir or --checkpoint-dir)");
  }
};

// Runs `run()`: cutlayer's errors exit 2, anything else (a LibTorch error, a bug) exits 3,
// each reported on stderr as "<name>: ..." rather than an abort.
template <class Run>
int guarded_main(const char* name, Run&& run) {
  try {
    return run();
  } catch (const Error& e) {
    std::cerr << name << ": " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << name << ": internal error: " << e.what() << "\n";
    return 3;
  }
}

}  // namespace cutlayer::cli
