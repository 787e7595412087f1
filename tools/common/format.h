// Human-readable formatting shared by the tools: sizes, durations, namespace ids, aligned tables.
// Thread safety: pure functions; a TextTable is a plain value.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tierkv/layout.h"
#include "tierkv/status.h"

namespace tierkv::tools {

// Binary units with one decimal where it matters: "512 B", "64 KiB", "1.5 GiB".
std::string human_size(uint64_t bytes);
// "3d 4h", "2h 05m", "4m 07s", "12.3s", "850ms".
std::string human_duration_ms(uint64_t ms);
// "12,345,678": easier to read at a glance than a run of digits.
std::string group_thousands(uint64_t v);
// "87.5%", or "-" when there is nothing to divide by.
std::string percent(uint64_t part, uint64_t whole);

// A namespace id as the tools print it: 16 hex digits.
std::string namespace_hex(NamespaceId id);
// Parses "0123abcd..." or "0x0123abcd..." (1 to 16 hex digits).
Result<NamespaceId> parse_namespace_id(std::string_view text);

// Non-printable bytes of a user-chosen name (tenant, salt) shown as \xNN so a terminal shows the
// name as it is and nothing in it can move the cursor; "" shows as "-".
std::string printable(std::string_view s);

// Columns padded to the widest cell. Columns marked numeric are right-aligned.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header, std::vector<bool> numeric = {});
  void add_row(std::vector<std::string> cells);
  // Rows joined with '\n', each ending in one; columns separated by two spaces, no trailing
  // blanks. Each line starts with `indent`; the header row is left out if !with_header.
  [[nodiscard]] std::string render(bool with_header = true, std::string_view indent = {}) const;

 private:
  std::vector<std::vector<std::string>> rows_;  // rows_[0] is the header
  std::vector<bool> numeric_;
};

}  // namespace tierkv::tools
