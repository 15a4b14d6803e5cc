// What the config tests share: a config's text written to a temp file and loaded, and the
// check that a refusal names the file, the field and the reason.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "cutlayer/error.h"

namespace cutlayer::testing_config {

inline std::string write_temp(const std::string& text) {
  char path[] = "/tmp/cutlayer-config-XXXXXX";
  const int fd = ::mkstemp(path);
  EXPECT_GE(fd, 0);
  ::close(fd);
  std::ofstream(path) << text;
  return path;
}

// `load(path)` on `text` written to a temp file (removed after, whatever happens).
template <class Load>
auto load_text(const std::string& text, Load&& load) -> decltype(load(std::string())) {
  const auto path = write_temp(text);
  try {
    auto c = load(path);
    std::remove(path.c_str());
    return c;
  } catch (...) {
    std::remove(path.c_str());
    throw;
  }
}

struct Refusal {
  std::string path;     // the temp file the config was written to
  std::string message;  // ConfigError::what(), or "" when the config was accepted
};

// Loads `text` expecting a ConfigError; the message comes back for the caller to check.
template <class Load>
Refusal refusal_of(const std::string& text, Load&& load) {
  Refusal r{write_temp(text), ""};
  try {
    (void)load(r.path);
    ADD_FAILURE() << text << " was accepted";
  } catch (const ConfigError& e) {
    r.message = e.what();
  }
  std::remove(r.path.c_str());
  return r;
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The refusal names the file first, then the field (as "field `<path>`" or
// "unknown field `<path>`"), then the reason.
template <class Load>
void expect_refused(const std::string& text, const std::string& field, const std::string& reason, Load&& load) {
  SCOPED_TRACE(text);
  const auto r = refusal_of(text, load);
  if (r.message.empty()) return;  // refusal_of reported the acceptance
  EXPECT_EQ(r.message.rfind(r.path + ": ", 0), 0u) << "should start with the file: " << r.message;
  EXPECT_TRUE(contains(r.message, "field `" + field + "`")) << "should name `" << field << "`: " << r.message;
  EXPECT_TRUE(contains(r.message, reason)) << "should say \"" << reason << "\": " << r.message;
}

}  // namespace cutlayer::testing_config
