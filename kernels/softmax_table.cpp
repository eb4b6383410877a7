// kernels/softmax_table.cpp — the rows of the softmax, cross-entropy and accuracy kernels and
// their harness cases.
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "kernels/harness.h"
#include "kernels/philox.h"
#include "kernels/softmax.h"

namespace hisvid {
namespace {

using harness::Cases;

const bool rows = register_rows(host_row<naive::softmax_forward<float>>(Backend::Naive, "naive"),
                                host_row<naive::softmax_forward<double>>(Backend::Naive, "naive"),
                                host_row<naive::softmax_backward<float>>(Backend::Naive, "naive"),
                                host_row<naive::softmax_backward<double>>(Backend::Naive, "naive"),
                                host_row<naive::softmax_xent_forward<float>>(Backend::Naive, "naive"),
                                host_row<naive::softmax_xent_forward<double>>(Backend::Naive, "naive"),
                                host_row<naive::softmax_xent_backward<float>>(Backend::Naive, "naive"),
                                host_row<naive::softmax_xent_backward<double>>(Backend::Naive, "naive"),
                                host_row<naive::accuracy_count<float>>(Backend::Naive, "naive"),
                                host_row<naive::accuracy_count<double>>(Backend::Naive, "naive"),
                                host_row<naive::sigmoid_xent_forward<float>>(Backend::Naive, "naive"),
                                host_row<naive::sigmoid_xent_forward<double>>(Backend::Naive, "naive"),
                                host_row<naive::sigmoid_xent_backward<float>>(Backend::Naive, "naive"),
                                host_row<naive::sigmoid_xent_backward<double>>(Backend::Naive, "naive"),
                                host_row<naive::binary_accuracy_count<float>>(Backend::Naive, "naive"),
                                host_row<naive::binary_accuracy_count<double>>(Backend::Naive, "naive"),
                                host_row<naive::step_metrics<float>>(Backend::Naive, "naive"),
                                host_row<naive::step_metrics<double>>(Backend::Naive, "naive"));
#ifdef HISVID_WITH_CUDA
const bool cuda_rows =
    register_rows(cuda_row<cuda::softmax_forward>("cuda"), cuda_row<cuda::softmax_backward>("cuda"),
                  cuda_row<cuda::softmax_xent_forward>("cuda"), cuda_row<cuda::softmax_xent_backward>("cuda"),
                  cuda_row<cuda::accuracy_count>("cuda"), cuda_row<cuda::sigmoid_xent_forward>("cuda"),
                  cuda_row<cuda::sigmoid_xent_backward>("cuda"),
                  cuda_row<cuda::binary_accuracy_count>("cuda"), cuda_row<cuda::step_metrics>("cuda"));
#endif

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double uniform(uint64_t stream, int64_t i) { return philox_uniform(0x50F7, stream, uint64_t(i)); }

// Logits in [-4, 4): probabilities spread over the row.
void spread(const double* logits, int64_t n) {
  for (int64_t i = 0; i < n; ++i) harness::writable(logits)[i] *= 4.0;
}

// One-hot rows (N,K) with a Philox class per row; every third row a soft distribution instead.
void target_rows(const double* targets, int64_t N, int64_t K) {
  double* t = harness::writable(targets);
  for (int64_t n = 0; n < N; ++n) {
    double* row = t + n * K;
    if (n % 3 == 2) {
      double total = 0.0;
      for (int64_t k = 0; k < K; ++k) total += row[k] = uniform(1, n * K + k);
      for (int64_t k = 0; k < K; ++k) row[k] /= total;
    } else {
      const int64_t hot = std::min<int64_t>(K - 1, static_cast<int64_t>(uniform(2, n) * double(K)));
      for (int64_t k = 0; k < K; ++k) row[k] = k == hot ? 1.0 : 0.0;
    }
  }
}

// Probabilities (N,K) from a softmax of spread logits: what backward receives from forward.
void softmax_rows(const double* probs, int64_t N, int64_t K) {
  double* p = harness::writable(probs);
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0.0;
    for (int64_t k = 0; k < K; ++k) sum += p[n * K + k] = std::exp(8.0 * uniform(3, n * K + k) - 4.0);
    for (int64_t k = 0; k < K; ++k) p[n * K + k] /= sum;
  }
}

struct Sizes {
  int64_t N, K;
};

std::string sizes_name(Sizes z) { return "N" + std::to_string(z.N) + "_K" + std::to_string(z.K); }

const bool cases = [] {
  Cases<SoftmaxForward> forward;
  Cases<SoftmaxBackward> backward;
  Cases<SoftmaxXentForward> xent_forward;
  Cases<SoftmaxXentBackward> xent_backward;
  Cases<AccuracyCount> accuracy;
  for (Sizes z :
       {Sizes{1, 1}, Sizes{1, 5}, Sizes{3, 7}, Sizes{17, 50}, Sizes{2, 33}, Sizes{4, 1000}, Sizes{70, 11}}) {
    const int64_t N = z.N, K = z.K;
    auto sizes = [N, K](auto& a) { a.N = N, a.K = K; };
    const double tol = harness::kFused + harness::sum_tolerance(K);  // exponentials, then K-term row sums
    forward.add(sizes_name(z), sizes)
        .tol(tol)
        .with_flops(4.0 * N * K)
        .prepare_with([N, K](SoftmaxForward<double>& a) { spread(a.logits, N * K); });
    // A NaN logit makes its row NaN; the other rows are untouched.
    forward.add(sizes_name(z) + "_nan", sizes).tol(tol).prepare_with([N, K](SoftmaxForward<double>& a) {
      spread(a.logits, N * K);
      for (int64_t n = 0; n < N; n += 2) harness::writable(a.logits)[n * K + (n % K)] = kNaN;
    });
    backward.add(sizes_name(z), sizes)
        .tol(tol)
        .with_flops(4.0 * N * K)
        .prepare_with([N, K](SoftmaxBackward<double>& a) { softmax_rows(a.probs, N, K); });
    xent_forward.add(sizes_name(z), sizes)
        .tol(tol)
        .with_flops(6.0 * N * K)
        .prepare_with([N, K](SoftmaxXentForward<double>& a) {
          spread(a.logits, N * K);
          target_rows(a.targets, N, K);
        });
    xent_backward.add(sizes_name(z), sizes)
        .tol(tol)
        .with_flops(3.0 * N * K)
        .prepare_with([N, K](SoftmaxXentBackward<double>& a) {
          softmax_rows(a.probs, N, K);
          target_rows(a.targets, N, K);
        });
    // Scores on a grid of 1/8: ties, where the first maximum must win.
    accuracy.add(sizes_name(z), sizes).with_flops(2.0 * N * K).prepare_with([N, K](AccuracyCount<double>& a) {
      for (int64_t i = 0; i < N * K; ++i)
        harness::writable(a.scores)[i] = std::floor(uniform(4, i) * 8.0) / 8.0;
      target_rows(a.targets, N, K);
    });
    // Diverged scores: NaN at column 0 of some rows, elsewhere in others. The targets are the
    // first maximum where a NaN never compares greater (so a NaN counts only at column 0).
    accuracy.add(sizes_name(z) + "_nan", sizes).prepare_with([N, K](AccuracyCount<double>& a) {
      double* scores = harness::writable(a.scores);
      double* targets = harness::writable(a.targets);
      for (int64_t n = 0; n < N; ++n) {
        double* row = scores + n * K;
        if (n % 4 == 0 || n % 4 == 2) row[0] = kNaN;
        if (n % 4 == 1 || n % 4 == 2) row[(n * 7) % K] = kNaN;
        int64_t best = 0;
        for (int64_t k = 1; k < K; ++k) {
          if (row[k] > row[best]) best = k;
        }
        for (int64_t k = 0; k < K; ++k) targets[n * K + k] = k == best ? 1.0 : 0.0;
      }
    });
  }
  Cases<SigmoidXentForward> sigmoid_forward;
  Cases<SigmoidXentBackward> sigmoid_backward;
  Cases<BinaryAccuracyCount> binary_accuracy;
  // The binary head is K = 1; larger K are the multi-label form of the same kernels.
  for (Sizes z : {Sizes{1, 1}, Sizes{4, 1}, Sizes{33, 1}, Sizes{1000, 1}, Sizes{3, 7}, Sizes{17, 50}}) {
    const int64_t N = z.N, K = z.K;
    auto sizes = [N, K](auto& a) { a.N = N, a.K = K; };
    // Binary targets on most elements, a soft target every third one (label smoothing).
    auto binary_targets = [N, K](const double* targets) {
      for (int64_t i = 0; i < N * K; ++i) {
        const double u = uniform(5, i);
        harness::writable(targets)[i] = i % 3 == 2 ? u : (u < 0.5 ? 0.0 : 1.0);
      }
    };
    sigmoid_forward.add(sizes_name(z), sizes)
        .tol(harness::kFused + harness::sum_tolerance(K))  // log1p(exp) per element, K terms
        .tol("probs", harness::kElementwise)
        .with_flops(8.0 * N * K)
        .prepare_with([N, K, binary_targets](SigmoidXentForward<double>& a) {
          spread(a.logits, N * K);
          binary_targets(a.targets);
        });
    sigmoid_backward.add(sizes_name(z), sizes)
        .tol(harness::kElementwise)
        .with_flops(3.0 * N * K)
        .prepare_with([N, K, binary_targets](SigmoidXentBackward<double>& a) {
          for (int64_t i = 0; i < N * K; ++i) harness::writable(a.probs)[i] = uniform(6, i);
          binary_targets(a.targets);
        });
    // Probabilities on a grid of 1/8, so that some are exactly 0.5 (not above the threshold),
    // and a NaN every fifth element (counts as 0).
    binary_accuracy.add(sizes_name(z), sizes)
        .with_flops(2.0 * N * K)
        .prepare_with([N, K, binary_targets](BinaryAccuracyCount<double>& a) {
          for (int64_t i = 0; i < N * K; ++i) {
            harness::writable(a.probs)[i] = i % 5 == 4 ? kNaN : std::floor(uniform(7, i) * 8.0) / 8.0;
          }
          binary_targets(a.targets);
        });
  }
  // A step into running sums: categorical and binary heads, each from sums part-way through an
  // epoch with a finite loss, a NaN and an infinite loss (the step fails), and after a failed
  // step (only the count moves).
  Cases<StepMetrics> step;
  enum class State { Finite, NaN, Infinite, AfterFailure };
  const std::pair<State, const char*> states[] = {
      {State::Finite, ""}, {State::NaN, "_nan"}, {State::Infinite, "_inf"}, {State::AfterFailure, "_halted"}};
  for (bool binary : {false, true}) {
    for (Sizes z : {Sizes{1, 1}, Sizes{4, 5}, Sizes{17, 50}, Sizes{70, 11}, Sizes{300, 1}}) {
      if (binary != (z.K == 1)) continue;
      for (const auto& [state, suffix] : states) {
        const int64_t N = z.N, K = z.K;
        step.add(std::string(binary ? "binary_" : "") + sizes_name(z) + suffix,
                 [N, K, binary](auto& a) { a.N = N, a.K = K, a.binary = binary, a.weight = double(N); })
            .prepare_with([N, K, binary, state = state](StepMetrics<double>& a) {
              double* sums = a.sums;
              sums[kStepLossSum] = 7.25, sums[kStepCorrect] = 5.0, sums[kStepSamples] = 12.0;
              sums[kStepCount] = 3.0, sums[kStepFailed] = 0.0, sums[kStepFailedLoss] = 0.0;
              if (state == State::AfterFailure) sums[kStepFailed] = 2.0, sums[kStepFailedLoss] = kNaN;
              harness::writable(a.loss)[0] = state == State::NaN ? kNaN
                                             : state == State::Infinite
                                                 ? std::numeric_limits<double>::infinity()
                                                 : 0.5 + uniform(8, 0);
              for (int64_t i = 0; i < N * K; ++i) {
                harness::writable(a.scores)[i] =
                    binary ? std::floor(uniform(9, i) * 8.0) / 8.0 : std::floor(uniform(4, i) * 8.0) / 8.0;
              }
              if (binary) {
                for (int64_t i = 0; i < N; ++i)
                  harness::writable(a.targets)[i] = uniform(5, i) < 0.5 ? 0.0 : 1.0;
              } else {
                target_rows(a.targets, N, K);
              }
            });
      }
    }
  }
  return harness::add_cases(forward) && harness::add_cases(backward) && harness::add_cases(xent_forward) &&
         harness::add_cases(xent_backward) && harness::add_cases(accuracy) &&
         harness::add_cases(sigmoid_forward) && harness::add_cases(sigmoid_backward) &&
         harness::add_cases(binary_accuracy) && harness::add_cases(step);
}();

}  // namespace
}  // namespace hisvid
