#include "cutlayer/transport/allow_list.h"

#include <zmq.h>

#include <sstream>

#include "cutlayer/error.h"
#include "cutlayer/transport/keys.h"

namespace cutlayer::transport {

AllowList AllowList::load(const std::string& path) {
  // ~50 bytes a client: 16 MiB is hundreds of thousands of clients.
  constexpr std::size_t kMaxBytes = 16u << 20;
  return parse(read_protected_file(path, FileProtection::kTrusted, "allow-list", kMaxBytes),
               path);
}

AllowList AllowList::parse(const std::string& text, const std::string& source) {
  AllowList list;
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    // '#' starts a comment at the start of a line or after whitespace; Z85 keys may
    // contain '#' themselves.
    for (std::size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
        line.resize(i);
        break;
      }
    }
    std::istringstream fields(line);
    std::string name, key, extra;
    if (!(fields >> name)) continue;
    const std::string where = source + ":" + std::to_string(lineno) + ": ";
    if (!(fields >> key) || (fields >> extra))
      throw ConfigError(where + "expected '<name> <z85-public-key>'");
    try {
      list.add(name, key);
    } catch (const ConfigError& e) {
      throw ConfigError(where + e.what());
    }
  }
  return list;
}

void AllowList::add(const std::string& name, const std::string& key) {
  if (!is_z85_key(key))
    throw ConfigError("key for '" + name + "' is not a 40-character Z85 Curve25519 public key");
  for (const auto& [k, n] : by_key_)
    if (n == name) throw ConfigError("client name '" + name + "' appears twice");
  if (!by_key_.emplace(key, name).second)
    throw ConfigError("the key for '" + name + "' is already listed for '" + by_key_[key] + "'");
}

const std::string* AllowList::find(const std::string& key) const {
  const auto it = by_key_.find(key);
  return it == by_key_.end() ? nullptr : &it->second;
}

const std::string* AllowList::find_binary(const void* key32) const {
  char z85[41];
  if (zmq_z85_encode(z85, static_cast<const std::uint8_t*>(key32), 32) == nullptr) return nullptr;
  return find(std::string(z85, 40));
}

}  // namespace cutlayer::transport
