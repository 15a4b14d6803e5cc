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

namespace cutlayer::client {
namespace {

constexpr std::int64_t kPredictBatch = 500;

// The inputs as the model takes them: a CSV row of H*W values becomes an image.
torch::Tensor as_model_input(torch::Tensor x, const std::vector<std::int64_t>& input_shape, const std::string& path) {
  std::vector<std::int64_t> want{x.size(0)};
  want.insert(want.end(), input_shape.begin(), input_shape.end());
  if (x.sizes().vec() == want) return x;
  if (x.numel() == c10::multiply_integers(want)) return x.reshape(want);
  throw ConfigError("'" + path + "': inputs of " + model::shape_string({x.sizes().begin() + 1, x.sizes().end()}) +
                    " per example; the model takes " + model::shape_string(input_shape));
}

// A reply from the server: one float32 [n x ...] tensor, every value finite.
const torch::Tensor& checked_reply(const wire::Message& m, std::int64_t n) {
  if (m.tensors.size() != 1 || m.tensors[0].dim() < 2 || m.tensors[0].size(0) != n ||
      m.tensors[0].scalar_type() != torch::kFloat32 || !torch::isfinite(m.tensors[0]).all().item<bool>())
    throw ProtocolError("server: the answer to a prediction batch is not " + std::to_string(n) +
                        " rows of finite float32 values");
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

std::string SplitClient::predict(const std::string& input, const std::string& output, const std::atomic<bool>& stop) {
  auto log = log::get("client");
  dispatch_.set_stop(&stop);
  const auto& o = options_.checkpoint;
  if (!o.enabled())
    throw ConfigError("predict needs the trained front: give --checkpoint-dir (or checkpoint.dir), the directory "
                      "this client's training wrote its checkpoints to");
  state::CheckpointStore store(o, state::CheckpointKey::from_key_file(options_.checkpoint_key), identity());
  const auto found = store.load_newest([&](const state::Opened& op) { restore(op.state); });
  if (!found) throw ConfigError("no checkpoint in '" + o.dir + "': train this client first (cutlayer-client with "
                                "--checkpoint-dir " + io::shell_word(o.dir) + ")");
  const auto& d = options_.train.data;
  const auto x = as_model_input(data::load_inputs(input, d.label_column, d.normalization).x, spec_.input_shape, input);
  const std::int64_t n = x.size(0);
  log->info("{}: predicting {} examples of {} with the model of {} (step {})", options_.name, n, input, found->file,
            found->step);
  wire::Join j;
  j.client_name = options_.name;
  j.model = options_.train.model;
  j.cut_shape = cut_shape_;
  j.u_shaped = options_.train.u_shaped;
  j.inference = true;
  link_.join(j);

  torch::NoGradGuard no_grad;
  model_.front->eval();
  if (model_.has_head()) model_.head->eval();
  std::ostringstream csv;
  csv << "index,class";
  std::int64_t classes = -1;
  const auto t0 = std::chrono::steady_clock::now();
  auto last_log = t0;
  std::int64_t done = 0;
  for (; done < n && !stop; done += kPredictBatch) {
    const auto m = std::min<std::int64_t>(kPredictBatch, n - done);
    const auto sent = privacy::cut_to_send(model_.front->forward(x.narrow(0, done, m)), options_.nopeek);
    const auto id = eval_id_++;
    dispatch_.send(wire::make_message(wire::Activations{id, false, false}, {sent}));
    const auto reply = dispatch_.await<wire::ServerActivations>(id).msg;
    auto logits = checked_reply(reply, m);
    if (model_.has_head()) logits = model_.head->forward(logits);
    const auto p = torch::softmax(logits.reshape({m, -1}), 1).contiguous();
    if (classes < 0) {
      classes = p.size(1);
      for (std::int64_t c = 0; c < classes; ++c) csv << ",p" << c;
      csv << "\n";
    }
    const auto cls = p.argmax(1);
    const float* pp = p.data_ptr<float>();
    for (std::int64_t i = 0; i < m; ++i) {
      csv << done + i << ',' << cls[i].item<std::int64_t>();
      for (std::int64_t c = 0; c < classes; ++c) csv << ',' << fmt::format("{:.9g}", pp[i * classes + c]);
      csv << '\n';
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_log > std::chrono::seconds(2) || done + m == n) {
      const double s = std::chrono::duration<double>(now - t0).count();
      const double rate = static_cast<double>(done + m) / std::max(s, 1e-9);
      log->info("{}: predicted {}/{}  {:.0f} examples/s  ETA {:.1f} s", options_.name, done + m, n, rate,
                static_cast<double>(n - done - m) / std::max(rate, 1e-9));
      last_log = now;
    }
  }
  link_.leave(stop ? "interrupted" : "predictions done");
  report::Json summary;
  summary.add("client", options_.name);
  if (stop) {
    log->info("{}: interrupted after {} of {} predictions; nothing written", options_.name, std::min(done, n), n);
    return summary.add("interrupted", true).str();
  }
  const auto text = csv.str();
  io::write_file_atomically(output, text.data(), text.size(), 0600, /*replace=*/true);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log->info("{}: {} predictions written to {}", options_.name, n, output);
  return summary.add("predictions", n)
      .add("output", output)
      .add("model_step", found->step)
      .add("seconds", seconds, 3)
      .add("examples_per_s", static_cast<double>(n) / std::max(seconds, 1e-9), 1)
      .str();
}

}  // namespace cutlayer::client
