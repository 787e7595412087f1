// damage_chunk: flips a byte of one chunk's data in a test daemon's NVMe data file, found through
// its index record. For tests that show a damaged chunk is never served; call with the daemon
// stopped (the index is opened read-only). Needs tierkv_storage and GoogleTest.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "support/test_daemon.h"
#include "tierkv/chunk_key.h"
#include "tierkv/storage/nvme_store.h"

namespace tierkv::testing {

// The daemon's [nvme] directory must be ${DIR}/nvme (one directory, default index location).
inline void damage_chunk(const TestDaemon& d, const ChunkKey& key) {
  auto records = storage::NvmeStore::read_index(d.dir() + "/nvme/index");
  ASSERT_TRUE(records.ok()) << records.status().to_string();
  for (const auto& r : *records) {
    if (!(r.key == key)) continue;
    const int fd = ::open((d.dir() + "/nvme/tierkv-data.bin").c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char b = 0;
    ASSERT_EQ(::pread(fd, &b, 1, static_cast<off_t>(r.offset + 1000)), 1);
    b = static_cast<char>(b ^ 0x5A);
    ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(r.offset + 1000)), 1);
    ::close(fd);
    return;
  }
  FAIL() << "chunk " << key.to_hex() << " is not in the index";
}

}  // namespace tierkv::testing
