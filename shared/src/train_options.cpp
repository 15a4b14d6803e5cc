#include "cutlayer/train/train_options.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cutlayer/config/reader.h"
#include "cutlayer/error.h"
#include "cutlayer/model/script_model.h"

namespace cutlayer::train {

namespace {

// The custom layer-spec model: front, back, head and input_shape in the "train" object.
void read_layer_specs(config::Object& t, TrainOptions& o) {
  t.get("model", o.model);
  t.get("front", o.front);
  t.get("back", o.back);
  t.get("head", o.head);
  t.get("input_shape", o.input_shape);
  const bool custom = !o.front.empty() || !o.back.empty() || !o.head.empty() || !o.input_shape.empty();
  if (!custom) return;
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

// One TorchScript part: the path made absolute and the file loaded now, so that a bad file
// is reported against this config's field.
void read_script_file(config::Object& m, const char* field, std::string& out) {
  m.get(field, out);
  if (out.empty()) return;
  out = m.resolve(out);
  try {
    model::load_scripted_part(out);
  } catch (const ConfigError& e) {
    m.fail(field, std::string("(TorchScript): ") + e.what());
  }
}

// "model": {"front": "front.pt", "back": "back.pt", "head": "head.pt", "input_shape": [...]}.
void read_script_model(config::Object& t, TrainOptions& o) {
  auto m = t.child("model");
  o.model = "torchscript";
  m.get("name", o.model);
  read_script_file(m, "front", o.front_file);
  read_script_file(m, "back", o.back_file);
  read_script_file(m, "head", o.head_file);
  m.get("input_shape", o.input_shape);
  m.finish();
  if (o.front_file.empty()) m.fail("front", "is required: the client's part, a TorchScript file (torch.jit.save)");
  if (o.u_shaped && o.head_file.empty()) m.fail("head", "is required when train.u_shaped is true");
  if (o.input_shape.empty()) m.fail("input_shape", "is required: the shape of one example, e.g. [1, 28, 28]");
  for (auto d : o.input_shape)
    if (d < 1 || d > (1 << 24)) m.fail("input_shape", "dimensions must be from 1 to 2^24");
  for (const char* f : {"front", "back", "head", "input_shape"})
    if (t.has(f)) t.fail(f, "belongs inside \"model\" for a TorchScript model (or use layer specs without one)");
}

void read_kfac(config::Object& t, TrainOptions& o) {
  if (!t.has("kfac")) return;
  if (o.optimizer != "kfac") t.fail("kfac", "applies only with \"optimizer\": \"kfac\"; remove it or set the optimizer");
  auto k = t.child("kfac");
  k.get("damping", o.kfac.damping, 1e-12, 1e6);
  k.get("factor_decay", o.kfac.factor_decay, 0.0, 0.999999);
  k.get("kl_clip", o.kfac.kl_clip, 1e-12, 1e6);
  k.get("factor_every", o.kfac.factor_every, 1, std::int64_t{1} << 30);
  k.get("inverse_every", o.kfac.inverse_every, 1, std::int64_t{1} << 30);
  k.get_choice("method", o.kfac.method, {"eigen", "inverse"});
  if (o.kfac.inverse_every % o.kfac.factor_every != 0)
    k.fail("inverse_every", "must be a multiple of factor_every (" + std::to_string(o.kfac.factor_every) +
                                "), so that every eigendecomposition sees fresh factors");
  k.finish();
}

}  // namespace

TrainOptions read_train_options(config::Object& t) {
  TrainOptions o;
  t.get("u_shaped", o.u_shaped);
  if (t.is_object("model")) read_script_model(t, o);
  else read_layer_specs(t, o);
  t.get_choice("dataset", o.data.dataset, {"fashion-mnist", "idx", "csv"});
  t.get("data_dir", o.data.data_dir);
  t.get("train_images", o.data.train_images);
  t.get("train_labels", o.data.train_labels);
  t.get("test_images", o.data.test_images);
  t.get("test_labels", o.data.test_labels);
  t.get("train_csv", o.data.train_csv);
  t.get("test_csv", o.data.test_csv);
  for (auto* path : {&o.data.data_dir, &o.data.train_images, &o.data.train_labels, &o.data.test_images,
                     &o.data.test_labels, &o.data.train_csv, &o.data.test_csv})
    if (!path->empty()) *path = t.resolve(*path);  // relative to the config, as the model's files
  t.get("label_column", o.data.label_column);
  auto n = t.child("normalization");
  n.get("scale", o.data.normalization.scale, 1e-12, 1e12);
  n.get("mean", o.data.normalization.mean, -1e12, 1e12);
  n.get("std", o.data.normalization.std, 1e-12, 1e12);
  n.finish();
  t.get_int("clients", o.data.clients, 1, 100000);
  t.get_int("client_index", o.data.client_index, 0, 100000);
  if (o.data.client_index >= o.data.clients)
    t.fail("client_index", "must be below clients (" + std::to_string(o.data.clients) + "), got " +
                               std::to_string(o.data.client_index));
  t.get_choice("shard", o.data.shard, {"iid", "dirichlet"});
  t.get("dirichlet_alpha", o.data.dirichlet_alpha, 1e-6, 1e6);
  t.get_int("batch_size", o.batch_size, 1, 1 << 20);
  t.get_int("epochs", o.epochs, 1, 100000);
  t.get("max_steps", o.max_steps, 0, std::int64_t{1} << 40);
  t.get_choice("optimizer", o.optimizer, {"sgd", "adam", "kfac"});
  read_kfac(t, o);
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
  if (o.data.dataset == "idx" && (o.data.train_images.empty() || o.data.train_labels.empty()))
    t.fail("train_images", "and train_labels are required when dataset is \"idx\"");
  if (o.data.dataset == "csv" && o.data.train_csv.empty())
    t.fail("train_csv", "is required when dataset is \"csv\"");
  return o;
}

namespace {

model::SplitSpec script_spec(const TrainOptions& o) {
  if (o.u_shaped && o.head_file.empty())  // --u-shaped, or a tool that needs the U-shaped form
    throw ConfigError("train.model.head: U-shaped split learning needs the head's TorchScript file");
  model::SplitSpec s;
  s.name = o.model;
  s.input_shape = o.input_shape;
  s.front_files = {o.front_file};
  if (!o.back_file.empty()) s.back_files = {o.back_file};
  if (o.u_shaped) s.head_files = {o.head_file};
  else if (!o.head_file.empty() && !o.back_file.empty()) s.back_files.push_back(o.head_file);  // the server's
  return s;
}

model::SplitSpec layered_spec(const TrainOptions& o) {
  if (!o.front_file.empty()) return script_spec(o);
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

}  // namespace

model::SplitSpec split_spec(const TrainOptions& o) {
  if (o.cut_norm && !o.front_file.empty())
    throw ConfigError("privacy.cut_norm appends a layer to a front from a layer spec; a TorchScript front ends "
                      "its own way: end it with a layer norm without affine weights, or leave cut_norm out");
  auto s = layered_spec(o);
  if (o.cut_norm) s.front += " cutnorm";
  return s;
}

namespace {

std::string kfac_identity(const TrainOptions& o) {
  if (o.optimizer != "kfac") return "";
  const auto& k = o.kfac;
  return fmt::format(
      "kfac method={} damping={:.17g} factor_decay={:.17g} kl_clip={:.17g} factor_every={} inverse_every={}\n",
      k.method, k.damping, k.factor_decay, k.kl_clip, k.factor_every, k.inverse_every);
}

}  // namespace

std::string run_identity(const TrainOptions& o) {
  const auto& d = o.data;
  return fmt::format(
      "model={} u_shaped={} front={} back={} head={} input_shape={}\n"
      "dataset={} clients={} client_index={} shard={} dirichlet_alpha={:.17g} normalization={:.17g},{:.17g},{:.17g}\n"
      "batch_size={} optimizer={} lr={:.17g} momentum={:.17g} weight_decay={:.17g} lr_schedule={} "
      "lr_step_every={} lr_gamma={:.17g} lr_total_steps={} seed={}\n{}",
      o.model, o.u_shaped, o.front, o.back, o.head, fmt::join(o.input_shape, "x"), d.dataset, d.clients,
      d.client_index, d.shard, d.dirichlet_alpha, d.normalization.scale, d.normalization.mean,
      d.normalization.std, o.batch_size, o.optimizer, o.lr, o.momentum, o.weight_decay, o.lr_schedule,
      o.lr_step_every, o.lr_gamma, o.lr_total_steps, o.seed, kfac_identity(o));
}

}  // namespace cutlayer::train
