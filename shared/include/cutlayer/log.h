// Named spdlog loggers, one per component ("transport", "server", "client", ...).
#pragma once

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cutlayer::log {

// The logger for `component`, created on first use (stderr, shared format and level).
std::shared_ptr<spdlog::logger> get(const std::string& component);

// Sets the level of every cutlayer logger, present and future. Accepts
// trace|debug|info|warn|error|critical|off; throws ConfigError otherwise.
void set_level(std::string_view level);

// The level names set_level accepts, quietest last.
const std::vector<std::string>& level_names();

// True when `level` is a valid name for set_level.
bool is_level(std::string_view level);

// A string a peer chose (a Leave reason, an error text, a PLAIN user name), made safe to
// log: every byte outside printable ASCII (control characters, DEL, bytes >= 0x80) and the
// backslash itself become \xNN, so a peer can neither start a new log line nor send
// terminal escape codes; at most `max_bytes` input bytes are kept, the rest counted
// ("... (N more bytes)"). Every peer-supplied string reaching a log goes through this.
inline constexpr std::size_t kMaxPeerText = 200;
std::string peer_text(std::string_view text, std::size_t max_bytes = kMaxPeerText);

// Rate limit for a log line a peer can trigger at will (a refused handshake, a dropped
// message): the first `burst` occurrences pass, then every `every`-th. Thread-safe.
//   if (std::uint64_t n; limiter.allow(n)) log->warn("... ({} so far)", n);
class Limiter {
 public:
  explicit Limiter(std::uint64_t burst = 8, std::uint64_t every = 1024) : burst_(burst), every_(every) {}
  // Counts one occurrence; true when it should be logged. `count` gets the running total.
  bool allow(std::uint64_t& count) {
    count = count_.fetch_add(1, std::memory_order_relaxed) + 1;
    return passes(count, burst_, every_);
  }
  std::uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  // The rule, for counters kept elsewhere.
  static bool passes(std::uint64_t count, std::uint64_t burst = 8, std::uint64_t every = 1024) {
    return count <= burst || (every != 0 && count % every == 0);
  }

 private:
  std::uint64_t burst_;
  std::uint64_t every_;
  std::atomic<std::uint64_t> count_{0};
};

}  // namespace cutlayer::log
