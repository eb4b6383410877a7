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

namespace hisvid::cpu {

// h (M,U), c (M,U), gates (M,G*U) from z (M,G*U) and c_prev (M,U); c_prev null means zeros.
template <typename T>
void lstm_cell_forward(T* h, T* c, T* gates, const T* z, const T* c_prev, int64_t M, int64_t U,
                       Activation act, Activation rec_act);
// dz (M,G*U) (=) and dc_prev (M,U) (=, skipped when null) from dh (M,U) and dc (M,U), the
// gradient reaching c from the next step (null means zeros), with gates, c and c_prev from
// forward (c_prev null means zeros).
template <typename T>
void lstm_cell_backward(T* dz, T* dc_prev, const T* dh, const T* dc, const T* gates, const T* c,
                        const T* c_prev, int64_t M, int64_t U, Activation act, Activation rec_act);

}  // namespace hisvid::cpu

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void lstm_cell_forward(float* h, float* c, float* gates, const float* z, const float* c_prev, int64_t M,
                       int64_t U, Activation act, Activation rec_act, cudaStream_t stream);
void lstm_cell_backward(float* dz, float* dc_prev, const float* dh, const float* dc, const float* gates,
                        const float* c, const float* c_prev, int64_t M, int64_t U, Activation act,
                        Activation rec_act, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
