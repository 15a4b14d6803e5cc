// The client config's "vertical" object (a party of vertical split learning,
// docs/vertical.md): the shipped config loads, each field is read within its range, and
// what a vertical party does not take is refused naming the file, the field and the fix.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>

#include "cutlayer/client/client_config.h"
#include "client_config_text.h"
#include "cutlayer/error.h"

namespace cutlayer::client {
namespace {

using namespace std::chrono_literals;

// The repository's configs/, found from this file's path (tests/unit/client/<this>).
std::string configs_dir() {
#ifdef CUTLAYER_CONFIGS_DIR
  return CUTLAYER_CONFIGS_DIR;
#else
  std::string here = __FILE__;
  for (int up = 0; up < 4; ++up) here = here.substr(0, here.rfind('/'));
  return here + "/configs";
#endif
}

using testing_client::expect_refused;
using testing_client::load_text;
using testing_client::refusal_of;
using testing_config::contains;
using testing_config::Refusal;

TEST(ClientConfigVertical, ShippedConfigLoads) {
  const auto c = load_client_config(configs_dir() + "/client-vertical.json");
  EXPECT_TRUE(c.has_vertical);
  EXPECT_TRUE(c.has_train);
  EXPECT_EQ(c.vertical.party, 0);
  EXPECT_EQ(c.vertical.parties, 2);
  EXPECT_DOUBLE_EQ(c.vertical.keep, 0.8);
  EXPECT_EQ(c.vertical.id_prefix, "person-");
  EXPECT_EQ(c.vertical.join, "concat");
  EXPECT_EQ(c.vertical.start_timeout, 600000ms);
  EXPECT_FALSE(c.sync.enabled);
  EXPECT_FALSE(c.cut.compressed());
  EXPECT_FALSE(c.checkpoint.enabled());
  EXPECT_FALSE(c.train.u_shaped);
  EXPECT_NE(c.train.optimizer, "kfac");
  EXPECT_EQ(c.train.data.clients, 1);
}

TEST(ClientConfigVertical, HorizontalShippedConfigsAreNotVertical) {
  for (const char* name : {"client.json", "client-aggregation.json"}) {
    const auto c = load_client_config(configs_dir() + "/" + name);
    EXPECT_FALSE(c.has_vertical) << name;
  }
}

TEST(ClientConfigVertical, AnEmptyObjectTakesTheDefaults) {
  const auto c = load_text(R"({"train": {}, "vertical": {}})");
  const VerticalPartyOptions d;
  EXPECT_TRUE(c.has_vertical);
  EXPECT_EQ(c.vertical.party, d.party);
  EXPECT_EQ(c.vertical.parties, d.parties);
  EXPECT_EQ(c.vertical.keep, d.keep);
  EXPECT_EQ(c.vertical.id_prefix, d.id_prefix);
  EXPECT_EQ(c.vertical.join, d.join);
  EXPECT_EQ(c.vertical.start_timeout, d.start_timeout);
}

TEST(ClientConfigVertical, FieldsAreReadAtTheirBounds) {
  const auto last = load_text(R"({"train": {}, "vertical": {"parties": 7, "party": 6, "keep": 0.01,
      "id_prefix": "row-", "join": "sum", "start_timeout_ms": 1000}})");
  EXPECT_TRUE(last.has_vertical);
  EXPECT_EQ(last.vertical.parties, 7);
  EXPECT_EQ(last.vertical.party, 6);
  EXPECT_DOUBLE_EQ(last.vertical.keep, 0.01);
  EXPECT_EQ(last.vertical.id_prefix, "row-");
  EXPECT_EQ(last.vertical.join, "sum");
  EXPECT_EQ(last.vertical.start_timeout, 1000ms);

  const auto passive = load_text(R"({"train": {}, "vertical": {"party": 1, "keep": 1,
      "id_prefix": "", "start_timeout_ms": 86400000}})");
  EXPECT_EQ(passive.vertical.parties, 2);
  EXPECT_EQ(passive.vertical.party, 1);
  EXPECT_DOUBLE_EQ(passive.vertical.keep, 1.0);
  EXPECT_EQ(passive.vertical.id_prefix, "");
  EXPECT_EQ(passive.vertical.start_timeout, std::chrono::milliseconds(24 * 3600 * 1000));
}

TEST(ClientConfigVertical, OutOfRangeFieldsAreRefusedNamingTheFieldAndTheRange) {
  struct Case {
    const char* vertical;
    const char* field;
    const char* reason;
  };
  const Case cases[] = {
      // A party index equal to parties is one past the last party.
      {R"({"parties": 3, "party": 3})", "vertical.party", "must be in [0, 2], got 3"},
      {R"({"party": 2})", "vertical.party", "must be in [0, 1], got 2"},  // parties defaults to 2
      {R"({"parties": 7, "party": 7})", "vertical.party", "must be in [0, 6], got 7"},
      {R"({"party": -1})", "vertical.party", "must be in [0, 1], got -1"},
      {R"({"party": "0"})", "vertical.party", "must be an integer"},
      {R"({"parties": 1, "party": 0})", "vertical.parties", "must be in [2, 7], got 1"},
      {R"({"parties": 8})", "vertical.parties", "must be in [2, 7], got 8"},
      {R"({"keep": 0})", "vertical.keep", "must be in [0.01, 1], got 0"},
      {R"({"keep": 0.005})", "vertical.keep", "must be in [0.01, 1]"},
      {R"({"keep": 1.5})", "vertical.keep", "must be in [0.01, 1]"},
      {R"({"keep": "80%"})", "vertical.keep", "must be a number"},
      {R"({"id_prefix": 7})", "vertical.id_prefix", "must be a string"},
      {R"({"join": "mean"})", "vertical.join", "must be one of"},
      {R"({"join": "mean"})", "vertical.join", "got \"mean\""},
      {R"({"start_timeout_ms": 999})", "vertical.start_timeout_ms", "must be in [1000, 86400000], got 999"},
      {R"({"start_timeout_ms": 86400001})", "vertical.start_timeout_ms", "must be in [1000, 86400000]"},
  };
  for (const auto& c : cases)
    expect_refused(std::string(R"({"train": {}, "vertical": )") + c.vertical + "}", c.field, c.reason);
}

TEST(ClientConfigVertical, UnknownFieldIsRefusedNamingItAndTheKnownOnes) {
  // "classes" belongs to the server's "vertical" object, not a party's.
  const auto r = refusal_of(R"({"train": {}, "vertical": {"party": 0, "classes": 10}})");
  EXPECT_EQ(r.message.rfind(r.path + ": ", 0), 0u) << r.message;
  EXPECT_TRUE(contains(r.message, "unknown field `vertical.classes`")) << r.message;
  for (const char* known : {"party", "parties", "keep", "id_prefix", "join", "start_timeout_ms"})
    EXPECT_TRUE(contains(r.message, known)) << "known fields should list " << known << ": " << r.message;
  expect_refused(R"({"train": {}, "vertical": {"partys": 2}})", "vertical.partys", "known here");
}

TEST(ClientConfigVertical, VerticalIsAnObject) {
  expect_refused(R"({"train": {}, "vertical": 1})", "vertical", "must be an object");
}

TEST(ClientConfigVertical, CombinationsAreRefusedNamingTheFix) {
  struct Case {
    const char* text;
    const char* reason;  // what the refusal names
  };
  const Case cases[] = {
      {R"({"vertical": {"party": 0}})", "add a \"train\" object"},
      {R"({"train": {}, "sync": {}, "vertical": {}})", "does not take \"sync\""},
      {R"({"train": {}, "cut": {"values": "int8"}, "vertical": {}})", "does not take a compressed \"cut\""},
      {R"({"train": {}, "cut": {"grad_values": "bf16"}, "vertical": {}})", "does not take a compressed \"cut\""},
      {R"({"train": {}, "cut": {"topk": 0.05}, "vertical": {}})", "does not take a compressed \"cut\""},
      {R"({"train": {}, "checkpoint": {"dir": "ck"}, "vertical": {}})", "does not take \"checkpoint\""},
      {R"({"train": {"u_shaped": true}, "vertical": {}})", "does not take train.u_shaped"},
      {R"({"train": {"optimizer": "kfac"}, "vertical": {}})", "does not take train.optimizer \"kfac\""},
      {R"({"train": {"clients": 2}, "vertical": {}})", "does not take train.clients"},
  };
  for (const auto& c : cases) {
    expect_refused(c.text, "vertical", c.reason);
    if (!contains(c.reason, "train\" object")) expect_refused(c.text, "vertical", "remove it");
  }
}

TEST(ClientConfigVertical, CombinationsThatStayAllowed) {
  // "sync" written but off, an uncompressed "cut", a "checkpoint" without a dir, one client.
  const auto c = load_text(R"({"train": {"clients": 1, "optimizer": "adam", "u_shaped": false},
      "sync": {"enabled": false}, "cut": {"values": "fp32", "grad_values": "fp32"},
      "checkpoint": {"keep": 2}, "privacy": {"alpha": 0.5}, "vertical": {"party": 1}})");
  EXPECT_TRUE(c.has_vertical);
  EXPECT_FALSE(c.sync.enabled);
  EXPECT_FALSE(c.cut.compressed());
  EXPECT_FALSE(c.checkpoint.enabled());
  EXPECT_EQ(c.vertical.party, 1);
  EXPECT_DOUBLE_EQ(c.nopeek.alpha, 0.5);
}

}  // namespace
}  // namespace cutlayer::client
