// Fuzz target: the fused decoder (see decoder_fuzz.h).
#include "decoder_fuzz.h"

TIERKV_DECODER_FUZZ_TARGET("fused:0.5:b4:rep=int8:res=int4:rope=10000")
