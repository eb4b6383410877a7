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

// `count` dropout masks of `shape` (one per gate by default), or none when no dropout applies.
std::vector<Tensor> gate_masks(const char* layer, float rate, const RecurrentOptions& options,
                               const Shape& shape, const Tensor& like, int count = kGates) {
  if (!options.training || rate == 0.0f) return {};
  if (options.rng == nullptr) fail("{}: training with dropout {} needs a random generator", layer, rate);
  std::vector<Tensor> masks;
  for (int g = 0; g < count; ++g) {
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

// The input products of all T timesteps as one product over (N*T, ...) rows of merge_time(x);
// with input masks (one per gate, the same at every timestep) gated_product's gate-wise
// products of the masked copies.
Tensor input_products(const Tensor& x, const Tensor& kernel, const std::vector<Tensor>& masks,
                      const Product& product) {
  const int64_t T = x.dim(1);
  std::vector<Tensor> per_row;  // each mask over every timestep, (N*T, ...)
  for (const Tensor& m : masks) per_row.push_back(ops::merge_time(ops::repeat_steps(m, T)));
  return gated_product(ops::merge_time(x), kernel, per_row,
                       masks.empty() ? std::vector<Tensor>() : gate_slices(kernel), product);
}

// The recurrent masks of the gates stacked as (G, N, ...), what the recurrence ops take;
// undefined without masks.
Tensor stack_gates(const std::vector<Tensor>& masks) {
  if (masks.empty()) return Tensor();
  std::vector<Tensor> per_gate;
  for (const Tensor& m : masks) {
    std::vector<int64_t> dims = m.shape().vec();
    dims.insert(dims.begin(), 1);
    per_gate.push_back(ops::reshape(m, dims));
  }
  return ops::concat(per_gate, 0);
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

  // Input dropout as InputDropout says: masks per gate into the products, or one mask on x.
  std::vector<Tensor> input_masks;
  Tensor dropped = x;
  if (options.input_dropout == InputDropout::PerGate) {
    input_masks = gate_masks(layer, options.dropout, options, Shape{N, D}, x);
  } else {
    const bool per_step = options.input_dropout == InputDropout::PerStep;
    for (const Tensor& mask :
         gate_masks(layer, options.dropout, options, per_step ? Shape{N, T, D} : Shape{N, D}, x, 1))
      dropped = ops::mul(x, per_step ? mask : ops::repeat_steps(mask, T));
  }
  // The recurrent masks: one per gate, or one for every gate where the input's is shared.
  std::vector<Tensor> recurrent_masks;
  if (options.input_dropout != InputDropout::Shared) {
    recurrent_masks = gate_masks(layer, options.recurrent_dropout, options, Shape{N, U}, x);
  } else {
    for (const Tensor& mask : gate_masks(layer, options.recurrent_dropout, options, Shape{N, U}, x, 1))
      recurrent_masks.assign(kGates, mask);
  }

  const Product matmul = [](const Tensor& v, const Tensor& k) { return ops::matmul(v, k); };
  Tensor xz = input_products(dropped, w.kernel, input_masks, matmul);  // (N*T,G*U)
  if (w.bias.defined()) xz = ops::bias_add(xz, w.bias);
  xz = ops::reshape(xz, {N, T, kGates * U});

  if (U <= kLstmSequenceMaxUnits) {  // the whole recurrence in one kernel
    return ops::lstm_recurrence(xz, w.recurrent_kernel, stack_gates(recurrent_masks), options.activation,
                                options.recurrent_activation, options.return_sequences);
  }

  // More units than one CUDA block holds: step by step, of recorded ops.
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

  // Without input masks the bias goes with the one convolution.
  const std::vector<Tensor> input_masks = gate_masks(layer, options.dropout, options, Shape{N, H, W, C}, x);
  const Padding padding = options.padding;
  Tensor xz;  // (N*T,HO,WO,G*F)
  if (input_masks.empty()) {
    xz = ops::conv2d(ops::merge_time(x), w.kernel, w.bias, 1, 1, padding);
  } else {
    const Product input_conv = [padding](const Tensor& v, const Tensor& k) {
      return ops::conv2d(v, k, Tensor(), 1, 1, padding);
    };
    xz = input_products(x, w.kernel, input_masks, input_conv);
    if (w.bias.defined()) xz = ops::bias_add(xz, w.bias);
  }
  xz = ops::split_time(xz, T);  // (N,T,HO,WO,G*F)

  const int64_t HO = xz.dim(2), WO = xz.dim(3);
  const std::vector<Tensor> recurrent_masks =
      gate_masks(layer, options.recurrent_dropout, options, Shape{N, HO, WO, F}, x);
  return ops::convlstm_recurrence(xz, w.recurrent_kernel, stack_gates(recurrent_masks), options.activation,
                                  options.recurrent_activation, options.return_sequences);
}

}  // namespace hisvid
