// In a build without CUDA, the GPU transfer API still links and says why it cannot work.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/test_daemon.h"
#include "tierkv/client.h"
#include "tierkv/cuda_transfer.h"

namespace tierkv {
namespace {

using ::testing::HasSubstr;

TEST(GpuTransferStubTest, EveryEntryPointSaysBuiltWithoutCuda) {
  EXPECT_FALSE(gpu_transfer_built());
  auto d = testing::TestDaemon::start();
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  auto c = Client::connect({(*d)->socket_path(), "stub", false});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  auto pool = PinnedHostPool::pin(*c);
  ASSERT_FALSE(pool.ok());
  EXPECT_THAT(pool.status().message(), HasSubstr("built without CUDA"));
  auto x = GpuTransfer::create_paged(nullptr, Namespace{}, kernels::PagedKvView{}, 0);
  ASSERT_FALSE(x.ok());
  EXPECT_THAT(x.status().message(), HasSubstr("built without CUDA"));
}

}  // namespace
}  // namespace tierkv
