// LSTM and ConvLSTM2D sequences: forward against an independent loop-by-loop reference,
// float64 gradient checks, and whole tiny LRCN / ConvLSTM models (tiny_models.h) from loss to
// every parameter.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/recurrent.h"
#include "kernels/lstm.h"
#include "tests/gradcheck.h"
#include "tests/test_support.h"
#include "tests/tiny_models.h"

namespace hisvid::testing {
namespace {

// float64 forward against float64 loops: only summation order differs.
constexpr double kForwardTolerance = 1e-12;

// lstm_sequence (every h) of x (N,T,D) against plain loops, N = 2 and T = 4.
void expect_lstm_matches_loops(int64_t D, int64_t U) {
  const int64_t N = 2, T = 4;
  const Tensor x = random_input({N, T, D}, 1), W = random_input({D, 4 * U}, 2),
               R = random_input({U, 4 * U}, 3), b = random_input({4 * U}, 4);
  RecurrentOptions options;
  options.return_sequences = true;
  const std::vector<double> got = lstm_sequence(x, {W, R, b}, options).to_vector();

  const double* xs = x.data<double>();
  const double* ws = W.data<double>();
  const double* rs = R.data<double>();
  const double* bs = b.data<double>();
  auto sigmoid = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  double worst = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> h(U, 0.0), c(U, 0.0);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> z(4 * U);
      for (int64_t j = 0; j < 4 * U; ++j) {
        double acc = bs[j];
        for (int64_t d = 0; d < D; ++d) acc += xs[(n * T + t) * D + d] * ws[d * 4 * U + j];
        for (int64_t u = 0; u < U; ++u) acc += h[u] * rs[u * 4 * U + j];
        z[j] = acc;
      }
      for (int64_t u = 0; u < U; ++u) {
        const double i = sigmoid(z[u]), f = sigmoid(z[U + u]), g = std::tanh(z[2 * U + u]),
                     o = sigmoid(z[3 * U + u]);
        c[u] = f * c[u] + i * g;
        h[u] = o * std::tanh(c[u]);
        worst = worse(worst, std::abs(got[(n * T + t) * U + u] - h[u]));
      }
    }
  }
  EXPECT_LE(worst, kForwardTolerance) << "D=" << D << " U=" << U;
}

TEST(Recurrent, LstmForwardMatchesLoopReference) { expect_lstm_matches_loops(3, 5); }

// Beyond the units the one-kernel recurrence takes, the layer runs step by step.
TEST(Recurrent, LstmBeyondTheRecurrenceKernelMatchesLoopReference) {
  expect_lstm_matches_loops(2, kLstmSequenceMaxUnits + 1);
}

TEST(Recurrent, LstmBeyondTheRecurrenceKernelGradients) {
  const int64_t U = kLstmSequenceMaxUnits + 1;
  const Tensor x = random_input({1, 2, 2}, 21), W = random_input({2, 4 * U}, 22),
               R = random_input({U, 4 * U}, 23, -0.05, 0.05), b = random_input({4 * U}, 24);
  EXPECT_GRAD_OK(grad_check(
      [](const std::vector<Tensor>& in) {
        return lstm_sequence(in[0], {in[1], in[2], in[3]}, RecurrentOptions());
      },
      {x, W, R, b}, /*max_elements=*/12));
}

TEST(Recurrent, ConvLstmForwardMatchesLoopReference) {
  // 1x1 kernels with valid padding reduce ConvLSTM2D to an LSTM per pixel; a 3x3 recurrent
  // kernel would not, so this also checks that the input and recurrent paths are separate.
  const int64_t N = 1, T = 3, H = 2, W = 3, C = 2, F = 2;
  const Tensor x = random_input({N, T, H, W, C}, 5), K = random_input({1, 1, C, 4 * F}, 6),
               R = random_input({1, 1, F, 4 * F}, 7), b = random_input({4 * F}, 8);
  RecurrentOptions options;
  options.recurrent_activation = Activation::HardSigmoid;
  options.return_sequences = false;
  const std::vector<double> got = convlstm2d_sequence(x, {K, R, b}, options).to_vector();
  auto hard = [](double v) { return std::min(1.0, std::max(0.0, 0.2 * v + 0.5)); };
  const double* xs = x.data<double>();
  const double* ks = K.data<double>();
  const double* rs = R.data<double>();
  const double* bs = b.data<double>();
  for (int64_t p = 0; p < H * W; ++p) {
    std::vector<double> h(F, 0.0), c(F, 0.0);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> z(4 * F);
      for (int64_t j = 0; j < 4 * F; ++j) {
        double acc = bs[j];
        for (int64_t ch = 0; ch < C; ++ch) acc += xs[(t * H * W + p) * C + ch] * ks[ch * 4 * F + j];
        for (int64_t u = 0; u < F; ++u) acc += h[u] * rs[u * 4 * F + j];
        z[j] = acc;
      }
      for (int64_t u = 0; u < F; ++u) {
        const double i = hard(z[u]), f = hard(z[F + u]), g = std::tanh(z[2 * F + u]), o = hard(z[3 * F + u]);
        c[u] = f * c[u] + i * g;
        h[u] = o * std::tanh(c[u]);
      }
    }
    for (int64_t u = 0; u < F; ++u) EXPECT_NEAR(got[p * F + u], h[u], kForwardTolerance) << "pixel " << p;
  }
}

// With recurrent dropout (Keras: h_{t-1} * mask_g, then gate g's recurrent convolution) the op
// runs one grouped convolution per step over the 4 masked states; this checks it against the
// definition written out: a 3x3 'same' convolution per gate of the masked state, every step.
TEST(Recurrent, ConvLstmRecurrentDropoutMatchesMaskedConvolutionsPerGate) {
  const int64_t N = 2, T = 3, H = 3, W = 4, F = 3;
  const Tensor xz = random_input({N, T, H, W, 4 * F}, 31, -1.0, 1.0), R = random_input({3, 3, F, 4 * F}, 32);
  std::vector<double> keep = random_input({4, N, H, W, F}, 33, 0.0, 1.0).to_vector();
  for (double& m : keep) m = m < 0.3 ? 0.0 : 1.0 / 0.7;  // every gate its own mask
  const Tensor masks = Tensor::from_vector(keep, {4, N, H, W, F}, DType::Float64);
  const std::vector<double> got =
      ops::convlstm_recurrence(xz, R, masks, Activation::Tanh, Activation::Sigmoid, true).to_vector();

  const double* xs = xz.data<double>();
  const double* rs = R.data<double>();
  auto sigmoid = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  auto at = [&](int64_t n, int64_t y, int64_t x) { return (n * H + y) * W + x; };  // pixel index
  std::vector<double> h(N * H * W * F, 0.0), c(N * H * W * F, 0.0);
  double worst = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> z(N * H * W * 4 * F);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t y = 0; y < H; ++y) {
        for (int64_t x = 0; x < W; ++x) {
          for (int64_t j = 0; j < 4 * F; ++j) {
            const int64_t gate = j / F;
            double acc = xs[((n * T + t) * H * W + y * W + x) * 4 * F + j];
            for (int64_t kh = 0; kh < 3; ++kh) {
              for (int64_t kw = 0; kw < 3; ++kw) {
                const int64_t yy = y + kh - 1, xx = x + kw - 1;
                if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                for (int64_t u = 0; u < F; ++u) {
                  const double masked =
                      h[at(n, yy, xx) * F + u] * keep[(gate * N * H * W + at(n, yy, xx)) * F + u];
                  acc += masked * rs[((kh * 3 + kw) * F + u) * 4 * F + j];
                }
              }
            }
            z[at(n, y, x) * 4 * F + j] = acc;
          }
        }
      }
    }
    for (int64_t p = 0; p < N * H * W; ++p) {
      for (int64_t u = 0; u < F; ++u) {
        const double* zp = &z[p * 4 * F];
        const double i = sigmoid(zp[u]), f = sigmoid(zp[F + u]), g = std::tanh(zp[2 * F + u]),
                     o = sigmoid(zp[3 * F + u]);
        c[p * F + u] = f * c[p * F + u] + i * g;
        h[p * F + u] = o * std::tanh(c[p * F + u]);
        const int64_t n = p / (H * W), row = (n * T + t) * H * W + p % (H * W);  // (n, t, pixel)
        worst = worse(worst, std::abs(got[row * F + u] - h[p * F + u]));
      }
    }
  }
  EXPECT_LE(worst, kForwardTolerance);
}

TEST(Recurrent, LstmGradients) {
  const Tensor x = random_input({2, 3, 4}, 9), W = random_input({4, 12}, 10), R = random_input({3, 12}, 11),
               b = random_input({12}, 12);
  for (bool sequences : {false, true}) {
    SCOPED_TRACE(sequences ? "return_sequences" : "last state");
    EXPECT_GRAD_OK(grad_check(
        [sequences](const std::vector<Tensor>& in) {
          RecurrentOptions options;
          options.return_sequences = sequences;
          return lstm_sequence(in[0], {in[1], in[2], in[3]}, options);
        },
        {x, W, R, b}));
  }
}

// The LSTM's input dropout as each InputDropout draws it (the masks Keras draws on each of its
// paths; layers/recurrent.cpp chooses): Shared and PerStep are the undropped LSTM of x times one
// mask, of (N, D) repeated over the timesteps or of (N, T, D), bit for bit; PerGate's four
// masks give another sequence.
TEST(Recurrent, LstmInputDropoutMasks) {
  const int64_t N = 2, T = 3, D = 4;
  const Tensor x = random_input({N, T, D}, 21), W = random_input({D, 8}, 22), R = random_input({2, 8}, 23),
               b = random_input({8}, 24);
  const float rate = 0.5f;
  const auto trained = [&](InputDropout scheme) {
    Generator rng(7);
    RecurrentOptions options;
    options.return_sequences = true;
    options.training = true;
    options.dropout = rate;
    options.input_dropout = scheme;
    options.rng = &rng;
    return lstm_sequence(x, {W, R, b}, options).to_vector();
  };
  const auto undropped_of = [&](const Tensor& input) {
    RecurrentOptions options;
    options.return_sequences = true;
    return lstm_sequence(input, {W, R, b}, options).to_vector();
  };
  Generator shared_rng(7), step_rng(7);
  const Tensor shared = ops::dropout_mask({N, D}, rate, shared_rng.next(), x.dtype(), x.device());
  const Tensor per_step = ops::dropout_mask({N, T, D}, rate, step_rng.next(), x.dtype(), x.device());
  EXPECT_EQ(trained(InputDropout::Shared), undropped_of(ops::mul(x, ops::repeat_steps(shared, T))));
  EXPECT_EQ(trained(InputDropout::PerStep), undropped_of(ops::mul(x, per_step)));
  // The per-step mask differs between timesteps (so it is not the shared one repeated).
  const std::vector<double> m = per_step.to_vector();
  bool differs = false;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = 0; d < D; ++d) differs = differs || m[(n * T + 0) * D + d] != m[(n * T + 1) * D + d];
  EXPECT_TRUE(differs);
  EXPECT_NE(trained(InputDropout::PerGate), trained(InputDropout::Shared));

  // Shared under recurrent_dropout: one recurrent mask for every gate, drawn after the input's;
  // the same as per-gate masks that happen to be equal, which the recurrence kernel takes.
  Generator rng(7);
  RecurrentOptions options;
  options.return_sequences = true;
  options.training = true;
  options.dropout = rate;
  options.recurrent_dropout = 0.3f;
  options.input_dropout = InputDropout::Shared;
  options.rng = &rng;
  const std::vector<double> got = lstm_sequence(x, {W, R, b}, options).to_vector();
  Generator again(7);
  const Tensor input = ops::dropout_mask({N, D}, rate, again.next(), x.dtype(), x.device());
  const Tensor recurrent = ops::dropout_mask({N, 2}, 0.3f, again.next(), x.dtype(), x.device());
  const Tensor stacked = ops::concat({ops::reshape(recurrent, {1, N, 2}), ops::reshape(recurrent, {1, N, 2}),
                                      ops::reshape(recurrent, {1, N, 2}), ops::reshape(recurrent, {1, N, 2})},
                                     0);
  Tensor xz = ops::bias_add(ops::matmul(ops::merge_time(ops::mul(x, ops::repeat_steps(input, T))), W), b);
  xz = ops::reshape(xz, {N, T, 8});
  const std::vector<double> expected =
      ops::lstm_recurrence(xz, R, stacked, Activation::Tanh, Activation::Sigmoid, true).to_vector();
  EXPECT_EQ(got, expected);
}

TEST(Recurrent, LstmGradientsWithDropoutMasks) {
  const Tensor x = random_input({2, 3, 4}, 13), W = random_input({4, 8}, 14), R = random_input({2, 8}, 15),
               b = random_input({8}, 16);
  EXPECT_GRAD_OK(grad_check(
      [](const std::vector<Tensor>& in) {
        Generator rng(99);  // the same masks at every evaluation
        RecurrentOptions options;
        options.training = true;
        options.dropout = 0.3f;
        options.recurrent_dropout = 0.4f;
        options.rng = &rng;
        return lstm_sequence(in[0], {in[1], in[2], in[3]}, options);
      },
      {x, W, R, b}));
}

TEST(Recurrent, ConvLstmGradients) {
  const Tensor x = random_input({2, 3, 5, 4, 2}, 17), K = random_input({3, 3, 2, 12}, 18),
               R = random_input({3, 3, 3, 12}, 19), b = random_input({12}, 20);
  for (Padding padding : {Padding::Valid, Padding::Same}) {
    SCOPED_TRACE(padding == Padding::Same ? "same" : "valid");
    EXPECT_GRAD_OK(grad_check(
        [padding](const std::vector<Tensor>& in) {
          Generator rng(5);
          RecurrentOptions options;
          options.recurrent_activation = Activation::HardSigmoid;
          options.return_sequences = true;
          options.padding = padding;
          options.training = true;
          options.recurrent_dropout = 0.2f;
          options.dropout = padding == Padding::Same ? 0.3f : 0.0f;  // input masks: one convolution per gate
          options.rng = &rng;
          return convlstm2d_sequence(in[0], {in[1], in[2], in[3]}, options);
        },
        {x, K, R, b}));
  }
}

// Device operations (engine/device.h) of a float32 forward and backward of `layer` on x.
template <typename Layer>
uint64_t operations_of_a_step(const Tensor& x, const RecurrentWeights& w, const RecurrentOptions& options,
                              Layer layer) {
  for (Tensor t : {w.kernel, w.recurrent_kernel, w.bias}) t.zero_grad();  // the same first accumulation
  const uint64_t before = device_calls();
  backward(ops::sum(layer(x, w, options)));
  return device_calls() - before;
}

RecurrentWeights float_weights(const Shape& kernel, const Shape& recurrent, int64_t units) {
  RecurrentWeights w;
  w.kernel = Tensor::full(kernel, 0.1);
  w.recurrent_kernel = Tensor::full(recurrent, 0.05);
  w.bias = Tensor::zeros({4 * units});
  for (Tensor* t : {&w.kernel, &w.recurrent_kernel, &w.bias}) t->set_requires_grad(true);
  return w;
}

// A GPU launches every operation a step queues, so the recurrence must not queue a chain of ops
// per timestep: the LSTM queues the same operations for any T, the ConvLSTM one step kernel each
// way per timestep, its recurrent convolution included, with or without recurrent dropout.
TEST(Recurrent, TimestepsAddAFixedNumberOfOperations) {
  const int64_t N = 2, D = 3, U = 4, H = 5, W = 4, C = 2, F = 3;
  const RecurrentWeights lstm = float_weights({D, 4 * U}, {U, 4 * U}, U);
  const RecurrentWeights conv = float_weights({3, 3, C, 4 * F}, {3, 3, F, 4 * F}, F);
  for (bool dropout : {false, true}) {
    SCOPED_TRACE(dropout ? "recurrent dropout" : "no dropout");
    Generator rng(3);
    RecurrentOptions options;
    options.training = dropout;
    options.recurrent_dropout = dropout ? 0.2f : 0.0f;
    options.rng = &rng;
    options.padding = Padding::Same;
    auto lstm_ops = [&](int64_t T) {
      return operations_of_a_step(Tensor::full({N, T, D}, 0.5), lstm, options, lstm_sequence);
    };
    auto conv_ops = [&](int64_t T) {
      return operations_of_a_step(Tensor::full({N, T, H, W, C}, 0.5), conv, options, convlstm2d_sequence);
    };
    EXPECT_EQ(lstm_ops(7), lstm_ops(3));
    const uint64_t per_step = 2;  // one step kernel (its convolution included) each way
    EXPECT_EQ(conv_ops(7) - conv_ops(3), 4 * per_step);
  }
}

int64_t total_elements(const std::vector<Tensor>& inputs) {
  int64_t n = 0;
  for (const Tensor& t : inputs) n += t.numel();
  return n;
}

TEST(Recurrent, TinyLrcnEndToEnd) {
  const TinyModel model = tiny_lrcn();
  const GradCheckResult r = grad_check(
      [&](const std::vector<Tensor>& in) { return tiny_lrcn_loss(in, model.targets); }, model.inputs);
  EXPECT_EQ(r.checked + r.kinks, total_elements(model.inputs));  // every element of every input was probed
  EXPECT_LE(r.max_error, kGradTolerance) << r.worst;
}

TEST(Recurrent, TinyConvLstmEndToEnd) {
  const TinyModel model = tiny_convlstm();
  const GradCheckResult r = grad_check(
      [&](const std::vector<Tensor>& in) { return tiny_convlstm_loss(in, model.targets); }, model.inputs);
  EXPECT_EQ(r.checked + r.kinks, total_elements(model.inputs));
  EXPECT_LE(r.max_error, kGradTolerance) << r.worst;
}

}  // namespace
}  // namespace hisvid::testing
