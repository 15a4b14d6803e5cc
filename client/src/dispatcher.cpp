#include "cutlayer/client/dispatcher.h"

#include "cutlayer/error.h"
#include "cutlayer/log.h"

namespace cutlayer::client {

Dispatcher::Dispatcher(transport::MessageLink& link, DispatcherOptions options, Now now)
    : link_(link), options_(options), now_(std::move(now)) {}

std::optional<wire::Message> Dispatcher::pump(const Want& want, const std::function<bool()>& done,
                                              const std::function<std::string()>& what) {
  const auto deadline = now_() + options_.timeout;
  for (;;) {
    if (done && done()) return std::nullopt;
    if (stop_ && *stop_) throw Interrupted{};
    if (now_() >= deadline)
      throw IoError("no " + what() + " within " + std::to_string(options_.timeout.count() / 1000) + " s");
    auto msg = link_.recv(options_.poll);
    if (!msg) continue;
    if (msg->type == wire::MsgType::kError)
      throw ProtocolError("server: " + log::peer_text(wire::meta_as<wire::ErrorMsg>(*msg).message, 1024));
    if (want && want(*msg)) return msg;
    if (strays_ && strays_(*msg)) continue;
    ++dropped_;  // a stale answer from before a re-join
  }
}

void Dispatcher::wait_for(const std::function<bool()>& done, const std::function<std::string()>& what) {
  pump(nullptr, done, what);
}

}  // namespace cutlayer::client
