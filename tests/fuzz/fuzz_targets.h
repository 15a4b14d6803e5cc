// Every fuzz target's entry function, for the regression replay (the libFuzzer builds
// link one target each). Keep in step with targets.cmake.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#define CUTLAYER_FUZZ_TARGET_LIST(X) \
  X(wire_decode)                     \
  X(sealed_open)                     \
  X(sparse_wire)                     \
  X(cut_decode)                      \
  X(sync_messages)                   \
  X(config)                          \
  X(keys)                            \
  X(allow_list)                      \
  X(psi_rounds)                      \
  X(vertical_join)

namespace cutlayer::fuzz {

#define CUTLAYER_FUZZ_DECLARE(name) \
  namespace name {                  \
  int fuzz_one(const std::uint8_t* data, std::size_t size); \
  }
CUTLAYER_FUZZ_TARGET_LIST(CUTLAYER_FUZZ_DECLARE)
#undef CUTLAYER_FUZZ_DECLARE

struct Target {
  const char* name;
  int (*fn)(const std::uint8_t*, std::size_t);
};

inline std::vector<Target> all_targets() {
  return {
#define CUTLAYER_FUZZ_ENTRY_OF(name) Target{#name, &name::fuzz_one},
      CUTLAYER_FUZZ_TARGET_LIST(CUTLAYER_FUZZ_ENTRY_OF)
#undef CUTLAYER_FUZZ_ENTRY_OF
  };
}

}  // namespace cutlayer::fuzz
