#include "cutlayer/model/script_model.h"

#include <caffe2/serialize/versions.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <fstream>
#include <map>
#include <sstream>
#include <sys/stat.h>

#include "cutlayer/error.h"
#include "script_file.h"

namespace cutlayer::model {
namespace {

constexpr std::uint64_t kMaxScriptBytes = 4ull << 30;

std::string describe(const c10::TypePtr& t) { return t ? t->annotation_str() : "nothing"; }

std::string read_whole(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw ConfigError(path + ": no such model file (paths in a config are relative to the config file)");
  if (!S_ISREG(st.st_mode)) throw ConfigError(path + ": not a regular file");
  if (static_cast<std::uint64_t>(st.st_size) > kMaxScriptBytes)
    throw ConfigError(path + ": " + std::to_string(st.st_size) + " bytes; model files up to 4 GiB are accepted");
  std::ifstream in(path, std::ios::binary);
  std::string bytes(static_cast<std::size_t>(st.st_size), '\0');
  if (!in || !in.read(bytes.data(), static_cast<std::streamsize>(bytes.size())))
    throw ConfigError(path + ": cannot be read");
  return bytes;
}

void check_forward(const torch::jit::Module& m, const std::string& path) {
  const auto forward = m.find_method("forward");
  if (!forward) throw ConfigError(path + ": the module has no forward method");
  const auto& schema = forward->function().getSchema();
  const auto& args = schema.arguments();  // self first
  std::string takes, returns;
  for (std::size_t i = 1; i < args.size(); ++i) takes += (i > 1 ? ", " : "") + describe(args[i].type());
  for (const auto& r : schema.returns()) returns += (returns.empty() ? "" : ", ") + describe(r.type());
  const auto tensor = c10::TensorType::get();
  const bool one_in = args.size() == 2 && args[1].type()->isSubtypeOf(*tensor);
  const bool one_out = schema.returns().size() == 1 && schema.returns()[0].type()->isSubtypeOf(*tensor);
  if (!one_in || !one_out)
    throw ConfigError(path + ": forward takes (" + takes + ") and returns " + (returns.empty() ? "nothing" : returns) +
                      "; a part must take one Tensor and return one Tensor (def forward(self, x: Tensor) -> Tensor)");
}

// Holders for the script's submodule names, so that "a.b.weight" is found as a.b's "weight".
torch::nn::Module& holder_for(torch::nn::Module& root, const std::string& dotted, std::string& leaf,
                              std::map<std::string, std::shared_ptr<torch::nn::Module>>& made) {
  torch::nn::Module* at = &root;
  std::string prefix;
  std::size_t from = 0;
  for (auto dot = dotted.find('.'); dot != std::string::npos; dot = dotted.find('.', from)) {
    const auto part = dotted.substr(from, dot - from);
    prefix += part + ".";
    auto& child = made[prefix];
    if (!child) child = at->register_module(part, std::make_shared<torch::nn::Module>(part));
    at = child.get();
    from = dot + 1;
  }
  leaf = dotted.substr(from);
  return *at;
}

}  // namespace

ScriptedPartImpl::ScriptedPartImpl(torch::jit::Module script, std::string path, std::string code_sha256)
    : torch::nn::Module("ScriptedPart"),
      script_(std::move(script)),
      path_(std::move(path)),
      code_sha256_(std::move(code_sha256)) {
  std::map<std::string, std::shared_ptr<torch::nn::Module>> made;
  std::string leaf;
  for (const auto& p : script_.named_parameters(/*recurse=*/true)) {
    auto& h = holder_for(*this, p.name, leaf, made);
    h.register_parameter(leaf, p.value, /*requires_grad=*/true);  // every parameter trains
  }
  for (const auto& b : script_.named_buffers(/*recurse=*/true)) {
    auto& h = holder_for(*this, b.name, leaf, made);
    h.register_buffer(leaf, b.value);
  }
  train(script_.is_training());
}

// The graph executor's optimizing mode profiles the first runs and then rewrites the graph
// (differentiable subgraphs); for the models trained here it made a step slower (about 10%
// on the scripted fmnist-cnn), so the script runs op by op, as eager PyTorch does, with
// autograd recording each op.
torch::Tensor ScriptedPartImpl::forward(torch::Tensor x) {
  torch::jit::GraphOptimizerEnabledGuard plain(false);
  return script_.forward({std::move(x)}).toTensor();
}

void ScriptedPartImpl::train(bool on) {
  script_.train(on);
  torch::nn::Module::train(on);
}

void ScriptedPartImpl::pretty_print(std::ostream& stream) const { stream << "ScriptedPart(" << path_ << ")"; }

std::uint64_t max_script_format_version() { return caffe2::serialize::kMaxSupportedFileFormatVersion; }

ScriptedPart load_scripted_part(const std::string& path) {
  const auto bytes = read_whole(path);
  const auto archive = detail::check_script_archive(bytes, path);
  if (!archive.torchscript)
    throw ConfigError(path + ": a PyTorch archive without TorchScript code (torch.save of a model or its "
                      "state_dict?); write it with torch.jit.save(torch.jit.script(model), path)");
  if (archive.format_version > max_script_format_version() ||
      archive.format_version < caffe2::serialize::kMinSupportedFileFormatVersion)
    throw ConfigError(path + ": TorchScript file format version " + std::to_string(archive.format_version) +
                      "; this LibTorch (1.13) reads versions " +
                      std::to_string(caffe2::serialize::kMinSupportedFileFormatVersion) + " to " +
                      std::to_string(max_script_format_version()) +
                      ": export the model with PyTorch 1.13 (Debian bookworm's python3-torch)");
  torch::jit::Module m;
  try {
    std::istringstream in(bytes);
    m = torch::jit::load(in, torch::kCPU);
  } catch (const std::exception& e) {  // c10::Error and the unpickler's own
    const std::string what = e.what();
    throw ConfigError(path + ": LibTorch cannot load it: " + what.substr(0, what.find('\n')) +
                      " (write it with torch.jit.save from PyTorch 1.13)");
  }
  check_forward(m, path);
  return ScriptedPart(std::move(m), path, archive.code_sha256);
}

torch::nn::Sequential load_script_sequential(const std::string& path) {
  torch::nn::Sequential seq;
  seq->push_back(load_scripted_part(path));
  return seq;
}

}  // namespace cutlayer::model
