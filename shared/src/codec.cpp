#include "frame_codec.h"

#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "cutlayer/error.h"
#include "cutlayer/wire/dtype.h"

namespace cutlayer::wire {
namespace {

// Meta payload: u32 tensor count | per tensor: u8 dtype, u8 ndim, ndim x i64 | type meta.
struct TensorDesc {
  DType dtype;
  std::vector<std::int64_t> shape;
  std::size_t bytes;
};

torch::Tensor wire_ready(const torch::Tensor& t) {
  torch::Tensor c = t;
  if (!c.device().is_cpu()) c = c.cpu();
  if (!c.is_contiguous()) c = c.contiguous();
  return c;
}

void free_tensor_ref(void*, void* hint) { delete static_cast<torch::Tensor*>(hint); }

// Overflow-checked a * b; false on overflow.
bool mul_checked(std::size_t a, std::size_t b, std::size_t& out) {
  if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a) return false;
  out = a * b;
  return true;
}

class Reader {
 public:
  Reader(const std::uint8_t* p, std::size_t n) : p_(p), end_(p + n) {}
  template <class T>
  T take(const char* what) {
    if (static_cast<std::size_t>(end_ - p_) < sizeof(T))
      throw ProtocolError(std::string("meta frame truncated while reading ") + what);
    T v;
    std::memcpy(&v, p_, sizeof v);
    p_ += sizeof v;
    return v;
  }
  const std::uint8_t* pos() const { return p_; }
  std::size_t left() const { return static_cast<std::size_t>(end_ - p_); }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

std::vector<TensorDesc> parse_descs(Reader& r, const Limits& limits) {
  const auto count = r.take<std::uint32_t>("tensor count");
  if (count > limits.max_tensors)
    throw ProtocolError("message declares " + std::to_string(count) + " tensors, cap is " +
                        std::to_string(limits.max_tensors));
  std::vector<TensorDesc> descs;
  descs.reserve(count);
  std::size_t total = 0;
  for (std::uint32_t i = 0; i < count; ++i) {
    const auto code = r.take<std::uint8_t>("dtype");
    if (!is_valid_dtype(code))
      throw ProtocolError("tensor " + std::to_string(i) + ": unknown dtype code " +
                          std::to_string(code));
    const auto ndim = r.take<std::uint8_t>("ndim");
    if (ndim > limits.max_dims)
      throw ProtocolError("tensor " + std::to_string(i) + ": " + std::to_string(ndim) +
                          " dimensions, cap is " + std::to_string(limits.max_dims));
    TensorDesc d{static_cast<DType>(code), {}, 0};
    d.shape.reserve(ndim);
    std::size_t numel = 1;
    for (std::uint8_t k = 0; k < ndim; ++k) {
      const auto dim = r.take<std::int64_t>("dimension");
      if (dim < 0 || !mul_checked(numel, static_cast<std::size_t>(dim), numel) ||
          numel > limits.max_tensor_bytes)
        throw ProtocolError("tensor " + std::to_string(i) + ": dimension " + std::to_string(dim) +
                            " is negative or the shape is absurdly large");
      d.shape.push_back(dim);
    }
    if (!mul_checked(numel, dtype_size(d.dtype), d.bytes) || d.bytes > limits.max_tensor_bytes)
      throw ProtocolError("tensor " + std::to_string(i) + " declares more than the cap of " +
                          std::to_string(limits.max_tensor_bytes) + " bytes");
    total += d.bytes;
    if (total > limits.max_message_bytes)
      throw ProtocolError("message tensors exceed the cap of " +
                          std::to_string(limits.max_message_bytes) + " bytes");
    descs.push_back(std::move(d));
  }
  return descs;
}

}  // namespace

zmq::message_t PlainCodec::make_frame(const Envelope::Bytes&, std::uint32_t, const void* data,
                                      std::size_t n, const torch::Tensor* owner) {
  if (owner != nullptr && n > 0) {
    // Zero-copy: the frame keeps a reference to the tensor until ZeroMQ has sent it.
    return zmq::message_t(const_cast<void*>(data), n, &free_tensor_ref, new torch::Tensor(*owner));
  }
  return zmq::message_t(data, n);
}

std::vector<zmq::message_t> encode(const Message& msg, std::uint64_t session_id,
                                   std::uint64_t sequence, FrameCodec& codec) {
  std::vector<torch::Tensor> tensors;
  tensors.reserve(msg.tensors.size());
  for (const auto& t : msg.tensors) tensors.push_back(wire_ready(t));

  // Meta payload.
  std::string meta;
  meta.reserve(4 + tensors.size() * (2 + 8 * 8) + msg.meta.size());
  auto put = [&meta](const void* p, std::size_t n) {
    meta.append(static_cast<const char*>(p), n);
  };
  const auto count = static_cast<std::uint32_t>(tensors.size());
  put(&count, sizeof count);
  for (const auto& t : tensors) {
    const auto code = static_cast<std::uint8_t>(from_torch(t.scalar_type()));
    const auto ndim = static_cast<std::uint8_t>(t.dim());
    put(&code, 1);
    put(&ndim, 1);
    for (auto s : t.sizes()) {
      const std::int64_t d = s;
      put(&d, sizeof d);
    }
  }
  meta += msg.meta;

  Envelope env;
  env.type = msg.type;
  env.flags = codec.flags();
  env.frame_count = 2 + count;
  env.session_id = session_id;
  env.sequence = sequence;
  const auto env_bytes = env.serialize();

  std::vector<zmq::message_t> frames;
  frames.reserve(env.frame_count);
  frames.emplace_back(env_bytes.data(), env_bytes.size());
  frames.push_back(codec.make_frame(env_bytes, 1, meta.data(), meta.size(), nullptr));
  for (std::uint32_t i = 0; i < count; ++i) {
    const auto& t = tensors[i];
    frames.push_back(codec.make_frame(env_bytes, 2 + i, t.data_ptr(), t.nbytes(), &t));
  }
  return frames;
}

Envelope parse_envelope(const std::vector<zmq::message_t>& frames, const Limits& limits) {
  if (frames.size() < 2)
    throw ProtocolError("message has " + std::to_string(frames.size()) +
                        " frames; at least envelope and meta are required");
  Envelope env = Envelope::parse(frames[0].data(), frames[0].size());
  if (env.frame_count != frames.size())
    throw ProtocolError("envelope declares " + std::to_string(env.frame_count) +
                        " frames, message has " + std::to_string(frames.size()));
  if (env.frame_count > 2 + limits.max_tensors)
    throw ProtocolError("message has more tensors than the cap of " +
                        std::to_string(limits.max_tensors));
  return env;
}

Message decode_body(const Envelope& env, std::vector<zmq::message_t>& frames,
                    const Limits& limits, FrameCodec& codec) {
  const auto env_bytes = env.serialize();
  const std::size_t overhead = codec.overhead();

  zmq::message_t& meta_frame = frames[1];
  if (meta_frame.size() < overhead || meta_frame.size() - overhead > limits.max_meta_bytes)
    throw ProtocolError("meta frame of " + std::to_string(meta_frame.size()) +
                        " bytes is outside (overhead, cap " +
                        std::to_string(limits.max_meta_bytes) + "]");
  if (!codec.open_frame(env_bytes, 1, meta_frame))
    throw AuthError("meta frame failed authentication");
  Reader r(meta_frame.data<std::uint8_t>(), meta_frame.size() - overhead);
  std::vector<TensorDesc> descs = parse_descs(r, limits);
  if (descs.size() + 2 != frames.size())
    throw ProtocolError("meta declares " + std::to_string(descs.size()) + " tensors, message has " +
                        std::to_string(frames.size() - 2) + " tensor frames");
  for (std::size_t i = 0; i < descs.size(); ++i) {
    const std::size_t got = frames[2 + i].size();
    if (got != descs[i].bytes + overhead)
      throw ProtocolError("tensor " + std::to_string(i) + " declares " +
                          std::to_string(descs[i].bytes) + " bytes (shape x " +
                          std::string(dtype_name(descs[i].dtype)) + "), its frame carries " +
                          std::to_string(got - std::min(got, overhead)));
  }

  Message msg;
  msg.type = env.type;
  msg.session_id = env.session_id;
  msg.sequence = env.sequence;
  msg.meta.assign(reinterpret_cast<const char*>(r.pos()), r.left());
  msg.tensors.reserve(descs.size());
  for (std::size_t i = 0; i < descs.size(); ++i) {
    zmq::message_t& frame = frames[2 + i];
    const auto index = static_cast<std::uint32_t>(2 + i);
    if (!codec.open_frame(env_bytes, index, frame))
      throw AuthError("tensor frame " + std::to_string(i) + " failed authentication");
    const auto options = torch::TensorOptions().dtype(to_torch(descs[i].dtype));
    const std::size_t bytes = descs[i].bytes;
    if (bytes == 0) {
      msg.tensors.push_back(torch::empty(descs[i].shape, options));
      continue;
    }
    // The frame moves to the heap first and its data is read there: a very small message
    // (libzmq's VSM, <= 33 bytes) keeps its bytes inside the message object itself, so a
    // pointer taken before the move would point into the moved-from frame.
    auto owner = std::make_shared<zmq::message_t>(std::move(frame));
    void* data = owner->data();
    if (reinterpret_cast<std::uintptr_t>(data) % dtype_size(descs[i].dtype) == 0) {
      // Zero-copy: the tensor's deleter owns the frame.
      msg.tensors.push_back(torch::from_blob(
          data, descs[i].shape, [owner](void*) mutable { owner.reset(); }, options));
    } else {
      auto t = torch::empty(descs[i].shape, options);
      std::memcpy(t.data_ptr(), data, bytes);
      msg.tensors.push_back(std::move(t));
    }
  }
  return msg;
}

Message decode(std::vector<zmq::message_t>& frames, const Limits& limits) {
  PlainCodec plain;
  const Envelope env = parse_envelope(frames, limits);
  if (env.sealed()) throw ProtocolError("sealed message on a plain channel");
  return decode_body(env, frames, limits, plain);
}

}  // namespace cutlayer::wire
