// The loss, the accuracy and the class probabilities of models/loss.h.
#include "models/loss.h"

#include "engine/error.h"
#include "engine/ops.h"

namespace hisvid::models {

LossTerms model_loss(Sequential& model, const Tensor& x, const Tensor& targets,
                     const layers::ForwardContext& ctx) {
  std::vector<Tensor> activity;
  layers::ForwardContext with_losses = ctx;
  with_losses.losses = &activity;
  LossTerms terms;
  terms.logits = model.forward(x, with_losses, Output::Logits);
  ops::CrossEntropy xe;
  if (model.head() == Head::Sigmoid) {
    if (!model.binary()) {
      fail("model '{}': a sigmoid head trains as a binary classifier of one unit, this one has {}",
           model.name(), terms.logits.dim(-1));
    }
    xe = ops::sigmoid_cross_entropy(terms.logits, ops::slice(targets, 1, 1, 1));
  } else {
    xe = ops::softmax_cross_entropy(terms.logits, targets);
  }
  terms.probs = xe.probs;
  terms.loss = xe.loss;
  for (const Tensor& penalty : model.weight_penalties()) terms.loss = ops::add(terms.loss, penalty);
  for (const Tensor& penalty : activity) terms.loss = ops::add(terms.loss, penalty);
  return terms;
}

namespace {

// What a head's accuracy compares: the head's probabilities, as Keras's metrics take y_pred,
// against the one-hot rows (argmax; logits nearly equal can give equal probabilities, whose
// argmax is the first), or a binary head's against the targets' column 1.
struct AccuracyInputs {
  Tensor scores, targets;
  bool binary;
};
AccuracyInputs accuracy_inputs(const Sequential& model, const LossTerms& terms, const Tensor& targets) {
  if (model.binary()) return {terms.probs, ops::slice(targets, 1, 1, 1), true};
  return {terms.probs, targets, false};
}

}  // namespace

void add_step_metrics(const Sequential& model, const LossTerms& terms, const Tensor& targets,
                      const Tensor& sums, double weight) {
  const AccuracyInputs in = accuracy_inputs(model, terms, targets);
  ops::add_step_metrics(sums, terms.loss.detach(), in.scores, in.targets, in.binary, weight);
}

int64_t correct_count(const Sequential& model, const LossTerms& terms, const Tensor& targets) {
  const AccuracyInputs in = accuracy_inputs(model, terms, targets);
  return in.binary ? ops::binary_accuracy_count(in.scores, in.targets)
                   : ops::accuracy_count(in.scores, in.targets);
}

std::vector<float> one_hot_rows(const std::vector<int>& classes, int K) {
  std::vector<float> rows(classes.size() * static_cast<size_t>(K), 0.0f);
  for (size_t i = 0; i < classes.size(); ++i)
    rows[i * static_cast<size_t>(K) + static_cast<size_t>(classes[i])] = 1.0f;
  return rows;
}

Tensor class_probabilities(const Sequential& model, const Tensor& outputs) {
  if (!model.binary()) return outputs;
  const Tensor ones = Tensor::full(outputs.shape(), 1.0, outputs.dtype(), outputs.device());
  return ops::concat({ops::sub(ones, outputs), outputs}, 1);
}

}  // namespace hisvid::models
