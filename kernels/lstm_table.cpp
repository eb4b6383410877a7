// kernels/lstm_table.cpp — the rows of the LSTM gate step and their harness cases.
#include <cmath>
#include <string>
#include <vector>

#include "kernels/conv2d_avx2.h"
#include "kernels/harness.h"
#include "kernels/lstm.h"
#include "kernels/philox.h"

namespace hisvid {
namespace {

using harness::Cases;

const bool rows = register_rows(
    host_row<naive::lstm_cell_forward<float>>(Backend::Naive, "naive"),
    host_row<naive::lstm_cell_forward<double>>(Backend::Naive, "naive"),
    host_row<naive::lstm_cell_backward<float>>(Backend::Naive, "naive"),
    host_row<naive::lstm_cell_backward<double>>(Backend::Naive, "naive"),
    host_row<naive::lstm_sequence_forward<float>>(Backend::Naive, "naive"),
    host_row<naive::lstm_sequence_forward<double>>(Backend::Naive, "naive"),
    host_row<naive::lstm_sequence_backward<float>>(Backend::Naive, "naive"),
    host_row<naive::lstm_sequence_backward<double>>(Backend::Naive, "naive"),
    host_row<naive::convlstm_step_forward<float>>(Backend::Naive, "naive"),
    host_row<naive::convlstm_step_forward<double>>(Backend::Naive, "naive"),
    host_row<naive::convlstm_step_backward<float>>(Backend::Naive, "naive"),
    host_row<naive::convlstm_step_backward<double>>(Backend::Naive, "naive"),
    host_row<cpu::lstm_cell_forward>(Backend::Cpu, "cpu"),
    host_row<cpu::lstm_cell_backward>(Backend::Cpu, "cpu"),
    host_row<cpu::lstm_sequence_forward>(Backend::Cpu, "cpu"),
    host_row<cpu::lstm_sequence_backward>(Backend::Cpu, "cpu"),
    host_row<cpu::convlstm_step_forward>(Backend::Cpu, "cpu"),
    host_row<cpu::convlstm_step_backward>(Backend::Cpu, "cpu"),
    host_row<cpu::convlstm_step_forward_portable>(Backend::Cpu, "cpu.portable", Role::Alternative),
    host_row<cpu::convlstm_step_backward_portable>(Backend::Cpu, "cpu.portable", Role::Alternative));
const bool avx2_rows =
    !cpu::avx2::available() ||
    register_rows(host_row<cpu::convlstm_step_forward_avx2>(Backend::Cpu, "cpu.avx2", Role::Alternative),
                  host_row<cpu::convlstm_step_backward_avx2>(Backend::Cpu, "cpu.avx2", Role::Alternative));
#ifdef HISVID_WITH_CUDA
const bool cuda_rows = register_rows(
    cuda_row<cuda::lstm_cell_forward>("cuda"), cuda_row<cuda::lstm_cell_backward>("cuda"),
    cuda_row<cuda::lstm_sequence_forward>("cuda"), cuda_row<cuda::lstm_sequence_backward>("cuda"),
    cuda_row<cuda::convlstm_step_forward>("cuda"), cuda_row<cuda::convlstm_step_backward>("cuda"),
    cuda_row<cuda::convlstm_step_forward_v1>("cuda.v1", Role::Alternative),
    cuda_row<cuda::convlstm_step_backward_v1>("cuda.v1", Role::Alternative),
    cuda_row<cuda::convlstm_step_forward_lanes_v2>("cuda.lanes_v2", Role::Alternative),
    cuda_row<cuda::convlstm_step_forward_tiles>("cuda.tiles", Role::Alternative)
        .where(cuda::convlstm_step_tiles_apply),
    cuda_row<cuda::convlstm_step_backward_tiles>("cuda.tiles", Role::Alternative)
        .where(cuda::convlstm_step_tiles_apply),
    cuda_row<cuda::convlstm_step_backward_lanes_v2>("cuda.lanes_v2", Role::Alternative),
    cuda_row<cuda::convlstm_step_forward_tiles_v2>("cuda.tiles_v2", Role::Alternative)
        .where(cuda::convlstm_step_tiles_v2_apply),
    cuda_row<cuda::convlstm_step_backward_tiles_v2>("cuda.tiles_v2", Role::Alternative)
        .where(cuda::convlstm_step_tiles_v2_apply),
    cuda_row<cuda::convlstm_step_forward_tiles_v2_rows4>("cuda.tiles_v2_rows4", Role::Alternative)
        .where(cuda::convlstm_step_tiles_v2_apply),
    cuda_row<cuda::convlstm_step_backward_tiles_v2_rows4>("cuda.tiles_v2_rows4", Role::Alternative)
        .where(cuda::convlstm_step_tiles_v2_apply));
#endif

// first_step: no c_prev (and no dc_prev); last_step: no dc from a next step.
struct Shape {
  int64_t M, U;
  Activation act, rec_act;
  bool first_step, last_step;
};

// clang-format off
const Shape kShapes[] = {
    {1, 1, Activation::Tanh, Activation::Sigmoid, false, false},
    {3, 5, Activation::Tanh, Activation::Sigmoid, true, false},
    {7, 33, Activation::Tanh, Activation::Sigmoid, false, true},
    {64, 128, Activation::Tanh, Activation::Sigmoid, false, false},
    {4, 32, Activation::Tanh, Activation::Sigmoid, false, false},   // a specialised unit count
    {5, 9, Activation::Tanh, Activation::HardSigmoid, false, false},
    {5, 9, Activation::Tanh, Activation::HardSigmoidKeras3, false, false},
    {2 * 6 * 7, 16, Activation::Tanh, Activation::HardSigmoid, true, true},  // ConvLSTM rows N*H*W
    {20 * 8 * 8, 4, Activation::Tanh, Activation::HardSigmoid, false, false},  // ConvLSTM2D(4)
    {4, 3, Activation::Relu, Activation::Sigmoid, false, false},
    {4, 3, Activation::Linear, Activation::HardSigmoid, false, false},
};
// clang-format on

std::string shape_name(const Shape& s) {
  return "M" + std::to_string(s.M) + "_U" + std::to_string(s.U) + "_" + activation_label(s.act) + "_" +
         activation_label(s.rec_act) + (s.first_step ? "_first" : "") + (s.last_step ? "_last" : "");
}

// Pre-activations in [-3, 3): every part of the gates' activations, the saturated ends too.
void spread_z(const double* z, int64_t n) {
  for (int64_t i = 0; i < n; ++i) harness::writable(z)[i] *= 3.0;
}

const bool cases = [] {
  Cases<LstmCellForward> forward;
  Cases<LstmCellBackward> backward;
  for (const Shape& s : kShapes) {
    forward
        .add(shape_name(s),
             [s](auto& a) {
               a.M = s.M, a.U = s.U, a.act = s.act, a.rec_act = s.rec_act;
               if (s.first_step) a.c_prev = nullptr;
             })
        .tol(harness::kFused)
        .with_flops(20.0 * s.M * s.U)
        .prepare_with([s](LstmCellForward<double>& a) { spread_z(a.z, s.M * 4 * s.U); });
    // Backward from a forward pass's gates and c, so that they are consistent.
    backward
        .add(shape_name(s),
             [s](auto& a) {
               a.M = s.M, a.U = s.U, a.act = s.act, a.rec_act = s.rec_act;
               if (s.first_step) a.c_prev = nullptr, a.dc_prev = nullptr;
               if (s.last_step) a.dc = nullptr;
             })
        .tol(harness::kFused)
        .with_flops(30.0 * s.M * s.U)
        .prepare_with([s](LstmCellBackward<double>& a) {
          std::vector<double> z(static_cast<size_t>(s.M * 4 * s.U)), h(static_cast<size_t>(s.M * s.U));
          for (size_t i = 0; i < z.size(); ++i) z[i] = 6.0 * philox_uniform(0x157A, 1, i) - 3.0;
          LstmCellForward<double> f;
          f.h = h.data(), f.c = harness::writable(a.c), f.gates = harness::writable(a.gates), f.z = z.data();
          f.c_prev = a.c_prev, f.M = s.M, f.U = s.U, f.act = s.act, f.rec_act = s.rec_act;
          naive::lstm_cell_forward(f);
        });
  }
  return harness::add_cases(forward) && harness::add_cases(backward);
}();

// --- the whole sequence ---------------------------------------------------------------------

struct SequenceShape {
  int64_t N, steps, U;
  Activation act, rec_act;
  bool masks;      // recurrent dropout masks
  bool sequences;  // h of every step (dh_seq), or the last h alone (dh_last)
};

// clang-format off
const SequenceShape kSequenceShapes[] = {
    {1, 1, 1, Activation::Tanh, Activation::Sigmoid, false, true},        // one step of one unit
    {3, 4, 5, Activation::Tanh, Activation::Sigmoid, false, false},
    {4, 20, 32, Activation::Tanh, Activation::Sigmoid, false, false},     // the LRCN's LSTM(32), batch 4
    {32, 20, 32, Activation::Tanh, Activation::Sigmoid, false, false},    // ... and its evaluation batch
    {2, 7, 33, Activation::Tanh, Activation::HardSigmoid, true, true},    // odd units, dropout masks
    {3, 5, 64, Activation::Tanh, Activation::Sigmoid, true, false},       // R (64 KiB) outside shared memory
    {2, 3, 54, Activation::Tanh, Activation::Sigmoid, false, false},      // R shared forward, not backward
    {2, 3, 300, Activation::Tanh, Activation::Sigmoid, false, true},      // more columns (1200) than threads
    {2, 2, 1024, Activation::Tanh, Activation::Sigmoid, true, false},     // the most units, 1024 threads
    {2, 4, 31, Activation::Tanh, Activation::Sigmoid, false, true},       // odd units, R in shared memory
    {5, 6, 9, Activation::Tanh, Activation::HardSigmoidKeras3, true, false},
    {3, 4, 3, Activation::Relu, Activation::Sigmoid, false, true},
};
// clang-format on

std::string sequence_name(const SequenceShape& s) {
  return "N" + std::to_string(s.N) + "_T" + std::to_string(s.steps) + "_U" + std::to_string(s.U) + "_" +
         activation_label(s.act) + "_" + activation_label(s.rec_act) + (s.masks ? "_masks" : "") +
         (s.sequences ? "_sequences" : "_last");
}

// Every step adds a gate step's rounding and a sum of up to G*U terms to the state, and the
// later steps carry it on. With R scaled to a spectral radius below 1 (scale_recurrent) the
// carried errors do not grow, so the error grows about linearly with T.
double sequence_tolerance(const SequenceShape& s) {
  return double(s.steps) * (harness::kFused + harness::sum_tolerance(4 * s.U));
}

// R uniform in [-1, 1) / sqrt(U), a trained LSTM's scale (Keras initialises R orthogonal), and
// masks of recurrent dropout 0.25: 0 or 1/0.75.
void scale_recurrent(const double* R, const double* masks, const SequenceShape& s) {
  for (int64_t i = 0; i < s.U * 4 * s.U; ++i) harness::writable(R)[i] /= std::sqrt(double(s.U));
  if (masks == nullptr) return;
  for (int64_t i = 0; i < 4 * s.N * s.U; ++i) {
    harness::writable(masks)[i] = philox_uniform(0x5EC, 2, uint64_t(i)) < 0.25 ? 0.0 : 1.0 / 0.75;
  }
}

const bool sequence_cases = [] {
  Cases<LstmSequenceForward> forward;
  Cases<LstmSequenceBackward> backward;
  for (const SequenceShape& s : kSequenceShapes) {
    const double multiply_adds = double(s.N) * s.steps * s.U * 4 * s.U;
    forward
        .add(sequence_name(s),
             [s](auto& a) {
               a.N = s.N, a.steps = s.steps, a.U = s.U, a.act = s.act, a.rec_act = s.rec_act;
               if (!s.masks) a.masks = nullptr;
               if (s.sequences) a.h_last = nullptr;
               if (!s.sequences) a.h_seq = nullptr;
             })
        .tol(sequence_tolerance(s))
        .with_flops(2.0 * multiply_adds + 20.0 * s.N * s.steps * s.U)
        .prepare_with([s](LstmSequenceForward<double>& a) {
          scale_recurrent(a.R, a.masks, s);
          spread_z(a.xz, s.N * s.steps * 4 * s.U);
        });
    // Backward from a forward pass's gates and c, so that they are consistent.
    backward
        .add(sequence_name(s),
             [s](auto& a) {
               a.N = s.N, a.steps = s.steps, a.U = s.U, a.act = s.act, a.rec_act = s.rec_act;
               if (!s.masks) a.masks = nullptr;
               if (s.sequences) a.dh_last = nullptr;
               if (!s.sequences) a.dh_seq = nullptr;
             })
        .tol(sequence_tolerance(s))
        .with_flops(2.0 * multiply_adds + 30.0 * s.N * s.steps * s.U)
        .prepare_with([s](LstmSequenceBackward<double>& a) {
          scale_recurrent(a.R, a.masks, s);
          const size_t cells = static_cast<size_t>(s.N * s.steps * s.U);
          std::vector<double> xz(4 * cells), h_prev(cells);
          for (size_t i = 0; i < xz.size(); ++i) xz[i] = 6.0 * philox_uniform(0x5EC, 3, i) - 3.0;
          LstmSequenceForward<double> f;
          f.h_prev = h_prev.data(), f.c = harness::writable(a.c), f.gates = harness::writable(a.gates);
          f.xz = xz.data(), f.R = a.R, f.masks = a.masks;
          f.N = s.N, f.steps = s.steps, f.U = s.U, f.act = s.act, f.rec_act = s.rec_act;
          naive::lstm_sequence_forward(f);
        });
  }
  return harness::add_cases(forward) && harness::add_cases(backward);
}();

// --- one ConvLSTM2D step ---------------------------------------------------------------------

struct StepShape {
  int64_t N, steps, H, W, F, t;
  int64_t KH, KW;  // the recurrent kernel
  Activation rec_act;
  bool masks, sequences;
  int64_t history;  // forward: time slots of gates, c and hm (steps, or 2 without backward)
};

// clang-format off
const StepShape kStepShapes[] = {
    {2, 3, 1, 5, 4, 0, 3, 3, Activation::HardSigmoid, false, true, 3},        // the first step: no recurrent products
    {2, 3, 2, 3, 3, 1, 3, 3, Activation::HardSigmoid, true, false, 3},        // a middle step
    {1, 4, 7, 1, 16, 3, 3, 3, Activation::HardSigmoidKeras3, true, true, 4},  // the last step, one column
    {3, 2, 3, 3, 8, 1, 2, 3, Activation::Sigmoid, false, false, 2},           // the last step, h_{T-1} alone; even kernel
    {2, 5, 2, 2, 5, 3, 1, 1, Activation::HardSigmoid, false, true, 2},        // two slots: step 3 in slot 1; 1x1 kernel
    {2, 5, 2, 2, 5, 4, 3, 3, Activation::HardSigmoid, true, false, 2},        // ... step 4 in slot 0, c_3 in slot 1
    {2, 4, 4, 5, 3, 2, 2, 2, Activation::HardSigmoid, true, true, 4},         // masks with an even kernel
    {4, 3, 62, 62, 4, 1, 3, 3, Activation::HardSigmoid, true, true, 3},       // the ConvLSTM's first layer at batch 4
    {2, 3, 4, 3, 14, 1, 3, 3, Activation::HardSigmoid, false, true, 3},       // 14 filters: parts of 4 and 3 channels
    {4, 3, 4, 4, 16, 1, 3, 3, Activation::HardSigmoid, false, false, 3},      // the last layer at batch 4, no masks
    {2, 3, 9, 17, 5, 1, 2, 3, Activation::HardSigmoid, false, true, 3},       // 2x3 of the tiles rows' 8x8 tiles, no masks
    {2, 3, 9, 17, 6, 0, 3, 3, Activation::HardSigmoid, true, false, 3},       // the first step with masks, over tiles
    {2, 3, 9, 17, 16, 1, 5, 5, Activation::HardSigmoid, false, true, 3},      // no masks, all of R too large: gate by gate
    {2, 3, 13, 13, 14, 1, 3, 3, Activation::HardSigmoid, true, true, 3},      // the third layer: tiles_v2's 2x2 8x8 tiles, 2 rows a thread
    {3, 3, 5, 5, 16, 1, 3, 3, Activation::HardSigmoid, true, false, 2},       // the last layer with masks: tiles_v2's 61 KiB of shared memory
    {2, 3, 29, 19, 8, 1, 3, 3, Activation::HardSigmoid, true, true, 3},       // the second layer's filters: 8x16 tiles (4 rows a thread in cuda.tiles_v2_rows4)
    {2, 3, 17, 33, 3, 1, 3, 3, Activation::HardSigmoid, false, false, 3},     // no masks, 16x16 tiles cut at both edges
    // cpu.avx2's pairs of pixels (4 filters): an odd count, pairs across two samples; its runs'
    // last lanes (7 filters: 7 = 4 + 2 + 1 at the end of each run); sigmoid one value at a time.
    {3, 3, 1, 5, 4, 2, 3, 3, Activation::HardSigmoid, true, false, 3},
    {3, 2, 1, 3, 4, 1, 3, 3, Activation::HardSigmoidKeras3, false, true, 2},
    {2, 3, 3, 3, 4, 1, 3, 3, Activation::Sigmoid, true, true, 3},
    {2, 3, 3, 5, 7, 1, 3, 3, Activation::Sigmoid, false, true, 3},
    {1, 2, 91, 91, 4, 1, 3, 3, Activation::HardSigmoid, true, true, 2},  // an odd count over threads
};
// clang-format on

std::string step_name(const StepShape& s) {
  return "N" + std::to_string(s.N) + "_T" + std::to_string(s.steps) + "_H" + std::to_string(s.H) + "_W" +
         std::to_string(s.W) + "_F" + std::to_string(s.F) + "_K" + std::to_string(s.KH) + "x" +
         std::to_string(s.KW) + "_t" + std::to_string(s.t) + "_" + activation_label(s.rec_act) +
         (s.masks ? "_masks" : "") + (s.sequences ? "_sequences" : "_last");
}

// Masks of recurrent dropout 0.2: 0 or 1/0.8; R scaled to Keras's initial scale (uniform
// over +-1/sqrt(fan-in)), so that the gates are not all saturated.
void step_masks_and_kernel(const double* masks, const double* R, const StepShape& s) {
  const int64_t cells = s.N * s.H * s.W * s.F, fan_in = s.KH * s.KW * s.F;
  for (int64_t i = 0; i < s.KH * s.KW * s.F * 4 * s.F; ++i)
    harness::writable(R)[i] /= std::sqrt(double(fan_in));
  for (int64_t i = 0; i < 4 * cells && masks != nullptr; ++i)
    harness::writable(masks)[i] = philox_uniform(0x57E9, 1, uint64_t(i)) < 0.2 ? 0.0 : 1.25;
}

// The step's rounding plus the recurrent convolution's sum (of up to KH*KW*4F terms backward);
// on CUDA the sum's bound is conv_tolerance's (its reason: kernels/harness.h).
double step_tolerance(const StepShape& s) {
  return harness::kFused + harness::sum_tolerance(s.KH * s.KW * 4 * s.F);
}
double step_tolerance_cuda(const StepShape& s) {
  return harness::kFused + harness::conv_tolerance(s.KH * s.KW * 4 * s.F);
}

const bool step_cases = [] {
  Cases<ConvLstmStepForward> forward;
  Cases<ConvLstmStepBackward> backward;
  for (const StepShape& s : kStepShapes) {
    const int64_t cells = s.N * s.H * s.W * s.F;
    const double conv_flops = 2.0 * cells * 4 * s.KH * s.KW * s.F;  // per step, t > 0
    forward
        .add(step_name(s),
             [s](auto& a) {
               a.N = s.N, a.steps = s.steps, a.H = s.H, a.W = s.W, a.F = s.F, a.t = s.t,
               a.rec_act = s.rec_act;
               a.KH = s.KH, a.KW = s.KW, a.history = s.history;
               if (!s.masks) a.masks = nullptr;
               if (s.sequences) a.h_last = nullptr;
               if (!s.sequences) a.h_seq = nullptr;
             })
        .tol(step_tolerance(s))
        .tol_cuda(step_tolerance_cuda(s))
        .with_flops(24.0 * cells + (s.t > 0 ? conv_flops : 0.0))
        .prepare_with([s, cells](ConvLstmStepForward<double>& a) {
          spread_z(a.xz, s.steps * cells * 4);
          step_masks_and_kernel(a.masks, a.R, s);
        });
    // gates and c from forward steps, so that they are consistent.
    backward
        .add(step_name(s),
             [s](auto& a) {
               a.N = s.N, a.steps = s.steps, a.H = s.H, a.W = s.W, a.F = s.F, a.t = s.t,
               a.rec_act = s.rec_act;
               a.KH = s.KH, a.KW = s.KW;
               if (!s.masks) a.masks = nullptr;
               if (s.sequences) a.dh_last = nullptr;
               if (!s.sequences) a.dh_seq = nullptr;
             })
        .tol(step_tolerance(s))
        .tol_cuda(step_tolerance_cuda(s))
        .with_flops(34.0 * cells + (s.t < s.steps - 1 ? conv_flops : 0.0))
        .prepare_with([s, cells](ConvLstmStepBackward<double>& a) {
          step_masks_and_kernel(a.masks, a.R, s);
          std::vector<double> xz(static_cast<size_t>(s.steps * cells * 4)),
              hm(static_cast<size_t>(4 * s.steps * cells));
          for (size_t i = 0; i < xz.size(); ++i) xz[i] = 6.0 * philox_uniform(0x57E9, 2, i) - 3.0;
          ConvLstmStepForward<double> f;
          f.gates = harness::writable(a.gates), f.c = harness::writable(a.c), f.hm = hm.data();
          f.xz = xz.data(), f.R = a.R, f.masks = a.masks;
          f.N = s.N, f.steps = s.steps, f.H = s.H, f.W = s.W, f.F = s.F, f.KH = s.KH, f.KW = s.KW;
          f.history = s.steps, f.act = a.act, f.rec_act = s.rec_act;
          for (f.t = 0; f.t < s.steps; ++f.t) naive::convlstm_step_forward(f);
        });
  }
  return harness::add_cases(forward) && harness::add_cases(backward);
}();

}  // namespace
}  // namespace hisvid
