#include "engine/recurrent.h"

#include <functional>
#include <vector>

#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/lstm.h"

namespace hisvid {

namespace {

constexpr int kGates = 4;  // i, f, c, o

using Product = std::function<Tensor(const Tensor& value, const Tensor& kernel)>;

// The four gate slices of a kernel (..., G*U) along its last axis.
std::vector<Tensor> gate_slices(const Tensor& kernel) {
  const int64_t units = kernel.dim(-1) / kGates;
  std::vector<Tensor> slices;
  for (int g = 0; g < kGates; ++g) slices.push_back(ops::slice(kernel, -1, g * units, units));
  return slices;
}

// One dropout mask of `shape` per gate, or none when no dropout applies.
std::vector<Tensor> gate_masks(const char* layer, float rate, const RecurrentOptions& options,
                               const Shape& shape, const Tensor& like) {
  if (!options.training || rate == 0.0f) return {};
  if (options.rng == nullptr) fail("{}: training with dropout {} needs a random generator", layer, rate);
  std::vector<Tensor> masks;
  for (int g = 0; g < kGates; ++g) {
    masks.push_back(ops::dropout_mask(shape, rate, options.rng->next(), like.dtype(), like.device()));
  }
  return masks;
}

// product(value, kernel), or, with masks, the gate-wise products of the masked copies with
// the kernel slices joined on the last axis.
Tensor gated_product(const Tensor& value, const Tensor& kernel, const std::vector<Tensor>& masks,
                     const std::vector<Tensor>& slices, const Product& product) {
  if (masks.empty()) return product(value, kernel);
  std::vector<Tensor> parts;
  for (int g = 0; g < kGates; ++g) parts.push_back(product(ops::mul(value, masks[g]), slices[g]));
  return ops::concat(parts, -1);
}

void check_weights(const char* layer, const Tensor& x, const RecurrentWeights& w, const Shape& kernel,
                   const Shape& recurrent) {
  detail::require_compatible(layer, "input", x, "kernel", w.kernel);
  detail::require_compatible(layer, "input", x, "recurrent_kernel", w.recurrent_kernel);
  detail::require_shape(layer, "kernel", w.kernel, kernel);
  detail::require_shape(layer, "recurrent_kernel", w.recurrent_kernel, recurrent);
  if (w.bias.defined()) {
    detail::require_compatible(layer, "input", x, "bias", w.bias);
    detail::require_shape(layer, "bias", w.bias, Shape{kernel.back()});
  }
}

}  // namespace

Tensor lstm_sequence(const Tensor& x, const RecurrentWeights& w, const RecurrentOptions& options) {
  const char* layer = "lstm";
  detail::require_rank(layer, "input", x, 3);
  detail::require_rank(layer, "recurrent_kernel", w.recurrent_kernel, 2);
  const int64_t N = x.dim(0), T = x.dim(1), D = x.dim(2), U = w.recurrent_kernel.dim(0);
  if (T < 1) fail("{}: input {} has no timesteps", layer, x.shape().str());
  check_weights(layer, x, w, Shape{D, kGates * U}, Shape{U, kGates * U});

  const std::vector<Tensor> input_masks = gate_masks(layer, options.dropout, options, Shape{N, D}, x);
  const std::vector<Tensor> recurrent_masks =
      gate_masks(layer, options.recurrent_dropout, options, Shape{N, U}, x);

  // The input products of all timesteps: one matmul, or with input masks (shared by all
  // timesteps) one per gate, of the masked inputs with the gate's slice of the kernel.
  Tensor xz;  // (N*T,G*U)
  if (input_masks.empty()) {
    xz = ops::matmul(ops::reshape(x, {N * T, D}), w.kernel);
  } else {
    const std::vector<Tensor> kernel_slices = gate_slices(w.kernel);
    std::vector<Tensor> parts;
    for (int g = 0; g < kGates; ++g) {
      const Tensor masked = ops::mul(x, ops::repeat_steps(input_masks[g], T));
      parts.push_back(ops::matmul(ops::reshape(masked, {N * T, D}), kernel_slices[g]));
    }
    xz = ops::concat(parts, -1);
  }
  if (w.bias.defined()) xz = ops::bias_add(xz, w.bias);
  xz = ops::reshape(xz, {N, T, kGates * U});

  if (U <= kLstmSequenceMaxUnits) {  // the whole recurrence in one kernel
    Tensor masks;                    // (G,N,U)
    if (!recurrent_masks.empty()) {
      std::vector<Tensor> per_gate;
      for (const Tensor& m : recurrent_masks) per_gate.push_back(ops::reshape(m, {1, N, U}));
      masks = ops::concat(per_gate, 0);
    }
    return ops::lstm_recurrence(xz, w.recurrent_kernel, masks, options.activation,
                                options.recurrent_activation, options.return_sequences);
  }

  // More units than one CUDA block holds: step by step, of recorded ops.
  const Product matmul = [](const Tensor& v, const Tensor& k) { return ops::matmul(v, k); };
  const std::vector<Tensor> recurrent_slices =
      recurrent_masks.empty() ? std::vector<Tensor>() : gate_slices(w.recurrent_kernel);
  const std::vector<Tensor> xzs = ops::unstack(xz, 1);  // per timestep (N,G*U)
  Tensor h, c;
  std::vector<Tensor> sequence;
  for (int64_t t = 0; t < T; ++t) {
    Tensor z = xzs[t];
    if (h.defined())
      z = ops::add(z, gated_product(h, w.recurrent_kernel, recurrent_masks, recurrent_slices, matmul));
    const ops::LstmState state = ops::lstm_cell(z, c, options.activation, options.recurrent_activation);
    h = state.h;
    c = state.c;
    if (options.return_sequences) sequence.push_back(ops::reshape(h, {N, 1, U}));
  }
  return options.return_sequences ? ops::concat(sequence, 1) : h;
}

Tensor convlstm2d_sequence(const Tensor& x, const RecurrentWeights& w, const RecurrentOptions& options) {
  const char* layer = "conv_lstm2d";
  detail::require_rank(layer, "input", x, 5);
  detail::require_rank(layer, "kernel", w.kernel, 4);
  const int64_t N = x.dim(0), T = x.dim(1), H = x.dim(2), W = x.dim(3), C = x.dim(4);
  const int64_t KH = w.kernel.dim(0), KW = w.kernel.dim(1), F = w.kernel.dim(3) / kGates;
  if (T < 1) fail("{}: input {} has no timesteps", layer, x.shape().str());
  check_weights(layer, x, w, Shape{KH, KW, C, kGates * F}, Shape{KH, KW, F, kGates * F});

  const Padding padding = options.padding;
  const Product input_conv = [padding](const Tensor& v, const Tensor& k) {
    return ops::conv2d(v, k, Tensor(), 1, 1, padding);
  };
  const Product recurrent_conv = [](const Tensor& v, const Tensor& k) {
    return ops::conv2d(v, k, Tensor(), 1, 1, Padding::Same);
  };
  const std::vector<Tensor> input_masks = gate_masks(layer, options.dropout, options, Shape{N, H, W, C}, x);
  const std::vector<Tensor> kernel_slices =
      input_masks.empty() ? std::vector<Tensor>() : gate_slices(w.kernel);

  // Without input masks, the input convolutions of all timesteps are one convolution.
  std::vector<Tensor> xz, xs;  // per timestep: (N,HO,WO,G*F) input products, or (N,H,W,C) inputs
  if (input_masks.empty()) {
    xz =
        ops::unstack(ops::split_time(ops::conv2d(ops::merge_time(x), w.kernel, w.bias, 1, 1, padding), T), 1);
  } else {
    xs = ops::unstack(x, 1);
  }

  Tensor h, c;
  std::vector<Tensor> recurrent_masks, recurrent_slices, sequence;
  for (int64_t t = 0; t < T; ++t) {
    Tensor z;
    if (input_masks.empty()) {
      z = xz[t];
    } else {
      z = gated_product(xs[t], w.kernel, input_masks, kernel_slices, input_conv);
      if (w.bias.defined()) z = ops::bias_add(z, w.bias);
    }
    const int64_t HO = z.dim(1), WO = z.dim(2);
    if (t == 0) {
      recurrent_masks = gate_masks(layer, options.recurrent_dropout, options, Shape{N, HO, WO, F}, x);
      if (!recurrent_masks.empty()) recurrent_slices = gate_slices(w.recurrent_kernel);
    }
    if (h.defined()) {
      z = ops::add(z,
                   gated_product(h, w.recurrent_kernel, recurrent_masks, recurrent_slices, recurrent_conv));
    }
    const ops::LstmState state = ops::lstm_cell(ops::reshape(z, {N * HO * WO, kGates * F}), c,
                                                options.activation, options.recurrent_activation);
    h = ops::reshape(state.h, {N, HO, WO, F});
    c = state.c;
    if (options.return_sequences) sequence.push_back(ops::reshape(h, {N, 1, HO, WO, F}));
  }
  return options.return_sequences ? ops::concat(sequence, 1) : h;
}

}  // namespace hisvid
