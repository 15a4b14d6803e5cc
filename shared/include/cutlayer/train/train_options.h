// What a training run is: model, data, optimizer, schedule, seed, logging. The client,
// the server and the monolithic reference (tools/cutlayer-train) read the same "train"
// object, so that the same config means the same run.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cutlayer/data/dataset.h"
#include "cutlayer/model/model_spec.h"

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
  // data
  std::string dataset = "fashion-mnist";  // fashion-mnist | idx | csv
  std::string data_dir = data::kFashionMnistDir;
  std::string train_images, train_labels, test_images, test_labels;  // idx
  std::string train_csv, test_csv, label_column = "label";           // csv
  data::Normalization normalization;
  int clients = 1;       // shards of the training set
  int client_index = 0;  // this client's shard
  std::string shard = "iid";  // iid | dirichlet
  double dirichlet_alpha = 0.5;
  // optimization
  int batch_size = 64;
  int epochs = 1;
  std::int64_t max_steps = 0;  // 0: no cap
  std::string optimizer = "sgd";  // sgd | adam
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

// NoPeek (Vepakomma et al. 2020): the client adds alpha * dCor(x, z) to its loss, so that
// its cut-layer activations reveal less of the raw input. 0 disables it.
struct NoPeekOptions {
  double alpha = 0.0;
  // Gaussian noise of this standard deviation added to the cut activations before they
  // leave the client (training and evaluation alike); 0: none.
  double noise_std = 0.0;
  // alpha ramps linearly from 0 over this many steps (0: full alpha from the start), so
  // that the front learns the task before it is pushed away from the input.
  std::int64_t alpha_warmup_steps = 0;
};
// The NoPeek weight at `step` (0-based).
double alpha_at(const NoPeekOptions& o, std::int64_t step);
NoPeekOptions read_nopeek_options(config::Object& privacy);

// What leaves the client for activations z: z itself, or z plus the configured noise.
// The noise is a constant of the graph: dL/d(sent) is dL/dz.
torch::Tensor cut_to_send(const torch::Tensor& z, const NoPeekOptions& o);

// Reads the "train" object; throws ConfigError naming file, field and fix.
TrainOptions read_train_options(config::Object& train);

// The model these options describe: the preset `model`, or the custom layer specs.
model::SplitSpec split_spec(const TrainOptions& o);

// What the tools that train or evaluate outside the daemons (cutlayer-train,
// cutlayer-gradstudy, cutlayer-leakage) read from a client config file: its "train" and
// "privacy" objects, log level and threads; "name" and "transport" are accepted unread.
struct ClientTrainConfig {
  std::string log_level = "info";
  int threads = 1;
  TrainOptions train;
  NoPeekOptions nopeek;
};
ClientTrainConfig load_client_train_config(const std::string& path);

// The learning rate at `step` (0-based) under the schedule.
double lr_at(const TrainOptions& o, std::int64_t step);

// SGD (momentum, weight decay) or Adam over `params`.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& params,
                                                        const TrainOptions& o);
void set_lr(torch::optim::Optimizer& opt, double lr);

// The training shard and the test split this options' client sees.
struct Data {
  data::Dataset train;
  data::Dataset test;
};
Data load_data(const TrainOptions& o);

}  // namespace cutlayer::train
