#include "fuzz_common.h"

#include <torch/torch.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <typeinfo>

#include "cutlayer/error.h"
#include "cutlayer/wire/dtype.h"
#include "cutlayer/log.h"

namespace cutlayer::fuzz {

torch::Tensor read_tensor(Input& in, std::int64_t max_elements) {
  const auto code = in.take<std::uint8_t>();
  const auto dt = wire::is_valid_dtype(code) ? static_cast<wire::DType>(code) : wire::DType::kFloat32;
  const int ndim = in.take<std::uint8_t>() % 3;
  std::vector<std::int64_t> shape;
  std::int64_t numel = 1;
  for (int k = 0; k < ndim; ++k) {
    const std::int64_t d = in.take<std::uint16_t>();
    numel *= d;
    if (numel > max_elements) {
      numel = 0;
      shape.assign(ndim, 0);
      break;
    }
    shape.push_back(d);
  }
  auto t = torch::zeros(shape, torch::TensorOptions().dtype(wire::to_torch(dt)));
  const std::string b = in.bytes(t.nbytes());
  if (!b.empty()) std::memcpy(t.data_ptr(), b.data(), b.size());
  return t;
}

std::vector<zmq::message_t> read_frames(Input& in, FillBudget& budget) {
  std::vector<zmq::message_t> frames;
  const std::size_t count = std::min<std::size_t>(in.take<std::uint8_t>(), kMaxFramesPerMessage);
  frames.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    const auto kind = in.take<std::uint8_t>();
    if (kind == kFillFrame) {
      std::size_t n = std::min<std::size_t>(in.take<std::uint32_t>(), kMaxFillFrame);
      n = std::min(n, budget.left);
      budget.left -= n;
      const auto fill = in.take<std::uint8_t>();
      zmq::message_t f(n);
      if (n > 0) std::memset(f.data(), fill, n);
      frames.push_back(std::move(f));
    } else {
      const std::string b = in.bytes(in.take<std::uint16_t>());
      frames.emplace_back(b.data(), b.size());
    }
  }
  return frames;
}

void write_frames(std::string& out, const std::vector<zmq::message_t>& frames) {
  if (frames.size() > kMaxFramesPerMessage) throw std::invalid_argument("too many frames for the container");
  auto put = [&out](const void* p, std::size_t n) { out.append(static_cast<const char*>(p), n); };
  const auto count = static_cast<std::uint8_t>(frames.size());
  put(&count, 1);
  for (const auto& f : frames) {
    const auto* p = f.data<std::uint8_t>();
    const std::size_t n = f.size();
    if (n <= 0xffff) {
      const std::uint8_t kind = 0;
      const auto len = static_cast<std::uint16_t>(n);
      put(&kind, 1);
      put(&len, 2);
      put(p, n);
      continue;
    }
    for (std::size_t i = 1; i < n; ++i)
      if (p[i] != p[0]) throw std::invalid_argument("a frame over 64 KiB must be one byte repeated");
    if (n > kMaxFillFrame) throw std::invalid_argument("frame too large for the container");
    const std::uint8_t kind = kFillFrame;
    const auto len = static_cast<std::uint32_t>(n);
    put(&kind, 1);
    put(&len, 4);
    put(p, 1);
  }
}

wire::Limits fuzz_limits() { return wire::Limits{}; }

namespace {

// Reads every field the way a consumer does (a bool is loaded as a bool), so that a value
// no field of its type can hold (a bool byte of 2) is seen by UBSan.
struct Touch {
  std::uint64_t h = 0;
  void operator()(std::uint64_t v) { h = h * 1000003u ^ v; }
  void operator()(bool b) { h = h * 1000003u ^ (b ? 1u : 0u); }
  void operator()(double d) { h = h * 1000003u ^ static_cast<std::uint64_t>(d == d); }
  void operator()(float d) { h = h * 1000003u ^ static_cast<std::uint64_t>(d == d); }
  void operator()(const std::string& s) { h = h * 1000003u ^ s.size(); }
  template <class T>
  void operator()(const std::vector<T>& v) {
    for (const auto& x : v) (*this)(static_cast<std::uint64_t>(x));
  }
  void operator()(const std::vector<std::string>& v) {
    for (const auto& x : v) (*this)(x);
  }
  void operator()(const wire::SparseLayout& l) {
    (*this)(l.numel);
    (*this)(l.dense);
    (*this)(std::uint64_t{l.index_coding});
  }
};

template <class M>
void touch(const M&, Touch&) {}
void touch(const wire::Join& m, Touch& t) {
  t(std::uint64_t{m.protocol}), t(m.client_name), t(m.model), t(m.cut_shape), t(m.samples),
      t(m.u_shaped), t(m.sync), t(m.inference), t(m.front_fingerprint), t(m.head_fingerprint), t(m.back_fingerprint);
}
void touch(const wire::JoinAck& m, Touch& t) {
  t(m.session_id), t(std::uint64_t{m.data_port}), t(std::uint64_t{m.heartbeat_ms}),
      t(std::uint64_t{m.session_timeout_ms}), t(m.round), t(m.steps_held);
}
void touch(const wire::Leave& m, Touch& t) { t(m.reason); }
void touch(const wire::ErrorMsg& m, Touch& t) { t(std::uint64_t{m.code}), t(m.message); }
void touch(const wire::Activations& m, Touch& t) { t(m.step), t(m.has_labels), t(m.train); }
void touch(const wire::CutGrad& m, Touch& t) { t(m.step), t(m.loss), t(std::uint64_t{m.correct}); }
void touch(const wire::SparseGrad& m, Touch& t) { t(m.seq), t(m.base), t(m.samples), t(m.layout); }
void touch(const wire::Update& m, Touch& t) {
  t(m.round), t(m.mine), t(std::uint64_t{m.contributors}), t(m.samples), t(m.lr), t(m.layout);
}
void touch(const wire::SyncReject& m, Touch& t) { t(m.seq), t(m.staleness), t(m.reason); }
void touch(const wire::ModelSnapshot& m, Touch& t) {
  t(m.round), t(m.names), t(m.optimizer), t(std::uint64_t{m.state_per_param}),
      t(std::uint64_t{m.staleness}), t(m.momentum), t(m.weight_decay);
}
void touch(const wire::EvalResult& m, Touch& t) { t(m.id), t(m.loss), t(m.accuracy), t(m.samples); }

// `m` as parsed from `msg`. A flag byte other than 0 or 1 is refused by meta_as (finding 2
// of the first fuzzing run: cereal loaded it as an invalid bool).
template <class M>
bool round_trip_parsed(const wire::Message& msg, const M& m) {
  Touch t;
  touch(m, t);
  // The meta starts with cereal's endianness byte: 1 (little-endian, what make_message
  // writes) or anything else (big-endian, every value byte-swapped on load). Only a
  // little-endian meta has to come back byte for byte; any meta, once re-serialized,
  // has to be stable.
  const auto again = wire::make_message(m);
  const std::string name(wire::msg_type_name(M::kType));
  if (!msg.meta.empty() && msg.meta[0] == 1)
    check(again.meta == msg.meta, name + " meta parsed but does not serialize back to its bytes");
  M m2;
  try {
    m2 = wire::meta_as<M>(again);
  } catch (const ProtocolError& e) {
    throw Finding(name + " meta re-serialized is refused: " + e.what());
  }
  check(wire::make_message(m2).meta == again.meta, name + " meta does not survive a second round trip");
  return true;
}

template <class M>
bool round_trip(const wire::Message& msg) {
  try {
    return round_trip_parsed<M>(msg, wire::meta_as<M>(msg));
  } catch (const ProtocolError&) {
    return false;
  }
}

}  // namespace

bool exercise_meta(const wire::Message& msg) {
  using wire::MsgType;
  switch (msg.type) {
    case MsgType::kJoin: return round_trip<wire::Join>(msg);
    case MsgType::kJoinAck: return round_trip<wire::JoinAck>(msg);
    case MsgType::kLeave: return round_trip<wire::Leave>(msg);
    case MsgType::kHeartbeat: return round_trip<wire::Heartbeat>(msg);
    case MsgType::kError: return round_trip<wire::ErrorMsg>(msg);
    case MsgType::kActivations: return round_trip<wire::Activations>(msg);
    case MsgType::kCutGrad: return round_trip<wire::CutGrad>(msg);
    case MsgType::kSparseGrad: return round_trip<wire::SparseGrad>(msg);
    case MsgType::kUpdate: return round_trip<wire::Update>(msg);
    case MsgType::kModelSnapshot: return round_trip<wire::ModelSnapshot>(msg);
    case MsgType::kEvalRequest: return false;  // reserved, no struct
    case MsgType::kEvalResult: return round_trip<wire::EvalResult>(msg);
    case MsgType::kProbe: return round_trip<wire::Probe>(msg);
    case MsgType::kProbeReply: return round_trip<wire::ProbeReply>(msg);
    case MsgType::kServerActivations: return round_trip<wire::ServerActivations>(msg);
    case MsgType::kHeadGrad: return round_trip<wire::HeadGrad>(msg);
    case MsgType::kSyncReject: return round_trip<wire::SyncReject>(msg);
    case MsgType::kSnapshotRequest: return round_trip<wire::SnapshotRequest>(msg);
    case MsgType::kPsi: return round_trip<wire::Psi>(msg);
  }
  throw Finding("decoded message of an unknown type " + std::to_string(static_cast<int>(msg.type)));
}

void check_tensors(const wire::Message& msg) {
  for (const auto& t : msg.tensors) {
    check(t.defined(), "decoded tensor undefined");
    check(t.device().is_cpu(), "decoded tensor not on the CPU");
    check(t.is_contiguous(), "decoded tensor not contiguous");
    const auto n = static_cast<std::size_t>(t.numel()) * t.element_size();
    check(n == t.nbytes(), "decoded tensor's nbytes differs from numel x element size");
    // Read every byte: ASan reports a tensor over freed or foreign memory.
    const auto* p = static_cast<const volatile std::uint8_t*>(t.data_ptr());
    std::uint8_t x = 0;
    for (std::size_t i = 0; i < n; ++i) x ^= p[i];
    (void)x;
  }
}

namespace {
struct TempDir {
  std::string path;
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/cutlayer-fuzz-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = templ;
  }
  ~TempDir() {
    for (const char* f : {"config.json", "key", "allow-list"}) ::unlink((path + "/" + f).c_str());
    ::rmdir(path.c_str());
  }
};
}  // namespace

std::string write_temp_file(const std::string& name, const std::string& content, unsigned mode) {
  static TempDir dir;
  const std::string path = dir.path + "/" + name;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot create " + path);
  std::size_t off = 0;
  while (off < content.size()) {
    const ssize_t w = ::write(fd, content.data() + off, content.size() - off);
    if (w <= 0) {
      ::close(fd);
      throw std::runtime_error("cannot write " + path);
    }
    off += static_cast<std::size_t>(w);
  }
  ::fchmod(fd, static_cast<mode_t>(mode));
  ::close(fd);
  return path;
}

void init_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    torch::set_num_threads(1);
    log::set_level("off");
  });
}

int run_guarded(const char* target, int (*fn)(const std::uint8_t*, std::size_t),
                const std::uint8_t* data, std::size_t size) {
  init_once();
  try {
    return fn(data, size);
  } catch (const Finding& e) {
    std::fprintf(stderr, "\n==== cutlayer fuzz %s: FINDING: %s\n", target, e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\n==== cutlayer fuzz %s: unexpected exception %s: %s\n", target,
                 typeid(e).name(), e.what());
  } catch (...) {
    std::fprintf(stderr, "\n==== cutlayer fuzz %s: unexpected non-standard exception\n", target);
  }
  std::fflush(stderr);
  std::abort();
}

}  // namespace cutlayer::fuzz
