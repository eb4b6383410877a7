// tests/tiny_models.cpp — see tiny_models.h.
#include "tests/tiny_models.h"

#include "engine/ops.h"
#include "engine/random.h"
#include "engine/recurrent.h"
#include "tests/gradcheck.h"

namespace hisvid::testing {

TinyModel tiny_lrcn() {
  return {{random_input({2, 3, 8, 8, 3}, 21), random_input({3, 3, 3, 4}, 22, -0.5, 0.5),
           random_input({4}, 23, -0.1, 0.1), random_input({3, 3, 4, 3}, 24, -0.5, 0.5),
           random_input({3}, 25, -0.1, 0.1), random_input({12, 20}, 26, -0.5, 0.5),
           random_input({5, 20}, 27, -0.5, 0.5), random_input({20}, 28, -0.1, 0.1), random_input({5, 3}, 29),
           random_input({3}, 30)},
          Tensor::from_vector(std::vector<double>{0, 1, 0, 1, 0, 0}, {2, 3}, DType::Float64)};
}

Tensor tiny_lrcn_loss(const std::vector<Tensor>& in, const Tensor& targets, uint64_t step) {
  const int64_t N = in[0].dim(0), T = in[0].dim(1);
  Tensor y = ops::merge_time(in[0]);                                 // (N*T, 8, 8, 3)
  y = ops::relu(ops::conv2d(y, in[1], in[2], 1, 1, Padding::Same));  // (N*T, 8, 8, 4)
  y = ops::max_pool2d(y, 2, 2, 2, 2, Padding::Valid);                // (N*T, 4, 4, 4)
  y = ops::dropout(y, 0.25f, RandomDraw{1, step});
  y = ops::relu(ops::conv2d(y, in[3], in[4], 1, 1, Padding::Same));  // (N*T, 4, 4, 3)
  y = ops::max_pool2d(y, 2, 2, 2, 2, Padding::Same);                 // (N*T, 2, 2, 3)
  y = ops::reshape(y, {N, T, -1});                                   // (N, T, 12)
  RecurrentOptions options;
  y = lstm_sequence(y, {in[5], in[6], in[7]}, options);  // (N, 5)
  y = ops::bias_add(ops::matmul(y, in[8]), in[9]);       // (N, 3)
  return ops::softmax_cross_entropy(y, targets).loss;
}

TinyModel tiny_convlstm() {
  return {{random_input({2, 3, 7, 7, 2}, 31), random_input({3, 3, 2, 12}, 32, -0.5, 0.5),
           random_input({3, 3, 3, 12}, 33, -0.5, 0.5), random_input({12}, 34, -0.1, 0.1),
           random_input({3, 3, 3, 8}, 35, -0.5, 0.5), random_input({3, 3, 2, 8}, 36, -0.5, 0.5),
           random_input({8}, 37, -0.1, 0.1), random_input({6, 3}, 38), random_input({3}, 39)},
          Tensor::from_vector(std::vector<double>{1, 0, 0, 0, 0, 1}, {2, 3}, DType::Float64)};
}

Tensor tiny_convlstm_loss(const std::vector<Tensor>& in, const Tensor& targets, uint64_t step) {
  Generator rng(3 + step);
  RecurrentOptions options;
  options.recurrent_activation = Activation::HardSigmoid;
  options.return_sequences = true;
  options.training = true;
  options.recurrent_dropout = 0.2f;
  options.rng = &rng;
  const int64_t N = in[0].dim(0), T = in[0].dim(1);
  Tensor y = convlstm2d_sequence(in[0], {in[1], in[2], in[3]}, options);                   // (N, T, 5, 5, 3)
  y = ops::split_time(ops::max_pool2d(ops::merge_time(y), 2, 2, 2, 2, Padding::Same), T);  // (N, T, 3, 3, 3)
  y = ops::dropout(y, 0.2f, rng.next());
  y = convlstm2d_sequence(y, {in[4], in[5], in[6]}, options);  // (N, T, 1, 1, 2)
  y = ops::reshape(y, {N, -1});                                // (N, T*2)
  y = ops::bias_add(ops::matmul(y, in[7]), in[8]);
  return ops::softmax_cross_entropy(y, targets).loss;
}

}  // namespace hisvid::testing
