// What a training run is: model, data, optimizer, schedule, seed, logging. The client,
// the server and the monolithic reference (tools/cutlayer-train) read the same "train"
// object, so that the same config means the same run. The optimizer and its schedule are
// in optimizer.h, the data in data/source.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cutlayer/data/source.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/train/kfac.h"

namespace cutlayer::config {
class Object;
}

namespace cutlayer::train {

struct TrainOptions {
  // model
  std::string model = "fmnist-cnn";  // a preset, or the name of the custom model below
  bool u_shaped = false;  // labels never leave the client
  // A custom model (all of front/back/input_shape set; head too when u_shaped):
  // layer specs as in model/model_spec.h, e.g. "conv2d(1,32,5) relu maxpool(2)".
  std::string front, back, head;
  std::vector<std::int64_t> input_shape;
  // A user's own model: "model": {"front": "front.pt", "back": "back.pt", "head": "head.pt",
  // "input_shape": [1, 28, 28], "name": "..."}, TorchScript files made absolute against the
  // config's directory (model/script_model.h). A client needs no back file.
  std::string front_file, back_file, head_file;
  // The front ends in a "cutnorm" layer (set from the client config's privacy.cut_norm).
  bool cut_norm = false;
  // data (the same keys in the "train" object; see data/source.h)
  data::DataOptions data;
  // optimization
  int batch_size = 64;
  int epochs = 1;
  std::int64_t max_steps = 0;  // 0: no cap
  std::string optimizer = "sgd";  // sgd | adam | kfac (SGD with momentum on K-FAC-preconditioned gradients)
  KfacOptions kfac;               // the "kfac" object, with optimizer "kfac" only
  double lr = 0.05;
  double momentum = 0.9;
  double weight_decay = 0.0;
  std::string lr_schedule = "constant";  // constant | step | cosine
  std::int64_t lr_step_every = 1000;     // step: multiply by lr_gamma every this many steps
  double lr_gamma = 0.5;
  std::int64_t lr_total_steps = 10000;   // cosine: steps to reach 0
  std::uint64_t seed = 1;
  // evaluation and reporting
  std::int64_t eval_every = 0;       // steps between test evaluations (0: at the end only)
  std::int64_t eval_samples = 10000;  // test examples per evaluation
  std::int64_t log_every = 50;       // steps between progress lines
  std::string metrics_file;          // JSON lines; "" for none
  bool metrics_every_step = false;   // a line per step (parity checks)
};

// Reads the "train" object; throws ConfigError naming file, field and fix.
TrainOptions read_train_options(config::Object& train);

// The model these options describe: the preset `model`, or the custom layer specs.
model::SplitSpec split_spec(const TrainOptions& o);

// The options that decide what a step computes (model, optimizer, schedule, batch size,
// seed, which data and how it is cut), as canonical text; not the run's length (epochs,
// max_steps), logging, evaluation or file paths. A checkpoint is resumed only under the
// same text (its hash is in the header).
std::string run_identity(const TrainOptions& o);

}  // namespace cutlayer::train
