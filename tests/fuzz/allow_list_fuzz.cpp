// allow_list: the server's allow-list text through AllowList::parse (and, for one input in
// eight, AllowList::load from a 0644 temp file, through read_protected_file).
//   input := u8 (bit 0-2 all set: load from a file), the list's text
// Refusal is ConfigError (IoError for a file). Invariants: each name and each key is
// listed once; every listed key is the canonical Z85 text of 32 bytes, and find() and
// find_binary() of those bytes both give its name.
#include <zmq.h>

#include <set>
#include <sstream>

#include "cutlayer/error.h"
#include "cutlayer/transport/allow_list.h"
#include "fuzz_common.h"

namespace cutlayer::fuzz::allow_list {

int fuzz_one(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  const bool from_file = (in.take<std::uint8_t>() & 7) == 7;
  const std::string text = in.rest();
  transport::AllowList list;
  try {
    list = from_file ? transport::AllowList::load(write_temp_file("allow-list", text, 0644))
                     : transport::AllowList::parse(text, "fuzz-allow-list");
  } catch (const ConfigError&) {
    return 0;
  } catch (const IoError&) {
    return 0;
  }
  // Walk the text as the format says (whitespace-separated "<name> <key>", '#' comments
  // at a line's start or after whitespace) and look every entry up.
  std::istringstream lines(text);
  std::string line;
  std::set<std::string> names;
  std::size_t entries = 0;
  while (std::getline(lines, line)) {
    for (std::size_t i = 0; i < line.size(); ++i)
      if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
        line.resize(i);
        break;
      }
    std::istringstream f(line);
    std::string name, key;
    if (!(f >> name)) continue;
    f >> key;
    ++entries;
    check(names.insert(name).second, "name '" + name + "' accepted twice");
    const std::string* found = list.find(key);
    check(found != nullptr && *found == name, "listed key not found under its name");
    std::uint8_t bin[32];
    check(key.size() == 40 && zmq_z85_decode(bin, key.c_str()) != nullptr, "listed key does not decode");
    char again[41];
    check(zmq_z85_encode(again, bin, 32) != nullptr && key == std::string(again, 40),
          "listed key is not the Z85 text of the 32 bytes libzmq decodes from it");
    const std::string* by_binary = list.find_binary(bin);
    check(by_binary != nullptr && *by_binary == name, "find_binary misses a listed key");
  }
  check(entries == list.size(), "entry count differs from the list's size");
  return 0;
}

}  // namespace cutlayer::fuzz::allow_list

CUTLAYER_FUZZ_ENTRY(allow_list)
