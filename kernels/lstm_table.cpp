// kernels/lstm_table.cpp — the rows of the LSTM gate step and their harness cases.
#include <string>
#include <vector>

#include "kernels/harness.h"
#include "kernels/lstm.h"
#include "kernels/philox.h"

namespace hisvid {
namespace {

using harness::Cases;

const bool rows = register_rows(host_row<naive::lstm_cell_forward<float>>(Backend::Naive, "naive"),
                                host_row<naive::lstm_cell_forward<double>>(Backend::Naive, "naive"),
                                host_row<naive::lstm_cell_backward<float>>(Backend::Naive, "naive"),
                                host_row<naive::lstm_cell_backward<double>>(Backend::Naive, "naive"),
                                host_row<cpu::lstm_cell_forward>(Backend::Cpu, "cpu"),
                                host_row<cpu::lstm_cell_backward>(Backend::Cpu, "cpu"));
#ifdef HISVID_WITH_CUDA
const bool cuda_rows =
    register_rows(cuda_row<cuda::lstm_cell_forward>("cuda"), cuda_row<cuda::lstm_cell_backward>("cuda"));
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

}  // namespace
}  // namespace hisvid
