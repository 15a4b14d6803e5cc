// Internal: receiving and sending multipart messages with a cap on the part count.
#pragma once

#include <zmq.hpp>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <vector>

namespace cutlayer::transport::detail {

// Receives one whole multipart message without waiting. Parts past `max_parts` are
// read and discarded (`truncated` is set). False when nothing was waiting.
inline bool recv_frames(zmq::socket_t& s, std::size_t max_parts,
                        std::vector<zmq::message_t>& parts, bool& truncated) {
  parts.clear();
  truncated = false;
  zmq::message_t part;
  if (!s.recv(part, zmq::recv_flags::dontwait)) return false;
  while (true) {
    const bool more = part.more();
    if (parts.size() < max_parts) parts.push_back(std::move(part));
    else truncated = true;
    if (!more) break;
    part = zmq::message_t();
    (void)s.recv(part, zmq::recv_flags::none);  // the rest of a multipart is already here
  }
  return true;
}

// Sends `prefix` (a routing id, when non-null) and then `frames`. False on timeout.
inline bool send_frames(zmq::socket_t& s, zmq::message_t* prefix,
                        std::vector<zmq::message_t>& frames) {
  if (prefix != nullptr && !s.send(*prefix, zmq::send_flags::sndmore)) return false;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    if (!s.send(frames[i], flags)) return false;
  }
  return true;
}

// zmq::poll that treats a signal (EINTR) as "nothing ready" so callers re-check their
// stop flag instead of dying.
inline int poll_items(zmq::pollitem_t* items, std::size_t n, std::chrono::milliseconds timeout) {
  try {
    return zmq::poll(items, n, timeout);
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return 0;
    throw;
  }
}

inline std::size_t total_bytes(const std::vector<zmq::message_t>& frames) {
  std::size_t n = 0;
  for (const auto& f : frames) n += f.size();
  return n;
}

}  // namespace cutlayer::transport::detail
