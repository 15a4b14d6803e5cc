// Users' own models: a TorchScript file (Python: torch.jit.save(torch.jit.script(m), path))
// as a front, back or head, trained like the built-in layers.
//
// A TorchScript file is code: LibTorch runs its forward. Load only files the operator
// trusts, from the operator's own configuration; cutlayer never takes a model over the wire.
//
// The module's parameters and buffers are registered on a C++ module under their PyTorch
// names ("layer1.0.conv1.weight"): the same tensors, so the optimizer, checkpoints,
// aggregation (flat parameters) and hashes see them as they see the presets', and what
// they change is what the script computes with. train()/eval() switch the script's own
// modules too (BatchNorm statistics, dropout).
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace cutlayer::model {

class ScriptedPartImpl : public torch::nn::Module {
 public:
  // `script` as loaded from `path`; `code_sha256` identifies its code (not its weights).
  ScriptedPartImpl(torch::jit::Module script, std::string path, std::string code_sha256);
  torch::Tensor forward(torch::Tensor x);
  void train(bool on = true) override;
  void pretty_print(std::ostream& stream) const override;

  const torch::jit::Module& script() const { return script_; }
  const std::string& path() const { return path_; }
  const std::string& code_sha256() const { return code_sha256_; }

 private:
  torch::jit::Module script_;
  std::string path_, code_sha256_;
};
TORCH_MODULE(ScriptedPart);

// The newest TorchScript file format LibTorch 1.13 reads (caffe2's kMaxSupportedFileFormatVersion).
std::uint64_t max_script_format_version();

// Loads `path` as one part: checks the archive (truncated, corrupted, not TorchScript, a
// format newer than this LibTorch), loads it, and checks that it has a forward taking one
// Tensor and returning one Tensor. Throws ConfigError naming the file, what is wrong and
// the fix; never a crash.
ScriptedPart load_scripted_part(const std::string& path);

// The part as a Sequential of one module, as build() makes for a layer spec.
torch::nn::Sequential load_script_sequential(const std::string& path);

}  // namespace cutlayer::model
