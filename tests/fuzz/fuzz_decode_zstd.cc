// Fuzz target: the zstd decoder (see decoder_fuzz.h).
#include "decoder_fuzz.h"

TIERKV_DECODER_FUZZ_TARGET("zstd:1:bytes")
