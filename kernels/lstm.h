// kernels/lstm.h — the fused LSTM gate step, shared by LSTM (rows M = N) and ConvLSTM2D
// (rows M = N*H*W, units U = filters F). The input products of the pre-activations
// z = x W + h_prev U + b are done outside (matmul / conv2d); the recurrent ones h_prev U too for
// the single step (lstm_cell), inside for the sequence kernels and the ConvLSTM step below.
// After the products:
//
//   i = rec_act(z_i)     f = rec_act(z_f)     g = act(z_c)     o = rec_act(z_o)
//   c = f * c_prev + i * g
//   h = o * act(c)
//
// Keras gate order i, f, c, o: each row of z is [z_i | z_f | z_c | z_o], U values each.
// Keras defaults: LSTM act = tanh, rec_act = sigmoid; Keras 2 ConvLSTM2D rec_act = hard_sigmoid.
// Forward caches the activated gates [i | f | g | o] and c; backward needs nothing else.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/common.h"
#include "kernels/conv2d.h"

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid {

// h (M,U), c (M,U), gates (M,G*U) from z (M,G*U) and c_prev (M,U); c_prev null means zeros.
template <typename T>
struct LstmCellForward {
  static constexpr const char* kName = "lstm_cell_forward";
  T* h = nullptr;
  T* c = nullptr;
  T* gates = nullptr;    // activated [i | f | g | o]
  const T* z = nullptr;  // pre-activations [z_i | z_f | z_c | z_o]
  const T* c_prev = nullptr;
  int64_t M = 0, U = 0;
  Activation act = Activation::Tanh, rec_act = Activation::Sigmoid;
  template <typename V>
  void buffers(V& v) {
    v.out("h", h, M * U);
    v.out("c", c, M * U);
    v.out("gates", gates, M * 4 * U);
    v.in("z", z, M * 4 * U);
    v.in("c_prev", c_prev, M * U);
  }
};

// dz (M,G*U) (=) and dc_prev (M,U) (=, skipped when null) from dh (M,U) and dc (M,U), the
// gradient reaching c from the next step (null means zeros), with gates, c and c_prev from
// forward (c_prev null means zeros).
template <typename T>
struct LstmCellBackward {
  static constexpr const char* kName = "lstm_cell_backward";
  T* dz = nullptr;
  T* dc_prev = nullptr;
  const T* dh = nullptr;
  const T* dc = nullptr;
  const T* gates = nullptr;
  const T* c = nullptr;
  const T* c_prev = nullptr;
  int64_t M = 0, U = 0;
  Activation act = Activation::Tanh, rec_act = Activation::Sigmoid;
  template <typename V>
  void buffers(V& v) {
    v.out("dz", dz, M * 4 * U);
    v.out("dc_prev", dc_prev, M * U);
    v.in("dh", dh, M * U);
    v.in("dc", dc, M * U);
    v.in("gates", gates, M * 4 * U);
    v.in("c", c, M * U);
    v.in("c_prev", c_prev, M * U);
  }
};

// The whole recurrence of an LSTM layer, after the input products: for each sample n and
// t = 0 .. T-1, with h_{-1} = c_{-1} = 0,
//
//   z_t = xz_t                                                     (t = 0)
//   z_t = xz_t + [(h_{t-1} m_i) R_i | (h_{t-1} m_f) R_f | (h_{t-1} m_c) R_c | (h_{t-1} m_o) R_o]
//   (h_t, c_t) = the gate step above, from z_t and c_{t-1}
//
// where R_g is gate g's U columns of the recurrent kernel R (U,G*U) and m_g the recurrent
// dropout mask of gate g for the sample (all ones without masks). One call per layer and
// direction instead of T matrix products and T gate steps: on CUDA one block per sample keeps
// R and the state on chip for all T steps (a persistent RNN, Diamos et al. 2016). The weight
// gradient of R is one matrix product of h_prev and dz, outside (engine/ops_nn.cpp).
// The CUDA rows keep one sample's state (about 10 floats per unit) in 48 KiB of shared memory.
constexpr int64_t kLstmSequenceMaxUnits = 1024;

template <typename T>
struct LstmSequenceForward {
  static constexpr const char* kName = "lstm_sequence_forward";
  T* h_prev = nullptr;              // (N,T,U) the h entering step t: zeros at t = 0
  T* c = nullptr;                   // (N,T,U)
  T* gates = nullptr;               // (N,T,G*U) activated [i | f | g | o]
  T* h_seq = nullptr;               // (N,T,U) every h_t, skipped when null
  T* h_last = nullptr;              // (N,U) h_{T-1}, skipped when null
  const T* xz = nullptr;            // (N,T,G*U) x_t W + b
  const T* R = nullptr;             // (U,G*U)
  const T* masks = nullptr;         // (G,N,U) recurrent dropout masks, null: none
  int64_t N = 0, steps = 0, U = 0;  // steps: T
  Activation act = Activation::Tanh, rec_act = Activation::Sigmoid;
  template <typename V>
  void buffers(V& v) {
    v.out("h_prev", h_prev, N * steps * U);
    v.out("c", c, N * steps * U);
    v.out("gates", gates, N * steps * 4 * U);
    v.out("h_seq", h_seq, N * steps * U);
    v.out("h_last", h_last, N * U);
    v.in("xz", xz, N * steps * 4 * U);
    v.in("R", R, U * 4 * U);
    v.in("masks", masks, 4 * N * U);
  }
};

// dz (N,T,G*U) (=), the gradient of every z_t (and so of xz_t), from the gradient reaching the
// layer's output from above: dh_seq (N,T,U) for every h_t, or dh_last (N,U) for h_{T-1} alone
// (exactly one of them is given), with gates and c from forward.
template <typename T>
struct LstmSequenceBackward {
  static constexpr const char* kName = "lstm_sequence_backward";
  T* dz = nullptr;                  // (N,T,G*U)
  const T* dh_seq = nullptr;        // (N,T,U), or null
  const T* dh_last = nullptr;       // (N,U), or null
  const T* gates = nullptr;         // (N,T,G*U) activated, from forward
  const T* c = nullptr;             // (N,T,U) from forward
  const T* R = nullptr;             // (U,G*U)
  const T* masks = nullptr;         // (G,N,U) recurrent dropout masks, null: none
  int64_t N = 0, steps = 0, U = 0;  // steps: T
  Activation act = Activation::Tanh, rec_act = Activation::Sigmoid;
  template <typename V>
  void buffers(V& v) {
    v.out("dz", dz, N * steps * 4 * U);
    v.in("dh_seq", dh_seq, N * steps * U);
    v.in("dh_last", dh_last, N * U);
    v.in("gates", gates, N * steps * 4 * U);
    v.in("c", c, N * steps * U);
    v.in("R", R, U * 4 * U);
    v.in("masks", masks, 4 * N * U);
  }
};

// A ConvLSTM2D layer's recurrent convolution of hm (N,H,W,F), or with masks of the 4 masked
// states (N,H,W,4F) in 4 groups, with R (KH,KW,F,4F): 'same' padding, stride 1.
HISVID_HD Conv2dGeometry convlstm_recurrent_conv(int64_t N, int64_t H, int64_t W, int64_t F, int64_t KH,
                                                 int64_t KW, bool masked) {
  const int groups = masked ? 4 : 1;
  return conv2d_geometry(static_cast<int>(N), static_cast<int>(H), static_cast<int>(W),
                         static_cast<int>(groups * F), static_cast<int>(4 * F), static_cast<int>(KH),
                         static_cast<int>(KW), 1, 1, Padding::Same, groups);
}

// Step t of a ConvLSTM2D layer, its recurrent convolution included, over the M = N*P pixels
// of the step (P = H*W per sample, F filters), on the layer's whole-sequence buffers:
//
//   z = xz_t + conv(hm_{t-1}, R)     (no recurrent term at t = 0)
//   (h_t, c_t) = the gate step from z and c_{t-1}
//
// R (KH,KW,F,G*F) is the recurrent kernel: 'same' padding, stride 1 (recurrent_conv below).
// Without masks hm_t is h_t itself (M,F). With recurrent dropout masks m_g, hm_t (M,G*F) holds
// the G masked states h_t m_g side by side and the convolution has G groups: gate g's output
// channels of R read h_{t-1} m_g (Keras: each gate's recurrent convolution of its masked copy).
// gates, c and hm keep `history` time slots, step t in slot t % history: T while backward will
// need every step, else 2. Writes only step t's slot of gates, c and hm and step t of h_seq.
// One call per step runs the whole step: on CUDA one kernel (the GPU's per-step launches are
// what the fusion saves), on the CPU the convolution's row then the gate step.
template <typename T>
struct ConvLstmStepForward {
  static constexpr const char* kName = "convlstm_step_forward";
  T* gates = nullptr;        // (history,M,G*F) activated [i | f | g | o]
  T* c = nullptr;            // (history,M,F), c_{t-1} read at t > 0
  T* hm = nullptr;           // (history,M,G*F) with masks, (history,M,F) without
  T* h_seq = nullptr;        // (N,T,P,F) every h_t, skipped when null
  T* h_last = nullptr;       // (N,P,F) h_{T-1}, written at t = T-1, skipped when null
  const T* xz = nullptr;     // (N,T,P,G*F) the input convolution with the bias
  const T* R = nullptr;      // (KH,KW,F,G*F) the recurrent kernel
  const T* masks = nullptr;  // (G,M,F) recurrent dropout masks, null: none
  int64_t N = 0, steps = 0, H = 0, W = 0, F = 0, t = 0, history = 0;  // steps: T; (H,W) the image
  int64_t KH = 0, KW = 0;                                             // R's window
  Activation act = Activation::Tanh, rec_act = Activation::HardSigmoid;
  template <typename V>
  void buffers(V& v) {
    const int64_t M = N * P(), copies = masks ? 4 : 1;
    v.inout("gates", gates, history * M * 4 * F);
    v.inout("c", c, history * M * F);
    v.inout("hm", hm, copies * history * M * F);
    v.inout("h_seq", h_seq, steps * M * F);
    v.out("h_last", h_last, M * F);
    v.in("xz", xz, steps * M * 4 * F);
    v.in("R", R, KH * KW * F * 4 * F);
    v.in("masks", masks, 4 * M * F);
  }
  HISVID_HD int64_t P() const { return H * W; }
  // Element (gate, pixel m, filter f) of hm in time slot `slot` (gate 0 without masks).
  HISVID_HD int64_t hm_at(int64_t gate, int64_t slot, int64_t m, int64_t f) const {
    return ((slot * N * P() + m) * (masks ? 4 : 1) + gate) * F + f;
  }
  // The recurrent convolution of one time slot of hm: (N,H,W,G*F or F) -> (N,H,W,G*F).
  HISVID_HD Conv2dGeometry recurrent_conv() const {
    return convlstm_recurrent_conv(N, H, W, F, KH, KW, masks != nullptr);
  }
};

// Throws unless step t can read time slot t-1 while it writes slot t: after the first step that
// needs two slots (with one, other pixels' hm_{t-1} would be overwritten while still read). Every
// row of convlstm_step_forward checks it before any work.
template <typename T>
void require_history(const ConvLstmStepForward<T>& k, const char* row) {
  if (k.t > 0 && k.history < 2) {
    throw std::invalid_argument(std::string(row) + ": step " + std::to_string(k.t) + " with " +
                                std::to_string(k.history) + " time slot(s); steps after the first need 2");
  }
}

// Step t of the backward pass (t = T-1 .. 0, history = T). The gradient reaching h_t: from above
// (dh_seq (N,T,P,F) at every step, or dh_last (N,P,F) at T-1: exactly one is given) plus, at
// t < T-1, what step t+1's recurrent convolution sends back to hm_t (the input gradient of
// recurrent_conv from dz_{t+1}, read from dzg), times the masks and summed over the gates. The
// one reaching c_t: dc (M,F), replaced by the one reaching c_{t-1}. Writes dz_t twice: into dxz
// (N,T,P,G*F), the gradient of xz_t, and into dzg (T,M,G*F), for step t-1 and R's gradient.
template <typename T>
struct ConvLstmStepBackward {
  static constexpr const char* kName = "convlstm_step_backward";
  T* dxz = nullptr;            // (N,T,P,G*F) step t written (=)
  T* dzg = nullptr;            // (T,M,G*F) step t written, step t+1 read
  T* dc = nullptr;             // (M,F) in: the gradient reaching c_t; out: c_{t-1}'s
  const T* dh_seq = nullptr;   // (N,T,P,F), or null
  const T* dh_last = nullptr;  // (N,P,F), or null
  const T* gates = nullptr;    // (T,M,G*F)
  const T* c = nullptr;        // (T,M,F)
  const T* R = nullptr;        // (KH,KW,F,G*F)
  const T* masks = nullptr;    // (G,M,F) or null
  int64_t N = 0, steps = 0, H = 0, W = 0, F = 0, t = 0, KH = 0, KW = 0;
  Activation act = Activation::Tanh, rec_act = Activation::HardSigmoid;
  template <typename V>
  void buffers(V& v) {
    const int64_t M = N * P();
    v.inout("dxz", dxz, steps * M * 4 * F);
    v.inout("dzg", dzg, 4 * steps * M * F);
    v.inout("dc", dc, M * F);
    v.in("dh_seq", dh_seq, steps * M * F);
    v.in("dh_last", dh_last, M * F);
    v.in("gates", gates, steps * M * 4 * F);
    v.in("c", c, steps * M * F);
    v.in("R", R, KH * KW * F * 4 * F);
    v.in("masks", masks, 4 * M * F);
  }
  HISVID_HD int64_t P() const { return H * W; }
  // Element (gate, step, pixel m, filter f) of dzg, and (gate, pixel m, filter f) of the
  // gradient reaching hm_t, laid out as hm_t (gate 0 without masks).
  HISVID_HD int64_t dzg_at(int64_t gate, int64_t step, int64_t m, int64_t f) const {
    return ((step * N * P() + m) * 4 + gate) * F + f;
  }
  HISVID_HD int64_t dhm_at(int64_t gate, int64_t m, int64_t f) const {
    return (m * (masks ? 4 : 1) + gate) * F + f;
  }
  HISVID_HD Conv2dGeometry recurrent_conv() const {
    return convlstm_recurrent_conv(N, H, W, F, KH, KW, masks != nullptr);
  }
};

// One unit of the gate step, the math the tuned rows and the CUDA rows of both kernels share.
template <typename T>
struct LstmUnit {
  T i, f, g, o;  // activated gates
  T c, h;
};

template <typename T>
HISVID_HD LstmUnit<T> lstm_unit_forward(T z_i, T z_f, T z_c, T z_o, T c_prev, Activation act,
                                        Activation rec_act) {
  LstmUnit<T> s;
  s.i = activate(z_i, rec_act);
  s.f = activate(z_f, rec_act);
  s.g = activate(z_c, act);
  s.o = activate(z_o, rec_act);
  s.c = s.f * c_prev + s.i * s.g;
  s.h = s.o * activate(s.c, act);
  return s;
}

// The unit's pre-activation gradients and the gradient reaching c_prev, from dh reaching h and
// dc reaching c from the next step, with a = act(c):
//   dc_total = dc + dh o act'(c),  dz_i = dc_total g rec'(i),  dz_f = dc_total c_prev rec'(f),
//   dz_c = dc_total i act'(g),  dz_o = dh a rec'(o),  dc_prev = dc_total f
template <typename T>
struct LstmUnitGrad {
  T dz_i, dz_f, dz_c, dz_o, dc_prev;
};

template <typename T>
HISVID_HD LstmUnitGrad<T> lstm_unit_backward(T dh, T dc, const LstmUnit<T>& s, T c_prev, Activation act,
                                             Activation rec_act) {
  const T a = activate(s.c, act);
  const T dc_total = dc + dh * s.o * activation_grad_from_output(a, act);
  LstmUnitGrad<T> d;
  d.dz_i = dc_total * s.g * activation_grad_from_output(s.i, rec_act);
  d.dz_f = dc_total * c_prev * activation_grad_from_output(s.f, rec_act);
  d.dz_c = dc_total * s.i * activation_grad_from_output(s.g, act);
  d.dz_o = dh * a * activation_grad_from_output(s.o, rec_act);
  d.dc_prev = dc_total * s.f;
  return d;
}

}  // namespace hisvid

namespace hisvid::naive {

template <typename T>
void lstm_cell_forward(const LstmCellForward<T>& k);
template <typename T>
void lstm_cell_backward(const LstmCellBackward<T>& k);
template <typename T>
void lstm_sequence_forward(const LstmSequenceForward<T>& k);
template <typename T>
void lstm_sequence_backward(const LstmSequenceBackward<T>& k);
template <typename T>
void convlstm_step_forward(const ConvLstmStepForward<T>& k);
template <typename T>
void convlstm_step_backward(const ConvLstmStepBackward<T>& k);

}  // namespace hisvid::naive

// Rows in contiguous runs per gate with the activations and, for the seeds' unit counts, U
// fixed at compile time (float; tanh with sigmoid or hard_sigmoid).
namespace hisvid::cpu {

void lstm_cell_forward(const LstmCellForward<float>& k);
void lstm_cell_backward(const LstmCellBackward<float>& k);
// One sample per thread, its steps in order; the recurrent product row by row of R, so that the
// inner loop runs along the G*U columns.
void lstm_sequence_forward(const LstmSequenceForward<float>& k);
void lstm_sequence_backward(const LstmSequenceBackward<float>& k);
// The recurrent convolution through conv2d's CPU row, then the gate rows: cpu.avx2's where the
// processor has AVX2 (and FMA, for the convolution), else cpu.portable's.
void convlstm_step_forward(const ConvLstmStepForward<float>& k);
// Its two forms, rows cpu.portable (the gate rows as loops the compiler vectorises) and cpu.avx2
// (with tanh, 8 lanes at a time in intrinsics; the same bits as cpu.portable).
void convlstm_step_forward_portable(const ConvLstmStepForward<float>& k);
void convlstm_step_forward_avx2(const ConvLstmStepForward<float>& k);
// The same for the backward step (the recurrent convolution's input gradient, then the rows).
void convlstm_step_backward(const ConvLstmStepBackward<float>& k);
void convlstm_step_backward_portable(const ConvLstmStepBackward<float>& k);
void convlstm_step_backward_avx2(const ConvLstmStepBackward<float>& k);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void lstm_cell_forward(const LstmCellForward<float>& k, cudaStream_t stream);
void lstm_cell_backward(const LstmCellBackward<float>& k, cudaStream_t stream);
// Persistent: one block per sample runs all T steps, R and the state in shared memory
// (R stays in global memory, cached, where it does not fit in 48 KiB beside the state: from 54
// units backward, 55 forward).
void lstm_sequence_forward(const LstmSequenceForward<float>& k, cudaStream_t stream);
void lstm_sequence_backward(const LstmSequenceBackward<float>& k, cudaStream_t stream);
// The `cuda` rows run the version timed fastest for the step's shape (v1, lanes_v2, tiles or
// tiles_v2, per direction: kernels/lstm.cu, timed_step_choice), or the one HISVID_CUDA_CONVLSTM_STEP names
// (v1, lanes_v2, tiles, tiles_v2; `timed` is the default).
void convlstm_step_forward(const ConvLstmStepForward<float>& k, cudaStream_t stream);
void convlstm_step_backward(const ConvLstmStepBackward<float>& k, cudaStream_t stream);
// v1: one thread per (pixel, filter), its four gates' recurrent sums in one serial chain.
void convlstm_step_forward_v1(const ConvLstmStepForward<float>& k, cudaStream_t stream);
void convlstm_step_backward_v1(const ConvLstmStepBackward<float>& k, cudaStream_t stream);
// lanes_v2: 4*S lanes of a warp per (pixel, filter), S = 1..8 channel (backward: filter) parts
// per gate, met through warp shuffles.
void convlstm_step_forward_lanes_v2(const ConvLstmStepForward<float>& k, cudaStream_t stream);
// tiles: an 8x8 tile of one sample's pixels per block, hm_{t-1}'s window (backward: dz_{t+1}'s)
// and each gate's columns of R staged in shared memory; layers of up to 16 filters, else v1.
void convlstm_step_forward_tiles(const ConvLstmStepForward<float>& k, cudaStream_t stream);
void convlstm_step_backward_tiles(const ConvLstmStepBackward<float>& k, cudaStream_t stream);
void convlstm_step_backward_lanes_v2(const ConvLstmStepBackward<float>& k, cudaStream_t stream);
// tiles_v2: 3x3 recurrent kernels of up to 16 filters (else v1); the tile's window of every copy
// of hm_{t-1} (backward: of dz_{t+1}) and all of R staged once, each thread all 4 gates of one
// unit for 2 or 4 pixels one above the other, its sums in registers.
void convlstm_step_forward_tiles_v2(const ConvLstmStepForward<float>& k, cudaStream_t stream);
void convlstm_step_backward_tiles_v2(const ConvLstmStepBackward<float>& k, cudaStream_t stream);
// tiles_v2 with 4 pixels a thread wherever tiles_v2 applies. tiles_v2 itself takes 4 only where
// the image has 16 rows or more and its tiles fill the GPU's multiprocessors (2 elsewhere): this
// row checks the 4-pixel kernels on every harness case, whatever the GPU.
void convlstm_step_forward_tiles_v2_rows4(const ConvLstmStepForward<float>& k, cudaStream_t stream);
void convlstm_step_backward_tiles_v2_rows4(const ConvLstmStepBackward<float>& k, cudaStream_t stream);
// Where the tiles and tiles_v2 rows run their own kernels (v1 elsewhere); tiles_v2's shared
// memory is held against the current device's opt-in limit.
bool convlstm_step_tiles_apply(const ConvLstmStepForward<float>& k);
bool convlstm_step_tiles_apply(const ConvLstmStepBackward<float>& k);
bool convlstm_step_tiles_v2_apply(const ConvLstmStepForward<float>& k);
bool convlstm_step_tiles_v2_apply(const ConvLstmStepBackward<float>& k);

}  // namespace hisvid::cuda
#endif
