// engine/ops.h — the differentiable ops: shape checks, dispatch to the kernels of the
// tensor's device, and a tape node with the backward. Every op validates its inputs and
// throws hisvid::Error naming the op and the shapes; the kernels behind it assume valid input.
//
// Shapes use the legend of kernels/common.h. All inputs of an op share one dtype and device.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/random.h"
#include "engine/tensor.h"
#include "kernels/common.h"

namespace hisvid::ops {

// --- elementwise ---------------------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);  // same shapes
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& a, double alpha);
// x (..., C) + bias (C)
Tensor bias_add(const Tensor& x, const Tensor& bias);
Tensor activation(const Tensor& x, Activation act);
inline Tensor relu(const Tensor& x) { return activation(x, Activation::Relu); }
inline Tensor tanh(const Tensor& x) { return activation(x, Activation::Tanh); }
inline Tensor sigmoid(const Tensor& x) { return activation(x, Activation::Sigmoid); }
inline Tensor hard_sigmoid(const Tensor& x) { return activation(x, Activation::HardSigmoid); }

// --- shape ---------------------------------------------------------------------------------
// Same data, new shape (equal numel); one dimension may be -1 (inferred).
Tensor reshape(const Tensor& x, std::vector<int64_t> shape);
// (N, d1, d2, ...) -> (N, d1*d2*...)
Tensor flatten(const Tensor& x);
// TimeDistributed: (N,T,...) -> (N*T,...) and back.
Tensor merge_time(const Tensor& x);
Tensor split_time(const Tensor& x, int64_t T);
// x[..., start:start+length, ...] along axis.
Tensor slice(const Tensor& x, int axis, int64_t start, int64_t length);
// Joins tensors that agree on every axis but `axis`.
Tensor concat(const std::vector<Tensor>& xs, int axis);
// The x.dim(axis) slices of x along axis, that axis dropped: (N,T,...) -> T tensors (N,...).
// One node for all of them, so backward fills a single gradient (a recurrent layer's per-step
// slices would otherwise each allocate and zero a gradient of the whole sequence).
std::vector<Tensor> unstack(const Tensor& x, int axis);

// --- linear algebra and network ops --------------------------------------------------------
// out (M,P) = op(a) op(b); a (M,K) or (K,M) when trans_a; b (K,P) or (P,K) when trans_b.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x (N,H,W,C), weight (KH,KW,C,F), bias (F) or undefined -> (N,HO,WO,F).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride_h, int stride_w,
              Padding padding);
// x (N,H,W,C) -> (N,HO,WO,C).
Tensor max_pool2d(const Tensor& x, int pool_h, int pool_w, int stride_h, int stride_w, Padding padding);
// A Keras Conv2D with its activation followed by a MaxPooling2D, as one kernel
// (kernels/conv2d_pool.h): the values of max_pool2d(activation(conv2d(x, weight, bias, conv),
// act), pool), with a backward that visits only the pooled maxima.
struct ConvSpec {
  int stride_h = 1, stride_w = 1;
  Padding padding = Padding::Valid;
};
struct PoolSpec {
  int pool_h = 2, pool_w = 2, stride_h = 2, stride_w = 2;
  Padding padding = Padding::Valid;
};
// With dropout_rate > 0 (relu or linear only), also the Dropout layer after the pool, drawing
// dropout_draw as dropout() would: out is the dropped output.
Tensor conv2d_act_pool(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvSpec& conv,
                       Activation act, const PoolSpec& pool, float dropout_rate = 0.0f,
                       RandomDraw dropout_draw = {});
// Inverted dropout with the Philox mask of draw; identity when rate == 0.
Tensor dropout(const Tensor& x, float rate, RandomDraw draw);
// A mask of the given shape holding 1/(1-rate) where kept and 0 elsewhere (not differentiable).
Tensor dropout_mask(const Shape& shape, float rate, RandomDraw draw, DType dtype, Device device);
// Spatial dropout of x (N, ..., C): one Philox draw per (sample, channel) keeps or drops that
// channel at every position; identity when rate == 0.
Tensor spatial_dropout(const Tensor& x, float rate, RandomDraw draw);
// Global average pooling: x (N, ..., C) of rank >= 3 -> (N, C), the mean over the middle axes.
Tensor global_average_pool(const Tensor& x);

// The fused LSTM gate step (kernels/lstm.h): z (M,G*U), c_prev (M,U) or undefined (zeros).
struct LstmState {
  Tensor h;  // (M,U)
  Tensor c;  // (M,U)
};
LstmState lstm_cell(const Tensor& z, const Tensor& c_prev, Activation act, Activation rec_act);
// The whole recurrence of an LSTM layer in one kernel per direction (kernels/lstm.h,
// LstmSequenceForward): xz (N,T,G*U) the input products with the bias, R (U,G*U) the recurrent
// kernel, masks (G,N,U) the recurrent dropout masks or undefined (no gradient). Returns every
// h_t (N,T,U) with sequences, else h_{T-1} (N,U). U at most kLstmSequenceMaxUnits.
Tensor lstm_recurrence(const Tensor& xz, const Tensor& R, const Tensor& masks, Activation act,
                       Activation rec_act, bool sequences);
// The whole recurrence of a ConvLSTM2D layer (kernels/lstm.h, ConvLstmStepForward): xz
// (N,T,HO,WO,G*F) the input convolution with the bias, R (KH,KW,F,G*F) the recurrent kernel
// ('same' padding, stride 1), masks (G,N,HO,WO,F) the recurrent dropout masks or undefined (no
// gradient). Per step one kernel each way, the recurrent convolution included (of 4 groups, one
// per gate's masked state, with masks); R's gradient one convolution over every step. Returns
// every h_t (N,T,HO,WO,F) with sequences, else h_{T-1} (N,HO,WO,F).
Tensor convlstm_recurrence(const Tensor& xz, const Tensor& R, const Tensor& masks, Activation act,
                           Activation rec_act, bool sequences);
// m (N,...) repeated along a new time axis: (N,T,...). Not differentiable.
Tensor repeat_steps(const Tensor& m, int64_t T);

// Batch normalisation over the last axis of x (..., C).
struct BatchNormBatch {
  Tensor y;     // normalised output, x's shape
  Tensor mean;  // (C) batch mean (no gradient)
  Tensor var;   // (C) biased batch variance (no gradient)
};
BatchNormBatch batch_norm_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
Tensor batch_norm_infer(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& moving_mean,
                        const Tensor& moving_var, float eps);
// moving_* updated in place by a Keras path's rule (kernels/batchnorm.h, moving_average): the
// batch variance taken times variance_factor, decay = float(1 - momentum) from the double.
void batch_norm_update_moving(const Tensor& moving_mean, const Tensor& moving_var, const Tensor& mean,
                              const Tensor& var, int64_t rows, double momentum, MovingUpdate update,
                              float variance_factor);

// --- losses and reductions -----------------------------------------------------------------
// Softmax over the last axis of logits (N,K).
Tensor softmax(const Tensor& logits);
struct CrossEntropy {
  Tensor loss;   // () mean over the batch of the per-row loss
  Tensor probs;  // (N,K) softmax(z) or sigmoid(z), no gradient
};
// Categorical cross-entropy from logits (N,K) and targets (N,K), fused with the softmax.
CrossEntropy softmax_cross_entropy(const Tensor& logits, const Tensor& targets);
// Binary cross-entropy from logits (N,K) and targets (N,K) in [0, 1], fused with the sigmoid:
// the row loss is the mean over K (Keras's binary_crossentropy).
CrossEntropy sigmoid_cross_entropy(const Tensor& logits, const Tensor& targets);
Tensor sum(const Tensor& x);   // () sum of all elements
Tensor mean(const Tensor& x);  // () mean of all elements
// Number of rows where argmax(scores (N,K)) == argmax(targets (N,K)).
int64_t accuracy_count(const Tensor& scores, const Tensor& targets);
// Number of elements where (probs > 0.5) == (targets > 0.5) (Keras's binary_accuracy).
int64_t binary_accuracy_count(const Tensor& probs, const Tensor& targets);

// The running sums of an epoch's training steps: float64 zeros (kStepSums) on `device`, their
// layout and rule in kernels/softmax.h (StepMetrics). Read once, at the end, by the host.
Tensor step_sums(Device device);
// Adds one step to sums without reading anything on the host: its loss (), and its accuracy
// from scores (N,K) against targets (N,K), argmax rows (binary = false: scores are logits or
// probabilities) or thresholded elements (binary: scores are probabilities); weight is the
// samples the step stands for. A loss that is not finite marks the step failed.
void add_step_metrics(const Tensor& sums, const Tensor& loss, const Tensor& scores, const Tensor& targets,
                      bool binary, double weight);

}  // namespace hisvid::ops
