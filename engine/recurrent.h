// engine/recurrent.h — LSTM and ConvLSTM2D over a whole sequence, composed of recorded ops
// (so autograd, gradient checks and every backend come for free). Keras 2 semantics:
//
// LSTM, x (N,T,D), kernel W (D,G*U), recurrent kernel R (U,G*U), bias b (G*U):
//   z_t = x_t W + b + h_{t-1} R,  (h_t, c_t) = lstm_cell(z_t, c_{t-1}),  h_0 = c_0 = 0
// ConvLSTM2D, x (N,T,H,W,C), kernel W (KH,KW,C,G*F), recurrent kernel R (KH,KW,F,G*F), b (G*F):
//   z_t = conv(x_t, W, padding) + b + conv(h_{t-1}, R, same),  stride 1
// The input products of all timesteps are one matmul / one convolution over (N*T, ...). The
// recurrence is then one op: ops::lstm_recurrence (one kernel forward, one backward, up to
// kLstmSequenceMaxUnits units; step by step beyond) and ops::convlstm_recurrence (per step one
// kernel each way, its recurrent convolution included; with recurrent dropout that convolution
// has a group per gate).
//
// Dropout (training only, Keras): `dropout` masks the input and `recurrent_dropout` masks
// h_{t-1}, one mask per gate drawn once per sequence and shared by all timesteps; each gate's
// product then uses its own masked copy and its own slice of the kernel.
#pragma once

#include "engine/random.h"
#include "engine/tensor.h"
#include "kernels/common.h"

namespace hisvid {

struct RecurrentWeights {
  Tensor kernel;            // LSTM (D,G*U); ConvLSTM2D (KH,KW,C,G*F)
  Tensor recurrent_kernel;  // LSTM (U,G*U); ConvLSTM2D (KH,KW,F,G*F)
  Tensor bias;              // (G*U) or (G*F); undefined when the layer has none
};

// How an LSTM's input dropout draws its masks (Keras 2 chooses by its code path, Keras 3 by
// version; layers/recurrent.cpp decides):
//   PerGate  one (N, D) mask per gate, the same at every timestep (Keras 2's implementation 1,
//            which recurrent_dropout forces; ConvLSTM2D always, its masks (N, H, W, C));
//   Shared   one (N, D) mask for every gate and timestep (Keras 2's implementation 2, Keras 3),
//            and under recurrent_dropout one (N, U) recurrent mask for every gate (Keras
//            3.0-3.7, standalone Keras 2's implementation 2);
//   PerStep  one (N, T, D) mask over the whole sequence, drawn afresh for every timestep and
//            shared by the gates (Keras 2's cuDNN-compatible path, taken on the CPU as well:
//            tanh, sigmoid gates, a bias, no unroll, no recurrent_dropout).
enum class InputDropout { PerGate, Shared, PerStep };

struct RecurrentOptions {
  Activation activation = Activation::Tanh;
  Activation recurrent_activation = Activation::Sigmoid;
  bool return_sequences = false;
  float dropout = 0.0f;
  float recurrent_dropout = 0.0f;
  InputDropout input_dropout = InputDropout::PerGate;  // LSTM only
  bool training = false;
  Generator* rng = nullptr;          // required when training with a dropout rate > 0
  Padding padding = Padding::Valid;  // ConvLSTM2D input convolution
};

// x (N,T,D) -> (N,T,U) with return_sequences, else the last h (N,U).
Tensor lstm_sequence(const Tensor& x, const RecurrentWeights& w, const RecurrentOptions& options);

// x (N,T,H,W,C) -> (N,T,HO,WO,F) with return_sequences, else the last h (N,HO,WO,F).
Tensor convlstm2d_sequence(const Tensor& x, const RecurrentWeights& w, const RecurrentOptions& options);

}  // namespace hisvid
