// Fuzz target: the fp8 decoder (see decoder_fuzz.h).
#include "decoder_fuzz.h"

TIERKV_DECODER_FUZZ_TARGET("fp8")
