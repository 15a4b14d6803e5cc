// The server config's limits: the shipped configs load with the built-in defaults, each
// field is read, and a value out of range is refused naming the field.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <unistd.h>

#include "cutlayer/error.h"
#include "cutlayer/server/server_config.h"

namespace cutlayer::server {
namespace {

using namespace std::chrono_literals;

std::string write_temp(const std::string& text) {
  char path[] = "/tmp/cutlayer-server-config-XXXXXX";
  const int fd = ::mkstemp(path);
  EXPECT_GE(fd, 0);
  ::close(fd);
  std::ofstream(path) << text;
  return path;
}

ServerConfig load_text(const std::string& text) {
  const auto path = write_temp(text);
  try {
    auto c = load_server_config(path);
    std::remove(path.c_str());
    return c;
  } catch (...) {
    std::remove(path.c_str());
    throw;
  }
}

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

}  // namespace
}  // namespace cutlayer::server
