#include "common/format.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

namespace tierkv::tools {

std::string human_size(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  auto v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024.0 && unit < 6) {
    v /= 1024.0;
    ++unit;
  }
  char buf[32];
  // One decimal unless it is .0, and none once the number is large enough that it adds nothing.
  if (v >= 100.0) {
    std::snprintf(buf, sizeof(buf), "%.0f %s", v, kUnits[unit]);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %s", v, kUnits[unit]);
    std::string s(buf);
    const size_t dot = s.find(".0 ");
    if (dot != std::string::npos) s.erase(dot, 2);
    return s;
  }
  return buf;
}

std::string human_duration_ms(uint64_t ms) {
  char buf[48];
  const uint64_t s = ms / 1000;
  if (ms < 1000) {
    std::snprintf(buf, sizeof(buf), "%" PRIu64 "ms", ms);
  } else if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%.1fs", static_cast<double>(ms) / 1000.0);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof(buf), "%" PRIu64 "m %02" PRIu64 "s", s / 60, s % 60);
  } else if (s < 86400) {
    std::snprintf(buf, sizeof(buf), "%" PRIu64 "h %02" PRIu64 "m", s / 3600, (s % 3600) / 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%" PRIu64 "d %" PRIu64 "h", s / 86400, (s % 86400) / 3600);
  }
  return buf;
}

std::string group_thousands(uint64_t v) {
  std::string digits = std::to_string(v);
  std::string out;
  out.reserve(digits.size() + digits.size() / 3);
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

std::string percent(uint64_t part, uint64_t whole) {
  if (whole == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f%%",
                100.0 * static_cast<double>(part) / static_cast<double>(whole));
  return buf;
}

std::string namespace_hex(NamespaceId id) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, id);
  return buf;
}

Result<NamespaceId> parse_namespace_id(std::string_view text) {
  std::string_view digits = text;
  if (digits.size() >= 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
    digits.remove_prefix(2);
  }
  if (digits.empty() || digits.size() > 16) {
    return Status::InvalidArgument("namespace id '" + std::string(text) +
                                   "' is not 1 to 16 hex digits (see tierkvctl ls)");
  }
  NamespaceId id = 0;
  for (const char c : digits) {
    int d = 0;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return Status::InvalidArgument("namespace id '" + std::string(text) +
                                     "' is not hexadecimal (see tierkvctl ls)");
    }
    id = (id << 4) | static_cast<NamespaceId>(d);
  }
  return id;
}

std::string printable(std::string_view s) {
  if (s.empty()) return "-";
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else {
      out.push_back(ch);
    }
  }
  return out;
}

TextTable::TextTable(std::vector<std::string> header, std::vector<bool> numeric)
    : numeric_(std::move(numeric)) {
  numeric_.resize(header.size(), false);
  rows_.push_back(std::move(header));
}

void TextTable::add_row(std::vector<std::string> cells) {
  cells.resize(rows_[0].size());
  rows_.push_back(std::move(cells));
}

namespace {

// Display width of a UTF-8 cell: count code points, not bytes, so "µs" lines up.
size_t display_width(const std::string& s) {
  return static_cast<size_t>(std::count_if(
      s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

}  // namespace

std::string TextTable::render(bool with_header, std::string_view indent) const {
  const size_t cols = rows_[0].size();
  std::vector<size_t> width(cols, 0);
  for (size_t r = with_header ? 0 : 1; r < rows_.size(); ++r) {
    const auto& row = rows_[r];
    for (size_t c = 0; c < cols; ++c) width[c] = std::max(width[c], display_width(row[c]));
  }
  std::string out;
  for (size_t r = with_header ? 0 : 1; r < rows_.size(); ++r) {
    const auto& row = rows_[r];
    std::string line(indent);
    for (size_t c = 0; c < cols; ++c) {
      const size_t pad = width[c] - display_width(row[c]);
      if (c > 0) line += "  ";
      if (numeric_[c]) line.append(pad, ' ');
      line += row[c];
      if (!numeric_[c]) line.append(pad, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out.push_back('\n');
  }
  return out;
}

}  // namespace tierkv::tools
