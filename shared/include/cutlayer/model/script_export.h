// Trained models for PyTorch users: TorchScript modules that Python's torch.jit.load opens
// (python3-torch is the same 1.13 as this LibTorch), built from cutlayer's Sequentials.
//
// A C++ frontend module cannot be scripted, so the export writes TorchScript source, one
// functional call per layer, over the layer's weights registered on a torch::jit::Module
// (Module::define). What it computes is the Sequential in eval mode: dropout is the
// identity and batch norm uses its running statistics. A TorchScript part (a user's own
// model) is included as a copy of its module with the trained weights, in eval mode.
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace cutlayer::model {

// `net` as a TorchScript module whose forward(x) computes net(x) in eval mode, its
// parameters and buffers copied. Throws ConfigError for a layer it cannot express.
torch::jit::Module to_script(const torch::nn::Sequential& net, const std::string& name);

// The client's part: forward(x) is the front; U-shaped (head given), head(h) is the head.
torch::jit::Module client_script(const torch::nn::Sequential& front, const torch::nn::Sequential* head);

// One model for inference from the parties' exported parts (files as written above):
// forward(x) = back(front(x)), or head(back(front(x))) when the client's part has a head.
torch::jit::Module join_scripts(const torch::jit::Module& client, const torch::jit::Module& back);

// A parity reference beside an export: inputs and what cutlayer computed for them, by name
// (e.g. {"x", x}, {"out", logits}), pickled as a dict that Python's torch.load reads.
void save_reference(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors);
// `n` fixed pseudo-random inputs of per-sample `shape` (a reference for a part that sees no
// data of its own: the back, the head), from a generator of their own.
torch::Tensor reference_inputs(std::int64_t n, const std::vector<std::int64_t>& shape);

// Writes `m` to `path`, atomically (0644: a model is for sharing; it replaces an older one).
void save_script(const torch::jit::Module& m, const std::string& path);

}  // namespace cutlayer::model
