#include "cutlayer/state/archive.h"

#include <ATen/CPUGeneratorImpl.h>

#include <mutex>
#include <sstream>

#include "cutlayer/model/script_model.h"
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

std::vector<std::uint8_t> load_bytes(InputArchive& a, const std::string& key, bool optional) {
  std::vector<std::uint8_t> v;
  refusing(key, [&] {
    torch::Tensor t;
    if (optional) {
      if (!a.try_read(key, t)) return;
    } else {
      a.read(key, t);
    }
    TORCH_CHECK(t.scalar_type() == torch::kUInt8 && t.dim() == 1, "not a byte string");
    t = t.contiguous();
    v.assign(t.data_ptr<std::uint8_t>(), t.data_ptr<std::uint8_t>() + t.numel());
  });
  return v;
}

void save_counts(OutputArchive& a, const std::string& key, const std::map<std::string, std::uint64_t>& m) {
  std::vector<std::uint8_t> v;
  auto put = [&](std::uint64_t x, int bytes) {
    for (int i = 0; i < bytes; ++i) v.push_back(static_cast<std::uint8_t>(x >> (8 * i)));
  };
  for (const auto& [name, count] : m) {
    if (name.size() > 0xffff) throw InternalError("save_counts: a name of " + std::to_string(name.size()) + " bytes");
    put(name.size(), 2);
    v.insert(v.end(), name.begin(), name.end());
    put(count, 8);
  }
  save_bytes(a, key, v);
}

std::map<std::string, std::uint64_t> load_counts(InputArchive& a, const std::string& key, std::size_t max_entries,
                                                 bool optional) {
  const auto v = load_bytes(a, key, optional);
  std::map<std::string, std::uint64_t> m;
  std::size_t at = 0;
  auto get = [&](int bytes) {
    if (v.size() - at < static_cast<std::size_t>(bytes)) throw CheckpointRefused("its '" + key + "' is truncated");
    std::uint64_t x = 0;
    for (int i = 0; i < bytes; ++i) x |= std::uint64_t{v[at + i]} << (8 * i);
    at += bytes;
    return x;
  };
  while (at < v.size()) {
    if (m.size() >= max_entries)
      throw CheckpointRefused("its '" + key + "' has more than " + std::to_string(max_entries) + " entries");
    const auto n = static_cast<std::size_t>(get(2));
    if (v.size() - at < n) throw CheckpointRefused("its '" + key + "' is truncated");
    std::string name(v.begin() + static_cast<std::ptrdiff_t>(at), v.begin() + static_cast<std::ptrdiff_t>(at + n));
    at += n;
    m[name] = get(8);
  }
  return m;
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
    for (const auto& c : parts[i]->children())  // a TorchScript part: what it computes, too
      if (const auto* script = dynamic_cast<const model::ScriptedPartImpl*>(c.get()))
        s << i << " torchscript " << script->code_sha256() << '\n';
  }
  const std::string text = s.str();
  return crypto::sha256(text.data(), text.size());
}

std::string part_fingerprint(const torch::nn::Module& part) {
  if (part.children().empty() && part.parameters().empty()) return "";
  const auto d = fingerprint("", {&part});
  return crypto::to_hex(d.data(), d.size());
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
