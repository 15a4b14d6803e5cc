#include "frame_codec.h"

#include <algorithm>
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
  std::size_t chunks;  // frames it takes: chunk_count(bytes)
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
    TensorDesc d{static_cast<DType>(code), {}, 0, 0};
    d.shape.reserve(ndim);
    // Every dimension is bounded, an empty tensor's too: the shape read with each 0 as 1
    // (what its strides are made of) must fit the tensor cap, so [0, 2^62, 2^62] is as
    // absurd as [1, 2^62, 2^62] and no stride or offset can overflow.
    std::size_t extent = 1;
    std::size_t numel = 1;
    for (std::uint8_t k = 0; k < ndim; ++k) {
      const auto dim = r.take<std::int64_t>("dimension");
      if (dim < 0)
        throw ProtocolError("tensor " + std::to_string(i) + ": dimension " + std::to_string(dim) +
                            " is negative");
      const auto n = static_cast<std::size_t>(dim);
      if (!mul_checked(extent, std::max<std::size_t>(n, 1), extent) ||
          extent > limits.max_tensor_bytes)
        throw ProtocolError("tensor " + std::to_string(i) + ": dimension " + std::to_string(dim) +
                            " makes the shape absurdly large (each 0 read as 1)");
      numel *= n;  // <= extent: cannot overflow
      d.shape.push_back(dim);
    }
    std::size_t extent_bytes = 0;
    if (!mul_checked(extent, dtype_size(d.dtype), extent_bytes) ||
        extent_bytes > limits.max_tensor_bytes)
      throw ProtocolError("tensor " + std::to_string(i) +
                          (numel == 0 ? ": empty, but its shape (each 0 read as 1) declares"
                                      : " declares") +
                          " more than the cap of " + std::to_string(limits.max_tensor_bytes) +
                          " bytes");
    d.bytes = numel * dtype_size(d.dtype);  // <= extent_bytes
    d.chunks = chunk_count(d.bytes);
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

bool PlainCodec::open_frame_into(const Envelope::Bytes&, std::uint32_t,
                                 const zmq::message_t& frame, void* out) {
  if (frame.size() > 0) std::memcpy(out, frame.data(), frame.size());
  return true;
}

std::vector<zmq::message_t> encode(const Message& msg, std::uint64_t session_id,
                                   std::uint64_t sequence, FrameCodec& codec) {
  std::vector<torch::Tensor> tensors;
  tensors.reserve(msg.tensors.size());
  std::size_t frame_count = 2;
  for (const auto& t : msg.tensors) {
    tensors.push_back(wire_ready(t));
    frame_count += chunk_count(tensors.back().nbytes());
  }
  if (frame_count > std::numeric_limits<std::uint32_t>::max())
    throw InternalError("message of " + std::to_string(frame_count) + " frames cannot be encoded");

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
  env.frame_count = static_cast<std::uint32_t>(frame_count);
  env.session_id = session_id;
  env.sequence = sequence;
  const auto env_bytes = env.serialize();

  std::vector<zmq::message_t> frames;
  frames.reserve(env.frame_count);
  frames.emplace_back(env_bytes.data(), env_bytes.size());
  frames.push_back(codec.make_frame(env_bytes, 1, meta.data(), meta.size(), nullptr));
  std::uint32_t index = 2;
  for (const auto& t : tensors) {
    const auto* data = static_cast<const std::uint8_t*>(t.data_ptr());
    const std::size_t bytes = t.nbytes();
    // One frame up to kChunkBytes (an empty tensor too), else full chunks and the rest.
    std::size_t off = 0;
    do {
      const std::size_t n = std::min(kChunkBytes, bytes - off);
      frames.push_back(codec.make_frame(env_bytes, index++, data + off, n, &t));
      off += n;
    } while (off < bytes);
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
  if (env.frame_count > limits.max_frames())
    throw ProtocolError("message has " + std::to_string(env.frame_count) +
                        " frames, more than the cap of " + std::to_string(limits.max_frames()) +
                        " (max_tensors and max_message_bytes in " +
                        std::to_string(kChunkBytes) + "-byte chunks)");
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
  // Each tensor's frames follow from its shape x dtype: check their count and every
  // frame's size before any tensor exists.
  std::size_t expected = 2;
  for (const auto& d : descs) expected += d.chunks;  // bounded by the caps: no overflow
  if (expected != frames.size())
    throw ProtocolError("meta declares " + std::to_string(descs.size()) + " tensors in " +
                        std::to_string(expected - 2) + " frames (" +
                        std::to_string(kChunkBytes) + "-byte chunks), message has " +
                        std::to_string(frames.size() - 2) + " tensor frames");
  std::size_t f = 2;
  for (std::size_t i = 0; i < descs.size(); ++i) {
    const TensorDesc& d = descs[i];
    for (std::size_t k = 0; k < d.chunks; ++k, ++f) {
      const std::size_t want = std::min(kChunkBytes, d.bytes - k * kChunkBytes);
      const std::size_t got = frames[f].size();
      if (got == want + overhead) continue;
      const std::string carries = std::to_string(got - std::min(got, overhead));
      if (d.chunks == 1)
        throw ProtocolError("tensor " + std::to_string(i) + " declares " +
                            std::to_string(d.bytes) + " bytes (shape x " +
                            std::string(dtype_name(d.dtype)) + "), its frame carries " + carries);
      throw ProtocolError("tensor " + std::to_string(i) + " (" + std::to_string(d.bytes) +
                          " bytes, shape x " + std::string(dtype_name(d.dtype)) + ") chunk " +
                          std::to_string(k + 1) + " of " + std::to_string(d.chunks) +
                          " should carry " + std::to_string(want) + " bytes, its frame carries " +
                          carries);
    }
  }

  Message msg;
  msg.type = env.type;
  msg.session_id = env.session_id;
  msg.sequence = env.sequence;
  msg.meta.assign(reinterpret_cast<const char*>(r.pos()), r.left());
  msg.tensors.reserve(descs.size());
  f = 2;
  for (std::size_t i = 0; i < descs.size(); ++i) {
    const TensorDesc& d = descs[i];
    const auto options = torch::TensorOptions().dtype(to_torch(d.dtype));
    const std::size_t bytes = d.bytes;
    if (d.chunks > 1) {
      // Chunked: each frame opened (decrypted) straight into one contiguous buffer, and
      // released as soon as it is, so the message is held about once, not twice.
      auto t = torch::empty(d.shape, options);
      auto* dst = static_cast<std::uint8_t*>(t.data_ptr());
      for (std::size_t k = 0; k < d.chunks; ++k, ++f) {
        if (!codec.open_frame_into(env_bytes, static_cast<std::uint32_t>(f), frames[f],
                                   dst + k * kChunkBytes))
          throw AuthError("tensor frame " + std::to_string(i) + " chunk " + std::to_string(k + 1) +
                          " of " + std::to_string(d.chunks) + " failed authentication");
        frames[f] = zmq::message_t();
      }
      msg.tensors.push_back(std::move(t));
      continue;
    }
    zmq::message_t& frame = frames[f];
    const auto index = static_cast<std::uint32_t>(f++);
    if (!codec.open_frame(env_bytes, index, frame))
      throw AuthError("tensor frame " + std::to_string(i) + " failed authentication");
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
