// Codec: randomized round trips, chunked tensors, and corrupted input, each corruption a
// ProtocolError that allocates nothing large (neither through operator new nor through
// torch's CPU allocator, which tensors come from).
#include "frame_codec.h"  // shared/src: the codec works on ZeroMQ frames

#include <gtest/gtest.h>

#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>

#include "cutlayer/error.h"
#include "cutlayer/wire/dtype.h"
#include "cutlayer/wire/messages.h"

// ---- largest single allocation (operator new or a tensor) while a Watch is active ----
namespace {
std::atomic<bool> g_watch{false};
std::atomic<std::size_t> g_largest{0};

void note_allocation(std::size_t n) {
  if (g_watch.load(std::memory_order_relaxed)) {
    std::size_t prev = g_largest.load();
    while (n > prev && !g_largest.compare_exchange_weak(prev, n)) {
    }
  }
}

// Tensor storage comes from torch's CPU allocator (posix_memalign), not operator new:
// wrap it so the watch sees every tensor the decoder makes.
struct WatchedCpuAllocator final : c10::Allocator {
  c10::Allocator* base = c10::GetDefaultCPUAllocator();
  c10::DataPtr allocate(std::size_t n) const override {
    note_allocation(n);
    return base->allocate(n);
  }
  c10::DeleterFnPtr raw_deleter() const override { return base->raw_deleter(); }
};

void watch_tensor_allocations() {
  static WatchedCpuAllocator* alloc = [] {
    auto* a = new WatchedCpuAllocator();  // torch keeps the pointer: never freed
    c10::SetCPUAllocator(a, /*priority=*/100);
    return a;
  }();
  (void)alloc;
}
}  // namespace

// The whole non-aligned family is replaced, not just the plain pair: libzmq allocates with
// `new (std::nothrow)` and frees with plain `delete`, so a half-replaced set pairs the
// library's operator new with our free (AddressSanitizer: alloc-dealloc-mismatch). The
// aligned forms stay the library's, new and delete alike.
void* operator new(std::size_t n) {
  note_allocation(n);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  note_allocation(n);
  return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace cutlayer::wire {
namespace {

struct AllocationWatch {
  AllocationWatch() {
    watch_tensor_allocations();
    g_largest = 0;
    g_watch = true;
  }
  ~AllocationWatch() { g_watch = false; }
  std::size_t largest() const { return g_largest.load(); }
};

constexpr std::size_t kSmall = 1 << 20;  // "no large allocation": nothing over 1 MiB

const DType kAllTypes[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16,
                           DType::kInt8,    DType::kUInt8,   DType::kInt16,   DType::kInt32,
                           DType::kInt64,   DType::kBool};

// A tensor of `type` and `shape` filled with random bytes (bools kept 0/1).
torch::Tensor random_tensor(std::mt19937& rng, DType type, const std::vector<int64_t>& shape) {
  auto t = torch::empty(shape, torch::TensorOptions().dtype(to_torch(type)));
  auto* p = static_cast<std::uint8_t*>(t.data_ptr());
  for (std::size_t i = 0; i < t.nbytes(); ++i)
    p[i] = type == DType::kBool ? (rng() & 1) : static_cast<std::uint8_t>(rng());
  return t;
}

bool bytes_equal(const torch::Tensor& a, const torch::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0);  // empty: null data
}

Message sample_message(std::mt19937& rng, int n_tensors = 2) {
  std::vector<torch::Tensor> ts;
  for (int i = 0; i < n_tensors; ++i) ts.push_back(random_tensor(rng, DType::kFloat32, {3, 5}));
  return make_message(Activations{42, true}, ts);
}

std::vector<zmq::message_t> encode_plain(const Message& m) {
  PlainCodec plain;
  return encode(m, 7, 9, plain);
}

std::vector<zmq::message_t> copy_frames(const std::vector<zmq::message_t>& f) {
  std::vector<zmq::message_t> out;
  for (const auto& m : f) out.emplace_back(m.data(), m.size());
  return out;
}

// Rewrites the meta payload of frames[1] (plain codec) via `edit`.
void edit_meta(std::vector<zmq::message_t>& frames, const std::function<void(std::string&)>& edit) {
  std::string meta(frames[1].data<char>(), frames[1].size());
  edit(meta);
  frames[1] = zmq::message_t(meta.data(), meta.size());
}

void expect_protocol_error(std::vector<zmq::message_t>& frames, const char* what) {
  AllocationWatch watch;
  Limits limits;
  EXPECT_THROW(decode(frames, limits), ProtocolError) << what;
  EXPECT_LT(watch.largest(), kSmall) << what;
}

TEST(Codec, RandomRoundTripsEveryDtypeAndRank) {
  std::mt19937 rng(1234);
  for (int round = 0; round < 200; ++round) {
    std::vector<torch::Tensor> sent;
    const int n = static_cast<int>(rng() % 5);
    for (int i = 0; i < n; ++i) {
      const DType type = kAllTypes[rng() % 10];
      const int rank = static_cast<int>(rng() % 9);  // 0-d to 8-d
      std::vector<int64_t> shape;
      for (int d = 0; d < rank; ++d) shape.push_back(rank > 4 ? rng() % 3 : rng() % 7);  // 0 → empty
      sent.push_back(random_tensor(rng, type, shape));
    }
    const EvalResult meta{rng(), 0.25, 0.875, rng() % 1000};
    auto frames = encode_plain(make_message(meta, sent));
    Message got = decode(frames, Limits{});
    ASSERT_EQ(got.type, MsgType::kEvalResult);
    EXPECT_EQ(got.session_id, 7u);
    EXPECT_EQ(got.sequence, 9u);
    const auto m = meta_as<EvalResult>(got);
    EXPECT_EQ(m.id, meta.id);
    EXPECT_EQ(m.accuracy, meta.accuracy);
    ASSERT_EQ(got.tensors.size(), sent.size());
    for (std::size_t i = 0; i < sent.size(); ++i)
      EXPECT_TRUE(bytes_equal(got.tensors[i], sent[i])) << "round " << round << " tensor " << i;
  }
}

TEST(Codec, NonContiguousTensorsArriveAsTheirValues) {
  auto t = torch::arange(24, torch::kFloat32).reshape({4, 6}).t();
  ASSERT_FALSE(t.is_contiguous());
  auto frames = encode_plain(make_message(Probe{1}, {t}));
  Message got = decode(frames, Limits{});
  EXPECT_TRUE(torch::equal(got.tensors[0], t));
}

TEST(Codec, ReceivedTensorsAliasTheFrames) {
  std::mt19937 rng(5);
  auto frames = encode_plain(sample_message(rng, 1));
  const void* frame_data = frames[2].data();
  Message got = decode(frames, Limits{});
  EXPECT_EQ(got.tensors[0].data_ptr(), frame_data);  // zero-copy receive
}

TEST(Codec, MetaStructsRoundTrip) {
  Join j;
  j.client_name = "alice";
  j.model = "fmnist-cnn";
  j.cut_shape = {32, 12, 12};
  j.samples = 20000;
  j.u_shaped = true;
  const Join back = meta_as<Join>(make_message(j));
  EXPECT_EQ(back.client_name, "alice");
  EXPECT_EQ(back.model, "fmnist-cnn");
  EXPECT_EQ(back.cut_shape, (std::vector<std::int64_t>{32, 12, 12}));
  EXPECT_EQ(back.samples, 20000u);
  EXPECT_TRUE(back.u_shaped);
  j.vertical_party = 3;
  j.vertical_parties = 4;
  const Join party = meta_as<Join>(make_message(j));
  EXPECT_EQ(party.vertical_party, 3u);
  EXPECT_EQ(party.vertical_parties, 4u);

  // A PSI round and its points through the whole codec; its meta cut short is refused.
  const auto points = torch::randint(0, 256, {64}, torch::kUInt8);
  auto frames = encode_plain(make_message(Psi{2, 5}, {points}));
  const auto psi = decode(frames, Limits{});
  EXPECT_EQ(psi.type, MsgType::kPsi);
  EXPECT_EQ(meta_as<Psi>(psi).round, 2);
  EXPECT_EQ(meta_as<Psi>(psi).peer, 5u);
  EXPECT_TRUE(torch::equal(psi.tensors.at(0), points));
  auto cut_short = make_message(Psi{1, 1});
  cut_short.meta.resize(2);
  EXPECT_THROW(meta_as<Psi>(cut_short), ProtocolError);

  ModelSnapshot s;
  s.round = 3;
  s.names = {"conv1.weight", "conv1.bias"};
  EXPECT_EQ(meta_as<ModelSnapshot>(make_message(s)).names, s.names);
  EXPECT_THROW(meta_as<Probe>(make_message(s)), ProtocolError);  // wrong type
}

TEST(Codec, TruncatedTensorFrameIsProtocolError) {
  std::mt19937 rng(1);
  auto frames = encode_plain(sample_message(rng));
  frames[3] = zmq::message_t(frames[3].data(), frames[3].size() - 1);
  expect_protocol_error(frames, "truncated tensor frame");
}

TEST(Codec, TruncatedEnvelopeAndMetaAreProtocolErrors) {
  std::mt19937 rng(2);
  auto frames = encode_plain(sample_message(rng));
  frames[0] = zmq::message_t(frames[0].data(), 31);
  expect_protocol_error(frames, "31-byte envelope");

  frames = encode_plain(sample_message(rng));
  frames[1] = zmq::message_t(frames[1].data(), 6);  // cut inside the first descriptor
  expect_protocol_error(frames, "truncated meta");
}

TEST(Codec, WrongFrameCountsAreProtocolErrors) {
  std::mt19937 rng(3);
  auto frames = encode_plain(sample_message(rng));
  frames.pop_back();  // envelope says 4 frames, 3 arrive
  expect_protocol_error(frames, "missing frame");

  frames = encode_plain(sample_message(rng));
  frames.emplace_back(16);  // an extra frame
  expect_protocol_error(frames, "extra frame");

  frames = encode_plain(sample_message(rng));
  frames.resize(1);
  expect_protocol_error(frames, "envelope only");

  // Envelope and frame count agree, but the meta declares a different number of tensors.
  frames = encode_plain(sample_message(rng));
  edit_meta(frames, [](std::string& m) {
    const std::uint32_t one = 1;
    std::memcpy(m.data(), &one, 4);
  });
  expect_protocol_error(frames, "meta tensor count differs from frames");
}

TEST(Codec, ShapeTimesDtypeNotFrameSizeIsProtocolError) {
  std::mt19937 rng(4);
  auto frames = encode_plain(sample_message(rng));
  edit_meta(frames, [](std::string& m) {
    const std::int64_t dim = 4;  // declares 4x5 floats, frame holds 3x5
    std::memcpy(m.data() + 4 + 2, &dim, 8);
  });
  expect_protocol_error(frames, "shape mismatch");

  frames = encode_plain(sample_message(rng));
  edit_meta(frames, [](std::string& m) { m[4] = static_cast<char>(DType::kFloat64); });
  expect_protocol_error(frames, "dtype mismatch");
}

TEST(Codec, AbsurdDeclaredSizesAllocateNothing) {
  std::mt19937 rng(5);
  auto frames = encode_plain(sample_message(rng, 1));
  edit_meta(frames, [](std::string& m) {
    const std::int64_t huge = std::int64_t{1} << 40;
    std::memcpy(m.data() + 4 + 2, &huge, 8);
    std::memcpy(m.data() + 4 + 2 + 8, &huge, 8);
  });
  expect_protocol_error(frames, "2^40 x 2^40 tensor");

  frames = encode_plain(sample_message(rng, 1));
  edit_meta(frames, [](std::string& m) {
    const std::uint32_t count = 0xffffffffu;
    std::memcpy(m.data(), &count, 4);
  });
  expect_protocol_error(frames, "2^32 tensors");

  frames = encode_plain(sample_message(rng, 1));
  edit_meta(frames, [](std::string& m) { m[5] = 100; });  // 100 dimensions
  expect_protocol_error(frames, "100-d tensor");

  frames = encode_plain(sample_message(rng, 1));
  edit_meta(frames, [](std::string& m) {
    const std::int64_t neg = -3;
    std::memcpy(m.data() + 4 + 2, &neg, 8);
  });
  expect_protocol_error(frames, "negative dimension");

  // A string length of 2^40 inside a Join's meta: refused before the string is sized.
  auto join = make_message(Join{});
  std::string meta = join.meta;
  // PortableBinary: 1 endianness byte, u32 protocol, then the u64 name length.
  const std::uint64_t len = std::uint64_t{1} << 40;
  std::memcpy(meta.data() + 1 + 4, &len, 8);
  join.meta = meta;
  AllocationWatch watch;
  EXPECT_THROW(meta_as<Join>(join), ProtocolError);
  EXPECT_LT(watch.largest(), kSmall);
}

TEST(Codec, UnknownTypeVersionMagicOrDtypeAreProtocolErrors) {
  std::mt19937 rng(6);
  auto patch_env = [&](std::size_t off, const void* v, std::size_t n) {
    auto f = encode_plain(sample_message(rng));
    std::string e(f[0].data<char>(), f[0].size());
    std::memcpy(e.data() + off, v, n);
    f[0] = zmq::message_t(e.data(), e.size());
    return f;
  };
  const std::uint16_t type = 999, version = 77;
  const std::uint32_t magic = 0xdeadbeef, flags = 0x80;
  auto f1 = patch_env(6, &type, 2);
  expect_protocol_error(f1, "unknown type");
  auto f2 = patch_env(4, &version, 2);
  expect_protocol_error(f2, "unknown version");
  auto f3 = patch_env(0, &magic, 4);
  expect_protocol_error(f3, "bad magic");
  auto f4 = patch_env(8, &flags, 4);
  expect_protocol_error(f4, "unknown flag");

  auto f5 = encode_plain(sample_message(rng));
  edit_meta(f5, [](std::string& m) { m[4] = 42; });
  expect_protocol_error(f5, "unknown dtype");
}

TEST(Codec, RandomCorruptionNeverEscapesAsAnythingButAnError) {
  std::mt19937 rng(7);
  const auto good = encode_plain(sample_message(rng, 3));
  int rejected = 0;
  for (int i = 0; i < 2000; ++i) {
    auto frames = copy_frames(good);
    const auto which = rng() % 2;  // envelope or meta: tensor bytes are opaque in plain mode
    std::string b(frames[which].data<char>(), frames[which].size());
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) b[rng() % b.size()] = static_cast<char>(rng());
    if (rng() % 4 == 0) b.resize(rng() % (b.size() + 1));
    frames[which] = zmq::message_t(b.data(), b.size());
    AllocationWatch watch;
    try {
      Message m = decode(frames, Limits{});
      (void)m;
    } catch (const Error&) {
      ++rejected;
    }
    ASSERT_LT(watch.largest(), kSmall) << "iteration " << i;
  }
  EXPECT_GT(rejected, 1000);
}


// ---- chunked tensors (envelope version 2) -------------------------------------------

constexpr std::size_t kChunk = kChunkBytes;

// Rewrites the envelope's frame count (offset 12) so that it matches after frames were
// added or removed: the codec's own frame checks, not the envelope's, must catch it.
void set_frame_count(std::vector<zmq::message_t>& frames, std::uint32_t n) {
  std::string e(frames[0].data<char>(), frames[0].size());
  std::memcpy(e.data() + 12, &n, 4);
  frames[0] = zmq::message_t(e.data(), e.size());
}

// A 1-d tensor of `type` taking `bytes` bytes (a multiple of the dtype size).
torch::Tensor tensor_of_bytes(std::mt19937& rng, DType type, std::size_t bytes) {
  return random_tensor(rng, type, {static_cast<std::int64_t>(bytes / dtype_size(type))});
}

TEST(Codec, TheAllocationGuardSeesTensors) {
  AllocationWatch watch;
  auto t = torch::empty({3 << 20}, torch::kUInt8);
  EXPECT_GE(watch.largest(), std::size_t{3} << 20);
}

TEST(Codec, ChunkCountsAndTheFrameCap) {
  EXPECT_EQ(chunk_count(0), 1u);  // an empty tensor keeps exactly one frame
  EXPECT_EQ(chunk_count(1), 1u);
  EXPECT_EQ(chunk_count(kChunk - 1), 1u);
  EXPECT_EQ(chunk_count(kChunk), 1u);
  EXPECT_EQ(chunk_count(kChunk + 1), 2u);
  EXPECT_EQ(chunk_count(3 * kChunk), 3u);
  EXPECT_EQ(chunk_count(3 * kChunk + 1), 4u);
  const Limits defaults;
  EXPECT_EQ(defaults.max_frames(), 2u + 64u + (std::size_t{2} << 30) / kChunk);
  // The bound holds for the worst split: max_tensors tensors, each just over a chunk.
  Limits l;
  l.max_tensors = 3;
  l.max_message_bytes = 3 * (kChunk + 1);
  EXPECT_GE(l.max_frames(), 2 + 3 * chunk_count(kChunk + 1));
}

TEST(Codec, ChunkedTensorsRoundTripEveryDtypeAtTheChunkBoundaries) {
  std::mt19937 rng(11);
  for (const DType type : kAllTypes) {
    const std::size_t s = dtype_size(type);
    // chunk - 1 element, exactly a chunk, a chunk + 1 element, several chunks and a tail.
    for (const std::size_t bytes : {kChunk - s, kChunk, kChunk + s, 3 * kChunk + 5 * s}) {
      const auto big = tensor_of_bytes(rng, type, bytes);
      const auto small = random_tensor(rng, type, {3, 2});
      const auto empty = random_tensor(rng, type, {0, 4});
      auto frames = encode_plain(make_message(Probe{3}, {small, big, empty}));
      const std::size_t chunks = chunk_count(bytes);
      const std::string what = std::string(dtype_name(type)) + ", " + std::to_string(bytes) + " bytes";
      ASSERT_EQ(frames.size(), 2 + 1 + chunks + 1) << what;
      EXPECT_EQ(frames[2].size(), small.nbytes()) << what;
      for (std::size_t k = 0; k < chunks; ++k)
        EXPECT_EQ(frames[3 + k].size(), std::min(kChunk, bytes - k * kChunk)) << what << " chunk " << k;
      EXPECT_EQ(frames.back().size(), 0u) << what;  // the empty tensor: one empty frame
      const void* one_frame = frames[3].data();
      Message got = decode(frames, Limits{});
      ASSERT_EQ(got.tensors.size(), 3u) << what;
      EXPECT_TRUE(bytes_equal(got.tensors[0], small)) << what;
      EXPECT_TRUE(bytes_equal(got.tensors[1], big)) << what;
      EXPECT_TRUE(bytes_equal(got.tensors[2], empty)) << what;
      EXPECT_TRUE(got.tensors[1].is_contiguous()) << what;
      // One frame (up to a chunk): aliased, zero copy. Several: one new buffer.
      if (chunks == 1) EXPECT_EQ(got.tensors[1].data_ptr(), one_frame) << what;
      else EXPECT_NE(got.tensors[1].data_ptr(), one_frame) << what;
    }
  }
}

TEST(Codec, ChunkedMultiDimensionalAndNonContiguousTensorsKeepTheirValues) {
  auto t = torch::randn({600, 700}).t();  // 1.68 MB, two chunks, transposed
  ASSERT_FALSE(t.is_contiguous());
  auto frames = encode_plain(make_message(Probe{1}, {t, t.contiguous().view({7, 100, 600})}));
  EXPECT_EQ(frames.size(), 2u + 2 + 2);
  Message got = decode(frames, Limits{});
  EXPECT_TRUE(torch::equal(got.tensors[0], t));
  EXPECT_EQ(got.tensors[1].sizes(), (std::vector<std::int64_t>{7, 100, 600}));
  EXPECT_TRUE(torch::equal(got.tensors[1].view({700, 600}), t));
}

TEST(Codec, WrongChunkFrameSizesOrCountsAreRefusedBeforeAllocation) {
  std::mt19937 rng(12);
  const std::size_t bytes = 3 * kChunk + kChunk / 2;  // 4 frames: 3 full chunks and a half
  const auto big = tensor_of_bytes(rng, DType::kFloat32, bytes);
  auto good = [&] { return encode_plain(make_message(Probe{2}, {big})); };
  ASSERT_EQ(good().size(), 6u);

  auto frames = good();
  frames[3] = zmq::message_t(frames[3].data(), kChunk - 1);  // middle chunk one byte short
  expect_protocol_error(frames, "short middle chunk");

  frames = good();
  frames[5] = zmq::message_t(kChunk / 2 + 1);  // last chunk one byte long
  expect_protocol_error(frames, "long last chunk");

  frames = good();
  frames[5] = zmq::message_t(kChunk);  // last chunk padded to a full chunk
  expect_protocol_error(frames, "padded last chunk");

  // The right total in the wrong frames: a full chunk split in two.
  frames = good();
  {
    std::vector<zmq::message_t> split;
    for (std::size_t k = 0; k < frames.size(); ++k) {
      if (k == 2) {
        split.emplace_back(frames[2].data(), kChunk / 2);
        split.emplace_back(frames[2].data<char>() + kChunk / 2, kChunk / 2);
      } else {
        split.push_back(std::move(frames[k]));
      }
    }
    frames = std::move(split);
  }
  set_frame_count(frames, static_cast<std::uint32_t>(frames.size()));
  expect_protocol_error(frames, "a chunk split in two");

  // A chunk missing, and one too many, with the envelope agreeing.
  frames = good();
  frames.erase(frames.begin() + 3);
  set_frame_count(frames, 5);
  expect_protocol_error(frames, "missing chunk");

  frames = good();
  frames.emplace_back(kChunk);
  set_frame_count(frames, 7);
  expect_protocol_error(frames, "extra chunk");

  // All chunks concatenated into one frame, as version 1 sent it.
  frames = good();
  {
    std::vector<zmq::message_t> one;
    one.push_back(std::move(frames[0]));
    one.push_back(std::move(frames[1]));
    one.emplace_back(big.data_ptr(), bytes);
    frames = std::move(one);
  }
  set_frame_count(frames, 3);
  expect_protocol_error(frames, "whole tensor in one frame");

  // A shape declaring 512 MiB behind these four frames: refused, nothing of it allocated.
  frames = good();
  edit_meta(frames, [](std::string& m) {
    const std::int64_t n = std::int64_t{128} << 20;  // floats
    std::memcpy(m.data() + 4 + 2, &n, 8);
  });
  expect_protocol_error(frames, "512 MiB declared, 3.5 MiB sent");

  // And a message with as many chunk frames as that shape needs, but one byte short at the end.
  auto huge = encode_plain(make_message(Probe{2}, {torch::zeros({40 << 20}, torch::kUInt8)}));
  ASSERT_EQ(huge.size(), 42u);
  huge[41] = zmq::message_t(kChunk - 1);
  expect_protocol_error(huge, "40 MiB with the last chunk short");
}

TEST(Codec, FrameCountCapFollowsTheLimits) {
  std::mt19937 rng(13);
  Limits l;
  l.max_tensors = 1;
  l.max_message_bytes = 2 * kChunk;
  ASSERT_EQ(l.max_frames(), 5u);
  auto fits = encode_plain(make_message(Probe{1}, {tensor_of_bytes(rng, DType::kUInt8, 2 * kChunk)}));
  EXPECT_EQ(fits.size(), 4u);
  EXPECT_NO_THROW(decode(fits, l));

  // 6 frames, more than the cap: refused from the envelope alone.
  auto over = encode_plain(make_message(Probe{1}, {tensor_of_bytes(rng, DType::kUInt8, 4 * kChunk)}));
  ASSERT_EQ(over.size(), 6u);
  AllocationWatch watch;
  try {
    (void)parse_envelope(over, l);
    ADD_FAILURE() << "6 frames passed a cap of 5";
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("cap of 5"), std::string::npos) << e.what();
  }
  EXPECT_LT(watch.largest(), kSmall);
}

TEST(Codec, EveryDimensionIsBoundedEvenWhenTheTensorIsEmpty) {
  std::mt19937 rng(14);
  const auto empty3 = [&] { return encode_plain(make_message(Probe{1}, {torch::empty({0, 1, 1})})); };
  auto set_dims = [](std::vector<zmq::message_t>& f, std::int64_t a, std::int64_t b, std::int64_t c) {
    edit_meta(f, [&](std::string& m) {
      std::memcpy(m.data() + 6, &a, 8);
      std::memcpy(m.data() + 14, &b, 8);
      std::memcpy(m.data() + 22, &c, 8);
    });
  };
  const std::int64_t p62 = std::int64_t{1} << 62;
  auto frames = empty3();
  set_dims(frames, 0, p62, p62);  // numel 0, strides 2^124
  expect_protocol_error(frames, "[0, 2^62, 2^62]");

  frames = empty3();
  set_dims(frames, p62, p62, 0);
  expect_protocol_error(frames, "[2^62, 2^62, 0]");

  frames = empty3();
  set_dims(frames, 0, std::int64_t{1} << 20, std::int64_t{1} << 9);  // 2^29 floats = 2 GiB "as ones"
  expect_protocol_error(frames, "[0, 2^20, 2^9] float32");

  frames = empty3();
  set_dims(frames, 0, std::int64_t{1} << 20, std::int64_t{1} << 8);  // 2^28 floats = the 1 GiB cap
  Message ok = decode(frames, Limits{});
  EXPECT_EQ(ok.tensors[0].numel(), 0);
  EXPECT_EQ(ok.tensors[0].sizes(), (std::vector<std::int64_t>{0, 1 << 20, 1 << 8}));

  // The same bound under a smaller cap: every dimension, not only numel.
  Limits small;
  small.max_tensor_bytes = 4096;
  frames = empty3();
  set_dims(frames, 0, 1025, 1);  // 1025 floats "as ones" > 4096 bytes
  {
    AllocationWatch watch;
    EXPECT_THROW(decode(frames, small), ProtocolError);
    EXPECT_LT(watch.largest(), kSmall);
  }
  frames = empty3();
  set_dims(frames, 0, 1024, 1);
  EXPECT_NO_THROW(decode(frames, small));
}

TEST(Codec, Version1EnvelopeIsRefusedWithAClearMessage) {
  std::mt19937 rng(15);
  auto frames = encode_plain(sample_message(rng));
  ASSERT_EQ(Envelope::kVersion, 2);
  std::string e(frames[0].data<char>(), frames[0].size());
  const std::uint16_t v1 = 1;
  std::memcpy(e.data() + 4, &v1, 2);
  frames[0] = zmq::message_t(e.data(), e.size());
  try {
    (void)decode(frames, Limits{});
    FAIL() << "a version 1 envelope was accepted";
  } catch (const ProtocolError& err) {
    const std::string what = err.what();
    EXPECT_NE(what.find("protocol version 1 not supported"), std::string::npos) << what;
    EXPECT_NE(what.find("version 2"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace cutlayer::wire
