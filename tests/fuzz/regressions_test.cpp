// cutlayer_fuzz_regressions: every fuzz target's entry function over its seeds (made by
// corpus_gen.h, as scripts/fuzz.sh seeds the fuzzers) and over every input a fuzzing run
// found a problem with (tests/fuzz/regressions/<target>/), in the normal build; under scripts/test.sh
// --sanitize with ASan + UBSan as well. Also checks that the generated seeds are still
// accepted and that the sealed_open harness seals as SealedChannel does.
//   cutlayer_fuzz_regressions --write-corpus <dir>   (re)writes the seed corpus
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "corpus_gen.h"
#include "cutlayer/error.h"
#include "cutlayer/kernels/sparse_codec.h"
#include "frame_codec.h"
#include "fuzz_common.h"
#include "fuzz_sealed.h"
#include "fuzz_targets.h"
#include "sealed_channel.h"

namespace fs = std::filesystem;

namespace cutlayer::fuzz {
namespace {

const fs::path kFuzzDir = CUTLAYER_FUZZ_DIR;

std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::vector<fs::path> inputs_of(const fs::path& dir) {
  std::vector<fs::path> files;
  if (!fs::is_directory(dir)) return files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename().string().front() != '.') files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

void replay(const Target& t, const std::string& bytes, const std::string& what) {
  try {
    t.fn(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  } catch (const Finding& e) {
    ADD_FAILURE() << t.name << ": " << what << ": finding: " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << t.name << ": " << what << ": unexpected exception: " << e.what();
  }
}

class FuzzTarget : public ::testing::TestWithParam<Target> {};

TEST_P(FuzzTarget, RegressionInputsReplay) {
  for (const auto& f : inputs_of(kFuzzDir / "regressions" / GetParam().name))
    replay(GetParam(), read_bytes(f), f.string());
}

TEST_P(FuzzTarget, GeneratedSeedsReplay) {
  const auto corpus = generate_corpus(CUTLAYER_CONFIGS_DIR);
  const auto it = corpus.find(GetParam().name);
  ASSERT_NE(it, corpus.end()) << "the corpus generator has no seeds for " << GetParam().name;
  for (const auto& [name, bytes] : it->second) replay(GetParam(), bytes, "generated seed " + name);
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzTarget, ::testing::ValuesIn(all_targets()),
                         [](const auto& info) { return std::string(info.param.name); });

// The wire seeds must decode (else the fuzzer starts from inputs refused at the envelope).
TEST(FuzzCorpus, WireSeedsDecode) {
  const auto corpus = generate_corpus(CUTLAYER_CONFIGS_DIR);
  for (const auto& [name, bytes] : corpus.at("wire_decode")) {
    Input in(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    FillBudget budget;
    auto frames = read_frames(in, budget);
    EXPECT_NO_THROW({
      auto msg = wire::decode(frames, fuzz_limits());
      EXPECT_TRUE(exercise_meta(msg)) << name;
    }) << name;
  }
}

// The sealed seeds must open, those sealed by the harness too.
TEST(FuzzCorpus, SealedSeedsOpen) {
  const auto corpus = generate_corpus(CUTLAYER_CONFIGS_DIR);
  for (const auto& [name, bytes] : corpus.at("sealed_open")) {
    if (name == "sequence_with_replay") continue;
    Input in(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    const bool seal_here = in.take<std::uint8_t>() & 1;
    FillBudget budget;
    auto frames = read_frames(in, budget);
    if (seal_here) ClientSealer().seal_in_place(frames);
    transport::SealedChannel server(kFuzzSession, fuzz_secret(), transport::Side::kServer);
    bool authenticated = false;
    EXPECT_NO_THROW({
      const auto env = wire::parse_envelope(frames, fuzz_limits());
      server.open(env, frames, fuzz_limits(), authenticated);
    }) << name;
    EXPECT_TRUE(authenticated) << name;
  }
}

// Findings of the first fuzzing runs, fixed; their inputs are in regressions/ as well.
// 1. kernels::pack() of an empty sparse vector with varint indices did memcpy from an empty
//    std::vector's data(), a null pointer (kernels/src/sparse_codec.cpp): UBSan's report.
TEST(FixedFindings, PackEmptySparseVarint) {
  const kernels::SparseTensor empty{torch::zeros({0}, torch::kInt32), torch::zeros({0}), 10};
  kernels::PackOptions o;
  o.index = kernels::IndexCoding::kDeltaVarint;
  const auto packed = kernels::pack(empty, o);
  ASSERT_EQ(packed.size(), 2u);
  EXPECT_EQ(packed[0].numel(), 0);
  const auto back = kernels::unpack(packed, kernels::IndexCoding::kDeltaVarint, 10, 10);
  EXPECT_EQ(back.nnz(), 0);
}

// 2. A meta flag (Join.u_shaped, Activations.train, SparseLayout.dense, ...) was loaded by
//    cereal as the peer's raw byte: 2..255 made an invalid bool. Now refused by name.
TEST(FixedFindings, MetaFlagByteOtherThan0Or1IsRefused) {
  wire::Join join;
  join.u_shaped = true;
  auto msg = wire::make_message(join);
  // u_shaped, sync and inference, then three empty fingerprint strings (8-byte lengths),
  // the cut's coding (two enum bytes, a uint32), the vertical party and parties (two
  // uint32) and the empty vertical order (an 8-byte length).
  const auto at = msg.meta.size() - 3 - 3 * 8 - 6 - 8 - 8;
  for (const std::uint8_t byte : {0, 1}) {
    msg.meta[at] = byte;
    EXPECT_EQ(wire::meta_as<wire::Join>(msg).u_shaped, byte == 1);
  }
  for (const std::uint8_t byte : {2, 255}) {
    msg.meta[at] = byte;
    try {
      (void)wire::meta_as<wire::Join>(msg);
      ADD_FAILURE() << "flag byte " << int(byte) << " accepted";
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find("Join.u_shaped"), std::string::npos) << e.what();
    }
  }
}

// ClientSealer duplicates the channel's key derivation and nonce layout: same frames.
TEST(FuzzCorpus, HarnessSealsAsSealedChannelDoes) {
  transport::SealedChannel client(kFuzzSession, fuzz_secret(), transport::Side::kClient);
  const auto msg = wire::make_message(wire::Probe{3}, {torch::arange(10, torch::kFloat32)});
  auto sealed = client.seal(msg);
  wire::PlainCodec plain;
  auto frames = wire::encode(msg, kFuzzSession, 1, plain);
  frames[0].data<std::uint8_t>()[8] |= wire::kFlagSealed;
  ClientSealer().seal_in_place(frames);
  ASSERT_EQ(frames.size(), sealed.size());
  for (std::size_t i = 0; i < frames.size(); ++i)
    EXPECT_EQ(frames[i].to_string(), sealed[i].to_string())
        << "frame " << i << ": the fuzz harness (tests/fuzz/fuzz_sealed.h) no longer seals as "
        << "SealedChannel does; update it with the channel";
}

}  // namespace
}  // namespace cutlayer::fuzz

int main(int argc, char** argv) {
  cutlayer::fuzz::init_once();
  if (argc == 3 && std::string(argv[1]) == "--write-corpus")
    return cutlayer::fuzz::write_corpus(argv[2], CUTLAYER_CONFIGS_DIR);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
