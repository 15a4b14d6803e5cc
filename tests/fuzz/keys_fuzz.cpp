// keys: a key pair file and a public key file through load_key_pair / load_public_key
// (read_protected_file's checks on the opened file, then the "name = value" lines).
//   input := u8 mode selector (the file's mode: 0600 0400 0640 0604 0644 0660 0666 0700),
//            the file's bytes
// Refusal is ConfigError or IoError. Invariants: a key pair loads only from a file with no
// group/other access, a public key only from one not writable by group/other; every key
// returned is 40 characters of the Z85 alphabet that decode to 32 bytes and encode back to
// themselves (libzmq decodes up to the first NUL, so anything else is not the key the file
// seems to hold).
#include <zmq.h>

#include "cutlayer/error.h"
#include "cutlayer/transport/keys.h"
#include "fuzz_common.h"

namespace cutlayer::fuzz::keys {
namespace {

constexpr unsigned kModes[] = {0600, 0400, 0640, 0604, 0644, 0660, 0666, 0700};

void check_canonical_z85(const std::string& key, const char* what) {
  check(key.size() == 40, std::string(what) + " is not 40 characters");
  std::uint8_t bin[32];
  check(zmq_z85_decode(bin, key.c_str()) != nullptr, std::string(what) + " does not decode");
  char again[41];
  check(zmq_z85_encode(again, bin, 32) != nullptr && key == std::string(again, 40),
        std::string(what) + " accepted, but it is not the Z85 text of the 32 bytes libzmq decodes from it");
}

}  // namespace

int fuzz_one(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  const unsigned mode = kModes[in.take<std::uint8_t>() % 8];
  const auto path = write_temp_file("key", in.rest(), mode);
  try {
    const auto kp = transport::load_key_pair(path);
    check((mode & 077) == 0, "a key pair file open to group or other was read");
    check_canonical_z85(kp.public_key, "public-key");
    check_canonical_z85(kp.secret_key, "secret-key");
  } catch (const ConfigError&) {
  } catch (const IoError&) {
  }
  try {
    const auto pub = transport::load_public_key(path);
    check((mode & 022) == 0, "a public key file writable by group or other was read");
    check_canonical_z85(pub, "public-key");
  } catch (const ConfigError&) {
  } catch (const IoError&) {
  }
  return 0;
}

}  // namespace cutlayer::fuzz::keys

CUTLAYER_FUZZ_ENTRY(keys)
