// BenchReport: the figures of one tierkv-bench run, with their targets, rendered as an aligned
// table for a person or as one JSON object for a script (--json).
//
// JSON shape: {"bench": NAME, <info fields>, <figures>, "targets": {FIGURE: {"op": ">=",
// "value": X, "pass": B}, ...}, "pass": B}. A figure is a number under a stable key (snake_case,
// unit in the name: "put_GBps_2MiB", "load_p50_us_64chunks"). Thread safety: a plain value.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace tierkv::bench {

enum class Unit { kGBps, kRatio, kMicros, kPerSecond, kCount };

class BenchReport {
 public:
  explicit BenchReport(std::string bench) : bench_(std::move(bench)) {}

  // Context shown above the table and as top-level JSON fields (daemon version, sizes, ...).
  void add_info(std::string key, std::string value);
  void add_info(std::string key, uint64_t value);
  void add_info(std::string key, bool value);

  // A measured figure; `label` is what the table calls it.
  void add_figure(std::string key, std::string label, double value, Unit unit);
  // The figure under `key` must be >= (at_least) or <= the threshold.
  void add_target(const std::string& key, bool at_least, double threshold);

  // A table of rows (one JSON array of objects under `key`; a text table before the figures).
  using Cell = std::variant<std::string, double>;
  void add_rows(std::string key, std::vector<std::string> columns,
                std::vector<std::vector<Cell>> rows);
  // A JSON object under `key` repeating the named figures' values (e.g. a "summary").
  void add_figure_group(std::string key, std::vector<std::string> figure_keys);

  [[nodiscard]] bool pass() const;
  [[nodiscard]] std::string render_table() const;
  [[nodiscard]] std::string render_json() const;

 private:
  struct Figure {
    std::string key;
    std::string label;
    double value = 0;
    Unit unit = Unit::kCount;
    std::optional<bool> at_least;  // set when the figure has a target
    double threshold = 0;
    [[nodiscard]] bool passed() const;
  };
  std::string bench_;
  std::vector<std::pair<std::string, std::variant<std::string, uint64_t, bool>>> info_;
  std::vector<Figure> figures_;
  struct Rows {
    std::string key;
    std::vector<std::string> columns;
    std::vector<std::vector<Cell>> rows;
  };
  std::vector<Rows> tables_;
  std::vector<std::pair<std::string, std::vector<std::string>>> groups_;
};

}  // namespace tierkv::bench
