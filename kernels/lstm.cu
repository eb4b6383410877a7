// CUDA versions of kernels/lstm.h. The gate step: one thread per (row, unit), the four gates
// of that unit read from the four U-wide blocks of the row. The sequence: one block per
// sample for all T steps (persistent), its state and R in shared memory. Math through the
// shared helpers of kernels/common.h and kernels/lstm.h (activate, lstm_unit_forward, ...), so
// it is the CPU's math.
#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/cuda_context.h"
#include "kernels/lstm.h"

namespace hisvid::cuda {

namespace {

// h (M,U), c (M,U), gates (M,G*U) from z (M,G*U) and c_prev (M,U) (null: zeros)
__global__ void lstm_cell_forward_kernel(float* h, float* c, float* gates, const float* z,
                                         const float* c_prev, int64_t M, int64_t U, Activation act,
                                         Activation rec_act) {
  const int64_t total = M * U;
  for (const int64_t k : device::grid_stride(total)) {
    const int64_t m = k / U, u = k - m * U;
    const float* zr = z + m * 4 * U + u;
    float* gr = gates + m * 4 * U + u;
    const float i = activate(zr[0], rec_act);
    const float f = activate(zr[U], rec_act);
    const float g = activate(zr[2 * U], act);
    const float o = activate(zr[3 * U], rec_act);
    const float cp = c_prev != nullptr ? c_prev[k] : 0.0f;
    const float cn = f * cp + i * g;
    c[k] = cn;
    h[k] = o * activate(cn, act);
    gr[0] = i;
    gr[U] = f;
    gr[2 * U] = g;
    gr[3 * U] = o;
  }
}

// dz (M,G*U) and dc_prev (M,U) (skipped when null) from dh (M,U), dc (M,U) (null: zeros),
// gates (M,G*U), c (M,U), c_prev (M,U) (null: zeros)
__global__ void lstm_cell_backward_kernel(float* dz, float* dc_prev, const float* dh, const float* dc,
                                          const float* gates, const float* c, const float* c_prev, int64_t M,
                                          int64_t U, Activation act, Activation rec_act) {
  const int64_t total = M * U;
  for (const int64_t k : device::grid_stride(total)) {
    const int64_t m = k / U, u = k - m * U;
    const float* gr = gates + m * 4 * U + u;
    float* dzr = dz + m * 4 * U + u;
    const float i = gr[0], f = gr[U], g = gr[2 * U], o = gr[3 * U];
    const float cp = c_prev != nullptr ? c_prev[k] : 0.0f;
    const float tc = activate(c[k], act);
    const float dhk = dh[k];
    // Gradient reaching c: from the next step, and through h = o * act(c).
    const float dc_total = (dc != nullptr ? dc[k] : 0.0f) + dhk * o * activation_grad_from_output(tc, act);
    dzr[0] = dc_total * g * activation_grad_from_output(i, rec_act);
    dzr[U] = dc_total * cp * activation_grad_from_output(f, rec_act);
    dzr[2 * U] = dc_total * i * activation_grad_from_output(g, act);
    dzr[3 * U] = dhk * tc * activation_grad_from_output(o, rec_act);
    if (dc_prev != nullptr) dc_prev[k] = dc_total * f;
  }
}

// --- one ConvLSTM2D step over its buffers, one thread per (pixel, filter) ------------------

// The unit step of (pixel m, filter f) once its 4 gate sums z (xz included) are known: the
// activated gates, c_t, hm_t (times each gate's mask), h_seq and h_last.
__device__ __forceinline__ void finish_step_forward(const ConvLstmStepForward<float>& k, int64_t m, int64_t f,
                                                    int64_t sample_row, const float (&z)[4]) {
  const int64_t M = k.N * k.P(), F = k.F, t = k.t, e = m * F + f;
  const int64_t slot = t % k.history, prev = (t + k.history - 1) % k.history;
  const float c_prev = t > 0 ? k.c[prev * M * F + e] : 0.0f;
  const LstmUnit<float> s = lstm_unit_forward(z[0], z[1], z[2], z[3], c_prev, k.act, k.rec_act);
  float* gates = k.gates + (slot * M + m) * 4 * F + f;
  gates[0] = s.i, gates[F] = s.f, gates[2 * F] = s.g, gates[3 * F] = s.o;
  k.c[slot * M * F + e] = s.c;
  if (k.masks != nullptr) {
    for (int64_t q = 0; q < 4; ++q) k.hm[k.hm_at(q, slot, m, f)] = s.h * k.masks[q * M * F + e];
  } else {
    k.hm[k.hm_at(0, slot, m, f)] = s.h;
  }
  if (k.h_seq != nullptr) k.h_seq[sample_row * F + f] = s.h;
  if (k.h_last != nullptr && t == k.steps - 1) k.h_last[e] = s.h;
}

// The recurrent convolution is computed in place, each thread its 4 gates' sums over the window
// (conv2d_at: hm_{t-1} and R through the caches), so one launch makes the whole step.
__global__ void convlstm_step_forward_kernel(ConvLstmStepForward<float> k) {
  const int64_t P = k.P(), M = k.N * P, F = k.F, S = k.steps, t = k.t, total = M * F;
  const int64_t prev = (t + k.history - 1) % k.history;
  const Conv2dGeometry conv = k.recurrent_conv();
  const float* hm_prev = k.hm + k.hm_at(0, prev, 0, 0);
  for (const int64_t e : device::grid_stride(total)) {
    const int64_t m = e / F, f = e - m * F, n = m / P, p = m - n * P, sample_row = (n * S + t) * P + p;
    const int y = static_cast<int>(p / k.W), x = static_cast<int>(p - y * k.W);
    const float* xz = k.xz + sample_row * 4 * F + f;
    float z[4];
    for (int64_t q = 0; q < 4; ++q) {
      z[q] = xz[q * F] + (t > 0 ? conv2d_at(hm_prev, k.R, static_cast<const float*>(nullptr), conv, n, y, x,
                                            int(q * F + f))
                                : 0.0f);
    }
    finish_step_forward(k, m, f, sample_row, z);
  }
}

// The unit step's gradients of (pixel m, filter f) once dh, the whole gradient reaching h_t, is
// known: dz_t into dxz and dzg, and the gradient reaching c_{t-1} into dc.
__device__ __forceinline__ void finish_step_backward(const ConvLstmStepBackward<float>& k, int64_t m,
                                                     int64_t f, int64_t sample_row, float dh) {
  const int64_t M = k.N * k.P(), F = k.F, t = k.t, e = m * F + f;
  const float* gates = k.gates + (t * M + m) * 4 * F + f;
  const LstmUnit<float> s{gates[0], gates[F], gates[2 * F], gates[3 * F], k.c[t * M * F + e], 0.0f};
  const float c_prev = t > 0 ? k.c[(t - 1) * M * F + e] : 0.0f;
  const LstmUnitGrad<float> d = lstm_unit_backward(dh, k.dc[e], s, c_prev, k.act, k.rec_act);
  const float dz[4] = {d.dz_i, d.dz_f, d.dz_c, d.dz_o};
  float* dxz = k.dxz + sample_row * 4 * F + f;
  for (int64_t q = 0; q < 4; ++q) {
    dxz[q * F] = dz[q];
    k.dzg[k.dzg_at(q, t, m, f)] = dz[q];
  }
  k.dc[e] = d.dc_prev;
}

// What step t+1's recurrent convolution sends back to h_t is gathered in place from dz_{t+1}
// (conv2d_input_grad_at), so one launch makes the whole step.
__global__ void convlstm_step_backward_kernel(ConvLstmStepBackward<float> k) {
  const int64_t P = k.P(), M = k.N * P, F = k.F, S = k.steps, t = k.t, total = M * F;
  const Conv2dGeometry conv = k.recurrent_conv();
  const float* dz_next = t < S - 1 ? k.dzg + k.dzg_at(0, t + 1, 0, 0) : nullptr;
  const int copies = k.masks != nullptr ? 4 : 1;
  for (const int64_t e : device::grid_stride(total)) {
    const int64_t m = e / F, f = e - m * F, n = m / P, p = m - n * P, sample_row = (n * S + t) * P + p;
    const int y = static_cast<int>(p / k.W), x = static_cast<int>(p - y * k.W);
    float dh = k.dh_seq != nullptr ? k.dh_seq[sample_row * F + f] : (t == S - 1 ? k.dh_last[e] : 0.0f);
    for (int q = 0; q < copies && dz_next != nullptr; ++q) {
      const float back = conv2d_input_grad_at(dz_next, k.R, conv, n, y, x, int(q * F + f));
      dh += k.masks != nullptr ? back * k.masks[q * M * F + e] : back;
    }
    finish_step_backward(k, m, f, sample_row, dh);
  }
}

// --- one ConvLSTM2D step, tiles in shared memory (tiles) -------------------------------------
//
// The v1 and lanes_v2 kernels read hm_{t-1}'s window and R through the caches, KH*KW*F words of
// each per gate per thread. Here a block takes an 8x8 tile of one sample's pixels and all F
// units (64*F threads, F <= 16), thread (pixel, unit f). Gate by gate it stages in shared memory
// hm_{t-1}'s window of the tile, (8+KH-1) x (8+KW-1) x F (gate q's masked copy with masks; the
// one copy, staged once, without) and gate q's F x F columns of R per tap, then each thread adds
// its pixel's gate-q sum from there (without masks, where they fit, the window and all of R at
// once, every gate in one pass: step_all_gates); then the unit step as v1 (finish_step_forward). The
// backward kernel (below) works the same way over dz_{t+1}. Layers with more than 16 filters, or
// whose window and R do not fit in 48 KiB, run v1.

constexpr int kStepTile = 8, kStepTileMaxF = 16;

constexpr size_t kStepSharedBytes = 48 * 1024;

// Floats of a tiles kernel's shared memory: the window, then gate q's columns of R (gates = 1)
// or all of R (gates = 4).
template <typename Step>
HISVID_HD size_t step_tile_floats(const Step& k, int gates) {
  return size_t(k.F) * (kStepTile + k.KH - 1) * (kStepTile + k.KW - 1) +
         size_t(k.KH) * k.KW * k.F * gates * k.F;
}

// The forward kernel takes all four gates from one staging of the window and all of R where
// there are no masks (one copy of hm) and both fit: 4 multiply-adds per 5 shared loads and 2
// barriers per step, against gate by gate's 1 per 2 and 8.
HISVID_HD bool step_all_gates(const ConvLstmStepForward<float>& k) {
  return k.masks == nullptr && step_tile_floats(k, 4) * sizeof(float) <= kStepSharedBytes;
}

template <typename Step>
size_t step_shared_bytes(const Step& k) {
  if constexpr (std::is_same_v<Step, ConvLstmStepForward<float>>) {
    if (step_all_gates(k)) return sizeof(float) * step_tile_floats(k, 4);
  }
  return sizeof(float) * step_tile_floats(k, 1);
}

template <typename Step>
bool step_tiles_apply(const Step& k) {
  return k.F <= kStepTileMaxF && k.N <= 65535 && step_tile_floats(k, 1) * sizeof(float) <= kStepSharedBytes;
}

// Launches a tiles kernel over k's images, or returns false where it does not apply.
template <typename Step>
bool launch_step_tiles(void (*kernel)(Step), const Step& k, cudaStream_t stream) {
  if (!step_tiles_apply(k)) return false;
  const int64_t tiles = ((k.H + kStepTile - 1) / kStepTile) * ((k.W + kStepTile - 1) / kStepTile);
  if (tiles > 0x7fffffff) throw std::runtime_error("hisvid::cuda::convlstm step tiles: image too large");
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(k.N));
  kernel<<<grid, static_cast<unsigned>(64 * k.F), step_shared_bytes(k), stream>>>(k);
  HISVID_CHECK_LAUNCH();
  return true;
}

// A tiles kernel's block and thread: sample n, the block's tile (tile_y, tile_x) of 8x8
// pixels, the thread's pixel (y, x) (py, px in the tile) and unit f, whether the pixel is in the
// image, the window's extent TIH x TIW, and the two parts of the shared memory: the window
// (F, TIH, TIW), then gate q's columns of R (KH*KW, F, F), or all of R (KH,KW,F,4F) on the
// forward kernel's all-gates path.
struct StepTile {
  int64_t n;
  int F, KH, KW, H, W, TIH, TIW, tile_y, tile_x, f, py, px, y, x;
  bool inside;
  float* window;
  float* r;
};

template <typename Step>
__device__ __forceinline__ StepTile step_tile(const Step& k, float* shared) {
  StepTile s;
  s.n = blockIdx.y;
  s.F = static_cast<int>(k.F), s.KH = static_cast<int>(k.KH), s.KW = static_cast<int>(k.KW);
  s.H = static_cast<int>(k.H), s.W = static_cast<int>(k.W);
  s.TIH = kStepTile + s.KH - 1, s.TIW = kStepTile + s.KW - 1;
  const int tiles_w = (s.W + kStepTile - 1) / kStepTile;
  s.tile_y = static_cast<int>(blockIdx.x) / tiles_w, s.tile_x = static_cast<int>(blockIdx.x) % tiles_w;
  s.f = static_cast<int>(threadIdx.x) % s.F;
  const int pixel = static_cast<int>(threadIdx.x) / s.F;
  s.py = pixel / kStepTile, s.px = pixel % kStepTile;
  s.y = s.tile_y * kStepTile + s.py, s.x = s.tile_x * kStepTile + s.px;
  s.inside = s.y < s.H && s.x < s.W;
  s.window = shared;
  s.r = shared + s.F * s.TIH * s.TIW;
  return s;
}

// Stages into s.window the window of rows y0.., columns x0.. of copy q of a (N,H,W,copies,F)
// tensor for sample s.n, zeros outside the image. The caller synchronises before and after.
__device__ __forceinline__ void stage_window(const StepTile& s, const float* src, int copies, int q, int y0,
                                             int x0) {
  const int64_t P = int64_t(s.H) * s.W;
  for (int i = threadIdx.x; i < s.F * s.TIH * s.TIW; i += blockDim.x) {
    const int c = i % s.F, rest = i / s.F, col = rest % s.TIW, row = rest / s.TIW;
    const int ih = y0 + row, iw = x0 + col;
    s.window[(c * s.TIH + row) * s.TIW + col] =
        ih >= 0 && ih < s.H && iw >= 0 && iw < s.W
            ? src[((s.n * P + int64_t(ih) * s.W + iw) * copies + q) * s.F + c]
            : 0.0f;
  }
}

// Stages gate q's columns of R (KH,KW,F,4F) into s.r: (KH*KW, F in, F out), or (KH*KW, F out,
// F in) when `transposed` (the backward kernel's reads then walk consecutive words across a
// warp's units, as the forward kernel's do). The caller synchronises before and after.
__device__ __forceinline__ void stage_gate_columns(const StepTile& s, const float* R, int q,
                                                   bool transposed) {
  for (int i = threadIdx.x; i < s.KH * s.KW * s.F * s.F; i += blockDim.x) {
    const int b = i % s.F, rest = i / s.F, a = rest % s.F, tap = rest / s.F;  // i = (tap*F + a)*F + b
    const int cin = transposed ? b : a, out = transposed ? a : b;
    s.r[i] = R[(int64_t(tap) * s.F + cin) * 4 * s.F + q * s.F + out];
  }
}

// Grid: x the 8x8 tiles of an image, y samples. Dynamic shared memory: the window (F, TIH, TIW),
// then gate q's columns of R (KH*KW, F, F), or all of R (KH,KW,F,4F) where step_all_gates.
__global__ void __launch_bounds__(64 * kStepTileMaxF)
    convlstm_step_forward_tiles_kernel(ConvLstmStepForward<float> k) {
  extern __shared__ float step_shared[];
  const StepTile s = step_tile(k, step_shared);
  const int64_t P = k.P(), t = k.t;
  float z[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (t > 0) {
    const Conv2dGeometry conv = k.recurrent_conv();
    const float* hm_prev = k.hm + k.hm_at(0, (t + k.history - 1) % k.history, 0, 0);
    const int copies = k.masks != nullptr ? 4 : 1;
    const int y0 = s.tile_y * kStepTile - conv.pad_top, x0 = s.tile_x * kStepTile - conv.pad_left;
    const bool all_gates = step_all_gates(k);
    if (all_gates) {  // the window once, all of R (KH,KW,F,4F) as it is
      stage_window(s, hm_prev, 1, 0, y0, x0);
      for (int i = threadIdx.x; i < s.KH * s.KW * s.F * 4 * s.F; i += blockDim.x) s.r[i] = k.R[i];
      __syncthreads();
      if (s.inside) {
        for (int kh = 0; kh < s.KH; ++kh) {
          for (int kw = 0; kw < s.KW; ++kw) {
            const float* win = s.window + (s.py + kh) * s.TIW + s.px + kw;
            const float* r = s.r + (kh * s.KW + kw) * s.F * 4 * s.F + s.f;
            for (int cin = 0; cin < s.F; ++cin) {
              const float v = win[cin * s.TIH * s.TIW];
              const float* rc = r + cin * 4 * s.F;
              z[0] += v * rc[0];
              z[1] += v * rc[s.F];
              z[2] += v * rc[2 * s.F];
              z[3] += v * rc[3 * s.F];
            }
          }
        }
      }
    }
    for (int q = 0; q < 4 && !all_gates; ++q) {
      __syncthreads();  // the previous gate's window and R are no longer read
      if (q < copies) stage_window(s, hm_prev, copies, q, y0, x0);
      stage_gate_columns(s, k.R, q, false);
      __syncthreads();
      if (s.inside) {
        float acc = 0.0f;
        for (int kh = 0; kh < s.KH; ++kh) {
          for (int kw = 0; kw < s.KW; ++kw) {
            const float* win = s.window + (s.py + kh) * s.TIW + s.px + kw;
            const float* r = s.r + (kh * s.KW + kw) * s.F * s.F + s.f;
            for (int cin = 0; cin < s.F; ++cin) acc += win[cin * s.TIH * s.TIW] * r[cin * s.F];
          }
        }
        z[q] = acc;
      }
    }
  }
  if (!s.inside) return;  // after the block's last barrier
  const int64_t pixel = int64_t(s.y) * s.W + s.x, m = s.n * P + pixel,
                sample_row = (s.n * k.steps + t) * P + pixel;
  for (int q = 0; q < 4; ++q) z[q] = k.xz[sample_row * 4 * s.F + q * s.F + s.f] + z[q];
  finish_step_forward(k, m, s.f, sample_row, z);
}

// Backward likewise: a block per 8x8 tile of one sample and all F units, thread (pixel, unit f).
// Gate by gate it stages dz_{t+1}'s gate-q outputs over the tile's window of the transposed
// convolution ((8+KH-1) x (8+KW-1) x F, offset by KH-1-pad_top and KW-1-pad_left) and gate q's
// columns of R (transposed: (KH*KW, F out, F in)), and each thread adds its pixel's share of the
// gradient reaching h_t through gate q (times gate q's mask with masks: copy q of hm); then the
// unit step as v1 (finish_step_backward). Without masks the sum over R's 4F columns is taken
// gate by gate, in another order than v1's.

// Grid and shared memory as convlstm_step_forward_tiles_kernel's: dz_{t+1}'s window (F, TIH,
// TIW), then gate q's columns of R (KH*KW, F, F).
__global__ void __launch_bounds__(64 * kStepTileMaxF)
    convlstm_step_backward_tiles_kernel(ConvLstmStepBackward<float> k) {
  extern __shared__ float step_shared[];
  const StepTile s = step_tile(k, step_shared);
  const int64_t P = k.P(), M = k.N * P, t = k.t;
  const int64_t pixel = int64_t(s.y) * s.W + s.x, m = s.n * P + pixel, e = m * s.F + s.f,
                sample_row = (s.n * k.steps + t) * P + pixel;
  float dh = 0.0f;
  if (s.inside)
    dh = k.dh_seq != nullptr ? k.dh_seq[sample_row * s.F + s.f] : (t == k.steps - 1 ? k.dh_last[e] : 0.0f);
  if (t < k.steps - 1) {
    const Conv2dGeometry conv = k.recurrent_conv();
    const float* dz_next = k.dzg + k.dzg_at(0, t + 1, 0, 0);  // (M, 4, F)
    const int y0 = s.tile_y * kStepTile - (s.KH - 1 - conv.pad_top),
              x0 = s.tile_x * kStepTile - (s.KW - 1 - conv.pad_left);
    for (int q = 0; q < 4; ++q) {
      __syncthreads();  // the previous gate's window and R are no longer read
      stage_window(s, dz_next, 4, q, y0, x0);
      stage_gate_columns(s, k.R, q, true);
      __syncthreads();
      if (s.inside) {
        float acc = 0.0f;  // over taps and gate q's outputs o: dz_{t+1} * R[tap][f][q*F + o]
        for (int kh = 0; kh < s.KH; ++kh) {
          for (int kw = 0; kw < s.KW; ++kw) {
            const float* d = s.window + (s.py + s.KH - 1 - kh) * s.TIW + s.px + s.KW - 1 - kw;
            const float* r = s.r + (kh * s.KW + kw) * s.F * s.F + s.f;  // R[tap][f][q*F + o] at r[o*F]
            for (int o = 0; o < s.F; ++o) acc += d[o * s.TIH * s.TIW] * r[o * s.F];
          }
        }
        dh += k.masks != nullptr ? acc * k.masks[q * M * s.F + e] : acc;
      }
    }
  }
  if (!s.inside) return;  // after the block's last barrier
  finish_step_backward(k, m, s.f, sample_row, dh);
}

// --- one ConvLSTM2D step, tiles with sums held in registers (tiles_v2) ----------------------
//
// The tiles kernels above load two shared words per multiply-add gate by gate (one per 1.25
// with all gates at once), so shared memory's bandwidth, not the FMA units, sets their pace.
// Here, for 3x3 recurrent kernels and F <= 16, a block stages the whole window of its tile for
// every copy of hm_{t-1} (the 4 masked copies with masks) and all of R (KH,KW,F,4F) once, and
// each thread sums all 4 gates of one unit f for PY pixels one above the other: per tap column
// kw and input channel it loads PY+2 window words down the column (the 3 rows of each of its
// PY pixels' windows overlap) and 3 words of R per gate, for 12*PY multiply-adds (without masks
// the column serves all 4 gates: 12*PY per PY+14 loads; with masks, per gate: 3*PY per PY+5).
// The tile is TH x TW pixels (step_v2_tile), a thread per (row group, column, unit):
// F * TW * TH/PY threads, at most 512. The backward kernel does the same over dz_{t+1} (the
// window of all 4 gates, R transposed) for the gradient reaching h_t.

HISVID_HD constexpr int step_v2_tile_w(int64_t F) { return F <= 8 ? 16 : 8; }
HISVID_HD constexpr int step_v2_tile_h(int64_t F) { return F <= 4 ? 16 : 8; }
constexpr int kStepV2MaxF = 16, kStepV2MaxThreads = 512;

// Pixels per thread, one above the other: 4 on images of 16 rows or more where the blocks fill
// the GPU's multiprocessors, else 2 (twice the threads per block: more of each SM busy on the
// small images of the last layers and at batch 4).
template <typename Step>
int step_v2_rows(const Step& k) {
  const int64_t tiles = ((k.H + step_v2_tile_h(k.F) - 1) / step_v2_tile_h(k.F)) *
                        ((k.W + step_v2_tile_w(k.F) - 1) / step_v2_tile_w(k.F));
  return k.H >= 16 && tiles * k.N >= multiprocessors() ? 4 : 2;
}

// Floats of a tiles_v2 kernel's shared memory: the window of `copies` (F, TH+2, TW+2) planes,
// then R (3*3*F*4F).
HISVID_HD constexpr size_t step_v2_floats(int64_t F, int copies) {
  return size_t(copies) * F * (step_v2_tile_h(F) + 2) * (step_v2_tile_w(F) + 2) + size_t(9) * F * 4 * F;
}

// The most any instance takes (F = 16, 4 copies: 61 KiB), opted into once per kernel and
// device, so that a graph's replays never depend on when the attribute was set.
constexpr size_t kStepV2MostSharedBytes = sizeof(float) * step_v2_floats(kStepV2MaxF, 4);

// The hm_{t-1} copies a forward step stages (4 with masks), or the 4 gates of dz_{t+1} backward.
template <typename Step>
int step_v2_copies(const Step& k) {
  if constexpr (std::is_same_v<Step, ConvLstmStepBackward<float>>) return 4;
  return k.masks != nullptr ? 4 : 1;
}

// The most dynamic shared memory a block of the current device may opt into, asked of the
// driver once per device (every tiles_v2 launch asks twice).
size_t shared_optin_bytes() {
  static std::mutex mutex;
  static std::map<int, size_t> known;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find(device);
  if (it == known.end()) {
    int bytes = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    it = known.emplace(device, static_cast<size_t>(bytes)).first;
  }
  return it->second;
}

template <typename Step>
bool step_v2_apply(const Step& k) {
  return k.KH == 3 && k.KW == 3 && k.F >= 1 && k.F <= kStepV2MaxF && k.N <= 65535 &&
         sizeof(float) * step_v2_floats(k.F, step_v2_copies(k)) <= shared_optin_bytes();
}

// Opts `kernel` into kStepV2MostSharedBytes of dynamic shared memory, or the device's most when
// that is less (a launch needing more does not apply: step_v2_apply).
template <typename Kernel>
void allow_step_v2_shared(Kernel kernel) {
  static std::mutex mutex;
  static std::set<std::pair<int, const void*>> done;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const std::pair<int, const void*> key{device, reinterpret_cast<const void*>(kernel)};
  std::lock_guard<std::mutex> lock(mutex);
  if (done.count(key) != 0) return;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(std::min(kStepV2MostSharedBytes, shared_optin_bytes()))));
  done.insert(key);
}

// A tiles_v2 thread: sample n, the tile's first pixel (y_tile, x_tile) and extent TH x TW, the
// window's TIH x TIW, the thread's unit f, column px and first row py0 in the tile.
struct StepTileV2 {
  int64_t n;
  int F, H, W, TH, TW, TIH, TIW, y_tile, x_tile, f, px, py0;
};

template <int PY, typename Step>
__device__ __forceinline__ StepTileV2 step_tile_v2(const Step& k) {
  StepTileV2 s;
  s.n = blockIdx.y;
  s.F = static_cast<int>(k.F), s.H = static_cast<int>(k.H), s.W = static_cast<int>(k.W);
  s.TH = step_v2_tile_h(s.F), s.TW = step_v2_tile_w(s.F), s.TIH = s.TH + 2, s.TIW = s.TW + 2;
  const int tiles_w = (s.W + s.TW - 1) / s.TW;
  s.y_tile = static_cast<int>(blockIdx.x) / tiles_w * s.TH;
  s.x_tile = static_cast<int>(blockIdx.x) % tiles_w * s.TW;
  s.f = static_cast<int>(threadIdx.x) % s.F;
  const int rest = static_cast<int>(threadIdx.x) / s.F;
  s.px = rest % s.TW, s.py0 = rest / s.TW * PY;
  return s;
}

// Stages rows y0.., columns x0.. of all `channels` channels of a (N,H,W,channels) slice for
// sample s.n into window (channels, TIH, TIW), zeros outside the image. The caller
// synchronises after.
__device__ __forceinline__ void stage_window_v2(const StepTileV2& s, const float* src, int channels, int y0,
                                                int x0, float* window) {
  const int64_t P = int64_t(s.H) * s.W;
  for (int i = threadIdx.x; i < channels * s.TIH * s.TIW; i += blockDim.x) {
    const int c = i % channels, rest = i / channels, col = rest % s.TIW, row = rest / s.TIW;
    const int ih = y0 + row, iw = x0 + col;
    window[(c * s.TIH + row) * s.TIW + col] = ih >= 0 && ih < s.H && iw >= 0 && iw < s.W
                                                  ? src[(s.n * P + int64_t(ih) * s.W + iw) * channels + c]
                                                  : 0.0f;
  }
}

// Grid: x the TH x TW tiles of an image, y samples; F * TW * TH/PY threads. Shared: the window
// (copies*F, TIH, TIW) of hm_{t-1}, copies = 4 with masks, then R (3,3,F,4F) as it is.
template <int PY, bool Masked>
__global__ void __launch_bounds__(kStepV2MaxThreads)
    convlstm_step_forward_tiles_v2_kernel(ConvLstmStepForward<float> k) {
  extern __shared__ float step_shared[];
  constexpr int copies = Masked ? 4 : 1;
  const StepTileV2 s = step_tile_v2<PY>(k);
  const int64_t P = k.P(), t = k.t;
  const int F = s.F;
  float acc[4][PY];
  for (int q = 0; q < 4; ++q)
    for (int p = 0; p < PY; ++p) acc[q][p] = 0.0f;
  if (t > 0) {
    const Conv2dGeometry conv = k.recurrent_conv();
    float* window = step_shared;
    float* Rs = window + copies * F * s.TIH * s.TIW;
    stage_window_v2(s, k.hm + k.hm_at(0, (t + k.history - 1) % k.history, 0, 0), copies * F,
                    s.y_tile - conv.pad_top, s.x_tile - conv.pad_left, window);
    for (int i = threadIdx.x; i < 9 * F * 4 * F; i += blockDim.x) Rs[i] = k.R[i];
    __syncthreads();
    const int tap_row = 3 * F * 4 * F;  // R's floats from tap (kh, kw) to (kh+1, kw)
    for (int kw = 0; kw < 3; ++kw) {
      for (int cin = 0; cin < F; ++cin) {
        const float* r = Rs + (kw * F + cin) * 4 * F + s.f;  // R[0][kw][cin][f], gate q at + q*F
        float col[PY + 2];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          if (q == 0 || Masked) {  // rows py0 .. py0+PY+1 of column px+kw of copy q (the one copy)
            const float* w = window + ((q * F + cin) * s.TIH + s.py0) * s.TIW + s.px + kw;
#pragma unroll
            for (int i = 0; i < PY + 2; ++i) col[i] = w[i * s.TIW];
          }
          const float r0 = r[q * F], r1 = r[tap_row + q * F], r2 = r[2 * tap_row + q * F];
#pragma unroll
          for (int p = 0; p < PY; ++p) {
            acc[q][p] = fmaf(col[p], r0, acc[q][p]);
            acc[q][p] = fmaf(col[p + 1], r1, acc[q][p]);
            acc[q][p] = fmaf(col[p + 2], r2, acc[q][p]);
          }
        }
      }
    }
  }
  const int x = s.x_tile + s.px;
#pragma unroll
  for (int p = 0; p < PY; ++p) {
    const int y = s.y_tile + s.py0 + p;
    if (y >= s.H || x >= s.W) continue;
    const int64_t pixel = int64_t(y) * s.W + x, m = s.n * P + pixel,
                  sample_row = (s.n * k.steps + t) * P + pixel;
    const float* xz = k.xz + sample_row * 4 * F + s.f;
    const float z[4] = {xz[0] + acc[0][p], xz[F] + acc[1][p], xz[2 * F] + acc[2][p], xz[3 * F] + acc[3][p]};
    finish_step_forward(k, m, s.f, sample_row, z);
  }
}

// Grid and threads as the forward kernel's. Shared: dz_{t+1}'s window (4F, TIH, TIW), offset
// by 2-pad_top and 2-pad_left (the transposed convolution), then R transposed (3,3,4,F out,
// F in), so that a warp's units read consecutive words.
template <int PY, bool Masked>
__global__ void __launch_bounds__(kStepV2MaxThreads)
    convlstm_step_backward_tiles_v2_kernel(ConvLstmStepBackward<float> k) {
  extern __shared__ float step_shared[];
  constexpr int sums = Masked ? 4 : 1;  // with masks each gate's sum meets its mask
  const StepTileV2 s = step_tile_v2<PY>(k);
  const int64_t P = k.P(), M = k.N * P, t = k.t;
  const int F = s.F, x = s.x_tile + s.px;
  float acc[sums][PY];
  for (int q = 0; q < sums; ++q)
    for (int p = 0; p < PY; ++p) acc[q][p] = 0.0f;
  const bool gather = t < k.steps - 1;
  if (gather) {
    const Conv2dGeometry conv = k.recurrent_conv();
    float* window = step_shared;
    float* Rt = window + 4 * F * s.TIH * s.TIW;
    stage_window_v2(s, k.dzg + k.dzg_at(0, t + 1, 0, 0), 4 * F, s.y_tile - (2 - conv.pad_top),
                    s.x_tile - (2 - conv.pad_left), window);
    // Read in R's own order, i = (tap*F + fin)*4F + q*F + o, so that a warp's loads are one run.
    for (int i = threadIdx.x; i < 9 * 4 * F * F; i += blockDim.x) {
      const int o = i % F, q = (i / F) % 4, fin = (i / (4 * F)) % F, tap = i / (4 * F * F);
      Rt[((tap * 4 + q) * F + o) * F + fin] = k.R[i];
    }
    __syncthreads();
    const int tap_row = 3 * 4 * F * F;  // Rt's floats from tap (kh, kw) to (kh+1, kw)
    for (int kw = 0; kw < 3; ++kw) {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        for (int o = 0; o < F; ++o) {
          // Pixel row py0+p, tap kh reads window row py0+p+2-kh, column px+2-kw.
          const float* w = window + ((q * F + o) * s.TIH + s.py0) * s.TIW + s.px + 2 - kw;
          float col[PY + 2];
#pragma unroll
          for (int i = 0; i < PY + 2; ++i) col[i] = w[i * s.TIW];
          const float* r = Rt + ((kw * 4 + q) * F + o) * F + s.f;  // R[0][kw][f][q*F + o]
          const float r0 = r[0], r1 = r[tap_row], r2 = r[2 * tap_row];
          float* a = acc[Masked ? q : 0];
#pragma unroll
          for (int p = 0; p < PY; ++p) {
            a[p] = fmaf(col[p + 2], r0, a[p]);
            a[p] = fmaf(col[p + 1], r1, a[p]);
            a[p] = fmaf(col[p], r2, a[p]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int p = 0; p < PY; ++p) {
    const int y = s.y_tile + s.py0 + p;
    if (y >= s.H || x >= s.W) continue;
    const int64_t pixel = int64_t(y) * s.W + x, m = s.n * P + pixel, e = m * F + s.f,
                  sample_row = (s.n * k.steps + t) * P + pixel;
    float dh =
        k.dh_seq != nullptr ? k.dh_seq[sample_row * F + s.f] : (t == k.steps - 1 ? k.dh_last[e] : 0.0f);
    if (gather) {
      if constexpr (Masked) {
        for (int q = 0; q < 4; ++q) dh += acc[q][p] * k.masks[q * M * F + e];
      } else {
        dh += acc[0][p];
      }
    }
    finish_step_backward(k, m, s.f, sample_row, dh);
  }
}

// Launches kernel<PY, masked> over k's images, or returns false where tiles_v2 does not apply.
// A step without the recurrent term (`recurrent` false: forward t = 0, backward t = T-1) stages
// nothing and takes no shared memory.
// rows: the pixels a thread takes, 2 or 4 (every tile height divides by 4), or 0 for
// step_v2_rows's choice.
template <typename Step, template <int, bool> class Kernel>
bool launch_step_tiles_v2(const Step& k, bool recurrent, int rows, cudaStream_t stream) {
  if (!step_v2_apply(k)) return false;
  const int TH = step_v2_tile_h(k.F), TW = step_v2_tile_w(k.F), PY = rows != 0 ? rows : step_v2_rows(k);
  const int64_t tiles = ((k.H + TH - 1) / TH) * ((k.W + TW - 1) / TW);
  if (tiles > 0x7fffffff) throw std::runtime_error("hisvid::cuda::convlstm step tiles_v2: image too large");
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(k.N));
  const unsigned threads = static_cast<unsigned>(k.F * TW * (TH / PY));
  const size_t bytes = recurrent ? sizeof(float) * step_v2_floats(k.F, step_v2_copies(k)) : 0;
  const auto launch = [&](auto kernel) {
    if (bytes > kStepSharedBytes) allow_step_v2_shared(kernel);
    kernel<<<grid, threads, bytes, stream>>>(k);
  };
  const bool masked = k.masks != nullptr;
  if (PY == 4) {
    masked ? launch(Kernel<4, true>::get()) : launch(Kernel<4, false>::get());
  } else {
    masked ? launch(Kernel<2, true>::get()) : launch(Kernel<2, false>::get());
  }
  HISVID_CHECK_LAUNCH();
  return true;
}

template <int PY, bool Masked>
struct ForwardTilesV2 {
  static auto get() { return convlstm_step_forward_tiles_v2_kernel<PY, Masked>; }
};
template <int PY, bool Masked>
struct BackwardTilesV2 {
  static auto get() { return convlstm_step_backward_tiles_v2_kernel<PY, Masked>; }
};

// --- one ConvLSTM2D step, a group of lanes per (pixel, filter) (lanes_v2) -----------------
//
// The v1 kernels above give each thread a serial chain of 4 x KH x KW x F multiply-adds and run
// N*H*W*F threads: with the seed's last layers (14 and 16 filters on 12x12 and 4x4 pixels) that
// is a few blocks of long chains (1.37 ms forward over 20 steps for the last layer at batch 4 on
// an H100, 2026-11-27). Here 4*S consecutive lanes of a warp share one (pixel, filter): lane
// l = q*S + s. Forward, lane (q, s) sums gate q's recurrent products over the input channels
// s, s + S, ...; backward, the lanes split the filters the gradient reaching hm gathers. The
// parts meet through warp shuffles; every lane of the group then holds the whole sums, runs the
// (cheap) unit math, and writes its own part of the results. Forward with S = 1 computes v1's
// sums in v1's order; backward adds the lanes' parts by a tree, so its last bits may differ.

template <int S>
__global__ void convlstm_step_forward_lanes_kernel(ConvLstmStepForward<float> k) {
  constexpr int L = 4 * S;
  const int64_t P = k.P(), M = k.N * P, F = k.F, steps = k.steps, t = k.t, total = M * F;
  const int64_t slot = t % k.history, prev = (t + k.history - 1) % k.history;
  const Conv2dGeometry conv = k.recurrent_conv();
  const float* hm_prev = k.hm + k.hm_at(0, prev, 0, 0);
  const int l = static_cast<int>(threadIdx.x % L), q = l / S, s = l % S;
  const unsigned lanes = device::lane_group_mask<L>();
  for (const int64_t e : device::group_stride<L>(total)) {
    const int64_t m = e / F, f = e - m * F, n = m / P, p = m - n * P, sample_row = (n * steps + t) * P + p;
    const int y = static_cast<int>(p / k.W), x = static_cast<int>(p - y * k.W);
    float z = t > 0 ? conv2d_at(hm_prev, k.R, static_cast<const float*>(nullptr), conv, n, y, x,
                                int(q * F + f), s, S)
                    : 0.0f;
    z = k.xz[sample_row * 4 * F + q * F + f] + device::lane_group_sum<S>(z, lanes);
    const float z_i = __shfl_sync(lanes, z, 0 * S, L), z_f = __shfl_sync(lanes, z, 1 * S, L);
    const float z_c = __shfl_sync(lanes, z, 2 * S, L), z_o = __shfl_sync(lanes, z, 3 * S, L);
    const float c_prev = t > 0 ? k.c[prev * M * F + e] : 0.0f;
    const LstmUnit<float> u = lstm_unit_forward(z_i, z_f, z_c, z_o, c_prev, k.act, k.rec_act);
    if (s == 0) {  // lane (q, 0): gate q, and hm's masked copy q
      k.gates[(slot * M + m) * 4 * F + q * F + f] = q == 0 ? u.i : q == 1 ? u.f : q == 2 ? u.g : u.o;
      if (k.masks != nullptr) k.hm[k.hm_at(q, slot, m, f)] = u.h * k.masks[q * M * F + e];
    }
    if (l == 0) {
      k.c[slot * M * F + e] = u.c;
      if (k.masks == nullptr) k.hm[k.hm_at(0, slot, m, f)] = u.h;
      if (k.h_seq != nullptr) k.h_seq[sample_row * F + f] = u.h;
      if (k.h_last != nullptr && t == steps - 1) k.h_last[e] = u.h;
    }
  }
}

template <int S>
__global__ void convlstm_step_backward_lanes_kernel(ConvLstmStepBackward<float> k) {
  constexpr int L = 4 * S;
  const int64_t P = k.P(), M = k.N * P, F = k.F, steps = k.steps, t = k.t, total = M * F;
  const Conv2dGeometry conv = k.recurrent_conv();
  const float* dz_next = t < steps - 1 ? k.dzg + k.dzg_at(0, t + 1, 0, 0) : nullptr;
  const int l = static_cast<int>(threadIdx.x % L), q = l / S, s = l % S;
  const unsigned lanes = device::lane_group_mask<L>();
  for (const int64_t e : device::group_stride<L>(total)) {
    const int64_t m = e / F, f = e - m * F, n = m / P, p = m - n * P, sample_row = (n * steps + t) * P + p;
    const int y = static_cast<int>(p / k.W), x = static_cast<int>(p - y * k.W);
    const float dc = k.dc[e];  // read by every lane before lane 0 replaces it (below)
    float back = 0.0f;
    if (dz_next != nullptr && k.masks != nullptr) {  // lane (q, s): masked copy q, filters s, s + S, ...
      back = conv2d_input_grad_at(dz_next, k.R, conv, n, y, x, int(q * F + f), s, S) * k.masks[q * M * F + e];
    } else if (dz_next != nullptr) {  // one copy: its 4F filters split over the L lanes
      back = conv2d_input_grad_at(dz_next, k.R, conv, n, y, x, int(f), l, L);
    }
    const float dh =
        (k.dh_seq != nullptr ? k.dh_seq[sample_row * F + f] : (t == steps - 1 ? k.dh_last[e] : 0.0f)) +
        device::lane_group_sum<L>(back, lanes);
    const float* gates = k.gates + (t * M + m) * 4 * F + f;
    const LstmUnit<float> u{gates[0], gates[F], gates[2 * F], gates[3 * F], k.c[t * M * F + e], 0.0f};
    const float c_prev = t > 0 ? k.c[(t - 1) * M * F + e] : 0.0f;
    const LstmUnitGrad<float> d = lstm_unit_backward(dh, dc, u, c_prev, k.act, k.rec_act);
    if (s == 0) {  // lane (q, 0): gate q's dz
      const float dz = q == 0 ? d.dz_i : q == 1 ? d.dz_f : q == 2 ? d.dz_c : d.dz_o;
      k.dxz[sample_row * 4 * F + q * F + f] = dz;
      k.dzg[k.dzg_at(q, t, m, f)] = dz;
    }
    __syncwarp(lanes);
    if (l == 0) k.dc[e] = d.dc_prev;
  }
}

// The channel (backward: filter) parts S per gate for F filters: at most 8, so that a group of
// 4*S lanes fits in a warp.
template <typename Step>
int step_parts(const Step& k) {
  return lane_parts(k.F, 8);
}

// --- the whole sequence, one block per sample ---------------------------------------------

// Shared memory a block may take without opting in; R joins the state there when both fit.
constexpr size_t kSharedBytes = 48 * 1024;

void check_units(const char* kernel, int64_t U) {
  if (U > kLstmSequenceMaxUnits) {
    throw std::invalid_argument(std::string(kernel) + ": " + std::to_string(U) +
                                " units; one block's shared memory holds the state of at most " +
                                std::to_string(kLstmSequenceMaxUnits));
  }
}

// Threads of a sequence block: one per column of z (G*U), whole warps, at most 1024.
unsigned sequence_threads(int64_t U) {
  return static_cast<unsigned>(std::min<int64_t>(1024, (4 * U + 31) / 32 * 32));
}

// Per step, two phases between barriers: every column j of z_t = xz_t + (h_{t-1} m_g) R_g
// (thread j, U multiply-adds with R read down column j), then every unit's gate step (thread u),
// which also writes h_t times each gate's mask for the next step's columns.
// Shared: hm (G*U), z (G*U), h (U), c (U), then R (U,G*U) when r_shared.
// Where every column has its thread (G*U <= blockDim.x, always up to 256 units), the thread
// loads its column of xz one step ahead: the load's device-memory latency then overlaps a step's
// work instead of opening each step's chain of dependent work.
__global__ void __launch_bounds__(1024)
    lstm_sequence_forward_kernel(LstmSequenceForward<float> k, bool r_shared) {
  extern __shared__ float shared[];
  const int64_t N = k.N, S = k.steps, U = k.U, GU = 4 * U, n = blockIdx.x;
  float* hm = shared;
  float* z = hm + GU;
  float* h = z + GU;
  float* c = h + U;
  float* Rs = c + U;
  if (r_shared) {
    for (int64_t i = threadIdx.x; i < U * GU; i += blockDim.x) Rs[i] = k.R[i];
  }
  for (int64_t u = threadIdx.x; u < U; u += blockDim.x) h[u] = 0.0f, c[u] = 0.0f;
  const float* R = r_shared ? Rs : k.R;
  const bool ahead = GU <= int64_t(blockDim.x);
  float xz_ahead = ahead && int64_t(threadIdx.x) < GU ? k.xz[n * S * GU + threadIdx.x] : 0.0f;
  __syncthreads();
  for (int64_t t = 0; t < S; ++t) {
    const int64_t row = n * S + t;
    for (int64_t j = threadIdx.x; j < GU; j += blockDim.x) {
      float acc = ahead ? xz_ahead : k.xz[row * GU + j];
      if (ahead && t + 1 < S) xz_ahead = k.xz[(row + 1) * GU + j];  // one j per thread
      if (t > 0) {
        const float* hg = hm + (j / U) * U;  // (U) h_{t-1} times the mask of j's gate
        const float* r = R + j;              // column j of R, stride G*U
        for (int64_t u = 0; u < U; ++u, r += GU) acc += hg[u] * *r;
      }
      z[j] = acc;
    }
    __syncthreads();
    for (int64_t u = threadIdx.x; u < U; u += blockDim.x) {
      const LstmUnit<float> s =
          lstm_unit_forward(z[u], z[U + u], z[2 * U + u], z[3 * U + u], c[u], k.act, k.rec_act);
      float* gates = k.gates + row * GU;
      gates[u] = s.i, gates[U + u] = s.f, gates[2 * U + u] = s.g, gates[3 * U + u] = s.o;
      k.c[row * U + u] = s.c;
      k.h_prev[row * U + u] = h[u];
      if (k.h_seq != nullptr) k.h_seq[row * U + u] = s.h;
      if (k.h_last != nullptr && t == S - 1) k.h_last[n * U + u] = s.h;
      c[u] = s.c;
      h[u] = s.h;
      for (int64_t gate = 0; gate < 4; ++gate) {
        hm[gate * U + u] = k.masks != nullptr ? s.h * k.masks[(gate * N + n) * U + u] : s.h;
      }
    }
    __syncthreads();
  }
}

// What the backward step of unit u at row `row` (= n*T + t) reads from device memory: the
// gradient from above, the step's activated gates, c_t and c_{t-1}.
struct UnitInputs {
  float dh, i, f, g, o, c, c_prev;
};

__device__ UnitInputs unit_inputs(const LstmSequenceBackward<float>& k, int64_t n, int64_t t, int64_t u) {
  const int64_t S = k.steps, U = k.U, row = n * S + t;
  const float* gates = k.gates + row * 4 * U;
  return UnitInputs{k.dh_seq != nullptr ? k.dh_seq[row * U + u] : (t == S - 1 ? k.dh_last[n * U + u] : 0.0f),
                    gates[u],
                    gates[U + u],
                    gates[2 * U + u],
                    gates[3 * U + u],
                    k.c[row * U + u],
                    t > 0 ? k.c[(row - 1) * U + u] : 0.0f};
}

// Per step t = T-1 .. 0: every unit's gradients (thread u), taking the gradient reaching h_t
// through z_{t+1} as the four gate partials of the step after, then every (gate, unit) partial
// m_g[u] (dz_g . R_g[u, .]) for the step before (thread g*U + u, R read transposed so that a
// warp's threads read consecutive words). Shared: dz (G*U), part (G*U), dc (U), then R
// transposed (G*U, U|1) when r_shared: rows of an odd number of words (U+1 for even U), so
// that the transposing stores of a warp fall in different banks too. Where every unit has its
// thread (U <= blockDim.x, always), the thread loads its unit's inputs of step t-1 while step t
// runs (UnitInputs), as the forward kernel loads xz.
__global__ void __launch_bounds__(1024)
    lstm_sequence_backward_kernel(LstmSequenceBackward<float> k, bool r_shared) {
  extern __shared__ float shared[];
  const int64_t N = k.N, S = k.steps, U = k.U, GU = 4 * U, n = blockIdx.x;
  float* dz = shared;
  float* part = dz + GU;
  float* dc = part + GU;
  float* Rt = dc + U;
  const int64_t ld = U | 1;  // Rt's row length
  if (r_shared) {
    for (int64_t i = threadIdx.x; i < U * GU; i += blockDim.x) Rt[(i % GU) * ld + i / GU] = k.R[i];
  }
  for (int64_t u = threadIdx.x; u < U; u += blockDim.x) dc[u] = 0.0f;
  const bool ahead = U <= int64_t(blockDim.x);
  UnitInputs in_ahead{};
  if (ahead && int64_t(threadIdx.x) < U) in_ahead = unit_inputs(k, n, S - 1, threadIdx.x);
  __syncthreads();
  for (int64_t t = S - 1; t >= 0; --t) {
    const int64_t row = n * S + t;
    for (int64_t u = threadIdx.x; u < U; u += blockDim.x) {
      const UnitInputs in = ahead ? in_ahead : unit_inputs(k, n, t, u);
      if (ahead && t > 0) in_ahead = unit_inputs(k, n, t - 1, u);  // one u per thread
      float dh = in.dh;
      if (t < S - 1) dh += part[u] + part[U + u] + part[2 * U + u] + part[3 * U + u];
      const LstmUnit<float> s{in.i, in.f, in.g, in.o, in.c, 0.0f};
      const LstmUnitGrad<float> d = lstm_unit_backward(dh, dc[u], s, in.c_prev, k.act, k.rec_act);
      float* dzr = k.dz + row * GU;
      dzr[u] = dz[u] = d.dz_i;
      dzr[U + u] = dz[U + u] = d.dz_f;
      dzr[2 * U + u] = dz[2 * U + u] = d.dz_c;
      dzr[3 * U + u] = dz[3 * U + u] = d.dz_o;
      dc[u] = d.dc_prev;
    }
    __syncthreads();
    if (t == 0) break;  // the same t in every thread
    for (int64_t idx = threadIdx.x; idx < GU; idx += blockDim.x) {
      const int64_t gate = idx / U, u = idx - gate * U;
      const float* dzg = dz + gate * U;
      float dot = 0.0f;
      if (r_shared) {
        const float* r = Rt + gate * U * ld + u;  // R[u, gate*U + v] at Rt[(gate*U + v)*ld + u]
        for (int64_t v = 0; v < U; ++v, r += ld) dot += dzg[v] * *r;
      } else {
        const float* r = k.R + u * GU + gate * U;
        for (int64_t v = 0; v < U; ++v) dot += dzg[v] * r[v];
      }
      part[idx] = k.masks != nullptr ? dot * k.masks[(gate * N + n) * U + u] : dot;
    }
    __syncthreads();
  }
}

// One block per sample, with the state's bytes of shared memory and R's too where both fit.
template <typename Args>
void launch_sequence(void (*kernel)(Args, bool), const Args& k, const char* name, size_t state, size_t R,
                     cudaStream_t stream) {
  if (k.N <= 0 || k.steps <= 0 || k.U <= 0) return;
  check_units(name, k.U);
  const bool r_shared = state + R <= kSharedBytes;
  kernel<<<static_cast<unsigned>(k.N), sequence_threads(k.U), r_shared ? state + R : state, stream>>>(
      k, r_shared);
  HISVID_CHECK_LAUNCH();
}

}  // namespace

void lstm_sequence_forward(const LstmSequenceForward<float>& k, cudaStream_t stream) {
  launch_sequence(lstm_sequence_forward_kernel, k, "lstm_sequence_forward",
                  (2 * 4 * k.U + 2 * k.U) * sizeof(float), k.U * 4 * k.U * sizeof(float), stream);
}

void lstm_sequence_backward(const LstmSequenceBackward<float>& k, cudaStream_t stream) {
  launch_sequence(lstm_sequence_backward_kernel, k, "lstm_sequence_backward",
                  (2 * 4 * k.U + k.U) * sizeof(float), (k.U | 1) * 4 * k.U * sizeof(float), stream);
}

bool convlstm_step_tiles_apply(const ConvLstmStepForward<float>& k) { return step_tiles_apply(k); }
bool convlstm_step_tiles_apply(const ConvLstmStepBackward<float>& k) { return step_tiles_apply(k); }
bool convlstm_step_tiles_v2_apply(const ConvLstmStepForward<float>& k) { return step_v2_apply(k); }
bool convlstm_step_tiles_v2_apply(const ConvLstmStepBackward<float>& k) { return step_v2_apply(k); }

void convlstm_step_forward_tiles(const ConvLstmStepForward<float>& k, cudaStream_t stream) {
  require_history(k, "cuda::convlstm_step_forward_tiles");
  if (k.N * k.P() * k.F <= 0) return;
  if (!launch_step_tiles(convlstm_step_forward_tiles_kernel, k, stream)) convlstm_step_forward_v1(k, stream);
}

void convlstm_step_backward_tiles(const ConvLstmStepBackward<float>& k, cudaStream_t stream) {
  if (k.N * k.P() * k.F <= 0) return;
  if (!launch_step_tiles(convlstm_step_backward_tiles_kernel, k, stream))
    convlstm_step_backward_v1(k, stream);
}

namespace {

void step_forward_tiles_v2(const ConvLstmStepForward<float>& k, int rows, const char* what,
                           cudaStream_t stream) {
  require_history(k, what);
  if (k.N * k.P() * k.F <= 0) return;
  if (!launch_step_tiles_v2<ConvLstmStepForward<float>, ForwardTilesV2>(k, k.t > 0, rows, stream))
    convlstm_step_forward_v1(k, stream);
}

void step_backward_tiles_v2(const ConvLstmStepBackward<float>& k, int rows, cudaStream_t stream) {
  if (k.N * k.P() * k.F <= 0) return;
  if (!launch_step_tiles_v2<ConvLstmStepBackward<float>, BackwardTilesV2>(k, k.t + 1 < k.steps, rows, stream))
    convlstm_step_backward_v1(k, stream);
}

}  // namespace

void convlstm_step_forward_tiles_v2(const ConvLstmStepForward<float>& k, cudaStream_t stream) {
  step_forward_tiles_v2(k, 0, "cuda::convlstm_step_forward_tiles_v2", stream);
}

void convlstm_step_backward_tiles_v2(const ConvLstmStepBackward<float>& k, cudaStream_t stream) {
  step_backward_tiles_v2(k, 0, stream);
}

void convlstm_step_forward_tiles_v2_rows4(const ConvLstmStepForward<float>& k, cudaStream_t stream) {
  step_forward_tiles_v2(k, 4, "cuda::convlstm_step_forward_tiles_v2_rows4", stream);
}

void convlstm_step_backward_tiles_v2_rows4(const ConvLstmStepBackward<float>& k, cudaStream_t stream) {
  step_backward_tiles_v2(k, 4, stream);
}

void convlstm_step_forward_v1(const ConvLstmStepForward<float>& k, cudaStream_t stream) {
  require_history(k, "cuda::convlstm_step_forward_v1");
  const int64_t total = k.N * k.P() * k.F;
  if (total <= 0) return;
  convlstm_step_forward_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(k);
  HISVID_CHECK_LAUNCH();
}

void convlstm_step_backward_v1(const ConvLstmStepBackward<float>& k, cudaStream_t stream) {
  const int64_t total = k.N * k.P() * k.F;
  if (total <= 0) return;
  convlstm_step_backward_kernel<<<grid_blocks(total, kThreads), kThreads, 0, stream>>>(k);
  HISVID_CHECK_LAUNCH();
}

void convlstm_step_forward_lanes_v2(const ConvLstmStepForward<float>& k, cudaStream_t stream) {
  require_history(k, "cuda::convlstm_step_forward_lanes_v2");
  const int64_t total = k.N * k.P() * k.F;
  if (total <= 0) return;
  const int S = step_parts(k);
  with_power_of_two<8>(S, [&](auto parts) {
    convlstm_step_forward_lanes_kernel<decltype(parts)::value>
        <<<grid_blocks(total * 4 * S, kThreads), kThreads, 0, stream>>>(k);
  });
  HISVID_CHECK_LAUNCH();
}

void convlstm_step_backward_lanes_v2(const ConvLstmStepBackward<float>& k, cudaStream_t stream) {
  const int64_t total = k.N * k.P() * k.F;
  if (total <= 0) return;
  const int S = step_parts(k);
  with_power_of_two<8>(S, [&](auto parts) {
    convlstm_step_backward_lanes_kernel<decltype(parts)::value>
        <<<grid_blocks(total * 4 * S, kThreads), kThreads, 0, stream>>>(k);
  });
  HISVID_CHECK_LAUNCH();
}

namespace {

// HISVID_CUDA_CONVLSTM_STEP: timed (or unset), v1, lanes_v2, tiles or tiles_v2, both directions.
enum class StepChoice { Timed, V1, LanesV2, Tiles, TilesV2 };

StepChoice forced_step_choice() {
  static const StepChoice choice = [] {
    const char* v = std::getenv("HISVID_CUDA_CONVLSTM_STEP");
    const std::string s = v == nullptr ? "" : v;
    if (s.empty() || s == "timed") return StepChoice::Timed;
    if (s == "v1") return StepChoice::V1;
    if (s == "lanes_v2") return StepChoice::LanesV2;
    if (s == "tiles") return StepChoice::Tiles;
    if (s == "tiles_v2") return StepChoice::TilesV2;
    throw std::invalid_argument("HISVID_CUDA_CONVLSTM_STEP='" + s +
                                "': expected timed, v1, lanes_v2, tiles or tiles_v2");
  }();
  return choice;
}

// The versions of one direction's step, in the order timing tries them (v1, the baseline, first).
template <typename Step>
struct StepVersions;
template <>
struct StepVersions<ConvLstmStepForward<float>> {
  using Run = void (*)(const ConvLstmStepForward<float>&, cudaStream_t);
  static constexpr Run v1 = convlstm_step_forward_v1, lanes_v2 = convlstm_step_forward_lanes_v2,
                       tiles = convlstm_step_forward_tiles, tiles_v2 = convlstm_step_forward_tiles_v2;
  // Timed at the first step with a recurrence (t > 0; step 0 has no h_{t-1}).
  static bool representative(const ConvLstmStepForward<float>& k) { return k.t > 0 && k.history >= 2; }
};
template <>
struct StepVersions<ConvLstmStepBackward<float>> {
  using Run = void (*)(const ConvLstmStepBackward<float>&, cudaStream_t);
  static constexpr Run v1 = convlstm_step_backward_v1, lanes_v2 = convlstm_step_backward_lanes_v2,
                       tiles = convlstm_step_backward_tiles, tiles_v2 = convlstm_step_backward_tiles_v2;
  // Timed at the first step that gathers dz_{t+1} (t < T-1).
  static bool representative(const ConvLstmStepBackward<float>& k) { return k.t + 1 < k.steps; }
};

template <typename Step>
void run_step_version(StepChoice version, const Step& k, cudaStream_t stream) {
  using V = StepVersions<Step>;
  switch (version) {
    case StepChoice::LanesV2:
      return V::lanes_v2(k, stream);
    case StepChoice::Tiles:
      return V::tiles(k, stream);
    case StepChoice::TilesV2:
      return V::tiles_v2(k, stream);
    case StepChoice::V1:
    case StepChoice::Timed:
      break;
  }
  V::v1(k, stream);
}

// What a timed choice is kept by: the device, the direction and everything of the step's shape
// that its kernels' speed depends on.
using StepKey = std::tuple<int, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, int, int>;

template <typename Step>
StepKey step_key(const Step& k) {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  return {device,
          std::is_same_v<Step, ConvLstmStepBackward<float>>,
          k.N,
          k.H,
          k.W,
          k.F,
          k.KH,
          k.KW,
          k.masks != nullptr,
          static_cast<int>(k.act),
          static_cast<int>(k.rec_act)};
}

template <typename Step>
std::string describe_step(const Step& k) {
  return "batch " + std::to_string(k.N) + ", " + std::to_string(k.H) + "x" + std::to_string(k.W) +
         " pixels, " + std::to_string(k.F) + " filters, recurrent kernel " + std::to_string(k.KH) + "x" +
         std::to_string(k.KW) + (k.masks != nullptr ? ", recurrent dropout" : "") + ", " +
         std::to_string(k.steps) + " steps";
}

// The arguments a timing run may write: the call's own for the forward (it writes time slot t
// from slot t-1 and the inputs, so the chosen version's call that follows overwrites the same
// values), a copy of dc for the backward (which reads and replaces dc in place; its dxz and dzg
// at t are overwritten like the forward's slot).
// Without memory for that copy nothing is timed (the reason goes to `failed`).
template <typename Trial>
void with_trial(const ConvLstmStepForward<float>& k, cudaStream_t, std::string&, const Trial& trial) {
  trial(k);
}
template <typename Trial>
void with_trial(const ConvLstmStepBackward<float>& k, cudaStream_t stream, std::string& failed,
                const Trial& trial) {
  const std::unique_ptr<TimingScratch> dc =
      try_timing_scratch(sizeof(float) * static_cast<size_t>(k.N * k.P() * k.F), k.dc, stream, failed);
  if (!dc) return;
  ConvLstmStepBackward<float> copy = k;
  copy.dc = dc->floats();
  trial(copy);
}

// The default (`timed`) choice, per shape: at the shape's first representative step outside a
// graph capture, v1, lanes_v2, tiles and tiles_v2 (where they apply) are each timed (kTimedRuns after a
// warm-up, CUDA events) on the call's arguments, and the fastest is kept, v1 unless another beats it by
// kClearWin. The steps before it (forward t = 0, backward t = T-1: no recurrent convolution) run v1, which
// computes them bit for bit as the others do (the same unit step on the input's sums alone). A
// shape whose first representative step is captured into a graph keeps v1 from then on, so that
// direct calls compute what the replays do. The versions' sums agree to the harness's tolerance,
// not bit for bit, so a choice may change the last bits from one process to the next
// (HISVID_CUDA_CONVLSTM_STEP fixes it).
template <typename Step>
StepChoice timed_step_choice(const Step& k, cudaStream_t stream) {
  if (!StepVersions<Step>::representative(k) || k.N * k.P() * k.F <= 0) return StepChoice::V1;
  static std::mutex mutex;
  static std::map<StepKey, StepChoice> choices;
  const StepKey key = step_key(k);
  std::lock_guard<std::mutex> lock(mutex);
  const auto found = choices.find(key);
  if (found != choices.end()) return found->second;
  if (capturing(stream)) return choices.emplace(key, StepChoice::V1).first->second;
  StepChoice best = StepChoice::V1;
  TimedChoice record{Step::kName, describe_step(k), "", {}, ""};
  record.kept = "v1";
  with_trial(k, stream, record.failed, [&](const Step& trial) {
    std::optional<float> baseline_ms, best_ms;  // v1's: a candidate must beat it by kClearWin
    for (const auto& candidate :
         {std::pair{StepChoice::V1, "v1"}, std::pair{StepChoice::LanesV2, "lanes_v2"},
          std::pair{StepChoice::Tiles, "tiles"}, std::pair{StepChoice::TilesV2, "tiles_v2"}}) {
      const StepChoice version = candidate.first;
      const std::string name = candidate.second;
      if (version == StepChoice::Tiles && !step_tiles_apply(trial)) continue;  // it would run v1
      if (version == StepChoice::TilesV2 && !step_v2_apply(trial)) continue;
      const std::optional<float> ms =
          try_fastest_ms([&] { run_step_version(version, trial, stream); }, stream, name, record.failed);
      if (!ms) continue;  // v1 failing here fails the call itself next
      record.candidates_ms.emplace_back(name, *ms);
      if (version == StepChoice::V1) {
        baseline_ms = best_ms = ms;
      } else if (baseline_ms && *ms < *best_ms && *ms < kClearWin * *baseline_ms) {
        best = version, best_ms = ms, record.kept = name;
      }
    }
  });
  record_timed_choice(std::move(record));
  choices.emplace(key, best);
  return best;
}

template <typename Step>
void run_step(const Step& k, cudaStream_t stream) {
  const StepChoice forced = forced_step_choice();
  run_step_version(forced == StepChoice::Timed ? timed_step_choice(k, stream) : forced, k, stream);
}

}  // namespace

void convlstm_step_forward(const ConvLstmStepForward<float>& k, cudaStream_t stream) { run_step(k, stream); }

void convlstm_step_backward(const ConvLstmStepBackward<float>& k, cudaStream_t stream) {
  run_step(k, stream);
}

void lstm_cell_forward(const LstmCellForward<float>& k, cudaStream_t stream) {
  if (k.M <= 0 || k.U <= 0) return;
  lstm_cell_forward_kernel<<<grid_blocks(k.M * k.U, kThreads), kThreads, 0, stream>>>(
      k.h, k.c, k.gates, k.z, k.c_prev, k.M, k.U, k.act, k.rec_act);
  HISVID_CHECK_LAUNCH();
}

void lstm_cell_backward(const LstmCellBackward<float>& k, cudaStream_t stream) {
  if (k.M <= 0 || k.U <= 0) return;
  lstm_cell_backward_kernel<<<grid_blocks(k.M * k.U, kThreads), kThreads, 0, stream>>>(
      k.dz, k.dc_prev, k.dh, k.dc, k.gates, k.c, k.c_prev, k.M, k.U, k.act, k.rec_act);
  HISVID_CHECK_LAUNCH();
}

}  // namespace hisvid::cuda
