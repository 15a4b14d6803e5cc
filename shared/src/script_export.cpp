#include "cutlayer/model/script_export.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <sstream>

#include "cutlayer/error.h"
#include "cutlayer/io/files.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/model/script_model.h"

namespace cutlayer::model {
namespace {

std::string ints(const torch::ExpandingArray<2>& a) { return fmt::format("[{}, {}]", (*a)[0], (*a)[1]); }

// Registers `m`'s tensors as "l<i>_<name>" on `out` and returns the TorchScript line for layer i.
std::string layer_line(torch::jit::Module& out, std::size_t i, const std::shared_ptr<torch::nn::Module>& m) {
  const std::string p = fmt::format("self.l{}_", i);
  auto reg = [&](const std::string& name, const torch::Tensor& t, bool buffer) {
    const std::string full = fmt::format("l{}_{}", i, name);
    if (buffer) out.register_buffer(full, t.detach().clone());
    else out.register_parameter(full, t.detach().clone(), /*is_buffer=*/false);
  };
  if (auto c = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(m)) {
    const auto& o = c->options;
    const auto* pad = c10::get_if<torch::ExpandingArray<2>>(&o.padding());
    if (!pad || o.groups() != 1 || !c->bias.defined())
      throw ConfigError("export: only conv2d with numeric padding, one group and a bias can be exported");
    reg("weight", c->weight, false);
    reg("bias", c->bias, false);
    return fmt::format("x = torch.conv2d(x, {0}weight, {0}bias, {1}, {2}, {3}, 1)", p, ints(o.stride()), ints(*pad),
                       ints(o.dilation()));
  }
  if (auto l = std::dynamic_pointer_cast<torch::nn::LinearImpl>(m)) {
    reg("weight", l->weight, false);
    reg("bias", l->bias, false);
    return fmt::format("x = torch.linear(x, {0}weight, {0}bias)", p);
  }
  if (std::dynamic_pointer_cast<torch::nn::ReLUImpl>(m)) return "x = torch.relu(x)";
  if (std::dynamic_pointer_cast<torch::nn::TanhImpl>(m)) return "x = torch.tanh(x)";
  if (std::dynamic_pointer_cast<torch::nn::SigmoidImpl>(m)) return "x = torch.sigmoid(x)";
  if (auto mp = std::dynamic_pointer_cast<torch::nn::MaxPool2dImpl>(m)) {
    const auto& o = mp->options;
    return fmt::format("x = torch.max_pool2d(x, {}, {}, {}, {}, {})", ints(o.kernel_size()), ints(o.stride()),
                       ints(o.padding()), ints(o.dilation()), o.ceil_mode() ? "True" : "False");
  }
  if (auto ap = std::dynamic_pointer_cast<torch::nn::AvgPool2dImpl>(m)) {
    const auto& o = ap->options;
    if (o.divisor_override()) throw ConfigError("export: avgpool with a divisor override cannot be exported");
    return fmt::format("x = torch.avg_pool2d(x, {}, {}, {}, {}, {})", ints(o.kernel_size()), ints(o.stride()),
                       ints(o.padding()), o.ceil_mode() ? "True" : "False", o.count_include_pad() ? "True" : "False");
  }
  if (auto f = std::dynamic_pointer_cast<torch::nn::FlattenImpl>(m))
    return fmt::format("x = torch.flatten(x, {}, {})", f->options.start_dim(), f->options.end_dim());
  if (std::dynamic_pointer_cast<torch::nn::DropoutImpl>(m)) return "";  // the identity in eval mode
  if (std::dynamic_pointer_cast<CutNormImpl>(m))
    return fmt::format("x = torch.layer_norm(x, x.size()[1:], None, None, {:.17g})", CutNormImpl::kEps);
  if (auto script = std::dynamic_pointer_cast<ScriptedPartImpl>(m)) {  // a user's own module, as trained
    auto copy = script->script().deepcopy();
    copy.eval();
    out.register_module(fmt::format("l{}", i), copy);
    return fmt::format("x = self.l{}.forward(x)", i);
  }
  auto batch_norm = [&](const auto& bn) {
    if (!bn->options.affine() || !bn->options.track_running_stats())
      throw ConfigError("export: only batch norm with affine weights and running statistics can be exported");
    reg("weight", bn->weight, false);
    reg("bias", bn->bias, false);
    reg("running_mean", bn->running_mean, true);
    reg("running_var", bn->running_var, true);
    return fmt::format("x = torch.batch_norm(x, {0}weight, {0}bias, {0}running_mean, {0}running_var, False, 0.0, "
                       "{1:.17g}, False)",
                       p, bn->options.eps());
  };
  if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm1dImpl>(m)) return batch_norm(bn);
  if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(m)) return batch_norm(bn);
  throw ConfigError("export: layer " + std::to_string(i) + " (" + m->name() + ") cannot be exported to TorchScript");
}

}  // namespace

torch::jit::Module to_script(const torch::nn::Sequential& net, const std::string& name) {
  torch::jit::Module out(name);
  std::string body;
  const auto children = net->children();
  for (std::size_t i = 0; i < children.size(); ++i) {
    const auto line = layer_line(out, i, children[i]);
    if (!line.empty()) body += "    " + line + "\n";
  }
  out.define("def forward(self, x):\n" + body + "    return x\n");
  out.eval();
  return out;
}

torch::jit::Module client_script(const torch::nn::Sequential& front, const torch::nn::Sequential* head) {
  torch::jit::Module out("cutlayer_client");
  out.register_module("front", to_script(front, "cutlayer_front"));
  std::string src = "def forward(self, x):\n    return self.front.forward(x)\n";
  if (head) {
    out.register_module("head", to_script(*head, "cutlayer_head"));
    src += "def head_forward(self, h):\n    return self.head.forward(h)\n";
  }
  out.define(src);
  out.eval();
  return out;
}

torch::jit::Module join_scripts(const torch::jit::Module& client, const torch::jit::Module& back) {
  const bool has_head = client.find_method("head_forward").has_value();
  if (!client.find_method("forward") || !back.find_method("forward"))
    throw ConfigError("export: a part has no forward method (not a cutlayer export?)");
  torch::jit::Module out("cutlayer_model");
  out.register_module("client", client.clone());
  out.register_module("back", back.clone());
  out.define(has_head ? "def forward(self, x):\n    return self.client.head_forward(self.back.forward(self.client.forward(x)))\n"
                      : "def forward(self, x):\n    return self.back.forward(self.client.forward(x))\n");
  out.eval();
  return out;
}

void save_reference(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  c10::Dict<std::string, torch::Tensor> d;
  for (const auto& [name, t] : tensors) d.insert(name, t.detach().clone());  // clone: not a view's whole storage
  const auto bytes = torch::pickle_save(c10::IValue(d));
  io::write_file_atomically(path, bytes.data(), bytes.size(), 0644, /*replace=*/true);
}

torch::Tensor reference_inputs(std::int64_t n, const std::vector<std::int64_t>& shape) {
  std::vector<std::int64_t> full{n};
  full.insert(full.end(), shape.begin(), shape.end());
  auto gen = at::detail::createCPUGenerator(20261205);
  return torch::randn(full, gen);
}

void save_script(const torch::jit::Module& m, const std::string& path) {
  std::ostringstream s;
  m.save(s);
  const auto bytes = s.str();
  io::write_file_atomically(path, bytes.data(), bytes.size(), 0644, /*replace=*/true);
}

}  // namespace cutlayer::model
