// A minimal JSON reader for tests that check the tools' --json output: parses one document
// strictly (RFC 8259; trailing text is an error) into a tree of JsonValue. Numbers are doubles,
// exact for the integers tests compare (< 2^53). Not for production use: no streaming, recursion
// depth bounded only by the document. Thread safety: plain values.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tierkv::testing {

class JsonValue {
 public:
  using Array = std::vector<JsonValue>;
  using Object = std::map<std::string, JsonValue>;

  JsonValue() = default;  // null
  explicit JsonValue(bool b) : v_(b) {}
  explicit JsonValue(double d) : v_(d) {}
  explicit JsonValue(std::string s) : v_(std::move(s)) {}
  explicit JsonValue(Array a) : v_(std::move(a)) {}
  explicit JsonValue(Object o) : v_(std::move(o)) {}

  bool is_null() const { return std::holds_alternative<std::monostate>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_number() const { return std::holds_alternative<double>(v_); }
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_array() const { return std::holds_alternative<Array>(v_); }
  bool is_object() const { return std::holds_alternative<Object>(v_); }

  // Accessors throw std::bad_variant_access on a type mismatch, which GoogleTest reports.
  bool as_bool() const { return std::get<bool>(v_); }
  double as_number() const { return std::get<double>(v_); }
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const Array& as_array() const { return std::get<Array>(v_); }
  const Object& as_object() const { return std::get<Object>(v_); }

  bool has(const std::string& key) const { return is_object() && as_object().count(key) != 0; }
  // The member `key` of an object; throws std::out_of_range if absent.
  const JsonValue& operator[](const std::string& key) const { return as_object().at(key); }

 private:
  std::variant<std::monostate, bool, double, std::string, Array, Object> v_;
};

// The parsed document, or nullopt with *error saying where and what went wrong.
std::optional<JsonValue> parse_json(std::string_view text, std::string* error = nullptr);

}  // namespace tierkv::testing
