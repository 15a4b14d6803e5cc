// The client's one wait loop. Everything the server sends comes through here: the reply a
// step waits for (matched by type and step/id, its meta decoded once), the aggregation's
// Updates and SyncRejects (handed to the stray handler, FrontSync's inbox), a server
// Error (ProtocolError with the server's words) and stale replies from before a re-join
// (dropped, counted). The model snapshot is the one reply FrontSync decodes itself. It owns the deadline and the stop flag; the clock is passed in so
// the tests drive time without sleeping.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "cutlayer/transport/link.h"
#include "cutlayer/wire/message.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::client {

// The request id a reply answers (the step, or the evaluation batch's id).
inline std::uint64_t reply_id(const wire::CutGrad& m) { return m.step; }
inline std::uint64_t reply_id(const wire::ServerActivations& m) { return m.step; }
inline std::uint64_t reply_id(const wire::EvalResult& m) { return m.id; }

template <class Meta>
struct Reply {
  Meta meta;
  wire::Message msg;
};

struct DispatcherOptions {
  std::chrono::milliseconds timeout{120000};  // one wait, from its start
  std::chrono::milliseconds poll{500};        // how often the stop flag is looked at
};

class Dispatcher {
 public:
  using Clock = std::chrono::steady_clock;
  using Now = std::function<Clock::time_point()>;
  // Takes Updates/SyncRejects (returns true when it took the message).
  using StrayHandler = std::function<bool(wire::Message&)>;

  Dispatcher(transport::MessageLink& link, DispatcherOptions options, Now now = &Clock::now);

  // Waits end with Interrupted once *stop is set.
  void set_stop(const std::atomic<bool>* stop) { stop_ = stop; }
  void set_stray_handler(StrayHandler h) { strays_ = std::move(h); }
  void send(const wire::Message& msg) { link_.send(msg); }

  // The reply of type Meta to request `id`.
  template <class Meta>
  Reply<Meta> await(std::uint64_t id);
  // The next message of type Meta, whatever it answers (the model snapshot); `what`
  // names it in the timeout's error.
  template <class Meta>
  Reply<Meta> await_first(const std::string& what);
  // The next message of type Meta that `match` takes (PSI rounds, by round and party).
  template <class Meta>
  Reply<Meta> await_where(const std::function<bool(const Meta&)>& match, const std::function<std::string()>& what) {
    return await_if<Meta>(match, what);
  }
  // Returns once done() holds: checked first and after every message handed on.
  // `what` names what was awaited, for the timeout's error.
  void wait_for(const std::function<bool()>& done, const std::function<std::string()>& what);

  std::uint64_t dropped() const { return dropped_; }  // stale messages nobody wanted

 private:
  using Want = std::function<bool(const wire::Message&)>;
  // The one loop: until `want` takes a message (returned) or done() holds (nullopt).
  std::optional<wire::Message> pump(const Want& want, const std::function<bool()>& done,
                                    const std::function<std::string()>& what);
  template <class Meta>
  Reply<Meta> await_if(const std::function<bool(const Meta&)>& match, const std::function<std::string()>& what);

  transport::MessageLink& link_;
  DispatcherOptions options_;
  Now now_;
  const std::atomic<bool>* stop_ = nullptr;
  StrayHandler strays_;
  std::uint64_t dropped_ = 0;
};

template <class Meta>
Reply<Meta> Dispatcher::await_if(const std::function<bool(const Meta&)>& match,
                                 const std::function<std::string()>& what) {
  std::optional<Meta> meta;
  auto msg = pump(
      [&](const wire::Message& m) {
        if (m.type != Meta::kType) return false;
        meta = wire::meta_as<Meta>(m);
        return match(*meta);
      },
      nullptr, what);
  return Reply<Meta>{std::move(*meta), std::move(*msg)};
}

template <class Meta>
Reply<Meta> Dispatcher::await(std::uint64_t id) {
  return await_if<Meta>([id](const Meta& m) { return reply_id(m) == id; }, [id] {
    return std::string(wire::msg_type_name(Meta::kType)) + " for step " + std::to_string(id);
  });
}

template <class Meta>
Reply<Meta> Dispatcher::await_first(const std::string& what) {
  return await_if<Meta>([](const Meta&) { return true; }, [&what] { return what; });
}

}  // namespace cutlayer::client
