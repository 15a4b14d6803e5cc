// A TorchScript file (torch.jit.save) is a zip archive: <root>/data.pkl, <root>/code/...,
// <root>/data/<n> (tensor bytes), <root>/version. LibTorch's reader does not check the
// records' CRC-32 (a flipped byte in a weight would load as a silently wrong model) and
// answers a too-new file with a message about "your PyTorch installation". This checks the
// archive first, with every offset and size bounded by the file before it is used.
#pragma once

#include <cstdint>
#include <string>

namespace cutlayer::model::detail {

struct ScriptArchive {
  std::uint64_t format_version = 0;  // <root>/version
  std::string code_sha256;           // hex SHA-256 of the code records (names and text)
  bool torchscript = false;          // has code records (torch.save writes none)
};

// Reads `bytes` (the file at `path`, for messages) as a zip archive: the central directory,
// each record's local header, its data (stored or deflated) against its CRC-32 and size.
// Throws ConfigError("<path>: ...") for a truncated, corrupted or non-zip file.
ScriptArchive check_script_archive(const std::string& bytes, const std::string& path);

}  // namespace cutlayer::model::detail
