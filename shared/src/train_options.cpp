#include "cutlayer/train/train_options.h"

#include <cmath>

#include "cutlayer/config/reader.h"
#include "cutlayer/log.h"
#include "cutlayer/error.h"

namespace cutlayer::train {

TrainOptions read_train_options(config::Object& t) {
  TrainOptions o;
  t.get("model", o.model);
  t.get("u_shaped", o.u_shaped);
  t.get("front", o.front);
  t.get("back", o.back);
  t.get("head", o.head);
  t.get("input_shape", o.input_shape);
  const bool custom = !o.front.empty() || !o.back.empty() || !o.head.empty() || !o.input_shape.empty();
  if (custom) {
    if (o.front.empty() || o.back.empty() || o.input_shape.empty())
      t.fail("front", "a custom model needs front, back and input_shape (and head when u_shaped)");
    for (auto d : o.input_shape)
      if (d < 1) t.fail("input_shape", "dimensions must be positive");
    try {  // parse now, so that a bad layer is reported against this file
      model::build(o.front);
      model::build(o.back);
      if (!o.head.empty()) model::build(o.head);
    } catch (const ConfigError& e) {
      t.fail("front", std::string("/back/head: ") + e.what());
    }
  }
  t.get_choice("dataset", o.dataset, {"fashion-mnist", "idx", "csv"});
  t.get("data_dir", o.data_dir);
  t.get("train_images", o.train_images);
  t.get("train_labels", o.train_labels);
  t.get("test_images", o.test_images);
  t.get("test_labels", o.test_labels);
  t.get("train_csv", o.train_csv);
  t.get("test_csv", o.test_csv);
  t.get("label_column", o.label_column);
  auto n = t.child("normalization");
  n.get("scale", o.normalization.scale, 1e-12, 1e12);
  n.get("mean", o.normalization.mean, -1e12, 1e12);
  n.get("std", o.normalization.std, 1e-12, 1e12);
  n.finish();
  t.get_int("clients", o.clients, 1, 100000);
  t.get_int("client_index", o.client_index, 0, 100000);
  if (o.client_index >= o.clients)
    t.fail("client_index", "must be below clients (" + std::to_string(o.clients) + "), got " +
                               std::to_string(o.client_index));
  t.get_choice("shard", o.shard, {"iid", "dirichlet"});
  t.get("dirichlet_alpha", o.dirichlet_alpha, 1e-6, 1e6);
  t.get_int("batch_size", o.batch_size, 1, 1 << 20);
  t.get_int("epochs", o.epochs, 1, 100000);
  t.get("max_steps", o.max_steps, 0, std::int64_t{1} << 40);
  t.get_choice("optimizer", o.optimizer, {"sgd", "adam"});
  t.get("lr", o.lr, 1e-12, 100.0);
  t.get("momentum", o.momentum, 0.0, 0.9999);
  t.get("weight_decay", o.weight_decay, 0.0, 1.0);
  t.get_choice("lr_schedule", o.lr_schedule, {"constant", "step", "cosine"});
  t.get("lr_step_every", o.lr_step_every, 1, std::int64_t{1} << 40);
  t.get("lr_gamma", o.lr_gamma, 1e-6, 1.0);
  t.get("lr_total_steps", o.lr_total_steps, 1, std::int64_t{1} << 40);
  std::int64_t seed = static_cast<std::int64_t>(o.seed);
  t.get("seed", seed, 0, std::int64_t{1} << 62);
  o.seed = static_cast<std::uint64_t>(seed);
  t.get("eval_every", o.eval_every, 0, std::int64_t{1} << 40);
  t.get("eval_samples", o.eval_samples, 1, std::int64_t{1} << 40);
  t.get("log_every", o.log_every, 1, std::int64_t{1} << 40);
  t.get("metrics_file", o.metrics_file);
  t.get("metrics_every_step", o.metrics_every_step);
  t.finish();
  if (o.dataset == "idx" && (o.train_images.empty() || o.train_labels.empty()))
    t.fail("train_images", "and train_labels are required when dataset is \"idx\"");
  if (o.dataset == "csv" && o.train_csv.empty())
    t.fail("train_csv", "is required when dataset is \"csv\"");
  return o;
}

model::SplitSpec split_spec(const TrainOptions& o) {
  if (o.front.empty()) return model::preset(o.model, o.u_shaped);
  if (o.u_shaped && o.head.empty())
    throw ConfigError("train.u_shaped needs train.head for the custom model '" + o.model + "'");
  model::SplitSpec s;
  s.name = o.model;
  s.front = o.front;
  s.back = o.back;
  s.head = o.u_shaped ? o.head : "";
  if (!o.u_shaped && !o.head.empty()) s.back += " " + o.head;  // vanilla: the head is the server's
  s.input_shape = o.input_shape;
  return s;
}

NoPeekOptions read_nopeek_options(config::Object& p) {
  NoPeekOptions o;
  p.get("alpha", o.alpha, 0.0, 1e6);
  p.get("noise_std", o.noise_std, 0.0, 1e3);
  p.get("alpha_warmup_steps", o.alpha_warmup_steps, 0, std::int64_t{1} << 40);
  p.finish();
  return o;
}

double alpha_at(const NoPeekOptions& o, std::int64_t step) {
  if (o.alpha_warmup_steps <= 0 || step >= o.alpha_warmup_steps) return o.alpha;
  return o.alpha * static_cast<double>(step) / static_cast<double>(o.alpha_warmup_steps);
}

torch::Tensor cut_to_send(const torch::Tensor& z, const NoPeekOptions& o) {
  if (o.noise_std <= 0) return z;
  return z + o.noise_std * torch::randn_like(z);
}

ClientTrainConfig load_client_train_config(const std::string& path) {
  auto doc = config::Document::load(path);
  auto root = doc->root();
  ClientTrainConfig c;
  root.get_choice("log_level", c.log_level, log::level_names());
  root.get_int("threads", c.threads, 1, 256);
  root.ignore("name");
  root.ignore("transport");
  root.ignore("sync");
  auto privacy = root.child("privacy");
  c.nopeek = read_nopeek_options(privacy);
  auto tr = root.child("train");
  c.train = read_train_options(tr);
  root.finish();
  return c;
}

double lr_at(const TrainOptions& o, std::int64_t step) {
  if (o.lr_schedule == "step") return o.lr * std::pow(o.lr_gamma, static_cast<double>(step / o.lr_step_every));
  if (o.lr_schedule == "cosine") {
    const double p = std::min(1.0, static_cast<double>(step) / static_cast<double>(o.lr_total_steps));
    return 0.5 * o.lr * (1 + std::cos(M_PI * p));
  }
  return o.lr;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& params,
                                                        const TrainOptions& o) {
  if (o.optimizer == "adam")
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(o.lr).weight_decay(o.weight_decay));
  return std::make_unique<torch::optim::SGD>(
      params, torch::optim::SGDOptions(o.lr).momentum(o.momentum).weight_decay(o.weight_decay));
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) {
    if (auto* sgd = dynamic_cast<torch::optim::SGDOptions*>(&group.options())) sgd->lr(lr);
    else if (auto* adam = dynamic_cast<torch::optim::AdamOptions*>(&group.options())) adam->lr(lr);
  }
}

Data load_data(const TrainOptions& o) {
  Data d;
  if (o.dataset == "fashion-mnist") {
    d.train = data::load_fashion_mnist(o.data_dir, true, o.normalization);
    d.test = data::load_fashion_mnist(o.data_dir, false, o.normalization);
  } else if (o.dataset == "idx") {
    d.train = data::load_idx(o.train_images, o.train_labels, o.normalization);
    if (!o.test_images.empty()) d.test = data::load_idx(o.test_images, o.test_labels, o.normalization);
  } else {
    d.train = data::load_csv(o.train_csv, o.label_column, o.normalization);
    if (!o.test_csv.empty()) d.test = data::load_csv(o.test_csv, o.label_column, o.normalization);
  }
  const auto shard = o.shard == "dirichlet"
                         ? data::shard_dirichlet(d.train.y, o.clients, o.client_index, o.dirichlet_alpha, o.seed)
                         : data::shard_iid(d.train.size(), o.clients, o.client_index, o.seed);
  if (o.clients > 1 || o.shard == "dirichlet") d.train = d.train.subset(shard);
  if (d.test.size() > o.eval_samples) {
    std::vector<std::int64_t> first(static_cast<std::size_t>(o.eval_samples));
    for (std::int64_t i = 0; i < o.eval_samples; ++i) first[i] = i;
    d.test = d.test.subset(first);
  }
  return d;
}

}  // namespace cutlayer::train
