// bench/roofline.h — the machine's own roofline, measured where the kernel lab runs: the most
// float32 multiply-adds and the most bytes a second that simple kernels sustain on each backend
// (an empirical roofline: what these cores and this memory do, not a data sheet's figures).
//
//   host   every OpenMP thread a loop of independent FMA chains in the widest vectors the
//          processor has (AVX-512, AVX2 + FMA, else scalar); bandwidth: a STREAM-style triad
//          a[i] = b[i] + s * c[i] over three arrays of at least 128 MiB and the last-level
//          cache's size each, 12 bytes an element;
//   cuda   every thread 8 independent fmaf chains, 8 blocks of 256 threads per multiprocessor;
//          bandwidth: 16 float4 copies of 256 MiB, read and written, per timed run.
// Each figure is the best of several runs. A kernel's bound on a case is then
//   min(peak GFLOP/s, intensity x peak GB/s), intensity = flops / bytes moved,
// or the peak GB/s for a case without flops (kernels/harness.h's bytes: every buffer read and
// written once, the least traffic possible, so a share is an upper estimate). A case bound by
// bandwidth whose bytes fit in the last-level cache is timed with its buffers in that cache,
// where memory's bandwidth bounds nothing: it shows "in cache" instead of a share. Tensor-core
// rows (TF32 cuDNN or cuBLAS) can pass the float32 FMA peak.
#pragma once

#include <string>

namespace hisvid::bench {

struct Roofline {
  double gflops = 0.0;       // float32, multiply-add = 2 flops
  double gbs = 0.0;          // GB/s (1e9 bytes)
  double cache_bytes = 0.0;  // the last-level cache (0: not known)
  std::string basis;         // how it was measured, for the report
};

// The host's, on `threads` OpenMP threads (the lab's own count).
Roofline measure_host_roofline(int threads);
#ifdef HISVID_WITH_CUDA
// The current CUDA device's.
Roofline measure_cuda_roofline();
#endif

// The share of its bound that a row reached: achieved GFLOP/s over min(peak, intensity x
// bandwidth) when flops > 0, else achieved GB/s over the peak GB/s, as "12.3%"; "in cache" for
// a case bound by bandwidth whose bytes fit in the cache; "" when nothing is known.
std::string roofline_share(const Roofline& roofline, double flops, double bytes, double seconds);

}  // namespace hisvid::bench
