#include "tierkv/storage/shm_region.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

namespace tierkv::storage {
namespace {

TEST(ShmRegionTest, SecondMappingSeesTheSameBytes) {
  auto r = ShmRegion::create("tierkv-test", 1 << 20, true);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  r->data()[12345] = std::byte{0x5a};
  void* other = ::mmap(nullptr, 1 << 20, PROT_READ, MAP_SHARED, r->fd(), 0);
  ASSERT_NE(other, MAP_FAILED);
  EXPECT_EQ(static_cast<const std::byte*>(other)[12345], std::byte{0x5a});
  ::munmap(other, 1 << 20);
}

TEST(ShmRegionTest, SizeIsSealed) {
  auto r = ShmRegion::create("tierkv-test", 1 << 20, false);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(::ftruncate(r->fd(), 4096), 0);  // a client cannot shrink it under the daemon
  EXPECT_NE(::ftruncate(r->fd(), 4 << 20), 0);
}

TEST(ShmRegionTest, ZeroSizeIsAnError) {
  EXPECT_FALSE(ShmRegion::create("tierkv-test", 0, false).ok());
}

}  // namespace
}  // namespace tierkv::storage
