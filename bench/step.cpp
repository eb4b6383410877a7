#include "bench/step.h"

#include "engine/autograd.h"
#include "engine/ops.h"
#include "models/zoo.h"

namespace hisvid::bench {

StepRunner::StepRunner(const std::string& model, int classes, int batch, Device device, uint64_t seed)
    : model_(models::load_spec(model, classes)), rng_(seed), batch_(batch), device_(device) {
  model_.build(seed);
  model_.to(device);
  optimizer_ = make_optimizer("adam");
  weights_ = model_.trainable_weights();
  std::vector<int64_t> dims = model_.input_shape().vec();
  dims.insert(dims.begin(), batch);
  x_ = Generator(seed + 1).uniform(Shape(dims), 0.0, 1.0).to(device);
  std::vector<float> onehot(static_cast<size_t>(batch) * classes, 0.0f);
  for (int i = 0; i < batch; ++i) onehot[static_cast<size_t>(i) * classes + i % classes] = 1.0f;
  y_ = Tensor::from_vector(onehot, {batch, classes}, DType::Float32, device);
}

void StepRunner::train_step() {
  const Tensor logits = model_.forward(x_, {true, &rng_}, models::Output::Logits);
  backward(ops::softmax_cross_entropy(logits, y_).loss);
  optimizer_->step(weights_);
  zero_grad(weights_);
}

void StepRunner::eval_step() {
  NoGradGuard no_grad;
  model_.forward(x_, {});
}

void StepRunner::sync() const { synchronize(device_); }

}  // namespace hisvid::bench
