// SplitClient's trained model at work: the front (and head) exported as TorchScript, and
// predictions through the deployed split model over the sealed channel (no training, no
// labels sent).
#include <fmt/format.h>

#include <chrono>
#include <sstream>

#include "cutlayer/client/split_client.h"
#include "cutlayer/error.h"
#include "cutlayer/io/files.h"
#include "cutlayer/log.h"
#include "cutlayer/model/script_export.h"
#include "cutlayer/report/json.h"
#include "cutlayer/state/archive.h"
#include "cutlayer/train/loop.h"

namespace cutlayer::client {
namespace {

constexpr std::int64_t kPredictBatch = 500;

// The inputs as the model takes them: a CSV row of H*W values becomes an image.
torch::Tensor as_model_input(torch::Tensor x, const std::vector<std::int64_t>& input_shape, const std::string& path) {
  std::vector<std::int64_t> want{x.size(0)};
  want.insert(want.end(), input_shape.begin(), input_shape.end());
  if (x.sizes().vec() == want) return x;
  if (x.dim() == 2 && x.numel() == c10::multiply_integers(want)) return x.reshape(want);
  throw ConfigError("'" + path + "': inputs of " + model::shape_string({x.sizes().begin() + 1, x.sizes().end()}) +
                    " per example; the model takes " + model::shape_string(input_shape));
}

// A reply from the server: one float32 [n x width] tensor of finite values, the width the
// head takes (U-shaped) or that of the first reply (vanilla: the classes), at most 65536.
const torch::Tensor& checked_reply(const wire::Message& m, std::int64_t n, std::int64_t& width) {
  constexpr std::int64_t kMaxWidth = 65536;
  const bool ok = m.tensors.size() == 1 && m.tensors[0].dim() == 2 && m.tensors[0].size(0) == n &&
                  m.tensors[0].size(1) >= 1 && m.tensors[0].size(1) <= kMaxWidth &&
                  (width < 0 || m.tensors[0].size(1) == width) && m.tensors[0].scalar_type() == torch::kFloat32 &&
                  torch::isfinite(m.tensors[0]).all().item<bool>();
  if (!ok)
    throw ProtocolError("server: the answer to a prediction batch is not " + std::to_string(n) + " rows of " +
                        (width < 0 ? std::string("up to 65536") : std::to_string(width)) + " finite float32 values");
  width = m.tensors[0].size(1);
  return m.tensors[0];
}

}  // namespace

void SplitClient::export_parts(const std::string& path) {
  torch::NoGradGuard no_grad;
  const bool u = model_.has_head();
  model_.front->eval();
  if (u) model_.head->eval();
  model::save_script(model::client_script(model_.front, u ? &model_.head : nullptr), path);
  const auto x = data_.test.x.narrow(0, 0, std::min<std::int64_t>(100, data_.test.size()));
  std::vector<std::pair<std::string, torch::Tensor>> ref{{"x", x}, {"out", model_.front->forward(x)}};
  if (u) {
    const auto h = model::reference_inputs(100, head_input_shape());
    ref.emplace_back("h", h);
    ref.emplace_back("head_out", model_.head->forward(h));
  }
  model::save_reference(path + ".check", ref);
  model_.front->train();
  if (u) model_.head->train();
  log::get("client")->info("{}: front{} exported to {} (TorchScript; parity reference {}.check)", options_.name,
                           u ? " and head" : "", path, path);
}

// The head's input per example: the width its first (linear) layer takes.
std::vector<std::int64_t> SplitClient::head_input_shape() const {
  const auto params = model_.head->parameters();
  if (params.empty() || params[0].dim() != 2)
    throw ConfigError("export: the head does not start with a linear layer; its input shape is unknown");
  return {params[0].size(1)};
}

// The front (and head) of this client's newest checkpoint; its step.
std::int64_t SplitClient::load_trained() {
  const auto& o = options_.checkpoint;
  if (!o.enabled())
    throw ConfigError("predict needs the trained front: give --checkpoint-dir (or checkpoint.dir), the directory "
                      "this client's training wrote its checkpoints to");
  state::CheckpointStore store(o, state::CheckpointKey::from_key_file(options_.checkpoint_key), identity());
  const auto found = store.load_newest([&](const state::Opened& op) { restore(op.state); });
  if (!found)
    throw ConfigError("no checkpoint in '" + o.dir + "': train this client first (cutlayer-client with " +
                      "--checkpoint-dir " + io::shell_word(o.dir) + ")");
  log::get("client")->info("{}: the model of {} (step {})", options_.name, found->file, found->step);
  return found->step;
}

// One batch through the split model: the class probabilities, [m x classes].
torch::Tensor SplitClient::predict_batch(const torch::Tensor& x, std::int64_t& width) {
  const auto m = x.size(0);
  const auto sent = send_cut(model_.front->forward(x));
  const auto id = eval_id_++;
  dispatch_.send(wire::make_message(wire::Activations{id, false, false}, sent.tensors));
  const auto reply = dispatch_.await<wire::ServerActivations>(id).msg;
  auto logits = checked_reply(reply, m, width);
  if (model_.has_head()) logits = model_.head->forward(logits);
  return torch::softmax(logits, 1).contiguous();
}

namespace {

void write_rows(std::ostringstream& csv, std::int64_t first, const torch::Tensor& p) {
  const auto classes = p.size(1);
  if (first == 0) {
    csv << "index,class";
    for (std::int64_t c = 0; c < classes; ++c) csv << ",p" << c;
    csv << '\n';
  }
  const auto cls = p.argmax(1);
  const float* pp = p.data_ptr<float>();
  for (std::int64_t i = 0; i < p.size(0); ++i) {
    csv << first + i << ',' << cls[i].item<std::int64_t>();
    for (std::int64_t c = 0; c < classes; ++c) csv << ',' << fmt::format("{:.9g}", pp[i * classes + c]);
    csv << '\n';
  }
}

}  // namespace

std::string SplitClient::predict(const std::string& input, const std::string& output, const std::atomic<bool>& stop) {
  auto log = log::get("client");
  dispatch_.set_stop(&stop);
  const auto step = load_trained();
  const auto& d = options_.train.data;
  const auto x = as_model_input(data::load_inputs(input, d.label_column, d.normalization).x, spec_.input_shape, input);
  const std::int64_t n = x.size(0);
  report::Json summary;
  summary.add("client", options_.name);
  wire::Join j;
  j.client_name = options_.name;
  j.model = options_.train.model;
  j.cut_shape = cut_shape_;
  j.u_shaped = options_.train.u_shaped;
  j.cut = cut_coding_;
  j.inference = true;
  set_fingerprints(j);
  torch::NoGradGuard no_grad;
  model_.front->eval();
  if (model_.has_head()) model_.head->eval();
  std::int64_t width = model_.has_head() ? head_input_shape()[0] : -1;
  std::ostringstream csv;
  train::Progress progress(options_.name, n);
  std::int64_t done = 0;
  try {
    link_.join(j);
    for (; done < n && !stop; done += kPredictBatch) {
      const auto m = std::min<std::int64_t>(kPredictBatch, n - done);
      write_rows(csv, done, predict_batch(x.narrow(0, done, m), width));
      log->info("{}: predicted {}/{}  {}", options_.name, done + m, n, progress.rate_eta(done + m));
    }
  } catch (const Interrupted&) {
  }
  if (stop || done < n) {
    link_.leave("interrupted");
    log->info("{}: interrupted after {} of {} predictions; nothing written", options_.name, std::min(done, n), n);
    return summary.add("interrupted", true).str();
  }
  link_.leave("predictions done");
  const auto text = csv.str();
  io::write_file_atomically(output, text.data(), text.size(), 0600, /*replace=*/true);
  log->info("{}: {} predictions written to {}", options_.name, n, output);
  return summary.add("predictions", n)
      .add("output", output)
      .add("model_step", step)
      .add("seconds", progress.seconds(), 3)
      .add("examples_per_s", static_cast<double>(n) / std::max(progress.seconds(), 1e-9), 1)
      .str();
}

}  // namespace cutlayer::client
