// tests/tiny_models.h — the seeds' two models in miniature, written with engine ops alone, for
// the whole-model checks: the float64 gradient check from the loss to every parameter
// (test_recurrent.cpp) and the CUDA-vs-CPU training step (test_cuda_models.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace hisvid::testing {

// A tiny model: its inputs (the clip batch first, then every parameter) and one-hot targets,
// all float64 on the CPU with requires_grad; callers convert for other dtypes and devices.
// The loss functions take the training step: its number picks the dropout masks (the same
// bits on every device), so a run of several steps draws fresh masks each step.
struct TinyModel {
  std::vector<Tensor> inputs;
  Tensor targets;
};

// LRCN: TimeDistributed conv/pool/dropout blocks, flatten, LSTM, dense, softmax
// cross-entropy. Inputs: x (2,3,8,8,3), conv1 w/b, conv2 w/b, lstm W/R/b, dense w/b.
TinyModel tiny_lrcn();
Tensor tiny_lrcn_loss(const std::vector<Tensor>& in, const Tensor& targets, uint64_t step = 0);

// ConvLSTM: two ConvLSTM2D layers (hard_sigmoid, recurrent dropout), MaxPooling3D (1,2,2)
// same, dropout, flatten, dense, softmax cross-entropy. Inputs: x (2,3,7,7,2),
// convlstm1 W/R/b, convlstm2 W/R/b, dense w/b.
TinyModel tiny_convlstm();
Tensor tiny_convlstm_loss(const std::vector<Tensor>& in, const Tensor& targets, uint64_t step = 0);

}  // namespace hisvid::testing
