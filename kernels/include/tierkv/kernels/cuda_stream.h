// How the CUDA kernels' headers name a stream without including CUDA's headers: CUstream_st* is
// the very type cudaStream_t names, so a cudaStream_t converts without a cast. Plain C++17, so
// CUDA sources may include it too.
#pragma once

struct CUstream_st;

namespace tierkv::kernels::cuda {

using Stream = CUstream_st*;  // = cudaStream_t; nullptr is the legacy default stream

}  // namespace tierkv::kernels::cuda
