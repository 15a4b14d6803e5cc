// Reading JSON configuration (cereal's JSON backend, RapidJSON) into option structs.
// Every error names the file, the field and what would be accepted; unknown fields are
// refused, so a typo never silently falls back to a default.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace cutlayer::config {

class Document;

// One JSON object within a config file.
class Object {
 public:
  // Each get leaves `out` untouched when the field is absent (the default stands).
  void get(const char* field, std::string& out);
  void get(const char* field, bool& out);
  void get(const char* field, double& out, double min, double max);
  void get(const char* field, std::int64_t& out, std::int64_t min, std::int64_t max);
  template <class Int>
  void get_int(const char* field, Int& out, std::int64_t min, std::int64_t max) {
    std::int64_t v = static_cast<std::int64_t>(out);
    get(field, v, min, max);
    out = static_cast<Int>(v);
  }
  // One of `choices`.
  void get_choice(const char* field, std::string& out, const std::vector<std::string>& choices);
  void get(const char* field, std::vector<std::int64_t>& out);

  bool has(const char* field) const;
  // Whether `field` is present and a JSON object (a field that takes a name or an object).
  bool is_object(const char* field) const;
  // A path as written in this file, made absolute against the file's directory.
  std::string resolve(const std::string& path) const;
  // Accepts `field` without reading it (a section meant for another program).
  void ignore(const char* field) { seen_.insert(field); }
  // A nested object; an absent field gives an empty object (all defaults).
  Object child(const char* field);
  // Throws ConfigError naming the first field that no get()/child() asked for.
  void finish() const;

  // Builds "<file>: field `<path>` <problem>".
  [[noreturn]] void fail(const char* field, const std::string& problem) const;
  const std::string& file() const;

 private:
  friend class Document;
  Object(std::shared_ptr<const Document> doc, const void* value, std::string path);
  const void* member(const char* field);
  std::shared_ptr<const Document> doc_;
  const void* value_;  // rapidjson::Value*, or nullptr for an absent object
  std::string path_;
  std::set<std::string> seen_;
};

class Document : public std::enable_shared_from_this<Document> {
 public:
  // Throws IoError (missing/unreadable file) or ConfigError (not JSON, not an object).
  static std::shared_ptr<Document> load(const std::string& path);
  static std::shared_ptr<Document> parse(const std::string& text, const std::string& source);
  Object root() const;
  const std::string& source() const { return source_; }
  // The directory of the file, for resolving relative paths in it ("" for text).
  std::string directory() const;
  // `path` as written in the file, made absolute against the file's directory.
  std::string resolve(const std::string& path) const;
  ~Document();

 private:
  Document() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string source_;
};

}  // namespace cutlayer::config
