// cutlayer-keygen: makes the Curve25519 key pairs of a server and its clients, and the
// server's allow-list. Secret files and the allow-list are written with mode 0600, .pub
// files 0644; each through a fresh temp file (O_EXCL|O_NOFOLLOW) renamed into place;
// nothing is overwritten without --force. Secrets are wiped from memory once written.
#include <CLI/CLI.hpp>
#include <sys/stat.h>

#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"
#include "cutlayer/transport/keys.h"

using namespace cutlayer;

int main(int argc, char** argv) {
  CLI::App app{"cutlayer-keygen: Curve25519 key pairs for cutlayer-server and its clients"};
  std::string out_dir;
  std::vector<std::string> clients;
  bool force = false;
  bool no_server = false;
  app.add_option("-o,--out", out_dir, "directory for the key files (created if missing)")
      ->required();
  app.add_option("-c,--clients", clients, "client names, e.g. --clients alice,bob")
      ->delimiter(',');
  app.add_flag("--no-server", no_server, "make only client keys (server.key exists already)");
  app.add_flag("-f,--force", force, "replace existing key files");
  app.footer(
      "Writes server.key (secret, 0600), server.pub (0644), <name>.key (secret, 0600), <name>.pub\n"
      "and allow-list.txt (0600, '<name> <public key>' per client) into --out. Give server.pub to\n"
      "every client and allow-list.txt to the server. The daemons refuse a .key file open to\n"
      "group/other and an allow-list or server.pub writable by group/other; each must be owned\n"
      "by the user the daemon runs as (or root): run keygen as that user, or chown the files.");
  CLI11_PARSE(app, argc, argv);

  for (const auto& name : clients) {
    if (name.empty() || name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                               "0123456789-_.") != std::string::npos) {
      std::cerr << "cutlayer-keygen: client name '" << name
                << "' may use only letters, digits, '-', '_' and '.'\n";
      return 2;
    }
  }
  try {
    if (::mkdir(out_dir.c_str(), 0700) != 0 && errno != EEXIST)
      throw IoError("cannot create directory '" + out_dir + "'");
    auto write_pair = [&](const std::string& name, const std::string& role) {
      auto kp = transport::generate_key_pair();  // its secret is wiped on destruction
      std::string text = transport::format_key_pair(kp, "cutlayer " + role + " key pair: keep secret");
      crypto::ScopedWipe wipe_text(text);
      transport::write_private_file(out_dir + "/" + name + ".key", text, force);
      transport::write_public_file(out_dir + "/" + name + ".pub",
                                   "# cutlayer " + role + " public key\npublic-key = " + kp.public_key + "\n",
                                   force);
      std::cout << "wrote " << out_dir << "/" << name << ".key and .pub\n";
      return kp;
    };
    if (!no_server) write_pair("server", "server");
    if (!clients.empty()) {
      std::ostringstream allow;
      allow << "# cutlayer allow-list: <client name> <Z85 public key>\n";
      for (const auto& name : clients) {
        const auto kp = write_pair(name, "client '" + name + "'");
        allow << name << " " << kp.public_key << "\n";
      }
      transport::write_private_file(out_dir + "/allow-list.txt", allow.str(), force);
      std::cout << "wrote " << out_dir << "/allow-list.txt (" << clients.size() << " clients)\n";
    }
  } catch (const Error& e) {
    std::cerr << "cutlayer-keygen: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
