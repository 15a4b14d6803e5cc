#include "corpus_gen.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cutlayer/cut/codec.h"
#include "cutlayer/kernels/compressor.h"
#include "cutlayer/server/aggregator.h"
#include "cutlayer/sync/sparse_wire.h"
#include "cutlayer/train/kfac.h"
#include "cutlayer/vertical/psi.h"
#include "cutlayer/wire/dtype.h"
#include "frame_codec.h"
#include "fuzz_common.h"
#include "fuzz_sealed.h"
#include "sealed_channel.h"

namespace cutlayer::fuzz {
namespace {

template <class T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

std::string frames_of(const wire::Message& msg, std::uint64_t session = 42, std::uint64_t seq = 1) {
  wire::PlainCodec plain;
  std::string out;
  write_frames(out, wire::encode(msg, session, seq, plain));
  return out;
}

kernels::SparseTensor sparse_of(std::int64_t numel, double density, std::uint64_t seed) {
  torch::manual_seed(seed);
  auto g = torch::randn({numel});
  auto c = kernels::make_compressor("topk", {false, 3, 0});
  torch::Tensor none;
  return c->compress(g, none, density);
}

// The wire messages every type can carry, with a few tensor shapes and dtypes.
std::vector<std::pair<std::string, wire::Message>> sample_messages() {
  std::vector<std::pair<std::string, wire::Message>> m;
  wire::Join join;
  join.client_name = "alice";
  join.model = "fmnist-cnn";
  join.cut_shape = {64, 4, 4};
  join.samples = 60000;
  join.sync = true;
  m.emplace_back("join", wire::make_message(join));
  wire::JoinAck ack;
  ack.session_id = 7;
  ack.data_port = 7711;
  ack.heartbeat_ms = 1000;
  ack.session_timeout_ms = 30000;
  m.emplace_back("join_ack", wire::make_message(ack));
  m.emplace_back("leave", wire::make_message(wire::Leave{"done\n\x1b[31m"}));
  m.emplace_back("heartbeat", wire::make_message(wire::Heartbeat{}));
  m.emplace_back("error", wire::make_message(wire::ErrorMsg{1, "bad frame"}));
  wire::Activations act;
  act.step = 3;
  m.emplace_back("activations",
                 wire::make_message(act, {torch::arange(6, torch::kFloat32).reshape({2, 3}),
                                          torch::tensor({1, 0}, torch::kInt64)}));
  wire::CutGrad cg;
  cg.step = 3;
  cg.loss = 0.5f;
  cg.correct = 1;
  m.emplace_back("cut_grad", wire::make_message(cg, {torch::ones({2, 3})}));
  m.emplace_back("server_activations",
                 wire::make_message(wire::ServerActivations{4}, {torch::ones({2, 2}, torch::kFloat16)}));
  m.emplace_back("head_grad", wire::make_message(wire::HeadGrad{4}, {torch::ones({2, 2}, torch::kBFloat16)}));
  {
    wire::SparseGrad g;
    g.seq = 1;
    g.samples = 64;
    auto t = sync::to_tensors(sparse_of(23, 0.25, 1), false, true, g.layout);
    m.emplace_back("sparse_grad_varint", wire::make_message(g, t));
    auto t2 = sync::to_tensors(sparse_of(23, 0.25, 2), true, false, g.layout);
    m.emplace_back("sparse_grad_raw_fp16", wire::make_message(g, t2));
  }
  {
    wire::Update u;
    u.round = 1;
    u.contributors = 2;
    u.samples = 128;
    u.lr = 0.1;
    auto t = sync::to_tensors(kernels::SparseTensor{torch::Tensor(), torch::ones({23}), 23}, false, true, u.layout);
    m.emplace_back("update_dense", wire::make_message(u, t));
  }
  m.emplace_back("sync_reject", wire::make_message(wire::SyncReject{3, 2, "too stale"}));
  {
    wire::ModelSnapshot s;
    s.names = {"front.0.weight", "front.0.bias"};
    s.optimizer = "sgd";
    s.state_per_param = 1;
    s.momentum = 0.9;
    m.emplace_back("model_snapshot",
                   wire::make_message(s, {torch::ones({3, 4}), torch::ones({3}), torch::zeros({3, 4}),
                                          torch::zeros({3})}));
  }
  m.emplace_back("snapshot_request", wire::make_message(wire::SnapshotRequest{}));
  m.emplace_back("eval_result", wire::make_message(wire::EvalResult{1, 0.4, 0.86, 10000}));
  m.emplace_back("probe_dtypes",
                 wire::make_message(wire::Probe{9}, {torch::zeros({0, 5}), torch::ones({3}, torch::kBool),
                                                     torch::ones({2}, torch::kInt8), torch::ones({2}, torch::kInt16),
                                                     torch::ones({2}, torch::kInt32), torch::ones({1}, torch::kFloat64),
                                                     torch::ones({}, torch::kUInt8)}));
  // Past kChunkBytes: a chunked tensor (one byte repeated, so the container holds it small).
  m.emplace_back("probe_chunked",
                 wire::make_message(wire::Probe{10}, {torch::full({3 * (1 << 19)}, 7, torch::kUInt8)}));
  m.emplace_back("probe_reply", wire::make_message(wire::ProbeReply{9}));
  return m;
}

Seeds wire_seeds() {
  Seeds s;
  for (auto& [name, msg] : sample_messages()) s.emplace_back(name, frames_of(msg));
  return s;
}

// sealed_open: real sealed messages (mode 0), the same as plaintext for the harness to seal
// (mode 1), and a sequence with a replay.
Seeds sealed_seeds() {
  Seeds s;
  const auto secret = fuzz_secret();
  auto msgs = sample_messages();
  for (const char* pick : {"activations", "sparse_grad_varint", "probe_chunked", "leave"}) {
    for (auto& [name, msg] : msgs) {
      if (name != pick) continue;
      if (name != std::string("probe_chunked")) {  // its ciphertext is too large for the container
        transport::SealedChannel client(kFuzzSession, secret, transport::Side::kClient);
        std::string sealed(1, '\0');
        write_frames(sealed, client.seal(msg));
        s.emplace_back(name + "_sealed", sealed);
      }
      wire::PlainCodec plain;
      auto frames = wire::encode(msg, kFuzzSession, 5, plain);
      auto* env = frames[0].data<std::uint8_t>();
      env[8] |= wire::kFlagSealed;  // flags: the harness seals the rest
      std::string plaintext(1, '\1');
      write_frames(plaintext, frames);
      s.emplace_back(name + "_plain", plaintext);
    }
  }
  transport::SealedChannel client(kFuzzSession, secret, transport::Side::kClient);
  std::string seq;
  auto first = client.seal(wire::make_message(wire::Heartbeat{}));
  std::string first_bytes;
  write_frames(first_bytes, first);
  seq += '\0' + first_bytes;
  seq += '\0';
  write_frames(seq, client.seal(wire::make_message(wire::Probe{1}, {torch::ones({4})})));
  seq += '\0' + first_bytes;  // replayed
  s.emplace_back("sequence_with_replay", seq);
  return s;
}

// A tensor as read_tensor (fuzz_common.h) reads it.
void put_tensor(std::string& out, const torch::Tensor& t) {
  put<std::uint8_t>(out, static_cast<std::uint8_t>(wire::from_torch(t.scalar_type())));
  put<std::uint8_t>(out, static_cast<std::uint8_t>(t.dim()));
  for (auto d : t.sizes()) put<std::uint16_t>(out, static_cast<std::uint16_t>(d));
  auto c = t.contiguous();
  out.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

std::string sparse_input(const kernels::SparseTensor& v, bool fp16, bool varint) {
  wire::SparseLayout layout;
  auto tensors = sync::to_tensors(v, fp16, varint, layout);
  std::string out;
  put<std::uint8_t>(out, layout.dense ? 1 : 0);
  put<std::uint8_t>(out, layout.index_coding);
  put<std::uint16_t>(out, static_cast<std::uint16_t>(v.numel));
  put<std::uint8_t>(out, 0);
  put<std::uint8_t>(out, static_cast<std::uint8_t>(tensors.size()));
  for (auto& t : tensors) put_tensor(out, t);
  return out;
}

// cut_decode: a client's activations under a coding (as the header describes), and the
// server's gradient for them. The cut is 24 per sample.
std::string cut_input(wire::CutValues up, wire::CutValues down, std::uint32_t kept, std::int64_t batch) {
  wire::CutCoding c;
  c.values = up;
  c.grad_values = down;
  c.kept = kept;
  torch::manual_seed(static_cast<std::uint64_t>(kept) * 16 + static_cast<std::uint64_t>(up));
  const auto sent = cut::encode_activations(torch::randn({batch, 24}), c);
  std::string out;
  put<std::uint8_t>(out, static_cast<std::uint8_t>(up));
  put<std::uint8_t>(out, static_cast<std::uint8_t>(down));
  put<std::uint8_t>(out, static_cast<std::uint8_t>(kept));
  put<std::uint8_t>(out, static_cast<std::uint8_t>(sent.tensors.size()));
  for (auto& t : sent.tensors) put_tensor(out, t);
  const auto grad = cut::encode_gradient(torch::randn({batch, 24}), sent.cols, c);
  put<std::uint8_t>(out, static_cast<std::uint8_t>(grad.size()));
  for (auto& t : grad) put_tensor(out, t);
  return out;
}

Seeds cut_seeds() {
  using V = wire::CutValues;
  Seeds s;
  s.emplace_back("fp32_dense", cut_input(V::kFp32, V::kFp32, 0, 4));
  s.emplace_back("bf16_dense", cut_input(V::kBf16, V::kBf16, 0, 3));
  s.emplace_back("int8_dense_fp16_down", cut_input(V::kInt8, V::kFp16, 0, 2));
  s.emplace_back("int8_top5", cut_input(V::kInt8, V::kInt8, 5, 4));
  s.emplace_back("fp16_top1", cut_input(V::kFp16, V::kBf16, 1, 8));
  s.emplace_back("fp32_top24", cut_input(V::kFp32, V::kFp32, 24, 1));
  return s;
}

Seeds sparse_seeds() {
  Seeds s;
  const auto a = sparse_of(300, 0.05, 3);
  s.emplace_back("raw_fp32", sparse_input(a, false, false));
  s.emplace_back("varint_fp32", sparse_input(a, false, true));
  s.emplace_back("varint_fp16", sparse_input(sparse_of(5000, 0.01, 4), true, true));
  s.emplace_back("dense", sparse_input(kernels::SparseTensor{torch::Tensor(), torch::randn({40}), 40}, false, false));
  s.emplace_back("empty", sparse_input(kernels::SparseTensor{torch::zeros({0}, torch::kInt32), torch::zeros({0}), 10},
                                       false, false));
  return s;
}

// sync_messages: ops as its header describes. session 1 = the client's.
Seeds sync_seeds() {
  Seeds s;
  auto op = [](std::string& out, int code, int session) {
    out += static_cast<char>(code | ((session - 1) << 3));
  };
  auto contribution = [](std::uint64_t seq, std::uint64_t base, std::uint64_t seed, bool varint) {
    wire::SparseGrad g;
    g.seq = seq;
    g.base = base;
    g.samples = 32;
    auto t = sync::to_tensors(sparse_of(23, 0.3, seed), false, varint, g.layout);
    return wire::make_message(g, t);
  };
  {  // two members, a round closed by both, a second round closed by its deadline
    std::string in(1, '\0');
    op(in, 3, 1);
    op(in, 3, 2);
    op(in, 2, 1), in += frames_of(contribution(1, 0, 5, true));
    op(in, 2, 2), in += frames_of(contribution(1, 0, 6, false));
    op(in, 2, 1), in += frames_of(contribution(2, 1, 7, true));
    op(in, 4 | (3 << 3), 1);  // clock + 6 s: past the deadline
    op(in, 5, 2);
    s.emplace_back("two_members_rounds", in);
  }
  {  // Adam, staleness 1, clip on
    std::string in(1, static_cast<char>(1 | (1 << 1) | 8));
    op(in, 3, 1);
    for (std::uint64_t k = 1; k <= 3; ++k) op(in, 2, 1), in += frames_of(contribution(k, k - 1, 10 + k, true));
    s.emplace_back("adam_stale_clip", in);
  }
  {  // the client offered a snapshot and an Update of its own (not the server's)
    train::TrainOptions o;
    o.model = "fuzz-tiny";
    o.front = "linear(4,3) relu linear(3,2)";
    o.back = "linear(2,2)";
    o.input_shape = {4};
    o.lr = 0.1;
    o.momentum = 0.9;
    server::Aggregator agg(o, {});
    auto out = agg.add_member(9, "x");
    std::string in(1, '\0');
    op(in, 0, 1), in += frames_of(out.at(0).second);
    wire::Update u;
    u.round = 1;
    u.lr = 0.1;
    auto t = sync::to_tensors(sparse_of(23, 0.5, 20), true, true, u.layout);
    op(in, 1, 1), in += frames_of(wire::make_message(u, t));
    op(in, 1, 1), in += frames_of(wire::make_message(wire::SyncReject{1, 1, "stale"}));
    s.emplace_back("client_snapshot_update", in);
  }
  for (const int members : {0, 1}) {  // K-FAC with averaged factors, decomposed by the server or the members
    auto with_factors = [&](std::uint64_t seq, std::uint64_t base, std::uint64_t seed) {
      auto m = contribution(seq, base, seed, true);
      auto g = wire::meta_as<wire::SparseGrad>(m);
      torch::manual_seed(seed);
      std::vector<torch::Tensor> f{train::linear_a_factor(torch::randn({6, 4}), true),
                                   train::linear_g_factor(torch::randn({6, 3})),
                                   train::linear_a_factor(torch::randn({6, 3}), true),
                                   train::linear_g_factor(torch::randn({6, 2}))};
      g.kfac_tensors = static_cast<std::uint32_t>(f.size());
      auto t = m.tensors;
      for (const auto& x : f) t.push_back(train::pack_symmetric(x));
      return wire::make_message(g, t);
    };
    std::string in(1, static_cast<char>(16 | (members ? 32 : 0)));
    op(in, 3, 1);
    op(in, 3, 2);
    op(in, 2, 1), in += frames_of(with_factors(1, 0, 30));
    op(in, 2, 2), in += frames_of(with_factors(1, 0, 31));
    op(in, 2, 1), in += frames_of(contribution(2, 1, 32, true));
    op(in, 2, 2), in += frames_of(with_factors(2, 1, 33));
    s.emplace_back(members ? "kfac_shared_members" : "kfac_shared_server", in);
  }
  return s;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Seeds config_seeds(const std::string& configs_dir) {
  Seeds s;
  for (const char* f : {"client.json", "client-aggregation.json", "server.json", "server-aggregation.json"}) {
    const auto text = read_file(configs_dir + "/" + f);
    if (!text.empty()) s.emplace_back(f, text);
  }
  s.emplace_back("custom_model.json", R"json({
  "train": {"model": "tiny", "u_shaped": true, "front": "conv2d(1,4,3,1,1) relu maxpool(2) flatten",
            "back": "linear(16,8) tanh dropout(0.5)", "head": "batchnorm1d(8) linear(8,2) sigmoid",
            "input_shape": [1, 4, 4], "dataset": "csv", "train_csv": "a.csv", "label_column": 0,
            "normalization": {"scale": 1, "mean": 0.5, "std": 0.25}, "shard": "dirichlet",
            "dirichlet_alpha": 0.5, "optimizer": "adam", "lr_schedule": "cosine", "lr_total_steps": 100},
  "sync": {"compressor": "randomk", "density_schedule": "0.25,0.0625", "values": "fp16", "indices": "raw", "seed": 3},
  "privacy": {"alpha": 0.5, "noise_std": 0.1, "alpha_warmup_steps": 10}
})json");
  return s;
}

// Fixed test keys (the CURVE test vectors of libzmq's documentation).
constexpr const char* kPub1 = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
constexpr const char* kSec1 = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs";
constexpr const char* kPub2 = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";

Seeds keys_seeds() {
  Seeds s;
  const std::string pair = std::string("# cutlayer key pair\npublic-key = ") + kPub1 + "\nsecret-key = " + kSec1 + "\n";
  s.emplace_back("key_pair_0600", std::string(1, '\0') + pair);
  s.emplace_back("key_pair_0644", std::string(1, '\4') + pair);
  s.emplace_back("public_0644", std::string(1, '\4') + "public-key = " + kPub2 + "\n");
  return s;
}

Seeds allow_list_seeds() {
  Seeds s;
  const std::string list = std::string("# name key\nalice ") + kPub1 + "\n\nbob\t" + kPub2 + "   # the second\n";
  s.emplace_back("parse", std::string(1, '\0') + list);
  s.emplace_back("load", std::string(1, '\7') + list);
  return s;
}

// psi_rounds: as its header describes.
Seeds psi_seeds() {
  Seeds s;
  const vertical::PsiParty other({"id0", "id2", "someone else"});
  const auto& peer = other.blinded();
  s.emplace_back("reblind", std::string(1, '\0') + std::string(peer.begin(), peer.end()));
  s.emplace_back("reblind_small_order", std::string(1, '\0') + std::string(32, '\0'));
  std::string both(1, '\1');
  put<std::uint16_t>(both, 5 * vertical::kTagBytes);
  for (int k = 0; k < 8; ++k) both += std::string(vertical::kTagBytes, static_cast<char>('a' + k % 6));
  s.emplace_back("intersect", both);
  std::string positions(1, '\2');
  for (std::uint32_t p : {4u, 0u, 2u}) put(positions, p);
  s.emplace_back("indices_at", positions);
  return s;
}

}  // namespace

std::map<std::string, Seeds> generate_corpus(const std::string& configs_dir) {
  std::map<std::string, Seeds> c;
  c["wire_decode"] = wire_seeds();
  c["sealed_open"] = sealed_seeds();
  c["sparse_wire"] = sparse_seeds();
  c["cut_decode"] = cut_seeds();
  c["sync_messages"] = sync_seeds();
  c["config"] = config_seeds(configs_dir);
  c["keys"] = keys_seeds();
  c["allow_list"] = allow_list_seeds();
  c["psi_rounds"] = psi_seeds();
  return c;
}

}  // namespace cutlayer::fuzz

namespace cutlayer::fuzz {

int write_corpus(const std::string& dir, const std::string& configs_dir) {
  namespace fs = std::filesystem;
  std::size_t total = 0, files = 0;
  for (const auto& [target, seeds] : generate_corpus(configs_dir)) {
    fs::create_directories(fs::path(dir) / target);
    for (const auto& [name, bytes] : seeds) {
      std::ofstream(fs::path(dir) / target / name, std::ios::binary) << bytes;
      total += bytes.size();
      ++files;
    }
  }
  std::cout << "wrote " << files << " seeds, " << total << " bytes, under " << dir << "\n";
  return 0;
}

}  // namespace cutlayer::fuzz
