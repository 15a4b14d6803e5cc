#include "cutlayer/model/model_spec.h"

#include <cmath>
#include <sstream>

#include "cutlayer/error.h"
#include "cutlayer/model/script_model.h"

namespace cutlayer::model {
namespace {

struct Layer {
  std::string name;
  std::vector<double> args;
};

std::vector<Layer> parse(const std::string& spec) {
  std::vector<Layer> out;
  std::size_t i = 0;
  const auto n = spec.size();
  while (i < n) {
    if (std::isspace(static_cast<unsigned char>(spec[i]))) {
      ++i;
      continue;
    }
    Layer l;
    while (i < n && (std::isalnum(static_cast<unsigned char>(spec[i])) || spec[i] == '_')) l.name += spec[i++];
    if (l.name.empty())
      throw ConfigError("model spec '" + spec + "': unexpected '" + spec.substr(i, 1) + "' at " +
                        std::to_string(i));
    if (i < n && spec[i] == '(') {
      const auto close = spec.find(')', i);
      if (close == std::string::npos) throw ConfigError("model spec: '" + l.name + "(' is not closed");
      std::stringstream ss(spec.substr(i + 1, close - i - 1));
      std::string a;
      while (std::getline(ss, a, ',')) {
        char* end = nullptr;
        const double v = std::strtod(a.c_str(), &end);
        if (end == a.c_str()) throw ConfigError("model spec: " + l.name + ": '" + a + "' is not a number");
        l.args.push_back(v);
      }
      i = close + 1;
    }
    out.push_back(std::move(l));
  }
  return out;
}

// Layer sizes, counts, strides and padding are integers in [min, kMaxArg]: a larger one is a
// typo, would exhaust memory, and past 2^63 would not even convert to an integer (found by
// the config fuzzer: linear(1e300, 8)).
constexpr double kMaxArg = 1 << 24;

std::int64_t int_arg(const Layer& l, std::size_t k, std::int64_t dflt = -1, double min = 1) {
  if (k >= l.args.size()) {
    if (dflt >= 0) return dflt;
    throw ConfigError("model spec: " + l.name + " needs at least " + std::to_string(k + 1) + " arguments");
  }
  const double v = l.args[k];
  if (!(v >= min && v <= kMaxArg) || v != std::floor(v))  // NaN fails the first test
    throw ConfigError("model spec: " + l.name + " argument " + std::to_string(k + 1) + " must be an integer from " +
                      std::to_string(static_cast<int>(min)) + " to " + std::to_string(static_cast<int>(kMaxArg)));
  return static_cast<std::int64_t>(v);
}

}  // namespace

torch::nn::Sequential build(const std::string& spec) {
  torch::nn::Sequential seq;
  for (const auto& l : parse(spec)) {
    const auto& n = l.name;
    if (n == "conv2d") {
      auto o = torch::nn::Conv2dOptions(int_arg(l, 0), int_arg(l, 1), int_arg(l, 2))
                   .stride(int_arg(l, 3, 1));
      if (l.args.size() > 4) o.padding(int_arg(l, 4, -1, 0));
      seq->push_back(torch::nn::Conv2d(o));
    } else if (n == "linear") {
      seq->push_back(torch::nn::Linear(int_arg(l, 0), int_arg(l, 1)));
    } else if (n == "relu") {
      seq->push_back(torch::nn::ReLU());
    } else if (n == "tanh") {
      seq->push_back(torch::nn::Tanh());
    } else if (n == "sigmoid") {
      seq->push_back(torch::nn::Sigmoid());
    } else if (n == "maxpool") {
      const auto k = int_arg(l, 0);
      seq->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(k).stride(int_arg(l, 1, k))));
    } else if (n == "avgpool") {
      const auto k = int_arg(l, 0);
      seq->push_back(torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(k).stride(int_arg(l, 1, k))));
    } else if (n == "flatten") {
      seq->push_back(torch::nn::Flatten());
    } else if (n == "dropout") {
      if (l.args.size() != 1 || !(l.args[0] >= 0 && l.args[0] < 1))  // NaN fails too
        throw ConfigError("model spec: dropout(p) needs p in [0, 1)");
      seq->push_back(torch::nn::Dropout(l.args[0]));
    } else if (n == "batchnorm1d") {
      seq->push_back(torch::nn::BatchNorm1d(int_arg(l, 0)));
    } else if (n == "batchnorm2d") {
      seq->push_back(torch::nn::BatchNorm2d(int_arg(l, 0)));
    } else if (n == "cutnorm") {
      if (!l.args.empty()) throw ConfigError("model spec: cutnorm takes no arguments");
      seq->push_back(CutNorm());
    } else {
      throw ConfigError("model spec: unknown layer '" + n +
                        "' (known: conv2d linear relu tanh sigmoid maxpool avgpool flatten dropout "
                        "batchnorm1d batchnorm2d cutnorm)");
    }
  }
  return seq;
}

std::vector<std::string> preset_names() { return {"fmnist-cnn", "fmnist-deep-front"}; }

SplitSpec preset(const std::string& name, bool u_shaped) {
  if (name == "fmnist-cnn") {
    SplitSpec s;
    s.name = name;
    s.front = "conv2d(1,32,5) relu maxpool(2)";
    s.back = "conv2d(32,64,5) relu maxpool(2) flatten linear(1024,512) relu";
    if (u_shaped) s.head = "linear(512,10)";
    else s.back += " linear(512,10)";
    s.input_shape = {1, 28, 28};
    return s;
  }
  if (name == "fmnist-deep-front") {
    // The same network cut late: the client holds conv1, conv2 and the first linear
    // layer (about 0.58M parameters, so syncing the fronts matters); the server the
    // classifier.
    if (u_shaped)
      throw ConfigError("model 'fmnist-deep-front' leaves only the classifier to the server, so it has no "
                        "U-shaped form; use fmnist-cnn or a custom front/back/head for U-shaped runs");
    SplitSpec s;
    s.name = name;
    s.front = "conv2d(1,32,5) relu maxpool(2) conv2d(32,64,5) relu maxpool(2) flatten linear(1024,512) relu";
    s.back = "linear(512,10)";
    s.input_shape = {1, 28, 28};
    return s;
  }
  std::string known;
  for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
  throw ConfigError("unknown model '" + name + "' (known: " + known + ")");
}

namespace {

torch::nn::Sequential build_part(const std::string& spec, const std::vector<std::string>& files) {
  if (files.empty()) return build(spec);
  torch::nn::Sequential seq;
  for (const auto& f : files) seq->push_back(load_scripted_part(f));
  return seq;
}

}  // namespace

SplitModel build_split(const SplitSpec& spec, std::uint64_t seed) {
  torch::manual_seed(seed);
  SplitModel m;
  m.front = build_part(spec.front, spec.front_files);
  m.back = build_part(spec.back, spec.back_files);
  if (!spec.head.empty() || !spec.head_files.empty()) m.head = build_part(spec.head, spec.head_files);
  return m;
}

void require_back(const SplitModel& m, const std::string& program) {
  if (m.back->is_empty())
    throw ConfigError("train.model.back: " + program + " needs the back's TorchScript file (only a client's "
                      "config may leave it out)");
}

std::vector<std::int64_t> output_shape(torch::nn::Sequential& net, const std::vector<std::int64_t>& in) {
  torch::NoGradGuard no_grad;
  std::vector<std::int64_t> shape{2};
  shape.insert(shape.end(), in.begin(), in.end());
  const bool was_training = net->is_training();
  net->eval();
  torch::Tensor out;
  try {
    out = net->forward(torch::zeros(shape));
  } catch (const c10::Error& e) {
    if (was_training) net->train();
    throw ConfigError("model does not accept per-sample input " + shape_string(in) + ": " +
                      e.what_without_backtrace());
  } catch (const std::exception& e) {  // a TorchScript assert/raise (JITException)
    if (was_training) net->train();
    throw ConfigError("model does not accept per-sample input " + shape_string(in) + ": " + e.what());
  }
  if (was_training) net->train();
  return std::vector<std::int64_t>(out.sizes().begin() + 1, out.sizes().end());
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace cutlayer::model
