// CUDA versions of kernels/pool.h. Forward: one thread per output element, channels-last so
// neighbouring threads read neighbouring channels. Backward: one thread per input element
// gathers the dout of every window whose argmax names it, in row-major window order: no
// atomics, the same sum in the same order on every run (and as the CPU's scatter adds it).
// Where the windows do not overlap (strides >= the window, as in the seeds' models), one
// thread per output element instead writes its window's band of the input (the window and the
// rows and columns up to the next window's, or to the edge), the dout at the argmax and zeros
// elsewhere: the same values with 1/(PH*PW) of the index arithmetic. That arithmetic was the
// cost: the gather took 3.9 ms for the LRCN's first pooling at batch 256 on an H100 (315M input
// elements, each decomposed by division and its window range by four more), against 0.66 ms
// forward (bench/results/2026-11-27-h100.md). Coordinates come from flat indices by division
// in 32 bits where the tensor allows (64-bit division is a long software sequence on the GPU).
#include "kernels/cuda_context.h"
#include "kernels/pool.h"

namespace hisvid::cuda {

namespace {

// out (N,HO,WO,C), argmax (N,HO,WO,C) from inp (N,H,W,C); Index: uint32_t where the output's
// element count fits, else int64_t.
template <typename Index>
__global__ void maxpool2d_forward_kernel(float* out, int32_t* argmax, const float* inp, Pool2dGeometry g) {
  const int64_t total = int64_t(g.N) * g.HO * g.WO * g.C;
  for (const int64_t i : device::grid_stride(total)) {
    const device::Coordinates place = device::coordinates<Index>(i, g.HO, g.WO, g.C);
    const int64_t n = place.n;
    const int ho = place.y, wo = place.x, c = place.c;
    const float* image = inp + n * g.H * g.W * g.C + c;
    float best = 0.0f;
    int32_t best_at = -1;  // padded positions are skipped: they never win
    for (int ph = 0; ph < g.PH; ++ph) {
      const int h = ho * g.SH - g.pad_top + ph;
      if (h < 0 || h >= g.H) continue;
      for (int pw = 0; pw < g.PW; ++pw) {
        const int w = wo * g.SW - g.pad_left + pw;
        if (w < 0 || w >= g.W) continue;
        const float v = image[(int64_t(h) * g.W + w) * g.C];
        if (best_at < 0 || v > best) {  // strict: the first maximum wins ties
          best = v;
          best_at = h * g.W + w;
        }
      }
    }
    out[i] = best;
    argmax[i] = best_at;
  }
}

// dinp (N,H,W,C) from dout (N,HO,WO,C) and argmax (N,HO,WO,C); Index as the forward's, for
// the input's element count.
template <typename Index>
__global__ void maxpool2d_backward_kernel(float* dinp, const float* dout, const int32_t* argmax,
                                          Pool2dGeometry g) {
  const int64_t total = int64_t(g.N) * g.H * g.W * g.C;
  for (const int64_t i : device::grid_stride(total)) {
    const device::Coordinates place = device::coordinates<Index>(i, g.H, g.W, g.C);
    const int64_t n = place.n;
    const int h = place.y, w = place.x, c = place.c;
    // Windows covering (h, w): ho*SH - pad_top <= h <= ho*SH - pad_top + PH - 1.
    const int h_low = h + g.pad_top - g.PH + 1, w_low = w + g.pad_left - g.PW + 1;
    const int ho_begin = h_low <= 0 ? 0 : (h_low + g.SH - 1) / g.SH;
    const int wo_begin = w_low <= 0 ? 0 : (w_low + g.SW - 1) / g.SW;
    const int ho_end = min((h + g.pad_top) / g.SH + 1, g.HO);
    const int wo_end = min((w + g.pad_left) / g.SW + 1, g.WO);
    const int32_t here = h * g.W + w;
    float acc = 0.0f;
    for (int ho = ho_begin; ho < ho_end; ++ho) {
      for (int wo = wo_begin; wo < wo_end; ++wo) {
        const int64_t o = ((n * g.HO + ho) * g.WO + wo) * g.C + c;
        if (argmax[o] == here) acc += dout[o];
      }
    }
    dinp[i] = acc;
  }
}

// out (N,C): one thread per (n, c), the sum over S in double in s order, as the CPU.
__global__ void global_avgpool_forward_kernel(float* out, const float* inp, int64_t N, int64_t S, int64_t C) {
  for (const int64_t i : device::grid_stride(N * C)) {
    const int64_t n = i / C, c = i % C;
    double sum = 0.0;
    for (int64_t s = 0; s < S; ++s) sum += inp[(n * S + s) * C + c];
    out[i] = static_cast<float>(sum / static_cast<double>(S));
  }
}

// dinp (N,S,C): one thread per element.
__global__ void global_avgpool_backward_kernel(float* dinp, const float* dout, int64_t N, int64_t S,
                                               int64_t C) {
  for (const int64_t i : device::grid_stride(N * S * C)) {
    const int64_t c = i % C, n = i / (S * C);
    dinp[i] = dout[n * C + c] / static_cast<float>(S);
  }
}

// dinp (N,H,W,C) from dout (N,HO,WO,C) and argmax (N,HO,WO,C) where windows do not overlap
// (SH >= PH, SW >= PW): the thread of output (n, ho, wo, c) writes input rows
// [ho*SH - pad_top, (ho+1)*SH - pad_top), the first band from row 0 and the last to row H (so
// the bands tile the input), columns likewise: dout where the argmax is, zeros elsewhere.
template <typename Index>
__global__ void maxpool2d_backward_bands_kernel(float* dinp, const float* dout, const int32_t* argmax,
                                                Pool2dGeometry g) {
  const int64_t total = int64_t(g.N) * g.HO * g.WO * g.C;
  for (const int64_t i : device::grid_stride(total)) {
    const device::Coordinates place = device::coordinates<Index>(i, g.HO, g.WO, g.C);
    const int64_t n = place.n;
    const int ho = place.y, wo = place.x, c = place.c;
    const int h_begin = ho == 0 ? 0 : ho * g.SH - g.pad_top,
              h_end = ho == g.HO - 1 ? g.H : (ho + 1) * g.SH - g.pad_top;
    const int w_begin = wo == 0 ? 0 : wo * g.SW - g.pad_left,
              w_end = wo == g.WO - 1 ? g.W : (wo + 1) * g.SW - g.pad_left;
    const float d = 0.0f + dout[i];  // as the gather's sum of one term
    const int32_t at = argmax[i];
    float* image = dinp + n * g.H * g.W * g.C + c;
    for (int h = h_begin; h < h_end; ++h) {
      for (int w = w_begin; w < w_end; ++w)
        image[(int64_t(h) * g.W + w) * g.C] = h * g.W + w == at ? d : 0.0f;
    }
  }
}

}  // namespace

void maxpool2d_forward(const Maxpool2dForward<float>& k, cudaStream_t stream) {
  const Pool2dGeometry& g = k.g;
  const int64_t total = int64_t(g.N) * g.HO * g.WO * g.C;
  if (total <= 0) return;
  with_index_type(total, [&](auto index) {
    maxpool2d_forward_kernel<decltype(index)>
        <<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(k.out, k.argmax, k.inp, g);
  });
  HISVID_CHECK_LAUNCH();
}

void maxpool2d_backward(const Maxpool2dBackward<float>& k, cudaStream_t stream) {
  const Pool2dGeometry& g = k.g;
  const int64_t total = int64_t(g.N) * g.H * g.W * g.C;
  if (total <= 0) return;
  const int64_t outputs = int64_t(g.N) * g.HO * g.WO * g.C;
  if (g.SH >= g.PH && g.SW >= g.PW && outputs > 0) {  // no output: the gather writes the zeros
    with_index_type(outputs, [&](auto index) {
      maxpool2d_backward_bands_kernel<decltype(index)>
          <<<grid_blocks(outputs, kThreads), kThreads, 0, stream>>>(k.dinp, k.dout, k.argmax, g);
    });
    HISVID_CHECK_LAUNCH();
    return;
  }
  maxpool2d_backward_gather(k, stream);
}

void maxpool2d_backward_gather(const Maxpool2dBackward<float>& k, cudaStream_t stream) {
  const Pool2dGeometry& g = k.g;
  const int64_t total = int64_t(g.N) * g.H * g.W * g.C;
  if (total <= 0) return;
  with_index_type(total, [&](auto index) {
    maxpool2d_backward_kernel<decltype(index)>
        <<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(k.dinp, k.dout, k.argmax, g);
  });
  HISVID_CHECK_LAUNCH();
}

// out (N,C) = mean over S of inp (N,S,C)
void global_avgpool_forward(const GlobalAvgpoolForward<float>& k, cudaStream_t stream) {
  if (k.N * k.C <= 0) return;
  global_avgpool_forward_kernel<<<grid_blocks(k.N * k.C, kThreads), kThreads, 0, stream>>>(k.out, k.inp, k.N,
                                                                                           k.S, k.C);
  HISVID_CHECK_LAUNCH();
}

// dinp (N,S,C) (=) dout (N,C) / S
void global_avgpool_backward(const GlobalAvgpoolBackward<float>& k, cudaStream_t stream) {
  const int64_t total = k.N * k.S * k.C;
  if (total <= 0) return;
  global_avgpool_backward_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(k.dinp, k.dout, k.N,
                                                                                        k.S, k.C);
  HISVID_CHECK_LAUNCH();
}

}  // namespace hisvid::cuda
