// Named spdlog loggers, one per component ("transport", "server", "client", ...).
#pragma once

#include <spdlog/spdlog.h>

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

}  // namespace cutlayer::log
