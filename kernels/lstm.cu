// CUDA versions of kernels/lstm.h: one thread per (row, unit), the four gates of that unit
// read from the four U-wide blocks of the row. Math through the shared helpers of
// kernels/common.h (activate, activation_grad_from_output), so it is the CPU's math.
#include "kernels/cuda_context.h"
#include "kernels/lstm.h"

namespace hisvid::cuda {

namespace {

// h (M,U), c (M,U), gates (M,G*U) from z (M,G*U) and c_prev (M,U) (null: zeros)
__global__ void lstm_cell_forward_kernel(float* h, float* c, float* gates, const float* z,
                                         const float* c_prev, int64_t M, int64_t U, Activation act,
                                         Activation rec_act) {
  const int64_t total = M * U;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
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
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
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

}  // namespace

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
