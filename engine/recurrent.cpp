#include "engine/recurrent.h"

#include <functional>
#include <vector>

#include "engine/op_support.h"
#include "engine/ops.h"

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

  const Product matmul = [](const Tensor& v, const Tensor& k) { return ops::matmul(v, k); };
  const std::vector<Tensor> input_masks = gate_masks(layer, options.dropout, options, Shape{N, D}, x);
  const std::vector<Tensor> recurrent_masks =
      gate_masks(layer, options.recurrent_dropout, options, Shape{N, U}, x);
  const std::vector<Tensor> kernel_slices = input_masks.empty() ? std::vector<Tensor>() : gate_slices(w.kernel);
  const std::vector<Tensor> recurrent_slices =
      recurrent_masks.empty() ? std::vector<Tensor>() : gate_slices(w.recurrent_kernel);

  // Without input masks, the input products of all timesteps are one matmul.
  std::vector<Tensor> xz, xs;  // per timestep: (N,G*U) input products, or (N,D) inputs
  if (input_masks.empty()) {
    Tensor all = ops::matmul(ops::reshape(x, {N * T, D}), w.kernel);
    if (w.bias.defined()) all = ops::bias_add(all, w.bias);
    xz = ops::unstack(ops::reshape(all, {N, T, kGates * U}), 1);
  } else {
    xs = ops::unstack(x, 1);
  }

  Tensor h, c;
  std::vector<Tensor> sequence;
  for (int64_t t = 0; t < T; ++t) {
    Tensor z;
    if (input_masks.empty()) {
      z = xz[t];
    } else {
      z = gated_product(xs[t], w.kernel, input_masks, kernel_slices, matmul);
      if (w.bias.defined()) z = ops::bias_add(z, w.bias);
    }
    if (h.defined()) z = ops::add(z, gated_product(h, w.recurrent_kernel, recurrent_masks, recurrent_slices, matmul));
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
  const std::vector<Tensor> kernel_slices = input_masks.empty() ? std::vector<Tensor>() : gate_slices(w.kernel);

  // Without input masks, the input convolutions of all timesteps are one convolution.
  std::vector<Tensor> xz, xs;  // per timestep: (N,HO,WO,G*F) input products, or (N,H,W,C) inputs
  if (input_masks.empty()) {
    xz = ops::unstack(ops::split_time(ops::conv2d(ops::merge_time(x), w.kernel, w.bias, 1, 1, padding), T), 1);
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
      z = ops::add(z, gated_product(h, w.recurrent_kernel, recurrent_masks, recurrent_slices, recurrent_conv));
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
