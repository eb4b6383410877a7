// CUDA version of kernels/optim.h: every parameter of an optimizer step in one launch
// (multi_tensor_update), blockIdx.y the tensor and blockIdx.x striding over its values, each
// element through the same formula as the host rows (adam_element, rmsprop_element,
// sgd_element). The arguments, 16 tensors' pointers and sizes, travel as kernel parameters;
// the step scalar is one of them, or read from device memory (scalar_at) by a step captured
// into a graph.
#include "kernels/cuda_context.h"
#include "kernels/optim.h"

namespace hisvid::cuda {

namespace {

__global__ void multi_tensor_update_kernel(MultiTensorUpdate<float> k) {
  if (k.halt != nullptr && *k.halt != 0.0) return;
  const int t = static_cast<int>(blockIdx.y);
  const float scalar = k.scalar_at != nullptr ? *k.scalar_at : k.scalar;
  float *w = k.w[t], *m = k.m[t], *v = k.v[t];
  const float* g = k.g[t];
  const int64_t n = k.n[t];
  for (const int64_t i : device::grid_stride(n)) {
    if (k.rule == UpdateRule::Adam) {
      adam_element(w[i], m[i], v[i], g[i], scalar, k.beta1, k.beta2, k.eps);
    } else if (k.rule == UpdateRule::Rmsprop) {
      rmsprop_element(w[i], v[i], g[i], scalar, k.rho, k.eps, k.form);
    } else {
      sgd_element(w[i], g[i], scalar);
    }
  }
}

}  // namespace

void multi_tensor_update(const MultiTensorUpdate<float>& k, cudaStream_t stream) {
  int64_t longest = 0;
  for (int t = 0; t < k.count; ++t) longest = k.n[t] > longest ? k.n[t] : longest;
  if (k.count <= 0 || longest <= 0) return;
  const dim3 grid(grid_blocks(longest, kThreads), static_cast<unsigned int>(k.count));
  multi_tensor_update_kernel<<<grid, kThreads, 0, stream>>>(k);
  HISVID_CHECK_LAUNCH();
}

// The single-tensor kernels: the multi-tensor launch with one tensor.
void adam_update(const AdamUpdate<float>& k, cudaStream_t stream) {
  MultiTensorUpdate<float> one;
  one.rule = UpdateRule::Adam, one.count = 1, one.w[0] = k.w, one.m[0] = k.m, one.v[0] = k.v, one.g[0] = k.g;
  one.n[0] = k.n, one.scalar = k.alpha, one.beta1 = k.beta1, one.beta2 = k.beta2, one.eps = k.eps;
  one.halt = k.halt, one.scalar_at = k.scalar_at;
  multi_tensor_update(one, stream);
}

void rmsprop_update(const RmspropUpdate<float>& k, cudaStream_t stream) {
  MultiTensorUpdate<float> one;
  one.rule = UpdateRule::Rmsprop, one.count = 1, one.w[0] = k.w, one.v[0] = k.v, one.g[0] = k.g,
  one.n[0] = k.n;
  one.scalar = k.lr, one.rho = k.rho, one.eps = k.eps, one.form = k.form, one.halt = k.halt;
  one.scalar_at = k.scalar_at;
  multi_tensor_update(one, stream);
}

void sgd_update(const SgdUpdate<float>& k, cudaStream_t stream) {
  MultiTensorUpdate<float> one;
  one.rule = UpdateRule::Sgd, one.count = 1, one.w[0] = k.w, one.g[0] = k.g, one.n[0] = k.n,
  one.scalar = k.lr;
  one.halt = k.halt, one.scalar_at = k.scalar_at;
  multi_tensor_update(one, stream);
}

}  // namespace hisvid::cuda
