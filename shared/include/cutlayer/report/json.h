// One JSON object for a report line (metrics, summaries), written by RapidJSON: keys in
// the order added, strings escaped, non-finite numbers as null. The header keeps RapidJSON
// out of its callers; shared/src/json.cpp writes the text.
//
//   report::Json j;
//   j.add("step", step).add("loss", loss, 6).add("final", true);
//   metrics.write(j);  // {"step":450,"loss":0.512345,"final":true}
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace cutlayer::report {

namespace detail {
// Integer types other than bool and the character types (those go to their own overloads).
template <class T>
inline constexpr bool is_plain_int =
    std::is_integral_v<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, char> &&
    !std::is_same_v<T, signed char> && !std::is_same_v<T, unsigned char> &&
    !std::is_same_v<T, wchar_t> && !std::is_same_v<T, char16_t> && !std::is_same_v<T, char32_t>;
}  // namespace detail

// One JSON object; keys in the order added. Non-finite doubles are written as null.
class Json {
 public:
  Json& add(std::string_view key, bool v);
  Json& add(std::string_view key, int v);
  Json& add(std::string_view key, std::int64_t v);
  Json& add(std::string_view key, std::uint64_t v);
  // Any other integer type (long long, unsigned, std::size_t where it is not std::uint64_t, ...).
  template <class Int, std::enable_if_t<detail::is_plain_int<Int>, int> = 0>
  Json& add(std::string_view key, Int v) {
    if constexpr (std::is_signed_v<Int>)
      return add(key, static_cast<std::int64_t>(v));
    else
      return add(key, static_cast<std::uint64_t>(v));
  }
  // decimals >= 0: rounded to that many places (like {:.6f}); -1: shortest exact.
  Json& add(std::string_view key, double v, int decimals = -1);
  Json& add(std::string_view key, std::string_view v);  // escaped properly
  Json& add(std::string_view key, const char* v);       // a null pointer: null
  Json& add(std::string_view key, const std::string& v) { return add(key, std::string_view(v)); }
  Json& add(std::string_view key, const Json& nested);  // a nested object
  // Arrays of numbers.
  Json& add(std::string_view key, const std::vector<std::int64_t>& values);
  Json& add(std::string_view key, const std::vector<std::uint64_t>& values);
  Json& add(std::string_view key, const std::vector<double>& values);
  // Rounded to `digits` significant digits (like {:.9g}); non-finite as null.
  Json& add_significant(std::string_view key, double v, int digits);
  Json& add_null(std::string_view key);

  bool empty() const { return members_.empty(); }
  std::string str() const;  // compact, one line

 private:
  class Writer;  // shared/src/json.cpp, over rapidjson::Writer
  struct Fixed {
    double v;
    int decimals;
  };
  struct Significant {
    double v;
    int digits;
  };
  using Value =
      std::variant<std::monostate, bool, std::int64_t, std::uint64_t, double, Fixed, Significant,
                   std::string, std::shared_ptr<const Json>, std::vector<std::int64_t>,
                   std::vector<std::uint64_t>, std::vector<double>>;
  Json& put(std::string_view key, Value v);

  std::vector<std::pair<std::string, Value>> members_;
};

}  // namespace cutlayer::report
