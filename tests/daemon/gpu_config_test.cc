// [gpu] in the daemon's configuration: defaults, values, and errors that name the option.
#include <gtest/gtest.h>

#include "tierkv/daemon/config.h"

namespace tierkv::daemon {
namespace {

TEST(GpuConfigTest, DefaultsLeaveTheTierOff) {
  auto c = parse_config(default_config_toml(), "default");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  const scheduler::GpuTierOptions d;
  const scheduler::GpuTierOptions& g = c->cache.gpu;
  EXPECT_EQ(g.capacity_bytes, 0u);
  EXPECT_EQ(g.device, 0);
  EXPECT_EQ(g.slab_bytes, d.slab_bytes);
  EXPECT_EQ(g.min_slot_bytes, d.min_slot_bytes);
  EXPECT_EQ(g.promote_after_loads, d.promote_after_loads);
  EXPECT_EQ(g.copies_in_flight, d.copies_in_flight);
}

TEST(GpuConfigTest, ValuesAreRead) {
  auto c = parse_config(
      "[gpu]\ndevice = 1\ncapacity = \"8GiB\"\nslab_size = \"32MiB\"\nmin_slot_size = \"128KiB\"\n"
      "promote_after_loads = 3\ncopies_in_flight = 4\n",
      "g.toml");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  const scheduler::GpuTierOptions& g = c->cache.gpu;
  EXPECT_EQ(g.device, 1);
  EXPECT_EQ(g.capacity_bytes, 8ull << 30);
  EXPECT_EQ(g.slab_bytes, 32ull << 20);
  EXPECT_EQ(g.min_slot_bytes, 128ull << 10);
  EXPECT_EQ(g.promote_after_loads, 3u);
  EXPECT_EQ(g.copies_in_flight, 4u);
  for (const char* off : {"device = \"off\"", "device = -1"}) {
    auto o = parse_config(std::string("[gpu]\ncapacity = \"1GiB\"\n") + off + "\n", "g.toml");
    ASSERT_TRUE(o.ok()) << o.status().to_string();
    EXPECT_EQ(o->cache.gpu.device, -1) << off;
  }
}

TEST(GpuConfigTest, BadValuesNameTheOption) {
  struct Case {
    const char* toml;
    const char* says;
  };
  const Case cases[] = {
      {"[gpu]\ndevice = \"gpu0\"\n", "g.toml:2: gpu.device = \"gpu0\" is neither"},
      {"[gpu]\ndevice = -5\n", "gpu.device = -5"},
      {"[gpu]\ncapacity = \"1MiB\"\n", "gpu.capacity = 1048576 is smaller than one slab"},
      {"[gpu]\ncapacity = \"1GiB\"\nslab_size = \"3MiB\"\n", "gpu.slab_size"},
      {"[gpu]\ncapacity = \"1GiB\"\npromote_after_loads = 0\n", "gpu.promote_after_loads"},
      {"[gpu]\ncapacity = \"1GiB\"\ncopies_in_flight = 0\n", "gpu.copies_in_flight"},
      {"[gpu]\ncopies_in_flight = 5000\n", "gpu.copies_in_flight = 5000 is out of range"},
      {"[gpu]\nbytes = 5\n", "gpu.bytes is not a known option"},
  };
  for (const Case& c : cases) {
    auto r = parse_config(c.toml, "g.toml");
    ASSERT_FALSE(r.ok()) << c.toml;
    EXPECT_NE(r.status().message().find(c.says), std::string::npos)
        << c.toml << " -> " << r.status().message();
  }
  // A tier that is off is not checked: a small capacity with the tier off is fine.
  EXPECT_TRUE(parse_config("[gpu]\ncapacity = 0\nslab_size = \"3MiB\"\n", "g.toml").ok());
}

}  // namespace
}  // namespace tierkv::daemon
