#include "cutlayer/transport/keys.h"

#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "cutlayer/crypto/crypto.h"
#include "cutlayer/error.h"
#include "cutlayer/transport/allow_list.h"

namespace cutlayer::transport {
namespace {

std::string temp_path(const std::string& name) {
  const std::string p = ::testing::TempDir() + "/" + name;
  ::unlink(p.c_str());
  return p;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// A key pair file with the given mode (chmod after writing, so the umask plays no part).
std::string key_file_with_mode(const std::string& name, mode_t mode) {
  const auto path = temp_path(name);
  write_private_file(path, format_key_pair(generate_key_pair(), ""), false);
  EXPECT_EQ(::chmod(path.c_str(), mode), 0);
  return path;
}

std::string allow_list_with_mode(const std::string& name, mode_t mode) {
  const auto path = temp_path(name);
  write_private_file(path, "alice " + generate_key_pair().public_key + "\n", false);
  EXPECT_EQ(::chmod(path.c_str(), mode), 0);
  return path;
}

// The ConfigError message of `f`, or "" (and a test failure) when it does not throw one.
template <class F>
std::string config_error(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a ConfigError";
  return "";
}

TEST(Keys, GeneratedPairsAreZ85AndDistinct) {
  const auto a = generate_key_pair(), b = generate_key_pair();
  EXPECT_TRUE(is_z85_key(a.public_key));
  EXPECT_TRUE(is_z85_key(a.secret_key));
  EXPECT_NE(a.public_key, b.public_key);
  EXPECT_FALSE(is_z85_key("too-short"));
}

// libzmq decodes a group worth more than 2^32 - 1 by wrapping: such a text names the same
// bytes as the canonical one, and listed on the allow-list it would never match the peer.
TEST(Keys, NonCanonicalZ85IsRefused) {
  const auto a = generate_key_pair();
  std::string wrapped = a.public_key;
  wrapped.replace(0, 5, "#####");  // 85^5 - 1 > 2^32 - 1
  EXPECT_FALSE(is_z85_key(wrapped));
  std::string pad = a.public_key;
  pad[39] = '~';  // not in the alphabet
  EXPECT_FALSE(is_z85_key(pad));
  EXPECT_THROW(AllowList::parse("alice " + wrapped + "\n", "allow-list.txt"), ConfigError);
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
  const auto path = key_file_with_mode("open.key", 0644);
  const auto m = config_error([&] { load_key_pair(path); });
  EXPECT_NE(m.find("chmod 600 " + path), std::string::npos) << m;
}

TEST(Keys, SecretFileReadableOrWritableByGroupOrOtherIsRefusedWithTheFix) {
  for (const mode_t mode : {0640, 0604, 0660, 0620, 0602, 0610, 0601, 0644}) {
    char name[32];
    std::snprintf(name, sizeof name, "mode%04o.key", static_cast<unsigned>(mode));
    const auto path = key_file_with_mode(name, mode);
    const auto m = config_error([&] { load_key_pair(path); });
    char mode_text[8];
    std::snprintf(mode_text, sizeof mode_text, "%04o", static_cast<unsigned>(mode));
    EXPECT_NE(m.find(path + ":"), std::string::npos) << m;             // the file
    EXPECT_NE(m.find(mode_text), std::string::npos) << m;              // what is wrong
    EXPECT_NE(m.find("chmod 600 " + path), std::string::npos) << m;    // the fix
  }
}

TEST(Keys, SecretFileOwnerOnlyIsAccepted) {
  for (const mode_t mode : {0600, 0400}) {
    const auto path = key_file_with_mode("owner-only.key", mode);
    EXPECT_NO_THROW(load_key_pair(path)) << std::oct << mode;
  }
}

TEST(Keys, SymlinkedKeyFileIsFollowedAndItsTargetChecked) {
  // Keys are often links into a secrets mount: the link is followed (as ssh does) and
  // the file it points at is what the check sees (fstat of the opened descriptor).
  const auto target = key_file_with_mode("target.key", 0600);
  const auto link = temp_path("link.key");
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  EXPECT_NO_THROW(load_key_pair(link));
  ASSERT_EQ(::chmod(target.c_str(), 0644), 0);  // the link itself stays 0777
  const auto m = config_error([&] { load_key_pair(link); });
  EXPECT_NE(m.find("chmod 600 " + link), std::string::npos) << m;
}

TEST(Keys, KeyFileOwnedByAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown a file to another user";
  const struct passwd* nobody = ::getpwnam("nobody");
  const uid_t other = nobody != nullptr ? nobody->pw_uid : 65534;
  const auto path = key_file_with_mode("others.key", 0600);
  ASSERT_EQ(::chown(path.c_str(), other, static_cast<gid_t>(-1)), 0) << std::strerror(errno);
  const auto m = config_error([&] { load_key_pair(path); });
  EXPECT_NE(m.find("owned by"), std::string::npos) << m;
  EXPECT_NE(m.find("chown "), std::string::npos) << m;
  EXPECT_NE(m.find(path), std::string::npos) << m;

  const auto list = allow_list_with_mode("others-allow.txt", 0644);
  ASSERT_EQ(::chown(list.c_str(), other, static_cast<gid_t>(-1)), 0) << std::strerror(errno);
  const auto m2 = config_error([&] { AllowList::load(list); });
  EXPECT_NE(m2.find("owned by"), std::string::npos) << m2;
}

TEST(Keys, KeyPathThatIsNotARegularFileIsRefused) {
  // A FIFO would block a plain open(); it is refused without hanging.
  const auto path = temp_path("fifo.key");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  const auto m = config_error([&] { load_key_pair(path); });
  EXPECT_NE(m.find("not a regular file"), std::string::npos) << m;
}

TEST(Keys, PinnedPublicKeyWritableByOthersIsRefused) {
  const auto kp = generate_key_pair();
  const auto path = temp_path("pinned.pub");
  write_public_file(path, "public-key = " + kp.public_key + "\n", false);
  EXPECT_EQ(load_public_key(path), kp.public_key);
  ASSERT_EQ(::chmod(path.c_str(), 0664), 0);
  const auto m = config_error([&] { load_public_key(path); });
  EXPECT_NE(m.find("chmod go-w " + path), std::string::npos) << m;
}

TEST(Keys, KeygenWritesPrivate0600AndPublic0644) {
  const mode_t old = ::umask(022);
  const auto key = temp_path("written.key"), pub = temp_path("written.pub");
  write_private_file(key, format_key_pair(generate_key_pair(), ""), false);
  write_public_file(pub, "x", false);
  ::umask(old);
  EXPECT_EQ(mode_of(key), 0600u);
  EXPECT_EQ(mode_of(pub), 0644u);
  struct stat st {};
  EXPECT_NE(::lstat((key + ".tmp").c_str(), &st), 0) << "temp file left behind";
}

TEST(Keys, KeygenNeverWritesThroughASymlinkPlantedAtItsTempPath) {
  // An attacker who can write the key directory plants <path>.tmp -> a file of theirs
  // (or a file they want clobbered): the key must not land there.
  const auto victim = temp_path("victim.txt");
  { std::ofstream(victim) << "precious\n"; }
  ASSERT_EQ(::chmod(victim.c_str(), 0644), 0);
  const auto path = temp_path("planted.key");
  const auto tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  ASSERT_EQ(::symlink(victim.c_str(), tmp.c_str()), 0);
  const auto secret = format_key_pair(generate_key_pair(), "");
  try {
    write_private_file(path, secret, false);
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("symbolic link"), std::string::npos) << e.what();
  }
  EXPECT_EQ(slurp(victim), "precious\n");
  EXPECT_EQ(mode_of(victim), 0644u);
  struct stat st {};
  EXPECT_NE(::lstat(path.c_str(), &st), 0) << "nothing may be written at the key path";
  ::unlink(tmp.c_str());

  // A dangling link: a plain O_CREAT would create its target.
  const auto nowhere = temp_path("created-through-link.txt");
  ASSERT_EQ(::symlink(nowhere.c_str(), tmp.c_str()), 0);
  EXPECT_THROW(write_private_file(path, secret, false), IoError);
  EXPECT_NE(::lstat(nowhere.c_str(), &st), 0) << "the link's target was created";
  ::unlink(tmp.c_str());
}

TEST(Keys, StaleTempFileFromAnInterruptedRunIsReplaced) {
  const auto path = temp_path("stale.key");
  const auto tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  { std::ofstream(tmp) << "half-written junk that is longer than the key file would be ......."
                          "......................................................................"
                          "......................................................................"
                          "......................................................................"; }
  ASSERT_EQ(::chmod(tmp.c_str(), 0666), 0);
  const auto kp = generate_key_pair();
  write_private_file(path, format_key_pair(kp, ""), false);
  EXPECT_EQ(mode_of(path), 0600u);  // a fresh file, not the 0666 one reused
  EXPECT_EQ(load_key_pair(path).secret_key, kp.secret_key);
  struct stat st {};
  EXPECT_NE(::lstat(tmp.c_str(), &st), 0);
}

TEST(Keys, ForceReplacesASymlinkedKeyPathItselfNotItsTarget) {
  const auto victim = temp_path("victim2.txt");
  { std::ofstream(victim) << "precious\n"; }
  const auto path = temp_path("link-at-path.key");
  ASSERT_EQ(::symlink(victim.c_str(), path.c_str()), 0);
  EXPECT_THROW(write_private_file(path, "a", false), IoError);  // exists (a link counts)
  write_private_file(path, "b", true);
  EXPECT_EQ(slurp(victim), "precious\n");
  EXPECT_EQ(slurp(path), "b");
  EXPECT_EQ(mode_of(path), 0600u);  // a regular file now
}

TEST(Keys, WipeZeroesTheWholeBuffer) {
  unsigned char raw[16];
  std::memset(raw, 0xAB, sizeof raw);
  crypto::wipe(raw, sizeof raw);
  for (unsigned char c : raw) EXPECT_EQ(c, 0);

  std::string s(100, 'x');
  const char* buf = s.data();
  const auto cap = s.capacity();
  s.resize(10);  // bytes 10..99 are still there
  crypto::wipe(s);
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.data(), buf);  // wiped in place, not reallocated
  EXPECT_EQ(s.capacity(), cap);
  s.resize(cap);
  EXPECT_EQ(s, std::string(cap, '\0'));

  crypto::Bytes b(64, 0xCD);
  crypto::wipe(b);
  EXPECT_TRUE(b.empty());
}

TEST(Keys, KeyPairCopiesAndMovesKeepTheirValues) {
  const auto a = generate_key_pair(), b = generate_key_pair();
  CurveKeyPair c = a;
  EXPECT_EQ(c.secret_key, a.secret_key);
  c = b;
  EXPECT_EQ(c.secret_key, b.secret_key);
  CurveKeyPair d = std::move(c);
  EXPECT_EQ(d.secret_key, b.secret_key);
  CurveKeyPair e = a;
  e = std::move(d);
  EXPECT_EQ(e.public_key, b.public_key);
  EXPECT_EQ(e.secret_key, b.secret_key);
  e = static_cast<CurveKeyPair&>(e);  // self-assignment keeps the key
  EXPECT_EQ(e.secret_key, b.secret_key);
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

TEST(AllowList, WritableByGroupOrOtherIsRefusedWithTheFix) {
  for (const mode_t mode : {0666, 0620, 0602, 0664}) {
    const auto path = allow_list_with_mode("allow-open.txt", mode);
    const auto m = config_error([&] { AllowList::load(path); });
    EXPECT_NE(m.find(path + ":"), std::string::npos) << m;
    EXPECT_NE(m.find("writable"), std::string::npos) << m;
    EXPECT_NE(m.find("chmod go-w " + path), std::string::npos) << m;
  }
}

TEST(AllowList, ReadableByOthersIsAccepted) {
  for (const mode_t mode : {0644, 0640, 0600, 0444}) {
    const auto path = allow_list_with_mode("allow-ok.txt", mode);
    EXPECT_EQ(AllowList::load(path).size(), 1u) << std::oct << mode;
  }
}

TEST(AllowList, MissingFileSaysHowToMakeOne) {
  try {
    AllowList::load("/nonexistent/allow-list.txt");
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("cutlayer-keygen"), std::string::npos) << e.what();
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
