// Users' own TorchScript parts: loaded with their PyTorch names over the same tensors,
// switched between train and eval, fingerprinted by structure and code, exported; and every
// bad file (missing, truncated, corrupted, not TorchScript, too new, wrong forward) refused
// with the file's name, never a crash or a silently different model.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "cutlayer/config/reader.h"
#include "cutlayer/error.h"
#include "cutlayer/model/model_spec.h"
#include "cutlayer/model/script_export.h"
#include "cutlayer/model/script_model.h"
#include "cutlayer/state/archive.h"
#include "cutlayer/train/train_options.h"

namespace cutlayer::model {
namespace {

std::string temp(const std::string& name) { return ::testing::TempDir() + "/script_model_" + name; }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A module as Python's torch.jit.script would make one: a submodule with a weight, a bias
// and a buffer, and a forward that depends on self.training (as dropout/batch norm do).
torch::jit::Module make_module(const std::string& activation = "relu") {
  torch::jit::Module fc("fc_t");
  fc.register_attribute("training", c10::BoolType::get(), true);  // what nn.Module has
  fc.register_parameter("weight", torch::randn({4, 3}), false);
  fc.register_parameter("bias", torch::randn({4}), false);
  fc.register_buffer("scale", torch::full({4}, 2.0));
  fc.define("def forward(self, x):\n    return torch.linear(x, self.weight, self.bias)\n");
  torch::jit::Module m("outer_t");
  m.register_attribute("training", c10::BoolType::get(), true);
  m.register_module("fc", fc);
  m.define("def forward(self, x):\n"
           "    y = torch." + activation + "(self.fc.forward(x))\n"
           "    if self.training:\n"
           "        y = y * self.fc.scale\n"
           "    return y\n");
  return m;
}

std::string save_module(torch::jit::Module m, const std::string& name) {
  const auto path = temp(name);
  m.save(path);
  return path;
}

void expect_refused(const std::string& path, const std::string& why) {
  try {
    load_scripted_part(path);
    ADD_FAILURE() << "loaded: " << why;
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find(why), std::string::npos) << "want '" << why << "' in: " << what;
  }
}

TEST(ScriptedPart, ParametersAndBuffersAreTheScriptsOwnUnderTheirNames) {
  torch::manual_seed(1);
  auto part = load_scripted_part(save_module(make_module(), "names.pt"));
  const auto params = part->named_parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_TRUE(params.contains("fc.weight"));
  EXPECT_TRUE(params.contains("fc.bias"));
  ASSERT_TRUE(part->named_buffers().contains("fc.scale"));
  EXPECT_TRUE(params["fc.weight"].requires_grad());
  // The same tensors: an update in place is what the script computes with.
  part->eval();
  const auto x = torch::randn({5, 3});
  {
    torch::NoGradGuard no_grad;
    params["fc.weight"].zero_();
    params["fc.bias"].fill_(1.0);
  }
  EXPECT_TRUE(torch::equal(part->forward(x), torch::ones({5, 4})));
}

TEST(ScriptedPart, TrainAndEvalSwitchTheScript) {
  auto part = load_scripted_part(save_module(make_module(), "mode.pt"));
  const auto x = torch::randn({2, 3});
  part->eval();
  EXPECT_FALSE(part->script().is_training());
  const auto eval_out = part->forward(x).detach();
  part->train();
  EXPECT_TRUE(part->script().is_training());
  EXPECT_TRUE(torch::allclose(part->forward(x).detach(), eval_out * 2));
  torch::nn::Sequential seq;
  seq->push_back(part);
  seq->eval();  // through a container, as the trainers switch phases
  EXPECT_FALSE(part->script().is_training());
}

TEST(ScriptedPart, GradientsReachTheParametersAndAnOptimizerTrainsThem) {
  torch::manual_seed(2);
  auto seq = load_script_sequential(save_module(make_module(), "grad.pt"));
  torch::optim::SGD opt(seq->parameters(), 0.1);
  const auto x = torch::randn({16, 3});
  double first = 0, last = 0;
  for (int i = 0; i < 20; ++i) {
    opt.zero_grad();
    const auto loss = seq->forward(x).pow(2).mean();
    loss.backward();
    for (const auto& p : seq->parameters()) ASSERT_TRUE(p.grad().defined());
    opt.step();
    (i == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, first * 0.5);
}

TEST(ScriptedPart, FingerprintFollowsStructureAndCodeNotWeightsOrFileName) {
  auto fp = [](const std::string& path) {
    auto seq = load_script_sequential(path);
    return state::fingerprint("", {seq.ptr().get()});
  };
  torch::manual_seed(3);
  const auto a = fp(save_module(make_module(), "fp_a.pt"));
  torch::manual_seed(4);
  const auto b = fp(save_module(make_module(), "fp_b_other_name.pt"));
  const auto c = fp(save_module(make_module("tanh"), "fp_c.pt"));
  EXPECT_EQ(a, b);  // other weights, other file name: the same model
  EXPECT_NE(a, c);  // relu -> tanh: the same parameters, another computation
}

TEST(ScriptedPart, ExportsAsTrainedInEvalMode) {
  torch::manual_seed(5);
  auto seq = load_script_sequential(save_module(make_module(), "export.pt"));
  {
    torch::NoGradGuard no_grad;
    seq->parameters()[0].add_(1.0);  // "trained"
  }
  auto exported = to_script(seq, "e");
  EXPECT_TRUE(seq->is_training());  // exporting leaves the trainer's mode alone
  seq->eval();
  const auto x = torch::randn({3, 3});
  const auto want = seq->forward(x);
  EXPECT_TRUE(torch::equal(exported.forward({x}).toTensor(), want));
  {
    torch::NoGradGuard no_grad;
    seq->parameters()[0].add_(1.0);  // the export is a copy of the weights
  }
  EXPECT_TRUE(torch::equal(exported.forward({x}).toTensor(), want));
}

TEST(ScriptedPartFiles, MissingEmptyAndNotAZipAreRefused) {
  expect_refused(temp("absent.pt"), "no such model file");
  write_file(temp("empty.pt"), "");
  expect_refused(temp("empty.pt"), "truncated or not a zip");
  write_file(temp("text.pt"), std::string(4096, 'x'));
  expect_refused(temp("text.pt"), "not a zip archive");
}

TEST(ScriptedPartFiles, EveryTruncationIsRefused) {
  const auto bytes = read_file(save_module(make_module(), "whole.pt"));
  const auto path = temp("cut.pt");
  for (std::size_t n = 0; n < bytes.size(); n += 7) {
    write_file(path, bytes.substr(0, n));
    EXPECT_THROW(load_scripted_part(path), ConfigError) << n << " of " << bytes.size();
  }
}

// A flipped byte is refused, or lands where it changes nothing (a timestamp, padding): the
// loaded model then computes exactly what the original does. Never a crash, never a
// silently different model.
TEST(ScriptedPartFiles, EveryFlippedByteIsRefusedOrHarmless) {
  torch::manual_seed(6);
  const auto original_path = save_module(make_module(), "flip_src.pt");
  const auto bytes = read_file(original_path);
  auto original = load_scripted_part(original_path);
  original->eval();
  const auto x = torch::randn({4, 3});
  const auto want = original->forward(x);
  const auto path = temp("flip.pt");
  std::size_t refused = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    auto b = bytes;
    b[i] = static_cast<char>(b[i] ^ 0x5a);
    write_file(path, b);
    try {
      auto part = load_scripted_part(path);
      part->eval();
      ASSERT_TRUE(torch::equal(part->forward(x), want)) << "byte " << i << " changed the model silently";
      const auto got = part->named_parameters();
      for (const auto& p : original->named_parameters())
        ASSERT_TRUE(got.contains(p.key()) && torch::equal(got[p.key()], p.value())) << i << " " << p.key();
    } catch (const ConfigError&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, bytes.size() / 2);
}

// What torch.save writes (a pickle in the same zip format, no code) is not a module.
TEST(ScriptedPartFiles, APickleIsNotTorchScript) {
  const auto bytes = torch::pickle_save(c10::IValue(torch::ones({3})));
  write_file(temp("pickle.pt"), std::string(bytes.begin(), bytes.end()));
  expect_refused(temp("pickle.pt"), "torch.jit.save(torch.jit.script(model), path)");
}

// A file from a newer PyTorch: the archive is sound, its format version too new.
TEST(ScriptedPartFiles, ANewerFormatNamesThePyTorchToExportWith) {
  const auto bytes = read_file(save_module(make_module(), "new_src.pt"));
  std::istringstream in(bytes);
  caffe2::serialize::PyTorchStreamReader reader(&in);
  const auto path = temp("newer.pt");
  {
    caffe2::serialize::PyTorchStreamWriter writer(path);
    for (const auto& name : reader.getAllRecords()) {
      if (name == "version" || name == ".data/version") continue;
      const auto [data, size] = reader.getRecord(name);
      writer.writeRecord(name, data.get(), size);
    }
    writer.setMinVersion(max_script_format_version() + 1);
    writer.writeEndOfFile();
  }
  expect_refused(path, "format version " + std::to_string(max_script_format_version() + 1));
  expect_refused(path, "python3-torch");
}

TEST(ScriptedPartFiles, AForwardThatIsNotTensorToTensorIsRefused) {
  torch::jit::Module two("two_t");
  two.define("def forward(self, x, y):\n    return x + y\n");
  expect_refused(save_module(two, "two_inputs.pt"), "forward takes (Tensor, Tensor)");
  torch::jit::Module pair("pair_t");
  pair.define("def forward(self, x):\n    return (x, x)\n");
  expect_refused(save_module(pair, "tuple.pt"), "returns Tuple[Tensor, Tensor]");
  torch::jit::Module none("none_t");
  none.define("def helper(self, x):\n    return x\n");
  expect_refused(save_module(none, "no_forward.pt"), "no forward method");
}

TEST(ScriptModelConfig, PathsAreRelativeToTheConfigAndBadFilesNameTheField) {
  const auto dir = ::testing::TempDir();
  save_module(make_module(), "cfg_front.pt");
  save_module(make_module(), "cfg_back.pt");
  auto parse = [&](const std::string& model) {
    write_file(dir + "/c.json", "{\"model\": " + model + "}");
    auto doc = config::Document::load(dir + "/c.json");
    auto root = doc->root();
    return train::read_train_options(root);
  };
  const auto o = parse(R"({"front": "script_model_cfg_front.pt", "back": "script_model_cfg_back.pt",
                           "input_shape": [3]})");
  EXPECT_EQ(o.front_file, dir + "/script_model_cfg_front.pt");
  EXPECT_EQ(o.model, "torchscript");
  auto m = build_split(train::split_spec(o), 1);
  EXPECT_EQ(output_shape(m.front, {3}), (std::vector<std::int64_t>{4}));
  try {
    parse(R"({"front": "script_model_absent.pt", "input_shape": [3]})");
    ADD_FAILURE();
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("c.json: field `model.front`"), std::string::npos) << what;
    EXPECT_NE(what.find("no such model file"), std::string::npos) << what;
  }
  EXPECT_THROW(parse(R"({"front": "script_model_cfg_front.pt"})"), ConfigError);  // no input_shape
}

}  // namespace
}  // namespace cutlayer::model
