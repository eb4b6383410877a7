// kernels/lstm.h — the fused LSTM gate step, shared by LSTM (rows M = N) and ConvLSTM2D
// (rows M = N*H*W, units U = filters F). The matrix products that make the pre-activations
// z = x W + h_prev U + b are done outside (matmul / conv2d); this is everything after them:
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

#include "kernels/common.h"

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

}  // namespace hisvid

namespace hisvid::naive {

template <typename T>
void lstm_cell_forward(const LstmCellForward<T>& k);
template <typename T>
void lstm_cell_backward(const LstmCellBackward<T>& k);

}  // namespace hisvid::naive

// Rows in contiguous runs per gate with the activations and, for the seeds' unit counts, U
// fixed at compile time (float; tanh with sigmoid or hard_sigmoid).
namespace hisvid::cpu {

void lstm_cell_forward(const LstmCellForward<float>& k);
void lstm_cell_backward(const LstmCellBackward<float>& k);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void lstm_cell_forward(const LstmCellForward<float>& k, cudaStream_t stream);
void lstm_cell_backward(const LstmCellBackward<float>& k, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
