#include "common/format.h"

#include <gtest/gtest.h>

namespace tierkv::tools {
namespace {

TEST(FormatTest, HumanSizes) {
  EXPECT_EQ(human_size(0), "0 B");
  EXPECT_EQ(human_size(1023), "1023 B");
  EXPECT_EQ(human_size(1024), "1 KiB");
  EXPECT_EQ(human_size(64 << 10), "64 KiB");
  EXPECT_EQ(human_size(1536ull << 20), "1.5 GiB");
  EXPECT_EQ(human_size(2ull << 30), "2 GiB");
  EXPECT_EQ(human_size(10ull << 20), "10 MiB");
  EXPECT_EQ(human_size(300ull << 30), "300 GiB");
  EXPECT_EQ(human_size((1ull << 40) + (1ull << 39)), "1.5 TiB");
}

TEST(FormatTest, Durations) {
  EXPECT_EQ(human_duration_ms(850), "850ms");
  EXPECT_EQ(human_duration_ms(12300), "12.3s");
  EXPECT_EQ(human_duration_ms(4 * 60000 + 7000), "4m 07s");
  EXPECT_EQ(human_duration_ms(2 * 3600000 + 5 * 60000), "2h 05m");
  EXPECT_EQ(human_duration_ms(3 * 86400000ull + 4 * 3600000ull), "3d 4h");
}

TEST(FormatTest, NumbersAndPercentages) {
  EXPECT_EQ(group_thousands(0), "0");
  EXPECT_EQ(group_thousands(999), "999");
  EXPECT_EQ(group_thousands(1000), "1,000");
  EXPECT_EQ(group_thousands(12345678), "12,345,678");
  EXPECT_EQ(percent(7, 8), "87.5%");
  EXPECT_EQ(percent(1, 0), "-");
}

TEST(FormatTest, NamespaceIdsRoundTrip) {
  EXPECT_EQ(namespace_hex(0x1234), "0000000000001234");
  EXPECT_EQ(*parse_namespace_id("0000000000001234"), 0x1234u);
  EXPECT_EQ(*parse_namespace_id("0x1234"), 0x1234u);
  EXPECT_EQ(*parse_namespace_id("0XFFFFFFFFFFFFFFFF"), ~0ull);
  EXPECT_EQ(*parse_namespace_id("aBcD"), 0xabcdu);
  for (const char* bad : {"", "0x", "xyz", "12345678901234567", "12 34", "-1"}) {
    auto r = parse_namespace_id(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("namespace id"), std::string::npos);
  }
}

TEST(FormatTest, PrintableNames) {
  EXPECT_EQ(printable(""), "-");
  EXPECT_EQ(printable("team-a"), "team-a");
  EXPECT_EQ(printable("a\nb\x1b"), "a\\x0ab\\x1b");
}

TEST(FormatTest, TableAlignsColumns) {
  TextTable t({"NAME", "SIZE"}, {false, true});
  t.add_row({"host", "2 GiB"});
  t.add_row({"remote", "off"});
  t.add_row({"µs", "1"});
  EXPECT_EQ(t.render(),
            "NAME     SIZE\n"
            "host    2 GiB\n"
            "remote    off\n"
            "µs          1\n");
  EXPECT_EQ(t.render(false, "  "),
            "  host    2 GiB\n"
            "  remote    off\n"
            "  µs          1\n");
}

}  // namespace
}  // namespace tierkv::tools
