// SIGINT/SIGTERM → a flag the main loops poll, for a clean shutdown.
#pragma once

#include <atomic>

namespace cutlayer {

// Installs the handlers (call once, from main). A second signal exits at once.
void install_stop_handlers();
// The flag the handlers set; loops check it between polls.
const std::atomic<bool>& stop_flag();
// Sets the flag from code (tests, fatal paths).
void request_stop();

}  // namespace cutlayer
