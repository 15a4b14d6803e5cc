// cutlayer-leakage: what an honest-but-curious server could learn from a trained client's
// cut-layer activations. Given the client's config and its saved front model
// (cutlayer-client --save-front / cutlayer-train --save-front):
//  a. dCor(X, Z) on a fixed held-out evaluation set: biased (NoPeek's), bias-corrected
//     dCor^2, and the permutation floor (what independent activations would score);
//  b. a reconstruction attack: a transposed-convolution decoder z -> x trained on an
//     auxiliary set the attacker is assumed to hold (part of the test split), scored on
//     the unseen evaluation set by MSE, PSNR and SSIM in pixel space [0, 1], beside the
//     baseline of always guessing the auxiliary mean image;
//  c. with --label-steps N: label leakage in U-shaped mode. The config's model is trained
//     U-shaped for N steps (the same math as the split run: the server's output h goes to
//     the client's head, dL/dh comes back) while recording the dL/dh rows the server
//     receives; then the norm and cosine attacks of Li et al. 2021 score each example
//     one-vs-rest per class -> ROC AUC (0.5: nothing learnt);
//  A vertical party's config (its "vertical" object, saved with cutlayer-client
//  --save-front): its front and its strip of each image, so each party's cut is measured.
//  d. outputs: report.json, report.md, and x/z/y/recon .npy files (NumPy format) so that
//     outside tools can check every number; scripts/plot-leakage.py draws the image grid.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <sys/stat.h>
#include <torch/torch.h>

#include "cutlayer/cut/codec.h"
#include "cutlayer/cut/flags.h"
#include "cutlayer/process_tuning.h"

#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>

#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/privacy/adversary.h"
#include "cutlayer/privacy/dcor.h"
#include "cutlayer/privacy/label_attacks.h"
#include "cutlayer/privacy/label_defense.h"
#include "cutlayer/privacy/nopeek.h"
#include "cutlayer/privacy/metrics.h"
#include "cutlayer/report/json.h"
#include "cutlayer/train/loop.h"
#include "client_train_config.h"
#include "cutlayer/train/optimizer.h"
#include "cutlayer/vertical/parties.h"

using namespace cutlayer;

namespace {

// NumPy .npy (format 1.0), little-endian float32 or int64, C order.
void write_npy(const std::string& path, const torch::Tensor& t_in) {
  const auto t = t_in.contiguous();
  std::string descr = t.scalar_type() == torch::kInt64 ? "<i8" : "<f4";
  const auto data = t.scalar_type() == torch::kInt64 ? t : t.to(torch::kFloat32);
  std::string shape = "(";
  for (auto d : t.sizes()) shape += std::to_string(d) + ", ";
  if (t.dim() > 1) shape.resize(shape.size() - 1);
  shape += ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  if (!out) throw IoError("cannot write '" + path + "'");
  out.write("\x93NUMPY\x01\x00", 8);
  const std::uint16_t len = static_cast<std::uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&len), 2);
  out << header;
  out.write(static_cast<const char*>(data.data_ptr()), static_cast<std::streamsize>(data.nbytes()));
}

// A vertical party's config: the front is its front of the vertical model (as the party
// builds it), the input its strip of every sample. Returns the strip of `x`.
torch::Tensor vertical_party(const tools::ClientTrainConfig& cfg, const torch::Tensor& x, model::SplitModel& m,
                             model::SplitSpec& spec) {
  const auto& v = cfg.vertical;
  auto vm = vertical::build_vertical(x.sizes().slice(1).vec(), v.parties, /*classes=*/10, cfg.train.seed,
                                     vertical::join_mode(v.join, "vertical.join"));
  m.front = vm.fronts.at(static_cast<std::size_t>(v.party));
  auto strip = vertical::strip(x, v.parties, v.party).contiguous();
  spec.input_shape = strip.sizes().slice(1).vec();
  return strip;
}

struct LabelLeakage {
  std::int64_t steps = 0, examples = 0;
  double test_acc = -1;
  std::vector<privacy::AttackAuc> attacks;
};

// Trains the U-shaped form of `opts`' model for `steps` steps (the same math as the split
// run: the server's output h goes to the client's head; dL/dh, or what the label defence
// makes of it, comes back; NoPeek and the decoder adversary act on the front as configured),
// records the gradients the server receives (one row per example) over the last `record`
// steps and attacks them (privacy/label_attacks.h). The trained front is left in `m`.
LabelLeakage label_leakage(train::TrainOptions opts, const data::Split& data, const privacy::PrivacyOptions& p,
                           std::int64_t steps, std::int64_t record, std::uint64_t seed, model::SplitModel& m,
                           const std::string& out_dir) {
  opts.u_shaped = true;
  opts.lr_total_steps = steps;  // a cosine schedule spans this run
  const auto spec = train::split_spec(opts);
  m = model::build_split(spec, opts.seed);
  model::require_back(m, "cutlayer-leakage");
  std::vector<torch::Tensor> params = m.front->parameters();
  for (auto& q : m.back->parameters()) params.push_back(q);
  for (auto& q : m.head->parameters()) params.push_back(q);
  auto opt = train::make_optimizer(params, opts);
  std::optional<privacy::DecoderAdversary> adversary;
  if (p.adversary.active()) adversary.emplace(p.adversary, opts.seed);
  train::Batches batches(data.train, opts.batch_size, 1000, steps, opts.seed);
  train::Batch b;
  std::vector<torch::Tensor> grads, labels;
  while (batches.next(b)) {
    train::set_lr(*opt, train::lr_at(opts, b.step));
    opt->zero_grad();
    auto z = m.front->forward(b.x);
    auto h = m.back->forward(privacy::cut_to_send(z, p));
    auto h_client = h.detach().requires_grad_(true);  // what crosses to the client's head
    auto logits = m.head->forward(h_client);
    auto loss = torch::nn::functional::cross_entropy(logits, b.y);
    const auto g = privacy::head_backward(h_client, logits, loss, p.label_defense);  // what the server receives
    const auto local = privacy::client_terms(p, b.step, b.x, z, adversary ? &*adversary : nullptr);
    if (local.defined()) torch::autograd::backward({h, local}, {g, torch::Tensor()});
    else h.backward(g);
    opt->step();
    if (b.step >= steps - record) {
      grads.push_back(g.detach().clone());
      labels.push_back(b.y.clone());
    }
  }
  LabelLeakage r;
  r.steps = steps;
  const auto g = torch::cat(grads);
  const auto y = torch::cat(labels);
  r.examples = g.size(0);
  {
    torch::NoGradGuard no_grad;
    m.front->eval();
    m.back->eval();
    m.head->eval();
    double correct = 0;
    for (std::int64_t i = 0; i < data.test.size(); i += 1000) {
      const auto n = std::min<std::int64_t>(1000, data.test.size() - i);
      const auto logits = m.head->forward(m.back->forward(privacy::cut_to_send(m.front->forward(data.test.x.narrow(0, i, n)), p)));
      correct += train::count_correct(logits, data.test.y.narrow(0, i, n));
    }
    if (data.test.size() > 0) r.test_acc = correct / data.test.size();
  }
  ::mkdir(out_dir.c_str(), 0755);
  write_npy(out_dir + "/server_grads.npy", g.to(torch::kFloat32));
  write_npy(out_dir + "/server_grads_y.npy", y);
  r.attacks = privacy::attack_labels(g, y, seed);
  return r;
}

// The label section of the report: JSON and Markdown.
std::pair<report::Json, std::string> label_report(const LabelLeakage& L, const privacy::LabelDefenseOptions& d) {
  report::Json j;
  j.add("steps", L.steps).add("examples", L.examples).add("test_acc", L.test_acc, 4);
  j.add("defense", d.kind);
  if (d.active()) j.add("sigma", d.sigma).add("clip", d.clip);
  std::string rows;
  for (const auto& a : L.attacks) {
    j.add(a.attack + "_auc_mean", a.mean, 6).add(a.attack + "_auc_max", a.max, 6).add(a.attack + "_auc_min", a.min, 6);
    rows += fmt::format("| {} | {:.4f} | {:.4f} | {:.4f} |\n", a.attack, a.mean, a.max, a.min);
  }
  auto md = fmt::format(
      "## Label leakage in U-shaped mode\n\n"
      "The server never receives labels, but it receives dL/dh, the gradient of the client's loss with respect to "
      "the server's output. Over the last {} examples of a {}-step U-shaped run (label defence: {}{}; test accuracy "
      "{:.4f}), one-vs-rest per class (AUC 0.5: nothing learnt, 1: labels read off). Attacks: norm = ‖g‖; cosine = "
      "cos(g, g of one known example of the class); lda = a linear discriminant on the top principal components, "
      "fitted on the first half with their labels, scored on the other half; cluster = k-means on the same "
      "projection, the best-matching cluster per class.\n\n"
      "| attack | AUC mean over classes | max | min |\n|---|---|---|---|\n{}\n"
      "Files: `server_grads.npy` (the recorded gradients), `server_grads_y.npy` (their labels).\n\n",
      L.examples, L.steps, d.kind, d.active() ? fmt::format(", sigma {}, clip {}", d.sigma, d.clip) : "", L.test_acc,
      rows);
  return {j, md};
}

struct Flags {
  std::string config_path, front_path, out_dir = "run/leakage";
  std::int64_t eval_n = 2000, aux_n = 5000, label_steps = 0, label_record = 50;
  int epochs = 8, threads = 2;
  std::uint64_t seed = 7;
  double noise = -1;
  cut::CutFlags cut;
};

void add_flags(CLI::App& app, Flags& f) {
  app.add_option("-c,--config", f.config_path, "the client's config (model, data, normalization, privacy)")->required();
  app.add_option("--front", f.front_path,
                 "the saved front model (cutlayer-client --save-front); with --label-steps and no --front, the "
                 "front that run trains is measured");
  app.add_option("-o,--out", f.out_dir, "output directory");
  app.add_option("--eval", f.eval_n, "held-out evaluation examples (test split, first N)");
  app.add_option("--aux", f.aux_n, "attacker's auxiliary examples (the test split after the evaluation set)");
  app.add_option("--epochs", f.epochs, "decoder training epochs");
  app.add_option("--threads", f.threads, "LibTorch threads");
  app.add_option("--seed", f.seed, "seed for the decoder, the permutation floor and the clustering attack");
  app.add_option("--noise", f.noise, "std of the Gaussian noise the client adds to what it sends (overrides privacy.noise_std)")
      ->check(CLI::Range(0.0, 1e3));
  f.cut.add(app);
  app.add_option("--label-steps", f.label_steps,
                 "also measure label leakage: train the U-shaped form for this many steps (privacy.label_defense "
                 "applied), recording what the server receives")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 40));
  app.add_option("--label-record", f.label_record, "label leakage: steps at the end whose gradients are attacked")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 40));
}

void load_front(model::SplitModel& m, const std::string& path, const std::string& model) {
  try {
    torch::load(m.front, path);
  } catch (const c10::Error& e) {
    throw IoError("cannot load the front model '" + path + "' (saved by cutlayer-client --save-front for " + model +
                  "?): " + e.what_without_backtrace());
  }
}

struct CutLeakage {
  double dcor = 0, dcor2_u = 0, floor = 0;
  double r_mse = 0, r_psnr = 0, r_ssim = -1, b_mse = 0, b_psnr = 0, b_ssim = -1;
  torch::Tensor x_pix, z_eval, rec_pix;
};

// a. dCor on the evaluation set and b. the decoder attack trained on the auxiliary set, on
// what the server observes: the activations as sent, noise included, as the cut's coding
// delivers them.
CutLeakage measure_cut(const Flags& f, const tools::ClientTrainConfig& cfg, const privacy::PrivacyOptions& p,
                       torch::nn::Sequential& front, const std::vector<std::int64_t>& input_shape,
                       const torch::Tensor& test_x) {
  auto log = log::get("leakage");
  torch::NoGradGuard no_grad;
  front->eval();
  const auto x_eval = test_x.narrow(0, 0, f.eval_n);
  const auto x_aux = test_x.narrow(0, f.eval_n, f.aux_n);
  torch::manual_seed(f.seed + 1);
  const auto as_sent = [&](const torch::Tensor& z) {
    const auto noisy = privacy::cut_to_send(z, p);
    const auto& c = cfg.cut;
    if (!c.compressed()) return noisy;
    return cut::encode_activations(noisy, cut::coding_for(c, z.numel() / z.size(0)), c.random).as_received;
  };
  CutLeakage r;
  r.z_eval = as_sent(front->forward(x_eval));
  const auto z_aux = as_sent(front->forward(x_aux));
  r.dcor = privacy::dcor(x_eval, r.z_eval).item<double>();
  r.dcor2_u = privacy::dcor2_unbiased(x_eval, r.z_eval).item<double>();
  r.floor = privacy::permutation_floor(x_eval, r.z_eval, f.seed).item<double>();
  log->info("dCor(X, Z) on {} held-out examples: {:.4f} (permutation floor {:.4f}); bias-corrected dCor^2 {:.4f}",
            f.eval_n, r.dcor, r.floor, r.dcor2_u);
  torch::manual_seed(f.seed);
  auto dec = privacy::make_decoder(r.z_eval.sizes().slice(1).vec(), input_shape);
  torch::optim::Adam adam(dec->parameters(), torch::optim::AdamOptions(1e-3));
  const std::int64_t batch = 64;
  for (int e = 0; e < f.epochs; ++e) {
    torch::AutoGradMode grad(true);
    const auto perm = torch::randperm(f.aux_n, torch::kInt64);
    double total = 0;
    for (std::int64_t b = 0; b < f.aux_n; b += batch) {
      const auto idx = perm.narrow(0, b, std::min(batch, f.aux_n - b));
      auto loss = torch::mse_loss(dec->forward(z_aux.index_select(0, idx)), x_aux.index_select(0, idx));
      adam.zero_grad();
      loss.backward();
      adam.step();
      total += loss.item<double>() * idx.size(0);
    }
    log->info("decoder epoch {}/{}: train MSE (normalized) {:.4f}", e + 1, f.epochs, total / f.aux_n);
  }
  dec->eval();
  const auto& nrm = cfg.train.data.normalization;
  auto to_pixels = [&](const torch::Tensor& t) { return ((t * nrm.std + nrm.mean) / (nrm.scale * 255.0)).clamp(0, 1); };
  r.x_pix = to_pixels(x_eval);
  r.rec_pix = to_pixels(dec->forward(r.z_eval));
  const auto mean_pix = to_pixels(x_aux.mean(0, true)).expand_as(r.x_pix).contiguous();
  const bool images = r.x_pix.dim() == 4 && r.x_pix.size(2) >= 11 && r.x_pix.size(3) >= 11;
  r.r_mse = privacy::mse(r.rec_pix, r.x_pix);
  r.r_psnr = privacy::psnr(r.rec_pix, r.x_pix, 1.0);
  r.r_ssim = images ? privacy::ssim(r.rec_pix, r.x_pix, 1.0) : -1;
  r.b_mse = privacy::mse(mean_pix, r.x_pix);
  r.b_psnr = privacy::psnr(mean_pix, r.x_pix, 1.0);
  r.b_ssim = images ? privacy::ssim(mean_pix, r.x_pix, 1.0) : -1;
  log->info("reconstruction on {} unseen examples: MSE {:.4f}, PSNR {:.2f} dB, SSIM {:.4f} (mean-image baseline: "
            "MSE {:.4f}, PSNR {:.2f} dB, SSIM {:.4f})", f.eval_n, r.r_mse, r.r_psnr, r.r_ssim, r.b_mse, r.b_psnr, r.b_ssim);
  return r;
}

void write_reports(const Flags& f, const tools::ClientTrainConfig& cfg, const privacy::PrivacyOptions& p,
                   const CutLeakage& c, const torch::Tensor& y_eval, const std::optional<LabelLeakage>& L) {
  ::mkdir(f.out_dir.c_str(), 0755);
  write_npy(f.out_dir + "/x.npy", c.x_pix);
  write_npy(f.out_dir + "/z.npy", c.z_eval);
  write_npy(f.out_dir + "/y.npy", y_eval);
  write_npy(f.out_dir + "/recon.npy", c.rec_pix);
  report::Json decoder, baseline, summary;
  decoder.add("aux", f.aux_n).add("epochs", f.epochs).add("mse", c.r_mse, 6).add("psnr", c.r_psnr, 4).add("ssim", c.r_ssim, 6);
  baseline.add("mse", c.b_mse, 6).add("psnr", c.b_psnr, 4).add("ssim", c.b_ssim, 6);
  const auto& v = cfg.vertical;
  const auto& model = cfg.train.model;
  summary.add("model", v.parties > 0 ? fmt::format("vertical party {} of {}", v.party, v.parties) : model)
      .add("front", f.front_path.empty() ? "trained by --label-steps" : f.front_path)
      .add("noise_std", p.noise_std)
      .add("cut_norm", p.cut_norm)
      .add("adversary_weight", p.adversary.weight)
      .add("cut", cut::identity(cfg.cut))
      .add("n", f.eval_n)
      .add("dcor", c.dcor, 6)
      .add("dcor2_u", c.dcor2_u, 6)
      .add("perm_floor", c.floor, 6)
      .add("decoder", decoder)
      .add("mean_image_baseline", baseline);
  std::string label_md;
  if (L) {
    auto [j, md] = label_report(*L, p.label_defense);
    summary.add("label_leakage", j);
    label_md = md;
  }
  const auto json = summary.str();
  std::ofstream(f.out_dir + "/report.json") << json << "\n";
  std::ofstream md(f.out_dir + "/report.md");
  md << "# Leakage report: " << model << "\n\n"
     << "Front model `" << (f.front_path.empty() ? "trained by --label-steps" : f.front_path)
     << "`; evaluation set: the first " << f.eval_n << " test examples; attacker's auxiliary set: the next " << f.aux_n
     << ".\n\n"
     << "## Distance correlation between inputs and cut-layer activations\n\n"
     << "| measure | value |\n|---|---|\n"
     << fmt::format("| dCor (biased, NoPeek's) | {:.4f} |\n| permutation floor (independent activations, same n) | {:.4f} |\n"
                    "| bias-corrected dCor² (≈ 0 when independent) | {:.4f} |\n\n", c.dcor, c.floor, c.dcor2_u)
     << "The biased dCor never reaches 0 at finite n: compare it with the floor, not with 0.\n\n"
     << "## Reconstruction attack (decoder z → x, trained on the auxiliary set)\n\n"
     << "| | MSE | PSNR (dB) | SSIM |\n|---|---|---|---|\n"
     << fmt::format("| decoder | {:.4f} | {:.2f} | {:.4f} |\n| mean image (no information) | {:.4f} | {:.2f} | {:.4f} |\n\n",
                    c.r_mse, c.r_psnr, c.r_ssim, c.b_mse, c.b_psnr, c.b_ssim)
     << "Pixels in [0, 1]; SSIM with an 11×11 Gaussian window. Image grid: `scripts/plot-leakage.py " << f.out_dir
     << "` writes `" << f.out_dir << "/reconstructions.png`.\n\n"
     << "Files: `x.npy` (inputs, pixels), `z.npy` (activations), `y.npy` (labels), `recon.npy` (reconstructions).\n\n"
     << label_md;
  std::cout << json << std::endl;
}

int run(const Flags& f) {
  auto cfg = tools::load_client_train_config(f.config_path);
  f.cut.apply(cfg.cut);
  auto opts = cfg.train;
  opts.eval_samples = std::max(opts.eval_samples, f.eval_n + f.aux_n);
  torch::set_num_threads(f.threads);
  auto log = log::get("leakage");
  if (f.front_path.empty() && f.label_steps == 0)
    throw ConfigError("--front: which front to measure? (or --label-steps N: measure the front that run trains)");
  const auto data = data::load_split(opts.data, opts.eval_samples, opts.seed);
  if (data.test.size() < f.eval_n + f.aux_n)
    throw ConfigError("the test split has " + std::to_string(data.test.size()) + " examples; --eval + --aux need " +
                      std::to_string(f.eval_n + f.aux_n));
  auto p = cfg.nopeek;
  if (f.noise >= 0) p.noise_std = f.noise;
  auto spec = train::split_spec(opts);
  auto m = model::build_split(spec, opts.seed);
  auto test_x = data.test.x;
  std::optional<LabelLeakage> L;
  if (cfg.vertical.parties > 0) {  // a vertical party: its front, its strip
    if (f.label_steps > 0) throw ConfigError("--label-steps measures U-shaped training; a vertical party is vanilla");
    test_x = vertical_party(cfg, test_x, m, spec);
  }
  if (f.label_steps > 0) {  // c. label leakage from the gradients the server sees in U-shaped mode
    L = label_leakage(opts, data, p, f.label_steps, std::min(f.label_record, f.label_steps), f.seed, m, f.out_dir);
    for (const auto& a : L->attacks)
      log->info("label leakage ({} gradients the server saw after {} steps; test accuracy {:.4f}): {} attack AUC "
                "{:.4f} (max over classes {:.4f})", L->examples, L->steps, L->test_acc, a.attack, a.mean, a.max);
  }
  if (!f.front_path.empty()) load_front(m, f.front_path, opts.model);
  const auto c = measure_cut(f, cfg, p, m.front, spec.input_shape, test_x);
  write_reports(f, cfg, p, c, data.test.y.narrow(0, 0, f.eval_n), L);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  cutlayer::tune_threads();
  CLI::App app{"cutlayer-leakage: dCor, a reconstruction attack and (U-shaped) label attacks on a client's cut"};
  Flags f;
  add_flags(app, f);
  CLI11_PARSE(app, argc, argv);
  try {
    return run(f);
  } catch (const Error& e) {
    std::cerr << "cutlayer-leakage: " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "cutlayer-leakage: " << e.what_without_backtrace() << "\n";
    return 2;
  }
}
