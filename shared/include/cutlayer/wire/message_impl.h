// Template definitions for message.h (kept out of the way of the declarations).
#pragma once

#include <cereal/archives/portable_binary.hpp>

#include <sstream>
#include <streambuf>

#include "cutlayer/error.h"
#include "cutlayer/wire/messages.h"

namespace cutlayer::wire {
namespace detail {

// A read-only streambuf over bytes we do not own (no copy into an istringstream).
class ViewBuf : public std::streambuf {
 public:
  ViewBuf(const char* data, std::size_t n) {
    char* p = const_cast<char*>(data);
    setg(p, p, p + n);
  }
  std::size_t remaining() const { return static_cast<std::size_t>(egptr() - gptr()); }
};

}  // namespace detail

template <class M>
Message make_message(const M& meta, std::vector<torch::Tensor> tensors) {
  std::ostringstream os(std::ios::binary);
  {
    cereal::PortableBinaryOutputArchive ar(os);
    ar(const_cast<M&>(meta));
  }
  Message msg;
  msg.type = M::kType;
  msg.meta = std::move(os).str();
  msg.tensors = std::move(tensors);
  return msg;
}

template <class M>
M meta_as(const Message& msg) {
  if (msg.type != M::kType)
    throw ProtocolError(std::string("expected a ") + std::string(msg_type_name(M::kType)) +
                        " message, got " + std::string(msg_type_name(msg.type)));
  detail::ViewBuf buf(msg.meta.data(), msg.meta.size());
  std::istream is(&buf);
  M out;
  try {
    cereal::PortableBinaryInputArchive ar(is);
    ar(out);
  } catch (const cereal::Exception& e) {
    throw ProtocolError(std::string(msg_type_name(M::kType)) + " meta does not parse: " + e.what());
  }
  if (buf.remaining() != 0)
    throw ProtocolError(std::string(msg_type_name(M::kType)) + " meta has trailing bytes");
  return out;
}

}  // namespace cutlayer::wire
