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
  "privacy": {"alpha": 0.5, "noise_std": 0.1, "alpha_warmup_steps": 10, "cut_norm": true,
              "adversary": {"weight": 0.1, "lr": 0.001}, "label_defense": {"kind": "noise", "sigma": 0.3, "clip": true}}
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

// vertical_join: event sequences as its header describes. Party k's session is k + 1 when
// the parties join in order, picked by who = k.
class VerticalOps {
 public:
  VerticalOps(int parties, bool sum, std::vector<std::uint8_t> ids) {
    put<std::uint8_t>(out, static_cast<std::uint8_t>((parties == 3 ? 1 : 0) | (sum ? 2 : 0)));
    for (auto n : ids) put<std::uint8_t>(out, static_cast<std::uint8_t>(n - 1));  // 1 + ids % 64
  }
  VerticalOps& join(int k, int flaw = 0) { return op(0, {k, flaw}); }
  VerticalOps& ready(int who) { return op(1, {who}); }
  VerticalOps& psi(int who, int round, std::uint32_t peer, const std::string& tensor) {
    op(2, {who, round});
    if (peer < 0xff) {
      put<std::uint8_t>(out, static_cast<std::uint8_t>(peer));
    } else {
      put<std::uint8_t>(out, 0xff);
      put<std::uint32_t>(out, peer);
    }
    out += tensor;
    return *this;
  }
  // flags: bit 0 labels, bit 1 evaluation; the tensor count is added.
  VerticalOps& cut(int who, int flags, std::uint8_t step, const std::vector<std::string>& tensors) {
    op(3, {who, flags | static_cast<int>(tensors.size() << 2), step});
    for (const auto& t : tensors) out += t;
    return *this;
  }
  VerticalOps& tick(std::uint16_t ms) {
    op(4, {});
    put<std::uint16_t>(out, ms);
    return *this;
  }
  VerticalOps& left(int who) { return op(5, {who}); }
  VerticalOps& raw(int who, bool to_cut, wire::MsgType type, const std::string& meta,
                   const std::vector<std::string>& tensors) {
    op(6, {who, to_cut ? 1 : 0, static_cast<int>(type), static_cast<int>(meta.size())});
    out += meta;
    put<std::uint8_t>(out, static_cast<std::uint8_t>(tensors.size()));
    for (const auto& t : tensors) out += t;
    return *this;
  }
  // Every party in and ready (sessions first_who + 1 on).
  VerticalOps& start(int parties, int first_who = 0) {
    for (int k = 0; k < parties; ++k) join(k);
    for (int k = 0; k < parties; ++k) ready(first_who + k);
    return *this;
  }
  std::string out;

 private:
  VerticalOps& op(int code, std::initializer_list<int> bytes) {
    put<std::uint8_t>(out, static_cast<std::uint8_t>(code));
    for (int b : bytes) put<std::uint8_t>(out, static_cast<std::uint8_t>(b));
    return *this;
  }
};

// The tensor encodings of vertical_join's input: its own bytes (fill 3), one byte repeated
// (fill 0), special values (fill 2: 5 NaN, 6 +Inf, 8 1e6, 12 just past 1e6, 14 3.4e38).
std::string vj_head(wire::DType type, const std::vector<std::uint16_t>& dims, std::uint8_t fill) {
  std::string out;
  put<std::uint8_t>(out, static_cast<std::uint8_t>(type));
  put<std::uint8_t>(out, static_cast<std::uint8_t>(dims.size()));
  for (auto d : dims) put<std::uint16_t>(out, d);
  put<std::uint8_t>(out, fill);
  return out;
}
std::string vj_tensor(const torch::Tensor& t) {
  std::vector<std::uint16_t> dims;
  for (auto d : t.sizes()) dims.push_back(static_cast<std::uint16_t>(d));
  auto out = vj_head(wire::from_torch(t.scalar_type()), dims, 3);
  const auto c = t.contiguous();
  out.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
  return out;
}
std::string vj_bytes(std::uint16_t n, std::uint8_t byte) {
  auto out = vj_head(wire::DType::kUInt8, {n}, 0);
  put<std::uint8_t>(out, byte);
  return out;
}
std::string vj_specials(const std::vector<std::uint16_t>& dims, const std::vector<std::uint8_t>& picks) {
  auto out = vj_head(wire::DType::kFloat32, dims, 2);
  put<std::uint8_t>(out, static_cast<std::uint8_t>(picks.size()));
  for (auto p : picks) put<std::uint8_t>(out, p);
  return out;
}
std::string vj_cut(std::int64_t batch, std::uint64_t seed) {
  torch::manual_seed(seed);
  return vj_tensor(torch::randn({batch, 64}));
}
std::string vj_labels(std::int64_t batch) { return vj_tensor(torch::arange(batch, torch::kInt64).remainder(2)); }

// Every party's round 1, round 2 and party 0's round 3 with each other party.
void vj_psi(VerticalOps& s, const std::vector<std::uint8_t>& ids) {
  for (std::size_t k = 1; k < ids.size(); ++k) {
    const int p = static_cast<int>(k);
    s.psi(0, 1, k, vj_bytes(static_cast<std::uint16_t>(ids[0] * vertical::kPointBytes), 0x11 * p));
    s.psi(p, 1, 0, vj_bytes(static_cast<std::uint16_t>(ids[k] * vertical::kPointBytes), 0x22 * p));
    s.psi(p, 2, 0, vj_bytes(static_cast<std::uint16_t>(ids[0] * vertical::kTagBytes), 0x33 * p));
    s.psi(0, 3, k, vj_tensor(torch::arange(std::min(ids[0], ids[k]) - 1, torch::kInt64)));
  }
}

// A step of every party (party 0 last, with the labels).
void vj_step(VerticalOps& s, int parties, std::uint8_t step, std::int64_t batch, bool eval = false) {
  const int flags = eval ? 2 : 0;
  for (int k = parties - 1; k > 0; --k) s.cut(k, flags, step, {vj_cut(batch, 100 * step + k)});
  s.cut(0, flags | 1, step, {vj_cut(batch, 100 * step), vj_labels(batch)});
}

Seeds vertical_join_seeds() {
  Seeds seeds;
  {  // two parties: the PSI, two steps and an evaluation, both leave
    const std::vector<std::uint8_t> ids{3, 4};
    VerticalOps s(2, false, ids);
    s.start(2);
    vj_psi(s, ids);
    vj_step(s, 2, 0, 4);
    vj_step(s, 2, 1, 4);
    vj_step(s, 2, 2, 3, true);
    s.left(0).left(1);
    s.start(2, 2);  // a new cohort: the back starts again
    seeds.emplace_back("honest_psi_two_steps", s.out);
  }
  {  // three parties, summed: the PSI, a step, an evaluation; one leaves, the others are ended after the grace
    const std::vector<std::uint8_t> ids{5, 2, 3};
    VerticalOps s(3, true, ids);
    s.start(3);
    vj_psi(s, ids);
    vj_step(s, 3, 0, 8);
    vj_step(s, 3, 1, 2, true);
    s.left(2).tick(4000).tick(999).tick(1);  // kLeaveGrace to the millisecond
    seeds.emplace_back("three_parties_sum_leave", s.out);
  }
  {  // out of step: party 1 at step 1, party 0 at step 2
    VerticalOps s(2, false, {2, 2});
    s.start(2);
    vj_psi(s, {2, 2});
    vj_step(s, 2, 0, 2);
    s.cut(1, 0, 1, {vj_cut(2, 7)});
    s.cut(0, 1, 2, {vj_cut(2, 8), vj_labels(2)});
    seeds.emplace_back("out_of_step", s.out);
  }
  {  // late: party 1's cut never comes; a new cohort joins after
    VerticalOps s(2, true, {1, 1});
    s.start(2);
    vj_psi(s, {1, 1});
    s.cut(0, 1, 0, {vj_cut(2, 9), vj_labels(2)});
    s.tick(500).tick(499).tick(1);  // step_timeout to the millisecond
    s.join(0).join(1).ready(2).ready(3);
    seeds.emplace_back("late_tick", s.out);
  }
  {  // what is refused: flawed Joins, rounds out of turn or of the wrong size, bad cuts
    const std::vector<std::uint8_t> ids{2, 3, 4};
    VerticalOps s(3, false, ids);
    for (int flaw = 1; flaw < 12; ++flaw) s.join(0, flaw);
    s.join(3).join(0).join(0).join(1, 12).join(1);  // out of range, taken, another batch order
    s.cut(0, 1, 0, {vj_cut(1, 1), vj_labels(1)});   // before all are ready
    s.join(2).ready(0).ready(0).ready(1).ready(2);
    s.psi(1, 2, 0, vj_bytes(2 * vertical::kTagBytes, 1));               // round 2 before round 1
    s.psi(0, 3, 1, vj_tensor(torch::zeros({1}, torch::kInt64)));        // round 3 before rounds 1 and 2
    s.psi(0, 1, 1, vj_bytes(2 * vertical::kPointBytes - 1, 1));         // short
    s.psi(1, 1, 2, vj_bytes(3 * vertical::kPointBytes, 1));             // party 1 to party 2
    s.psi(0, 1, 0xffffffffu, vj_bytes(2 * vertical::kPointBytes, 1));   // to no party
    s.psi(0, 4, 1, vj_bytes(1, 1));                                     // no such round
    s.psi(3, 1, 0, vj_bytes(3 * vertical::kPointBytes, 1));             // session 4 was never admitted
    s.psi(0, 1, 1, vj_bytes(2 * vertical::kPointBytes, 1));
    s.psi(0, 1, 1, vj_bytes(2 * vertical::kPointBytes, 1));             // twice
    s.cut(1, 0, 0, {vj_cut(2, 1)});                                     // before the PSI is done
    s.psi(1, 1, 0, vj_bytes(3 * vertical::kPointBytes, 2));
    s.psi(1, 2, 0, vj_bytes(2 * vertical::kTagBytes, 3));
    s.psi(0, 3, 1, vj_tensor(torch::zeros({3}, torch::kInt64)));       // more positions than IDs
    s.psi(0, 3, 1, vj_tensor(torch::zeros({1}, torch::kInt32)));       // not int64
    s.psi(0, 3, 1, vj_tensor(torch::zeros({1}, torch::kInt64)));
    s.psi(0, 1, 2, vj_bytes(2 * vertical::kPointBytes, 4));
    s.psi(2, 1, 0, vj_bytes(4 * vertical::kPointBytes, 5));
    s.psi(2, 2, 0, vj_bytes(2 * vertical::kTagBytes, 6));
    s.psi(0, 3, 2, vj_tensor(torch::ones({2}, torch::kInt64)));
    s.cut(1, 0, 0, {vj_specials({2, 64}, {0, 5})});                     // NaN
    s.cut(1, 0, 0, {vj_specials({2, 64}, {6, 1})});                     // Inf
    s.cut(1, 0, 0, {vj_specials({2, 64}, {12})});                       // just past the bound
    s.cut(1, 0, 0, {vj_specials({2, 63}, {1})});                        // narrow
    s.cut(1, 1, 0, {vj_cut(2, 2), vj_labels(2)});                       // labels from party 1
    s.cut(0, 1, 0, {vj_cut(2, 3), vj_tensor(torch::tensor({0, 2}, torch::kInt64))});  // class 2
    s.cut(0, 1, 0, {vj_cut(2, 3), vj_labels(3)});                       // 3 labels for 2 rows
    s.raw(0, true, wire::MsgType::kActivations, "\x01\x05", {vj_cut(2, 4)});
    s.raw(0, false, wire::MsgType::kActivations, "", {});
    s.cut(1, 0, 0, {vj_specials({2, 64}, {8, 9})});                     // at the bound: taken
    s.cut(1, 0, 0, {vj_cut(2, 5)});                                     // twice
    s.cut(2, 0, 0, {vj_cut(2, 6)});
    s.cut(0, 1, 0, {vj_specials({2, 64}, {14}), vj_labels(2)});         // past the bound
    s.cut(0, 1, 0, {vj_cut(2, 7), vj_labels(2)});
    s.tick(2000);
    seeds.emplace_back("refusals", s.out);
  }
  {  // a party leaves before the start (its place is free again), another during the PSI: every party ends
    const std::vector<std::uint8_t> ids{4, 4, 4};
    VerticalOps s(3, false, ids);
    s.join(0).join(1).join(2).ready(0).left(2).join(2).ready(1).ready(3);
    s.psi(0, 1, 1, vj_bytes(4 * vertical::kPointBytes, 9));
    s.left(1).left(0).join(1);
    seeds.emplace_back("leave_during_psi", s.out);
  }
  return seeds;
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
  c["vertical_join"] = vertical_join_seeds();
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
