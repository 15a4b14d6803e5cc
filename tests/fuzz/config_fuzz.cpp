// config: the JSON config reader on arbitrary text: config::Document::parse, then the
// readers built on config::Object (get, get_int, get_choice, child, finish): the "train"
// object (read_train_options, which also parses the model layer specs), "sync"
// (read_sync_options, with the density schedule), "privacy" (read_privacy_options), and
// the whole client and server files (load_client_config, load_server_config, from a temp
// file). Refusal is ConfigError (IoError for a file). A custom model is built while its
// config is read; inputs whose layers would allocate more than a few MiB skip the
// train-reading calls (the fuzzer would measure LibTorch's allocator, not the reader).
#include <rapidjson/document.h>

#include <cmath>
#include <cstdlib>
#include <sstream>

#include "cutlayer/client/client_config.h"
#include "cutlayer/config/reader.h"
#include "cutlayer/error.h"
#include "cutlayer/server/server_config.h"
#include "cutlayer/sync/options.h"
#include "cutlayer/train/train_options.h"
#include "fuzz_common.h"

namespace cutlayer::fuzz::config {
namespace {

// Layer arguments past kMaxArg, or layers whose first three arguments multiply past
// kMaxProduct, make the spec too expensive to build. Values no int64 holds are left in:
// the spec parser refuses them before building anything.
constexpr double kMaxArg = 4096;
constexpr double kMaxProduct = double(1 << 22);

bool spec_is_cheap(const std::string& spec) {
  std::size_t i = 0;
  while ((i = spec.find('(', i)) != std::string::npos) {
    const auto close = spec.find(')', i);
    if (close == std::string::npos) return true;
    std::stringstream ss(spec.substr(i + 1, close - i - 1));
    std::string a;
    double product = 1;
    int k = 0;
    while (std::getline(ss, a, ',')) {
      const double v = std::strtod(a.c_str(), nullptr);
      if (std::isfinite(v) && std::fabs(v) < 9.2e18) {
        if (std::fabs(v) > kMaxArg) return false;
        if (k++ < 3) product *= std::max(1.0, std::fabs(v));
      }
    }
    if (product > kMaxProduct) return false;
    i = close + 1;
  }
  return true;
}

bool models_are_cheap(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str(), text.size());
  if (d.HasParseError() || !d.IsObject()) return true;
  auto it = d.FindMember("train");
  if (it == d.MemberEnd() || !it->value.IsObject()) return true;
  for (const char* f : {"front", "back", "head"}) {
    auto m = it->value.FindMember(f);
    if (m != it->value.MemberEnd() && m->value.IsString() &&
        !spec_is_cheap(std::string(m->value.GetString(), m->value.GetStringLength())))
      return false;
  }
  return true;
}

template <class F>
void expect_config_error(F&& f) {
  try {
    f();
  } catch (const ConfigError&) {
  } catch (const IoError&) {
  }
}

}  // namespace

int fuzz_one(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::shared_ptr<cutlayer::config::Document> doc;
  try {
    doc = cutlayer::config::Document::parse(text, "fuzz.json");
  } catch (const ConfigError&) {
    return 0;
  }
  const bool cheap = models_are_cheap(text);
  if (cheap) {
    expect_config_error([&] {
      auto t = doc->root().child("train");
      const auto o = train::read_train_options(t);
      (void)train::split_spec(o);
    });
  }
  expect_config_error([&] {
    auto s = doc->root().child("sync");
    (void)sync::read_sync_options(s);
  });
  expect_config_error([&] {
    auto p = doc->root().child("privacy");
    (void)client::read_privacy_options(p);
  });
  expect_config_error([&] { (void)doc->resolve(text.substr(0, 64)); });
  if (cheap) {
    const auto path = write_temp_file("config.json", text, 0600);
    expect_config_error([&] { (void)client::load_client_config(path); });
    expect_config_error([&] { (void)server::load_server_config(path); });
  }
  return 0;
}

}  // namespace cutlayer::fuzz::config

CUTLAYER_FUZZ_ENTRY(config)
