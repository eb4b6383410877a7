// kernels/conv2d_pool.cu — the fused convolution + activation + max-pool on CUDA (see
// kernels/conv2d_pool.h). Two versions, rows `cuda` (version 2) and `cuda.v1`.
//
// Version 2 (the `cuda` row):
//   forward          a direct convolution of kernels/conv2d_tiled.cuh (the strips kernel's
//                    16x16 tiles for 3x3 stride-1 layers of at least half a tile, else the tiled
//                    kernel's 8x8) with a pooling epilogue: each block's tile holds whole pool
//                    windows, so the block writes the activations of its tile to shared memory
//                    and pools them there; the convolution's full-size output never reaches
//                    device memory. For windows that straddle tiles (overlapping, padded
//                    before, or not dividing the tile), version 1.
//   backward dweight the sparse sums: the gradient reaches one position per window, so the
//   and dbias        weight's gradient sums over pooled positions only (1/(PH*PW) of the
//                    unfused work). Blocks take a chunk of pooled positions and 256 (filter,
//                    tap-channel) pairs, stage the chunk's gradients and maxima in shared
//                    memory and write one partial per chunk; a second kernel adds the
//                    partials in a fixed order (device::sum_rows_kernel).
//   backward dinp    with stride 1, the strips or the tiled kernel (chosen as forward) over
//                    the transposed geometry (the flipped kernel, as
//                    conv2d_backward_data_direct_v1), reading the output's gradient straight
//                    from the pooled gradients and the maxima (PooledGradSource): dz is never
//                    stored. Other strides: version 1's kernel.
// Version 1 (`cuda.v1`): plain kernels, no shared memory, no atomics.
//   forward          one thread per pooled element: the convolution at every position of its
//                    window, the activation, the first maximum
//   backward dbias   one block per filter, summing the pooled gradients g = dout * act'(out)
//                    (dout through the folded dropout's mask first, PooledGrad)
//   backward dweight one block per weight (r, f), summing g * the input under r at each maximum
//   backward dinp    one thread per input element, over the taps and filters whose maximum
//                    sat on an output pixel that reads it
// A folded dropout (PoolDropout) is applied where each version stores a pooled output, and to
// dout wherever a backward reads a pooled gradient: no pass of its own either way.
// Every sum reduces in a fixed order, so every run gives the same bits.
#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "kernels/conv2d_pool.h"
#include "kernels/conv2d_tiled.cuh"
#include "kernels/cuda_context.h"

namespace hisvid::cuda {

namespace {

constexpr int kReduceThreads = 256;

__global__ void forward_kernel(float* out, int32_t* argmax, const float* inp, const float* weight,
                               const float* bias, Conv2dGeometry g, Pool2dGeometry p, Activation act,
                               PoolDropout dropout) {
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
    out[i] = dropout.apply(best, i);
    if (argmax != nullptr) argmax[i] = best_at;
  }
}

// The gradient reaching z at the maximum of pooled element i: dout through the folded
// dropout's mask (the Dropout layer's backward), times act'(out).
struct PooledGrad {
  Activation act;
  PoolDropout dropout;
  __device__ __forceinline__ float operator()(const float* dout, const float* out, int64_t i) const {
    return dropout.apply(dout[i], i) * activation_grad_from_output(out[i], act);
  }
};

// dbias[f] += sum over pooled positions m of g[m, f]. Grid: F blocks.
__global__ void __launch_bounds__(kReduceThreads)
    dbias_kernel(float* dbias, const float* dout, const float* out, int64_t positions, int F,
                 PooledGrad grad) {
  const int f = blockIdx.x;
  float s = 0.0f;
  for (int64_t m = threadIdx.x; m < positions; m += blockDim.x) s += grad(dout, out, m * F + f);
  s = device::block_sum(s);
  if (threadIdx.x == 0) dbias[f] = s;
}

// dweight[r, f] += sum over pooled positions m of g[m, f] * inp under tap r of the maximum's
// window. Grid: R*F blocks, block b for r = b / F, f = b % F.
__global__ void __launch_bounds__(kReduceThreads)
    dweight_kernel(float* dweight, const float* dout, const float* out, const int32_t* argmax,
                   const float* inp, Conv2dGeometry g, Pool2dGeometry p, PooledGrad grad) {
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
    s += grad(dout, out, i) * inp[((n * g.H + ih) * g.W + iw) * g.C + c];
  }
  s = device::block_sum(s);
  if (threadIdx.x == 0) dweight[blockIdx.x] = s;  // blockIdx.x = r * F + f
}

// The pool windows (along one axis) that hold position x of the convolution's output: lo..hi,
// empty when lo > hi. Window o covers o*S - pad .. o*S - pad + P - 1. The lower bound divides
// a possibly negative numerator, which C++ rounds toward zero: wrong as a floor, but then the
// true bound is <= 0 too, and max(0, .) gives the right 0.
struct WindowSpan {
  int lo, hi;
};
__device__ __forceinline__ WindowSpan windows_over(int x, int pad, int P, int S, int windows) {
  return {max(0, (x + pad - P + S) / S), min(windows - 1, (x + pad) / S)};
}

// dinp[n,h,w,c] = sum over taps (kh,kw) whose output pixel (ho,wo) reads (h,w), over the pool
// windows holding (ho,wo) and the filters f whose maximum there is (ho,wo), of g * weight.
__global__ void dinp_kernel(float* dinp, const float* dout, const float* out, const int32_t* argmax,
                            const float* weight, Conv2dGeometry g, Pool2dGeometry p, PooledGrad grad) {
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
      const WindowSpan rows = windows_over(ho, p.pad_top, p.PH, p.SH, p.HO);
      for (int kw = 0; kw < g.KW; ++kw) {
        const int tw = w + g.pad_left - kw;
        if (tw < 0 || tw % g.SW != 0 || tw / g.SW >= g.WO) continue;
        const int wo = tw / g.SW;
        const WindowSpan cols = windows_over(wo, p.pad_left, p.PW, p.SW, p.WO);
        const int32_t at = ho * g.WO + wo;
        const float* k = weight + ((int64_t(kh) * g.KW + kw) * g.C + c) * g.F;
        for (int po = rows.lo; po <= rows.hi; ++po) {
          for (int qo = cols.lo; qo <= cols.hi; ++qo) {
            const int64_t j0 = ((n * p.HO + po) * p.WO + qo) * g.F;
            for (int f = 0; f < g.F; ++f) {
              if (argmax[j0 + f] == at) acc += grad(dout, out, j0 + f) * k[f];
            }
          }
        }
      }
    }
    dinp[i] = acc;
  }
}

// --- version 2 ------------------------------------------------------------------------------

using tiled::kBlockFilters;
using tiled::kThreadFilters;
using tiled::kTileH;

// The blocks' tile x tile outputs hold whole pool windows: windows side by side (strides equal
// to the window), none starting before the output (no padding before them; padding after, from
// 'same', only cuts the last windows short) and dividing the tile.
bool windows_tile(const Pool2dGeometry& p, int tile) {
  return p.PH >= 1 && p.PW >= 1 && p.SH == p.PH && p.SW == p.PW && p.pad_top == 0 && p.pad_left == 0 &&
         tile % p.PH == 0 && tile % p.PW == 0;
}

// The strips kernel (16x16 tiles) runs where it applies and at least half its threads have
// pixels (the LRCN's 64x64 and 16x16 layers, not its 4x4 and 2x2 ones); else the tiled one.
constexpr double kStripsFromTileUse = 0.5;
bool strips_suit(const Conv2dGeometry& g) {
  return tiled::strips_apply(g) && tiled::strip_tile_use(g) >= kStripsFromTileUse;
}

// The epilogue of the fused forward: the block's activations go to shared memory, (tile_h,
// tile_w, 16) floats, and each of the tile's windows for each of the block's filters is pooled
// by one thread, in row-major window order (the first maximum).
struct PoolTile {
  float* out;       // (N,PO,QO,F)
  int32_t* argmax;  // (N,PO,QO,F) or null
  Pool2dGeometry p;
  Activation act;
  PoolDropout dropout;
  static constexpr int kSharedFloats =
      tiled::kStripTile * tiled::kStripTile * kBlockFilters;  // the larger tile
  template <int Rows>
  __device__ __forceinline__ void operator()(const Conv2dGeometry& g, const tiled::TileAt& at,
                                             const float (&acc)[Rows][kThreadFilters], float* shared) const {
    __syncthreads();  // every thread is done with the staged input and weights
    float4* s_act4 = reinterpret_cast<float4*>(shared);  // (tile_h, tile_w, kBlockFilters)
#pragma unroll
    for (int r = 0; r < Rows; ++r) {
      s_act4[((at.py + r) * at.tile_w + at.px) * (kBlockFilters / 4) + at.group] =
          make_float4(activate(acc[r][0], act), activate(acc[r][1], act), activate(acc[r][2], act),
                      activate(acc[r][3], act));
    }
    __syncthreads();
    const float* s_act = shared;
    const int down = at.tile_h / p.PH, across = at.tile_w / p.PW;
    for (int i = threadIdx.x; i < down * across * kBlockFilters; i += blockDim.x) {
      const int fl = i % kBlockFilters, w = i / kBlockFilters, wy = w / across, wx = w % across;
      const int po = at.tile_y * down + wy, qo = at.tile_x * across + wx, f = at.f0 + fl;
      if (f >= at.f_end || po >= p.HO || qo >= p.WO) continue;
      float best = 0.0f;
      int32_t best_at = -1;
      for (int ph = 0; ph < p.PH; ++ph) {
        const int ty = wy * p.PH + ph, ho = at.tile_y * at.tile_h + ty;  // = po*PH + ph
        if (ho >= g.HO) break;
        for (int pw = 0; pw < p.PW; ++pw) {
          const int tx = wx * p.PW + pw, wo = at.tile_x * at.tile_w + tx;
          if (wo >= g.WO) break;
          const float y = s_act[(ty * at.tile_w + tx) * kBlockFilters + fl];
          if (best_at < 0 || y > best) best = y, best_at = ho * g.WO + wo;
        }
      }
      const int64_t o = ((at.n * p.HO + po) * p.WO + qo) * p.C + f;
      out[o] = dropout.apply(best, o);
      if (argmax != nullptr) argmax[o] = best_at;
    }
  }
};

// dz (N,HO,WO,F), the gradient of the convolution's output, at (n, ho, wo, f): the sum of the
// pooled gradients g (PooledGrad) of the windows whose maximum sat there, in row-major window
// order (the naive row's order).
struct PooledGradSource {
  const float* dout;
  const float* out;
  const int32_t* argmax;
  Pool2dGeometry p;
  int WO;
  PooledGrad grad;
  __device__ __forceinline__ float operator()(int64_t n, int ho, int wo, int f) const {
    const WindowSpan rows = windows_over(ho, p.pad_top, p.PH, p.SH, p.HO),
                     cols = windows_over(wo, p.pad_left, p.PW, p.SW, p.WO);
    const int32_t here = ho * WO + wo;
    float s = 0.0f;
#pragma unroll 1
    for (int po = rows.lo; po <= rows.hi; ++po) {
#pragma unroll 1
      for (int qo = cols.lo; qo <= cols.hi; ++qo) {
        const int64_t i = ((n * p.HO + po) * p.WO + qo) * p.C + f;
        if (argmax[i] == here) s += grad(dout, out, i);
      }
    }
    return s;
  }
};

constexpr int kPairThreads = 256;  // (filter, tap-channel) pairs per block of the sparse sums
constexpr int kStaged = 1024;      // (pooled position, filter) entries staged at a time

// partial (chunks, F, R+1), R = KH*KW*C: for the pooled positions m of chunk z,
//   partial[z][f][r] = sum over m of g[m,f] * inp under tap-channel r (r = (kh*KW + kw)*C + c)
//                      of the output pixel where (m,f)'s maximum sat, r < R;
//   partial[z][f][R] = sum over m of g[m,f] (the bias's gradient).
// Grid: x tiles of 256 pairs j = f*(R+1) + r, y chunks of chunk_m positions (consecutive
// threads take neighbouring taps and channels of one filter: one input patch, one staged
// gradient). The chunk's gradients and maxima' input corners are staged kStaged / F positions
// at a time. Zero gradients (relu's zeros, dropout's) are skipped, as the cpu row does (the
// naive row's dense sums would turn 0 * an infinite input into NaN; these, like the cpu row's,
// leave it out).
template <typename Index>
__global__ void __launch_bounds__(kPairThreads)
    sparse_filter_partial_kernel(float* partial, const float* dout, const float* out, const int32_t* argmax,
                                 const float* inp, Conv2dGeometry g, Pool2dGeometry p, PooledGrad grad,
                                 int64_t chunk_m) {
  __shared__ float s_g[kStaged];
  __shared__ int s_ih[kStaged], s_iw[kStaged];  // the maximum's input corner (may lie in the padding)
  __shared__ int64_t s_image[kStaged];          // where the position's image starts in inp
  const int F = g.F, R = g.KH * g.KW * g.C, pairs = F * (R + 1);
  const int j = blockIdx.x * kPairThreads + threadIdx.x;
  const bool active = j < pairs;
  const int f = active ? j / (R + 1) : 0, r = active ? j % (R + 1) : R;
  const int c = r % g.C, tap = r / g.C, kh = tap / g.KW, kw = tap % g.KW;
  const Index per_image = static_cast<Index>(p.HO) * static_cast<Index>(p.WO);
  const int64_t M = int64_t(p.N) * p.HO * p.WO, image_floats = int64_t(g.H) * g.W * g.C;
  const int64_t m_begin = int64_t(blockIdx.y) * chunk_m, m_end = min(M, m_begin + chunk_m);
  const int step = kStaged / F;
  float s = 0.0f;
  for (int64_t m0 = m_begin; m0 < m_end; m0 += step) {
    const int count = static_cast<int>(min(int64_t(step), m_end - m0));
    __syncthreads();  // the previous positions are no longer being read
    for (int e = threadIdx.x; e < count * F; e += blockDim.x) {
      const int64_t i = m0 * F + e;
      const int32_t at = argmax[i];
      const int ho = at / g.WO, wo = at - ho * g.WO;
      s_g[e] = grad(dout, out, i);
      s_ih[e] = ho * g.SH - g.pad_top;
      s_iw[e] = wo * g.SW - g.pad_left;
    }
    for (int mm = threadIdx.x; mm < count; mm += blockDim.x) {
      s_image[mm] = int64_t(static_cast<Index>(m0 + mm) / per_image) * image_floats;
    }
    __syncthreads();
    if (!active) continue;
    if (r == R) {
      for (int mm = 0; mm < count; ++mm) s += s_g[mm * F + f];
      continue;
    }
    for (int mm = 0; mm < count; ++mm) {
      const int e = mm * F + f;
      const float gv = s_g[e];
      if (gv == 0.0f) continue;
      const int ih = s_ih[e] + kh, iw = s_iw[e] + kw;
      if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
      s += gv * inp[s_image[mm] + (int64_t(ih) * g.W + iw) * g.C + c];
    }
  }
  if (active) partial[int64_t(blockIdx.y) * pairs + j] = s;
}

// Column j of the partials' sum (partial (chunks, F, R+1)) is dweight (R,F)'s element (r, f)
// (r < R) or dbias (F)'s f (r = R, when not null).
struct AddPairSum {
  float* dweight;
  float* dbias;
  int F, R;
  __device__ void operator()(int64_t j, float total) const {
    const int f = static_cast<int>(j / (R + 1)), r = static_cast<int>(j % (R + 1));
    if (r < R) {
      dweight[int64_t(r) * F + f] = total;
    } else if (dbias != nullptr) {
      dbias[f] = total;
    }
  }
};

// The weight and bias gradients of a call with no pooled position: zeros (the rows write them,
// they do not add to them).
void zero_filter_grads(const Conv2dActPoolBackward<float>& k, cudaStream_t stream) {
  const size_t weights = size_t(k.g.KH) * k.g.KW * k.g.C * k.g.F;
  CUDA_CHECK(cudaMemsetAsync(k.dweight, 0, sizeof(float) * weights, stream));
  if (k.dbias != nullptr) CUDA_CHECK(cudaMemsetAsync(k.dbias, 0, sizeof(float) * size_t(k.g.F), stream));
}

}  // namespace

void conv2d_act_pool_forward_v1(const Conv2dActPoolForward<float>& k, cudaStream_t stream) {
  require_fusable(k, "cuda::conv2d_act_pool_forward_v1");
  const int64_t total = int64_t(k.p.N) * k.p.HO * k.p.WO * k.p.C;
  if (total == 0) return;
  forward_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(k.out, k.argmax, k.inp, k.weight,
                                                                        k.bias, k.g, k.p, k.act, k.dropout);
  HISVID_CHECK_LAUNCH();
}

void conv2d_act_pool_backward_v1(const Conv2dActPoolBackward<float>& k, cudaStream_t stream) {
  require_fusable(k, "cuda::conv2d_act_pool_backward_v1");
  const PooledGrad grad{k.act, k.dropout};
  const Conv2dGeometry& g = k.g;
  const Pool2dGeometry& p = k.p;
  if (g.N == 0) return zero_filter_grads(k, stream);
  const int64_t R = int64_t(g.KH) * g.KW * g.C;
  if (R * g.F > 0x7fffffff)
    throw std::runtime_error("hisvid::cuda::conv2d_act_pool_backward_v1: kernel too large");
  if (k.dbias != nullptr) {
    dbias_kernel<<<g.F, kReduceThreads, 0, stream>>>(k.dbias, k.dout, k.out, int64_t(p.N) * p.HO * p.WO, g.F,
                                                     grad);
    HISVID_CHECK_LAUNCH();
  }
  dweight_kernel<<<static_cast<unsigned int>(R * g.F), kReduceThreads, 0, stream>>>(
      k.dweight, k.dout, k.out, k.argmax, k.inp, g, p, grad);
  HISVID_CHECK_LAUNCH();
  if (k.dinp != nullptr) {
    const int64_t total = int64_t(g.N) * g.H * g.W * g.C;
    dinp_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(k.dinp, k.dout, k.out, k.argmax,
                                                                       k.weight, g, p, grad);
    HISVID_CHECK_LAUNCH();
  }
}

void conv2d_act_pool_forward(const Conv2dActPoolForward<float>& k, cudaStream_t stream) {
  require_fusable(k, "cuda::conv2d_act_pool_forward");
  const Conv2dGeometry& g = k.g;
  if (!conv2d_geometry_valid(g))
    throw std::invalid_argument("cuda::conv2d_act_pool_forward: invalid geometry");
  if (int64_t(k.p.N) * k.p.HO * k.p.WO * k.p.C == 0) return;
  const tiled::InputSource source{k.inp, g.H, g.W, g.C};
  const PoolTile pool{k.out, k.argmax, k.p, k.act, k.dropout};
  if (strips_suit(g) && windows_tile(k.p, tiled::kStripTile)) {
    tiled::launch_strips(source, pool, k.weight, k.bias, g, stream, "conv2d_act_pool_forward");
  } else if (tiled::tiled_channels(g) >= 1 && windows_tile(k.p, kTileH)) {
    tiled::launch_tiled(source, pool, k.weight, k.bias, g, stream, "conv2d_act_pool_forward");
  } else {
    conv2d_act_pool_forward_v1(k, stream);
  }
}

void conv2d_act_pool_backward(const Conv2dActPoolBackward<float>& k, cudaStream_t stream) {
  require_fusable(k, "cuda::conv2d_act_pool_backward");
  const PooledGrad grad{k.act, k.dropout};
  const Conv2dGeometry& g = k.g;
  if (!conv2d_geometry_valid(g))
    throw std::invalid_argument("cuda::conv2d_act_pool_backward: invalid geometry");
  const Pool2dGeometry& p = k.p;
  const int64_t M = int64_t(p.N) * p.HO * p.WO;  // pooled positions
  const int64_t R = int64_t(g.KH) * g.KW * g.C, pairs = g.F * (R + 1);
  // The kernel's pair index j = blockIdx.x * kPairThreads + threadIdx.x is an int: the whole
  // grid's threads must fit in one.
  if (g.F > kStaged || pairs > 0x7fffffff - kPairThreads) return conv2d_act_pool_backward_v1(k, stream);
  if (M > 0) {
    Context& ctx = context_for_stream(stream, "conv2d_act_pool_backward");
    const int64_t pair_tiles = (pairs + kPairThreads - 1) / kPairThreads;
    // About 8 blocks per multiprocessor, each chunk at least one position.
    int64_t chunks =
        std::min<int64_t>(M, std::max<int64_t>(1, (8 * multiprocessors() + pair_tiles - 1) / pair_tiles));
    const int64_t chunk_m = (M + chunks - 1) / chunks;
    chunks = (M + chunk_m - 1) / chunk_m;
    // At most 8 chunks per multiprocessor: far under the grid's 65535 rows.
    if (chunks > 65535) throw std::runtime_error("hisvid::cuda::conv2d_act_pool_backward: too many chunks");
    float* partial =
        static_cast<float*>(ctx.workspace(sizeof(float) * size_t(chunks * pairs)));  // (chunks, F, R+1)
    const dim3 grid(static_cast<unsigned int>(pair_tiles), static_cast<unsigned int>(chunks));
    with_index_type(M, [&](auto index) {
      sparse_filter_partial_kernel<decltype(index)>
          <<<grid, kPairThreads, 0, stream>>>(partial, k.dout, k.out, k.argmax, k.inp, g, p, grad, chunk_m);
    });
    HISVID_CHECK_LAUNCH();
    device::sum_rows_kernel<<<device::sum_rows_blocks(pairs),
                              dim3(device::kSumRowsColumns, device::kSumRowsLanes), 0, stream>>>(
        partial, chunks, pairs, AddPairSum{k.dweight, k.dbias, g.F, int(R)});
    HISVID_CHECK_LAUNCH();
  } else {
    zero_filter_grads(k, stream);
  }
  if (k.dinp == nullptr) return;
  const Conv2dGeometry t = tiled::transposed_geometry(g);
  if (g.SH != 1 || g.SW != 1 || tiled::tiled_channels(t) < 1) {
    const int64_t total = int64_t(g.N) * g.H * g.W * g.C;
    if (total == 0) return;
    dinp_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(k.dinp, k.dout, k.out, k.argmax,
                                                                       k.weight, g, p, grad);
    HISVID_CHECK_LAUNCH();
    return;
  }
  if (g.N == 0) return;
  // Asks for workspace after every use of the partials has been enqueued.
  const float* flipped = tiled::flipped_weight(k.weight, g, stream, "conv2d_act_pool_backward");
  const PooledGradSource dz{k.dout, k.out, k.argmax, p, g.WO, grad};
  if (strips_suit(t)) {
    tiled::launch_strips(dz, tiled::StoreOutput{k.dinp}, flipped, nullptr, t, stream,
                         "conv2d_act_pool_backward");
  } else {
    tiled::launch_tiled(dz, tiled::StoreOutput{k.dinp}, flipped, nullptr, t, stream,
                        "conv2d_act_pool_backward");
  }
}

}  // namespace hisvid::cuda
