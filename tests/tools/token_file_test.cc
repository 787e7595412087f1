#include "common/token_file.h"

#include <gtest/gtest.h>

#include "support/process.h"

namespace tierkv::tools {
namespace {

std::vector<TokenId> parse_ok(std::string_view text) {
  auto r = parse_token_ids(text);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : std::vector<TokenId>{};
}

std::string parse_error(std::string_view text) {
  auto r = parse_token_ids(text);
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : r.status().message();
}

TEST(TokenFileTest, AcceptsEverySeparator) {
  const std::vector<TokenId> want = {1, 22, 333, 4294967295u};
  EXPECT_EQ(parse_ok("1 22 333 4294967295"), want);
  EXPECT_EQ(parse_ok("1,22,333,4294967295\n"), want);
  EXPECT_EQ(parse_ok("1\n22\r\n333\t4294967295"), want);
  EXPECT_EQ(parse_ok("  1, 22,\n\n 333 ,4294967295 ,"), want);
}

TEST(TokenFileTest, AcceptsAJsonArray) {
  const std::vector<TokenId> want = {1, 22, 333};
  EXPECT_EQ(parse_ok("[1, 22, 333]"), want);
  EXPECT_EQ(parse_ok("\n [\n  1,\n  22,\n  333\n ]\n"), want);
  EXPECT_EQ(parse_ok("[1,22,333]"), want);
  EXPECT_EQ(parse_ok("[]"), std::vector<TokenId>{});
}

TEST(TokenFileTest, NamesTheLineAndTextOfABadToken) {
  EXPECT_EQ(parse_error("1 2 3\n4 abc 5\n"), "line 2: 'abc' is not a token id");
  EXPECT_EQ(parse_error("-5"), "line 1: '-5' is not a token id");
  EXPECT_EQ(parse_error("1\n2\n3.5"), "line 3: '3.5' is not a token id");
  EXPECT_EQ(parse_error("4294967296"),
            "line 1: '4294967296' is out of range for a token id (at most 4294967295)");
  EXPECT_EQ(parse_error("99999999999999999999999"),
            "line 1: '99999999999999999999999' is out of range for a token id (at most "
            "4294967295)");
}

TEST(TokenFileTest, RejectsMalformedJsonArrays) {
  EXPECT_EQ(parse_error("[1, 2"), "line 1: the JSON array is not closed with ']'");
  EXPECT_EQ(parse_error("[1, 2]\n]"), "line 2: unexpected ']' after the closing ']'");
  EXPECT_EQ(parse_error("[1, \"2\"]"), "line 1: '\"2\"' is not a token id");
  EXPECT_EQ(parse_error("[[1]]"), "line 1: '[1' is not a token id");
}

TEST(TokenFileTest, ShortensAndCleansWhatItQuotes) {
  const std::string junk(100, 'x');
  EXPECT_EQ(parse_error(junk), "line 1: '" + std::string(40, 'x') + "...' is not a token id");
  EXPECT_EQ(parse_error("1 \x01\x02"),
            "line 1: '?"
            "?' is not a token id");
}

TEST(TokenFileTest, ReadsFilesAndNamesThemInErrors) {
  testing::TempDir dir;
  testing::write_file(dir.file("ok.txt"), "[5, 6, 7]\n");
  auto ok = read_token_file(dir.file("ok.txt"));
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(*ok, (std::vector<TokenId>{5, 6, 7}));

  testing::write_file(dir.file("bad.txt"), "5\nsix\n");
  auto bad = read_token_file(dir.file("bad.txt"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), dir.file("bad.txt") + ": line 2: 'six' is not a token id");

  testing::write_file(dir.file("empty.txt"), " \n");
  auto empty = read_token_file(dir.file("empty.txt"));
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().message(), dir.file("empty.txt") + ": no token ids in the file");

  auto missing = read_token_file(dir.file("missing.txt"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), dir.file("missing.txt") + ": No such file or directory");
}

}  // namespace
}  // namespace tierkv::tools
