// Serialization of strings and vectors whose length a peer controls. cereal's own loaders
// allocate whatever length the input claims; these check the length against a cap first.
#pragma once

#include <cereal/cereal.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "cutlayer/error.h"

namespace cutlayer::wire {

// Cap for each string inside a bounded vector of strings.
constexpr std::size_t kMaxItemChars = 4096;

template <class T>
struct Bounded {
  T& value;
  std::size_t max;
  const char* what;

  template <class Archive>
  void save(Archive& ar) const {
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(value.size())));
    save_items(ar);
  }
  template <class Archive>
  void load(Archive& ar) {
    cereal::size_type n = 0;
    ar(cereal::make_size_tag(n));
    if (n > max)
      throw ProtocolError(std::string(what) + ": declared length " + std::to_string(n) +
                          " exceeds the cap of " + std::to_string(max));
    value.resize(static_cast<std::size_t>(n));
    load_items(ar);
  }

 private:
  using Item = typename T::value_type;
  template <class Archive>
  void save_items(Archive& ar) const {
    if constexpr (std::is_arithmetic_v<Item>) {
      ar(cereal::binary_data(value.data(), value.size() * sizeof(Item)));
    } else if constexpr (std::is_same_v<Item, std::string>) {
      for (auto& v : value) ar(Bounded<std::string>{v, kMaxItemChars, what});
    } else {
      for (const auto& v : value) ar(v);
    }
  }
  template <class Archive>
  void load_items(Archive& ar) {
    if constexpr (std::is_arithmetic_v<Item>) {
      ar(cereal::binary_data(value.data(), value.size() * sizeof(Item)));
    } else if constexpr (std::is_same_v<Item, std::string>) {
      for (auto& v : value) ar(Bounded<std::string>{v, kMaxItemChars, what});
    } else {
      for (auto& v : value) ar(v);
    }
  }
};

// A bool on the wire: one byte, 0 or 1. cereal loads a bool as the peer's raw byte, and any
// other value makes an invalid bool (undefined behaviour once read): refused here.
struct Flag {
  bool& value;
  const char* what;

  template <class Archive>
  void save(Archive& ar) const {
    ar(static_cast<std::uint8_t>(value ? 1 : 0));
  }
  template <class Archive>
  void load(Archive& ar) {
    std::uint8_t byte = 0;
    ar(byte);
    if (byte > 1)
      throw ProtocolError(std::string(what) + ": a flag byte must be 0 or 1, got " +
                          std::to_string(byte));
    value = byte == 1;
  }
};

// ar(flag(train, "Activations.train"))
inline Flag flag(bool& value, const char* what) { return Flag{value, what}; }
inline Flag flag(const bool& value, const char* what) {
  return Flag{const_cast<bool&>(value), what};
}

// An enum on the wire as its underlying integer, refused past its last enumerator (a value
// outside the enumeration is never seen by a switch).
template <class E>
struct EnumIn {
  E& value;
  E last;
  const char* what;
  using U = std::underlying_type_t<E>;

  template <class Archive>
  void save(Archive& ar) const {
    ar(static_cast<U>(value));
  }
  template <class Archive>
  void load(Archive& ar) {
    U raw{};
    ar(raw);
    if (static_cast<long long>(raw) < 0 || raw > static_cast<U>(last))
      throw ProtocolError(std::string(what) + ": " + std::to_string(+raw) + " is not one of 0.." +
                          std::to_string(+static_cast<U>(last)));
    value = static_cast<E>(raw);
  }
};

// ar(enum_in(kfac, KfacContent::kDecompositions, "Update.kfac"))
template <class E>
EnumIn<E> enum_in(E& value, E last, const char* what) {
  return EnumIn<E>{value, last, what};
}
template <class E>
EnumIn<E> enum_in(const E& value, E last, const char* what) {
  return EnumIn<E>{const_cast<E&>(value), last, what};
}

// ar(bounded(name, 256, "Join.client_name"))
template <class T>
Bounded<T> bounded(T& value, std::size_t max, const char* what) {
  return Bounded<T>{value, max, what};
}
template <class T>
Bounded<T> bounded(const T& value, std::size_t max, const char* what) {
  return Bounded<T>{const_cast<T&>(value), max, what};
}

}  // namespace cutlayer::wire
