// Fuzz target: the raw decoder (see decoder_fuzz.h).
#include "decoder_fuzz.h"

TIERKV_DECODER_FUZZ_TARGET("raw")
