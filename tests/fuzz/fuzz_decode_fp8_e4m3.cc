// Fuzz target: the fp8 decoder on e4m3 chunks, the format fp8 chunks had before the auto format
// (see decoder_fuzz.h).
#include "decoder_fuzz.h"

TIERKV_DECODER_FUZZ_TARGET("fp8:e4m3")
