#include "cutlayer/stop_signal.h"

#include <csignal>
#include <unistd.h>

namespace cutlayer {
namespace {
std::atomic<bool> g_stop{false};

extern "C" void on_stop_signal(int sig) {
  if (g_stop.exchange(true)) _exit(128 + sig);  // second signal: stop now
}
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

const std::atomic<bool>& stop_flag() { return g_stop; }
void request_stop() { g_stop = true; }

}  // namespace cutlayer
