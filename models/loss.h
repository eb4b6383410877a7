// models/loss.h — the loss Keras minimises for a Sequential model's batch, its accuracy, and
// the class probabilities of its outputs: what training, evaluation and explanation share.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/tensor.h"
#include "layers/layer.h"
#include "models/sequential.h"

namespace hisvid::models {

// The loss Keras minimises and reports for a batch.
struct LossTerms {
  Tensor loss;    // () the head's cross-entropy (mean over the batch) + every regularization penalty
  Tensor logits;  // (N, units) what the head's softmax / sigmoid maps
  Tensor probs;   // (N, units) the head's output, no gradient
};
// Forward x (N, input...) with ctx and the loss against targets (N, num_classes) one-hot rows:
// categorical cross-entropy for a softmax head; binary cross-entropy against column 1 for a
// one-unit sigmoid head. Weight regularizers and activity regularizers add their penalties.
LossTerms model_loss(Sequential& model, const Tensor& x, const Tensor& targets,
                     const layers::ForwardContext& ctx);
// Rows of `terms` whose prediction matches the targets (N, num_classes): argmax for a softmax
// head, p > 0.5 for a binary one (Keras's categorical / binary accuracy).
int64_t correct_count(const Sequential& model, const LossTerms& terms, const Tensor& targets);
// Adds the step of `terms` against targets (N, num_classes) to sums (ops::step_sums): its loss
// and its correct count (as correct_count), weighing `weight` samples, read by no host.
void add_step_metrics(const Sequential& model, const LossTerms& terms, const Tensor& targets,
                      const Tensor& sums, double weight);
// One-hot rows (N, K) of the classes, row-major (classes in [0, K)).
std::vector<float> one_hot_rows(const std::vector<int>& classes, int K);
// Probabilities (N, num_classes) of the model's outputs (N, units): the outputs themselves, or
// (1 - p, p) for a binary head.
Tensor class_probabilities(const Sequential& model, const Tensor& outputs);

}  // namespace hisvid::models
