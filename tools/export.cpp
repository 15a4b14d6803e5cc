// cutlayer-export: one model for inference from the parties' TorchScript parts. The client
// exports its front (U-shaped: and head) with `cutlayer-client --export`, the server its back
// with `cutlayer-server --export`; put together here, forward(x) is back(front(x)) or
// head(back(front(x))), a file Python's torch.jit.load opens.
#include <CLI/CLI.hpp>
#include <torch/script.h>

#include <iostream>

#include "cutlayer/cli.h"
#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/model/script_export.h"
#include "cutlayer/report/json.h"

using namespace cutlayer;

namespace {

torch::jit::Module load_part(const std::string& path, const std::string& what) {
  try {
    return torch::jit::load(path);
  } catch (const c10::Error& e) {
    throw ConfigError("'" + path + "' is not a TorchScript file (" + what + "): " + e.what_without_backtrace());
  }
}

int run(const std::string& client_path, const std::string& back_path, const std::string& out) {
  const auto client = load_part(client_path, "the client's part, from cutlayer-client --export");
  const auto back = load_part(back_path, "the server's back, from cutlayer-server --export");
  const auto joined = model::join_scripts(client, back);
  model::save_script(joined, out);
  const bool head = client.find_method("head_forward").has_value();
  log::get("export")->info("{} written: {}", out, head ? "head(back(front(x)))" : "back(front(x))");
  std::cout << report::Json().add("tool", "cutlayer-export").add("model", out).add("u_shaped", head).str() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cutlayer-export: one TorchScript model for inference from the client's and the server's exports"};
  std::string client_path, back_path, out;
  app.add_option("--client", client_path, "the client's part (cutlayer-client --export)")->required();
  app.add_option("--back", back_path, "the server's back (cutlayer-server --export)")->required();
  app.add_option("--out", out, "the model to write (TorchScript)")->required();
  CLI11_PARSE(app, argc, argv);
  return cli::guarded_main("cutlayer-export", [&] { return run(client_path, back_path, out); });
}
