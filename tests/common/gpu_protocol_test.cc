// The GPU tier's messages: gpu_attach's reply, GPU-pool slot refs in a load reply, the GPU fields
// of stats; each encoded and decoded back, truncation and trailing bytes rejected.
#include <gtest/gtest.h>

#include "tierkv/protocol.h"

namespace tierkv::proto {
namespace {

template <typename T>
std::vector<uint8_t> encoded(const T& m) {
  std::vector<uint8_t> buf;
  wire::ByteWriter w(buf);
  encode(w, m);
  return buf;
}

TEST(GpuProtocolTest, OpsAreKnownAndNamed) {
  EXPECT_EQ(op_name(Op::kGpuAttach), "gpu_attach");
  EXPECT_EQ(op_name(Op::kGpuLoad), "gpu_load");
  EXPECT_EQ(op_name(Op::kGpuRelease), "gpu_release");
  EXPECT_EQ(static_cast<uint16_t>(Op::kGpuAttach), 30);  // wire-stable
  for (Op op : {Op::kGpuAttach, Op::kGpuLoad, Op::kGpuRelease}) {
    EXPECT_TRUE(is_known_op(static_cast<uint16_t>(op)));
    EXPECT_FALSE(is_prefill_op(static_cast<uint16_t>(op)));
  }
  EXPECT_EQ(tier_name(Tier::kGpu), "gpu");
}

TEST(GpuProtocolTest, AttachReplyRoundTrips) {
  GpuAttachReply m;
  m.device = 2;
  m.slot_align = 4096;
  m.pool_bytes = 8ull << 30;
  for (size_t i = 0; i < m.device_uuid.size(); ++i) m.device_uuid[i] = static_cast<uint8_t>(i + 1);
  for (size_t i = 0; i < m.ipc_handle.size(); ++i) m.ipc_handle[i] = static_cast<uint8_t>(200 - i);
  const auto buf = encoded(m);
  EXPECT_EQ(buf.size(), sizeof(GpuAttachReply));
  wire::ByteReader r(buf);
  GpuAttachReply out;
  ASSERT_TRUE(decode(r, out).ok());
  EXPECT_EQ(out.device, 2);
  EXPECT_EQ(out.slot_align, 4096u);
  EXPECT_EQ(out.pool_bytes, m.pool_bytes);
  EXPECT_EQ(out.device_uuid, m.device_uuid);
  EXPECT_EQ(out.ipc_handle, m.ipc_handle);
  for (size_t cut = 0; cut < buf.size(); cut += 7) {
    wire::ByteReader t(std::span<const uint8_t>(buf).first(cut));
    EXPECT_FALSE(decode(t, out).ok()) << "cut at " << cut;
  }
  auto longer = buf;
  longer.push_back(0);
  wire::ByteReader t(longer);
  EXPECT_EQ(decode(t, out).code(), StatusCode::kProtocolError);
}

TEST(GpuProtocolTest, LoadReplyCarriesEachSlotsPool) {
  LoadReply m;
  m.slots = {SlotRef{7, kGpuPool, 1ull << 20, 65536}, SlotRef{3, kHostPool, 4096, 65536}};
  const auto buf = encoded(m);
  wire::ByteReader r(buf);
  LoadReply out;
  ASSERT_TRUE(decode(r, out).ok());
  ASSERT_EQ(out.slots.size(), 2u);
  EXPECT_EQ(out.slots[0].slot, 7u);
  EXPECT_EQ(out.slots[0].pool, kGpuPool);
  EXPECT_EQ(out.slots[0].offset, 1ull << 20);
  EXPECT_EQ(out.slots[1].pool, kHostPool);
  // A SlotRef of a daemon that predates the GPU tier (reserved = 0) names the host pool.
  EXPECT_EQ(SlotRef{}.pool, kHostPool);
}

TEST(GpuProtocolTest, StatsCarryTheGpuTier) {
  StatsReply m;
  m.daemon_version = "0.1.0";
  TierStats t;
  t.tier = Tier::kGpu;
  t.enabled = 1;
  t.capacity_bytes = 1ull << 30;
  t.chunks = 12;
  m.tiers.push_back(t);
  m.gpu.device = 0;
  m.gpu.promotions = 12;
  m.gpu.promotions_in_flight = 1;
  m.gpu.leases = 3;
  m.gpu.attached_clients = 2;
  m.gpu.dropped_with_host = 4;
  m.gpu_status = "on: NVIDIA H100 80GB HBM3 (device 0, 79.1 GiB)";
  const auto buf = encoded(m);
  wire::ByteReader r(buf);
  StatsReply out;
  ASSERT_TRUE(decode(r, out).ok());
  ASSERT_EQ(out.tiers.size(), 1u);
  EXPECT_EQ(out.tiers[0].tier, Tier::kGpu);
  EXPECT_EQ(out.tiers[0].chunks, 12u);
  EXPECT_EQ(out.gpu.device, 0);
  EXPECT_EQ(out.gpu.promotions, 12u);
  EXPECT_EQ(out.gpu.promotions_in_flight, 1u);
  EXPECT_EQ(out.gpu.leases, 3u);
  EXPECT_EQ(out.gpu.attached_clients, 2u);
  EXPECT_EQ(out.gpu.dropped_with_host, 4u);
  EXPECT_EQ(out.gpu_status, m.gpu_status);
  // Cut inside the GPU fields (which the NVMe I/O counters follow): the decoder names them.
  const size_t cut = buf.size() - sizeof(NvmeIoStats) - (4 + m.gpu_status.size()) - 4;
  wire::ByteReader t2(std::span<const uint8_t>(buf).first(cut));
  const Status s = decode(t2, out);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("gpu"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace tierkv::proto
