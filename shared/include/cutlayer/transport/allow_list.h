// The server's list of client public keys that may join, each with a name.
#pragma once

#include <cstddef>
#include <string>
#include <unordered_map>

namespace cutlayer::transport {

class AllowList {
 public:
  // File format: one "<name> <z85-public-key>" per line; blank lines and '#' comments.
  // The file must be owned by this process's user or root and not writable by group or
  // other (FileProtection::kTrusted in keys.h: checked on the opened file, as ssh does);
  // otherwise ConfigError names the file, the problem and the fix ("chmod go-w <path>").
  static AllowList load(const std::string& path);
  static AllowList parse(const std::string& text, const std::string& source);

  // Throws ConfigError for a bad key or a duplicate name/key.
  void add(const std::string& name, const std::string& public_key_z85);
  // The client's name for a 32-byte binary public key, or nullptr.
  const std::string* find_binary(const void* key32) const;
  const std::string* find(const std::string& public_key_z85) const;
  std::size_t size() const { return by_key_.size(); }

 private:
  std::unordered_map<std::string, std::string> by_key_;  // z85 key -> name
};

}  // namespace cutlayer::transport
