#include "bench/report.h"

#include <cmath>
#include <cstdio>

#include "common/format.h"
#include "common/json_writer.h"

namespace tierkv::bench {

namespace {

std::string format_value(double v, Unit unit) {
  char buf[64];
  switch (unit) {
    case Unit::kGBps:
      std::snprintf(buf, sizeof(buf), "%.2f GB/s", v);
      return buf;
    case Unit::kRatio:
      std::snprintf(buf, sizeof(buf), "%.2f", v);
      return buf;
    case Unit::kMicros:
      std::snprintf(buf, sizeof(buf), "%.1f µs", v);
      return buf;
    case Unit::kPerSecond:
      return tools::group_thousands(static_cast<uint64_t>(std::llround(v))) + "/s";
    case Unit::kCount:
      return tools::group_thousands(static_cast<uint64_t>(std::llround(v)));
  }
  return "?";
}

}  // namespace

void BenchReport::add_info(std::string key, std::string value) {
  info_.emplace_back(std::move(key), std::move(value));
}
void BenchReport::add_info(std::string key, uint64_t value) {
  info_.emplace_back(std::move(key), value);
}
void BenchReport::add_info(std::string key, bool value) {
  info_.emplace_back(std::move(key), value);
}

void BenchReport::add_figure(std::string key, std::string label, double value, Unit unit) {
  Figure f;
  f.key = std::move(key);
  f.label = std::move(label);
  f.value = value;
  f.unit = unit;
  figures_.push_back(std::move(f));
}

void BenchReport::add_target(const std::string& key, bool at_least, double threshold) {
  for (auto& f : figures_) {
    if (f.key == key) {
      f.at_least = at_least;
      f.threshold = threshold;
    }
  }
}

void BenchReport::add_rows(std::string key, std::vector<std::string> columns,
                           std::vector<std::vector<Cell>> rows) {
  tables_.push_back({std::move(key), std::move(columns), std::move(rows)});
}

void BenchReport::add_figure_group(std::string key, std::vector<std::string> figure_keys) {
  groups_.emplace_back(std::move(key), std::move(figure_keys));
}

bool BenchReport::Figure::passed() const {
  if (!at_least) return true;
  return *at_least ? value >= threshold : value <= threshold;
}

bool BenchReport::pass() const {
  for (const auto& f : figures_) {
    if (!f.passed()) return false;
  }
  return true;
}

std::string BenchReport::render_table() const {
  std::string out;
  for (const auto& [key, v] : info_) {
    out += key + ": ";
    if (const auto* s = std::get_if<std::string>(&v)) {
      out += *s;
    } else if (const auto* n = std::get_if<uint64_t>(&v)) {
      out += std::to_string(*n);
    } else {
      out += std::get<bool>(v) ? "yes" : "no";
    }
    out += "\n";
  }
  out += "\n";
  for (const auto& t : tables_) {
    std::vector<bool> right;
    for (const auto& c : t.rows.empty() ? std::vector<Cell>{} : t.rows.front()) {
      right.push_back(std::holds_alternative<double>(c));
    }
    right.resize(t.columns.size(), false);
    tools::TextTable rows(t.columns, right);
    for (const auto& r : t.rows) {
      std::vector<std::string> cells;
      for (const auto& c : r) {
        if (const auto* s = std::get_if<std::string>(&c)) {
          cells.push_back(*s);
        } else {
          char buf[32];
          const double v = std::get<double>(c);
          // Whole numbers (token counts, chunk indices) in full; the rest to 4 digits.
          if (v == std::floor(v) && std::fabs(v) < 1e15) std::snprintf(buf, sizeof(buf), "%.0f", v);
          else std::snprintf(buf, sizeof(buf), "%.4g", v);
          cells.emplace_back(buf);
        }
      }
      rows.add_row(cells);
    }
    out += rows.render() + "\n";
  }
  tools::TextTable table({"FIGURE", "VALUE", "TARGET", "RESULT"}, {false, true, true, false});
  for (const auto& f : figures_) {
    std::string target, result;
    if (f.at_least) {
      target = (*f.at_least ? ">= " : "<= ") + format_value(f.threshold, f.unit);
      result = f.passed() ? "PASS" : "MISS";
    }
    table.add_row({f.label, format_value(f.value, f.unit), target, result});
  }
  out += table.render();
  out += pass() ? "\nall targets met\n" : "\nsome targets missed\n";
  return out;
}

std::string BenchReport::render_json() const {
  tools::JsonWriter w;
  w.begin_object().field("bench", bench_);
  for (const auto& [key, v] : info_) {
    w.key(key);
    std::visit([&w](const auto& x) { w.value(x); }, v);
  }
  for (const auto& f : figures_) w.field(f.key, f.value);
  for (const auto& t : tables_) {
    w.key(t.key).begin_array();
    for (const auto& r : t.rows) {
      w.begin_object();
      for (size_t i = 0; i < r.size() && i < t.columns.size(); ++i) {
        w.key(t.columns[i]);
        std::visit([&w](const auto& x) { w.value(x); }, r[i]);
      }
      w.end_object();
    }
    w.end_array();
  }
  for (const auto& [key, names] : groups_) {
    w.key(key).begin_object();
    for (const auto& name : names) {
      for (const auto& f : figures_) {
        if (f.key == name) w.field(f.key, f.value);
      }
    }
    w.end_object();
  }
  w.key("targets").begin_object();
  for (const auto& f : figures_) {
    if (!f.at_least) continue;
    w.key(f.key)
        .begin_object()
        .field("op", *f.at_least ? ">=" : "<=")
        .field("value", f.threshold)
        .field("pass", f.passed())
        .end_object();
  }
  w.end_object().field("pass", pass()).end_object();
  return w.str() + "\n";
}

}  // namespace tierkv::bench
