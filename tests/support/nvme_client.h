// For tests that drive the daemon's NVMe tier through the client library: wait until every host
// chunk is written down, and scrub the whole tier. Header only; needs tierkv_client,
// tierkv_test_support and GoogleTest. Thread safety: as the Client's.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>

#include "support/process.h"
#include "tierkv/client.h"

namespace tierkv::testing {

// Asks the daemon to write its host chunks down until none is dirty or in flight; fails the test
// if that takes longer than `timeout`.
inline void flush_to_nvme(Client& c, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  ASSERT_TRUE(wait_until(
      [&] {
        auto f = c.flush();
        return f.ok() && f->dirty_chunks == 0 && f->writes_in_flight == 0;
      },
      timeout))
      << "the daemon did not write its chunks down to NVMe in " << timeout.count() << " ms";
}

// What a scrub of the whole NVMe tier found (damaged chunks are removed as they are found).
struct NvmeScrub {
  uint64_t checked = 0;
  uint64_t corrupt = 0;     // checksum mismatches
  uint64_t unreadable = 0;  // I/O errors
};

// Verifies every chunk on the daemon's NVMe tier, 256 a request, from the first slot to the last;
// a failed request fails the test and ends the scrub.
inline NvmeScrub scrub_nvme(Client& c) {
  NvmeScrub s;
  for (uint64_t cursor = 0;;) {
    auto v = c.verify(cursor, 256);
    if (!v.ok()) {
      ADD_FAILURE() << "verify from cursor " << cursor << ": " << v.status().to_string();
      return s;
    }
    s.checked += v->checked;
    s.corrupt += v->corrupt;
    s.unreadable += v->unreadable;
    cursor = v->next_cursor;
    if (v->done) return s;
  }
}

}  // namespace tierkv::testing
