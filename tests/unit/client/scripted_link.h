// A MessageLink scripted in memory, with a clock the test drives: each quiet poll moves
// the clock on by the poll's timeout, so deadlines pass without sleeping.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <optional>
#include <vector>

#include "cutlayer/error.h"
#include "cutlayer/transport/link.h"

namespace cutlayer::test {

struct FakeClock {
  std::chrono::steady_clock::time_point t{};
  std::chrono::steady_clock::time_point operator()() const { return t; }
};

class ScriptedLink final : public transport::MessageLink {
 public:
  explicit ScriptedLink(FakeClock& clock) : clock_(clock) {}

  // What recv returns, in order; nullopt is a quiet poll (so is an empty inbox).
  std::deque<std::optional<wire::Message>> inbox;
  std::vector<wire::Message> sent;
  std::function<void()> before_recv;  // e.g. a signal arriving mid-wait
  bool gone = false;                  // recv throws IoError, as a dead session does
  int polls = 0;

  void send(const wire::Message& msg) override { sent.push_back(msg); }
  std::optional<wire::Message> recv(std::chrono::milliseconds timeout) override {
    ++polls;
    if (before_recv) before_recv();
    if (gone) throw IoError("the server has been silent past the session timeout");
    std::optional<wire::Message> m;
    if (!inbox.empty()) {
      m = std::move(inbox.front());
      inbox.pop_front();
    }
    clock_.t += m ? std::chrono::milliseconds(1) : timeout;
    return m;
  }

 private:
  FakeClock& clock_;
};

}  // namespace cutlayer::test
