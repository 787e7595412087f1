// A small deterministic stand-in for libFuzzer, so every fuzz target runs in the normal test
// suite (g++, ASan/UBSan, no clang needed): it mutates the target's seed encodings with a fixed
// seed — bit flips, random bytes, truncation, extension, codec parameters and header sizes set to
// small or extreme values (the target recomputes checksums, so these reach the codecs) — and
// feeds each mutant to LLVMFuzzerTestOneInput, for a bounded number of iterations
// and a bounded time. Built with clang's -fsanitize=fuzzer instead, a target uses libFuzzer's own
// main and this file is left out.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
std::vector<std::vector<uint8_t>> tierkv_fuzz_seeds();

namespace {

void mutate(std::vector<uint8_t>& b, std::mt19937_64& rng) {
  const int ops = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < ops; ++i) {
    switch (rng() % 9) {
      case 0:  // flip a bit
        if (!b.empty()) b[rng() % b.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 1:  // a random byte
        if (!b.empty()) b[rng() % b.size()] = static_cast<uint8_t>(rng());
        break;
      case 2:  // truncate
        if (!b.empty()) b.resize(rng() % b.size());
        break;
      case 3:  // extend
        b.resize(b.size() + 1 + rng() % 64, static_cast<uint8_t>(rng()));
        break;
      case 4: {  // an extreme 32-bit value at a 4-byte-aligned offset (sizes, counts, params)
        if (b.size() < 4) break;
        const uint32_t values[] = {0, 1, 0x7fffffff, 0xffffffff, 0x80000000, 256, 65536};
        const uint32_t v = values[rng() % 7];
        const size_t off = (rng() % (b.size() / 4)) * 4;
        std::memcpy(b.data() + off, &v, 4);
        break;
      }
      case 5: {  // a random byte in the header or in the first payload bytes (params, counts)
        const size_t limit = std::min<size_t>(b.size(), 160);
        if (limit > 0) b[rng() % limit] = static_cast<uint8_t>(rng());
        break;
      }
      case 6: {  // the codec parameters (header bytes 48..63): small and extreme values
        if (b.size() < 64) break;
        const uint8_t values[] = {0, 1, 2, 3, 4, 7, 8, 15, 16, 255};
        b[48 + rng() % 16] = rng() % 2 ? values[rng() % 10] : static_cast<uint8_t>(rng());
        break;
      }
      case 7: {  // resize the payload and say so in the header (offset 40), as a consistent
                 // truncation or extension would
        if (b.size() < 80) break;
        const size_t payload = b.size() - 80;
        const size_t n =
            rng() % 2 ? payload - payload * (rng() % 100) / 100 : payload + rng() % 256;
        b.resize(80 + n, static_cast<uint8_t>(rng()));
        const uint64_t n64 = n;
        std::memcpy(b.data() + 40, &n64, 8);
        break;
      }
      default: {  // copy a run of bytes elsewhere
        if (b.size() < 16) break;
        const size_t len = 1 + rng() % 16;
        const size_t from = rng() % (b.size() - len);
        const size_t to = rng() % (b.size() - len);
        std::memmove(b.data() + to, b.data() + from, len);
        break;
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 4000;
  const double seconds = argc > 2 ? std::atof(argv[2]) : 3.0;
  const auto seeds = tierkv_fuzz_seeds();
  if (seeds.empty()) {
    std::fprintf(stderr, "fuzz: the target produced no seed inputs\n");
    return 1;
  }
  std::mt19937_64 rng(0x5eed);
  for (const auto& s : seeds) LLVMFuzzerTestOneInput(s.data(), s.size());
  LLVMFuzzerTestOneInput(nullptr, 0);
  const auto start = std::chrono::steady_clock::now();
  long done = 0;
  for (; done < iterations; ++done) {
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > seconds) {
      break;
    }
    auto input = seeds[rng() % seeds.size()];
    mutate(input, rng);
    LLVMFuzzerTestOneInput(input.data(), input.size());
  }
  std::printf("fuzz: %ld inputs from %zu seeds, no fault\n", done, seeds.size());
  return 0;
}
