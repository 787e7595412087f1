// Fuzz target: the int8 decoder (see decoder_fuzz.h).
#include "decoder_fuzz.h"

TIERKV_DECODER_FUZZ_TARGET("int8")
