// Fuzz target: the fp8 decoder, on chunks in its default (auto) format (see decoder_fuzz.h).
#include "decoder_fuzz.h"

TIERKV_DECODER_FUZZ_TARGET("fp8")
