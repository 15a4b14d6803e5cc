#include "cutlayer/report/json.h"

#include <fmt/format.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>

namespace cutlayer::report {

class Json::Writer {
 public:
  void object(const Json& j) {
    out_.StartObject();
    for (const auto& [key, value] : j.members_) {
      out_.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
      std::visit([this](const auto& v) { this->value(v); }, value);
    }
    out_.EndObject();
  }
  std::string text() const { return std::string(buffer_.GetString(), buffer_.GetSize()); }

 private:
  void value(std::monostate) { out_.Null(); }
  void value(bool v) { out_.Bool(v); }
  void value(std::int64_t v) { out_.Int64(v); }
  void value(std::uint64_t v) { out_.Uint64(v); }
  void value(double v) {
    if (std::isfinite(v))
      out_.Double(v);  // Grisu2: the shortest text that reads back exactly
    else
      out_.Null();
  }
  void value(const Fixed& f) { number(f.v, fmt::format("{:.{}f}", f.v, f.decimals)); }
  void value(const Significant& s) { number(s.v, fmt::format("{:.{}g}", s.v, s.digits)); }
  void value(const std::string& v) {
    out_.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
  }
  void value(const std::shared_ptr<const Json>& nested) { object(*nested); }
  template <class T>
  void value(const std::vector<T>& values) {
    out_.StartArray();
    for (const auto& v : values) value(v);
    out_.EndArray();
  }
  // A number fmt rounded (finite only: fmt's text for those is valid JSON).
  void number(double v, const std::string& text) {
    if (!std::isfinite(v)) {
      out_.Null();
      return;
    }
    out_.RawValue(text.data(), text.size(), rapidjson::kNumberType);
  }

  rapidjson::StringBuffer buffer_;
  rapidjson::Writer<rapidjson::StringBuffer> out_{buffer_};
};

Json& Json::put(std::string_view key, Value v) {
  members_.emplace_back(std::string(key), std::move(v));
  return *this;
}

Json& Json::add(std::string_view key, bool v) { return put(key, v); }
Json& Json::add(std::string_view key, int v) { return put(key, std::int64_t{v}); }
Json& Json::add(std::string_view key, std::int64_t v) { return put(key, v); }
Json& Json::add(std::string_view key, std::uint64_t v) { return put(key, v); }
Json& Json::add(std::string_view key, double v, int decimals) {
  if (decimals < 0) return put(key, v);
  return put(key, Fixed{v, decimals});
}
Json& Json::add(std::string_view key, std::string_view v) { return put(key, std::string(v)); }
Json& Json::add(std::string_view key, const char* v) {
  if (!v) return put(key, std::monostate{});
  return put(key, std::string(v));
}
Json& Json::add(std::string_view key, const Json& nested) {
  return put(key, std::make_shared<const Json>(nested));
}
Json& Json::add(std::string_view key, const std::vector<std::int64_t>& values) {
  return put(key, values);
}
Json& Json::add(std::string_view key, const std::vector<std::uint64_t>& values) {
  return put(key, values);
}
Json& Json::add(std::string_view key, const std::vector<double>& values) {
  return put(key, values);
}
Json& Json::add_significant(std::string_view key, double v, int digits) {
  return put(key, Significant{v, digits});
}
Json& Json::add_null(std::string_view key) { return put(key, std::monostate{}); }

std::string Json::str() const {
  Writer w;
  w.object(*this);
  return w.text();
}

}  // namespace cutlayer::report
