// EncodeBuffer writing into caller-owned memory (the NVMe tier's staging buffers): encoders write
// straight into it, and an output that outgrows it spills into the buffer's own storage intact.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "tierkv/storage/codec.h"

namespace tierkv::storage {
namespace {

TEST(EncodeBufferTest, WritesIntoCallerMemoryUntilOutgrown) {
  std::vector<std::byte> mine(100);
  EncodeBuffer b;
  b.use_memory(mine);
  auto s = b.resize(60);
  EXPECT_EQ(s.data(), mine.data());
  std::memset(s.data(), 7, 60);
  s = b.resize(40);  // shrinking stays in place
  EXPECT_EQ(b.bytes().data(), mine.data());
  EXPECT_FALSE(b.spilled());
  s = b.resize(150);  // outgrown: the 40 bytes move to the buffer's own storage
  EXPECT_TRUE(b.spilled());
  EXPECT_NE(s.data(), mine.data());
  for (size_t i = 0; i < 40; ++i) ASSERT_EQ(b.bytes()[i], std::byte{7});
  EXPECT_EQ(b.size(), 150u);
  b.use_memory(mine);  // a new use starts empty, in the caller's memory again
  EXPECT_FALSE(b.spilled());
  EXPECT_EQ(b.size(), 0u);
  EXPECT_EQ(b.resize(10).data(), mine.data());
  b.use_own_memory();
  EXPECT_NE(b.resize(10).data(), mine.data());
}

TEST(EncodeBufferTest, AnEncoderWritesStraightIntoCallerMemory) {
  const Layout layout{1, 2, 64, DType::kBFloat16, 32};
  std::vector<std::byte> chunk(layout.chunk_bytes());
  for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<std::byte>(i % 5);
  auto codec = make_codec("zstd");
  ASSERT_TRUE(codec.ok());
  std::vector<std::byte> staging(chunk.size() + 4096);
  EncodeBuffer b;
  b.use_memory(staging);
  ASSERT_TRUE((*codec)->encode(layout, chunk, b).ok());
  EXPECT_FALSE(b.spilled());
  EXPECT_EQ(b.bytes().data(), staging.data());
  std::vector<std::byte> out(chunk.size());
  ASSERT_TRUE((*codec)->decode(b.bytes(), out).ok());
  EXPECT_EQ(out, chunk);
  // Too small for zstd's worst case: it spills, and the result is the same chunk.
  std::vector<std::byte> tiny(256);
  b.use_memory(tiny);
  ASSERT_TRUE((*codec)->encode(layout, chunk, b).ok());
  EXPECT_TRUE(b.spilled());
  ASSERT_TRUE((*codec)->decode(b.bytes(), out).ok());
  EXPECT_EQ(out, chunk);
}

}  // namespace
}  // namespace tierkv::storage
