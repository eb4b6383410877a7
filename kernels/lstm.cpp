// kernels/lstm.cpp — CPU reference of kernels/lstm.h: the fused LSTM gate step after the
// matrix products, shared by LSTM and ConvLSTM2D. Dimension letters as in kernels/common.h.
//
//   i = rec_act(z_i)   f = rec_act(z_f)   g = act(z_c)   o = rec_act(z_o)
//   c = f * c_prev + i * g
//   h = o * act(c)
// Each row of z and gates is [i | f | c | o], U values each.
#include "kernels/lstm.h"

namespace hisvid::cpu {

namespace {

// Below this many cells the loops run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

}  // namespace

template <typename T>
void lstm_cell_forward(T* h,             // (M,U)
                       T* c,             // (M,U)
                       T* gates,         // (M,G*U) activated [i | f | g | o]
                       const T* z,       // (M,G*U) pre-activations [z_i | z_f | z_c | z_o]
                       const T* c_prev,  // (M,U) or null for zeros
                       int64_t M, int64_t U, Activation act, Activation rec_act) {
#pragma omp parallel for if (M * U > kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    const T* zr = z + m * 4 * U;  // (G*U)
    T* gr = gates + m * 4 * U;    // (G*U)
    for (int64_t u = 0; u < U; ++u) {
      const T i = activate(zr[u], rec_act);
      const T f = activate(zr[U + u], rec_act);
      const T g = activate(zr[2 * U + u], act);
      const T o = activate(zr[3 * U + u], rec_act);
      const T cp = c_prev ? c_prev[m * U + u] : T(0);
      const T cn = f * cp + i * g;
      gr[u] = i;
      gr[U + u] = f;
      gr[2 * U + u] = g;
      gr[3 * U + u] = o;
      c[m * U + u] = cn;
      h[m * U + u] = o * activate(cn, act);
    }
  }
}

// With a = act(c):
//   d_o = dh * a,   dc_total = dc + dh * o * act'(c)
//   d_i = dc_total * g,   d_f = dc_total * c_prev,   d_g = dc_total * i,   dc_prev = dc_total * f
// and each pre-activation gradient is its gate's gradient times the activation's derivative,
// taken from the cached activated gate.
template <typename T>
void lstm_cell_backward(T* dz,            // (M,G*U)
                        T* dc_prev,       // (M,U) or null (not wanted)
                        const T* dh,      // (M,U)
                        const T* dc,      // (M,U) or null for zeros
                        const T* gates,   // (M,G*U) activated [i | f | g | o]
                        const T* c,       // (M,U)
                        const T* c_prev,  // (M,U) or null for zeros
                        int64_t M, int64_t U, Activation act, Activation rec_act) {
#pragma omp parallel for if (M * U > kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    const T* gr = gates + m * 4 * U;  // (G*U)
    T* dzr = dz + m * 4 * U;          // (G*U)
    for (int64_t u = 0; u < U; ++u) {
      const int64_t k = m * U + u;
      const T i = gr[u], f = gr[U + u], g = gr[2 * U + u], o = gr[3 * U + u];
      const T a = activate(c[k], act);
      const T d_o = dh[k] * a;
      const T dc_total = (dc ? dc[k] : T(0)) + dh[k] * o * activation_grad_from_output(a, act);
      const T d_i = dc_total * g;
      const T d_f = dc_total * (c_prev ? c_prev[k] : T(0));
      const T d_g = dc_total * i;
      if (dc_prev) dc_prev[k] = dc_total * f;
      dzr[u] = d_i * activation_grad_from_output(i, rec_act);
      dzr[U + u] = d_f * activation_grad_from_output(f, rec_act);
      dzr[2 * U + u] = d_g * activation_grad_from_output(g, act);
      dzr[3 * U + u] = d_o * activation_grad_from_output(o, rec_act);
    }
  }
}

template void lstm_cell_forward<float>(float*, float*, float*, const float*, const float*, int64_t, int64_t,
                                       Activation, Activation);
template void lstm_cell_backward<float>(float*, float*, const float*, const float*, const float*,
                                        const float*, const float*, int64_t, int64_t, Activation, Activation);

template void lstm_cell_forward<double>(double*, double*, double*, const double*, const double*, int64_t,
                                        int64_t, Activation, Activation);
template void lstm_cell_backward<double>(double*, double*, const double*, const double*, const double*,
                                         const double*, const double*, int64_t, int64_t, Activation,
                                         Activation);

}  // namespace hisvid::cpu
