// kernels/conv2d_pool.cu — the fused convolution + activation + max-pool on CUDA (see
// kernels/conv2d_pool.h), version 1: plain kernels, no shared memory, no atomics.
//   forward          one thread per pooled element: the convolution at every position of its
//                    window, the activation, the first maximum
//   backward dbias   one block per filter, summing the pooled gradients g = dout * act'(out)
//   backward dweight one block per weight (r, f), summing g * the input under r at each maximum
//   backward dinp    one thread per input element, over the taps and filters whose maximum
//                    sat on an output pixel that reads it
// Block sums reduce in a fixed order, so every run gives the same bits.
#include <stdexcept>

#include "kernels/conv2d_pool.h"
#include "kernels/cuda_context.h"

namespace hisvid::cuda {

namespace {

constexpr int kReduceThreads = 256;

__global__ void forward_kernel(float* out, int32_t* argmax, const float* inp, const float* weight,
                               const float* bias, Conv2dGeometry g, Pool2dGeometry p, Activation act) {
  const int64_t total = int64_t(p.N) * p.HO * p.WO * p.C;
  for (const int64_t i : device::grid_stride(total)) {
    const int f = static_cast<int>(i % p.C);
    int64_t rest = i / p.C;
    const int qo = static_cast<int>(rest % p.WO);
    rest /= p.WO;
    const int po = static_cast<int>(rest % p.HO);
    const int64_t n = rest / p.HO;
    float best = 0.0f;
    int32_t best_at = -1;
    for (int ph = 0; ph < p.PH; ++ph) {
      const int ho = po * p.SH - p.pad_top + ph;
      if (ho < 0 || ho >= g.HO) continue;
      for (int pw = 0; pw < p.PW; ++pw) {
        const int wo = qo * p.SW - p.pad_left + pw;
        if (wo < 0 || wo >= g.WO) continue;
        const float z = conv2d_at(inp, weight, bias, g, n, ho, wo, f);
        const float y = activate(z, act);
        if (best_at < 0 || y > best) best = y, best_at = ho * g.WO + wo;
      }
    }
    out[i] = best;
    if (argmax != nullptr) argmax[i] = best_at;
  }
}

__device__ float pooled_grad(const float* dout, const float* out, int64_t i, Activation act) {
  return dout[i] * activation_grad_from_output(out[i], act);
}

// dbias[f] += sum over pooled positions m of g[m, f]. Grid: F blocks.
__global__ void __launch_bounds__(kReduceThreads)
    dbias_kernel(float* dbias, const float* dout, const float* out, int64_t positions, int F,
                 Activation act) {
  const int f = blockIdx.x;
  float s = 0.0f;
  for (int64_t m = threadIdx.x; m < positions; m += blockDim.x) s += pooled_grad(dout, out, m * F + f, act);
  s = device::block_sum(s);
  if (threadIdx.x == 0) dbias[f] += s;
}

// dweight[r, f] += sum over pooled positions m of g[m, f] * inp under tap r of the maximum's
// window. Grid: R*F blocks, block b for r = b / F, f = b % F.
__global__ void __launch_bounds__(kReduceThreads)
    dweight_kernel(float* dweight, const float* dout, const float* out, const int32_t* argmax,
                   const float* inp, Conv2dGeometry g, Pool2dGeometry p, Activation act) {
  const int f = static_cast<int>(blockIdx.x % g.F);
  const int r = static_cast<int>(blockIdx.x / g.F);
  const int c = r % g.C, tap = r / g.C, kh = tap / g.KW, kw = tap % g.KW;
  const int64_t per_image = int64_t(p.HO) * p.WO, positions = int64_t(p.N) * per_image;
  float s = 0.0f;
  for (int64_t m = threadIdx.x; m < positions; m += blockDim.x) {
    const int64_t i = m * g.F + f;
    const int64_t n = m / per_image;
    const int ho = argmax[i] / g.WO, wo = argmax[i] % g.WO;
    const int ih = ho * g.SH - g.pad_top + kh, iw = wo * g.SW - g.pad_left + kw;
    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
    s += pooled_grad(dout, out, i, act) * inp[((n * g.H + ih) * g.W + iw) * g.C + c];
  }
  s = device::block_sum(s);
  if (threadIdx.x == 0) dweight[blockIdx.x] += s;  // blockIdx.x = r * F + f
}

// dinp[n,h,w,c] = sum over taps (kh,kw) whose output pixel (ho,wo) reads (h,w), over the pool
// windows holding (ho,wo) and the filters f whose maximum there is (ho,wo), of g * weight.
__global__ void dinp_kernel(float* dinp, const float* dout, const float* out, const int32_t* argmax,
                            const float* weight, Conv2dGeometry g, Pool2dGeometry p, Activation act) {
  const int64_t total = int64_t(g.N) * g.H * g.W * g.C;
  for (const int64_t i : device::grid_stride(total)) {
    const int c = static_cast<int>(i % g.C);
    int64_t rest = i / g.C;
    const int w = static_cast<int>(rest % g.W);
    rest /= g.W;
    const int h = static_cast<int>(rest % g.H);
    const int64_t n = rest / g.H;
    float acc = 0.0f;
    for (int kh = 0; kh < g.KH; ++kh) {
      const int th = h + g.pad_top - kh;
      if (th < 0 || th % g.SH != 0 || th / g.SH >= g.HO) continue;
      const int ho = th / g.SH;
      // Pool rows po with po*PSH - pad_top <= ho < po*PSH - pad_top + PH. The lower bound
      // divides a possibly negative numerator, which C++ rounds toward zero: wrong as a floor,
      // but then the true bound is <= 0 too, and max(0, .) gives the right 0.
      const int po_lo = max(0, (ho + p.pad_top - p.PH + p.SH) / p.SH),
                po_hi = min(p.HO - 1, (ho + p.pad_top) / p.SH);
      for (int kw = 0; kw < g.KW; ++kw) {
        const int tw = w + g.pad_left - kw;
        if (tw < 0 || tw % g.SW != 0 || tw / g.SW >= g.WO) continue;
        const int wo = tw / g.SW;
        const int qo_lo = max(0, (wo + p.pad_left - p.PW + p.SW) / p.SW),
                  qo_hi = min(p.WO - 1, (wo + p.pad_left) / p.SW);
        const int32_t at = ho * g.WO + wo;
        const float* k = weight + ((int64_t(kh) * g.KW + kw) * g.C + c) * g.F;
        for (int po = po_lo; po <= po_hi; ++po) {
          for (int qo = qo_lo; qo <= qo_hi; ++qo) {
            const int64_t j0 = ((n * p.HO + po) * p.WO + qo) * g.F;
            for (int f = 0; f < g.F; ++f) {
              if (argmax[j0 + f] == at) acc += pooled_grad(dout, out, j0 + f, act) * k[f];
            }
          }
        }
      }
    }
    dinp[i] = acc;
  }
}

}  // namespace

void conv2d_act_pool_forward(const Conv2dActPoolForward<float>& k, cudaStream_t stream) {
  require_ungrouped(k.g, "cuda::conv2d_act_pool_forward");
  const int64_t total = int64_t(k.p.N) * k.p.HO * k.p.WO * k.p.C;
  if (total == 0) return;
  forward_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(k.out, k.argmax, k.inp, k.weight,
                                                                        k.bias, k.g, k.p, k.act);
  HISVID_CHECK_LAUNCH();
}

void conv2d_act_pool_backward(const Conv2dActPoolBackward<float>& k, cudaStream_t stream) {
  require_ungrouped(k.g, "cuda::conv2d_act_pool_backward");
  const Conv2dGeometry& g = k.g;
  const Pool2dGeometry& p = k.p;
  if (g.N == 0) return;
  const int64_t R = int64_t(g.KH) * g.KW * g.C;
  if (R * g.F > 0x7fffffff)
    throw std::runtime_error("hisvid::cuda::conv2d_act_pool_backward: kernel too large");
  if (k.dbias != nullptr) {
    dbias_kernel<<<g.F, kReduceThreads, 0, stream>>>(k.dbias, k.dout, k.out, int64_t(p.N) * p.HO * p.WO, g.F,
                                                     k.act);
    HISVID_CHECK_LAUNCH();
  }
  dweight_kernel<<<static_cast<unsigned int>(R * g.F), kReduceThreads, 0, stream>>>(
      k.dweight, k.dout, k.out, k.argmax, k.inp, g, p, k.act);
  HISVID_CHECK_LAUNCH();
  if (k.dinp != nullptr) {
    const int64_t total = int64_t(g.N) * g.H * g.W * g.C;
    dinp_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(k.dinp, k.dout, k.out, k.argmax,
                                                                       k.weight, g, p, k.act);
    HISVID_CHECK_LAUNCH();
  }
}

}  // namespace hisvid::cuda
