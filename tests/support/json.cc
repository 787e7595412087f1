#include "support/json.h"

#include <cstdlib>

// GCC 12 at -O2 reports the destruction of a moved-from std::variant<..., std::string, ...>
// temporary as "may be used uninitialized" (a known false positive of its variant inlining).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tierkv::testing {

namespace {

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  std::optional<JsonValue> document(std::string* error) {
    auto v = value();
    if (v) {
      skip_ws();
      if (i_ != s_.size()) v = fail("trailing text after the document");
    }
    if (!v && error != nullptr) *error = "at byte " + std::to_string(i_) + ": " + error_;
    return v;
  }

 private:
  std::optional<JsonValue> fail(std::string what) {
    if (error_.empty()) error_ = std::move(what);
    return std::nullopt;
  }

  void skip_ws() {
    while (i_ < s_.size() &&
           (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) {
      ++i_;
    }
  }

  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }

  std::optional<JsonValue> value() {
    skip_ws();
    if (i_ == s_.size()) return fail("unexpected end of input");
    const char c = s_[i_];
    if (c == '{') return object();
    if (c == '[') return array();
    if (c == '"') {
      auto str = string();
      if (!str) return std::nullopt;
      return JsonValue(std::move(*str));
    }
    if (literal("true")) return JsonValue(true);
    if (literal("false")) return JsonValue(false);
    if (literal("null")) return JsonValue();
    return number();
  }

  std::optional<JsonValue> number() {
    const size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    const auto digits = [&] {
      const size_t d = i_;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      return i_ - d;
    };
    const size_t int_start = i_;
    if (digits() == 0) return fail("expected a value");
    if (s_[int_start] == '0' && i_ - int_start > 1) return fail("leading zero in a number");
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (digits() == 0) return fail("expected digits after '.'");
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (digits() == 0) return fail("expected digits in the exponent");
    }
    const std::string text(s_.substr(start, i_ - start));
    return JsonValue(std::strtod(text.c_str(), nullptr));
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  std::optional<uint32_t> hex4() {
    if (i_ + 4 > s_.size()) return std::nullopt;
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return std::nullopt;
      }
    }
    return v;
  }

  std::optional<std::string> string() {
    ++i_;  // opening quote
    std::string out;
    while (true) {
      if (i_ >= s_.size()) {
        fail("unterminated string");
        return std::nullopt;
      }
      const char c = s_[i_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) {
        fail("control character in a string");
        return std::nullopt;
      }
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (i_ >= s_.size()) {
        fail("unterminated escape");
        return std::nullopt;
      }
      const char e = s_[i_++];
      switch (e) {
        case '"':
          out.push_back('"');
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '/':
          out.push_back('/');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          auto cp = hex4();
          if (!cp) {
            fail("bad \\u escape");
            return std::nullopt;
          }
          if (*cp >= 0xD800 && *cp <= 0xDBFF && literal("\\u")) {
            auto lo = hex4();
            if (!lo || *lo < 0xDC00 || *lo > 0xDFFF) {
              fail("bad surrogate pair");
              return std::nullopt;
            }
            *cp = 0x10000 + ((*cp - 0xD800) << 10) + (*lo - 0xDC00);
          }
          append_utf8(out, *cp);
          break;
        }
        default:
          fail(std::string("bad escape '\\") + e + "'");
          return std::nullopt;
      }
    }
  }

  std::optional<JsonValue> array() {
    ++i_;
    JsonValue::Array a;
    skip_ws();
    if (i_ < s_.size() && s_[i_] == ']') {
      ++i_;
      return JsonValue(std::move(a));
    }
    while (true) {
      auto v = value();
      if (!v) return std::nullopt;
      a.push_back(std::move(*v));
      skip_ws();
      if (i_ < s_.size() && s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (i_ < s_.size() && s_[i_] == ']') {
        ++i_;
        return JsonValue(std::move(a));
      }
      return fail("expected ',' or ']' in an array");
    }
  }

  std::optional<JsonValue> object() {
    ++i_;
    JsonValue::Object o;
    skip_ws();
    if (i_ < s_.size() && s_[i_] == '}') {
      ++i_;
      return JsonValue(std::move(o));
    }
    while (true) {
      skip_ws();
      if (i_ >= s_.size() || s_[i_] != '"') return fail("expected a string key");
      auto key = string();
      if (!key) return std::nullopt;
      skip_ws();
      if (i_ >= s_.size() || s_[i_] != ':') return fail("expected ':' after a key");
      ++i_;
      auto v = value();
      if (!v) return std::nullopt;
      if (o.count(*key) != 0) return fail("duplicate key \"" + *key + "\"");
      o.emplace(std::move(*key), std::move(*v));
      skip_ws();
      if (i_ < s_.size() && s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (i_ < s_.size() && s_[i_] == '}') {
        ++i_;
        return JsonValue(std::move(o));
      }
      return fail("expected ',' or '}' in an object");
    }
  }

  std::string_view s_;
  size_t i_ = 0;
  std::string error_;
};

}  // namespace

std::optional<JsonValue> parse_json(std::string_view text, std::string* error) {
  return Parser(text).document(error);
}

}  // namespace tierkv::testing
