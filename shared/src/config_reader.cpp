#include "cutlayer/config/reader.h"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cutlayer/error.h"

namespace cutlayer::config {

struct Document::Impl {
  rapidjson::Document json;
};

namespace {

const rapidjson::Value* as_value(const void* v) { return static_cast<const rapidjson::Value*>(v); }

std::string describe(const rapidjson::Value& v) {
  if (v.IsString()) return std::string("\"") + v.GetString() + "\"";
  if (v.IsBool()) return v.GetBool() ? "true" : "false";
  if (v.IsNull()) return "null";
  if (v.IsInt64()) return std::to_string(v.GetInt64());
  if (v.IsNumber()) {
    std::ostringstream s;
    s << v.GetDouble();
    return s.str();
  }
  if (v.IsArray()) return "an array";
  return "an object";
}

std::string fmt_double(double d) {
  std::ostringstream s;
  s << d;
  return s.str();
}

}  // namespace

Document::~Document() = default;

std::shared_ptr<Document> Document::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw IoError("cannot read config file '" + path + "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path);
}

std::shared_ptr<Document> Document::parse(const std::string& text, const std::string& source) {
  std::shared_ptr<Document> doc(new Document());
  doc->impl_ = std::make_unique<Impl>();
  doc->source_ = source;
  rapidjson::ParseResult ok = doc->impl_->json.Parse(text.c_str(), text.size());
  if (!ok) {
    // Turn the byte offset into a line number for the reader.
    const std::size_t off = std::min<std::size_t>(ok.Offset(), text.size());
    const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<long>(off), '\n');
    throw ConfigError(source + ":" + std::to_string(line) + ": not valid JSON: " +
                      rapidjson::GetParseError_En(ok.Code()));
  }
  if (!doc->impl_->json.IsObject())
    throw ConfigError(source + ": the top level must be a JSON object { ... }");
  return doc;
}

Object Document::root() const { return Object(shared_from_this(), &impl_->json, ""); }

std::string Document::directory() const {
  const auto slash = source_.rfind('/');
  return slash == std::string::npos ? std::string(".") : source_.substr(0, slash);
}

std::string Document::resolve(const std::string& path) const {
  if (path.empty() || path[0] == '/') return path;
  return directory() + "/" + path;
}

Object::Object(std::shared_ptr<const Document> doc, const void* value, std::string path)
    : doc_(std::move(doc)), value_(value), path_(std::move(path)) {}

const std::string& Object::file() const { return doc_->source(); }

void Object::fail(const char* field, const std::string& problem) const {
  throw ConfigError(doc_->source() + ": field `" + path_ + field + "` " + problem);
}

const void* Object::member(const char* field) {
  seen_.insert(field);
  if (value_ == nullptr) return nullptr;
  const auto& obj = *as_value(value_);
  const auto it = obj.FindMember(field);
  return it == obj.MemberEnd() ? nullptr : &it->value;
}

bool Object::has(const char* field) const {
  return value_ != nullptr && as_value(value_)->HasMember(field);
}

bool Object::is_object(const char* field) const {
  return has(field) && as_value(value_)->FindMember(field)->value.IsObject();
}

std::string Object::resolve(const std::string& path) const { return doc_->resolve(path); }

void Object::get(const char* field, std::string& out) {
  const auto* v = as_value(member(field));
  if (v == nullptr) return;
  if (!v->IsString()) fail(field, "must be a string, got " + describe(*v));
  out = v->GetString();
}

void Object::get(const char* field, bool& out) {
  const auto* v = as_value(member(field));
  if (v == nullptr) return;
  if (!v->IsBool()) fail(field, "must be true or false, got " + describe(*v));
  out = v->GetBool();
}

void Object::get(const char* field, double& out, double min, double max) {
  const auto* v = as_value(member(field));
  if (v == nullptr) return;
  if (!v->IsNumber()) fail(field, "must be a number, got " + describe(*v));
  const double d = v->GetDouble();
  if (!std::isfinite(d) || d < min || d > max)
    fail(field, "must be in [" + fmt_double(min) + ", " + fmt_double(max) + "], got " + describe(*v));
  out = d;
}

void Object::get(const char* field, std::int64_t& out, std::int64_t min, std::int64_t max) {
  const auto* v = as_value(member(field));
  if (v == nullptr) return;
  if (!v->IsInt64()) fail(field, "must be an integer, got " + describe(*v));
  const std::int64_t i = v->GetInt64();
  if (i < min || i > max)
    fail(field, "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " +
                    std::to_string(i));
  out = i;
}

void Object::get_choice(const char* field, std::string& out, const std::vector<std::string>& choices) {
  std::string v = out;
  get(field, v);
  for (const auto& c : choices)
    if (c == v) {
      out = v;
      return;
    }
  std::string list;
  for (const auto& c : choices) list += (list.empty() ? "" : "|") + c;
  fail(field, "must be one of " + list + ", got \"" + v + "\"");
}

void Object::get(const char* field, std::vector<std::int64_t>& out) {
  const auto* v = as_value(member(field));
  if (v == nullptr) return;
  if (!v->IsArray()) fail(field, "must be an array of integers, got " + describe(*v));
  std::vector<std::int64_t> r;
  for (const auto& e : v->GetArray()) {
    if (!e.IsInt64()) fail(field, "must be an array of integers, has " + describe(e));
    r.push_back(e.GetInt64());
  }
  out = std::move(r);
}

Object Object::child(const char* field) {
  const auto* v = as_value(member(field));
  if (v != nullptr && !v->IsObject()) fail(field, "must be an object { ... }, got " + describe(*v));
  return Object(doc_, v, path_ + field + ".");
}

void Object::finish() const {
  if (value_ == nullptr) return;
  for (const auto& m : as_value(value_)->GetObject()) {
    const std::string name = m.name.GetString();
    if (seen_.count(name) == 0) {
      std::string known;
      for (const auto& s : seen_) known += (known.empty() ? "" : ", ") + s;
      throw ConfigError(doc_->source() + ": unknown field `" + path_ + name + "` (known here: " +
                        known + ")");
    }
  }
}

}  // namespace cutlayer::config
