// The server config's limits: the shipped configs load with the built-in defaults, each
// field is read, and a value out of range is refused naming the field. The "vertical"
// object: its fields, their ranges, and the combinations a vertical server refuses.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>
#include <unistd.h>

#include "../config_text.h"
#include "cutlayer/error.h"
#include "cutlayer/server/server_config.h"

namespace cutlayer::server {
namespace {

using namespace std::chrono_literals;

ServerConfig load_text(const std::string& text) { return testing_config::load_text(text, &load_server_config); }

TEST(ServerConfig, ShippedConfigsCarryTheDefaults) {
  for (const char* name : {"server.json", "server-aggregation.json"}) {
    const auto c = load_server_config(std::string(CUTLAYER_CONFIGS_DIR) + "/" + name);
    const ServiceLimits sl;
    const TrainerLimits tl;
    const AggregatorOptions ao;
    EXPECT_EQ(c.limits.max_join_samples, sl.max_join_samples) << name;
    EXPECT_EQ(c.limits.refusals_to_evict, sl.refusals_to_evict) << name;
    EXPECT_EQ(c.limits.refusal_window, sl.refusal_window) << name;
    EXPECT_EQ(c.limits.rejoin_after_eviction, sl.rejoin_after_eviction) << name;
    EXPECT_EQ(c.max_abs_value, kDefaultMaxAbsValue) << name;
    EXPECT_EQ(c.trainer_limits.max_abs_value, tl.max_abs_value) << name;
    EXPECT_EQ(c.trainer_limits.head_grad_timeout, tl.head_grad_timeout) << name;
    EXPECT_EQ(c.trainer_limits.max_deferred_per_session, tl.max_deferred_per_session) << name;
    EXPECT_EQ(c.trainer_limits.max_deferred_bytes, tl.max_deferred_bytes) << name;
    EXPECT_EQ(c.aggregation.clip, ao.clip) << name;
    EXPECT_EQ(c.aggregation.clip_window, ao.clip_window) << name;
    EXPECT_EQ(c.aggregation.max_abs_value, ao.max_abs_value) << name;
  }
}

TEST(ServerConfig, LimitsAreRead) {
  const auto c = load_text(R"({
    "limits": {"max_abs_value": 1000, "max_join_samples": 5000, "refusals_to_evict": 0,
               "refusal_window_ms": 1000, "rejoin_after_eviction_ms": 0},
    "train": {"model": "fmnist-cnn", "u_shaped": true, "head_grad_timeout_ms": 250,
              "max_deferred_per_session": 1, "max_deferred_mb": 64},
    "aggregation": {"clip": 3, "clip_window": 16}
  })");
  EXPECT_EQ(c.max_abs_value, 1000);
  EXPECT_EQ(c.trainer_limits.max_abs_value, 1000);
  EXPECT_EQ(c.aggregation.max_abs_value, 1000);
  EXPECT_EQ(c.limits.max_join_samples, 5000u);
  EXPECT_EQ(c.limits.refusals_to_evict, 0);
  EXPECT_EQ(c.limits.refusal_window, 1000ms);
  EXPECT_EQ(c.limits.rejoin_after_eviction, 0ms);
  EXPECT_EQ(c.trainer_limits.head_grad_timeout, 250ms);
  EXPECT_EQ(c.trainer_limits.max_deferred_per_session, 1u);
  EXPECT_EQ(c.trainer_limits.max_deferred_bytes, std::size_t{64} << 20);
  EXPECT_TRUE(c.train.u_shaped);
  EXPECT_EQ(c.aggregation.clip, 3);
  EXPECT_EQ(c.aggregation.clip_window, 16u);
}

TEST(ServerConfig, OutOfRangeLimitsAreRefusedNamingTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"train": {}, "aggregation": {"clip": 0.5}})", "clip"},
      {R"({"limits": {"max_abs_value": 1e39}})", "max_abs_value"},
      {R"({"limits": {"max_join_samples": 0}})", "max_join_samples"},
      {R"({"limits": {"max_refusals": 3}})", "max_refusals"},
      {R"({"train": {"head_grad_timeout_ms": 0}})", "head_grad_timeout_ms"},
      {R"({"train": {"max_deferred_per_session": 0}})", "max_deferred_per_session"},
      {R"({"train": {}, "aggregation": {"kfac_factors": "average"}})", "aggregation.kfac_factors"},
      {R"({"train": {"optimizer": "kfac"}, "aggregation": {"kfac_factors": "all"}})", "kfac_factors"},
      {R"({"train": {"optimizer": "kfac"}, "aggregation": {"kfac_decompositions": "x"}})", "kfac_decompositions"},
  };
  for (const auto& [text, field] : cases) {
    try {
      load_text(text);
      ADD_FAILURE() << text << " was accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  }
}

TEST(ServerConfig, SharedKfacFactorsAreRead) {
  const auto c = load_text(R"({"train": {"optimizer": "kfac"},
      "aggregation": {"kfac_factors": "average", "kfac_decompositions": "members"}})");
  EXPECT_EQ(c.aggregation.kfac_factors, "average");
  EXPECT_EQ(c.aggregation.kfac_decompositions, "members");
  const auto d = load_text(R"({"train": {"optimizer": "kfac"}, "aggregation": {}})");
  EXPECT_EQ(d.aggregation.kfac_factors, "local");
}

// Vertical split learning: the "vertical" object (docs/vertical.md).

using testing_config::contains;
using testing_config::Refusal;

Refusal refusal_of(const std::string& text) { return testing_config::refusal_of(text, &load_server_config); }

void expect_refused(const std::string& text, const std::string& field, const std::string& reason) {
  testing_config::expect_refused(text, field, reason, &load_server_config);
}

TEST(ServerConfigVertical, ShippedConfigLoads) {
  const auto c = load_server_config(std::string(CUTLAYER_CONFIGS_DIR) + "/server-vertical.json");
  EXPECT_TRUE(c.has_vertical);
  EXPECT_TRUE(c.has_train);
  EXPECT_FALSE(c.has_aggregation);
  EXPECT_FALSE(c.train.u_shaped);
  EXPECT_FALSE(c.checkpoint.enabled());
  EXPECT_EQ(c.vertical.parties, 2);
  EXPECT_EQ(c.vertical.join, vertical::JoinMode::kConcat);
  EXPECT_EQ(c.vertical.input_shape, (std::vector<std::int64_t>{1, 28, 28}));
  EXPECT_EQ(c.vertical.classes, 10);
  EXPECT_EQ(c.vertical.step_timeout, 60000ms);
  EXPECT_EQ(c.vertical.max_ids, 10'000'000u);
}

TEST(ServerConfigVertical, HorizontalShippedConfigsAreNotVertical) {
  for (const char* name : {"server.json", "server-aggregation.json"}) {
    const auto c = load_server_config(std::string(CUTLAYER_CONFIGS_DIR) + "/" + name);
    EXPECT_FALSE(c.has_vertical) << name;
  }
}

TEST(ServerConfigVertical, AnEmptyObjectTakesTheDefaults) {
  const auto c = load_text(R"({"train": {}, "vertical": {}})");
  const VerticalOptions d;
  EXPECT_TRUE(c.has_vertical);
  EXPECT_EQ(c.vertical.parties, d.parties);
  EXPECT_EQ(c.vertical.join, d.join);
  EXPECT_EQ(c.vertical.input_shape, d.input_shape);
  EXPECT_EQ(c.vertical.classes, d.classes);
  EXPECT_EQ(c.vertical.step_timeout, d.step_timeout);
  EXPECT_EQ(c.vertical.max_ids, d.max_ids);
}

TEST(ServerConfigVertical, FieldsAreReadAtTheirBounds) {
  const auto lo = load_text(R"({"train": {}, "vertical": {"parties": 2, "join": "sum", "input_shape": [1],
      "classes": 2, "step_timeout_ms": 100, "max_ids": 1}})");
  EXPECT_TRUE(lo.has_vertical);
  EXPECT_EQ(lo.vertical.parties, 2);
  EXPECT_EQ(lo.vertical.join, vertical::JoinMode::kSum);
  EXPECT_EQ(lo.vertical.input_shape, (std::vector<std::int64_t>{1}));
  EXPECT_EQ(lo.vertical.classes, 2);
  EXPECT_EQ(lo.vertical.step_timeout, 100ms);
  EXPECT_EQ(lo.vertical.max_ids, 1u);

  const auto hi = load_text(R"({"train": {}, "vertical": {"parties": 7, "join": "concat",
      "input_shape": [1048576, 1, 1048576], "classes": 1048576, "step_timeout_ms": 86400000,
      "max_ids": 10000000}})");
  EXPECT_EQ(hi.vertical.parties, 7);
  EXPECT_EQ(hi.vertical.join, vertical::JoinMode::kConcat);
  EXPECT_EQ(hi.vertical.input_shape, (std::vector<std::int64_t>{1 << 20, 1, 1 << 20}));
  EXPECT_EQ(hi.vertical.classes, 1 << 20);
  EXPECT_EQ(hi.vertical.step_timeout, std::chrono::milliseconds(24 * 3600 * 1000));
  EXPECT_EQ(hi.vertical.max_ids, 10'000'000u);

  // A table: [F] features.
  const auto table = load_text(R"({"train": {}, "vertical": {"parties": 3, "input_shape": [54], "classes": 7}})");
  EXPECT_EQ(table.vertical.parties, 3);
  EXPECT_EQ(table.vertical.input_shape, (std::vector<std::int64_t>{54}));
  EXPECT_EQ(table.vertical.classes, 7);
}

TEST(ServerConfigVertical, OutOfRangeFieldsAreRefusedNamingTheFieldAndTheRange) {
  struct Case {
    const char* vertical;
    const char* field;
    const char* reason;
  };
  const Case cases[] = {
      {R"({"parties": 1})", "vertical.parties", "must be in [2, 7], got 1"},
      {R"({"parties": 8})", "vertical.parties", "must be in [2, 7], got 8"},
      {R"({"parties": 2.5})", "vertical.parties", "must be an integer"},
      {R"({"join": "mean"})", "vertical.join", "must be one of"},
      {R"({"join": "mean"})", "vertical.join", "got \"mean\""},
      {R"({"input_shape": []})", "vertical.input_shape", "must be [C, H, W] (images) or [F]"},
      {R"({"input_shape": [28, 28]})", "vertical.input_shape", "must be [C, H, W] (images) or [F]"},
      {R"({"input_shape": [1, 1, 28, 28]})", "vertical.input_shape", "must be [C, H, W] (images) or [F]"},
      {R"({"input_shape": [1, 0, 28]})", "vertical.input_shape", "each size must be in [1, 2^20]"},
      {R"({"input_shape": [-3]})", "vertical.input_shape", "each size must be in [1, 2^20]"},
      {R"({"input_shape": [1048577]})", "vertical.input_shape", "each size must be in [1, 2^20]"},
      {R"({"input_shape": "1x28x28"})", "vertical.input_shape", "must be an array of integers"},
      {R"({"input_shape": [1, 28.5, 28]})", "vertical.input_shape", "must be an array of integers"},
      {R"({"classes": 1})", "vertical.classes", "must be in [2, 1048576], got 1"},
      {R"({"classes": 1048577})", "vertical.classes", "must be in [2, 1048576]"},
      {R"({"step_timeout_ms": 99})", "vertical.step_timeout_ms", "must be in [100, 86400000], got 99"},
      {R"({"step_timeout_ms": 86400001})", "vertical.step_timeout_ms", "must be in [100, 86400000]"},
      {R"({"max_ids": 0})", "vertical.max_ids", "must be in [1, 10000000], got 0"},
      {R"({"max_ids": 10000001})", "vertical.max_ids", "must be in [1, 10000000]"},
  };
  for (const auto& c : cases)
    expect_refused(std::string(R"({"train": {}, "vertical": )") + c.vertical + "}", c.field, c.reason);
}

TEST(ServerConfigVertical, UnknownFieldIsRefusedNamingItAndTheKnownOnes) {
  // "party" belongs to the client's "vertical" object, not the server's.
  const auto r = refusal_of(R"({"train": {}, "vertical": {"parties": 2, "party": 0}})");
  EXPECT_EQ(r.message.rfind(r.path + ": ", 0), 0u) << r.message;
  EXPECT_TRUE(contains(r.message, "unknown field `vertical.party`")) << r.message;
  for (const char* known : {"parties", "join", "input_shape", "classes", "step_timeout_ms", "max_ids"})
    EXPECT_TRUE(contains(r.message, known)) << "known fields should list " << known << ": " << r.message;
  expect_refused(R"({"train": {}, "vertical": {"clases": 10}})", "vertical.clases", "known here");
}

TEST(ServerConfigVertical, VerticalIsAnObject) {
  expect_refused(R"({"train": {}, "vertical": true})", "vertical", "must be an object");
}

TEST(ServerConfigVertical, CombinationsAreRefusedNamingTheFix) {
  // Without "train": the back has no optimizer, schedule or seed.
  expect_refused(R"({"vertical": {"parties": 2}})", "vertical", "needs a \"train\" object");
  // With "aggregation": no fronts to aggregate.
  expect_refused(R"({"train": {}, "aggregation": {}, "vertical": {}})", "vertical",
                 "remove \"aggregation\"");
  // U-shaped: party 0 sends the labels, so the head is the server's.
  expect_refused(R"({"train": {"u_shaped": true}, "vertical": {}})", "vertical",
                 "set train.u_shaped false");
  expect_refused(R"({"train": {"optimizer": "kfac"}, "vertical": {}})", "vertical",
                 "does not take train.optimizer \"kfac\" yet");
  // A checkpoint directory: vertical checkpoints are not built.
  expect_refused(R"({"train": {}, "vertical": {}, "checkpoint": {"dir": "ck"}})", "checkpoint.dir",
                 "checkpoints of vertical training are not built yet");
  expect_refused(R"({"train": {}, "vertical": {}, "checkpoint": {"dir": "ck"}})", "checkpoint.dir",
                 "remove \"checkpoint\"");
}

TEST(ServerConfigVertical, CombinationsThatStayAllowed) {
  // u_shaped written as false, and a "checkpoint" object without a dir (checkpoints off).
  const auto c = load_text(R"({"train": {"u_shaped": false, "optimizer": "adam"}, "vertical": {},
      "checkpoint": {"keep": 2}})");
  EXPECT_TRUE(c.has_vertical);
  EXPECT_FALSE(c.checkpoint.enabled());
  EXPECT_EQ(c.train.optimizer, "adam");
}

}  // namespace
}  // namespace cutlayer::server
