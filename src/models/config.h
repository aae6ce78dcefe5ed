#pragma once
// A model's constructor arguments as save_checkpoint wrote them (JSON), read with the field named
// in every error.

#include <array>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "xattn/error.h"

namespace xattn::models {

template <typename T>
inline constexpr bool kIsArray = false;
template <typename E, size_t N>
inline constexpr bool kIsArray<std::array<E, N>> = true;

class Config {
 public:
  explicit Config(const std::string& json_text) {
    try {
      json_ = nlohmann::json::parse(json_text);
    } catch (const nlohmann::json::exception& e) {
      throw Error(std::string("xattn.config: not valid JSON (") + e.what() + ")");
    }
    if (!json_.is_object()) throw Error("xattn.config: expected a JSON object");
  }

  bool has(const char* key) const { return json_.contains(key) && !json_[key].is_null(); }

  // The field as T (int64_t, double, bool, std::string, std::array or std::vector of those).
  template <typename T>
  T get(const char* key) const {
    if (!json_.contains(key)) throw Error(std::string("xattn.config: missing '") + key + "'");
    const nlohmann::json& field = json_[key];
    if constexpr (kIsArray<T>)
      if (!field.is_array() || field.size() != std::tuple_size_v<T>)
        throw Error(std::string("xattn.config: '") + key + "' must be a list of " +
                    std::to_string(std::tuple_size_v<T>) + ", got " + field.dump());
    try {
      return field.get<T>();
    } catch (const nlohmann::json::exception&) {
      throw Error(std::string("xattn.config: '") + key + "' has the wrong type or length: " +
                  field.dump());
    }
  }
  template <typename T>
  T get(const char* key, T fallback) const {
    return has(key) ? get<T>(key) : fallback;
  }

 private:
  nlohmann::json json_;
};

}  // namespace xattn::models
