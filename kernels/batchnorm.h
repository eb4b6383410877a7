// kernels/batchnorm.h — batch normalisation over the last (channel) axis of an (M,C) view,
// Keras semantics: training normalises with the batch mean and the biased batch variance,
//   y = gamma * (x - mean) / sqrt(var + eps) + beta,
// and the moving statistics follow moving = momentum * moving + (1 - momentum) * batch, the
// moving variance taking the unbiased batch variance var * M / (M - 1). Inference uses the
// moving statistics.
#pragma once

#include <cstdint>

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace hisvid {

// out (M,C); mean (C) and var (C, biased) of the batch; invstd (C) = 1/sqrt(var + eps).
template <typename T>
struct BatchnormForwardTrain {
  static constexpr const char* kName = "batchnorm_forward_train";
  T* out = nullptr;
  T* mean = nullptr;
  T* var = nullptr;
  T* invstd = nullptr;
  const T* inp = nullptr;
  const T* gamma = nullptr;
  const T* beta = nullptr;
  int64_t M = 0, C = 0;
  float eps = 1e-3f;
  template <typename V>
  void buffers(V& v) {
    v.out("out", out, M * C);
    v.out("mean", mean, C);
    v.out("var", var, C);
    v.out("invstd", invstd, C);
    v.in("inp", inp, M * C);
    v.in("gamma", gamma, C);
    v.in("beta", beta, C);
  }
};

// out (M,C) with the moving statistics moving_mean (C), moving_var (C).
template <typename T>
struct BatchnormForwardInfer {
  static constexpr const char* kName = "batchnorm_forward_infer";
  T* out = nullptr;
  const T* inp = nullptr;
  const T* gamma = nullptr;
  const T* beta = nullptr;
  const T* moving_mean = nullptr;
  const T* moving_var = nullptr;
  int64_t M = 0, C = 0;
  float eps = 1e-3f;
  template <typename V>
  void buffers(V& v) {
    v.out("out", out, M * C);
    v.in("inp", inp, M * C);
    v.in("gamma", gamma, C);
    v.in("beta", beta, C);
    v.in("moving_mean", moving_mean, C);
    v.in("moving_var", moving_var, C);
  }
};

// dinp (M,C) (=), dgamma (C) (+=), dbeta (C) (+=) for the training-mode forward, from dout
// (M,C), inp (M,C) and the forward's mean (C) and invstd (C).
template <typename T>
struct BatchnormBackward {
  static constexpr const char* kName = "batchnorm_backward";
  T* dinp = nullptr;
  T* dgamma = nullptr;
  T* dbeta = nullptr;
  const T* dout = nullptr;
  const T* inp = nullptr;
  const T* mean = nullptr;
  const T* invstd = nullptr;
  const T* gamma = nullptr;
  int64_t M = 0, C = 0;
  template <typename V>
  void buffers(V& v) {
    v.out("dinp", dinp, M * C);
    v.inout("dgamma", dgamma, C);
    v.inout("dbeta", dbeta, C);
    v.in("dout", dout, M * C);
    v.in("inp", inp, M * C);
    v.in("mean", mean, C);
    v.in("invstd", invstd, C);
    v.in("gamma", gamma, C);
  }
};

// moving_mean (C), moving_var (C) updated in place from the batch mean (C) and biased var (C)
// of M rows: moving = moving * momentum + batch * (1 - momentum), the variance unbiased by
// M / (M - 1) when `unbiased` (a single row keeps the biased one). Keras 2's fused path (4-D
// and 5-D inputs) updates with the unbiased variance, its other path and Keras 3 with the
// biased one (layers/layer.cpp, BatchNormalization::build).
template <typename T>
struct BatchnormUpdateMoving {
  static constexpr const char* kName = "batchnorm_update_moving";
  T* moving_mean = nullptr;
  T* moving_var = nullptr;
  const T* mean = nullptr;
  const T* var = nullptr;
  int64_t M = 0, C = 0;
  float momentum = 0.99f;
  bool unbiased = true;
  template <typename V>
  void buffers(V& v) {
    v.inout("moving_mean", moving_mean, C);
    v.inout("moving_var", moving_var, C);
    v.in("mean", mean, C);
    v.in("var", var, C);
  }
};

}  // namespace hisvid

namespace hisvid::naive {

template <typename T>
void batchnorm_forward_train(const BatchnormForwardTrain<T>& k);
template <typename T>
void batchnorm_forward_infer(const BatchnormForwardInfer<T>& k);
template <typename T>
void batchnorm_backward(const BatchnormBackward<T>& k);
template <typename T>
void batchnorm_update_moving(const BatchnormUpdateMoving<T>& k);

}  // namespace hisvid::naive

#ifdef HISVID_WITH_CUDA
namespace hisvid::cuda {

void batchnorm_forward_train(const BatchnormForwardTrain<float>& k, cudaStream_t stream);
void batchnorm_forward_infer(const BatchnormForwardInfer<float>& k, cudaStream_t stream);
void batchnorm_backward(const BatchnormBackward<float>& k, cudaStream_t stream);
void batchnorm_update_moving(const BatchnormUpdateMoving<float>& k, cudaStream_t stream);

}  // namespace hisvid::cuda
#endif
