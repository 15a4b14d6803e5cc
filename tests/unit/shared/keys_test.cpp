#include "cutlayer/transport/keys.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "cutlayer/error.h"
#include "cutlayer/transport/allow_list.h"

namespace cutlayer::transport {
namespace {

std::string temp_path(const std::string& name) {
  const std::string p = ::testing::TempDir() + "/" + name;
  ::unlink(p.c_str());
  return p;
}

TEST(Keys, GeneratedPairsAreZ85AndDistinct) {
  const auto a = generate_key_pair(), b = generate_key_pair();
  EXPECT_TRUE(is_z85_key(a.public_key));
  EXPECT_TRUE(is_z85_key(a.secret_key));
  EXPECT_NE(a.public_key, b.public_key);
  EXPECT_FALSE(is_z85_key("too-short"));
}

TEST(Keys, KeyPairFileIsPrivateAndRoundTrips) {
  const auto path = temp_path("kp.key");
  const auto kp = generate_key_pair();
  write_private_file(path, format_key_pair(kp, "test"), false);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const auto back = load_key_pair(path);
  EXPECT_EQ(back.public_key, kp.public_key);
  EXPECT_EQ(back.secret_key, kp.secret_key);
  EXPECT_EQ(load_public_key(path), kp.public_key);
}

TEST(Keys, RefusesToOverwriteWithoutForce) {
  const auto path = temp_path("once.key");
  write_private_file(path, "a", false);
  EXPECT_THROW(write_private_file(path, "b", false), IoError);
  write_private_file(path, "c", true);
  std::ifstream in(path);
  std::string s;
  in >> s;
  EXPECT_EQ(s, "c");
}

TEST(Keys, SecretFileOpenToOthersIsRefused) {
  const auto path = temp_path("open.key");
  write_private_file(path, format_key_pair(generate_key_pair(), ""), false);
  ::chmod(path.c_str(), 0644);
  try {
    load_key_pair(path);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("chmod 600"), std::string::npos) << e.what();
  }
}

TEST(Keys, MissingKeyFileNamesPathAndTheCommandThatMakesOne) {
  try {
    load_key_pair("/nonexistent/server.key");
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("/nonexistent/server.key"), std::string::npos) << m;
    EXPECT_NE(m.find("cutlayer-keygen"), std::string::npos) << m;
  }
}

TEST(AllowList, ParsesNamesAndKeys) {
  const auto a = generate_key_pair(), b = generate_key_pair();
  auto list = AllowList::parse("# comment\nalice " + a.public_key + "\n\nbob " + b.public_key +
                                   "  # trailing\n",
                               "allow.txt");
  EXPECT_EQ(list.size(), 2u);
  ASSERT_NE(list.find(a.public_key), nullptr);
  EXPECT_EQ(*list.find(a.public_key), "alice");
  EXPECT_EQ(list.find(generate_key_pair().public_key), nullptr);
}

TEST(AllowList, KeysContainingHashAreNotComments) {
  CurveKeyPair k = generate_key_pair();
  while (k.public_key.find('#') == std::string::npos) k = generate_key_pair();  // '#' is Z85
  auto list = AllowList::parse("alice " + k.public_key + " # the comment\n", "allow.txt");
  ASSERT_NE(list.find(k.public_key), nullptr);
}

TEST(AllowList, BadLinesNameFileAndLine) {
  const auto a = generate_key_pair();
  try {
    AllowList::parse("alice " + a.public_key + "\nbob not-a-key\n", "allow.txt");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("allow.txt:2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(AllowList::parse("alice " + a.public_key + "\ncarol " + a.public_key + "\n", "x"),
               ConfigError);
  EXPECT_THROW(AllowList::parse("alice\n", "x"), ConfigError);
}

}  // namespace
}  // namespace cutlayer::transport
