#include "cutlayer/state/archive.h"

#include <ATen/CPUGeneratorImpl.h>

#include <mutex>
#include <sstream>

#include "cutlayer/state/checkpoint.h"

namespace cutlayer::state {
namespace {

// LibTorch reports a malformed or mismatched archive as c10::Error: a refused checkpoint.
template <class F>
void refusing(const std::string& what, F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    throw CheckpointRefused("its state does not fit (" + what + "): " + e.what_without_backtrace());
  }
}

}  // namespace

std::string to_bytes(OutputArchive& a) {
  std::string out;
  a.save_to([&out](const void* p, std::size_t n) {
    out.append(static_cast<const char*>(p), n);
    return n;
  });
  return out;
}

void from_bytes(InputArchive& a, const std::string& bytes) {
  refusing("not a LibTorch archive", [&] { a.load_from(bytes.data(), bytes.size()); });
}

void save_part(OutputArchive& a, const std::string& key, const torch::nn::Module& m) {
  OutputArchive part;
  m.save(part);
  a.write(key, part);
}

void save_part(OutputArchive& a, const std::string& key, const torch::optim::Optimizer& o) {
  OutputArchive part;
  o.save(part);
  a.write(key, part);
}

void load_part(InputArchive& a, const std::string& key, torch::nn::Module& m) {
  refusing(key, [&] {
    // Module::load copies into each tensor with set_(), which would take any shape: check.
    std::vector<std::vector<std::int64_t>> shapes;
    for (const auto& p : m.parameters()) shapes.push_back(p.sizes().vec());
    InputArchive part;
    a.read(key, part);
    m.load(part);
    std::size_t i = 0;
    for (const auto& p : m.parameters())
      TORCH_CHECK(p.sizes().vec() == shapes[i++], "parameter shape differs from the model's");
  });
}

void load_part(InputArchive& a, const std::string& key, torch::optim::Optimizer& o) {
  refusing(key, [&] {
    InputArchive part;
    a.read(key, part);
    o.load(part);
  });
}

void save_int(OutputArchive& a, const std::string& key, std::int64_t v) { a.write(key, c10::IValue(v)); }

std::int64_t load_int(InputArchive& a, const std::string& key) {
  std::int64_t v = 0;
  refusing(key, [&] {
    c10::IValue iv;
    a.read(key, iv);
    TORCH_CHECK(iv.isInt(), "not an integer");
    v = iv.toInt();
  });
  return v;
}

void save_bytes(OutputArchive& a, const std::string& key, const std::vector<std::uint8_t>& v) {
  a.write(key, torch::from_blob(const_cast<std::uint8_t*>(v.data()), {static_cast<std::int64_t>(v.size())},
                                torch::kUInt8)
                   .clone());
}

std::vector<std::uint8_t> load_bytes(InputArchive& a, const std::string& key) {
  std::vector<std::uint8_t> v;
  refusing(key, [&] {
    torch::Tensor t;
    a.read(key, t);
    TORCH_CHECK(t.scalar_type() == torch::kUInt8 && t.dim() == 1, "not a byte string");
    t = t.contiguous();
    v.assign(t.data_ptr<std::uint8_t>(), t.data_ptr<std::uint8_t>() + t.numel());
  });
  return v;
}

torch::Tensor rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng_state(const torch::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

void save_rng(OutputArchive& a) { a.write("rng", rng_state()); }

void save_rng(OutputArchive& a, const torch::Tensor& state) { a.write("rng", state); }

void load_rng(InputArchive& a) {
  refusing("rng", [&] {
    torch::Tensor t;
    a.read("rng", t);
    set_rng_state(t);
  });
}

crypto::Digest fingerprint(const std::string& description,
                           const std::vector<const torch::nn::Module*>& parts) {
  std::ostringstream s;
  s << description << '\n';
  for (std::size_t i = 0; i < parts.size(); ++i) {
    for (const auto& p : parts[i]->named_parameters())
      s << i << ' ' << p.key() << ' ' << p.value().scalar_type() << ' ' << p.value().sizes() << '\n';
    for (const auto& b : parts[i]->named_buffers())
      s << i << " buffer " << b.key() << ' ' << b.value().scalar_type() << ' ' << b.value().sizes() << '\n';
  }
  const std::string text = s.str();
  return crypto::sha256(text.data(), text.size());
}

crypto::Digest values_hash(const std::vector<const torch::nn::Module*>& parts) {
  std::string bytes;
  auto add = [&bytes](const torch::Tensor& t) {
    const auto c = t.detach().to(torch::kCPU).contiguous();
    bytes.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
  };
  for (const auto* m : parts) {
    for (const auto& p : m->parameters()) add(p);
    for (const auto& b : m->buffers()) add(b);
  }
  return crypto::sha256(bytes.data(), bytes.size());
}

}  // namespace cutlayer::state
