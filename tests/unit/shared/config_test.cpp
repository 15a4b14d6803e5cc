#include "cutlayer/config/reader.h"

#include <gtest/gtest.h>

#include <fstream>

#include "cutlayer/error.h"

namespace cutlayer::config {
namespace {

struct Options {
  double density = 0.01;
  std::int64_t port = 7710;
  std::string mode = "sync";
  bool enabled = false;
  std::string path = "keys/a.key";
};

Options read(const std::string& text) {
  auto doc = Document::parse(text, "client.json");
  auto root = doc->root();
  Options o;
  root.get("density", o.density, 1e-6, 1.0);
  root.get("port", o.port, 1, 65535);
  root.get_choice("mode", o.mode, {"sync", "stale"});
  auto inner = root.child("inner");
  inner.get("enabled", o.enabled);
  inner.get("path", o.path);
  inner.finish();
  root.finish();
  return o;
}

std::string error_of(const std::string& text) {
  try {
    read(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, ValuesAndDefaults) {
  const auto o = read(R"({"density": 0.5, "inner": {"enabled": true}})");
  EXPECT_DOUBLE_EQ(o.density, 0.5);
  EXPECT_EQ(o.port, 7710);  // default kept
  EXPECT_TRUE(o.enabled);
}

TEST(Config, OutOfRangeNamesFileFieldAndRange) {
  const auto e = error_of(R"({"density": 1.5})");
  EXPECT_NE(e.find("client.json"), std::string::npos) << e;
  EXPECT_NE(e.find("`density`"), std::string::npos) << e;
  EXPECT_NE(e.find("1.5"), std::string::npos) << e;
  EXPECT_NE(e.find("[1e-06, 1]"), std::string::npos) << e;
}

TEST(Config, UnknownFieldIsRefusedWithItsPath) {
  auto e = error_of(R"({"densty": 0.1})");
  EXPECT_NE(e.find("unknown field `densty`"), std::string::npos) << e;
  e = error_of(R"({"inner": {"enabeld": true}})");
  EXPECT_NE(e.find("`inner.enabeld`"), std::string::npos) << e;
}

TEST(Config, WrongTypesAndChoices) {
  EXPECT_NE(error_of(R"({"port": "7710"})").find("must be an integer"), std::string::npos);
  EXPECT_NE(error_of(R"({"port": 1.5})").find("must be an integer"), std::string::npos);
  EXPECT_NE(error_of(R"({"mode": "async"})").find("one of sync|stale"), std::string::npos);
  EXPECT_NE(error_of(R"({"inner": 3})").find("must be an object"), std::string::npos);
  EXPECT_NE(error_of(R"({"inner": {"enabled": 1}})").find("true or false"), std::string::npos);
}

TEST(Config, InvalidJsonNamesTheLine) {
  const auto e = error_of("{\n\"density\": 0.1,\n}\n");
  EXPECT_NE(e.find("client.json:3"), std::string::npos) << e;
  EXPECT_NE(error_of("[1,2]").find("top level must be a JSON object"), std::string::npos);
}

TEST(Config, MissingFileIsIoErrorNamingThePath) {
  try {
    Document::load("/nonexistent/cutlayer.json");
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/cutlayer.json"), std::string::npos);
  }
}

TEST(Config, RelativePathsResolveAgainstTheFile) {
  const std::string path = ::testing::TempDir() + "/cfg_resolve.json";
  std::ofstream(path) << "{}";
  auto doc = Document::load(path);
  const std::string dir = path.substr(0, path.rfind('/'));
  EXPECT_EQ(doc->resolve("keys/a.key"), dir + "/keys/a.key");
  EXPECT_EQ(doc->resolve("/etc/x"), "/etc/x");
}

}  // namespace
}  // namespace cutlayer::config
