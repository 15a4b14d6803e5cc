// Sealed checkpoint files and their directory: what opens, what is refused and why, and
// that a training state comes back bit for bit.
#include "cutlayer/state/checkpoint.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cutlayer/config/reader.h"
#include "cutlayer/state/archive.h"
#include "cutlayer/transport/keys.h"

namespace cutlayer::state {
namespace {

namespace fs = std::filesystem;

std::array<std::uint8_t, 32> ikm(std::uint8_t fill) {
  std::array<std::uint8_t, 32> k{};
  k.fill(fill);
  return k;
}

Identity identity(const std::string& kind = "train", std::uint8_t model = 1, std::uint8_t config = 2) {
  Identity id;
  id.kind = kind;
  id.model.fill(model);
  id.config.fill(config);
  return id;
}

std::string fresh_dir(const std::string& name) {
  const auto d = ::testing::TempDir() + "/ckpt_" + name;
  fs::remove_all(d);
  return d;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// The reason `path` is refused with ("" when it opens).
std::string refusal(CheckpointKey& key, const Identity& id, const std::string& path) {
  try {
    open_checkpoint(key, id, path);
    return "";
  } catch (const CheckpointRefused& e) {
    return e.what();
  }
}

std::string sealed_file(const std::string& name, const std::string& state, std::int64_t step = 7) {
  CheckpointKey key(ikm(9));
  const auto path = ::testing::TempDir() + "/" + name;
  spit(path, seal_checkpoint(key, identity(), step, state));
  return path;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(CheckpointTest, RoundTripsStateAndStepAndHidesTheState) {
  const std::string state = "weights: the quick brown fox jumps over the lazy dog";
  const auto path = sealed_file("rt.cutlayer", state, 1234);
  EXPECT_FALSE(contains(slurp(path), "quick brown fox"));  // sealed, not just framed
  CheckpointKey key(ikm(9));
  const auto o = open_checkpoint(key, identity(), path);
  EXPECT_EQ(o.step, 1234);
  EXPECT_EQ(o.state, state);
  EXPECT_EQ(slurp(path).size(), kHeaderBytes + state.size() + 16);
}

TEST(CheckpointTest, TruncatedAtAnyLengthIsRefused) {
  const auto path = sealed_file("trunc.cutlayer", std::string(1000, 'x'));
  const auto whole = slurp(path);
  CheckpointKey key(ikm(9));
  for (std::size_t len : {std::size_t{0}, std::size_t{10}, kHeaderBytes - 1, kHeaderBytes, kHeaderBytes + 500,
                          whole.size() - 1}) {
    spit(path, whole.substr(0, len));
    const auto why = refusal(key, identity(), path);
    EXPECT_TRUE(contains(why, "truncated")) << len << ": " << why;
  }
}

TEST(CheckpointTest, EveryFlippedByteIsRefused) {
  const auto path = sealed_file("flip.cutlayer", std::string(300, 's'));
  const auto whole = slurp(path);
  CheckpointKey key(ikm(9));
  for (std::size_t i = 0; i < whole.size(); ++i) {
    auto bad = whole;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    spit(path, bad);
    EXPECT_NE(refusal(key, identity(), path), "") << "byte " << i;
  }
  // In the state or the tag: the authentication says so.
  auto bad = whole;
  bad[kHeaderBytes + 10] ^= 0x40;
  spit(path, bad);
  EXPECT_TRUE(contains(refusal(key, identity(), path), "corrupted")) << refusal(key, identity(), path);
}

TEST(CheckpointTest, AnotherKeyIsNamedAsSuch) {
  const auto path = sealed_file("foreign.cutlayer", "state");
  CheckpointKey other(ikm(10));
  EXPECT_TRUE(contains(refusal(other, identity(), path), "another key"));
}

TEST(CheckpointTest, AnotherKindModelOrConfigIsRefused) {
  const auto path = sealed_file("identity.cutlayer", "state");
  CheckpointKey key(ikm(9));
  EXPECT_TRUE(contains(refusal(key, identity("server"), path), "a train checkpoint, and this is a server"));
  EXPECT_TRUE(contains(refusal(key, identity("train", 5), path), "another model"));
  EXPECT_TRUE(contains(refusal(key, identity("train", 1, 5), path), "another training config"));
  EXPECT_EQ(refusal(key, identity(), path), "");
}

TEST(CheckpointTest, FutureVersionIsRefusedAsNewer) {
  const auto path = sealed_file("future.cutlayer", "state");
  auto bytes = slurp(path);
  bytes[12] = 2;  // the version field
  spit(path, bytes);
  CheckpointKey key(ikm(9));
  EXPECT_TRUE(contains(refusal(key, identity(), path), "newer cutlayer (format version 2")) << refusal(key, identity(), path);
}

TEST(CheckpointTest, NotACheckpointAndNotAFileAreRefused) {
  const auto path = ::testing::TempDir() + "/notckpt.cutlayer";
  spit(path, std::string(500, 'z'));
  CheckpointKey key(ikm(9));
  EXPECT_TRUE(contains(refusal(key, identity(), path), "not a cutlayer checkpoint"));
  const auto dir = fresh_dir("isdir");
  fs::create_directories(dir);
  EXPECT_NE(refusal(key, identity(), dir), "");
}

TEST(CheckpointStoreTest, KeepsTheNewestAndLoadsTheNewest) {
  CheckpointOptions o;
  o.dir = fresh_dir("keep");
  o.keep = 2;
  CheckpointStore store(o, CheckpointKey(ikm(3)), identity());
  EXPECT_FALSE(store.load_newest().has_value());  // an empty directory: start from scratch
  for (int s : {100, 200, 300, 1000}) store.write(s, "state at " + std::to_string(s));
  const auto files = store.files();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_TRUE(contains(files[0], "ckpt-000000001000.cutlayer"));
  EXPECT_TRUE(contains(files[1], "ckpt-000000000300.cutlayer"));
  struct stat st {};
  ASSERT_EQ(::stat(files[0].c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(o.dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  CheckpointStore again(o, CheckpointKey(ikm(3)), identity());
  const auto got = again.load_newest();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->step, 1000);
  EXPECT_EQ(got->state, "state at 1000");
}

TEST(CheckpointStoreTest, ABadNewestFallsBackToThePreviousAndIsSetAside) {
  CheckpointOptions o;
  o.dir = fresh_dir("fallback");
  CheckpointStore store(o, CheckpointKey(ikm(3)), identity());
  store.write(10, "ten");
  const auto newest = store.write(20, "twenty");
  auto bytes = slurp(newest);
  spit(newest, bytes.substr(0, bytes.size() / 2));  // a torn write that somehow got renamed
  // A crash mid-write leaves a temp file: never taken for a checkpoint.
  spit(o.dir + "/ckpt-000000000030.cutlayer.tmp", "half a checkpoint");
  CheckpointStore again(o, CheckpointKey(ikm(3)), identity());
  const auto got = again.load_newest();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->step, 10);
  EXPECT_EQ(got->state, "ten");
  EXPECT_TRUE(fs::exists(newest + ".refused"));
  EXPECT_FALSE(fs::exists(newest));
  // The next write replaces the stale temp file and carries on.
  again.write(30, "thirty");
  EXPECT_EQ(again.load_newest()->state, "thirty");
}

TEST(CheckpointStoreTest, NoUsableCheckpointIsAnErrorNotAFreshStart) {
  CheckpointOptions o;
  o.dir = fresh_dir("allbad");
  CheckpointStore store(o, CheckpointKey(ikm(3)), identity());
  store.write(10, "ten");
  store.write(20, "twenty");
  CheckpointStore foreign(o, CheckpointKey(ikm(4)), identity());
  try {
    foreign.load_newest();
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "ckpt-000000000020.cutlayer: sealed under another key")) << what;
    EXPECT_TRUE(contains(what, "ckpt-000000000010.cutlayer")) << what;
    EXPECT_TRUE(contains(what, "start over")) << what;
  }
  // Sound files of another party are left where they are (not set aside as damaged).
  EXPECT_EQ(store.files().size(), 2u);
}

TEST(CheckpointStoreTest, AnEarlierStepWrittenLastIsTheNewestAndLaterOnesGo) {
  CheckpointOptions o;
  o.dir = fresh_dir("rewound");
  o.keep = 3;
  CheckpointStore store(o, CheckpointKey(ikm(3)), identity());
  for (int s : {10, 20, 30, 40}) store.write(s, "s" + std::to_string(s));  // keeps 20, 30, 40
  store.write(25, "rewound to 25");  // a run started over here, or rewound: 30 and 40 go
  const auto files = store.files();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_TRUE(contains(files[0], "ckpt-000000000025.cutlayer"));
  EXPECT_TRUE(contains(files[1], "ckpt-000000000020.cutlayer"));
  EXPECT_EQ(store.load_newest()->state, "rewound to 25");
}

TEST(CheckpointStoreTest, AStateThatDoesNotFitFallsBackToThePrevious) {
  CheckpointOptions o;
  o.dir = fresh_dir("apply");
  CheckpointStore store(o, CheckpointKey(ikm(3)), identity());
  store.write(10, "good");
  store.write(20, "unfit");
  const auto got = store.load_newest([](const Opened& op) {
    if (op.state == "unfit") throw CheckpointRefused("its state does not fit");
  });
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->step, 10);
}

TEST(CheckpointStoreTest, LoadStepFindsExactlyThatStep) {
  CheckpointOptions o;
  o.dir = fresh_dir("exact");
  CheckpointStore store(o, CheckpointKey(ikm(3)), identity());
  for (int s : {25, 50, 75}) store.write(s, "s" + std::to_string(s));
  const auto got = store.load_step(50);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->state, "s50");
  EXPECT_FALSE(store.load_step(60).has_value());  // none of that step: nothing loaded
  // A damaged one is refused and set aside, not taken.
  const auto path = store.files()[2];
  spit(path, slurp(path).substr(0, 100));
  EXPECT_FALSE(store.load_step(25).has_value());
  EXPECT_TRUE(fs::exists(path + ".refused"));
}

TEST(CheckpointStoreTest, DueByStepsAndNotTwiceForTheSameStep) {
  CheckpointOptions o;
  o.dir = fresh_dir("due");
  o.every_steps = 50;
  o.every_seconds = 0;
  CheckpointStore store(o, CheckpointKey(ikm(3)), identity());
  EXPECT_FALSE(store.due(49));
  EXPECT_TRUE(store.due(50));
  store.write(50, "s");
  EXPECT_FALSE(store.due(99));
  EXPECT_TRUE(store.due(100));
}

TEST(CheckpointKeyTest, DerivedFromTheKeyPairFile) {
  const auto path = ::testing::TempDir() + "/ckpt_party.key";
  ::unlink(path.c_str());
  const auto kp = transport::generate_key_pair();
  transport::write_private_file(path, transport::format_key_pair(kp, "test"), true);
  auto a = CheckpointKey::from_key_file(path);
  auto b = CheckpointKey::from_key_file(path);
  EXPECT_EQ(a.id(), b.id());
  const auto sealed = ::testing::TempDir() + "/ckpt_party.cutlayer";
  spit(sealed, seal_checkpoint(a, identity(), 1, "x"));
  EXPECT_EQ(refusal(b, identity(), sealed), "");
  auto other = CheckpointKey::from_key_file(([&] {
    const auto p2 = ::testing::TempDir() + "/ckpt_other.key";
    ::unlink(p2.c_str());
    transport::write_private_file(p2, transport::format_key_pair(transport::generate_key_pair(), ""), true);
    return p2;
  })());
  EXPECT_NE(other.id(), a.id());
}

TEST(CheckpointOptionsTest, ResumeWithoutADirectoryNamesTheField) {
  auto doc = config::Document::parse(R"({"resume": true})", "client.json");
  auto root = doc->root();
  try {
    read_checkpoint_options(root);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), "client.json")) << e.what();
    EXPECT_TRUE(contains(e.what(), "resume")) << e.what();
  }
}

// ---- the state inside: modules, optimizer, generator ----

struct Tiny {
  torch::nn::Sequential net{nullptr};
  std::unique_ptr<torch::optim::SGD> opt;
  Tiny() {
    torch::manual_seed(5);
    net = torch::nn::Sequential(torch::nn::Linear(4, 8), torch::nn::ReLU(), torch::nn::Dropout(0.3),
                                torch::nn::Linear(8, 3));
    opt = std::make_unique<torch::optim::SGD>(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  }
  void steps(int n) {
    for (int i = 0; i < n; ++i) {
      auto x = torch::randn({16, 4});
      auto loss = net->forward(x).pow(2).mean();
      opt->zero_grad();
      loss.backward();
      opt->step();
    }
  }
  std::string snapshot() {
    OutputArchive a;
    save_part(a, "net", *net);
    save_part(a, "opt", *opt);
    save_rng(a);
    save_int(a, "steps", 3);
    return to_bytes(a);
  }
  void restore(const std::string& bytes) {
    InputArchive a;
    from_bytes(a, bytes);
    load_part(a, "net", *net);
    load_part(a, "opt", *opt);
    load_rng(a);
    EXPECT_EQ(load_int(a, "steps"), 3);
  }
};

TEST(ArchiveTest, ResumedTrainingIsBitIdentical) {
  Tiny uninterrupted;
  uninterrupted.steps(3);
  const auto snap = uninterrupted.snapshot();
  uninterrupted.steps(4);

  Tiny resumed;  // a fresh process: same init, then the snapshot
  resumed.steps(1);  // state that must be overwritten
  resumed.restore(snap);
  resumed.steps(4);
  const auto a = uninterrupted.net->parameters(), b = resumed.net->parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
}

TEST(ArchiveTest, AnotherShapeOrGarbageIsRefused) {
  Tiny t;
  const auto snap = t.snapshot();
  torch::nn::Sequential wider(torch::nn::Linear(4, 9), torch::nn::ReLU(), torch::nn::Dropout(0.3),
                              torch::nn::Linear(9, 3));
  InputArchive a;
  from_bytes(a, snap);
  EXPECT_THROW(load_part(a, "net", *wider), CheckpointRefused);
  InputArchive g;
  EXPECT_THROW(from_bytes(g, std::string(100, 'g')), CheckpointRefused);
}

TEST(ArchiveTest, CountsRoundTripAndMalformedOnesAreRefused) {
  const std::map<std::string, std::uint64_t> m{{"alice", 25}, {"", 0}, {std::string(300, 'b'), ~0ull}};
  OutputArchive out;
  save_counts(out, "c", m);
  save_bytes(out, "short", {5, 0, 'a', 'b'});  // a name of 5 bytes with 2 there
  save_bytes(out, "nocount", {1, 0, 'a', 1, 2});
  InputArchive in;
  from_bytes(in, to_bytes(out));
  EXPECT_EQ(load_counts(in, "c", 3), m);
  EXPECT_THROW(load_counts(in, "c", 2), CheckpointRefused);  // more entries than allowed
  EXPECT_THROW(load_counts(in, "short", 10), CheckpointRefused);
  EXPECT_THROW(load_counts(in, "nocount", 10), CheckpointRefused);
  EXPECT_THROW(load_counts(in, "absent", 10), CheckpointRefused);
}

TEST(ArchiveTest, FingerprintFollowsTheStructureNotTheValues) {
  Tiny a, b;
  b.steps(2);
  EXPECT_EQ(fingerprint("tiny", {a.net.ptr().get()}), fingerprint("tiny", {b.net.ptr().get()}));
  torch::nn::Sequential wider(torch::nn::Linear(4, 9), torch::nn::ReLU(), torch::nn::Linear(9, 3));
  EXPECT_NE(fingerprint("tiny", {a.net.ptr().get()}), fingerprint("tiny", {wider.ptr().get()}));
  EXPECT_NE(fingerprint("tiny", {a.net.ptr().get()}), fingerprint("other", {a.net.ptr().get()}));
}

}  // namespace
}  // namespace cutlayer::state
