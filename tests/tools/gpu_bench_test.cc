// `tierkv-bench gpu` on a machine without a GPU: a clear error on stderr, nothing on stdout, a
// non-zero exit. (On a GPU the bench itself is the test: it verifies its loads byte for byte, and
// takes far longer than a unit test may.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "support/process.h"
#include "tierkv/kernels/kv_cuda.h"

namespace tierkv {
namespace {

using ::testing::HasSubstr;

TEST(GpuBenchTest, WithoutGpuSaysWhyAndFails) {
  if (kernels::cuda::device_available().ok()) {
    GTEST_SKIP() << "a GPU is present: run `tierkv-bench gpu` itself";
  }
  const testing::ProcessResult r = testing::run_process(
      {std::string(TIERKV_BINARY_DIR) + "/tools/tierkv-bench", "gpu", "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_THAT(r.err, HasSubstr("this bench needs a GPU"));
  EXPECT_EQ(r.out, "");
}

}  // namespace
}  // namespace tierkv
