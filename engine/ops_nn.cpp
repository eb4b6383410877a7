// Network ops: matmul, conv2d, max_pool2d, dropout and spatial dropout, global average pooling, the
// LSTM gate step, batch normalisation.
#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/batchnorm.h"
#include "kernels/conv2d.h"
#include "kernels/conv2d_pool.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/lstm.h"
#include "kernels/matmul.h"
#include "kernels/pool.h"
#include "kernels/reduce.h"

namespace hisvid::ops {

using detail::data_or_null;
using detail::empty_as;
using detail::empty_like;
using detail::zeros_as;

// --- matmul --------------------------------------------------------------------------------

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  detail::require_compatible("matmul", "a", a, "b", b);
  if (a.rank() != 2 || b.rank() != 2) {
    fail("matmul: a {} and b {} must both be matrices", a.shape().str(), b.shape().str());
  }
  const int64_t M = trans_a ? a.dim(1) : a.dim(0), K = trans_a ? a.dim(0) : a.dim(1);
  const int64_t Kb = trans_b ? b.dim(1) : b.dim(0), P = trans_b ? b.dim(0) : b.dim(1);
  if (K != Kb) {
    fail("matmul: inner dimensions differ: a {}{} and b {}{} ({} vs {})", a.shape().str(),
         trans_a ? " transposed" : "", b.shape().str(), trans_b ? " transposed" : "", K, Kb);
  }
  Tensor out = empty_as(Shape{M, P}, a);
  with_dtype(a, [&](auto tag) {
    using T = decltype(tag);
    Matmul<T> k;
    k.out = out.data<T>(), k.a = a.data<T>(), k.b = b.data<T>(), k.M = M, k.P = P, k.K = K;
    k.trans_a = trans_a, k.trans_b = trans_b, k.accumulate = false;
    run_kernel(k, a.device());
  });
  if (should_record({a, b})) {
    const bool need_a = a.requires_grad(), need_b = b.requires_grad();
    record("matmul", {a, b}, {out}, [a, b, trans_a, trans_b, need_a, need_b](const std::vector<Tensor>& g) {
      const Tensor& dc = g[0];
      Tensor da, db;
      if (need_a) da = trans_a ? matmul(b, dc, trans_b, true) : matmul(dc, b, false, !trans_b);
      if (need_b) db = trans_b ? matmul(dc, a, true, trans_a) : matmul(a, dc, !trans_a, false);
      return std::vector<Tensor>{da, db};
    });
  }
  return out;
}

// --- conv2d --------------------------------------------------------------------------------

namespace {

// The geometry of conv2d(x, weight, bias) after checking the three fit; `op` names the caller.
Conv2dGeometry checked_conv_geometry(const char* op, const Tensor& x, const Tensor& weight,
                                     const Tensor& bias, int stride_h, int stride_w, Padding padding) {
  detail::require_compatible(op, "input", x, "kernel", weight);
  if (x.rank() != 4 || weight.rank() != 4) {
    fail("{}: input {} must be (N,H,W,C) and kernel {} (KH,KW,C,F)", op, x.shape().str(),
         weight.shape().str());
  }
  if (x.dim(3) != weight.dim(2)) {
    fail("{}: input {} and kernel {} disagree on channels ({} vs {})", op, x.shape().str(),
         weight.shape().str(), x.dim(3), weight.dim(2));
  }
  if (bias.defined()) {
    detail::require_compatible(op, "input", x, "bias", bias);
    if (bias.rank() != 1 || bias.dim(0) != weight.dim(3)) {
      fail("{}: bias {} does not match the {} filters of kernel {}", op, bias.shape().str(), weight.dim(3),
           weight.shape().str());
    }
  }
  if (stride_h < 1 || stride_w < 1) fail("{}: strides ({}, {}) must be >= 1", op, stride_h, stride_w);
  const Conv2dGeometry geom = conv2d_geometry(
      static_cast<int>(x.dim(0)), static_cast<int>(x.dim(1)), static_cast<int>(x.dim(2)),
      static_cast<int>(x.dim(3)), static_cast<int>(weight.dim(3)), static_cast<int>(weight.dim(0)),
      static_cast<int>(weight.dim(1)), stride_h, stride_w, padding);
  if (geom.HO <= 0 || geom.WO <= 0) {
    fail("{}: input {} is smaller than kernel {} with valid padding", op, x.shape().str(),
         weight.shape().str());
  }
  return geom;
}

// The geometry of max_pool2d over (N,H,W,C) after checking the pool fits; `op` names the caller.
Pool2dGeometry checked_pool_geometry(const char* op, const Shape& in, int pool_h, int pool_w, int stride_h,
                                     int stride_w, Padding padding) {
  if (pool_h < 1 || pool_w < 1 || stride_h < 1 || stride_w < 1) {
    fail("{}: pool ({}, {}) and strides ({}, {}) must be >= 1", op, pool_h, pool_w, stride_h, stride_w);
  }
  const Pool2dGeometry geom =
      pool2d_geometry(static_cast<int>(in[0]), static_cast<int>(in[1]), static_cast<int>(in[2]),
                      static_cast<int>(in[3]), pool_h, pool_w, stride_h, stride_w, padding);
  if (geom.HO <= 0 || geom.WO <= 0) {
    fail("{}: input {} is smaller than the pool ({}, {}) with valid padding", op, in.str(), pool_h, pool_w);
  }
  return geom;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride_h, int stride_w,
              Padding padding) {
  const Conv2dGeometry geom = checked_conv_geometry("conv2d", x, weight, bias, stride_h, stride_w, padding);
  Tensor out = empty_as(Shape{geom.N, geom.HO, geom.WO, geom.F}, x);
  with_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    Conv2dForward<T> k;
    k.out = out.data<T>(), k.inp = x.data<T>(), k.weight = weight.data<T>(), k.bias = data_or_null<T>(bias);
    k.g = geom;
    run_kernel(k, x.device());
  });
  if (should_record({x, weight, bias})) {
    const bool need_x = x.requires_grad(), need_params = weight.requires_grad() || bias.requires_grad();
    record("conv2d", {x, weight, bias}, {out},
           [x, weight, bias, geom, need_x, need_params](const std::vector<Tensor>& g) {
             Tensor dx, dw, db;
             with_dtype(x, [&](auto tag) {
               using T = decltype(tag);
               if (need_x) {
                 dx = empty_like(x);
                 Conv2dBackwardData<T> k;
                 k.dinp = dx.data<T>(), k.dout = g[0].data<T>(), k.weight = weight.data<T>(), k.g = geom;
                 run_kernel(k, x.device());
               }
               if (need_params) {
                 dw = zeros_as(weight.shape(), weight);
                 if (bias.defined()) db = zeros_as(bias.shape(), bias);
                 Conv2dBackwardFilter<T> k;
                 k.dweight = dw.data<T>(), k.dbias = data_or_null<T>(db), k.dout = g[0].data<T>();
                 k.inp = x.data<T>(), k.g = geom;
                 run_kernel(k, x.device());
               }
             });
             return std::vector<Tensor>{dx, dw, db};
           });
  }
  return out;
}

// --- max_pool2d ----------------------------------------------------------------------------

Tensor max_pool2d(const Tensor& x, int pool_h, int pool_w, int stride_h, int stride_w, Padding padding) {
  detail::require_rank("max_pool2d", "input", x, 4);
  const Pool2dGeometry geom =
      checked_pool_geometry("max_pool2d", x.shape(), pool_h, pool_w, stride_h, stride_w, padding);
  Tensor out = empty_as(Shape{geom.N, geom.HO, geom.WO, geom.C}, x);
  auto argmax = std::make_shared<Storage>(static_cast<size_t>(out.numel()) * sizeof(int32_t), x.device());
  with_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    Maxpool2dForward<T> k;
    k.out = out.data<T>(), k.argmax = static_cast<int32_t*>(argmax->data), k.inp = x.data<T>(), k.g = geom;
    run_kernel(k, x.device());
  });
  if (should_record({x})) {
    record("max_pool2d", {x}, {out}, [in_shape = x.shape(), argmax, geom](const std::vector<Tensor>& g) {
      Tensor dx = empty_as(in_shape, g[0]);
      with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        Maxpool2dBackward<T> k;
        k.dinp = dx.data<T>(), k.dout = g[0].data<T>(), k.argmax = static_cast<const int32_t*>(argmax->data);
        k.g = geom;
        run_kernel(k, dx.device());
      });
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

namespace {
void require_rate(const char* op, float rate) {
  if (!(rate >= 0.0f && rate < 1.0f)) fail("{}: rate {} must be in [0, 1)", op, rate);
}
}  // namespace

Tensor conv2d_act_pool(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvSpec& conv,
                       Activation act, const PoolSpec& pool, float dropout_rate, RandomDraw dropout_draw) {
  require_rate("conv2d_act_pool", dropout_rate);
  if (dropout_rate != 0.0f && act != Activation::Relu && act != Activation::Linear) {
    fail("conv2d_act_pool: a dropout folds in after a relu or linear activation only, not {}",
         activation_label(act));
  }
  const PoolDropout dropout{dropout_rate, dropout_draw.seed, dropout_draw.offset, dropout_draw.base};
  const Conv2dGeometry g =
      checked_conv_geometry("conv2d_act_pool", x, weight, bias, conv.stride_h, conv.stride_w, conv.padding);
  const Pool2dGeometry p = checked_pool_geometry("conv2d_act_pool", Shape{g.N, g.HO, g.WO, g.F}, pool.pool_h,
                                                 pool.pool_w, pool.stride_h, pool.stride_w, pool.padding);
  Tensor out = empty_as(Shape{p.N, p.HO, p.WO, p.C}, x);
  const bool record_backward = should_record({x, weight, bias});
  // Where each maximum sat: only a backward needs it.
  std::shared_ptr<Storage> argmax;
  if (record_backward)
    argmax = std::make_shared<Storage>(static_cast<size_t>(out.numel()) * sizeof(int32_t), x.device());
  with_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    Conv2dActPoolForward<T> k;
    k.out = out.data<T>(), k.argmax = argmax ? static_cast<int32_t*>(argmax->data) : nullptr;
    k.inp = x.data<T>(), k.weight = weight.data<T>(), k.bias = data_or_null<T>(bias);
    k.g = g, k.p = p, k.act = act, k.dropout = dropout;
    run_kernel(k, x.device());
  });
  if (record_backward) {
    const bool need_x = x.requires_grad();
    record("conv2d_act_pool", {x, weight, bias}, {out},
           [x, weight, bias, out, argmax, g, p, act, dropout, need_x](const std::vector<Tensor>& grads) {
             // The rows write every element of dw and db (no fill first).
             Tensor dx, dw = empty_like(weight), db;
             if (bias.defined()) db = empty_like(bias);
             if (need_x) dx = empty_like(x);
             with_dtype(x, [&](auto tag) {
               using T = decltype(tag);
               Conv2dActPoolBackward<T> k;
               k.dinp = need_x ? dx.data<T>() : nullptr, k.dweight = dw.data<T>(),
               k.dbias = data_or_null<T>(db);
               k.dout = grads[0].data<T>(), k.out = out.data<T>();
               k.argmax = static_cast<const int32_t*>(argmax->data);
               k.inp = x.data<T>(), k.weight = weight.data<T>(), k.g = g, k.p = p, k.act = act;
               k.dropout = dropout;
               run_kernel(k, x.device());
             });
             return std::vector<Tensor>{dx, dw, db};
           });
  }
  return out;
}

// --- dropout -------------------------------------------------------------------------------

Tensor dropout(const Tensor& x, float rate, RandomDraw draw) {
  detail::require_defined("dropout", "x", x);
  require_rate("dropout", rate);
  if (rate == 0.0f) return x;
  Tensor out = empty_like(x);
  with_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    DropoutForward<T> k;
    k.out = out.data<T>(), k.inp = x.data<T>(), k.n = x.numel();
    k.rate = rate, k.seed = draw.seed, k.offset = draw.offset, k.offset_base = draw.base;
    run_kernel(k, x.device());
  });
  if (should_record({x})) {
    record("dropout", {x}, {out}, [rate, draw](const std::vector<Tensor>& g) {
      Tensor dx = empty_like(g[0]);
      with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        DropoutBackward<T> k;
        k.dinp = dx.data<T>(), k.dout = g[0].data<T>(), k.n = dx.numel();
        k.rate = rate, k.seed = draw.seed, k.offset = draw.offset, k.offset_base = draw.base;
        run_kernel(k, dx.device());
      });
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

Tensor dropout_mask(const Shape& shape, float rate, RandomDraw draw, DType dtype, Device device) {
  require_rate("dropout_mask", rate);
  Tensor mask = Tensor::empty(shape, dtype, device);
  with_dtype(mask, [&](auto tag) {
    using T = decltype(tag);
    DropoutMask<T> k;
    k.mask = mask.data<T>(), k.n = mask.numel(), k.rate = rate, k.seed = draw.seed, k.offset = draw.offset,
    k.offset_base = draw.base;
    run_kernel(k, mask.device());
  });
  return mask;
}

Tensor spatial_dropout(const Tensor& x, float rate, RandomDraw draw) {
  detail::require_defined("spatial_dropout", "x", x);
  require_rate("spatial_dropout", rate);
  if (x.rank() < 3) fail("spatial_dropout: x {} must be (N, ..., C) of rank >= 3", x.shape().str());
  if (rate == 0.0f) return x;
  const int64_t N = x.dim(0), C = x.dim(-1), S = x.numel() / std::max<int64_t>(N * C, 1);
  Tensor out = empty_like(x);
  with_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    SpatialDropoutForward<T> k;
    k.out = out.data<T>(), k.inp = x.data<T>(), k.N = N, k.S = S, k.C = C;
    k.rate = rate, k.seed = draw.seed, k.offset = draw.offset, k.offset_base = draw.base;
    run_kernel(k, x.device());
  });
  if (should_record({x})) {
    record("spatial_dropout", {x}, {out}, [rate, draw, N, S, C](const std::vector<Tensor>& g) {
      Tensor dx = empty_like(g[0]);
      with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        SpatialDropoutBackward<T> k;
        k.dinp = dx.data<T>(), k.dout = g[0].data<T>(), k.N = N, k.S = S, k.C = C;
        k.rate = rate, k.seed = draw.seed, k.offset = draw.offset, k.offset_base = draw.base;
        run_kernel(k, dx.device());
      });
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

// --- global average pooling ----------------------------------------------------------------

Tensor global_average_pool(const Tensor& x) {
  detail::require_defined("global_average_pool", "x", x);
  if (x.rank() < 3) fail("global_average_pool: x {} must be (N, ..., C) of rank >= 3", x.shape().str());
  const int64_t N = x.dim(0), C = x.dim(-1), S = x.numel() / std::max<int64_t>(N * C, 1);
  if (S == 0) fail("global_average_pool: x {} has nothing to average", x.shape().str());
  Tensor out = empty_as(Shape{N, C}, x);
  with_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    GlobalAvgpoolForward<T> k;
    k.out = out.data<T>(), k.inp = x.data<T>(), k.N = N, k.S = S, k.C = C;
    run_kernel(k, x.device());
  });
  if (should_record({x})) {
    record("global_average_pool", {x}, {out}, [in_shape = x.shape(), N, S, C](const std::vector<Tensor>& g) {
      Tensor dx = empty_as(in_shape, g[0]);
      with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        GlobalAvgpoolBackward<T> k;
        k.dinp = dx.data<T>(), k.dout = g[0].data<T>(), k.N = N, k.S = S, k.C = C;
        run_kernel(k, dx.device());
      });
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

// --- LSTM gate step ------------------------------------------------------------------------

LstmState lstm_cell(const Tensor& z, const Tensor& c_prev, Activation act, Activation rec_act) {
  detail::require_rank("lstm_cell", "z", z, 2);
  if (z.dim(1) % 4 != 0) fail("lstm_cell: z {} must hold 4 gates per row", z.shape().str());
  const int64_t M = z.dim(0), U = z.dim(1) / 4;
  if (c_prev.defined()) {
    detail::require_compatible("lstm_cell", "z", z, "c_prev", c_prev);
    detail::require_shape("lstm_cell", "c_prev", c_prev, Shape{M, U});
  }
  Tensor h = empty_as(Shape{M, U}, z), c = empty_as(Shape{M, U}, z), gates = empty_like(z);
  with_dtype(z, [&](auto tag) {
    using T = decltype(tag);
    LstmCellForward<T> k;
    k.h = h.data<T>(), k.c = c.data<T>(), k.gates = gates.data<T>(), k.z = z.data<T>();
    k.c_prev = data_or_null<T>(c_prev), k.M = M, k.U = U, k.act = act, k.rec_act = rec_act;
    run_kernel(k, z.device());
  });
  if (should_record({z, c_prev})) {
    const bool need_c_prev = c_prev.requires_grad();
    record(
        "lstm_cell", {z, c_prev}, {h, c},
        [gates, saved_c = c.detach(), c_prev, M, U, act, rec_act, need_c_prev](const std::vector<Tensor>& g) {
          Tensor dh = g[0].defined() ? g[0] : zeros_as(Shape{M, U}, gates);
          Tensor dz = empty_like(gates);
          Tensor dc_prev = need_c_prev ? empty_like(c_prev) : Tensor();
          with_dtype(dz, [&](auto tag) {
            using T = decltype(tag);
            LstmCellBackward<T> k;
            k.dz = dz.data<T>(), k.dc_prev = data_or_null<T>(dc_prev), k.dh = dh.data<T>();
            k.dc = data_or_null<T>(g[1]), k.gates = gates.data<T>(), k.c = saved_c.data<T>();
            k.c_prev = data_or_null<T>(c_prev), k.M = M, k.U = U, k.act = act, k.rec_act = rec_act;
            run_kernel(k, dz.device());
          });
          return std::vector<Tensor>{dz, dc_prev};
        });
  }
  return {h, c};
}

Tensor lstm_recurrence(const Tensor& xz, const Tensor& R, const Tensor& masks, Activation act,
                       Activation rec_act, bool sequences) {
  const char* op = "lstm_recurrence";
  detail::require_rank(op, "xz", xz, 3);
  detail::require_rank(op, "R", R, 2);
  detail::require_compatible(op, "xz", xz, "R", R);
  const int64_t N = xz.dim(0), S = xz.dim(1), U = R.dim(0);
  detail::require_shape(op, "R", R, Shape{U, 4 * U});
  detail::require_shape(op, "xz", xz, Shape{N, S, 4 * U});
  if (S < 1) fail("{}: xz {} has no timesteps", op, xz.shape().str());
  if (U > kLstmSequenceMaxUnits) fail("{}: {} units exceed the kernel's {}", op, U, kLstmSequenceMaxUnits);
  if (masks.defined()) {
    detail::require_compatible(op, "xz", xz, "masks", masks);
    detail::require_shape(op, "masks", masks, Shape{4, N, U});
  }
  Tensor h_prev = empty_as(Shape{N, S, U}, xz), c = empty_as(Shape{N, S, U}, xz), gates = empty_like(xz);
  Tensor out = sequences ? empty_as(Shape{N, S, U}, xz) : empty_as(Shape{N, U}, xz);
  with_dtype(xz, [&](auto tag) {
    using T = decltype(tag);
    LstmSequenceForward<T> k;
    k.h_prev = h_prev.data<T>(), k.c = c.data<T>(), k.gates = gates.data<T>();
    (sequences ? k.h_seq : k.h_last) = out.data<T>();
    k.xz = xz.data<T>(), k.R = R.data<T>(), k.masks = data_or_null<T>(masks);
    k.N = N, k.steps = S, k.U = U, k.act = act, k.rec_act = rec_act;
    run_kernel(k, xz.device());
  });
  if (should_record({xz, R})) {
    const bool need_xz = xz.requires_grad(), need_R = R.requires_grad();
    record(op, {xz, R}, {out},
           [h_prev, c, gates, R, masks, N, S, U, act, rec_act, sequences, need_xz,
            need_R](const std::vector<Tensor>& g) {
             if (!g[0].defined()) return std::vector<Tensor>{Tensor(), Tensor()};
             Tensor dz = empty_like(gates);  // (N,T,G*U), also xz's gradient
             with_dtype(dz, [&](auto tag) {
               using T = decltype(tag);
               LstmSequenceBackward<T> k;
               k.dz = dz.data<T>();
               (sequences ? k.dh_seq : k.dh_last) = g[0].data<T>();
               k.gates = gates.data<T>(), k.c = c.data<T>(), k.R = R.data<T>(),
               k.masks = data_or_null<T>(masks);
               k.N = N, k.steps = S, k.U = U, k.act = act, k.rec_act = rec_act;
               run_kernel(k, dz.device());
             });
             // dR = sum over samples and steps of (h_{t-1} m_g)^T dz_g: one product of all rows.
             Tensor dR;
             if (need_R && !masks.defined()) {
               dR = matmul(reshape(h_prev, {N * S, U}), reshape(dz, {N * S, 4 * U}), true, false);
             } else if (need_R) {
               std::vector<Tensor> per_gate;
               for (int64_t gate = 0; gate < 4; ++gate) {
                 const Tensor m = repeat_steps(reshape(slice(masks, 0, gate, 1), {N, U}), S);  // (N,T,U)
                 per_gate.push_back(matmul(reshape(mul(h_prev, m), {N * S, U}),
                                           reshape(slice(dz, 2, gate * U, U), {N * S, U}), true, false));
               }
               dR = concat(per_gate, 1);
             }
             return std::vector<Tensor>{need_xz ? dz : Tensor(), dR};
           });
  }
  return out;
}

Tensor convlstm_recurrence(const Tensor& xz, const Tensor& R, const Tensor& masks, Activation act,
                           Activation rec_act, bool sequences) {
  const char* op = "convlstm_recurrence";
  detail::require_rank(op, "xz", xz, 5);
  detail::require_rank(op, "R", R, 4);
  detail::require_compatible(op, "xz", xz, "R", R);
  const int64_t N = xz.dim(0), S = xz.dim(1), HO = xz.dim(2), WO = xz.dim(3);
  const int64_t KH = R.dim(0), KW = R.dim(1), F = R.dim(2), P = HO * WO, M = N * P;
  detail::require_shape(op, "R", R, Shape{KH, KW, F, 4 * F});
  detail::require_shape(op, "xz", xz, Shape{N, S, HO, WO, 4 * F});
  if (S < 1) fail("{}: xz {} has no timesteps", op, xz.shape().str());
  const bool masked = masks.defined();
  if (masked) {
    detail::require_compatible(op, "xz", xz, "masks", masks);
    detail::require_shape(op, "masks", masks, Shape{4, N, HO, WO, F});
  }
  // One kernel per step each way, the recurrent convolution of hm_{t-1} with R included
  // (kernels/lstm.h): without masks hm is h itself; with masks it holds the G masked states
  // h m_g side by side (G*F channels) and the convolution has G groups, so that gate g's output
  // channels of R read h m_g only. R's layout (KH,KW,F,G*F) is the grouped kernel's as it stands.
  const int64_t hm_channels = (masked ? 4 : 1) * F;
  const Device device = xz.device();
  const bool keep = should_record({xz, R});  // backward needs every step; otherwise two slots do
  const int64_t history = keep ? S : std::min<int64_t>(S, 2);
  Tensor gates = empty_as(Shape{history, M, 4 * F}, xz), c = empty_as(Shape{history, M, F}, xz);
  Tensor hm = empty_as(Shape{history, M, hm_channels}, xz);
  Tensor out = sequences ? empty_as(Shape{N, S, HO, WO, F}, xz) : empty_as(Shape{N, HO, WO, F}, xz);
  with_dtype(xz, [&](auto tag) {
    using T = decltype(tag);
    ConvLstmStepForward<T> k;
    k.gates = gates.data<T>(), k.c = c.data<T>(), k.hm = hm.data<T>();
    (sequences ? k.h_seq : k.h_last) = out.data<T>();
    k.xz = xz.data<T>(), k.R = R.data<T>(), k.masks = data_or_null<T>(masks);
    k.N = N, k.steps = S, k.H = HO, k.W = WO, k.F = F, k.KH = KH, k.KW = KW, k.history = history;
    k.act = act, k.rec_act = rec_act;
    for (k.t = 0; k.t < S; ++k.t) run_kernel(k, device);
  });
  if (keep) {
    const bool need_xz = xz.requires_grad(), need_R = R.requires_grad();
    record(op, {xz, R}, {out},
           [R, gates, c, hm, masks, xz_shape = xz.shape(), N, S, HO, WO, F, KH, KW, M, act, rec_act,
            sequences, need_xz, need_R](const std::vector<Tensor>& g) {
             if (!g[0].defined()) return std::vector<Tensor>{Tensor(), Tensor()};
             const Device device = gates.device();
             Tensor dxz = empty_as(xz_shape, gates), dzg = empty_as(Shape{S, M, 4 * F}, gates);
             Tensor dc = zeros_as(Shape{M, F}, gates), dR;
             with_dtype(gates, [&](auto tag) {
               using T = decltype(tag);
               ConvLstmStepBackward<T> k;
               k.dxz = dxz.data<T>(), k.dzg = dzg.data<T>(), k.dc = dc.data<T>();
               (sequences ? k.dh_seq : k.dh_last) = g[0].data<T>();
               k.gates = gates.data<T>(), k.c = c.data<T>(), k.R = R.data<T>(),
               k.masks = data_or_null<T>(masks);
               k.N = N, k.steps = S, k.H = HO, k.W = WO, k.F = F, k.KH = KH, k.KW = KW;
               k.act = act, k.rec_act = rec_act;
               for (k.t = S - 1; k.t >= 0; --k.t) run_kernel(k, device);
               if (!need_R) return;
               dR = zeros_as(R.shape(), gates);
               if (S < 2) return;  // one step: no recurrent term
               // R's gradient: the products of every step t >= 1, dz_t against hm_{t-1}, as one
               // convolution over (T-1)*N images.
               Conv2dBackwardFilter<T> conv;
               conv.g = k.recurrent_conv();
               conv.g.N = static_cast<int>((S - 1) * N);
               conv.dweight = dR.data<T>(), conv.dbias = nullptr;
               conv.dout = dzg.data<T>() + k.dzg_at(0, 1, 0, 0), conv.inp = hm.data<T>();
               run_kernel(conv, device);
             });
             return std::vector<Tensor>{need_xz ? dxz : Tensor(), dR};
           });
  }
  return out;
}

// --- batch normalisation -------------------------------------------------------------------

namespace {
// Rows and channels of the (M,C) view of x, after checking the per-channel parameters.
std::pair<int64_t, int64_t> batch_norm_view(const char* op, const Tensor& x,
                                            std::initializer_list<std::pair<const char*, Tensor>> params) {
  detail::require_defined(op, "x", x);
  if (x.rank() < 1) fail("{}: x must have a channel axis, got shape {}", op, x.shape().str());
  const int64_t C = x.dim(-1);
  for (const auto& [name, p] : params) {
    detail::require_compatible(op, "x", x, name, p);
    detail::require_shape(op, name, p, Shape{C});
  }
  return {x.numel() / std::max<int64_t>(C, 1), C};
}
}  // namespace

BatchNormBatch batch_norm_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  const auto [M, C] = batch_norm_view("batch_norm", x, {{"gamma", gamma}, {"beta", beta}});
  if (M < 1) fail("batch_norm: x {} holds no rows to normalise", x.shape().str());
  Tensor y = empty_like(x), mean = empty_as(Shape{C}, x), var = empty_as(Shape{C}, x),
         invstd = empty_as(Shape{C}, x);
  with_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    BatchnormForwardTrain<T> k;
    k.out = y.data<T>(), k.mean = mean.data<T>(), k.var = var.data<T>(), k.invstd = invstd.data<T>();
    k.inp = x.data<T>(), k.gamma = gamma.data<T>(), k.beta = beta.data<T>(), k.M = M, k.C = C, k.eps = eps;
    run_kernel(k, x.device());
  });
  if (should_record({x, gamma, beta})) {
    record("batch_norm", {x, gamma, beta}, {y},
           [x, gamma, beta, mean, invstd, M = M, C = C](const std::vector<Tensor>& g) {
             Tensor dx = empty_like(x), dgamma = zeros_as(gamma.shape(), gamma),
                    dbeta = zeros_as(beta.shape(), beta);
             with_dtype(x, [&](auto tag) {
               using T = decltype(tag);
               BatchnormBackward<T> k;
               k.dinp = dx.data<T>(), k.dgamma = dgamma.data<T>(), k.dbeta = dbeta.data<T>();
               k.dout = g[0].data<T>(), k.inp = x.data<T>(), k.mean = mean.data<T>();
               k.invstd = invstd.data<T>(), k.gamma = gamma.data<T>(), k.M = M, k.C = C;
               run_kernel(k, x.device());
             });
             return std::vector<Tensor>{dx, dgamma, dbeta};
           });
  }
  return {y, mean, var};
}

namespace {
// out = gamma * (x - mean) / sqrt(var + eps) + beta over the (M,C) view.
Tensor batch_norm_affine(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                         const Tensor& var, int64_t M, int64_t C, float eps) {
  Tensor out = empty_like(x);
  with_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    BatchnormForwardInfer<T> k;
    k.out = out.data<T>(), k.inp = x.data<T>(), k.gamma = gamma.data<T>(), k.beta = beta.data<T>();
    k.moving_mean = mean.data<T>(), k.moving_var = var.data<T>(), k.M = M, k.C = C, k.eps = eps;
    run_kernel(k, x.device());
  });
  return out;
}

// Column sums of the (M,C) view: (C).
Tensor column_sums(const Tensor& x, int64_t M, int64_t C) {
  Tensor out = zeros_as(Shape{C}, x);
  with_dtype(x, [&](auto tag) {
    using T = decltype(tag);
    BiasAddBackward<T> k;
    k.dbias = out.data<T>(), k.dout = x.data<T>(), k.M = M, k.C = C;
    run_kernel(k, x.device());
  });
  return out;
}
}  // namespace

Tensor batch_norm_infer(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& moving_mean,
                        const Tensor& moving_var, float eps) {
  const auto [M, C] = batch_norm_view(
      "batch_norm_infer", x,
      {{"gamma", gamma}, {"beta", beta}, {"moving_mean", moving_mean}, {"moving_var", moving_var}});
  Tensor out = batch_norm_affine(x, gamma, beta, moving_mean, moving_var, M, C, eps);
  if (should_record({x, gamma, beta})) {
    // With fixed statistics the layer is affine per channel: y = gamma * xhat + beta.
    record("batch_norm_infer", {x, gamma, beta}, {out},
           [x, gamma, moving_mean, moving_var, M = M, C = C, eps](const std::vector<Tensor>& g) {
             const Tensor zero = zeros_as(Shape{C}, x),
                          one = Tensor::full(Shape{C}, 1.0, x.dtype(), x.device());
             Tensor dx = batch_norm_affine(g[0], gamma, zero, zero, moving_var, M, C, eps);
             Tensor xhat = batch_norm_affine(x, one, zero, moving_mean, moving_var, M, C, eps);
             Tensor dgamma = column_sums(mul(g[0], xhat), M, C);
             Tensor dbeta = column_sums(g[0], M, C);
             return std::vector<Tensor>{dx, dgamma, dbeta};
           });
  }
  return out;
}

void batch_norm_update_moving(const Tensor& moving_mean, const Tensor& moving_var, const Tensor& mean,
                              const Tensor& var, int64_t rows, double momentum, MovingUpdate update,
                              float variance_factor) {
  const int64_t C = mean.numel();
  for (const auto& [name, t] : {std::pair<const char*, const Tensor&>{"moving_mean", moving_mean},
                                {"moving_var", moving_var},
                                {"var", var}}) {
    detail::require_compatible("batch_norm_update_moving", "mean", mean, name, t);
    detail::require_shape("batch_norm_update_moving", name, t, Shape{C});
  }
  with_dtype(mean, [&](auto tag) {
    using T = decltype(tag);
    BatchnormUpdateMoving<T> k;
    k.moving_mean = moving_mean.data<T>(), k.moving_var = moving_var.data<T>(), k.mean = mean.data<T>();
    k.var = var.data<T>(), k.M = rows, k.C = C, k.update = update, k.variance_factor = variance_factor;
    k.momentum = static_cast<float>(momentum), k.decay = static_cast<float>(1.0 - momentum);
    run_kernel(k, mean.device());
  });
}

}  // namespace hisvid::ops
