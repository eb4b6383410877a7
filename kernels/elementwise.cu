// CUDA versions of kernels/elementwise.h: grid-stride loops, one element per thread per
// iteration; bias_add_backward is a deterministic per-channel reduction (see
// device::column_partial_sums in kernels/cuda_context.h).
#include "kernels/cuda_context.h"
#include "kernels/elementwise.h"

namespace hisvid::cuda {

namespace {

__global__ void fill_kernel(float* out, float value, int64_t n) {
  for (const int64_t i : device::grid_stride(n)) {
    out[i] = value;
  }
}

enum class Binary : int { Add, Sub, Mul };

// out (n) = a (n) op b (n); out may alias a or b (each element is read before it is written).
__global__ void binary_kernel(float* out, const float* a, const float* b, int64_t n, Binary op) {
  for (const int64_t i : device::grid_stride(n)) {
    const float x = a[i], y = b[i];
    out[i] = op == Binary::Add ? x + y : (op == Binary::Sub ? x - y : x * y);
  }
}

__global__ void scale_kernel(float* out, const float* a, float alpha, int64_t n) {
  for (const int64_t i : device::grid_stride(n)) {
    out[i] = alpha * a[i];
  }
}

__global__ void axpy_kernel(float* y, float alpha, const float* x, int64_t n) {
  for (const int64_t i : device::grid_stride(n)) {
    y[i] += alpha * x[i];
  }
}

// out (M,C) = inp (M,C) + bias (C)
__global__ void bias_add_forward_kernel(float* out, const float* inp, const float* bias, int64_t M,
                                        int64_t C) {
  const int64_t n = M * C;
  for (const int64_t i : device::grid_stride(n)) {
    out[i] = inp[i] + bias[i % C];
  }
}

// The value summed per element by bias_add_backward: dout (M,C) itself.
struct LoadDout {
  const float* dout;  // (M,C)
  int64_t C;
  __device__ void operator()(int64_t m, int64_t c, double* values) const { values[0] = dout[m * C + c]; }
};

// partials (row_blocks, 1, C) of the column sums of dout (M,C)
__global__ void bias_partial_kernel(double* partials, const float* dout, int64_t M, int64_t C) {
  device::column_partial_sums<1>(partials, M, C, LoadDout{dout, C});
}

// dbias (C) += sum of partials (row_blocks, 1, C)
__global__ void bias_finalize_kernel(float* dbias, const double* partials, int row_blocks, int64_t C) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double sum[1];
  device::column_total<1>(sum, partials, row_blocks, C, c);
  dbias[c] += static_cast<float>(sum[0]);
}

// out (n) = act(inp (n))
__global__ void activation_forward_kernel(float* out, const float* inp, int64_t n, Activation act) {
  for (const int64_t i : device::grid_stride(n)) {
    out[i] = activate(inp[i], act);
  }
}

// dinp (n) = dout (n) * act'(x), taken from the forward output out (n)
__global__ void activation_backward_kernel(float* dinp, const float* dout, const float* out, int64_t n,
                                           Activation act) {
  for (const int64_t i : device::grid_stride(n)) {
    dinp[i] = dout[i] * activation_grad_from_output(out[i], act);
  }
}

void binary(float* out, const float* a, const float* b, int64_t n, Binary op, cudaStream_t stream) {
  if (n <= 0) return;
  binary_kernel<<<grid_blocks(n, kThreads), kThreads, 0, stream>>>(out, a, b, n, op);
  HISVID_CHECK_LAUNCH();
}

}  // namespace

void fill(const Fill<float>& k, cudaStream_t stream) {
  if (k.n <= 0) return;
  fill_kernel<<<grid_blocks(k.n, kThreads), kThreads, 0, stream>>>(k.out, k.value, k.n);
  HISVID_CHECK_LAUNCH();
}

void add(const Add<float>& k, cudaStream_t stream) { binary(k.out, k.a, k.b, k.n, Binary::Add, stream); }

void sub(const Sub<float>& k, cudaStream_t stream) { binary(k.out, k.a, k.b, k.n, Binary::Sub, stream); }

void mul(const Mul<float>& k, cudaStream_t stream) { binary(k.out, k.a, k.b, k.n, Binary::Mul, stream); }

void scale(const Scale<float>& k, cudaStream_t stream) {
  if (k.n <= 0) return;
  scale_kernel<<<grid_blocks(k.n, kThreads), kThreads, 0, stream>>>(k.out, k.a, k.alpha, k.n);
  HISVID_CHECK_LAUNCH();
}

void axpy(const Axpy<float>& k, cudaStream_t stream) {
  if (k.n <= 0) return;
  axpy_kernel<<<grid_blocks(k.n, kThreads), kThreads, 0, stream>>>(k.y, k.alpha, k.x, k.n);
  HISVID_CHECK_LAUNCH();
}

void bias_add_forward(const BiasAddForward<float>& k, cudaStream_t stream) {
  if (k.M <= 0 || k.C <= 0) return;
  bias_add_forward_kernel<<<grid_blocks(k.M * k.C, kThreads), kThreads, 0, stream>>>(k.out, k.inp, k.bias,
                                                                                     k.M, k.C);
  HISVID_CHECK_LAUNCH();
}

void bias_add_backward(const BiasAddBackward<float>& k, cudaStream_t stream) {
  const int64_t M = k.M, C = k.C;
  if (M <= 0 || C <= 0) return;
  Context& ctx = context_for_stream(stream, "bias_add_backward");
  const device::ColumnTiling tiling = device::column_tiling(M, C);
  double* partials =
      static_cast<double*>(ctx.workspace(sizeof(double) * size_t(tiling.row_blocks) * size_t(C)));
  bias_partial_kernel<<<tiling.grid, tiling.block, 0, stream>>>(partials, k.dout, M, C);
  HISVID_CHECK_LAUNCH();
  bias_finalize_kernel<<<grid_blocks(C, kThreads), kThreads, 0, stream>>>(k.dbias, partials,
                                                                          tiling.row_blocks, C);
  HISVID_CHECK_LAUNCH();
}

void activation_forward(const ActivationForward<float>& k, cudaStream_t stream) {
  if (k.n <= 0) return;
  activation_forward_kernel<<<grid_blocks(k.n, kThreads), kThreads, 0, stream>>>(k.out, k.inp, k.n, k.act);
  HISVID_CHECK_LAUNCH();
}

void activation_backward(const ActivationBackward<float>& k, cudaStream_t stream) {
  if (k.n <= 0) return;
  activation_backward_kernel<<<grid_blocks(k.n, kThreads), kThreads, 0, stream>>>(k.dinp, k.dout, k.out, k.n,
                                                                                  k.act);
  HISVID_CHECK_LAUNCH();
}

}  // namespace hisvid::cuda
