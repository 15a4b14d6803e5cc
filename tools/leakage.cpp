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

#include "cutlayer/error.h"
#include "cutlayer/log.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/privacy/dcor.h"
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

// z (C x H x W) -> x (Cin x Hin x Win): one stride-2 transposed convolution doubling H, W,
// then one that lands on the input size; a linear decoder when the shapes do not allow it.
torch::nn::Sequential make_decoder(const std::vector<std::int64_t>& cut, const std::vector<std::int64_t>& in) {
  torch::nn::Sequential d;
  if (cut.size() == 3 && in.size() == 3 && in[1] - 2 * cut[1] + 1 >= 1 && in[2] - 2 * cut[2] + 1 >= 1 &&
      in[1] - 2 * cut[1] == in[2] - 2 * cut[2]) {
    d->push_back(torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(cut[0], 32, 4).stride(2).padding(1)));
    d->push_back(torch::nn::ReLU());
    d->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 32, 3).padding(1)));
    d->push_back(torch::nn::ReLU());
    d->push_back(torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(32, in[0], in[1] - 2 * cut[1] + 1)));
    return d;
  }
  std::int64_t zn = 1, xn = 1;
  for (auto v : cut) zn *= v;
  for (auto v : in) xn *= v;
  d->push_back(torch::nn::Flatten());
  d->push_back(torch::nn::Linear(zn, 512));
  d->push_back(torch::nn::ReLU());
  d->push_back(torch::nn::Linear(512, xn));
  d->push_back(torch::nn::Unflatten(torch::nn::UnflattenOptions(1, in)));
  return d;
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
  double norm_auc_mean = 0, norm_auc_max = 0, cosine_auc_mean = 0, cosine_auc_min = 1;
};

// Trains the U-shaped form of `opts`' model for `steps` steps and records the gradients
// the server sees (dL/dh, one row per example) over the last `record` steps. Attacks:
//  norm:   score = ||g_i|| (Li et al.'s norm attack), AUC per class one-vs-rest;
//  cosine: the server knows one example of class c (the first recorded) and scores
//          cos(g_i, g_ref) for the others, AUC per class one-vs-rest.
LabelLeakage label_leakage(train::TrainOptions opts, const data::Dataset& train_set, double alpha,
                           std::int64_t steps, std::int64_t record, const std::string& out_dir) {
  opts.u_shaped = true;
  const auto spec = train::split_spec(opts);
  auto m = model::build_split(spec, opts.seed);
  model::require_back(m, "cutlayer-leakage");
  std::vector<torch::Tensor> params = m.front->parameters();
  for (auto& p : m.back->parameters()) params.push_back(p);
  for (auto& p : m.head->parameters()) params.push_back(p);
  auto opt = train::make_optimizer(params, opts);
  train::Batches batches(train_set, opts.batch_size, 1000, steps, opts.seed);
  train::Batch b;
  std::vector<torch::Tensor> grads, labels;
  while (batches.next(b)) {
    train::set_lr(*opt, train::lr_at(opts, b.step));
    opt->zero_grad();
    auto z = m.front->forward(b.x);
    auto h = m.back->forward(z);
    auto h_client = h.detach().requires_grad_(true);  // what crosses to the client's head
    auto loss = torch::nn::functional::cross_entropy(m.head->forward(h_client), b.y);
    loss.backward();
    const auto g = h_client.grad();  // dL/dh: what the server receives
    if (alpha > 0) torch::autograd::backward({h, alpha * privacy::dcor(b.x, z)}, {g, torch::Tensor()});
    else h.backward(g);
    opt->step();
    if (b.step >= steps - record) {
      grads.push_back(g.detach().clone());
      labels.push_back(b.y.clone());
    }
  }
  LabelLeakage r;
  r.steps = steps;
  const auto g = torch::cat(grads).to(torch::kFloat64);
  const auto y = torch::cat(labels);
  r.examples = g.size(0);
  const auto norms = g.norm(2, 1);
  const auto unit = g / norms.clamp_min(1e-30).unsqueeze(1);
  int classes = 0;
  for (std::int64_t c = 0; c <= y.max().item<std::int64_t>(); ++c) {
    const auto pos = (y == c).to(torch::kInt64);
    const auto npos = pos.sum().item<std::int64_t>();
    if (npos < 2 || npos == r.examples) continue;
    const double a_norm = privacy::roc_auc(norms, pos);
    const auto ref = torch::nonzero(pos).flatten()[0].item<std::int64_t>();
    auto rest = torch::ones({r.examples}, torch::kBool);
    rest[ref] = false;
    const auto cos = unit.matmul(unit[ref]);
    const double a_cos = privacy::roc_auc(cos.masked_select(rest), pos.masked_select(rest));
    r.norm_auc_mean += a_norm;
    r.norm_auc_max = std::max(r.norm_auc_max, a_norm);
    r.cosine_auc_mean += a_cos;
    r.cosine_auc_min = std::min(r.cosine_auc_min, a_cos);
    ++classes;
  }
  if (classes == 0) throw Error("label leakage: fewer than 2 examples of every class were recorded");
  r.norm_auc_mean /= classes;
  r.cosine_auc_mean /= classes;
  ::mkdir(out_dir.c_str(), 0755);
  write_npy(out_dir + "/server_grads.npy", g.to(torch::kFloat32));
  write_npy(out_dir + "/server_grads_y.npy", y);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  cutlayer::tune_threads();
  CLI::App app{"cutlayer-leakage: dCor and a reconstruction attack on a trained client's cut layer"};
  std::string config_path, front_path, out_dir = "run/leakage";
  std::int64_t eval_n = 2000, aux_n = 5000;
  int epochs = 8, threads = 2;
  std::uint64_t seed = 7;
  app.add_option("-c,--config", config_path, "the client's config (model, data, normalization)")->required();
  app.add_option("--front", front_path, "the saved front model (cutlayer-client --save-front)")->required();
  app.add_option("-o,--out", out_dir, "output directory");
  app.add_option("--eval", eval_n, "held-out evaluation examples (test split, first N)");
  app.add_option("--aux", aux_n, "attacker's auxiliary examples (the test split after the evaluation set)");
  app.add_option("--epochs", epochs, "decoder training epochs");
  app.add_option("--threads", threads, "LibTorch threads");
  app.add_option("--seed", seed, "seed for the decoder and the permutation floor");
  double noise = -1;
  app.add_option("--noise", noise, "std of the Gaussian noise the client adds to what it sends (overrides privacy.noise_std)")
      ->check(CLI::Range(0.0, 1e3));
  cut::CutFlags cut_flags;
  cut_flags.add(app);
  std::int64_t label_steps = 0, label_record = 50;
  app.add_option("--label-steps", label_steps,
                 "also measure label leakage: train the U-shaped form for this many steps, recording dL/dh")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 40));
  app.add_option("--label-record", label_record, "label leakage: steps at the end whose gradients are attacked")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 40));
  CLI11_PARSE(app, argc, argv);
  try {
    auto client_cfg = tools::load_client_train_config(config_path);
    cut_flags.apply(client_cfg.cut);
    auto opts = client_cfg.train;
    opts.eval_samples = eval_n + aux_n;
    torch::set_num_threads(threads);
    auto log = log::get("leakage");
    const auto data = data::load_split(opts.data, opts.eval_samples, opts.seed);
    if (data.test.size() < eval_n + aux_n)
      throw ConfigError("the test split has " + std::to_string(data.test.size()) + " examples; --eval + --aux need " +
                        std::to_string(eval_n + aux_n));
    auto spec = train::split_spec(opts);
    auto m = model::build_split(spec, opts.seed);
    auto test_x = data.test.x;
    if (client_cfg.vertical.parties > 0) {  // a vertical party: its front, its strip
      if (label_steps > 0) throw ConfigError("--label-steps measures U-shaped training; a vertical party is vanilla");
      test_x = vertical_party(client_cfg, test_x, m, spec);
    }
    try {
      torch::load(m.front, front_path);
    } catch (const c10::Error& e) {
      throw IoError("cannot load the front model '" + front_path + "' (saved by cutlayer-client --save-front for " +
                    opts.model + "?): " + e.what_without_backtrace());
    }
    m.front->eval();
    torch::NoGradGuard no_grad;
    const auto x_eval = test_x.narrow(0, 0, eval_n);
    const auto y_eval = data.test.y.narrow(0, 0, eval_n);
    const auto x_aux = test_x.narrow(0, eval_n, aux_n);
    // What the server observes: the activations as sent, noise included, as the cut's
    // coding delivers them.
    auto nopeek = client_cfg.nopeek;
    if (noise >= 0) nopeek.noise_std = noise;
    torch::manual_seed(seed + 1);
    const auto as_sent = [&](const torch::Tensor& z) {
      const auto noisy = privacy::cut_to_send(z, nopeek);
      const auto& c = client_cfg.cut;
      if (!c.compressed()) return noisy;
      return cut::encode_activations(noisy, cut::coding_for(c, z.numel() / z.size(0)), c.random).as_received;
    };
    const auto z_eval = as_sent(m.front->forward(x_eval));
    const auto z_aux = as_sent(m.front->forward(x_aux));

    // a. distance correlation on the evaluation set
    const double dc = privacy::dcor(x_eval, z_eval).item<double>();
    const double dc2u = privacy::dcor2_unbiased(x_eval, z_eval).item<double>();
    const double floor = privacy::permutation_floor(x_eval, z_eval, seed).item<double>();
    log->info("dCor(X, Z) on {} held-out examples: {:.4f} (permutation floor {:.4f}); bias-corrected dCor^2 {:.4f}",
              eval_n, dc, floor, dc2u);

    // b. the decoder attack
    torch::manual_seed(seed);
    const auto cut = model::output_shape(m.front, spec.input_shape);
    auto dec = make_decoder(cut, spec.input_shape);
    torch::optim::Adam adam(dec->parameters(), torch::optim::AdamOptions(1e-3));
    const std::int64_t batch = 64;
    for (int e = 0; e < epochs; ++e) {
      torch::AutoGradMode grad(true);
      const auto perm = torch::randperm(aux_n, torch::kInt64);
      double total = 0;
      for (std::int64_t b = 0; b < aux_n; b += batch) {
        const auto idx = perm.narrow(0, b, std::min(batch, aux_n - b));
        auto loss = torch::mse_loss(dec->forward(z_aux.index_select(0, idx)), x_aux.index_select(0, idx));
        adam.zero_grad();
        loss.backward();
        adam.step();
        total += loss.item<double>() * idx.size(0);
      }
      log->info("decoder epoch {}/{}: train MSE (normalized) {:.4f}", e + 1, epochs, total / aux_n);
    }
    dec->eval();
    const auto& nrm = opts.data.normalization;
    auto to_pixels = [&](const torch::Tensor& t) {
      return ((t * nrm.std + nrm.mean) / (nrm.scale * 255.0)).clamp(0, 1);
    };
    const auto x_pix = to_pixels(x_eval);
    const auto rec_pix = to_pixels(dec->forward(z_eval));
    const auto mean_pix = to_pixels(x_aux.mean(0, true)).expand_as(x_pix).contiguous();
    const bool images = x_pix.dim() == 4 && x_pix.size(2) >= 11 && x_pix.size(3) >= 11;
    const double r_mse = privacy::mse(rec_pix, x_pix), r_psnr = privacy::psnr(rec_pix, x_pix, 1.0);
    const double r_ssim = images ? privacy::ssim(rec_pix, x_pix, 1.0) : -1;
    const double b_mse = privacy::mse(mean_pix, x_pix), b_psnr = privacy::psnr(mean_pix, x_pix, 1.0);
    const double b_ssim = images ? privacy::ssim(mean_pix, x_pix, 1.0) : -1;
    log->info("reconstruction on {} unseen examples: MSE {:.4f}, PSNR {:.2f} dB, SSIM {:.4f} (mean-image baseline: "
              "MSE {:.4f}, PSNR {:.2f} dB, SSIM {:.4f})", eval_n, r_mse, r_psnr, r_ssim, b_mse, b_psnr, b_ssim);

    // c. label leakage from the gradients the server sees in U-shaped mode
    report::Json label_json;
    std::string label_md;
    if (label_steps > 0) {
      torch::AutoGradMode grad(true);
      auto lopts = client_cfg.train;
      const auto L = label_leakage(lopts, data.train, client_cfg.nopeek.alpha, label_steps, std::min(label_record, label_steps),
                                   out_dir);
      log->info("label leakage (U-shaped, {} gradients the server saw after {} steps): norm attack AUC {:.4f} "
                "(max over classes {:.4f}); cosine attack AUC {:.4f} (min over classes {:.4f})",
                L.examples, L.steps, L.norm_auc_mean, L.norm_auc_max, L.cosine_auc_mean, L.cosine_auc_min);
      label_json.add("steps", L.steps)
          .add("examples", L.examples)
          .add("norm_auc_mean", L.norm_auc_mean, 6)
          .add("norm_auc_max", L.norm_auc_max, 6)
          .add("cosine_auc_mean", L.cosine_auc_mean, 6)
          .add("cosine_auc_min", L.cosine_auc_min, 6);
      label_md = fmt::format(
          "## Label leakage in U-shaped mode (Li et al. 2021)\n\n"
          "The server never receives labels, but it receives dL/dh, the gradient of the client's loss with "
          "respect to the server's output. Over the last {} examples of a {}-step U-shaped run, one-vs-rest per "
          "class (AUC 0.5: nothing learnt, 1: labels read off):\n\n"
          "| attack | AUC (mean over classes) | |\n|---|---|---|\n"
          "| norm: score = ‖g‖ | {:.4f} | max {:.4f} |\n"
          "| cosine: score = cos(g, g of one known example of the class) | {:.4f} | min {:.4f} |\n\n"
          "Files: `server_grads.npy` (the recorded dL/dh), `server_grads_y.npy` (their labels).\n\n",
          L.examples, L.steps, L.norm_auc_mean, L.norm_auc_max, L.cosine_auc_mean, L.cosine_auc_min);
    }

    // d. outputs
    ::mkdir(out_dir.c_str(), 0755);
    write_npy(out_dir + "/x.npy", x_pix);
    write_npy(out_dir + "/z.npy", z_eval);
    write_npy(out_dir + "/y.npy", y_eval);
    write_npy(out_dir + "/recon.npy", rec_pix);
    report::Json decoder, baseline, summary;
    decoder.add("aux", aux_n)
        .add("epochs", epochs)
        .add("mse", r_mse, 6)
        .add("psnr", r_psnr, 4)
        .add("ssim", r_ssim, 6);
    baseline.add("mse", b_mse, 6).add("psnr", b_psnr, 4).add("ssim", b_ssim, 6);
    const auto& v = client_cfg.vertical;
    summary.add("model", v.parties > 0 ? fmt::format("vertical party {} of {}", v.party, v.parties) : opts.model)
        .add("front", front_path)
        .add("noise_std", nopeek.noise_std)
        .add("cut", cut::identity(client_cfg.cut))
        .add("n", eval_n)
        .add("dcor", dc, 6)
        .add("dcor2_u", dc2u, 6)
        .add("perm_floor", floor, 6)
        .add("decoder", decoder)
        .add("mean_image_baseline", baseline);
    if (!label_json.empty()) summary.add("label_leakage", label_json);
    const auto json = summary.str();
    std::ofstream(out_dir + "/report.json") << json << "\n";
    std::ofstream md(out_dir + "/report.md");
    md << "# Leakage report: " << opts.model << "\n\n"
       << "Front model `" << front_path << "`; evaluation set: the first " << eval_n
       << " test examples; attacker's auxiliary set: the next " << aux_n << ".\n\n"
       << "## Distance correlation between inputs and cut-layer activations\n\n"
       << "| measure | value |\n|---|---|\n"
       << fmt::format("| dCor (biased, NoPeek's) | {:.4f} |\n| permutation floor (independent activations, same n) | {:.4f} |\n"
                      "| bias-corrected dCor² (≈ 0 when independent) | {:.4f} |\n\n", dc, floor, dc2u)
       << "The biased dCor never reaches 0 at finite n: compare it with the floor, not with 0.\n\n"
       << "## Reconstruction attack (decoder z → x, trained on the auxiliary set)\n\n"
       << "| | MSE | PSNR (dB) | SSIM |\n|---|---|---|---|\n"
       << fmt::format("| decoder | {:.4f} | {:.2f} | {:.4f} |\n| mean image (no information) | {:.4f} | {:.2f} | {:.4f} |\n\n",
                      r_mse, r_psnr, r_ssim, b_mse, b_psnr, b_ssim)
       << "Pixels in [0, 1]; SSIM with an 11×11 Gaussian window. Image grid: `scripts/plot-leakage.py "
       << out_dir << "` writes `" << out_dir << "/reconstructions.png`.\n\n"
       << "Files: `x.npy` (inputs, pixels), `z.npy` (activations), `y.npy` (labels), `recon.npy` (reconstructions).\n\n"
       << label_md;
    std::cout << json << std::endl;
  } catch (const Error& e) {
    std::cerr << "cutlayer-leakage: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
