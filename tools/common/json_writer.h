// JsonWriter: builds one JSON document into a string, for the tools' --json output.
//
// The tools print exactly one JSON object on stdout when asked for --json, so scripts can parse it.
// This writer is deliberately tiny (no external JSON library): it tracks nesting to place commas,
// escapes strings per RFC 8259 and replaces bytes that are not valid UTF-8 with U+FFFD, so the
// output is always valid JSON whatever a tenant name holds. Misuse (a value where a key is due,
// unbalanced end_*) is a programming error and is caught by assertions in debug builds.
// Thread safety: none; one writer per document.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tierkv::tools {

class JsonWriter {
 public:
  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  // Inside an object: the next value's key.
  JsonWriter& key(std::string_view k);

  JsonWriter& value(std::string_view v);
  JsonWriter& value(const char* v) { return value(std::string_view(v)); }
  JsonWriter& value(const std::string& v) { return value(std::string_view(v)); }
  JsonWriter& value(bool v);
  JsonWriter& value(int64_t v);
  JsonWriter& value(uint64_t v);
  JsonWriter& value(int v) { return value(static_cast<int64_t>(v)); }
  JsonWriter& value(unsigned v) { return value(static_cast<uint64_t>(v)); }
  // Shortest text that reads back to the same double; NaN and infinities become null (JSON has
  // no spelling for them).
  JsonWriter& value(double v);
  JsonWriter& null();

  // key(k).value(v) in one call.
  template <typename T>
  JsonWriter& field(std::string_view k, const T& v) {
    key(k);
    return value(v);
  }

  // The document so far; complete once every begin_* has its end_*.
  [[nodiscard]] const std::string& str() const { return out_; }
  [[nodiscard]] bool complete() const { return stack_.empty() && !out_.empty(); }

 private:
  enum class Scope : uint8_t { kObject, kArray };
  // Writes the comma (or nothing) that must precede a new element at this point.
  void before_value();

  std::string out_;
  std::vector<Scope> stack_;
  bool first_ = true;       // no element yet in the innermost scope
  bool after_key_ = false;  // a key was written and awaits its value
};

// Appends `s` as a quoted JSON string.
void append_json_string(std::string& out, std::string_view s);

}  // namespace tierkv::tools
