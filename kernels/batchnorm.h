// kernels/batchnorm.h — batch normalisation over the last (channel) axis of an (M,C) view,
// Keras semantics: training normalises with the batch mean and the biased batch variance,
//   y = gamma * (x - mean) / sqrt(var + eps) + beta,
// and the moving statistics follow moving = momentum * moving + (1 - momentum) * batch in the
// expression of the Keras path that trains the layer (moving_average below), the moving variance
// taking the unbiased batch variance var * M / (M - 1) on Keras 2's fused path. Inference uses
// the moving statistics.
#pragma once

#include <cstdint>

#include "kernels/common.h"

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

// One moving statistic after a batch whose statistic is `batch` (the variance times `factor`),
// each Keras path's expression in its own order, decay = 1 - momentum:
//   Blend      moving * momentum + batch * decay                    Keras 3
//   Fused      (1 - decay) * moving + (decay * factor) * batch      Keras 2's fused kernel (TF's
//                                                                    FusedBatchNormV3)
//   AssignSub  moving - (moving - batch * factor) * decay           Keras 2's other path and
//                                                                    standalone Keras
// Bit for bit on the host (x86-64 builds without FMA contraction: each product rounds as
// TensorFlow's CPU kernels round it). The CUDA row compiles the same expressions under nvcc's
// default contraction into fma, which rounds once where the host rounds twice: close to the
// host, not bit for bit (the harness holds it to kFused); TensorFlow's own GPU paths (cuDNN's
// running averages on the fused one) have roundings of their own, which no test compares.
template <typename T>
HISVID_HD T moving_average(T moving, T batch, T factor, MovingUpdate update, T momentum, T decay) {
  switch (update) {
    case MovingUpdate::Blend:
      return moving * momentum + batch * factor * decay;
    case MovingUpdate::Fused:
      return (T(1) - decay) * moving + (decay * factor) * batch;
    case MovingUpdate::AssignSub:
      break;
  }
  return moving - (moving - batch * factor) * decay;
}

// moving_mean (C), moving_var (C) updated in place from the batch mean (C) and biased var (C)
// of M rows by moving_average, the variance taken times variance_factor (M / (M - 1) on Keras
// 2's fused path, 1 on its other path and in Keras 3; layers/layer.cpp decides). decay is
// 1 - momentum rounded to float from the double, as Python computes it: 0.01f for 0.99, not
// 1 - 0.99f.
template <typename T>
struct BatchnormUpdateMoving {
  static constexpr const char* kName = "batchnorm_update_moving";
  T* moving_mean = nullptr;
  T* moving_var = nullptr;
  const T* mean = nullptr;
  const T* var = nullptr;
  int64_t M = 0, C = 0;
  MovingUpdate update = MovingUpdate::Fused;
  float momentum = 0.99f, decay = 0.01f;
  float variance_factor = 1.0f;
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
