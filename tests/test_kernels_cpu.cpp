// tests/test_kernels_cpu.cpp — the naive rows of the kernel table (kernels/*.h, namespace
// hisvid::naive: the definitions every other row is checked against by tests/test_kernel_table.cpp)
// on small cases whose expected numbers are worked out by hand in the comments, for float and
// double, and the LSTM cell and batch norm backward against central differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/batchnorm.h"
#include "kernels/conv2d.h"
#include "kernels/conv2d_avx2.h"
#include "kernels/conv2d_pool.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/lstm.h"
#include "kernels/matmul.h"
#include "kernels/optim.h"
#include "kernels/philox.h"
#include "kernels/pool.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace hisvid {
namespace {

// The ...TakesTheParallelPath tests run a kernel's OpenMP loop with two threads at least, also
// where OMP_NUM_THREADS or the machine would give one (the loop would then be the serial one).
class ParallelThreads {
 public:
  ParallelThreads() {
#ifdef _OPENMP
    previous_ = omp_get_max_threads();
    if (previous_ < 2) omp_set_num_threads(2);
#endif
  }
  ~ParallelThreads() {
#ifdef _OPENMP
    omp_set_num_threads(previous_);
#endif
  }
  ParallelThreads(const ParallelThreads&) = delete;
  ParallelThreads& operator=(const ParallelThreads&) = delete;

 private:
  int previous_ = 1;
};

// float32 epsilon is 1.2e-7; the chains here (exp, tanh, sqrt, a few products) round a few
// dozen times at most, and some inputs (0.3, 0.001) are not exact in float.
constexpr double kFloatTol = 1e-5;
// float64 epsilon is 2.2e-16; the hand values below are written to 16 significant digits.
constexpr double kDoubleTol = 1e-12;
// A float32 dot product of n ~ 300 O(1) terms rounds to within n * eps * sum|terms| in the
// worst case; the naive references below sum in a different order than OpenBLAS.
constexpr double kFloatGemmTol = 1e-4;
// Central differences with step 1e-5 in float64: truncation error ~ h^2 = 1e-10 times the third
// derivative, rounding error ~ eps / h = 2e-11.
constexpr double kFiniteDiffTol = 1e-8;
// A result through momentum = 0.99f, which is 1.1e-8 away from the 0.99 of the hand values,
// times values of order 1: the float64 row differs by ~1e-8 from them.
constexpr double kFloatMomentumTol = 1e-7;

template <typename T>
constexpr double tol() {
  return std::is_same_v<T, float> ? kFloatTol : kDoubleTol;
}

template <typename T>
constexpr double gemm_tol() {
  return std::is_same_v<T, float> ? kFloatGemmTol : kDoubleTol;
}

template <typename T>
std::vector<T> vec(std::initializer_list<double> values) {
  std::vector<T> out;
  for (double v : values) out.push_back(static_cast<T>(v));
  return out;
}

// |actual - expected| <= tolerance * max(1, |expected|), element by element.
template <typename T>
void expect_close(const std::vector<T>& actual, const std::vector<double>& expected, double tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_NEAR(static_cast<double>(actual[i]), expected[i], tolerance * std::max(1.0, std::abs(expected[i])))
        << "at index " << i;
  }
}

// Deterministic test data in [-1, 1) from the engine's own generator.
template <typename T>
std::vector<T> random_values(int64_t n, uint64_t seed) {
  std::vector<T> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(2.0f * philox_uniform(seed, 0, i) - 1.0f);
  return out;
}

template <typename T>
class KernelsCpu : public ::testing::Test {};
using FloatAndDouble = ::testing::Types<float, double>;
TYPED_TEST_SUITE(KernelsCpu, FloatAndDouble);

// ---------------------------------------------------------------------------------------------
// elementwise.h
// ---------------------------------------------------------------------------------------------

TYPED_TEST(KernelsCpu, FillWritesEveryElement) {
  using T = TypeParam;
  std::vector<T> out(5, T(0));
  {
    Fill<T> k;
    k.out = out.data(), k.value = T(2.5), k.n = 5;
    naive::fill(k);
  }
  expect_close(out, {2.5, 2.5, 2.5, 2.5, 2.5}, 0.0);
}

TYPED_TEST(KernelsCpu, AddSubMulScaleAxpy) {
  using T = TypeParam;
  const std::vector<T> a = vec<T>({1, 2, 3}), b = vec<T>({4, -5, 0.5});
  std::vector<T> out(3);
  {
    Add<T> k;
    k.out = out.data(), k.a = a.data(), k.b = b.data(), k.n = 3;
    naive::add(k);
  }
  expect_close(out, {5, -3, 3.5}, 0.0);
  {
    Sub<T> k;
    k.out = out.data(), k.a = a.data(), k.b = b.data(), k.n = 3;
    naive::sub(k);
  }
  expect_close(out, {-3, 7, 2.5}, 0.0);
  {
    Mul<T> k;
    k.out = out.data(), k.a = a.data(), k.b = b.data(), k.n = 3;
    naive::mul(k);
  }
  expect_close(out, {4, -10, 1.5}, 0.0);
  {
    Scale<T> k;
    k.out = out.data(), k.a = a.data(), k.alpha = T(-2), k.n = 3;
    naive::scale(k);
  }
  expect_close(out, {-2, -4, -6}, 0.0);
  std::vector<T> y = vec<T>({1, 1, 1});
  {
    Axpy<T> k;
    k.y = y.data(), k.alpha = T(2), k.x = b.data(), k.n = 3;
    naive::axpy(k);
  }  // 1 + 2 * (4, -5, 0.5)
  expect_close(y, {9, -9, 2}, 0.0);
  // out may alias an input: a += a.
  std::vector<T> c = a;
  {
    Add<T> k;
    k.out = c.data(), k.a = c.data(), k.b = c.data(), k.n = 3;
    naive::add(k);
  }
  expect_close(c, {2, 4, 6}, 0.0);
}

TYPED_TEST(KernelsCpu, AddOnManyElementsTakesTheParallelPath) {
  using T = TypeParam;
  const ParallelThreads threads;
  const int64_t n = 100003;  // above the one-thread limit, not a multiple of any block size
  std::vector<T> a(n), b(n), out(n);
  for (int64_t i = 0; i < n; ++i) {
    a[i] = T(i % 7);
    b[i] = T(-2 * (i % 5));
  }
  {
    Add<T> k;
    k.out = out.data(), k.a = a.data(), k.b = b.data(), k.n = n;
    naive::add(k);
  }
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], T(i % 7 - 2 * (i % 5))) << "at " << i;
}

TYPED_TEST(KernelsCpu, BiasAddForwardAndBackward) {
  using T = TypeParam;
  // inp (M=2, C=3) + bias (3)
  const std::vector<T> inp = vec<T>({1, 2, 3, 4, 5, 6}), bias = vec<T>({10, 20, 30});
  std::vector<T> out(6);
  {
    BiasAddForward<T> k;
    k.out = out.data(), k.inp = inp.data(), k.bias = bias.data(), k.M = 2, k.C = 3;
    naive::bias_add_forward(k);
  }
  expect_close(out, {11, 22, 33, 14, 25, 36}, 0.0);
  // dbias += column sums: (1+4, 2+5, 3+6) on top of (1, 0, -1).
  std::vector<T> dbias = vec<T>({1, 0, -1});
  {
    BiasAddBackward<T> k;
    k.dbias = dbias.data(), k.dout = inp.data(), k.M = 2, k.C = 3;
    naive::bias_add_backward(k);
  }
  expect_close(dbias, {6, 7, 8}, 0.0);
}

TYPED_TEST(KernelsCpu, ActivationForward) {
  using T = TypeParam;
  const std::vector<T> x = vec<T>({-3, -0.5, 0, 0.5, 3});
  std::vector<T> y(5);
  {
    ActivationForward<T> k;
    k.out = y.data(), k.inp = x.data(), k.n = 5, k.act = Activation::Linear;
    naive::activation_forward(k);
  }
  expect_close(y, {-3, -0.5, 0, 0.5, 3}, 0.0);
  {
    ActivationForward<T> k;
    k.out = y.data(), k.inp = x.data(), k.n = 5, k.act = Activation::Relu;
    naive::activation_forward(k);
  }
  expect_close(y, {0, 0, 0, 0.5, 3}, 0.0);
  {
    ActivationForward<T> k;
    k.out = y.data(), k.inp = x.data(), k.n = 5, k.act = Activation::Tanh;
    naive::activation_forward(k);
  }
  expect_close(y, {-0.9950547536867305, -0.46211715726000974, 0, 0.46211715726000974, 0.9950547536867305},
               tol<T>());
  // sigmoid(x) = 1 / (1 + e^-x)
  {
    ActivationForward<T> k;
    k.out = y.data(), k.inp = x.data(), k.n = 5, k.act = Activation::Sigmoid;
    naive::activation_forward(k);
  }
  expect_close(y, {0.04742587317756678, 0.3775406687981454, 0.5, 0.6224593312018546, 0.9525741268224334},
               tol<T>());
  // hard_sigmoid = clip(0.2 x + 0.5, 0, 1): -0.1 -> 0, 0.4, 0.5, 0.6, 1.1 -> 1
  {
    ActivationForward<T> k;
    k.out = y.data(), k.inp = x.data(), k.n = 5, k.act = Activation::HardSigmoid;
    naive::activation_forward(k);
  }
  expect_close(y, {0, 0.4, 0.5, 0.6, 1}, tol<T>());
  // Keras 3's hard_sigmoid = clip(x / 6 + 0.5, 0, 1): 0, 5/12, 0.5, 7/12, 1 (x = -3 and 3 are its corners)
  {
    ActivationForward<T> k;
    k.out = y.data(), k.inp = x.data(), k.n = 5, k.act = Activation::HardSigmoidKeras3;
    naive::activation_forward(k);
  }
  expect_close(y, {0, 5.0 / 12, 0.5, 7.0 / 12, 1}, tol<T>());
}

TYPED_TEST(KernelsCpu, ActivationBackwardFromOutput) {
  using T = TypeParam;
  const std::vector<T> x = vec<T>({-3, -0.5, 0, 0.5, 3}), dout = vec<T>({2, 2, 2, 2, 2});
  std::vector<T> y(5), dx(5);
  const auto run = [&](Activation act) {
    {
      ActivationForward<T> k;
      k.out = y.data(), k.inp = x.data(), k.n = 5, k.act = act;
      naive::activation_forward(k);
    }
    {
      ActivationBackward<T> k;
      k.dinp = dx.data(), k.dout = dout.data(), k.out = y.data(), k.n = 5, k.act = act;
      naive::activation_backward(k);
    }
  };
  run(Activation::Linear);
  expect_close(dx, {2, 2, 2, 2, 2}, 0.0);
  run(Activation::Relu);  // the kink at 0 takes the flat side
  expect_close(dx, {0, 0, 0, 2, 2}, 0.0);
  run(Activation::Tanh);  // 2 * (1 - tanh^2)
  expect_close(dx, {0.019732074330880423, 1.5728954659318548, 2, 1.5728954659318548, 0.019732074330880423},
               tol<T>());
  run(Activation::Sigmoid);  // 2 * s * (1 - s)
  expect_close(dx, {0.09035331946182427, 0.470007424403189, 0.5, 0.470007424403189, 0.090353319461824},
               tol<T>());
  run(Activation::HardSigmoid);  // 2 * 0.2 inside (0, 1), 0 where clipped
  expect_close(dx, {0, 0.4, 0.4, 0.4, 0}, tol<T>());
  run(Activation::HardSigmoidKeras3);  // 2 / 6 inside (0, 1), 0 at the corners (flat side)
  expect_close(dx, {0, 1.0 / 3, 1.0 / 3, 1.0 / 3, 0}, tol<T>());
}

// ---------------------------------------------------------------------------------------------
// matmul.h
// ---------------------------------------------------------------------------------------------

// a = [[1,2,3],[4,5,6]] (2,3), b = [[7,8],[9,10],[11,12]] (3,2):
// a b = [[1*7+2*9+3*11, 1*8+2*10+3*12], [4*7+5*9+6*11, 4*8+5*10+6*12]] = [[58,64],[139,154]].
TYPED_TEST(KernelsCpu, MatmulAllTransposes) {
  using T = TypeParam;
  const std::vector<T> a = vec<T>({1, 2, 3, 4, 5, 6}), at = vec<T>({1, 4, 2, 5, 3, 6});
  const std::vector<T> b = vec<T>({7, 8, 9, 10, 11, 12}), bt = vec<T>({7, 9, 11, 8, 10, 12});
  const std::vector<double> ab = {58, 64, 139, 154};
  std::vector<T> out(4, T(-1));
  {
    Matmul<T> k;
    k.out = out.data(), k.a = a.data(), k.b = b.data(), k.M = 2, k.P = 2, k.K = 3, k.trans_a = false;
    k.trans_b = false, k.accumulate = false;
    naive::matmul(k);
  }
  expect_close(out, ab, 0.0);
  {
    Matmul<T> k;
    k.out = out.data(), k.a = at.data(), k.b = b.data(), k.M = 2, k.P = 2, k.K = 3, k.trans_a = true;
    k.trans_b = false, k.accumulate = false;
    naive::matmul(k);
  }
  expect_close(out, ab, 0.0);
  {
    Matmul<T> k;
    k.out = out.data(), k.a = a.data(), k.b = bt.data(), k.M = 2, k.P = 2, k.K = 3, k.trans_a = false;
    k.trans_b = true, k.accumulate = false;
    naive::matmul(k);
  }
  expect_close(out, ab, 0.0);
  {
    Matmul<T> k;
    k.out = out.data(), k.a = at.data(), k.b = bt.data(), k.M = 2, k.P = 2, k.K = 3, k.trans_a = true;
    k.trans_b = true, k.accumulate = false;
    naive::matmul(k);
  }
  expect_close(out, ab, 0.0);
  // accumulate: out (= a b) += a b
  {
    Matmul<T> k;
    k.out = out.data(), k.a = a.data(), k.b = b.data(), k.M = 2, k.P = 2, k.K = 3, k.trans_a = false;
    k.trans_b = false, k.accumulate = true;
    naive::matmul(k);
  }
  expect_close(out, {116, 128, 278, 308}, 0.0);
}

TYPED_TEST(KernelsCpu, MatmulEmptyDimensions) {
  using T = TypeParam;
  const std::vector<T> a = vec<T>({1, 2}), b = vec<T>({3, 4});
  std::vector<T> out = vec<T>({5, 5, 5, 5});
  // K == 0 with accumulate: an empty sum added, out unchanged.
  {
    Matmul<T> k;
    k.out = out.data(), k.a = a.data(), k.b = b.data(), k.M = 2, k.P = 2, k.K = 0, k.trans_a = false;
    k.trans_b = false, k.accumulate = true;
    naive::matmul(k);
  }
  expect_close(out, {5, 5, 5, 5}, 0.0);
  // K == 0 without accumulate: out = 0.
  {
    Matmul<T> k;
    k.out = out.data(), k.a = a.data(), k.b = b.data(), k.M = 2, k.P = 2, k.K = 0, k.trans_a = false;
    k.trans_b = false, k.accumulate = false;
    naive::matmul(k);
  }
  expect_close(out, {0, 0, 0, 0}, 0.0);
  // M == 0 or P == 0: nothing to write, out untouched.
  out = vec<T>({5, 5, 5, 5});
  {
    Matmul<T> k;
    k.out = out.data(), k.a = a.data(), k.b = b.data(), k.M = 0, k.P = 2, k.K = 1, k.trans_a = false;
    k.trans_b = false, k.accumulate = false;
    naive::matmul(k);
  }
  {
    Matmul<T> k;
    k.out = out.data(), k.a = a.data(), k.b = b.data(), k.M = 2, k.P = 0, k.K = 1, k.trans_a = false;
    k.trans_b = false, k.accumulate = false;
    naive::matmul(k);
  }
  expect_close(out, {5, 5, 5, 5}, 0.0);
}

// ---------------------------------------------------------------------------------------------
// conv2d.h
// ---------------------------------------------------------------------------------------------

// The 3x3 single-channel image x = [[1,2,3],[4,5,6],[7,8,9]] and the 2x2 kernel
// w = [[1,2],[3,4]] (KH,KW,C=1,F=1): out[i][j] = x[i][j] + 2 x[i][j+1] + 3 x[i+1][j] + 4 x[i+1][j+1].
template <typename T>
struct SmallConv {
  std::vector<T> x = vec<T>({1, 2, 3, 4, 5, 6, 7, 8, 9});
  std::vector<T> w = vec<T>({1, 2, 3, 4});
};

TYPED_TEST(KernelsCpu, Conv2dForwardValid) {
  using T = TypeParam;
  SmallConv<T> s;
  const Conv2dGeometry g = conv2d_geometry(1, 3, 3, 1, 1, 2, 2, 1, 1, Padding::Valid);
  ASSERT_EQ(g.HO, 2);
  ASSERT_EQ(g.WO, 2);
  // out[0][0] = 1 + 2*2 + 3*4 + 4*5 = 37, out[0][1] = 2 + 6 + 15 + 24 = 47,
  // out[1][0] = 4 + 10 + 21 + 32 = 67, out[1][1] = 5 + 12 + 24 + 36 = 77; bias 0.5.
  const std::vector<T> bias = vec<T>({0.5});
  std::vector<T> out(4);
  {
    Conv2dForward<T> k;
    k.out = out.data(), k.inp = s.x.data(), k.weight = s.w.data(), k.bias = bias.data(), k.g = g;
    naive::conv2d_forward(k);
  }
  expect_close(out, {37.5, 47.5, 67.5, 77.5}, 0.0);
  {
    Conv2dForward<T> k;
    k.out = out.data(), k.inp = s.x.data(), k.weight = s.w.data(), k.bias = static_cast<const T*>(nullptr);
    k.g = g;
    naive::conv2d_forward(k);
  }
  expect_close(out, {37, 47, 67, 77}, 0.0);
}

TYPED_TEST(KernelsCpu, Conv2dForwardSameStride1PadsAfter) {
  using T = TypeParam;
  SmallConv<T> s;
  // Same, 2x2 kernel, stride 1: total padding 1, all of it after (TensorFlow's split).
  const Conv2dGeometry g = conv2d_geometry(1, 3, 3, 1, 1, 2, 2, 1, 1, Padding::Same);
  ASSERT_EQ(g.HO, 3);
  ASSERT_EQ(g.pad_top, 0);
  ASSERT_EQ(g.pad_left, 0);
  // Last column: out[0][2] = 3 + 3*6 = 21, out[1][2] = 6 + 3*9 = 33;
  // last row: out[2][0] = 7 + 2*8 = 23, out[2][1] = 8 + 2*9 = 26, out[2][2] = 9.
  std::vector<T> out(9);
  {
    Conv2dForward<T> k;
    k.out = out.data(), k.inp = s.x.data(), k.weight = s.w.data(), k.bias = static_cast<const T*>(nullptr);
    k.g = g;
    naive::conv2d_forward(k);
  }
  expect_close(out, {37, 47, 21, 67, 77, 33, 23, 26, 9}, 0.0);
}

TYPED_TEST(KernelsCpu, Conv2dForwardSameStride2OddSize) {
  using T = TypeParam;
  SmallConv<T> s;
  // Same, stride 2 on 3: output ceil(3/2) = 2, total padding (2-1)*2 + 2 - 3 = 1, after.
  const Conv2dGeometry g = conv2d_geometry(1, 3, 3, 1, 1, 2, 2, 2, 2, Padding::Same);
  ASSERT_EQ(g.HO, 2);
  ASSERT_EQ(g.WO, 2);
  // Windows start at rows/columns 0 and 2: out = [[37, 3 + 3*6], [7 + 2*8, 9]].
  std::vector<T> out(4);
  {
    Conv2dForward<T> k;
    k.out = out.data(), k.inp = s.x.data(), k.weight = s.w.data(), k.bias = static_cast<const T*>(nullptr);
    k.g = g;
    naive::conv2d_forward(k);
  }
  expect_close(out, {37, 21, 23, 9}, 0.0);
}

TYPED_TEST(KernelsCpu, Conv2dForwardSame3x3PadsBefore) {
  using T = TypeParam;
  SmallConv<T> s;
  // Same, 3x3 kernel of ones: one row/column of padding on each side, so each output is the
  // sum of the 3x3 neighbourhood inside the image: out[0][0] = 1+2+4+5 = 12, out[1][1] = 45, ...
  const std::vector<T> ones(9, T(1));
  const Conv2dGeometry g = conv2d_geometry(1, 3, 3, 1, 1, 3, 3, 1, 1, Padding::Same);
  ASSERT_EQ(g.pad_top, 1);
  std::vector<T> out(9);
  {
    Conv2dForward<T> k;
    k.out = out.data(), k.inp = s.x.data(), k.weight = ones.data(), k.bias = static_cast<const T*>(nullptr);
    k.g = g;
    naive::conv2d_forward(k);
  }
  expect_close(out, {12, 21, 16, 27, 45, 33, 24, 39, 28}, 0.0);
}

TYPED_TEST(KernelsCpu, Conv2dBackwardValid) {
  using T = TypeParam;
  SmallConv<T> s;
  const Conv2dGeometry g = conv2d_geometry(1, 3, 3, 1, 1, 2, 2, 1, 1, Padding::Valid);
  const std::vector<T> dout = vec<T>({1, 2, 3, 4});  // (1,2,2,1)
  // dx[i][j] = sum over outputs (a,b) of dout[a][b] * w[i-a][j-b]:
  // dx[0][1] = 1*2 + 2*1 = 4, dx[1][1] = 1*4 + 2*3 + 3*2 + 4*1 = 20, dx[2][1] = 3*4 + 4*3 = 24, ...
  std::vector<T> dx(9, T(99));
  {
    Conv2dBackwardData<T> k;
    k.dinp = dx.data(), k.dout = dout.data(), k.weight = s.w.data(), k.g = g;
    naive::conv2d_backward_data(k);
  }
  expect_close(dx, {1, 4, 4, 6, 20, 16, 9, 24, 16}, 0.0);
  // dw[p][q] += sum_ab dout[a][b] * x[a+p][b+q]: dw[0][0] = 1*1 + 2*2 + 3*4 + 4*5 = 37,
  // dw[0][1] = 2 + 6 + 15 + 24 = 47, dw[1][0] = 4 + 10 + 21 + 32 = 67, dw[1][1] = 5 + 12 + 24 + 36 = 77;
  // dbias += 1 + 2 + 3 + 4. Both start at 1 to show they accumulate.
  std::vector<T> dw(4, T(1)), db(1, T(1));
  {
    Conv2dBackwardFilter<T> k;
    k.dweight = dw.data(), k.dbias = db.data(), k.dout = dout.data(), k.inp = s.x.data(), k.g = g;
    naive::conv2d_backward_filter(k);
  }
  expect_close(dw, {38, 48, 68, 78}, 0.0);
  expect_close(db, {11}, 0.0);
  // dbias may be null.
  {
    Conv2dBackwardFilter<T> k;
    k.dweight = dw.data(), k.dbias = static_cast<T*>(nullptr), k.dout = dout.data(), k.inp = s.x.data();
    k.g = g;
    naive::conv2d_backward_filter(k);
  }
  expect_close(dw, {75, 95, 135, 155}, 0.0);
}

TYPED_TEST(KernelsCpu, Conv2dBackwardSameStride2) {
  using T = TypeParam;
  SmallConv<T> s;
  const Conv2dGeometry g = conv2d_geometry(1, 3, 3, 1, 1, 2, 2, 2, 2, Padding::Same);
  const std::vector<T> dout = vec<T>({1, 2, 3, 4});  // (1,2,2,1)
  // The four windows (rows {0,1} or {2}, columns {0,1} or {2}) do not overlap, so each input
  // gets one dout * w term: top-left block 1*w, x[0][2] = 2*1, x[1][2] = 2*3, x[2][0] = 3*1,
  // x[2][1] = 3*2, x[2][2] = 4*1.
  std::vector<T> dx(9);
  {
    Conv2dBackwardData<T> k;
    k.dinp = dx.data(), k.dout = dout.data(), k.weight = s.w.data(), k.g = g;
    naive::conv2d_backward_data(k);
  }
  expect_close(dx, {1, 2, 2, 3, 4, 6, 3, 6, 4}, 0.0);
  // dw[0][0] = 1*x00 + 2*x02 + 3*x20 + 4*x22 = 1 + 6 + 21 + 36 = 64, dw[0][1] = 1*2 + 3*8 = 26
  // (the other two terms are padding), dw[1][0] = 1*4 + 2*6 = 16, dw[1][1] = 1*5.
  std::vector<T> dw(4, T(0)), db(1, T(0));
  {
    Conv2dBackwardFilter<T> k;
    k.dweight = dw.data(), k.dbias = db.data(), k.dout = dout.data(), k.inp = s.x.data(), k.g = g;
    naive::conv2d_backward_filter(k);
  }
  expect_close(dw, {64, 26, 16, 5}, 0.0);
  expect_close(db, {10}, 0.0);
}

TYPED_TEST(KernelsCpu, Conv2dPointwiseMultiChannel) {
  using T = TypeParam;
  // 1x1 kernel, stride 1, no padding: a plain GEMM over pixels. Image (1,1,2,C=2) with pixels
  // (1,2) and (3,4); w (1,1,2,3) = [[1,0,2],[0,1,-1]]; bias (0,0,1).
  const std::vector<T> x = vec<T>({1, 2, 3, 4}), w = vec<T>({1, 0, 2, 0, 1, -1}), bias = vec<T>({0, 0, 1});
  const Conv2dGeometry g = conv2d_geometry(1, 1, 2, 2, 3, 1, 1, 1, 1, Padding::Valid);
  // pixel 0: (1, 2, 1*2 - 2) + bias = (1, 2, 1); pixel 1: (3, 4, 6 - 4) + bias = (3, 4, 3).
  std::vector<T> out(6);
  {
    Conv2dForward<T> k;
    k.out = out.data(), k.inp = x.data(), k.weight = w.data(), k.bias = bias.data(), k.g = g;
    naive::conv2d_forward(k);
  }
  expect_close(out, {1, 2, 1, 3, 4, 3}, 0.0);
  // dx = dout w^T: pixel 0 dout (1,1,1) -> (1+0+2, 0+1-1) = (3, 0); pixel 1 dout (1,0,0) -> (1, 0).
  const std::vector<T> dout = vec<T>({1, 1, 1, 1, 0, 0});
  std::vector<T> dx(4);
  {
    Conv2dBackwardData<T> k;
    k.dinp = dx.data(), k.dout = dout.data(), k.weight = w.data(), k.g = g;
    naive::conv2d_backward_data(k);
  }
  expect_close(dx, {3, 0, 1, 0}, 0.0);
  // dw = x^T dout: row c=0: 1*(1,1,1) + 3*(1,0,0) = (4,1,1); row c=1: 2*(1,1,1) + 4*(1,0,0) = (6,2,2).
  std::vector<T> dw(6, T(0)), db(3, T(0));
  {
    Conv2dBackwardFilter<T> k;
    k.dweight = dw.data(), k.dbias = db.data(), k.dout = dout.data(), k.inp = x.data(), k.g = g;
    naive::conv2d_backward_filter(k);
  }
  expect_close(dw, {4, 1, 1, 6, 2, 2}, 0.0);
  expect_close(db, {2, 1, 1}, 0.0);
}

// ---------------------------------------------------------------------------------------------
// pool.h
// ---------------------------------------------------------------------------------------------

TYPED_TEST(KernelsCpu, MaxPoolSamePaddingNeverWins) {
  using T = TypeParam;
  // 3x3 all negative, pool 2x2 stride 2 same: output 2x2, the one row/column of padding after.
  // If padding counted as 0 it would win every window but the first.
  const std::vector<T> x = vec<T>({-1, -2, -3, -4, -5, -6, -7, -8, -9});
  const Pool2dGeometry g = pool2d_geometry(1, 3, 3, 1, 2, 2, 2, 2, Padding::Same);
  ASSERT_EQ(g.HO, 2);
  ASSERT_EQ(g.pad_top, 0);
  std::vector<T> out(4);
  std::vector<int32_t> arg(4);
  {
    Maxpool2dForward<T> k;
    k.out = out.data(), k.argmax = arg.data(), k.inp = x.data(), k.g = g;
    naive::maxpool2d_forward(k);
  }
  // windows: {-1,-2,-4,-5} -> -1 at 0; {-3,-6} -> -3 at 2; {-7,-8} -> -7 at 6; {-9} -> -9 at 8.
  expect_close(out, {-1, -3, -7, -9}, 0.0);
  EXPECT_EQ(arg, (std::vector<int32_t>{0, 2, 6, 8}));
  std::vector<T> dx(9, T(99));
  const std::vector<T> dout = vec<T>({1, 2, 3, 4});
  {
    Maxpool2dBackward<T> k;
    k.dinp = dx.data(), k.dout = dout.data(), k.argmax = arg.data(), k.g = g;
    naive::maxpool2d_backward(k);
  }
  expect_close(dx, {1, 0, 2, 0, 0, 0, 3, 0, 4}, 0.0);
}

TYPED_TEST(KernelsCpu, MaxPoolOverlappingWindowsTiesAndPaddingBefore) {
  using T = TypeParam;
  // One row x = [2, 5, 5], pool (1,3), stride 1, same: total padding 2, one before, one after.
  // Windows [pad,2,5], [2,5,5], [5,5,pad]: all 5, and the first maximum is always index 1.
  const std::vector<T> x = vec<T>({2, 5, 5});
  const Pool2dGeometry g = pool2d_geometry(1, 1, 3, 1, 1, 3, 1, 1, Padding::Same);
  ASSERT_EQ(g.WO, 3);
  ASSERT_EQ(g.pad_left, 1);
  std::vector<T> out(3);
  std::vector<int32_t> arg(3);
  {
    Maxpool2dForward<T> k;
    k.out = out.data(), k.argmax = arg.data(), k.inp = x.data(), k.g = g;
    naive::maxpool2d_forward(k);
  }
  expect_close(out, {5, 5, 5}, 0.0);
  EXPECT_EQ(arg, (std::vector<int32_t>{1, 1, 1}));
  // The three windows overlap: index 1 collects 1 + 10 + 100.
  const std::vector<T> dout = vec<T>({1, 10, 100});
  std::vector<T> dx(3, T(-1));
  {
    Maxpool2dBackward<T> k;
    k.dinp = dx.data(), k.dout = dout.data(), k.argmax = arg.data(), k.g = g;
    naive::maxpool2d_backward(k);
  }
  expect_close(dx, {0, 111, 0}, 0.0);
}

TYPED_TEST(KernelsCpu, MaxPoolChannelsAreIndependent) {
  using T = TypeParam;
  // Image (1,2,C=2): pixel 0 = (1, 5), pixel 1 = (2, 4); pool (1,2) valid.
  const std::vector<T> x = vec<T>({1, 5, 2, 4});
  const Pool2dGeometry g = pool2d_geometry(1, 1, 2, 2, 1, 2, 1, 2, Padding::Valid);
  std::vector<T> out(2);
  std::vector<int32_t> arg(2);
  {
    Maxpool2dForward<T> k;
    k.out = out.data(), k.argmax = arg.data(), k.inp = x.data(), k.g = g;
    naive::maxpool2d_forward(k);
  }
  expect_close(out, {2, 5}, 0.0);
  EXPECT_EQ(arg, (std::vector<int32_t>{1, 0}));
  const std::vector<T> dout = vec<T>({7, 9});
  std::vector<T> dx(4);
  {
    Maxpool2dBackward<T> k;
    k.dinp = dx.data(), k.dout = dout.data(), k.argmax = arg.data(), k.g = g;
    naive::maxpool2d_backward(k);
  }
  expect_close(dx, {0, 9, 7, 0}, 0.0);
}

TYPED_TEST(KernelsCpu, PoolAndConvValidWindowLargerThanInputHasNoOutput) {
  // Valid, input 1 < window 2 with stride 2: (1 - 2) / 2 + 1 would truncate to 1; Keras has no output.
  EXPECT_EQ(pool2d_geometry(1, 1, 1, 1, 2, 2, 2, 2, Padding::Valid).HO, 0);
  EXPECT_LE(conv2d_geometry(1, 1, 1, 1, 1, 2, 2, 2, 2, Padding::Valid).WO, 0);
}

TYPED_TEST(KernelsCpu, MaxPoolAllMinusInfinityStillPointsInsideTheImage) {
  using T = TypeParam;
  const T inf = std::numeric_limits<T>::infinity();
  const std::vector<T> x = {-inf, -inf};
  const Pool2dGeometry g = pool2d_geometry(1, 1, 2, 1, 1, 2, 1, 2, Padding::Valid);
  std::vector<T> out(1);
  std::vector<int32_t> arg(1, -7);
  {
    Maxpool2dForward<T> k;
    k.out = out.data(), k.argmax = arg.data(), k.inp = x.data(), k.g = g;
    naive::maxpool2d_forward(k);
  }
  EXPECT_EQ(out[0], -inf);
  EXPECT_EQ(arg[0], 0);
}

// Max pooling as a loop nest over the padded window, padding as -infinity.
// ---------------------------------------------------------------------------------------------
// dropout.h
// ---------------------------------------------------------------------------------------------

// Keep fraction over n = 1e5 draws at keep probability 0.75: the binomial standard deviation
// is sqrt(0.75 * 0.25 / 1e5) = 0.0014; allow five of them.
constexpr double kKeepFractionTol = 0.007;

TYPED_TEST(KernelsCpu, DropoutRateZeroKeepsEverything) {
  using T = TypeParam;
  const std::vector<T> x = vec<T>({1, -2, 3.5, 0, 7, -0.25, 9});
  std::vector<T> out(x.size()), dx(x.size()), mask(x.size());
  {
    DropoutForward<T> k;
    k.out = out.data(), k.inp = x.data(), k.n = int64_t(x.size()), k.rate = 0.0f, k.seed = 42, k.offset = 3;
    naive::dropout_forward(k);
  }
  EXPECT_EQ(out, x);
  {
    DropoutBackward<T> k;
    k.dinp = dx.data(), k.dout = x.data(), k.n = int64_t(x.size()), k.rate = 0.0f, k.seed = 42, k.offset = 3;
    naive::dropout_backward(k);
  }
  EXPECT_EQ(dx, x);
  {
    DropoutMask<T> k;
    k.mask = mask.data(), k.n = int64_t(mask.size()), k.rate = 0.0f, k.seed = 42, k.offset = 3;
    naive::dropout_mask(k);
  }
  EXPECT_EQ(mask, std::vector<T>(x.size(), T(1)));
}

TYPED_TEST(KernelsCpu, DropoutKeepsExactlyWherePhiloxUniformIsAtLeastRate) {
  using T = TypeParam;
  const int64_t n = 1001;  // not a multiple of the 4 words of a Philox block
  const float rate = 0.3f;
  const uint64_t seed = 1234, offset = 7;
  const T scale = T(1) / (T(1) - T(rate));
  const auto x = random_values<T>(n, 5);
  std::vector<T> out(n);
  {
    DropoutForward<T> k;
    k.out = out.data(), k.inp = x.data(), k.n = n, k.rate = rate, k.seed = seed, k.offset = offset;
    naive::dropout_forward(k);
  }
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = philox_uniform(seed, offset, uint64_t(i)) >= rate;
    kept += keep;
    ASSERT_EQ(out[i], keep ? x[i] * scale : T(0)) << "at " << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, n);
}

TYPED_TEST(KernelsCpu, DropoutKeepFractionAndScale) {
  using T = TypeParam;
  const int64_t n = 100000;
  std::vector<T> ones(n, T(1)), out(n);
  // rate 0.25: kept values are 1 / 0.75.
  {
    DropoutForward<T> k;
    k.out = out.data(), k.inp = ones.data(), k.n = n, k.rate = 0.25f, k.seed = 2024, k.offset = 0;
    naive::dropout_forward(k);
  }
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (out[i] != T(0)) {
      ++kept;
      ASSERT_EQ(out[i], T(1) / T(0.75)) << "at " << i;
    }
  }
  EXPECT_NEAR(double(kept) / double(n), 0.75, kKeepFractionTol);
  // rate 0.5: the scale is exactly 2.
  const auto x = random_values<T>(n, 6);
  {
    DropoutForward<T> k;
    k.out = out.data(), k.inp = x.data(), k.n = n, k.rate = 0.5f, k.seed = 2024, k.offset = 1;
    naive::dropout_forward(k);
  }
  for (int64_t i = 0; i < n; ++i) ASSERT_TRUE(out[i] == T(0) || out[i] == T(2) * x[i]) << "at " << i;
}

TYPED_TEST(KernelsCpu, DropoutBackwardUsesTheForwardMask) {
  using T = TypeParam;
  const int64_t n = 40000;  // above the one-thread limit
  const float rate = 0.4f;
  const T scale = T(1) / (T(1) - T(rate));
  std::vector<T> x(n), dout(n), out(n), dx(n);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = T(1 + i % 3);     // nonzero, so a zero output means dropped
    dout[i] = T(2 + i % 5);  // nonzero, so a zero gradient means dropped
  }
  {
    DropoutForward<T> k;
    k.out = out.data(), k.inp = x.data(), k.n = n, k.rate = rate, k.seed = 77, k.offset = 11;
    naive::dropout_forward(k);
  }
  {
    DropoutBackward<T> k;
    k.dinp = dx.data(), k.dout = dout.data(), k.n = n, k.rate = rate, k.seed = 77, k.offset = 11;
    naive::dropout_backward(k);
  }
  for (int64_t i = 0; i < n; ++i) {
    const bool kept = out[i] != T(0);
    ASSERT_EQ(dx[i], kept ? dout[i] * scale : T(0)) << "at " << i;
  }
}

TYPED_TEST(KernelsCpu, DropoutMaskAgreesWithForwardOnOnes) {
  using T = TypeParam;
  const int64_t n = 1027;
  std::vector<T> ones(n, T(1)), out(n), mask(n), other(n);
  {
    DropoutForward<T> k;
    k.out = out.data(), k.inp = ones.data(), k.n = n, k.rate = 0.2f, k.seed = 9, k.offset = 4;
    naive::dropout_forward(k);
  }
  {
    DropoutMask<T> k;
    k.mask = mask.data(), k.n = n, k.rate = 0.2f, k.seed = 9, k.offset = 4;
    naive::dropout_mask(k);
  }
  EXPECT_EQ(mask, out);
  // Another draw offset gives another mask.
  {
    DropoutMask<T> k;
    k.mask = other.data(), k.n = n, k.rate = 0.2f, k.seed = 9, k.offset = 5;
    naive::dropout_mask(k);
  }
  EXPECT_NE(mask, other);
}

// Spatial dropout: a channel of a sample is kept or dropped at every position together, by
// dropout_mask's element n*C + c.
TYPED_TEST(KernelsCpu, SpatialDropoutDropsWholeChannels) {
  using T = TypeParam;
  const int64_t N = 3, S = 7, C = 5;
  std::vector<T> x(N * S * C), out(N * S * C), mask(N * C), back(N * S * C);
  for (size_t i = 0; i < x.size(); ++i) x[i] = T(1) + T(i % 11);
  {
    SpatialDropoutForward<T> k;
    k.out = out.data(), k.inp = x.data(), k.N = N, k.S = S, k.C = C, k.rate = 0.4f, k.seed = 21, k.offset = 8;
    naive::spatial_dropout_forward(k);
  }
  {
    DropoutMask<T> k;
    k.mask = mask.data(), k.n = N * C, k.rate = 0.4f, k.seed = 21, k.offset = 8;
    naive::dropout_mask(k);
  }
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = (n * S + s) * C + c;
        EXPECT_EQ(out[i], x[i] * mask[n * C + c]) << n << " " << s << " " << c;
      }
    }
  }
  // Backward applies the same mask to the gradient.
  {
    SpatialDropoutBackward<T> k;
    k.dinp = back.data(), k.dout = x.data(), k.N = N, k.S = S, k.C = C, k.rate = 0.4f, k.seed = 21;
    k.offset = 8;
    naive::spatial_dropout_backward(k);
  }
  EXPECT_EQ(back, out);
  {
    SpatialDropoutForward<T> k;
    k.out = out.data(), k.inp = x.data(), k.N = N, k.S = S, k.C = C, k.rate = 0.0f, k.seed = 21, k.offset = 8;
    naive::spatial_dropout_forward(k);
  }
  EXPECT_EQ(out, x);
}

// ---------------------------------------------------------------------------------------------
// pool.h: global average pooling
// ---------------------------------------------------------------------------------------------

TYPED_TEST(KernelsCpu, GlobalAveragePoolByHand) {
  using T = TypeParam;
  // (N=2, S=3, C=2): sample 0 channel 0 = 1, 2, 6 -> 3; channel 1 = -1, 0, 4 -> 1; sample 1 = 0.5, 0.5, 0.5
  // -> 0.5
  const std::vector<T> x = vec<T>({1, -1, 2, 0, 6, 4, 0.5, 3, 0.5, 3, 0.5, 3});
  std::vector<T> out(4), dinp(12);
  {
    GlobalAvgpoolForward<T> k;
    k.out = out.data(), k.inp = x.data(), k.N = 2, k.S = 3, k.C = 2;
    naive::global_avgpool_forward(k);
  }
  expect_close(out, {3, 1, 0.5, 3}, tol<T>());
  const std::vector<T> dout = vec<T>({3, -6, 1.5, 0});
  {
    GlobalAvgpoolBackward<T> k;
    k.dinp = dinp.data(), k.dout = dout.data(), k.N = 2, k.S = 3, k.C = 2;
    naive::global_avgpool_backward(k);
  }
  expect_close(dinp, {1, -2, 1, -2, 1, -2, 0.5, 0, 0.5, 0, 0.5, 0}, tol<T>());
}

// ---------------------------------------------------------------------------------------------
// softmax.h: the sigmoid + binary cross-entropy
// ---------------------------------------------------------------------------------------------

TYPED_TEST(KernelsCpu, SigmoidCrossEntropyByHand) {
  using T = TypeParam;
  // loss = -(y log p + (1 - y) log(1 - p)), p = sigmoid(z):
  //   z = 0, y = 1: log 2 = 0.6931471805599453; z = 2, y = 0: 2 + log(1 + e^-2) = 2.1269280110429727;
  //   z = -30, y = 0: log(1 + e^-30) = 9.357622968839299e-14 (no overflow, no clipping).
  const std::vector<T> z = vec<T>({0, 2, -30}), y = vec<T>({1, 0, 0});
  std::vector<T> losses(3), p(3), dz(3);
  {
    SigmoidXentForward<T> k;
    k.losses = losses.data(), k.probs = p.data(), k.logits = z.data(), k.targets = y.data(), k.N = 3, k.K = 1;
    naive::sigmoid_xent_forward(k);
  }
  expect_close(losses, {0.6931471805599453, 2.1269280110429727, 9.357622968839299e-14}, tol<T>());
  expect_close(p, {0.5, 0.8807970779778823, 9.357622968839299e-14}, tol<T>());
  const std::vector<T> dl = vec<T>({1, 0.5, 1});
  {
    SigmoidXentBackward<T> k;
    k.dlogits = dz.data(), k.dlosses = dl.data(), k.probs = p.data(), k.targets = y.data(), k.N = 3, k.K = 1;
    naive::sigmoid_xent_backward(k);
  }
  expect_close(dz, {-0.5, 0.44039853898894116, 9.357622968839299e-14}, tol<T>());
  // Two outputs per row: the row loss is their mean.
  std::vector<T> l2(1), p2(2);
  const std::vector<T> z2 = vec<T>({0, 2}), y2 = vec<T>({1, 0});
  {
    SigmoidXentForward<T> k;
    k.losses = l2.data(), k.probs = p2.data(), k.logits = z2.data(), k.targets = y2.data(), k.N = 1, k.K = 2;
    naive::sigmoid_xent_forward(k);
  }
  expect_close(l2, {(0.6931471805599453 + 2.1269280110429727) / 2}, tol<T>());
}

TYPED_TEST(KernelsCpu, BinaryAccuracyThresholdIsAboveOneHalf) {
  using T = TypeParam;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  // p = 0.5 is not above the threshold (predicts 0), NaN predicts 0.
  const std::vector<T> p = {T(0.5), T(0.51), T(0.2), nan, T(0.9)}, y = vec<T>({0, 1, 1, 0, 1});
  int64_t correct = -1;
  {
    BinaryAccuracyCount<T> k;
    k.correct = &correct, k.probs = p.data(), k.targets = y.data(), k.N = 5, k.K = 1;
    naive::binary_accuracy_count(k);
  }
  EXPECT_EQ(correct, 4);
}

// ---------------------------------------------------------------------------------------------
// lstm.h
// ---------------------------------------------------------------------------------------------

// One row, U = 2 units, act tanh, rec_act sigmoid. z = [z_i | z_f | z_c | z_o] with
// unit 0: z = (0.5, -0.5, 1, 2), c_prev = 0.3;  unit 1: z = 0, c_prev = -0.4.
//   unit 0: i = s(0.5) = 0.6224593312018546, f = s(-0.5) = 0.3775406687981454,
//           g = tanh(1) = 0.7615941559557649, o = s(2) = 0.8807970779778823,
//           c = f*0.3 + i*g = 0.1132622006394436 + 0.4740613889634663 = 0.5873235896029100,
//           h = o * tanh(c) = 0.8807970779778823 * 0.5279636... = 0.46503265006796785
//   unit 1: i = f = o = 0.5, g = 0, c = 0.5 * -0.4 = -0.2, h = 0.5 * tanh(-0.2) = -0.098687660112452
template <typename T>
struct LstmRow {
  std::vector<T> z = vec<T>({0.5, 0, -0.5, 0, 1, 0, 2, 0});
  std::vector<T> c_prev = vec<T>({0.3, -0.4});
};

TYPED_TEST(KernelsCpu, LstmCellForwardOneRow) {
  using T = TypeParam;
  LstmRow<T> r;
  std::vector<T> h(2), c(2), gates(8);
  {
    LstmCellForward<T> k;
    k.h = h.data(), k.c = c.data(), k.gates = gates.data(), k.z = r.z.data(), k.c_prev = r.c_prev.data();
    k.M = 1, k.U = 2, k.act = Activation::Tanh, k.rec_act = Activation::Sigmoid;
    naive::lstm_cell_forward(k);
  }
  expect_close(
      gates,
      {0.6224593312018546, 0.5, 0.3775406687981454, 0.5, 0.7615941559557649, 0, 0.8807970779778823, 0.5},
      tol<T>());
  expect_close(c, {0.58732358960291, -0.2}, tol<T>());
  expect_close(h, {0.46503265006796785, -0.098687660112452}, tol<T>());
}

// Backward of the row above with dh = (1, 2), dc = (0.5, -1):
//   unit 0: a = tanh(c) = 0.5279636, dc_total = 0.5 + 1 * o * (1 - a^2) = 1.1352747311897753,
//     dz_i = dc_total*g * i(1-i) = 0.20318858079796848, dz_f = dc_total*0.3 * f(1-f) = 0.08003813285947933,
//     dz_c = dc_total*i * (1-g^2) = 0.2967800551455091, dz_o = 1*a * o(1-o) = 0.05543325072379071,
//     dc_prev = dc_total * f = 0.42861238128302254
//   unit 1: a = tanh(-0.2), dc_total = -1 + 2 * 0.5 * (1 - a^2) = -0.038957017033883434,
//     dz_i = dc_total * g(=0) = 0, dz_f = dc_total * -0.4 * 0.25 = 0.0038957017033883438,
//     dz_c = dc_total * 0.5 * 1 = -0.019478508516941717, dz_o = 2*a * 0.25 = -0.098687660112452,
//     dc_prev = dc_total * 0.5 = -0.019478508516941717
TYPED_TEST(KernelsCpu, LstmCellBackwardOneRow) {
  using T = TypeParam;
  LstmRow<T> r;
  std::vector<T> h(2), c(2), gates(8), dz(8), dc_prev(2);
  {
    LstmCellForward<T> k;
    k.h = h.data(), k.c = c.data(), k.gates = gates.data(), k.z = r.z.data(), k.c_prev = r.c_prev.data();
    k.M = 1, k.U = 2, k.act = Activation::Tanh, k.rec_act = Activation::Sigmoid;
    naive::lstm_cell_forward(k);
  }
  const std::vector<T> dh = vec<T>({1, 2}), dc = vec<T>({0.5, -1});
  {
    LstmCellBackward<T> k;
    k.dz = dz.data(), k.dc_prev = dc_prev.data(), k.dh = dh.data(), k.dc = dc.data(), k.gates = gates.data();
    k.c = c.data(), k.c_prev = r.c_prev.data(), k.M = 1, k.U = 2, k.act = Activation::Tanh;
    k.rec_act = Activation::Sigmoid;
    naive::lstm_cell_backward(k);
  }
  expect_close(dz,
               {0.20318858079796848, 0, 0.08003813285947933, 0.0038957017033883438, 0.2967800551455091,
                -0.019478508516941717, 0.05543325072379071, -0.098687660112452},
               tol<T>());
  expect_close(dc_prev, {0.42861238128302254, -0.019478508516941717}, tol<T>());
}

// c_prev null and dc null mean zeros; dc_prev null is skipped. Unit 0 of the row above with
// c_prev = 0: c = i*g = 0.47406138896346633, h = o * tanh(c) = 0.3888498844368542; backward with
// dh = 1: dc_total = o * (1 - tanh(c)^2) = 0.709129577702238, dz = (dc_total*g*i(1-i),
// 0, dc_total*i*(1-g^2), tanh(c)*o(1-o)) = (0.12691820626023823, 0, 0.18537848979975355,
// 0.04635204245283581).
TYPED_TEST(KernelsCpu, LstmCellNullStatesMeanZeros) {
  using T = TypeParam;
  const std::vector<T> z = vec<T>({0.5, -0.5, 1, 2});
  std::vector<T> h(1), c(1), gates(4), dz(4);
  {
    LstmCellForward<T> k;
    k.h = h.data(), k.c = c.data(), k.gates = gates.data(), k.z = z.data();
    k.c_prev = static_cast<const T*>(nullptr), k.M = 1, k.U = 1, k.act = Activation::Tanh;
    k.rec_act = Activation::Sigmoid;
    naive::lstm_cell_forward(k);
  }
  expect_close(c, {0.47406138896346633}, tol<T>());
  expect_close(h, {0.3888498844368542}, tol<T>());
  const std::vector<T> dh = vec<T>({1});
  {
    LstmCellBackward<T> k;
    k.dz = dz.data(), k.dc_prev = static_cast<T*>(nullptr), k.dh = dh.data();
    k.dc = static_cast<const T*>(nullptr), k.gates = gates.data(), k.c = c.data();
    k.c_prev = static_cast<const T*>(nullptr), k.M = 1, k.U = 1, k.act = Activation::Tanh;
    k.rec_act = Activation::Sigmoid;
    naive::lstm_cell_backward(k);
  }
  expect_close(dz, {0.12691820626023823, 0, 0.18537848979975355, 0.04635204245283581}, tol<T>());
}

// Keras 2 ConvLSTM2D gates: hard_sigmoid. z = (1, -1, 0.5, 3), c_prev = 2:
//   i = 0.2+0.5 = 0.7, f = 0.3, g = tanh(0.5) = 0.46211715726000974, o = clip(1.1) = 1,
//   c = 0.3*2 + 0.7*g = 0.9234820100820067, h = tanh(c) = 0.7275404999335917.
// Backward with dh = 1, dc = 0: dc_total = 1 * (1 - h^2) = 0.4706848209563794,
//   dz_i = dc_total*g*0.2 = 0.04350230628515975, dz_f = dc_total*2*0.2 = 0.18827392838255178,
//   dz_c = dc_total*0.7*(1-g^2) = 0.25911830726783264, dz_o = 0 (o is clipped), dc_prev = dc_total*0.3.
TYPED_TEST(KernelsCpu, LstmCellHardSigmoidGates) {
  using T = TypeParam;
  const std::vector<T> z = vec<T>({1, -1, 0.5, 3}), c_prev = vec<T>({2});
  std::vector<T> h(1), c(1), gates(4), dz(4), dc_prev(1);
  {
    LstmCellForward<T> k;
    k.h = h.data(), k.c = c.data(), k.gates = gates.data(), k.z = z.data(), k.c_prev = c_prev.data(), k.M = 1;
    k.U = 1, k.act = Activation::Tanh, k.rec_act = Activation::HardSigmoid;
    naive::lstm_cell_forward(k);
  }
  expect_close(gates, {0.7, 0.3, 0.46211715726000974, 1}, tol<T>());
  expect_close(c, {0.9234820100820067}, tol<T>());
  expect_close(h, {0.7275404999335917}, tol<T>());
  const std::vector<T> dh = vec<T>({1}), dc = vec<T>({0});
  {
    LstmCellBackward<T> k;
    k.dz = dz.data(), k.dc_prev = dc_prev.data(), k.dh = dh.data(), k.dc = dc.data(), k.gates = gates.data();
    k.c = c.data(), k.c_prev = c_prev.data(), k.M = 1, k.U = 1, k.act = Activation::Tanh;
    k.rec_act = Activation::HardSigmoid;
    naive::lstm_cell_backward(k);
  }
  expect_close(dz, {0.04350230628515975, 0.18827392838255178, 0.25911830726783264, 0}, tol<T>());
  expect_close(dc_prev, {0.1412054462869138}, tol<T>());
}

// The loss L = sum(h * wh) + sum(c * wc) of one cell step; its gradient with respect to z and
// c_prev is what backward returns for dh = wh, dc = wc.
TEST(KernelsCpuFiniteDifference, LstmCellBackward) {
  const int64_t M = 3, U = 4;
  const auto z0 = random_values<double>(M * 4 * U, 31);
  const auto c_prev0 = random_values<double>(M * U, 32);
  const auto wh = random_values<double>(M * U, 33);
  const auto wc = random_values<double>(M * U, 34);
  const auto loss = [&](const std::vector<double>& z, const std::vector<double>& c_prev) {
    std::vector<double> h(M * U), c(M * U), gates(M * 4 * U);
    {
      LstmCellForward<double> k;
      k.h = h.data(), k.c = c.data(), k.gates = gates.data(), k.z = z.data(), k.c_prev = c_prev.data(),
      k.M = M;
      k.U = U, k.act = Activation::Tanh, k.rec_act = Activation::Sigmoid;
      naive::lstm_cell_forward(k);
    }
    double L = 0;
    for (int64_t k = 0; k < M * U; ++k) L += h[k] * wh[k] + c[k] * wc[k];
    return L;
  };
  std::vector<double> h(M * U), c(M * U), gates(M * 4 * U), dz(M * 4 * U), dc_prev(M * U);
  {
    LstmCellForward<double> k;
    k.h = h.data(), k.c = c.data(), k.gates = gates.data(), k.z = z0.data(), k.c_prev = c_prev0.data(),
    k.M = M;
    k.U = U, k.act = Activation::Tanh, k.rec_act = Activation::Sigmoid;
    naive::lstm_cell_forward(k);
  }
  {
    LstmCellBackward<double> k;
    k.dz = dz.data(), k.dc_prev = dc_prev.data(), k.dh = wh.data(), k.dc = wc.data(), k.gates = gates.data();
    k.c = c.data(), k.c_prev = c_prev0.data(), k.M = M, k.U = U, k.act = Activation::Tanh;
    k.rec_act = Activation::Sigmoid;
    naive::lstm_cell_backward(k);
  }
  const double step = 1e-5;
  for (size_t k = 0; k < z0.size(); ++k) {
    auto zp = z0, zm = z0;
    zp[k] += step;
    zm[k] -= step;
    EXPECT_NEAR(dz[k], (loss(zp, c_prev0) - loss(zm, c_prev0)) / (2 * step), kFiniteDiffTol) << "dz " << k;
  }
  for (size_t k = 0; k < c_prev0.size(); ++k) {
    auto cp = c_prev0, cm = c_prev0;
    cp[k] += step;
    cm[k] -= step;
    EXPECT_NEAR(dc_prev[k], (loss(z0, cp) - loss(z0, cm)) / (2 * step), kFiniteDiffTol) << "dc_prev " << k;
  }
}

// ---------------------------------------------------------------------------------------------
// batchnorm.h
// ---------------------------------------------------------------------------------------------

// (M=4, C=2): channel 0 is 1, 2, 3, 4; channel 1 is constant 5. eps = 1e-3f, which the
// kernel receives as the float 0.0010000000474974513 (the hand values below use that number).
//   channel 0: mean 2.5, biased var (2.25+0.25+0.25+2.25)/4 = 1.25,
//              invstd = 1/sqrt(1.25 + eps) = 0.8940696346260607;
//              gamma 2, beta 0.5: y = 2*(x-2.5)*invstd + 0.5
//   channel 1: mean 5, var 0, invstd = 1/sqrt(eps) = 31.622775850683176; y = beta = -1.
template <typename T>
struct BatchNormCase {
  std::vector<T> x = vec<T>({1, 5, 2, 5, 3, 5, 4, 5});
  std::vector<T> gamma = vec<T>({2, 1.5});
  std::vector<T> beta = vec<T>({0.5, -1});
};

TYPED_TEST(KernelsCpu, BatchNormForwardTrainOnFourValues) {
  using T = TypeParam;
  BatchNormCase<T> b;
  std::vector<T> out(8), mean(2), var(2), invstd(2);
  {
    BatchnormForwardTrain<T> k;
    k.out = out.data(), k.mean = mean.data(), k.var = var.data(), k.invstd = invstd.data(),
    k.inp = b.x.data();
    k.gamma = b.gamma.data(), k.beta = b.beta.data(), k.M = 4, k.C = 2, k.eps = 1e-3f;
    naive::batchnorm_forward_train(k);
  }
  expect_close(mean, {2.5, 5}, tol<T>());
  expect_close(var, {1.25, 0}, tol<T>());
  expect_close(invstd, {0.8940696346260607, 31.622775850683176}, tol<T>());
  expect_close(
      out, {-2.1822089038781822, -1, -0.3940696346260607, -1, 1.3940696346260606, -1, 3.1822089038781822, -1},
      tol<T>());
}

// Backward of the case above with dy = (1, 0, 0, 0) on channel 0 and (0, 1, 0, -1) on channel 1:
//   channel 0: xhat = (-1.5, -0.5, 0.5, 1.5) * invstd, sum(dy) = 1, sum(dy*xhat) = -1.5*invstd =
//     -1.3411044519390911; dx = 2*invstd/4 * (4*dy - 1 - xhat*sum(dy*xhat)) =
//     (0.5370849963706422, -0.7150413025025133, -0.1790283321235474, 0.35698463825541854)
//   channel 1: xhat = 0, sum(dy) = 0: dx = 1.5 * invstd * dy = (0, 47.43416377602476, 0, -47.43...)
//   dgamma += (-1.3411044519390911, 0), dbeta += (1, 0), from a start of (1, 1).
TYPED_TEST(KernelsCpu, BatchNormBackwardOnFourValues) {
  using T = TypeParam;
  BatchNormCase<T> b;
  std::vector<T> out(8), mean(2), var(2), invstd(2);
  {
    BatchnormForwardTrain<T> k;
    k.out = out.data(), k.mean = mean.data(), k.var = var.data(), k.invstd = invstd.data(),
    k.inp = b.x.data();
    k.gamma = b.gamma.data(), k.beta = b.beta.data(), k.M = 4, k.C = 2, k.eps = 1e-3f;
    naive::batchnorm_forward_train(k);
  }
  const std::vector<T> dy = vec<T>({1, 0, 0, 1, 0, 0, 0, -1});
  std::vector<T> dx(8), dgamma(2, T(1)), dbeta(2, T(1));
  {
    BatchnormBackward<T> k;
    k.dinp = dx.data(), k.dgamma = dgamma.data(), k.dbeta = dbeta.data(), k.dout = dy.data();
    k.inp = b.x.data(), k.mean = mean.data(), k.invstd = invstd.data(), k.gamma = b.gamma.data(), k.M = 4;
    k.C = 2;
    naive::batchnorm_backward(k);
  }
  expect_close(dx,
               {0.5370849963706422, 0, -0.7150413025025133, 47.43416377602476, -0.1790283321235474, 0,
                0.35698463825541854, -47.43416377602476},
               tol<T>());
  expect_close(dgamma, {1 - 1.3411044519390911, 1}, tol<T>());
  expect_close(dbeta, {2, 1}, tol<T>());
}

TEST(KernelsCpuFiniteDifference, BatchNormBackward) {
  const int64_t M = 5, C = 3;
  const auto x0 = random_values<double>(M * C, 41);
  const auto gamma0 = random_values<double>(C, 42);
  const auto beta0 = random_values<double>(C, 43);
  const auto w = random_values<double>(M * C, 44);
  const auto loss = [&](const std::vector<double>& x, const std::vector<double>& gamma,
                        const std::vector<double>& beta) {
    std::vector<double> out(M * C), mean(C), var(C), invstd(C);
    {
      BatchnormForwardTrain<double> k;
      k.out = out.data(), k.mean = mean.data(), k.var = var.data(), k.invstd = invstd.data(),
      k.inp = x.data();
      k.gamma = gamma.data(), k.beta = beta.data(), k.M = M, k.C = C, k.eps = 1e-3f;
      naive::batchnorm_forward_train(k);
    }
    double L = 0;
    for (int64_t k = 0; k < M * C; ++k) L += out[k] * w[k];
    return L;
  };
  std::vector<double> out(M * C), mean(C), var(C), invstd(C), dx(M * C), dgamma(C, 0.0), dbeta(C, 0.0);
  {
    BatchnormForwardTrain<double> k;
    k.out = out.data(), k.mean = mean.data(), k.var = var.data(), k.invstd = invstd.data(), k.inp = x0.data();
    k.gamma = gamma0.data(), k.beta = beta0.data(), k.M = M, k.C = C, k.eps = 1e-3f;
    naive::batchnorm_forward_train(k);
  }
  {
    BatchnormBackward<double> k;
    k.dinp = dx.data(), k.dgamma = dgamma.data(), k.dbeta = dbeta.data(), k.dout = w.data(),
    k.inp = x0.data();
    k.mean = mean.data(), k.invstd = invstd.data(), k.gamma = gamma0.data(), k.M = M, k.C = C;
    naive::batchnorm_backward(k);
  }
  const double step = 1e-5;
  auto x = x0, gamma = gamma0, beta = beta0;
  for (size_t k = 0; k < x.size(); ++k) {
    x[k] += step;
    const double up = loss(x, gamma, beta);
    x[k] -= 2 * step;
    const double down = loss(x, gamma, beta);
    x[k] += step;
    EXPECT_NEAR(dx[k], (up - down) / (2 * step), kFiniteDiffTol) << "dx " << k;
  }
  for (size_t k = 0; k < size_t(C); ++k) {
    gamma[k] += step;
    const double gu = loss(x, gamma, beta);
    gamma[k] -= 2 * step;
    const double gd = loss(x, gamma, beta);
    gamma[k] += step;
    EXPECT_NEAR(dgamma[k], (gu - gd) / (2 * step), kFiniteDiffTol) << "dgamma " << k;
    beta[k] += step;
    const double bu = loss(x, gamma, beta);
    beta[k] -= 2 * step;
    const double bd = loss(x, gamma, beta);
    beta[k] += step;
    EXPECT_NEAR(dbeta[k], (bu - bd) / (2 * step), kFiniteDiffTol) << "dbeta " << k;
  }
}

TYPED_TEST(KernelsCpu, BatchNormOnManyRowsTakesTheParallelPath) {
  using T = TypeParam;
  const ParallelThreads threads;
  // M = 20000 rows (above the one-thread limit): channel 0 cycles 0, 1, 2, 3 (mean 1.5, biased
  // var (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25), channel 1 cycles 0, 2 (mean 1, var 1).
  const int64_t M = 20000, C = 2;
  std::vector<T> x(M * C), out(M * C), dy(M * C, T(1)), dx(M * C);
  for (int64_t m = 0; m < M; ++m) {
    x[m * C] = T(m % 4);
    x[m * C + 1] = T(2 * (m % 2));
  }
  const std::vector<T> gamma = vec<T>({1, 1}), beta = vec<T>({0, 0});
  std::vector<T> mean(C), var(C), invstd(C), dgamma(C, T(0)), dbeta(C, T(0));
  {
    BatchnormForwardTrain<T> k;
    k.out = out.data(), k.mean = mean.data(), k.var = var.data(), k.invstd = invstd.data(), k.inp = x.data();
    k.gamma = gamma.data(), k.beta = beta.data(), k.M = M, k.C = C, k.eps = 1e-3f;
    naive::batchnorm_forward_train(k);
  }
  expect_close(mean, {1.5, 1}, tol<T>());
  expect_close(var, {1.25, 1}, tol<T>());
  // dy = 1 everywhere: dbeta = M, dgamma = sum(xhat) = 0, and dx = 0 (a shift of every x changes
  // nothing after normalisation).
  {
    BatchnormBackward<T> k;
    k.dinp = dx.data(), k.dgamma = dgamma.data(), k.dbeta = dbeta.data(), k.dout = dy.data(),
    k.inp = x.data();
    k.mean = mean.data(), k.invstd = invstd.data(), k.gamma = gamma.data(), k.M = M, k.C = C;
    naive::batchnorm_backward(k);
  }
  expect_close(dbeta, {20000, 20000}, tol<T>());
  expect_close(dgamma, {0, 0}, tol<T>());
  expect_close(dx, std::vector<double>(M * C, 0.0), tol<T>());
}

TYPED_TEST(KernelsCpu, BatchNormForwardInfer) {
  using T = TypeParam;
  // moving mean 1, moving var 3, eps 1: y = gamma * (x - 1) / sqrt(4) + beta = 2 * (x - 1) / 2 + 0.5.
  const std::vector<T> x = vec<T>({1, 2, 3, 4}), gamma = vec<T>({2}), beta = vec<T>({0.5});
  const std::vector<T> mm = vec<T>({1}), mv = vec<T>({3});
  std::vector<T> out(4);
  {
    BatchnormForwardInfer<T> k;
    k.out = out.data(), k.inp = x.data(), k.gamma = gamma.data(), k.beta = beta.data();
    k.moving_mean = mm.data(), k.moving_var = mv.data(), k.M = 4, k.C = 1, k.eps = 1.0f;
    naive::batchnorm_forward_infer(k);
  }
  expect_close(out, {0.5, 1.5, 2.5, 3.5}, tol<T>());
}

TYPED_TEST(KernelsCpu, BatchNormUpdateMoving) {
  using T = TypeParam;
  // M = 4, momentum 0.99, batch mean 2.5 and biased var 1.25 into moving (0, 1):
  //   moving_mean = 0*0.99 + 2.5*0.01 = 0.025
  //   moving_var  = 1*0.99 + 1.25 * 4/3 * 0.01 = 0.99 + 0.016666... = 1.0066666666666666
  const std::vector<T> mean = vec<T>({2.5}), var = vec<T>({1.25});
  std::vector<T> mm = vec<T>({0}), mv = vec<T>({1});
  {
    BatchnormUpdateMoving<T> k;
    k.moving_mean = mm.data(), k.moving_var = mv.data(), k.mean = mean.data(), k.var = var.data(), k.M = 4;
    k.C = 1, k.momentum = 0.99f, k.decay = 0.01f, k.variance_factor = 4.0f / 3.0f;  // Keras 2's fused path
    naive::batchnorm_update_moving(k);
  }
  // momentum and decay arrive as floats, 1.1e-8 and 2e-10 away from 0.99 and 0.01.
  expect_close(mm, {0.025}, std::max(tol<T>(), kFloatMomentumTol));
  expect_close(mv, {1.0066666666666666}, std::max(tol<T>(), kFloatMomentumTol));
  // M == 1: the variance is used as it is: 1*0.99 + 1.25*0.01 = 1.0025.
  mv = vec<T>({1});
  {
    BatchnormUpdateMoving<T> k;
    k.moving_mean = mm.data(), k.moving_var = mv.data(), k.mean = mean.data(), k.var = var.data(), k.M = 1;
    k.C = 1, k.momentum = 0.99f, k.decay = 0.01f;
    naive::batchnorm_update_moving(k);
  }
  expect_close(mv, {1.0025}, std::max(tol<T>(), kFloatMomentumTol));
}

// ---------------------------------------------------------------------------------------------
// softmax.h
// ---------------------------------------------------------------------------------------------

TYPED_TEST(KernelsCpu, SoftmaxForwardSubtractsTheMax) {
  using T = TypeParam;
  // Row 0 = (1, 2, 3): (e^-2, e^-1, 1) / (e^-2 + e^-1 + 1). Row 1 = row 0 + 1000: the same
  // probabilities, and e^1000 would overflow without the max subtracted.
  const std::vector<T> z = vec<T>({1, 2, 3, 1001, 1002, 1003});
  std::vector<T> p(6);
  {
    SoftmaxForward<T> k;
    k.probs = p.data(), k.logits = z.data(), k.N = 2, k.K = 3;
    naive::softmax_forward(k);
  }
  expect_close(p,
               {0.09003057317038046, 0.24472847105479764, 0.6652409557748218, 0.09003057317038046,
                0.24472847105479764, 0.6652409557748218},
               tol<T>());
}

TYPED_TEST(KernelsCpu, SoftmaxBackward) {
  using T = TypeParam;
  // dz_k = p_k (dp_k - sum_j dp_j p_j). Row 0: p = (0.5, 0.5), dp = (1, 0): sum 0.5,
  // dz = (0.25, -0.25). Row 1: p = (0.25, 0.75), dp = (2, 2): sum 2, dz = 0.
  const std::vector<T> p = vec<T>({0.5, 0.5, 0.25, 0.75}), dp = vec<T>({1, 0, 2, 2});
  std::vector<T> dz(4);
  {
    SoftmaxBackward<T> k;
    k.dlogits = dz.data(), k.dprobs = dp.data(), k.probs = p.data(), k.N = 2, k.K = 2;
    naive::softmax_backward(k);
  }
  expect_close(dz, {0.25, -0.25, 0, 0}, tol<T>());
}

// Three rows, K = 2:
//   row 0: z = (0, 0), y = (1, 0): loss = log 2 = 0.6931471805599453, p = (0.5, 0.5)
//   row 1: z = (2, 0), y = (0, 1): lse = 2 + log(1 + e^-2) = 2.1269280110429727, loss = lse - 0,
//          p = (0.8807970779778823, 0.11920292202211769)
//   row 2: z = (0, 0), y = (2, 0) (not normalised): loss = 2 log 2
TYPED_TEST(KernelsCpu, SoftmaxXentForwardAndBackward) {
  using T = TypeParam;
  const std::vector<T> z = vec<T>({0, 0, 2, 0, 0, 0}), y = vec<T>({1, 0, 0, 1, 2, 0});
  std::vector<T> loss(3), p(6);
  {
    SoftmaxXentForward<T> k;
    k.losses = loss.data(), k.probs = p.data(), k.logits = z.data(), k.targets = y.data(), k.N = 3, k.K = 2;
    naive::softmax_xent_forward(k);
  }
  expect_close(loss, {0.6931471805599453, 2.1269280110429727, 2 * 0.6931471805599453}, tol<T>());
  expect_close(p, {0.5, 0.5, 0.8807970779778823, 0.11920292202211769, 0.5, 0.5}, tol<T>());
  // dz = dloss * (p * sum(y) - y) with dloss = (1, 2, 1):
  //   row 0: (0.5 - 1, 0.5) = (-0.5, 0.5); row 1: 2 * (p - (0, 1)) = (1.7615941559557646,
  //   -1.7615941559557646); row 2: (0.5*2 - 2, 0.5*2) = (-1, 1).
  const std::vector<T> dloss = vec<T>({1, 2, 1});
  std::vector<T> dz(6);
  {
    SoftmaxXentBackward<T> k;
    k.dlogits = dz.data(), k.dlosses = dloss.data(), k.probs = p.data(), k.targets = y.data(), k.N = 3,
    k.K = 2;
    naive::softmax_xent_backward(k);
  }
  expect_close(dz, {-0.5, 0.5, 1.7615941559557646, -1.7615941559557646, -1, 1}, tol<T>());
}

TYPED_TEST(KernelsCpu, SoftmaxXentDistributionTarget) {
  using T = TypeParam;
  // z = (0, 0), y = (0.25, 0.75): lse - z_k = log 2 for both classes, loss = log 2.
  const std::vector<T> z = vec<T>({0, 0}), y = vec<T>({0.25, 0.75});
  std::vector<T> loss(1), p(2);
  {
    SoftmaxXentForward<T> k;
    k.losses = loss.data(), k.probs = p.data(), k.logits = z.data(), k.targets = y.data(), k.N = 1, k.K = 2;
    naive::softmax_xent_forward(k);
  }
  expect_close(loss, {0.6931471805599453}, tol<T>());
}

TYPED_TEST(KernelsCpu, AccuracyCountFirstMaximum) {
  using T = TypeParam;
  // row 0: argmax 1 vs 1, correct; row 1: scores tie (0.5, 0.5, 0) -> 0 vs 0, correct;
  // row 2: argmax 2 vs 2, correct; row 3: 0 vs a target tie (1, 1, 0) -> 0, correct;
  // row 4: 2 vs 0, wrong. Taking the last maximum on ties would make rows 1 and 3 wrong.
  const std::vector<T> scores =
      vec<T>({0.1, 0.7, 0.2, 0.5, 0.5, 0, 0.3, 0.3, 0.4, 0.9, 0.05, 0.05, 0.1, 0.2, 0.7});
  const std::vector<T> targets = vec<T>({0, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0});
  int64_t correct = -1;
  {
    AccuracyCount<T> k;
    k.correct = &correct, k.scores = scores.data(), k.targets = targets.data(), k.N = 5, k.K = 3;
    naive::accuracy_count(k);
  }
  EXPECT_EQ(correct, 4);
}

// ---------------------------------------------------------------------------------------------
// reduce.h
// ---------------------------------------------------------------------------------------------

TYPED_TEST(KernelsCpu, SumAll) {
  using T = TypeParam;
  const std::vector<T> x = vec<T>({1, 2, 3, 4.5});
  T out = T(-1);
  {
    SumAll<T> k;
    k.out = &out, k.inp = x.data(), k.n = 4;
    naive::sum_all(k);
  }
  EXPECT_EQ(out, T(10.5));
  // 1e8 + 1 - 1e8: a float accumulator rounds 1e8 + 1 back to 1e8 (float spacing there is 8)
  // and returns 0; the double accumulator returns 1.
  const std::vector<T> y = vec<T>({1e8, 1, -1e8});
  {
    SumAll<T> k;
    k.out = &out, k.inp = y.data(), k.n = 3;
    naive::sum_all(k);
  }
  EXPECT_EQ(out, T(1));
}

TYPED_TEST(KernelsCpu, SumAllOnManyElementsTakesTheParallelPath) {
  using T = TypeParam;
  const ParallelThreads threads;
  // 100000 elements cycling 0..9: 10000 * (0 + 1 + ... + 9) = 450000, exact in float.
  const int64_t n = 100000;
  std::vector<T> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = T(i % 10);
  T out = T(0);
  {
    SumAll<T> k;
    k.out = &out, k.inp = x.data(), k.n = n;
    naive::sum_all(k);
  }
  EXPECT_EQ(out, T(450000));
}

TYPED_TEST(KernelsCpu, CopyBlock) {
  using T = TypeParam;
  // src (outer=2, src_dim=3, inner=2) = [[[0,1],[2,3],[4,5]], [[6,7],[8,9],[10,11]]];
  // copy src[:, 1:3, :] into dst (2, dst_dim=4, 2) at dst[:, 2:4, :].
  std::vector<T> src(12);
  for (int i = 0; i < 12; ++i) src[i] = T(i);
  std::vector<T> dst(16, T(-1));
  {
    CopyBlock<T> k;
    k.dst = dst.data(), k.dst_dim = 4, k.dst_start = 2, k.src = src.data(), k.src_dim = 3, k.src_start = 1;
    k.outer = 2, k.len = 2, k.inner = 2, k.accumulate = false;
    naive::copy_block(k);
  }
  expect_close(dst, {-1, -1, -1, -1, 2, 3, 4, 5, -1, -1, -1, -1, 8, 9, 10, 11}, 0.0);
  // accumulate: the same block added again.
  {
    CopyBlock<T> k;
    k.dst = dst.data(), k.dst_dim = 4, k.dst_start = 2, k.src = src.data(), k.src_dim = 3, k.src_start = 1;
    k.outer = 2, k.len = 2, k.inner = 2, k.accumulate = true;
    naive::copy_block(k);
  }
  expect_close(dst, {-1, -1, -1, -1, 4, 6, 8, 10, -1, -1, -1, -1, 16, 18, 20, 22}, 0.0);
}

// ---------------------------------------------------------------------------------------------
// optim.h
// ---------------------------------------------------------------------------------------------

// Relative comparison for the small updates below.
template <typename T>
void expect_rel(const std::vector<T>& actual, const std::vector<double>& expected, double tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_NEAR(double(actual[i]), expected[i], tolerance * std::abs(expected[i])) << "at index " << i;
  }
}

// Keras defaults lr 1e-3, beta1 0.9, beta2 0.999, eps 1e-7; w = 0, m = v = 0, g = (0.5, -2).
// Step 1: alpha = 1e-3 * sqrt(1 - 0.999) / (1 - 0.9) = 3.1622776601683816e-4
//   g = 0.5: m = 0.5*0.1 = 0.05, v = 0.25*0.001 = 2.5e-4, sqrt(v) = 0.015811388300841896,
//            w = -(0.05 * alpha) / (sqrt(v) + 1e-7) = -9.999936754846795e-4
//   g = -2:  m = -0.2, v = 4e-3, sqrt(v) = 0.06324555320336759, w = 9.9999841886367e-4
// Step 2, same g: alpha = 1e-3 * sqrt(1 - 0.999^2) / (1 - 0.9^2) = 2.3531672532745276e-4
//   g = 0.5: m = 0.05 + 0.45*0.1 = 0.095, v = 2.5e-4 + (0.25 - 2.5e-4)*0.001 = 4.9975e-4,
//            w = -9.999936754846795e-4 - 0.095*alpha/(sqrt(v) + 1e-7) = -1.9999892022502736e-3
//   g = -2:  m = -0.38, v = 7.996e-3, w = 1.999997300551311e-3
// float cannot hold 0.999: 1 - 0.999f = 9.99987e-4 is 1.3e-5 relative off 1e-3, and float v
// carries that error (w half of it, through the square root).
constexpr double kFloatAdamTol = 3e-5;

TYPED_TEST(KernelsCpu, AdamTwoStepsByHand) {
  using T = TypeParam;
  const double t = std::is_same_v<T, float> ? kFloatAdamTol : kDoubleTol;
  std::vector<T> w = vec<T>({0, 0}), m = vec<T>({0, 0}), v = vec<T>({0, 0});
  const std::vector<T> g = vec<T>({0.5, -2});
  const auto alpha = [](int step) {
    return T(1e-3 * std::sqrt(1 - std::pow(0.999, step)) / (1 - std::pow(0.9, step)));
  };
  {
    AdamUpdate<T> k;
    k.w = w.data(), k.m = m.data(), k.v = v.data(), k.g = g.data(), k.n = 2, k.alpha = alpha(1);
    k.beta1 = T(0.9), k.beta2 = T(0.999), k.eps = T(1e-7);
    naive::adam_update(k);
  }
  expect_rel(m, {0.05, -0.2}, t);
  expect_rel(v, {2.5e-4, 4e-3}, t);
  expect_rel(w, {-9.999936754846795e-4, 9.9999841886367e-4}, t);
  {
    AdamUpdate<T> k;
    k.w = w.data(), k.m = m.data(), k.v = v.data(), k.g = g.data(), k.n = 2, k.alpha = alpha(2);
    k.beta1 = T(0.9), k.beta2 = T(0.999), k.eps = T(1e-7);
    naive::adam_update(k);
  }
  expect_rel(m, {0.095, -0.38}, t);
  expect_rel(v, {4.9975e-4, 7.996e-3}, t);
  expect_rel(w, {-1.9999892022502736e-3, 1.999997300551311e-3}, t);
}

// lr 1e-3, rho 0.9, eps 0.01 (large, so the two forms differ visibly); w = 0, v = 0, g = 0.5:
//   v = 0.1 * 0.25 = 0.025, sqrt(v) = 0.15811388300841897
//   OutsideSqrt: w = -(1e-3 * 0.5) / (0.15811388300841897 + 0.01) = -2.974174357598775e-3
//   InsideSqrt:  w = -1e-3 * 0.5 / sqrt(0.035) = -2.6726124191242444e-3
TYPED_TEST(KernelsCpu, RmspropBothEpsilonForms) {
  using T = TypeParam;
  const std::vector<T> g = vec<T>({0.5});
  std::vector<T> w = vec<T>({0}), v = vec<T>({0});
  {
    RmspropUpdate<T> k;
    k.w = w.data(), k.v = v.data(), k.g = g.data(), k.n = 1, k.lr = T(1e-3), k.rho = T(0.9), k.eps = T(0.01);
    k.form = RmspropEpsilon::OutsideSqrt;
    naive::rmsprop_update(k);
  }
  expect_rel(v, {0.025}, tol<T>());
  expect_rel(w, {-2.974174357598775e-3}, tol<T>());
  w = vec<T>({0});
  v = vec<T>({0});
  {
    RmspropUpdate<T> k;
    k.w = w.data(), k.v = v.data(), k.g = g.data(), k.n = 1, k.lr = T(1e-3), k.rho = T(0.9), k.eps = T(0.01);
    k.form = RmspropEpsilon::InsideSqrt;
    naive::rmsprop_update(k);
  }
  expect_rel(v, {0.025}, tol<T>());
  expect_rel(w, {-2.6726124191242444e-3}, tol<T>());
}

TYPED_TEST(KernelsCpu, SgdStep) {
  using T = TypeParam;
  // w = (1, 2) - 0.5 * (0.5, -1) = (0.75, 2.5)
  std::vector<T> w = vec<T>({1, 2});
  const std::vector<T> g = vec<T>({0.5, -1});
  {
    SgdUpdate<T> k;
    k.w = w.data(), k.g = g.data(), k.n = 2, k.lr = T(0.5);
    naive::sgd_update(k);
  }
  expect_close(w, {0.75, 2.5}, 0.0);
}

// The multi-tensor update by hand: two tensors in one call, SGD as above with lr read from
// memory (the by-value lr is wrong on purpose); then halted: nothing moves.
TYPED_TEST(KernelsCpu, MultiTensorUpdateReadsItsScalarAndHalts) {
  using T = TypeParam;
  std::vector<T> a = vec<T>({1, 2}), b = vec<T>({3});
  const std::vector<T> ga = vec<T>({0.5, -1}), gb = vec<T>({2});
  const T lr = T(0.5);
  double halt = 0.0;
  MultiTensorUpdate<T> k;
  k.rule = UpdateRule::Sgd, k.count = 2, k.scalar = T(100), k.scalar_at = &lr, k.halt = &halt;
  k.w[0] = a.data(), k.g[0] = ga.data(), k.n[0] = 2;
  k.w[1] = b.data(), k.g[1] = gb.data(), k.n[1] = 1;
  naive::multi_tensor_update(k);
  expect_close(a, {0.75, 2.5}, 0.0);
  expect_close(b, {2.0}, 0.0);
  halt = 4.0;  // step 4 of the epoch had a loss that was not finite
  naive::multi_tensor_update(k);
  expect_close(a, {0.75, 2.5}, 0.0);
  expect_close(b, {2.0}, 0.0);
}

// The parts that the CUDA lanes kernels (conv2d forward and backward data, the ConvLSTM step)
// split one sum into: conv2d_at and conv2d_input_grad_at over parts s = 0..S-1 of S add up to
// the whole value (the bias once), for any S, grouped or not. In float64 the only difference is
// the order of the additions.
TEST(Conv2dParts, PartsSumToTheWholeValue) {
  constexpr double kOrderOnly = 1e-12;  // relative: float64 sums of at most a few hundred terms
  std::mt19937 gen(7);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  const Conv2dGeometry geometries[] = {
      conv2d_geometry(2, 5, 4, 6, 8, 3, 3, 1, 1, Padding::Same),
      conv2d_geometry(1, 7, 6, 12, 8, 3, 2, 2, 1, Padding::Same, 4),   // groups, an even kernel, a stride
      conv2d_geometry(2, 4, 4, 16, 64, 3, 3, 1, 1, Padding::Same, 4),  // the masked recurrent shape
      conv2d_geometry(1, 6, 5, 3, 5, 2, 2, 1, 2, Padding::Valid),
  };
  for (const Conv2dGeometry& g : geometries) {
    std::vector<double> x(size_t(g.N) * g.H * g.W * g.C), w(size_t(g.KH) * g.KW * g.group_channels() * g.F),
        bias(size_t(g.F)), dout(size_t(g.N) * g.HO * g.WO * g.F);
    for (std::vector<double>* v : {&x, &w, &bias, &dout}) {
      for (double& e : *v) e = uniform(gen);
    }
    for (const int S : {1, 2, 3, 4, 8, 32}) {
      for (int n = 0; n < g.N; ++n) {
        for (int ho = 0; ho < g.HO; ++ho) {
          for (int wo = 0; wo < g.WO; ++wo) {
            for (int f = 0; f < g.F; ++f) {
              const double whole = conv2d_at(x.data(), w.data(), bias.data(), g, n, ho, wo, f);
              double parts = 0.0;
              for (int s = 0; s < S; ++s)
                parts += conv2d_at(x.data(), w.data(), bias.data(), g, n, ho, wo, f, s, S);
              ASSERT_NEAR(parts, whole, kOrderOnly * (1.0 + std::fabs(whole))) << "S " << S << " f " << f;
            }
          }
        }
        for (int h = 0; h < g.H; ++h) {
          for (int wi = 0; wi < g.W; ++wi) {
            for (int c = 0; c < g.C; ++c) {
              const double whole = conv2d_input_grad_at(dout.data(), w.data(), g, n, h, wi, c);
              double parts = 0.0;
              for (int s = 0; s < S; ++s)
                parts += conv2d_input_grad_at(dout.data(), w.data(), g, n, h, wi, c, s, S);
              ASSERT_NEAR(parts, whole, kOrderOnly * (1.0 + std::fabs(whole))) << "S " << S << " c " << c;
            }
          }
        }
      }
    }
  }
}

// The fused conv + pool rows read the kernel as (KH,KW,C,F): a grouped geometry is refused,
// not miscomputed.
TEST(Conv2dPool, RefusesGroupedConvolutions) {
  Conv2dActPoolForward<float> forward;
  forward.g = conv2d_geometry(1, 4, 4, 4, 4, 3, 3, 1, 1, Padding::Same, 2);
  EXPECT_THROW(cpu::conv2d_act_pool_forward(forward), std::invalid_argument);
  EXPECT_THROW(naive::conv2d_act_pool_forward(forward), std::invalid_argument);
  Conv2dActPoolBackward<float> backward;
  backward.g = forward.g;
  EXPECT_THROW(cpu::conv2d_act_pool_backward(backward), std::invalid_argument);
  EXPECT_THROW(naive::conv2d_act_pool_backward(backward), std::invalid_argument);
}

// A pool that is not over the convolution's output (another size, or a zero stride) is refused
// with a message naming the row, before any buffer is touched (all of them are null here).
TEST(Conv2dPool, RefusesAPoolNotOverTheConvolutionsOutput) {
  Conv2dActPoolForward<float> forward;
  forward.g = conv2d_geometry(1, 6, 6, 2, 3, 3, 3, 1, 1, Padding::Valid);  // output 4x4x3
  forward.act = Activation::Relu;
  for (const Pool2dGeometry& p : {pool2d_geometry(1, 6, 6, 3, 2, 2, 2, 2, Padding::Valid),
                                  pool2d_geometry(1, 4, 4, 2, 2, 2, 2, 2, Padding::Valid),
                                  Pool2dGeometry{1, 4, 4, 3, 2, 2, 0, 2, 2, 2, 0, 0}}) {
    forward.p = p;
    Conv2dActPoolBackward<float> backward;
    backward.g = forward.g, backward.p = p, backward.act = forward.act;
    for (const auto& [row, run] : std::vector<std::pair<std::string, std::function<void()>>>{
             {"naive::conv2d_act_pool_forward", [&] { naive::conv2d_act_pool_forward(forward); }},
             {"cpu::conv2d_act_pool_forward", [&] { cpu::conv2d_act_pool_forward(forward); }},
             {"naive::conv2d_act_pool_backward", [&] { naive::conv2d_act_pool_backward(backward); }},
             {"cpu::conv2d_act_pool_backward", [&] { cpu::conv2d_act_pool_backward(backward); }},
             {"cpu::conv2d_act_pool_backward_portable",
              [&] { cpu::conv2d_act_pool_backward_portable(backward); }},
             {"cpu::conv2d_act_pool_backward_avx2", [&] { cpu::conv2d_act_pool_backward_avx2(backward); }}}) {
      try {
        run();
        ADD_FAILURE() << row << " ran a pool over " << p.H << "x" << p.W << "x" << p.C << " with strides "
                      << p.SH;
      } catch (const std::invalid_argument& e) {
        EXPECT_EQ(std::string(e.what()).rfind(row + ": the pool", 0), 0u) << e.what();
      }
    }
  }
  forward.p = pool_over(forward.g, 2, 2, 2, 2, Padding::Same);  // the check passes what pool_over gives
  EXPECT_NO_THROW(require_fusable(forward, "row"));
}

// Step t > 0 of a ConvLSTM with one time slot would overwrite h_{t-1} while reading it: refused.
TEST(ConvLstmStep, RefusesOneTimeSlotAfterTheFirstStep) {
  ConvLstmStepForward<float> k;
  k.N = 1, k.steps = 3, k.H = 2, k.W = 2, k.F = 1, k.KH = 3, k.KW = 3, k.history = 1, k.t = 1;
  EXPECT_THROW(naive::convlstm_step_forward(k), std::invalid_argument);
  EXPECT_THROW(cpu::convlstm_step_forward(k), std::invalid_argument);
}

// A dropout folds into the fused rows after relu or linear alone (backward takes act' from the
// dropped output): the rows refuse it after any other activation (the op: FusedConvPool.*).
TEST(Conv2dPool, RefusesADropoutAfterOtherActivations) {
  Conv2dActPoolForward<float> forward;
  forward.g = conv2d_geometry(1, 4, 4, 2, 2, 3, 3, 1, 1, Padding::Same);
  forward.p = pool_over(forward.g, 2, 2, 2, 2, Padding::Valid);
  forward.act = Activation::Tanh;
  forward.dropout.rate = 0.5f;
  EXPECT_THROW(cpu::conv2d_act_pool_forward(forward), std::invalid_argument);
  EXPECT_THROW(naive::conv2d_act_pool_forward(forward), std::invalid_argument);
  Conv2dActPoolBackward<float> backward;
  backward.g = forward.g, backward.p = forward.p, backward.act = Activation::Sigmoid;
  backward.dropout.rate = 0.5f;
  EXPECT_THROW(cpu::conv2d_act_pool_backward(backward), std::invalid_argument);
  EXPECT_THROW(cpu::conv2d_act_pool_backward_portable(backward), std::invalid_argument);
  EXPECT_THROW(cpu::conv2d_act_pool_backward_avx2(backward), std::invalid_argument);
  EXPECT_THROW(naive::conv2d_act_pool_backward(backward), std::invalid_argument);
}

// After a relu the CPU backward rows read the folded dropout's mask from the output: with rate r
// they give the very bits of rate 0 on the dout the Dropout layer's backward masks (the harness's
// tolerance could not see a difference in the last bit). Every row: naive draws the mask itself.
TEST(Conv2dPool, ReluDropoutBackwardIsTheMaskedGradientBitForBit) {
  const Conv2dGeometry g = conv2d_geometry(3, 13, 11, 3, 9, 3, 3, 1, 1, Padding::Same);
  const Pool2dGeometry p = pool_over(g, 2, 2, 2, 2, Padding::Valid);
  const int64_t in_n = int64_t(g.N) * g.H * g.W * g.C, w_n = int64_t(g.KH) * g.KW * g.C * g.F;
  const int64_t pooled = int64_t(p.N) * p.HO * p.WO * p.C;
  std::mt19937 gen(11);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const auto random = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = uniform(gen);
    return v;
  };
  const std::vector<float> inp = random(in_n), weight = random(w_n), bias = random(g.F),
                           dout = random(pooled);
  const PoolDropout dropped{0.5f, 0x1234, 99, nullptr};
  // Forward with and without the dropout (the same argmax), and dout through the layer's mask.
  std::vector<float> out_dropped(static_cast<size_t>(pooled)), out_kept(out_dropped.size()),
      masked(out_dropped.size());
  std::vector<int32_t> argmax(out_dropped.size());
  Conv2dActPoolForward<float> forward;
  forward.inp = inp.data(), forward.weight = weight.data(), forward.bias = bias.data(), forward.g = g,
  forward.p = p;
  forward.act = Activation::Relu, forward.argmax = argmax.data();
  forward.out = out_kept.data();
  naive::conv2d_act_pool_forward(forward);
  forward.out = out_dropped.data(), forward.dropout = dropped;
  naive::conv2d_act_pool_forward(forward);
  DropoutForward<float> mask;
  mask.out = masked.data(), mask.inp = dout.data(), mask.n = pooled, mask.rate = dropped.rate,
  mask.seed = dropped.seed, mask.offset = dropped.offset;
  naive::dropout_forward(mask);
  ASSERT_TRUE(std::count(masked.begin(), masked.end(), 0.0f) > 0) << "some elements dropped";

  using Row = void (*)(const Conv2dActPoolBackward<float>&);
  std::vector<std::pair<std::string, Row>> rows = {{"naive", naive::conv2d_act_pool_backward<float>},
                                                   {"cpu.portable", cpu::conv2d_act_pool_backward_portable}};
  if (cpu::avx2::available()) rows.push_back({"cpu.avx2", cpu::conv2d_act_pool_backward_avx2});
  for (const auto& [name, row] : rows) {
    SCOPED_TRACE(name);
    std::vector<float> dinp[2], dweight[2], dbias[2];
    for (int with_dropout = 0; with_dropout < 2; ++with_dropout) {
      dinp[with_dropout].assign(static_cast<size_t>(in_n), 7.0f);
      dweight[with_dropout].assign(static_cast<size_t>(w_n), 7.0f);
      dbias[with_dropout].assign(static_cast<size_t>(g.F), 7.0f);
      Conv2dActPoolBackward<float> backward;
      backward.dinp = dinp[with_dropout].data(), backward.dweight = dweight[with_dropout].data();
      backward.dbias = dbias[with_dropout].data(), backward.argmax = argmax.data(), backward.inp = inp.data();
      backward.weight = weight.data(), backward.g = g, backward.p = p, backward.act = Activation::Relu;
      backward.dout = with_dropout ? dout.data() : masked.data();
      backward.out = with_dropout ? out_dropped.data() : out_kept.data();
      if (with_dropout) backward.dropout = dropped;
      row(backward);
    }
    EXPECT_EQ(dinp[0], dinp[1]);
    EXPECT_EQ(dweight[0], dweight[1]);
    EXPECT_EQ(dbias[0], dbias[1]);
  }
}

// The cpu row of the fused forward (image by image through the direct convolution, in chunks
// through GEMM) gives, bit for bit, the unfused cpu kernels one after
// the other: the convolution of the whole batch, the activation, the max-pool. With and without
// argmax, on one thread and on all, with more images than threads and fewer.
TEST(Conv2dPool, CpuForwardIsTheUnfusedKernelsBitForBit) {
  struct Shape {
    int N, H, C, F;
    Activation act;
  };
  // 3x3 same convolutions, 2x2 pools: C=3 and 16 run the direct convolution, C=40 GEMM.
  const Shape shapes[] = {{5, 12, 3, 16, Activation::Relu},
                          {1, 9, 3, 16, Activation::Relu},
                          {4, 8, 16, 20, Activation::Tanh},
                          {3, 6, 40, 24, Activation::Relu}};
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const auto random = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = uniform(gen);
    return v;
  };
  for (const Shape& s : shapes) {
    const Conv2dGeometry g = conv2d_geometry(s.N, s.H, s.H, s.C, s.F, 3, 3, 1, 1, Padding::Same);
    const Pool2dGeometry p = pool_over(g, 2, 2, 2, 2, Padding::Valid);
    const int64_t z_n = int64_t(g.N) * g.HO * g.WO * g.F, pooled = int64_t(p.N) * p.HO * p.WO * p.C;
    const std::vector<float> inp = random(int64_t(g.N) * g.H * g.W * g.C),
                             weight = random(int64_t(g.KH) * g.KW * g.C * g.F), bias = random(g.F);
    for (int threads : {1, std::max(2, omp_get_max_threads())}) {
      // The same thread count both ways: OpenBLAS's GEMM blocks (hence sums) by its threads.
      struct Restore {
        int threads;
        ~Restore() { omp_set_num_threads(threads); }
      } restore{omp_get_max_threads()};
      omp_set_num_threads(threads);
      std::vector<float> z(static_cast<size_t>(z_n)), expected(static_cast<size_t>(pooled));
      std::vector<int32_t> expected_at(expected.size());
      Conv2dForward<float> conv;
      conv.out = z.data(), conv.inp = inp.data(), conv.weight = weight.data(), conv.bias = bias.data(),
      conv.g = g;
      cpu::conv2d_forward(conv);
      ActivationForward<float> activation;
      activation.out = z.data(), activation.inp = z.data(), activation.n = z_n, activation.act = s.act;
      naive::activation_forward(activation);
      Maxpool2dForward<float> pool;
      pool.out = expected.data(), pool.argmax = expected_at.data(), pool.inp = z.data(), pool.g = p;
      cpu::maxpool2d_forward(pool);
      for (bool with_argmax : {true, false}) {
        SCOPED_TRACE("N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) + " threads " +
                     std::to_string(threads) + (with_argmax ? "" : ", no argmax"));
        std::vector<float> out(expected.size(), 7.0f);
        std::vector<int32_t> at(expected.size(), -7);
        Conv2dActPoolForward<float> fused;
        fused.out = out.data(), fused.argmax = with_argmax ? at.data() : nullptr, fused.inp = inp.data(),
        fused.weight = weight.data(), fused.bias = bias.data(), fused.g = g, fused.p = p, fused.act = s.act;
        cpu::conv2d_act_pool_forward(fused);
        ASSERT_EQ(std::memcmp(out.data(), expected.data(), out.size() * sizeof(float)), 0);
        if (with_argmax) {
          ASSERT_EQ(at, expected_at);
        }
      }
    }
  }
}

}  // namespace
}  // namespace hisvid
