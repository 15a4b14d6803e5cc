// What the fuzz targets share: the input reader, the frame container every message-level
// target reads its ZeroMQ frames from, the checks that turn a broken invariant into a
// finding, and the entry point each target file ends with.
//
// A target is `int fuzz_one(const std::uint8_t*, std::size_t)` in namespace
// cutlayer::fuzz::<target>, in tests/fuzz/<target>_fuzz.cpp. Built with CUTLAYER_LIBFUZZER
// (CUTLAYER_FUZZ=ON, clang) the file also defines LLVMFuzzerTestOneInput; the GCC test
// binary cutlayer_fuzz_regressions calls the same function on every corpus and regression
// file. A target returns normally for any input the code under test handles as it should:
// refused with the documented exception, or accepted with its invariants intact. Anything
// else is a finding: a sanitizer report, an unexpected exception type, or a Finding thrown
// by check().
#pragma once

#include <zmq.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cutlayer/wire/codec.h"
#include "cutlayer/wire/message.h"

namespace cutlayer::fuzz {

// An invariant the code under test broke.
class Finding : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

inline void check(bool ok, const std::string& what) {
  if (!ok) throw Finding(what);
}

// Reads the fuzzer's bytes front to back; past the end every read yields zeros.
class Input {
 public:
  Input(const std::uint8_t* p, std::size_t n) : p_(p), end_(p + n) {}
  std::size_t left() const { return static_cast<std::size_t>(end_ - p_); }
  bool empty() const { return p_ == end_; }
  template <class T>
  T take() {
    T v{};
    const std::size_t k = std::min(sizeof v, left());
    if (k > 0) std::memcpy(&v, p_, k);
    p_ += k;
    return v;
  }
  // Up to n bytes (fewer at the end).
  std::string bytes(std::size_t n) {
    n = std::min(n, left());
    std::string s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  std::string rest() { return bytes(left()); }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

// A tensor as the wire codec could hand one over (any dtype, any shape, any bytes):
//   tensor := u8 dtype (wire::DType code; an unknown one reads as float32), u8 ndim (mod 3),
//             u16 dim{ndim}, then the tensor's bytes (zeros past the end of the input)
// A shape of more than max_elements elements reads as all-zero dimensions.
torch::Tensor read_tensor(Input& in, std::int64_t max_elements);

// The frame container: how a message's ZeroMQ frames are laid out in a fuzz input.
//   message := u8 frame_count, frame{frame_count}
//   frame   := u8 kind, then
//              kind != 0xff: u16 length, that many bytes (fewer at the end of the input)
//              kind == 0xff: u32 length (at most kMaxFillFrame), u8 fill: a frame of
//                            `length` bytes all equal to `fill` (a chunked tensor's 1 MiB
//                            frames without 1 MiB of input)
// All integers little-endian. Fill frames of one input share a budget (kMaxFillBytes).
constexpr std::size_t kMaxFramesPerMessage = 80;
constexpr std::size_t kMaxFillFrame = 3 * wire::kChunkBytes;
constexpr std::size_t kMaxFillBytes = 8 * wire::kChunkBytes;
constexpr std::uint8_t kFillFrame = 0xff;

struct FillBudget {
  std::size_t left = kMaxFillBytes;
};
std::vector<zmq::message_t> read_frames(Input& in, FillBudget& budget);
// Appends `frames` in the container format (a frame over 65535 bytes must be one byte
// repeated: it becomes a fill frame). For the seed corpus.
void write_frames(std::string& out, const std::vector<zmq::message_t>& frames);

// Limits the message targets decode under: the service's defaults.
wire::Limits fuzz_limits();

// Parses the message's meta as its type's struct (meta_as), checks the struct
// serializes back to the same bytes, and returns false when the meta was refused
// (ProtocolError).
bool exercise_meta(const wire::Message& msg);

// Every tensor of a decoded message: defined, contiguous, on the CPU, and what
// `descs` would make it. Checks its bytes can be read (ASan sees a bad alias).
void check_tensors(const wire::Message& msg);

// A file of this process's own temp directory (made once, under $TMPDIR or /tmp, removed
// at exit) rewritten with `content` and then given `mode` (fchmod, so the umask does not
// interfere). Returns its path. For the readers that take a path.
std::string write_temp_file(const std::string& name, const std::string& content, unsigned mode);

// Once per process: LibTorch on one thread, every cutlayer logger off.
void init_once();

// Runs `fn` on the input; a Finding or an exception of a type the target did not expect
// is printed and ends the process with abort() (libFuzzer then saves the input).
int run_guarded(const char* target, int (*fn)(const std::uint8_t*, std::size_t),
                const std::uint8_t* data, std::size_t size);

}  // namespace cutlayer::fuzz

#ifdef CUTLAYER_LIBFUZZER
#define CUTLAYER_FUZZ_ENTRY(name)                                                       \
  extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {   \
    return ::cutlayer::fuzz::run_guarded(#name, &::cutlayer::fuzz::name::fuzz_one, data, \
                                         size);                                          \
  }
#else
#define CUTLAYER_FUZZ_ENTRY(name)
#endif
