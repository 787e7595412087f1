#include "tierkv/layout.h"

#include <gtest/gtest.h>

namespace tierkv {
namespace {

Layout llama8b() { return Layout{32, 8, 128, DType::kBFloat16, 256}; }

TEST(LayoutTest, SizesOfAnEightBModel) {
  EXPECT_EQ(llama8b().bytes_per_token(), 131072u);  // 128 KiB per token
  EXPECT_EQ(llama8b().chunk_bytes(), 32u << 20);
}

TEST(LayoutTest, ValidateNamesTheBadField) {
  Layout l = llama8b();
  l.num_kv_heads = 0;
  Status s = l.validate();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("num_kv_heads"), std::string::npos) << s.message();
  l = llama8b();
  l.chunk_tokens = Layout::kMaxChunkTokens + 1;
  EXPECT_NE(l.validate().message().find("chunk_tokens"), std::string::npos);
  EXPECT_TRUE(llama8b().validate().ok());
}

TEST(LayoutTest, NamespaceIdDependsOnEveryPart) {
  const NamespaceId base = namespace_id(llama8b(), "acme", "");
  EXPECT_EQ(base, namespace_id(llama8b(), "acme", ""));
  EXPECT_NE(base, namespace_id(llama8b(), "acme2", ""));
  EXPECT_NE(base, namespace_id(llama8b(), "acme", "s"));
  EXPECT_NE(namespace_id(llama8b(), "ab", "c"), namespace_id(llama8b(), "a", "bc"));
  Layout other = llama8b();
  other.dtype = DType::kFloat16;
  EXPECT_NE(base, namespace_id(other, "acme", ""));
  other = llama8b();
  other.chunk_tokens = 512;
  EXPECT_NE(base, namespace_id(other, "acme", ""));
}

TEST(LayoutTest, ParseDtype) {
  EXPECT_EQ(*parse_dtype("bf16"), DType::kBFloat16);
  auto bad = parse_dtype("bf17");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bf17"), std::string::npos);
}

}  // namespace
}  // namespace tierkv
