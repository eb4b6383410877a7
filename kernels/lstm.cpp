// kernels/lstm.cpp — kernels/lstm.h on the host: the fused LSTM gate step after the matrix
// products, shared by LSTM and ConvLSTM2D, as the naive loop (the definition) and the tuned
// rows. Dimension letters as in kernels/common.h.
//
//   i = rec_act(z_i)   f = rec_act(z_f)   g = act(z_c)   o = rec_act(z_o)
//   c = f * c_prev + i * g
//   h = o * act(c)
// Each row of z and gates is [i | f | c | o], U values each.
//
// Backward, with a = act(c):
//   d_o = dh * a,   dc_total = dc + dh * o * act'(c)
//   d_i = dc_total * g,   d_f = dc_total * c_prev,   d_g = dc_total * i,   dc_prev = dc_total * f
// and each pre-activation gradient is its gate's gradient times the activation's derivative,
// taken from the cached activated gate.
//
// Speed (the cpu rows): each row is processed in contiguous runs (the four gates, then the cell) with the
// activations and, for the seeds' unit counts, U known at compile time, so a ConvLSTM2D(4)
// row is straight-line vector code. That holds for float with tanh and sigmoid or
// hard_sigmoid (Keras's LSTM and ConvLSTM2D); every other case runs the same loops with the
// activations and U read at run time. Missing optional inputs read a row of zeros and
// unwanted outputs go to a scratch row, so no loop carries a branch.
// The ConvLSTM step's rows come in two forms: cpu.portable (those loops) and cpu.avx2 (tanh's
// rational function and the cell 8 lanes at a time in intrinsics, two pixels a vector with 4
// filters, where the loops above are runs of 4 the compiler leaves half-vectorised); the same
// float operations in the same order, so the same bits. The `cpu` row runs cpu.avx2 where the
// processor has AVX2 and FMA (avx2::available(), the convolutions' test; the rows use no FMA).
// lstm.cpp is compiled with -ffp-contract=off (kernels/CMakeLists.txt): under -march=native GCC
// would otherwise fuse the multiplies and adds of each form its own way.
#include "kernels/lstm.h"

#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels/conv2d_avx2.h"

namespace hisvid::cpu {

namespace {

// Below this many cells the loops run on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;

// An activation fixed at compile time, or (Runtime) read at run time.
template <Activation A>
struct Fixed {
  constexpr Activation operator()() const { return A; }
};
struct Runtime {
  Activation a;
  Activation operator()() const { return a; }
};

// A zero row and a scratch row of U values per thread, for absent inputs and outputs.
template <typename T>
struct SpareRows {
  explicit SpareRows(int64_t U) : zeros(static_cast<size_t>(U), T(0)), scratch(static_cast<size_t>(U)) {}
  std::vector<T> zeros, scratch;
};

// The gate step of rows [0, M), with units fixed at compile time when kU > 0.
template <int kU, typename T, typename Act, typename Rec>
void forward_rows(T* h, T* c, T* gates, const T* z, const T* c_prev, int64_t M, int64_t U_runtime, Act act,
                  Rec rec) {
  const int64_t U = kU > 0 ? kU : U_runtime;
#pragma omp parallel if (M * U > kParallelMin)
  {
    const SpareRows<T> spare(U);
#pragma omp for
    for (int64_t m = 0; m < M; ++m) {
      const T* __restrict zr = z + m * 4 * U;                                  // (G*U)
      const T* __restrict cp = c_prev ? c_prev + m * U : spare.zeros.data();   // (U)
      T* __restrict gr = gates + m * 4 * U;                                    // (G*U)
      T* __restrict cr = c + m * U;                                            // (U)
      T* __restrict hr = h + m * U;                                            // (U)
      for (int64_t j = 0; j < 2 * U; ++j) gr[j] = activate(zr[j], rec());      // i, f
      for (int64_t j = 2 * U; j < 3 * U; ++j) gr[j] = activate(zr[j], act());  // g
      for (int64_t j = 3 * U; j < 4 * U; ++j) gr[j] = activate(zr[j], rec());  // o
      const T* __restrict i = gr;
      const T* __restrict f = gr + U;
      const T* __restrict g = gr + 2 * U;
      const T* __restrict o = gr + 3 * U;
      for (int64_t u = 0; u < U; ++u) {
        cr[u] = f[u] * cp[u] + i[u] * g[u];
        hr[u] = o[u] * activate(cr[u], act());
      }
    }
  }
}

template <int kU, typename T, typename Act, typename Rec>
void backward_rows(T* dz, T* dc_prev, const T* dh, const T* dc, const T* gates, const T* c, const T* c_prev,
                   int64_t M, int64_t U_runtime, Act act, Rec rec) {
  const int64_t U = kU > 0 ? kU : U_runtime;
#pragma omp parallel if (M * U > kParallelMin)
  {
    SpareRows<T> spare(U);
#pragma omp for
    for (int64_t m = 0; m < M; ++m) {
      const T* __restrict gr = gates + m * 4 * U;                              // (G*U)
      const T* __restrict cr = c + m * U;                                      // (U)
      const T* __restrict dhr = dh + m * U;                                    // (U)
      const T* __restrict dcr = dc ? dc + m * U : spare.zeros.data();          // (U)
      const T* __restrict cpr = c_prev ? c_prev + m * U : spare.zeros.data();  // (U)
      T* __restrict dcp = dc_prev ? dc_prev + m * U : spare.scratch.data();    // (U)
      T* __restrict dzr = dz + m * 4 * U;                                      // (G*U)
      const T* __restrict ig = gr;
      const T* __restrict fg = gr + U;
      const T* __restrict gg = gr + 2 * U;
      const T* __restrict og = gr + 3 * U;
      for (int64_t u = 0; u < U; ++u) {
        const T a = activate(cr[u], act());
        const T dc_total = dcr[u] + dhr[u] * og[u] * activation_grad_from_output(a, act());
        dcp[u] = dc_total * fg[u];
        dzr[u] = dc_total * gg[u] * activation_grad_from_output(ig[u], rec());
        dzr[U + u] = dc_total * cpr[u] * activation_grad_from_output(fg[u], rec());
        dzr[2 * U + u] = dc_total * ig[u] * activation_grad_from_output(gg[u], act());
        dzr[3 * U + u] = dhr[u] * a * activation_grad_from_output(og[u], rec());
      }
    }
  }
}

// Calls run(units, act, rec) with the fastest specialisation for these arguments.
template <typename T, typename Run>
void dispatch(int64_t U, Activation act, Activation rec, Run&& run) {
  const bool specialised =
      std::is_same_v<T, float> && act == Activation::Tanh &&
      (rec == Activation::Sigmoid || rec == Activation::HardSigmoid || rec == Activation::HardSigmoidKeras3);
  if (!specialised) return run(std::integral_constant<int, 0>{}, Runtime{act}, Runtime{rec});
  auto with_rec = [&](auto units) {
    if (rec == Activation::Sigmoid)
      return run(units, Fixed<Activation::Tanh>{}, Fixed<Activation::Sigmoid>{});
    if (rec == Activation::HardSigmoidKeras3) {
      return run(units, Fixed<Activation::Tanh>{}, Fixed<Activation::HardSigmoidKeras3>{});
    }
    return run(units, Fixed<Activation::Tanh>{}, Fixed<Activation::HardSigmoid>{});
  };
  switch (U) {  // the unit counts of the seeds' LSTM and ConvLSTM2D layers
    case 4:
      return with_rec(std::integral_constant<int, 4>{});
    case 8:
      return with_rec(std::integral_constant<int, 8>{});
    case 16:
      return with_rec(std::integral_constant<int, 16>{});
    case 32:
      return with_rec(std::integral_constant<int, 32>{});
    case 64:
      return with_rec(std::integral_constant<int, 64>{});
    default:
      return with_rec(std::integral_constant<int, 0>{});
  }
}

}  // namespace

void lstm_cell_forward(const LstmCellForward<float>& k) {
  dispatch<float>(k.U, k.act, k.rec_act, [&](auto units, auto a, auto r) {
    forward_rows<decltype(units)::value>(k.h, k.c, k.gates, k.z, k.c_prev, k.M, k.U, a, r);
  });
}

void lstm_cell_backward(const LstmCellBackward<float>& k) {
  dispatch<float>(k.U, k.act, k.rec_act, [&](auto units, auto a, auto r) {
    backward_rows<decltype(units)::value>(k.dz, k.dc_prev, k.dh, k.dc, k.gates, k.c, k.c_prev, k.M, k.U, a,
                                          r);
  });
}

// A ConvLSTM step on the CPU: the recurrent convolution through the convolution's own CPU row
// (kernels/conv2d.h) into a per-thread buffer rz (M,G*F), then, pixel by pixel, the
// pre-activations gathered where the gates go, activated in place in runs per gate, then the
// cell; filters and activations fixed at compile time for the seeds' layers (as the gate step
// above).

// The tag of the per-thread buffer of the recurrent convolution's result (thread_buffer).
struct RecurrentConvBuffer;

template <int kF, typename Act, typename Rec>
void convlstm_step_rows(const ConvLstmStepForward<float>& k, const float* rz_all, Act act, Rec rec) {
  const int64_t F = kF > 0 ? kF : k.F, P = k.P(), M = k.N * P, S = k.steps, t = k.t;
  const int64_t slot = t % k.history, prev = (t + k.history - 1) % k.history;
#pragma omp parallel if (M * F > kParallelMin)
  {
    SpareRows<float> spare(F);
#pragma omp for
    for (int64_t m = 0; m < M; ++m) {
      const int64_t n = m / P, sample_row = (n * S + t) * P + m % P;  // (n, t, p)
      float* __restrict z = k.gates + (slot * M + m) * 4 * F;         // (G*F), activated in place
      const float* __restrict xz = k.xz + sample_row * 4 * F;
      for (int64_t j = 0; j < 4 * F; ++j) z[j] = xz[j];
      if (rz_all) {
        const float* __restrict rz = rz_all + m * 4 * F;
        for (int64_t j = 0; j < 4 * F; ++j) z[j] += rz[j];
      }
      for (int64_t j = 0; j < 2 * F; ++j) z[j] = activate(z[j], rec());      // i, f
      for (int64_t j = 2 * F; j < 3 * F; ++j) z[j] = activate(z[j], act());  // g
      for (int64_t j = 3 * F; j < 4 * F; ++j) z[j] = activate(z[j], rec());  // o
      const float* __restrict cp = t > 0 ? k.c + (prev * M + m) * F : spare.zeros.data();
      float* __restrict cr = k.c + (slot * M + m) * F;
      float* __restrict h = spare.scratch.data();
      for (int64_t f = 0; f < F; ++f) {
        cr[f] = z[F + f] * cp[f] + z[f] * z[2 * F + f];
        h[f] = z[3 * F + f] * activate(cr[f], act());
      }
      if (k.masks) {
        for (int64_t q = 0; q < 4; ++q) {
          float* __restrict hm = k.hm + k.hm_at(q, slot, m, 0);
          const float* __restrict mask = k.masks + (q * M + m) * F;
          for (int64_t f = 0; f < F; ++f) hm[f] = h[f] * mask[f];
        }
      } else {
        std::copy(h, h + F, k.hm + k.hm_at(0, slot, m, 0));
      }
      if (k.h_seq) std::copy(h, h + F, k.h_seq + sample_row * F);
      if (k.h_last && t == S - 1) std::copy(h, h + F, k.h_last + m * F);
    }
  }
}

// Whether the AVX2 gate rows take these activations: tanh, with any recurrent activation the
// dispatch fixes at compile time (the forward's sigmoid lanes stay scalar).
template <typename Act, typename Rec>
constexpr bool avx2_gates() {
  return std::is_same_v<Act, Fixed<Activation::Tanh>> && !std::is_same_v<Rec, Runtime>;
}

// The gate rows in AVX2: the portable rows' float operations in the same order, 8 lanes at a
// time, a run's last lanes through a mask. The target is AVX2 alone, without FMA, so nothing is
// contracted and both rows give the same bits (test KernelTable.RowsThatPromiseTheSameBitsGiveThem).
// The lanes form of each activation keeps x's NaN where the portable ternaries keep it:
// max_ps/min_ps return their second operand when either is NaN. (No lambdas below: they would
// not inherit the target.)
#define HISVID_AVX2 __attribute__((target("avx2")))
namespace {
namespace lanes {

using avx2::kLanes;

HISVID_AVX2 inline __m256 times_x2_plus(__m256 v, __m256 x2, float c) {
  return _mm256_add_ps(_mm256_mul_ps(v, x2), _mm256_set1_ps(c));
}

HISVID_AVX2 inline __m256 tanh_of(__m256 x) {
  using namespace tanh_rational;
  x = _mm256_min_ps(_mm256_set1_ps(kClamp), _mm256_max_ps(_mm256_set1_ps(-kClamp), x));
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(kA13);
  p = times_x2_plus(p, x2, kA11);
  p = times_x2_plus(p, x2, kA9);
  p = times_x2_plus(p, x2, kA7);
  p = times_x2_plus(p, x2, kA5);
  p = times_x2_plus(p, x2, kA3);
  p = times_x2_plus(p, x2, kA1);
  __m256 q = _mm256_set1_ps(kB6);
  q = times_x2_plus(q, x2, kB4);
  q = times_x2_plus(q, x2, kB2);
  q = times_x2_plus(q, x2, kB0);
  return _mm256_div_ps(_mm256_mul_ps(x, p), q);
}

// Keras 2: clip(0.2 * x + 0.5, 0, 1).
HISVID_AVX2 inline __m256 hard_sigmoid(__m256 x) {
  const __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(0.2f), x), _mm256_set1_ps(0.5f));
  return _mm256_min_ps(_mm256_set1_ps(1.0f), _mm256_max_ps(_mm256_setzero_ps(), y));
}

// Keras 3: clip(x + 3, 0, 6) / 6.
HISVID_AVX2 inline __m256 hard_sigmoid_keras3(__m256 x) {
  const __m256 y = _mm256_add_ps(x, _mm256_set1_ps(3.0f));
  const __m256 clipped = _mm256_min_ps(_mm256_set1_ps(6.0f), _mm256_max_ps(_mm256_setzero_ps(), y));
  return _mm256_div_ps(clipped, _mm256_set1_ps(6.0f));
}

template <Activation A>
HISVID_AVX2 inline __m256 activate(__m256 x) {
  static_assert(A == Activation::Tanh || A == Activation::HardSigmoid || A == Activation::HardSigmoidKeras3);
  if constexpr (A == Activation::Tanh) return tanh_of(x);
  if constexpr (A == Activation::HardSigmoid) return hard_sigmoid(x);
  if constexpr (A == Activation::HardSigmoidKeras3) return hard_sigmoid_keras3(x);
}

// A run of n floats in vectors of 8 from offset 0: the vector at `at` is whole, or the run's
// last (n % 8) lanes, loaded through a mask and stored 4, 2 and 1 at a time (a masked store
// is slow on some processors).
struct Run {
  int64_t n;
  __m256i tail;
  HISVID_AVX2 explicit Run(int64_t count)
      : n(count), tail(avx2::lane_mask(static_cast<int>(count % kLanes))) {}
  HISVID_AVX2 __m256 load(const float* p, int64_t at) const {
    return at + kLanes <= n ? _mm256_loadu_ps(p + at) : _mm256_maskload_ps(p + at, tail);
  }
  HISVID_AVX2 void store(float* p, int64_t at, __m256 v) const {
    if (at + kLanes <= n) return _mm256_storeu_ps(p + at, v);
    p += at;
    int64_t left = n - at;
    __m128 part = _mm256_castps256_ps128(v);
    if (left >= 4) _mm_storeu_ps(p, part), part = _mm256_extractf128_ps(v, 1), p += 4, left -= 4;
    if (left >= 2)
      _mm_storel_pi(reinterpret_cast<__m64*>(p), part), part = _mm_movehl_ps(part, part), p += 2, left -= 2;
    if (left >= 1) _mm_store_ss(p, part);
  }
};

// z[0, n) = act(z[0, n)) in place; sigmoid (libm's expf) one value at a time.
template <Activation A>
HISVID_AVX2 inline void activate_run(float* z, const Run& run) {
  if constexpr (A == Activation::Sigmoid) {
    for (int64_t j = 0; j < run.n; ++j) z[j] = hisvid::activate(z[j], A);
  } else {
    for (int64_t at = 0; at < run.n; at += kLanes) run.store(z, at, activate<A>(run.load(z, at)));
  }
}

// The runs of one pixel's values: all four gates, the first two, one.
struct PixelRuns {
  Run all, pair, one;
  HISVID_AVX2 explicit PixelRuns(int64_t F) : all(4 * F), pair(2 * F), one(F) {}
};

// Where step t reads and writes.
struct StepAt {
  int64_t F, P, M, S, t, slot, prev;
  StepAt(const ConvLstmStepForward<float>& k, int64_t F_) : StepAt(k.N, k.P(), k.steps, k.t, k.history, F_) {}
  // The backward pass keeps every step: step t in slot t.
  StepAt(const ConvLstmStepBackward<float>& k, int64_t F_) : StepAt(k.N, k.P(), k.steps, k.t, k.steps, F_) {}
  StepAt(int64_t N, int64_t P_, int64_t S_, int64_t t_, int64_t history, int64_t F_)
      : F(F_), P(P_), M(N * P), S(S_), t(t_), slot(t % history), prev((t + history - 1) % history) {}
  int64_t sample_row(int64_t m) const { return (m / P * S + t) * P + m % P; }  // (n, t, p)
};

// Pixel m of step t: the portable row's loop body. zeros: F zeros, h: F floats of scratch.
template <Activation kRec>
HISVID_AVX2 inline void gate_pixel(const ConvLstmStepForward<float>& k, const StepAt& s,
                                   const PixelRuns& runs, int64_t m, const float* rz_all, const float* zeros,
                                   float* h) {
  const int64_t F = s.F, sample_row = s.sample_row(m);
  float* __restrict z = k.gates + (s.slot * s.M + m) * 4 * F;  // (G*F), activated in place
  const float* __restrict xz = k.xz + sample_row * 4 * F;
  if (rz_all) {
    const float* __restrict rz = rz_all + m * 4 * F;
    for (int64_t at = 0; at < runs.all.n; at += kLanes)
      runs.all.store(z, at, _mm256_add_ps(runs.all.load(xz, at), runs.all.load(rz, at)));
  } else {
    std::copy(xz, xz + 4 * F, z);
  }
  activate_run<kRec>(z, runs.pair);                     // i, f
  activate_run<Activation::Tanh>(z + 2 * F, runs.one);  // g
  activate_run<kRec>(z + 3 * F, runs.one);              // o
  const Run& one = runs.one;
  const float* __restrict cp = s.t > 0 ? k.c + (s.prev * s.M + m) * F : zeros;
  float* __restrict cr = k.c + (s.slot * s.M + m) * F;
  for (int64_t at = 0; at < F; at += kLanes) {
    const __m256 c = _mm256_add_ps(_mm256_mul_ps(one.load(z + F, at), one.load(cp, at)),
                                   _mm256_mul_ps(one.load(z, at), one.load(z + 2 * F, at)));
    one.store(cr, at, c);
    one.store(h, at, _mm256_mul_ps(one.load(z + 3 * F, at), tanh_of(c)));
  }
  if (k.masks) {
    for (int64_t q = 0; q < 4; ++q) {
      float* __restrict hm = k.hm + k.hm_at(q, s.slot, m, 0);
      const float* __restrict mask = k.masks + (q * s.M + m) * F;
      for (int64_t at = 0; at < F; at += kLanes)
        one.store(hm, at, _mm256_mul_ps(one.load(h, at), one.load(mask, at)));
    }
  } else {
    std::copy(h, h + F, k.hm + k.hm_at(0, s.slot, m, 0));
  }
  if (k.h_seq) std::copy(h, h + F, k.h_seq + sample_row * F);
  if (k.h_last && s.t == s.S - 1) std::copy(h, h + F, k.h_last + m * F);
}

// Pixels m and m+1 of step t with 4 filters, two pixels a vector: each pixel's 16 gates are two
// vectors [i f] and [g o]; the pair's g, o, c and h are gathered into one vector each. Same
// operations per value as gate_pixel. rec is not sigmoid.
template <Activation kRec>
HISVID_AVX2 inline void gate_pair4(const ConvLstmStepForward<float>& k, const StepAt& s, int64_t m,
                                   const float* rz_all) {
  constexpr int64_t F = 4;
  const int64_t row_a = s.sample_row(m), row_b = s.sample_row(m + 1);
  float* __restrict z = k.gates + (s.slot * s.M + m) * 4 * F;  // (2,G*F), the pair's
  const float* __restrict xa = k.xz + row_a * 4 * F;
  const float* __restrict xb = k.xz + row_b * 4 * F;
  __m256 if_a = _mm256_loadu_ps(xa), go_a = _mm256_loadu_ps(xa + 8);
  __m256 if_b = _mm256_loadu_ps(xb), go_b = _mm256_loadu_ps(xb + 8);
  if (rz_all) {
    const float* __restrict rz = rz_all + m * 4 * F;
    if_a = _mm256_add_ps(if_a, _mm256_loadu_ps(rz)), go_a = _mm256_add_ps(go_a, _mm256_loadu_ps(rz + 8));
    if_b = _mm256_add_ps(if_b, _mm256_loadu_ps(rz + 16)),
    go_b = _mm256_add_ps(go_b, _mm256_loadu_ps(rz + 24));
  }
  if_a = activate<kRec>(if_a), if_b = activate<kRec>(if_b);
  const __m256 g = tanh_of(_mm256_permute2f128_ps(go_a, go_b, 0x20));         // [g_a g_b]
  const __m256 o = activate<kRec>(_mm256_permute2f128_ps(go_a, go_b, 0x31));  // [o_a o_b]
  _mm256_storeu_ps(z, if_a), _mm256_storeu_ps(z + 8, _mm256_permute2f128_ps(g, o, 0x20));
  _mm256_storeu_ps(z + 16, if_b), _mm256_storeu_ps(z + 24, _mm256_permute2f128_ps(g, o, 0x31));
  const __m256 i = _mm256_permute2f128_ps(if_a, if_b, 0x20), f = _mm256_permute2f128_ps(if_a, if_b, 0x31);
  const __m256 cp = s.t > 0 ? _mm256_loadu_ps(k.c + (s.prev * s.M + m) * F) : _mm256_setzero_ps();
  const __m256 c = _mm256_add_ps(_mm256_mul_ps(f, cp), _mm256_mul_ps(i, g));
  _mm256_storeu_ps(k.c + (s.slot * s.M + m) * F, c);
  const __m256 h = _mm256_mul_ps(o, tanh_of(c));  // [h_a h_b]
  if (k.masks) {
    for (int64_t q = 0; q < 4; ++q) {
      const __m256 hm = _mm256_mul_ps(h, _mm256_loadu_ps(k.masks + (q * s.M + m) * F));
      _mm_storeu_ps(k.hm + k.hm_at(q, s.slot, m, 0), _mm256_castps256_ps128(hm));
      _mm_storeu_ps(k.hm + k.hm_at(q, s.slot, m + 1, 0), _mm256_extractf128_ps(hm, 1));
    }
  } else {
    _mm256_storeu_ps(k.hm + k.hm_at(0, s.slot, m, 0), h);
  }
  if (k.h_seq) {
    _mm_storeu_ps(k.h_seq + row_a * F, _mm256_castps256_ps128(h));
    _mm_storeu_ps(k.h_seq + row_b * F, _mm256_extractf128_ps(h, 1));
  }
  if (k.h_last && s.t == s.S - 1) _mm256_storeu_ps(k.h_last + m * F, h);
}

}  // namespace lanes
}  // namespace

// Step t's gate rows as convlstm_step_rows (act = tanh), in AVX2: pixel by pixel, or with 4
// filters (and rec not sigmoid) two pixels at a time.
template <int kF, Activation kRec>
HISVID_AVX2 void convlstm_step_rows_avx2(const ConvLstmStepForward<float>& k, const float* rz_all,
                                         Fixed<kRec>) {
  const lanes::StepAt s(k, kF > 0 ? kF : k.F);
  const lanes::PixelRuns runs(s.F);
  constexpr bool pairs = kF == 4 && kRec != Activation::Sigmoid;
#pragma omp parallel if (s.M * s.F > kParallelMin)
  {
    SpareRows<float> spare(s.F);
    if constexpr (pairs) {
#pragma omp for
      for (int64_t pair = 0; pair < s.M / 2; ++pair) lanes::gate_pair4<kRec>(k, s, 2 * pair, rz_all);
#pragma omp single
      if (s.M % 2 == 1)
        lanes::gate_pixel<kRec>(k, s, runs, s.M - 1, rz_all, spare.zeros.data(), spare.scratch.data());
    } else {
#pragma omp for
      for (int64_t m = 0; m < s.M; ++m)
        lanes::gate_pixel<kRec>(k, s, runs, m, rz_all, spare.zeros.data(), spare.scratch.data());
    }
  }
}

// dhm (M,G*F or F): the gradient reaching hm_t from step t+1, null at T-1.
template <int kF, typename Act, typename Rec>
void convlstm_step_backward_rows(const ConvLstmStepBackward<float>& k, const float* dhm, Act act, Rec rec) {
  const int64_t F = kF > 0 ? kF : k.F, P = k.P(), M = k.N * P, S = k.steps, t = k.t;
#pragma omp parallel if (M * F > kParallelMin)
  {
    const SpareRows<float> spare(F);
#pragma omp for
    for (int64_t m = 0; m < M; ++m) {
      const int64_t n = m / P, sample_row = (n * S + t) * P + m % P;  // (n, t, p)
      const float* __restrict gates = k.gates + (t * M + m) * 4 * F;
      const float* __restrict ig = gates;
      const float* __restrict fg = gates + F;
      const float* __restrict gg = gates + 2 * F;
      const float* __restrict og = gates + 3 * F;
      const float* __restrict cr = k.c + (t * M + m) * F;
      const float* __restrict cp = t > 0 ? k.c + ((t - 1) * M + m) * F : spare.zeros.data();
      const float* __restrict above = k.dh_seq     ? k.dh_seq + sample_row * F
                                      : t == S - 1 ? k.dh_last + m * F
                                                   : spare.zeros.data();
      float* __restrict dc = k.dc + m * F;
      float* __restrict dxz = k.dxz + sample_row * 4 * F;
      float* dz[4];
      for (int64_t q = 0; q < 4; ++q) dz[q] = k.dzg + k.dzg_at(q, t, m, 0);
      for (int64_t f = 0; f < F; ++f) {
        float dh = above[f];
        if (dhm && k.masks) {
          for (int64_t q = 0; q < 4; ++q) dh += dhm[k.dhm_at(q, m, f)] * k.masks[(q * M + m) * F + f];
        } else if (dhm) {
          dh += dhm[m * F + f];
        }
        const float a = activate(cr[f], act());
        const float dc_total = dc[f] + dh * og[f] * activation_grad_from_output(a, act());
        const float d[4] = {dc_total * gg[f] * activation_grad_from_output(ig[f], rec()),
                            dc_total * cp[f] * activation_grad_from_output(fg[f], rec()),
                            dc_total * ig[f] * activation_grad_from_output(gg[f], act()),
                            dh * a * activation_grad_from_output(og[f], rec())};
        for (int64_t q = 0; q < 4; ++q) dxz[q * F + f] = dz[q][f] = d[q];
        dc[f] = dc_total * fg[f];
      }
    }
  }
}

namespace {
namespace lanes {

// 1 - y^2, tanh's derivative from its output.
HISVID_AVX2 inline __m256 tanh_grad(__m256 y) {
  return _mm256_sub_ps(_mm256_set1_ps(1.0f), _mm256_mul_ps(y, y));
}

// activation_grad_from_output on 8 lanes (a NaN output gets 0 from the hard sigmoids, as there).
template <Activation A>
HISVID_AVX2 inline __m256 activation_grad(__m256 y) {
  if constexpr (A == Activation::Tanh) return tanh_grad(y);
  if constexpr (A == Activation::Sigmoid) return _mm256_mul_ps(y, _mm256_sub_ps(_mm256_set1_ps(1.0f), y));
  if constexpr (A == Activation::HardSigmoid || A == Activation::HardSigmoidKeras3) {
    const __m256 inside = _mm256_and_ps(_mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ),
                                        _mm256_cmp_ps(y, _mm256_set1_ps(1.0f), _CMP_LT_OQ));
    return _mm256_and_ps(inside, _mm256_set1_ps(A == Activation::HardSigmoid ? 0.2f : 1.0f / 6.0f));
  }
}

// One step of the cell backward on 8 lanes, as convlstm_step_backward_rows' loop body: the four
// pre-activation gradients and the one reaching c_{t-1}.
struct CellGrads {
  __m256 dz[4], dc_prev;
};
template <Activation kRec>
HISVID_AVX2 inline CellGrads cell_grads(__m256 i, __m256 f, __m256 g, __m256 o, __m256 c, __m256 cp,
                                        __m256 dc, __m256 dh) {
  const __m256 a = tanh_of(c);
  const __m256 dc_total = _mm256_add_ps(dc, _mm256_mul_ps(_mm256_mul_ps(dh, o), tanh_grad(a)));
  CellGrads out;
  out.dz[0] = _mm256_mul_ps(_mm256_mul_ps(dc_total, g), activation_grad<kRec>(i));
  out.dz[1] = _mm256_mul_ps(_mm256_mul_ps(dc_total, cp), activation_grad<kRec>(f));
  out.dz[2] = _mm256_mul_ps(_mm256_mul_ps(dc_total, i), tanh_grad(g));
  out.dz[3] = _mm256_mul_ps(_mm256_mul_ps(dh, a), activation_grad<kRec>(o));
  out.dc_prev = _mm256_mul_ps(dc_total, f);
  return out;
}

// Pixel m of backward step t, as convlstm_step_backward_rows' loop body. zeros: F zeros.
template <Activation kRec>
HISVID_AVX2 inline void cell_grads_pixel(const ConvLstmStepBackward<float>& k, const StepAt& s,
                                         const Run& one, int64_t m, const float* dhm, const float* zeros) {
  const int64_t F = s.F, sample_row = s.sample_row(m);
  const float* __restrict gates = k.gates + (s.slot * s.M + m) * 4 * F;
  const float* __restrict cr = k.c + (s.slot * s.M + m) * F;
  const float* __restrict cp = s.t > 0 ? k.c + (s.prev * s.M + m) * F : zeros;
  const float* __restrict above = k.dh_seq         ? k.dh_seq + sample_row * F
                                  : s.t == s.S - 1 ? k.dh_last + m * F
                                                   : zeros;
  float* __restrict dc = k.dc + m * F;
  float* __restrict dxz = k.dxz + sample_row * 4 * F;
  float* __restrict dz = k.dzg + k.dzg_at(0, s.t, m, 0);
  for (int64_t at = 0; at < F; at += kLanes) {
    __m256 dh = one.load(above, at);
    if (dhm && k.masks) {
      for (int64_t q = 0; q < 4; ++q) {
        const __m256 back = one.load(dhm + k.dhm_at(q, m, 0), at);
        dh = _mm256_add_ps(dh, _mm256_mul_ps(back, one.load(k.masks + (q * s.M + m) * F, at)));
      }
    } else if (dhm) {
      dh = _mm256_add_ps(dh, one.load(dhm + m * F, at));
    }
    const CellGrads d = cell_grads<kRec>(one.load(gates, at), one.load(gates + F, at),
                                         one.load(gates + 2 * F, at), one.load(gates + 3 * F, at),
                                         one.load(cr, at), one.load(cp, at), one.load(dc, at), dh);
    for (int64_t q = 0; q < 4; ++q) one.store(dxz + q * F, at, d.dz[q]), one.store(dz + q * F, at, d.dz[q]);
    one.store(dc, at, d.dc_prev);
  }
}

// The lower halves of a and b as one vector, and their upper halves.
HISVID_AVX2 inline __m256 lower_halves(__m256 a, __m256 b) { return _mm256_permute2f128_ps(a, b, 0x20); }
HISVID_AVX2 inline __m256 upper_halves(__m256 a, __m256 b) { return _mm256_permute2f128_ps(a, b, 0x31); }
// 4 floats at a and 4 at b as one vector.
HISVID_AVX2 inline __m256 load_two(const float* a, const float* b) {
  return _mm256_set_m128(_mm_loadu_ps(b), _mm_loadu_ps(a));
}

// Pixels m and m+1 of backward step t with 4 filters, two pixels a vector (as gate_pair4).
template <Activation kRec>
HISVID_AVX2 inline void cell_grads_pair4(const ConvLstmStepBackward<float>& k, const StepAt& s, int64_t m,
                                         const float* dhm) {
  constexpr int64_t F = 4;
  const int64_t row_a = s.sample_row(m), row_b = s.sample_row(m + 1);
  const float* __restrict gates = k.gates + (s.slot * s.M + m) * 4 * F;  // (2,G*F), the pair's
  const __m256 if_a = _mm256_loadu_ps(gates), go_a = _mm256_loadu_ps(gates + 8);
  const __m256 if_b = _mm256_loadu_ps(gates + 16), go_b = _mm256_loadu_ps(gates + 24);
  const __m256 cp = s.t > 0 ? _mm256_loadu_ps(k.c + (s.prev * s.M + m) * F) : _mm256_setzero_ps();
  __m256 dh = k.dh_seq         ? load_two(k.dh_seq + row_a * F, k.dh_seq + row_b * F)
              : s.t == s.S - 1 ? _mm256_loadu_ps(k.dh_last + m * F)
                               : _mm256_setzero_ps();
  if (dhm && k.masks) {
    for (int64_t q = 0; q < 4; ++q) {
      const __m256 back = load_two(dhm + k.dhm_at(q, m, 0), dhm + k.dhm_at(q, m + 1, 0));
      dh = _mm256_add_ps(dh, _mm256_mul_ps(back, _mm256_loadu_ps(k.masks + (q * s.M + m) * F)));
    }
  } else if (dhm) {
    dh = _mm256_add_ps(dh, _mm256_loadu_ps(dhm + m * F));
  }
  const CellGrads d = cell_grads<kRec>(
      lower_halves(if_a, if_b), upper_halves(if_a, if_b), lower_halves(go_a, go_b), upper_halves(go_a, go_b),
      _mm256_loadu_ps(k.c + (s.slot * s.M + m) * F), cp, _mm256_loadu_ps(k.dc + m * F), dh);
  // Back to each pixel's [dz_i dz_f] [dz_g dz_o].
  const __m256 pixel_a[2] = {lower_halves(d.dz[0], d.dz[1]), lower_halves(d.dz[2], d.dz[3])};
  const __m256 pixel_b[2] = {upper_halves(d.dz[0], d.dz[1]), upper_halves(d.dz[2], d.dz[3])};
  float* __restrict dz = k.dzg + k.dzg_at(0, s.t, m, 0);
  for (int half = 0; half < 2; ++half) {
    _mm256_storeu_ps(k.dxz + row_a * 4 * F + 8 * half, pixel_a[half]);
    _mm256_storeu_ps(k.dxz + row_b * 4 * F + 8 * half, pixel_b[half]);
    _mm256_storeu_ps(dz + 8 * half, pixel_a[half]);
    _mm256_storeu_ps(dz + 16 + 8 * half, pixel_b[half]);
  }
  _mm256_storeu_ps(k.dc + m * F, d.dc_prev);
}

}  // namespace lanes
}  // namespace

// Backward step t's rows as convlstm_step_backward_rows (act = tanh), in AVX2: pixel by pixel,
// or with 4 filters two pixels at a time.
template <int kF, Activation kRec>
HISVID_AVX2 void convlstm_step_backward_rows_avx2(const ConvLstmStepBackward<float>& k, const float* dhm,
                                                  Fixed<kRec>) {
  const lanes::StepAt s(k, kF > 0 ? kF : k.F);
  const lanes::Run one(s.F);
#pragma omp parallel if (s.M * s.F > kParallelMin)
  {
    const SpareRows<float> spare(s.F);
    if constexpr (kF == 4) {
#pragma omp for
      for (int64_t pair = 0; pair < s.M / 2; ++pair) lanes::cell_grads_pair4<kRec>(k, s, 2 * pair, dhm);
#pragma omp single
      if (s.M % 2 == 1) lanes::cell_grads_pixel<kRec>(k, s, one, s.M - 1, dhm, spare.zeros.data());
    } else {
#pragma omp for
      for (int64_t m = 0; m < s.M; ++m) lanes::cell_grads_pixel<kRec>(k, s, one, m, dhm, spare.zeros.data());
    }
  }
}

#undef HISVID_AVX2

namespace {

// dhm (M,G*F or F) = the input gradient of step t+1's recurrent convolution in a per-thread
// buffer, or null at T-1.
const float* recurrent_grads(const ConvLstmStepBackward<float>& k) {
  if (k.t == k.steps - 1) return nullptr;
  Conv2dBackwardData<float> conv;
  conv.g = k.recurrent_conv();
  float* dhm = thread_buffer<float, RecurrentConvBuffer>(int64_t(conv.g.N) * conv.g.H * conv.g.W * conv.g.C);
  conv.dinp = dhm;
  conv.dout = k.dzg + k.dzg_at(0, k.t + 1, 0, 0), conv.weight = k.R;
  conv2d_backward_data(conv);
  return dhm;
}

// rz (M,G*F) = conv(hm_{t-1}, R) in a per-thread buffer, or null at t = 0.
const float* recurrent_sums(const ConvLstmStepForward<float>& k, const char* row) {
  require_history(k, row);
  if (k.t == 0) return nullptr;
  Conv2dForward<float> conv;
  conv.g = k.recurrent_conv();
  float* rz = thread_buffer<float, RecurrentConvBuffer>(int64_t(conv.g.N) * conv.g.HO * conv.g.WO * conv.g.F);
  conv.out = rz;
  conv.inp = k.hm + k.hm_at(0, (k.t + k.history - 1) % k.history, 0, 0), conv.weight = k.R;
  conv2d_forward(conv);
  return rz;
}

// The rows of step k, forward or backward, after its recurrent convolution (`sums`): the AVX2
// form where asked for and the activations allow it, else the portable one.
template <bool kAvx2, typename Step>
void step_rows(const Step& k, const float* sums) {
  constexpr bool forward = std::is_same_v<Step, ConvLstmStepForward<float>>;
  dispatch<float>(k.F, k.act, k.rec_act, [&](auto filters, auto a, auto r) {
    constexpr int kF = decltype(filters)::value;
    if constexpr (kAvx2 && avx2_gates<decltype(a), decltype(r)>()) {
      if constexpr (forward) return convlstm_step_rows_avx2<kF>(k, sums, r);
      if constexpr (!forward) return convlstm_step_backward_rows_avx2<kF>(k, sums, r);
    } else {
      if constexpr (forward) return convlstm_step_rows<kF>(k, sums, a, r);
      if constexpr (!forward) return convlstm_step_backward_rows<kF>(k, sums, a, r);
    }
  });
}

}  // namespace

void convlstm_step_forward_portable(const ConvLstmStepForward<float>& k) {
  step_rows<false>(k, recurrent_sums(k, "cpu.portable::convlstm_step_forward"));
}
void convlstm_step_forward_avx2(const ConvLstmStepForward<float>& k) {
  step_rows<true>(k, recurrent_sums(k, "cpu.avx2::convlstm_step_forward"));
}
void convlstm_step_forward(const ConvLstmStepForward<float>& k) {
  static const bool has_avx2 = avx2::available();
  return has_avx2 ? convlstm_step_forward_avx2(k) : convlstm_step_forward_portable(k);
}

void convlstm_step_backward_portable(const ConvLstmStepBackward<float>& k) {
  step_rows<false>(k, recurrent_grads(k));
}
void convlstm_step_backward_avx2(const ConvLstmStepBackward<float>& k) {
  step_rows<true>(k, recurrent_grads(k));
}
void convlstm_step_backward(const ConvLstmStepBackward<float>& k) {
  static const bool has_avx2 = avx2::available();
  return has_avx2 ? convlstm_step_backward_avx2(k) : convlstm_step_backward_portable(k);
}

// The sequence rows run one sample per thread, over threads once the recurrent products of all
// samples pass kParallelMin multiply-adds.
void lstm_sequence_forward(const LstmSequenceForward<float>& k) {
  const int64_t N = k.N, S = k.steps, U = k.U, GU = 4 * U;
  const Activation act = k.act, rec = k.rec_act;
#pragma omp parallel for if (N * S * U * GU > kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t t = 0; t < S; ++t) {
      const int64_t row = n * S + t;
      // The pre-activations go where the activated gates will be, and are activated in place.
      float* __restrict z = k.gates + row * GU;  // (G*U)
      float* h = k.h_prev + row * U;             // (U) written by step t-1
      std::copy(k.xz + row * GU, k.xz + (row + 1) * GU, z);
      if (t == 0) {
        std::fill(h, h + U, 0.0f);
      } else {
        for (int64_t u = 0; u < U;
             ++u) {  // row u of R at a time: the inner loop runs along the gate's columns
          for (int64_t gate = 0; gate < 4; ++gate) {
            const float hm = h[u] * (k.masks ? k.masks[(gate * N + n) * U + u] : 1.0f);
            const float* __restrict r = k.R + u * GU + gate * U;
            float* __restrict zg = z + gate * U;
            for (int64_t v = 0; v < U; ++v) zg[v] += hm * r[v];
          }
        }
      }
      const float* c_prev = t > 0 ? k.c + (row - 1) * U : nullptr;
      for (int64_t u = 0; u < U; ++u) {
        const LstmUnit<float> s = lstm_unit_forward(z[u], z[U + u], z[2 * U + u], z[3 * U + u],
                                                    c_prev ? c_prev[u] : 0.0f, act, rec);
        z[u] = s.i, z[U + u] = s.f, z[2 * U + u] = s.g, z[3 * U + u] = s.o;
        k.c[row * U + u] = s.c;
        if (t + 1 < S) k.h_prev[(row + 1) * U + u] = s.h;
        if (k.h_seq) k.h_seq[row * U + u] = s.h;
        if (k.h_last && t == S - 1) k.h_last[n * U + u] = s.h;
      }
    }
  }
}

void lstm_sequence_backward(const LstmSequenceBackward<float>& k) {
  const int64_t N = k.N, S = k.steps, U = k.U, GU = 4 * U;
  const Activation act = k.act, rec = k.rec_act;
#pragma omp parallel for if (N * S * U * GU > kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    thread_local std::vector<float> state;
    state.assign(static_cast<size_t>(2 * U), 0.0f);
    float* __restrict dh_next = state.data();  // (U) the gradient reaching h_t through z_{t+1}
    float* __restrict dc = dh_next + U;        // (U) the gradient reaching c_t from c_{t+1}
    for (int64_t t = S - 1; t >= 0; --t) {
      const int64_t row = n * S + t;
      const float* __restrict gates = k.gates + row * GU;
      float* __restrict dz = k.dz + row * GU;
      for (int64_t u = 0; u < U; ++u) {
        const float from_above =
            k.dh_seq ? k.dh_seq[row * U + u] : (t == S - 1 ? k.dh_last[n * U + u] : 0.0f);
        const LstmUnit<float> s{gates[u],         gates[U + u],     gates[2 * U + u],
                                gates[3 * U + u], k.c[row * U + u], 0.0f};
        const float c_prev = t > 0 ? k.c[(row - 1) * U + u] : 0.0f;
        const LstmUnitGrad<float> d = lstm_unit_backward(from_above + dh_next[u], dc[u], s, c_prev, act, rec);
        dz[u] = d.dz_i, dz[U + u] = d.dz_f, dz[2 * U + u] = d.dz_c, dz[3 * U + u] = d.dz_o;
        dc[u] = d.dc_prev;
      }
      if (t == 0) break;
      for (int64_t u = 0; u < U; ++u) {  // dh_next[u] = sum over the gates of m_g[u] (dz_g . R_g[u, .])
        const float* __restrict r = k.R + u * GU;
        float acc = 0.0f;
        for (int64_t gate = 0; gate < 4; ++gate) {
          float dot = 0.0f;
          for (int64_t v = 0; v < U; ++v) dot += dz[gate * U + v] * r[gate * U + v];
          acc += k.masks ? dot * k.masks[(gate * N + n) * U + u] : dot;
        }
        dh_next[u] = acc;
      }
    }
  }
}

}  // namespace hisvid::cpu

namespace hisvid::naive {

template <typename T>
void lstm_cell_forward(const LstmCellForward<T>& k) {
  const int64_t M = k.M, U = k.U;
#pragma omp parallel for if (M * U > (int64_t(1) << 15))
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t u = 0; u < U; ++u) {
      const T* z = k.z + m * 4 * U;    // (G*U) [z_i | z_f | z_c | z_o]
      T* gates = k.gates + m * 4 * U;  // (G*U) [i | f | g | o]
      const T i = activate(z[u], k.rec_act);
      const T f = activate(z[U + u], k.rec_act);
      const T g = activate(z[2 * U + u], k.act);
      const T o = activate(z[3 * U + u], k.rec_act);
      const T c_prev = k.c_prev ? k.c_prev[m * U + u] : T(0);
      const T c = f * c_prev + i * g;
      gates[u] = i, gates[U + u] = f, gates[2 * U + u] = g, gates[3 * U + u] = o;
      k.c[m * U + u] = c;
      k.h[m * U + u] = o * activate(c, k.act);
    }
  }
}

// With a = act(c): d_o = dh * a, dc_total = dc + dh * o * act'(c), d_i = dc_total * g,
// d_f = dc_total * c_prev, d_g = dc_total * i, dc_prev = dc_total * f; each pre-activation
// gradient is its gate's gradient times the activation's derivative at the gate.
template <typename T>
void lstm_cell_backward(const LstmCellBackward<T>& k) {
  const int64_t M = k.M, U = k.U;
#pragma omp parallel for if (M * U > (int64_t(1) << 15))
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t u = 0; u < U; ++u) {
      const T* gates = k.gates + m * 4 * U;  // (G*U) [i | f | g | o]
      T* dz = k.dz + m * 4 * U;              // (G*U)
      const T i = gates[u], f = gates[U + u], g = gates[2 * U + u], o = gates[3 * U + u];
      const T dh = k.dh[m * U + u];
      const T dc = k.dc ? k.dc[m * U + u] : T(0);
      const T c_prev = k.c_prev ? k.c_prev[m * U + u] : T(0);
      const T a = activate(k.c[m * U + u], k.act);
      const T dc_total = dc + dh * o * activation_grad_from_output(a, k.act);
      dz[u] = dc_total * g * activation_grad_from_output(i, k.rec_act);
      dz[U + u] = dc_total * c_prev * activation_grad_from_output(f, k.rec_act);
      dz[2 * U + u] = dc_total * i * activation_grad_from_output(g, k.act);
      dz[3 * U + u] = dh * a * activation_grad_from_output(o, k.rec_act);
      if (k.dc_prev) k.dc_prev[m * U + u] = dc_total * f;
    }
  }
}

// Sample by sample, step by step: z_t = xz_t + per gate (h_{t-1} m_g) R_g (nothing at t = 0),
// then the gate step of every unit, as lstm_cell_forward writes it.
template <typename T>
void lstm_sequence_forward(const LstmSequenceForward<T>& k) {
  const int64_t N = k.N, S = k.steps, U = k.U, GU = 4 * U;
  for (int64_t n = 0; n < N; ++n) {
    std::vector<T> h(static_cast<size_t>(U), T(0)), c(static_cast<size_t>(U), T(0)),
        z(static_cast<size_t>(GU));
    for (int64_t t = 0; t < S; ++t) {
      const int64_t row = n * S + t;
      for (int64_t j = 0; j < GU; ++j) {
        T acc = k.xz[row * GU + j];
        if (t > 0) {
          const int64_t gate = j / U;
          for (int64_t u = 0; u < U; ++u) {
            const T m = k.masks ? k.masks[(gate * N + n) * U + u] : T(1);
            acc += (h[u] * m) * k.R[u * GU + j];
          }
        }
        z[j] = acc;
      }
      for (int64_t u = 0; u < U; ++u) {
        k.h_prev[row * U + u] = h[u];
        const T i = activate(z[u], k.rec_act);
        const T f = activate(z[U + u], k.rec_act);
        const T g = activate(z[2 * U + u], k.act);
        const T o = activate(z[3 * U + u], k.rec_act);
        c[u] = f * c[u] + i * g;
        h[u] = o * activate(c[u], k.act);
        T* gates = k.gates + row * GU;
        gates[u] = i, gates[U + u] = f, gates[2 * U + u] = g, gates[3 * U + u] = o;
        k.c[row * U + u] = c[u];
        if (k.h_seq) k.h_seq[row * U + u] = h[u];
        if (k.h_last && t == S - 1) k.h_last[n * U + u] = h[u];
      }
    }
  }
}

// Backpropagation through time, t = T-1 .. 0: the gradient reaching h_t is the one from above
// plus the one through z_{t+1}, dh_t = sum_j dz_{t+1}[j] m_g(j) R[., j]; the gradient reaching c_t
// comes from c_{t+1} (dc_prev of the step after).
template <typename T>
void lstm_sequence_backward(const LstmSequenceBackward<T>& k) {
  const int64_t N = k.N, S = k.steps, U = k.U, GU = 4 * U;
  for (int64_t n = 0; n < N; ++n) {
    std::vector<T> dh_next(static_cast<size_t>(U), T(0)), dc(static_cast<size_t>(U), T(0));
    for (int64_t t = S - 1; t >= 0; --t) {
      const int64_t row = n * S + t;
      const T* gates = k.gates + row * GU;  // (G*U) [i | f | g | o]
      T* dz = k.dz + row * GU;              // (G*U)
      for (int64_t u = 0; u < U; ++u) {
        const T from_above = k.dh_seq ? k.dh_seq[row * U + u] : (t == S - 1 ? k.dh_last[n * U + u] : T(0));
        const T dh = from_above + dh_next[u];
        const T i = gates[u], f = gates[U + u], g = gates[2 * U + u], o = gates[3 * U + u];
        const T c_prev = t > 0 ? k.c[(row - 1) * U + u] : T(0);
        const T a = activate(k.c[row * U + u], k.act);
        const T dc_total = dc[u] + dh * o * activation_grad_from_output(a, k.act);
        dz[u] = dc_total * g * activation_grad_from_output(i, k.rec_act);
        dz[U + u] = dc_total * c_prev * activation_grad_from_output(f, k.rec_act);
        dz[2 * U + u] = dc_total * i * activation_grad_from_output(g, k.act);
        dz[3 * U + u] = dh * a * activation_grad_from_output(o, k.rec_act);
        dc[u] = dc_total * f;
      }
      for (int64_t u = 0; u < U; ++u) {
        T acc = T(0);
        for (int64_t j = 0; j < GU; ++j) {
          const T m = k.masks ? k.masks[(j / U * N + n) * U + u] : T(1);
          acc += dz[j] * m * k.R[u * GU + j];
        }
        dh_next[u] = acc;
      }
    }
  }
}

template <typename T>
void convlstm_step_forward(const ConvLstmStepForward<T>& k) {
  require_history(k, "naive::convlstm_step_forward");
  const int64_t P = k.P(), M = k.N * P, F = k.F, S = k.steps, t = k.t, slot = t % k.history;
  const int64_t prev = (t + k.history - 1) % k.history;  // c_{t-1}'s and hm_{t-1}'s slot
  const Conv2dGeometry conv = k.recurrent_conv();
  const T* hm_prev = k.hm + k.hm_at(0, prev, 0, 0);
#pragma omp parallel for if (M * F > (int64_t(1) << 15))
  for (int64_t m = 0; m < M; ++m) {
    const int64_t n = m / P, p = m % P, sample_row = (n * S + t) * P + p;  // (n, t, p)
    const int y = static_cast<int>(p / k.W), x = static_cast<int>(p % k.W);
    const T* xz = k.xz + sample_row * 4 * F;  // (G*F)
    T* gates = k.gates + (slot * M + m) * 4 * F;
    for (int64_t f = 0; f < F; ++f) {
      T z[4];
      for (int64_t g = 0; g < 4; ++g) {
        const int channel = static_cast<int>(g * F + f);  // recurrent term: none at t = 0
        z[g] =
            xz[g * F + f] +
            (t > 0 ? conv2d_at(hm_prev, k.R, static_cast<const T*>(nullptr), conv, n, y, x, channel) : T(0));
      }
      const T i = activate(z[0], k.rec_act);
      const T fg = activate(z[1], k.rec_act);
      const T g = activate(z[2], k.act);
      const T o = activate(z[3], k.rec_act);
      const T c_prev = t > 0 ? k.c[(prev * M + m) * F + f] : T(0);
      const T c = fg * c_prev + i * g;
      const T h = o * activate(c, k.act);
      gates[f] = i, gates[F + f] = fg, gates[2 * F + f] = g, gates[3 * F + f] = o;
      k.c[(slot * M + m) * F + f] = c;
      if (k.masks) {
        for (int64_t q = 0; q < 4; ++q) k.hm[k.hm_at(q, slot, m, f)] = h * k.masks[(q * M + m) * F + f];
      } else {
        k.hm[k.hm_at(0, slot, m, f)] = h;
      }
      if (k.h_seq) k.h_seq[sample_row * F + f] = h;
      if (k.h_last && t == S - 1) k.h_last[m * F + f] = h;
    }
  }
}

template <typename T>
void convlstm_step_backward(const ConvLstmStepBackward<T>& k) {
  const int64_t P = k.P(), M = k.N * P, F = k.F, S = k.steps, t = k.t;
  const Conv2dGeometry conv = k.recurrent_conv();
  const T* dz_next = t < S - 1 ? k.dzg + k.dzg_at(0, t + 1, 0, 0) : nullptr;  // dz_{t+1} (M,G*F)
#pragma omp parallel for if (M * F > (int64_t(1) << 15))
  for (int64_t m = 0; m < M; ++m) {
    const int64_t n = m / P, p = m % P, sample_row = (n * S + t) * P + p;
    const int y = static_cast<int>(p / k.W), x = static_cast<int>(p % k.W);
    const T* gates = k.gates + (t * M + m) * 4 * F;
    T* dxz = k.dxz + sample_row * 4 * F;
    for (int64_t f = 0; f < F; ++f) {
      T dh = k.dh_seq ? k.dh_seq[sample_row * F + f] : (t == S - 1 ? k.dh_last[m * F + f] : T(0));
      // What step t+1's recurrent convolution sends back to h_t: through each gate's masked copy.
      for (int64_t q = 0; q < (k.masks ? 4 : 1) && dz_next; ++q) {
        const T back = conv2d_input_grad_at(dz_next, k.R, conv, n, y, x, static_cast<int>(q * F + f));
        dh += k.masks ? back * k.masks[(q * M + m) * F + f] : back;
      }
      const T i = gates[f], fg = gates[F + f], g = gates[2 * F + f], o = gates[3 * F + f];
      const T c_prev = t > 0 ? k.c[((t - 1) * M + m) * F + f] : T(0);
      const T a = activate(k.c[(t * M + m) * F + f], k.act);
      const T dc_total = k.dc[m * F + f] + dh * o * activation_grad_from_output(a, k.act);
      const T dz[4] = {dc_total * g * activation_grad_from_output(i, k.rec_act),
                       dc_total * c_prev * activation_grad_from_output(fg, k.rec_act),
                       dc_total * i * activation_grad_from_output(g, k.act),
                       dh * a * activation_grad_from_output(o, k.rec_act)};
      for (int64_t q = 0; q < 4; ++q) {
        dxz[q * F + f] = dz[q];
        k.dzg[k.dzg_at(q, t, m, f)] = dz[q];
      }
      k.dc[m * F + f] = dc_total * fg;
    }
  }
}

template void lstm_cell_forward<float>(const LstmCellForward<float>&);
template void lstm_cell_forward<double>(const LstmCellForward<double>&);
template void lstm_cell_backward<float>(const LstmCellBackward<float>&);
template void lstm_cell_backward<double>(const LstmCellBackward<double>&);
template void lstm_sequence_forward<float>(const LstmSequenceForward<float>&);
template void lstm_sequence_forward<double>(const LstmSequenceForward<double>&);
template void lstm_sequence_backward<float>(const LstmSequenceBackward<float>&);
template void lstm_sequence_backward<double>(const LstmSequenceBackward<double>&);
template void convlstm_step_forward<float>(const ConvLstmStepForward<float>&);
template void convlstm_step_forward<double>(const ConvLstmStepForward<double>&);
template void convlstm_step_backward<float>(const ConvLstmStepBackward<float>&);
template void convlstm_step_backward<double>(const ConvLstmStepBackward<double>&);

}  // namespace hisvid::naive
