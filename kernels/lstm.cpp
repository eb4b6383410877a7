// kernels/lstm.cpp — CPU reference of kernels/lstm.h: the fused LSTM gate step after the
// matrix products, shared by LSTM and ConvLSTM2D. Dimension letters as in kernels/common.h.
//
//   i = rec_act(z_i)   f = rec_act(z_f)   g = act(z_c)   o = rec_act(z_o)
//   c = f * c_prev + i * g
//   h = o * act(c)
// Each row of z and gates is [i | f | c | o], U values each.
#include "kernels/lstm.h"

#include <type_traits>

namespace hisvid::cpu {

namespace {

// Below this many cells the loops run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

// Calls body(std::true_type) or body(std::false_type): a branch decided once per call rather
// than once per element.
template <typename Body>
void with_flag(bool flag, Body&& body) {
  if (flag) {
    body(std::true_type{});
  } else {
    body(std::false_type{});
  }
}

// Calls body(std::integral_constant<int, U>) for the unit counts of the seeds' layers, and
// body(std::integral_constant<int, 0>) (meaning: use the runtime value) otherwise.
template <typename Body>
void with_units(int64_t U, Body&& body) {
  switch (U) {
    case 4:
      return body(std::integral_constant<int, 4>{});
    case 8:
      return body(std::integral_constant<int, 8>{});
    case 16:
      return body(std::integral_constant<int, 16>{});
    case 32:
      return body(std::integral_constant<int, 32>{});
    case 64:
      return body(std::integral_constant<int, 64>{});
    default:
      return body(std::integral_constant<int, 0>{});
  }
}

}  // namespace

template <typename T>
void lstm_cell_forward(T* h,             // (M,U)
                       T* c,             // (M,U)
                       T* gates,         // (M,G*U) activated [i | f | g | o]
                       const T* z,       // (M,G*U) pre-activations [z_i | z_f | z_c | z_o]
                       const T* c_prev,  // (M,U) or null for zeros
                       int64_t M, int64_t U_runtime, Activation act, Activation rec_act) {
  // One loop nest per (act, rec_act, c_prev or not, common U), known at compile time: no
  // branch is left in the loops, which then vectorise, and a small U (ConvLSTM2D's 4 filters)
  // becomes straight-line vector code instead of four loops of four iterations per row.
  with_activation(act, [&](auto a) {
    with_activation(rec_act, [&](auto r) {
      with_flag(c_prev != nullptr, [&](auto has_c_prev) {
        with_units(U_runtime, [&](auto units) {
          const int64_t U = units.value > 0 ? units.value : U_runtime;
#pragma omp parallel for if (M * U > kParallelMin)
          for (int64_t m = 0; m < M; ++m) {
            // Row pointers that do not alias (the captured ones could, as far as the compiler
            // knows, and would be reloaded after every store). Each loop below walks contiguous
            // memory, which is what lets it vectorise.
            const T* __restrict zr = z + m * 4 * U;                                    // (G*U)
            const T* __restrict cp = has_c_prev.value ? c_prev + m * U : nullptr;      // (U)
            T* __restrict gr = gates + m * 4 * U;                                      // (G*U)
            T* __restrict cr = c + m * U;                                              // (U)
            T* __restrict hr = h + m * U;                                              // (U)
            for (int64_t j = 0; j < 2 * U; ++j) gr[j] = activate(zr[j], r.value);      // i, f
            for (int64_t j = 2 * U; j < 3 * U; ++j) gr[j] = activate(zr[j], a.value);  // g
            for (int64_t j = 3 * U; j < 4 * U; ++j) gr[j] = activate(zr[j], r.value);  // o
            const T* __restrict i = gr;
            const T* __restrict f = gr + U;
            const T* __restrict g = gr + 2 * U;
            const T* __restrict o = gr + 3 * U;
            for (int64_t u = 0; u < U; ++u) {
              const T cn = has_c_prev.value ? f[u] * cp[u] + i[u] * g[u] : i[u] * g[u];
              cr[u] = cn;
              hr[u] = o[u] * activate(cn, a.value);
            }
          }
        });
      });
    });
  });
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
                        int64_t M, int64_t U_runtime, Activation act, Activation rec_act) {
  with_activation(act, [&](auto ac) {
    with_activation(rec_act, [&](auto r) {
      with_flag(c_prev != nullptr, [&](auto has_c_prev) {
        with_flag(dc != nullptr, [&](auto has_dc) {
          with_flag(dc_prev != nullptr, [&](auto wants_dc_prev) {
            with_units(U_runtime, [&](auto units) {
              const int64_t U = units.value > 0 ? units.value : U_runtime;
#pragma omp parallel for if (M * U > kParallelMin)
              for (int64_t m = 0; m < M; ++m) {
                const T* __restrict gr = gates + m * 4 * U;                             // (G*U)
                const T* __restrict cr = c + m * U;                                     // (U)
                const T* __restrict dhr = dh + m * U;                                   // (U)
                const T* __restrict dcr = has_dc.value ? dc + m * U : nullptr;          // (U)
                const T* __restrict cpr = has_c_prev.value ? c_prev + m * U : nullptr;  // (U)
                T* __restrict dcp = wants_dc_prev.value ? dc_prev + m * U : nullptr;    // (U)
                T* __restrict dzr = dz + m * 4 * U;                                     // (G*U)
                const T* __restrict ig = gr;
                const T* __restrict fg = gr + U;
                const T* __restrict gg = gr + 2 * U;
                const T* __restrict og = gr + 3 * U;
                for (int64_t u = 0; u < U; ++u) {
                  const T a = activate(cr[u], ac.value);
                  const T from_h = dhr[u] * og[u] * activation_grad_from_output(a, ac.value);
                  const T dc_total = has_dc.value ? dcr[u] + from_h : from_h;
                  if (wants_dc_prev.value) dcp[u] = dc_total * fg[u];
                  dzr[u] = dc_total * gg[u] * activation_grad_from_output(ig[u], r.value);
                  dzr[U + u] = has_c_prev.value
                                   ? dc_total * cpr[u] * activation_grad_from_output(fg[u], r.value)
                                   : T(0);
                  dzr[2 * U + u] = dc_total * ig[u] * activation_grad_from_output(gg[u], ac.value);
                  dzr[3 * U + u] = dhr[u] * a * activation_grad_from_output(og[u], r.value);
                }
              }
            });
          });
        });
      });
    });
  });
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
