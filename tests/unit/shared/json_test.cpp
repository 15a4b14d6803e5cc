#include "cutlayer/report/json.h"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

namespace cutlayer::report {
namespace {

// Parses `text` as RapidJSON reads it at full precision; fails the test on a parse error.
rapidjson::Document parse(const std::string& text) {
  rapidjson::Document d;
  d.Parse<rapidjson::kParseFullPrecisionFlag>(text.c_str(), text.size());
  EXPECT_FALSE(d.HasParseError()) << text;
  EXPECT_TRUE(d.IsObject()) << text;
  return d;
}

TEST(Json, EmptyObject) {
  EXPECT_EQ(Json().str(), "{}");
  EXPECT_TRUE(Json().empty());
}

TEST(Json, TypesReadBack) {
  Json j;
  j.add("t", true)
      .add("f", false)
      .add("i", -7)
      .add("i64", std::int64_t{-9000000000})
      .add("u64", std::numeric_limits<std::uint64_t>::max())
      .add("d", 0.1)
      .add("s", "text")
      .add("sv", std::string_view("view"))
      .add("str", std::string("owned"))
      .add_null("n");
  const auto text = j.str();
  auto d = parse(text);
  EXPECT_TRUE(d["t"].IsBool() && d["t"].GetBool());
  EXPECT_TRUE(d["f"].IsBool() && !d["f"].GetBool());
  ASSERT_TRUE(d["i"].IsInt());
  EXPECT_EQ(d["i"].GetInt(), -7);
  ASSERT_TRUE(d["i64"].IsInt64());
  EXPECT_EQ(d["i64"].GetInt64(), -9000000000);
  ASSERT_TRUE(d["u64"].IsUint64());
  EXPECT_EQ(d["u64"].GetUint64(), std::numeric_limits<std::uint64_t>::max());
  ASSERT_TRUE(d["d"].IsDouble());
  EXPECT_EQ(d["d"].GetDouble(), 0.1);
  EXPECT_STREQ(d["s"].GetString(), "text");
  EXPECT_STREQ(d["sv"].GetString(), "view");
  EXPECT_STREQ(d["str"].GetString(), "owned");
  EXPECT_TRUE(d["n"].IsNull());
  EXPECT_EQ(text.find('\n'), std::string::npos);  // one line
  EXPECT_EQ(text.find(' '), std::string::npos);   // compact
}

// Every common integer type picks an overload (no ambiguity) and keeps its value and sign.
TEST(Json, CommonIntegerTypes) {
  Json j;
  j.add("short", short{-3})
      .add("ushort", static_cast<unsigned short>(3))
      .add("int", -4)
      .add("unsigned", 4u)
      .add("long", -5L)
      .add("ulong", 5UL)
      .add("llong", -6LL)
      .add("ullong", 6ULL)
      .add("size_t", std::size_t{7})
      .add("ptrdiff", std::ptrdiff_t{-8})
      .add("i32", std::int32_t{-9})
      .add("u32", std::uint32_t{4000000000u})
      .add("u8", std::uint8_t{200})
      .add("i16", std::int16_t{-10});
  auto d = parse(j.str());
  EXPECT_EQ(d["short"].GetInt64(), -3);
  EXPECT_EQ(d["ushort"].GetInt64(), 3);
  EXPECT_EQ(d["int"].GetInt64(), -4);
  EXPECT_EQ(d["unsigned"].GetUint64(), 4u);
  EXPECT_EQ(d["long"].GetInt64(), -5);
  EXPECT_EQ(d["ulong"].GetUint64(), 5u);
  EXPECT_EQ(d["llong"].GetInt64(), -6);
  EXPECT_EQ(d["ullong"].GetUint64(), 6u);
  EXPECT_EQ(d["size_t"].GetUint64(), 7u);
  EXPECT_EQ(d["ptrdiff"].GetInt64(), -8);
  EXPECT_EQ(d["i32"].GetInt64(), -9);
  EXPECT_EQ(d["u32"].GetUint64(), 4000000000u);
  EXPECT_EQ(d["u8"].GetUint64(), 200u);  // a number, not a character
  EXPECT_EQ(d["i16"].GetInt64(), -10);
  for (const auto& m : d.GetObject()) EXPECT_TRUE(m.value.IsNumber()) << m.name.GetString();
}

TEST(Json, KeysInTheOrderAdded) {
  Json j;
  j.add("zeta", 1).add("alpha", 2).add("mid", 3).add("beta", 4);
  EXPECT_EQ(j.str(), R"({"zeta":1,"alpha":2,"mid":3,"beta":4})");
  std::vector<std::string> keys;
  auto d = parse(j.str());
  for (const auto& m : d.GetObject()) keys.emplace_back(m.name.GetString());
  EXPECT_EQ(keys, (std::vector<std::string>{"zeta", "alpha", "mid", "beta"}));
}

TEST(Json, StringsEscaped) {
  const std::string nasty =
      std::string("quote \" backslash \\ newline \n tab \t cr \r bell \x07 nul ") + '\0' +
      " unit-sep \x1f end \xc3\xa9";  // é in UTF-8
  Json j;
  j.add("s", nasty).add("key \"with\"\nnewline", "v").add("path", "C:\\dir\\\"x\".pt");
  const auto text = j.str();
  EXPECT_EQ(text.find('\n'), std::string::npos) << text;  // still one line
  for (char c : text)
    EXPECT_GE(static_cast<unsigned char>(c), 0x20) << text;  // no raw control chars
  auto d = parse(text);
  ASSERT_TRUE(d["s"].IsString());
  EXPECT_EQ(std::string(d["s"].GetString(), d["s"].GetStringLength()), nasty);
  ASSERT_TRUE(d.HasMember("key \"with\"\nnewline"));
  EXPECT_STREQ(d["key \"with\"\nnewline"].GetString(), "v");
  EXPECT_STREQ(d["path"].GetString(), "C:\\dir\\\"x\".pt");
}

TEST(Json, NonFiniteIsNull) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  Json j;
  j.add("nan", nan)
      .add("inf", inf)
      .add("ninf", -inf)
      .add("nan6", nan, 6)
      .add("inf4", inf, 4)
      .add_significant("nang", nan, 9)
      .add("arr", std::vector<double>{1.5, nan, -inf});
  const auto text = j.str();
  auto d = parse(text);
  for (const char* k : {"nan", "inf", "ninf", "nan6", "inf4", "nang"})
    EXPECT_TRUE(d[k].IsNull()) << k << ": " << text;
  ASSERT_TRUE(d["arr"].IsArray());
  EXPECT_EQ(d["arr"][0].GetDouble(), 1.5);
  EXPECT_TRUE(d["arr"][1].IsNull());
  EXPECT_TRUE(d["arr"][2].IsNull());
}

TEST(Json, DecimalsRoundLikeFixedFormat) {
  Json j;
  j.add("loss", 0.51234567, 6)
      .add("acc", 0.81256, 4)
      .add("up", 0.9999996, 6)
      .add("rate", 1234.56, 1)
      .add("zero", 2.7, 0)
      .add("neg", -0.0000004, 6)
      .add("whole", 3.0, 3)
      .add("big", 1e20, 2);
  const auto text = j.str();
  // The text itself, as {:.Nf} prints it.
  EXPECT_NE(text.find(R"("loss":0.512346)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("up":1.000000)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("rate":1234.6)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("whole":3.000)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("big":100000000000000000000.00)"), std::string::npos) << text;
  auto d = parse(text);
  EXPECT_DOUBLE_EQ(d["loss"].GetDouble(), 0.512346);
  EXPECT_DOUBLE_EQ(d["acc"].GetDouble(), 0.8126);
  EXPECT_DOUBLE_EQ(d["up"].GetDouble(), 1.0);
  EXPECT_DOUBLE_EQ(d["rate"].GetDouble(), 1234.6);
  EXPECT_DOUBLE_EQ(d["zero"].GetDouble(), 3.0);
  EXPECT_DOUBLE_EQ(d["neg"].GetDouble(), 0.0);
  EXPECT_DOUBLE_EQ(d["whole"].GetDouble(), 3.0);
  EXPECT_DOUBLE_EQ(d["big"].GetDouble(), 1e20);
}

TEST(Json, ShortestExactDoublesReadBackExactly) {
  const double values[] = {0.1,
                           1.0 / 3.0,
                           2.0 / 3.0,
                           1e300,
                           -1e-300,
                           5e-324,
                           1.7976931348623157e308,
                           0.30000000000000004,
                           123456789.123456789,
                           -0.0,
                           0.0,
                           1.0,
                           1e21,
                           1e-7};
  for (double v : values) {
    Json j;
    j.add("v", v);
    const auto text = j.str();
    auto d = parse(text);
    ASSERT_TRUE(d["v"].IsNumber()) << text;
    EXPECT_EQ(d["v"].GetDouble(), v) << text;
    EXPECT_EQ(std::signbit(d["v"].GetDouble()), std::signbit(v)) << text;
  }
  Json j;
  j.add("v", 0.1);
  EXPECT_EQ(j.str(), R"({"v":0.1})");  // shortest: not 0.10000000000000001
}

TEST(Json, SignificantDigitsLikeGeneralFormat) {
  Json j;
  j.add_significant("loss", 0.693147180559945, 9)
      .add_significant("small", 1.23456789e-5, 3)
      .add_significant("dcor", 0.5, 6);
  const auto text = j.str();
  EXPECT_EQ(text, R"({"loss":0.693147181,"small":1.23e-05,"dcor":0.5})");
  auto d = parse(text);
  EXPECT_DOUBLE_EQ(d["small"].GetDouble(), 1.23e-5);
}

TEST(Json, NestedObjectsAndArrays) {
  Json inner;
  inner.add("rounds", 12).add("front_hash", "ab12");
  Json deepest;
  deepest.add("x", 1);
  Json middle;
  middle.add("deep", deepest).add("empty", Json());
  Json j;
  j.add("server", "summary")
      .add("aggregation", inner)
      .add("middle", middle)
      .add("hist", std::vector<std::uint64_t>{3, 0, 1})
      .add("signed", std::vector<std::int64_t>{-1, 2})
      .add("none", std::vector<std::uint64_t>{})
      .add("after", true);
  inner.add("later", 1);  // added after the copy: not in j
  const auto text = j.str();
  EXPECT_EQ(
      text,
      R"({"server":"summary","aggregation":{"rounds":12,"front_hash":"ab12"},)"
      R"("middle":{"deep":{"x":1},"empty":{}},"hist":[3,0,1],"signed":[-1,2],"none":[],"after":true})");
  auto d = parse(text);
  ASSERT_TRUE(d["aggregation"].IsObject());
  EXPECT_EQ(d["aggregation"]["rounds"].GetInt(), 12);
  EXPECT_FALSE(d["aggregation"].HasMember("later"));
  EXPECT_EQ(d["middle"]["deep"]["x"].GetInt(), 1);
  ASSERT_TRUE(d["hist"].IsArray());
  EXPECT_EQ(d["hist"].Size(), 3u);
  EXPECT_EQ(d["hist"][0].GetUint64(), 3u);
  EXPECT_TRUE(d["after"].GetBool());
}

TEST(Json, NullCharPointerIsNull) {
  const char* none = nullptr;
  Json j;
  j.add("p", none);
  EXPECT_EQ(j.str(), R"({"p":null})");
}

}  // namespace
}  // namespace cutlayer::report
