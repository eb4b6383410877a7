#!/usr/bin/env python3
"""PyTorch reference for hisvid's benchmarks: the six seed models (models/zoo/*.json,
/work/shared/MODELS.md) written the way a PyTorch user would write them, with Keras
semantics, timed with the same method as bench/bench_models.cpp + bench/step.cpp.

Models (clips of 20 frames of 64 x 64 x 3, float32 uniform [0, 1)):
  lrcn, lrcn_bn, lrcn_small        TimeDistributed Conv2D(+BN)+MaxPool+Dropout, Flatten, nn.LSTM, Dense
  convlstm, convlstm_deep, convlstm_small   hand-written ConvLSTM2D + MaxPooling3D + Dropout, Dense

Layout (--layout): `native` (the default) gives each model its input in PyTorch's own layout,
(N, T, C, H, W), made before the timing, and flattens its last feature maps in PyTorch's order
(C, H, W): what a PyTorch user writes, and no layout copy in the timed step. It is the same model
as Keras's up to the order of the rows of the first weights after Flatten (the self-check
permutes them and compares the outputs). `keras` keeps Keras's channels-last input (as hisvid
takes it) and Keras's Flatten order: each model then permutes its input to NCHW (+ contiguous)
as its first op and its last feature maps back before flattening, inside the timed step.

Keras semantics kept:
  * gate order i, f, c, o (nn.LSTM's i, f, g, o is the same order); LSTM gates sigmoid;
  * ConvLSTM2D (no PyTorch built-in, hand-written): the input conv (padding valid, bias) runs
    over all timesteps at once as one (N*T)-batch conv, the recurrent conv (padding same, no
    bias) runs per step; recurrent activation Keras 2 hard_sigmoid = clip(0.2x + 0.5, 0, 1)
    (NOT torch's F.hardsigmoid, which is x/6 + 0.5), activation tanh; recurrent_dropout 0.2
    draws ONE mask per gate per sequence in training mode (Keras's 4 masks on h): the 4 masked
    copies of h go through one grouped conv (groups=4) whose weight is exactly the Keras
    recurrent kernel (4F, F, 3, 3); in eval mode the same weight runs as a plain conv on h;
  * MaxPooling 'same' (TF pads at the end; output ceil(in/stride)) = max_pool2d(ceil_mode=True)
    for pool == stride (29 -> 15, 13 -> 7, 5 -> 3); 'valid' = floor mode;
  * Dropout inverted; TimeDistributed(Dropout) = elementwise mask (F.dropout);
  * Flatten in Keras channels-last order under --layout keras (permute to N, [T,] H, W, C
    before flattening; --layout native flattens C, H, W, the same features in another order):
    the Dense in-features match (2880 for convlstm, 36000 for convlstm_small, 576 for
    convlstm_deep's Dense(128));
  * BatchNormalization: eps 1e-3, Keras momentum 0.99 = PyTorch momentum 0.01; biased batch
    variance for normalisation, unbiased for the moving variance (PyTorch does the same);
  * Dense softmax + categorical cross-entropy = logits + F.cross_entropy (mean over the batch);
  * Adam(lr 1e-3, betas (0.9, 0.999), eps 1e-7); initializers glorot_uniform / orthogonal /
    zeros + unit_forget_bias (irrelevant to speed, kept for fidelity).

Parameter counts: identical to Keras's EXCEPT nn.LSTM, which has a second bias b_hh: +4*units
parameters per LSTM (lrcn +128, lrcn_bn +256, lrcn_small +128). nn.LSTM is kept on purpose:
it is what a PyTorch user writes and what cuDNN runs. Both counts are printed and stored
(params_torch, params_keras); BatchNorm running mean/variance count as (non-trainable)
parameters as in Keras (704 in lrcn_bn); BN's integer num_batches_tracked is not counted.

Measurement (the same steps as hisvid_bench's):
  train step, batch 4: forward in training mode + F.cross_entropy + backward + Adam step +
                       zero_grad(set_to_none=True);
  eval step, batch 32: model.eval() forward under torch.inference_mode();
  warm-up steps (default 2, compile variants at least 3), then N timed steps, one at a time:
  CPU: time.perf_counter around each step; CUDA: torch.cuda.synchronize() at each step
  boundary and CUDA events around the step (ms_per_step), plus perf_counter wall time
  (wall_ms_per_step). Reported: the median ms/step (also mean/min), clips/s = batch / median.
  hisvid_bench (Google Benchmark, real_time) times the same synchronised steps by the host clock:
  the mean over each repetition's iterations, the median of 5 repetitions. bench/compare
  compares its figures with wall_ms_per_step on CUDA (the same clock on both sides).
  Classes: 4 for every model (as hisvid_bench's StepRunner builds them); --classes changes it.

Variants:
  eager                     all devices;
  compile_max_autotune      torch.compile(mode="max-autotune")    (PyTorch >= 2, CUDA)
  compile_reduce_overhead   torch.compile(mode="reduce-overhead") (PyTorch >= 2, CUDA)
      (the model + loss are compiled, Adam runs eagerly; torch._dynamo.reset() before each
       so no variant hits the recompile limit and falls back to eager silently)
  cuda_graphs               manual torch.cuda.graphs: the whole training step (forward, loss,
      backward, Adam(capturable=True)) captured with static input/target tensors (gradients
      live in the graph's pool and are overwritten by each replay, which stands for zero_grad),
      and the eval forward captured (under no_grad); a step = one replay.      (CUDA)
  On CUDA: TF32 OFF (matmul and cuDNN) for a fair FP32 comparison, cudnn.benchmark = True.
  A variant that fails (compile error, capture error, OOM) is reported as failed with its
  reason; the run goes on. Each CUDA variant runs in its own child process (all models), so
  a crash or a CUDA context left broken by a failed capture costs only that variant
  (--in-process turns this off; --isolate does the same on the CPU). --variant-timeout S stops a
  variant's process after S seconds (a torch.compile variant can compile for minutes), and
  SIGTERM (a time limit around the run) stops the run: either way what was measured is kept in
  the JSON and the rest is reported as stopped. A compiled eval step that fails under inference_mode is
  retried once under no_grad, and says so in its "note".
  --throughput (CUDA only) adds batch 256 train and eval steps.

Usage:
  bench/pytorch_reference.py --check                     # parameter counts + shapes self-check
  bench/pytorch_reference.py --models lrcn,convlstm --device cpu --steps 5 --json out.json
  bench/pytorch_reference.py --device cuda --throughput  # + batch 256 train and eval on GPU
"""

import argparse
import datetime
import gc
import json
import math
import os
import platform
import resource
import signal
import statistics
import sys
import time
import traceback

import torch
import torch.nn as nn
import torch.nn.functional as F

MODEL_NAMES = ["lrcn", "convlstm", "lrcn_bn", "convlstm_deep", "lrcn_small", "convlstm_small"]
VARIANTS = ["eager", "compile_max_autotune", "compile_reduce_overhead", "cuda_graphs"]
COMPILE_MODES = {"compile_max_autotune": "max-autotune", "compile_reduce_overhead": "reduce-overhead"}
SEQ, HEIGHT, WIDTH, CHANNELS = 20, 64, 64, 3
TRAIN_BATCH, EVAL_BATCH, THROUGHPUT_BATCH = 4, 32, 256

# MODELS.md: classes the papers use, Keras total parameter counts at those classes, and the
# Keras output shapes (without the batch) of the stages the self-check traces.
PAPER_CLASSES = {"lrcn": 4, "convlstm": 4, "lrcn_bn": 10, "convlstm_deep": 4, "lrcn_small": 50,
                 "convlstm_small": 50}
PAPER_PARAMS = {"lrcn": 73060, "convlstm": 44524, "lrcn_bn": 783818, "convlstm_deep": 368324,
                "lrcn_small": 2103474, "convlstm_small": 1804562}
PAPER_NONTRAINABLE = {"lrcn_bn": 704}


def expected_shapes(name, classes):
    t = SEQ
    table = {
        "lrcn": [(t, 64, 64, 16), (t, 16, 16, 16), (t, 16, 16, 32), (t, 4, 4, 32), (t, 4, 4, 64),
                 (t, 2, 2, 64), (t, 2, 2, 64), (t, 1, 1, 64), (t, 64), (32,), (classes,)],
        "lrcn_bn": [(t, 64, 64, 32), (t, 32, 32, 32), (t, 32, 32, 64), (t, 16, 16, 64),
                    (t, 16, 16, 128), (t, 8, 8, 128), (t, 8, 8, 128), (t, 4, 4, 128), (t, 2048),
                    (64,), (classes,)],
        "lrcn_small": [(t, 64, 64, 16), (t, 32, 32, 16), (t, 16384), (32,), (classes,)],
        "convlstm": [(t, 62, 62, 4), (t, 31, 31, 4), (t, 29, 29, 8), (t, 15, 15, 8), (t, 13, 13, 14),
                     (t, 7, 7, 14), (t, 5, 5, 16), (t, 3, 3, 16), (2880,), (classes,)],
        "convlstm_deep": [(t, 62, 62, 8), (t, 31, 31, 8), (t, 29, 29, 16), (t, 15, 15, 16),
                          (t, 13, 13, 32), (t, 7, 7, 32), (5, 5, 64), (3, 3, 64), (576,), (128,),
                          (classes,)],
        "convlstm_small": [(t, 62, 62, 4), (t, 31, 31, 4), (t, 29, 29, 8), (t, 15, 15, 8),
                           (36000,), (classes,)],
    }
    return table[name]


# ---------------------------------------------------------------------------------------------
# Layers with Keras semantics
# ---------------------------------------------------------------------------------------------

def hard_sigmoid(x):
    """Keras 2 hard_sigmoid: clip(0.2 x + 0.5, 0, 1)."""
    return torch.clamp(x * 0.2 + 0.5, 0.0, 1.0)


def max_pool_frames(x, pool, padding):
    """Keras MaxPooling2D(pool, strides=pool) on (B, C, H, W). 'same' pads at the end (TF), which
    for pool == stride is exactly ceil_mode (the partial last window takes the max of what exists)."""
    return F.max_pool2d(x, kernel_size=pool, stride=pool, ceil_mode=(padding == "same"))


def glorot_(w, fan_in, fan_out):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        w.uniform_(-limit, limit)


def keras_conv_init_(conv):
    k = conv.weight[0, 0].numel()
    glorot_(conv.weight, conv.in_channels * k, conv.out_channels * k)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def keras_dense(inp, out):
    d = nn.Linear(inp, out)
    glorot_(d.weight, inp, out)
    nn.init.zeros_(d.bias)
    return d


def keras_lstm(inp, units):
    lstm = nn.LSTM(inp, units, batch_first=True)
    glorot_(lstm.weight_ih_l0, inp, 4 * units)
    with torch.no_grad():
        # Keras: orthogonal on the (units, 4*units) recurrent kernel, per the whole matrix.
        q = torch.empty(units, 4 * units)
        nn.init.orthogonal_(q)
        lstm.weight_hh_l0.copy_(q.t())
        lstm.bias_ih_l0.zero_()
        lstm.bias_ih_l0[units:2 * units] = 1.0  # unit_forget_bias
        lstm.bias_hh_l0.zero_()                 # PyTorch's extra bias (Keras has one bias only)
    return lstm


class ConvLSTM2D(nn.Module):
    """Keras 2 ConvLSTM2D(filters, 3x3, padding valid, activation tanh, recurrent_activation
    hard_sigmoid, recurrent_dropout). Input (N, T, C, H, W); output (N, T, F, H', W') with
    return_sequences, else the last h (N, F, H', W')."""

    def __init__(self, in_channels, filters, kernel=3, recurrent_dropout=0.2, return_sequences=True):
        super().__init__()
        self.filters = filters
        self.kernel = kernel
        self.recurrent_dropout = recurrent_dropout
        self.return_sequences = return_sequences
        # Keras kernel (k, k, C, 4F) + bias (4F): the input conv, padding valid.
        self.input_conv = nn.Conv2d(in_channels, 4 * filters, kernel, padding=0, bias=True)
        # Keras recurrent_kernel (k, k, F, 4F), no bias: padding same, stride 1.
        self.recurrent_kernel = nn.Parameter(torch.empty(4 * filters, filters, kernel, kernel))
        keras_conv_init_(self.input_conv)
        with torch.no_grad():
            self.input_conv.bias[filters:2 * filters] = 1.0  # unit_forget_bias
            q = torch.empty(kernel * kernel * filters, 4 * filters)
            nn.init.orthogonal_(q)
            # (kh, kw, F, 4F) -> (4F, F, kh, kw)
            self.recurrent_kernel.copy_(q.view(kernel, kernel, filters, 4 * filters).permute(3, 2, 0, 1))

    def forward(self, x):
        n, t, c, h_in, w_in = x.shape
        f = self.filters
        zx = self.input_conv(x.reshape(n * t, c, h_in, w_in))  # all timesteps at once
        ho, wo = zx.shape[-2], zx.shape[-1]
        zx = zx.view(n, t, 4 * f, ho, wo)
        h = zx.new_zeros(n, f, ho, wo)
        cell = zx.new_zeros(n, f, ho, wo)
        pad = self.kernel // 2
        mask = None
        if self.training and self.recurrent_dropout > 0:
            # One mask per gate per sequence (Keras's 4 recurrent dropout masks), inverted.
            mask = F.dropout(zx.new_ones(n, 4 * f, ho, wo), p=self.recurrent_dropout, training=True)
        outputs = []
        for step in range(t):
            if mask is None:
                zh = F.conv2d(h, self.recurrent_kernel, padding=pad)
            else:
                zh = F.conv2d(h.repeat(1, 4, 1, 1) * mask, self.recurrent_kernel, padding=pad, groups=4)
            z = zx[:, step] + zh
            zi, zf, zc, zo = z.chunk(4, dim=1)
            i = hard_sigmoid(zi)
            fg = hard_sigmoid(zf)
            o = hard_sigmoid(zo)
            cell = fg * cell + i * torch.tanh(zc)
            h = o * torch.tanh(cell)
            if self.return_sequences:
                outputs.append(h)
        return torch.stack(outputs, dim=1) if self.return_sequences else h


# ---------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------

class Traced(nn.Module):
    """Records Keras-layout output shapes (without the batch) when self.trace is a list."""
    trace = None

    def _rec(self, shape):
        if self.trace is not None:
            self.trace.append(tuple(shape))


class LRCN(Traced):
    """TimeDistributed [Conv2D(same, relu) (+BN) + MaxPooling2D + Dropout] blocks, Flatten,
    LSTM, (Dropout), Dense. blocks: (filters, batch_norm, pool, dropout rate or None)."""

    def __init__(self, blocks, units, classes, post_dropout=None, layout="keras"):
        super().__init__()
        self.native = layout == "native"
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        self.blocks = blocks
        c, hw = CHANNELS, HEIGHT
        for filters, bn, pool, _ in blocks:
            conv = nn.Conv2d(c, filters, 3, padding=1)
            keras_conv_init_(conv)
            self.convs.append(conv)
            self.bns.append(nn.BatchNorm2d(filters, eps=1e-3, momentum=0.01) if bn else nn.Identity())
            c, hw = filters, hw // pool
        self.features = c * hw * hw
        self.lstm = keras_lstm(self.features, units)
        self.post_dropout = post_dropout
        self.dense = keras_dense(units, classes)

    def forward(self, x):  # (N, T, H, W, C); native: (N, T, C, H, W)
        n, t = x.shape[0], x.shape[1]
        y = x.reshape(n * t, *x.shape[2:])  # frames
        if not self.native:
            y = y.permute(0, 3, 1, 2).contiguous()  # NCHW
        for (filters, bn, pool, rate), conv, norm in zip(self.blocks, self.convs, self.bns):
            y = norm(F.relu(conv(y)))
            self._rec((t, y.shape[2], y.shape[3], y.shape[1]))
            y = max_pool_frames(y, pool, "valid")
            self._rec((t, y.shape[2], y.shape[3], y.shape[1]))
            if rate is not None:
                y = F.dropout(y, rate, self.training)
        # Flatten: Keras's channels-last order, or PyTorch's (C, H, W).
        y = (y if self.native else y.permute(0, 2, 3, 1)).reshape(n, t, -1)
        self._rec(y.shape[1:])
        _, (h_n, _) = self.lstm(y)
        y = h_n[-1]
        self._rec(y.shape[1:])
        if self.post_dropout is not None:
            y = F.dropout(y, self.post_dropout, self.training)
        y = self.dense(y)
        self._rec(y.shape[1:])
        return y


class ConvLSTMNet(Traced):
    """ConvLSTM2D layers each followed by MaxPooling3D((1,2,2), same) [and Dropout]; the last
    one may return only its final state (then MaxPooling2D(2x2, same)); Flatten; an optional
    hidden Dense(relu) + Dropout; Dense. layers: (filters, return_sequences, dropout or None)."""

    def __init__(self, layers, classes, hidden=None, hidden_dropout=None, layout="keras"):
        super().__init__()
        self.native = layout == "native"
        self.layer_specs = layers
        self.cells = nn.ModuleList()
        c, hw = CHANNELS, HEIGHT
        for filters, seq, _ in layers:
            self.cells.append(ConvLSTM2D(c, filters, return_sequences=seq))
            c, hw = filters, math.ceil((hw - 2) / 2)
        features = c * hw * hw * (SEQ if layers[-1][1] else 1)
        self.hidden = keras_dense(features, hidden) if hidden else None
        self.hidden_dropout = hidden_dropout
        self.dense = keras_dense(hidden if hidden else features, classes)

    def forward(self, x):  # (N, T, H, W, C); native: (N, T, C, H, W)
        y = x if self.native else x.permute(0, 1, 4, 2, 3).contiguous()  # (N, T, C, H, W)
        n, t = y.shape[0], y.shape[1]
        for (filters, seq, rate), cell in zip(self.layer_specs, self.cells):
            y = cell(y)
            if seq:
                self._rec((t, y.shape[3], y.shape[4], y.shape[2]))
                frames = max_pool_frames(y.reshape(n * t, *y.shape[2:]), 2, "same")  # MaxPooling3D (1,2,2)
                y = frames.view(n, t, *frames.shape[1:])
                self._rec((t, y.shape[3], y.shape[4], y.shape[2]))
            else:
                self._rec((y.shape[2], y.shape[3], y.shape[1]))
                y = max_pool_frames(y, 2, "same")  # MaxPooling2D(2x2, same)
                self._rec((y.shape[2], y.shape[3], y.shape[1]))
            if rate is not None:
                y = F.dropout(y, rate, self.training)
        # Flatten: Keras's channels-last (N, T, H, W, C) or (N, H, W, C), or PyTorch's order.
        if not self.native:
            y = y.permute(0, 1, 3, 4, 2) if y.dim() == 5 else y.permute(0, 2, 3, 1)
        y = y.reshape(n, -1)
        self._rec(y.shape[1:])
        if self.hidden is not None:
            y = F.relu(self.hidden(y))
            self._rec(y.shape[1:])
            if self.hidden_dropout is not None:
                y = F.dropout(y, self.hidden_dropout, self.training)
        y = self.dense(y)
        self._rec(y.shape[1:])
        return y


def build_model(name, classes, layout="keras"):
    if name == "lrcn":
        return LRCN([(16, False, 4, 0.25), (32, False, 4, 0.25), (64, False, 2, 0.25), (64, False, 2, None)],
                    32, classes, layout=layout)
    if name == "lrcn_bn":
        return LRCN([(32, True, 2, 0.25), (64, True, 2, 0.25), (128, True, 2, 0.25), (128, True, 2, 0.25)],
                    64, classes, post_dropout=0.25, layout=layout)
    if name == "lrcn_small":
        return LRCN([(16, False, 2, 0.25)], 32, classes, layout=layout)
    if name == "convlstm":
        return ConvLSTMNet([(4, True, 0.2), (8, True, 0.2), (14, True, 0.2), (16, True, None)], classes, layout=layout)
    if name == "convlstm_deep":
        return ConvLSTMNet([(8, True, 0.2), (16, True, 0.2), (32, True, 0.2), (64, False, 0.2)], classes,
                           hidden=128, hidden_dropout=0.2, layout=layout)
    if name == "convlstm_small":
        return ConvLSTMNet([(4, True, 0.2), (8, True, 0.2)], classes, layout=layout)
    raise ValueError(f"unknown model '{name}' (known: {', '.join(MODEL_NAMES)})")


def param_counts(model):
    """(params_torch, params_keras, non_trainable): PyTorch's parameters + BN running stats;
    Keras's = the same without nn.LSTM's second bias b_hh."""
    trainable = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    b_hh = sum(m.bias_hh_l0.numel() for m in model.modules() if isinstance(m, nn.LSTM))
    return trainable + buffers, trainable + buffers - b_hh, buffers


# ---------------------------------------------------------------------------------------------
# Self-check
# ---------------------------------------------------------------------------------------------

def native_layout_matches(name, classes):
    """The model under --layout native computes what it computes under --layout keras, given the
    same weights but for the rows of the first weights after Flatten (LRCN: the LSTM's input
    kernel; ConvLSTM: the first Dense's) permuted from Keras's (..., H, W, C) order to (..., C, H, W)."""
    keras = build_model(name, classes).eval()
    native = build_model(name, classes, layout="native").eval()
    state = keras.state_dict()
    before_flatten = [s for s in expected_shapes(name, classes) if len(s) >= 3][-1]
    if isinstance(keras, LRCN):
        before_flatten, first = before_flatten[1:], "lstm.weight_ih_l0"  # per frame
    else:
        first = "hidden.weight" if keras.hidden is not None else "dense.weight"
    order = torch.arange(math.prod(before_flatten)).reshape(before_flatten)
    order = order.movedim(-1, -3).reshape(-1)  # native feature j is Keras's feature order[j]
    state[first] = state[first][:, order]
    native.load_state_dict(state)
    x = torch.rand(2, SEQ, HEIGHT, WIDTH, CHANNELS)
    with torch.inference_mode():
        return torch.allclose(keras(x), native(x.permute(0, 1, 4, 2, 3).contiguous()), atol=1e-5)


def self_check(models):
    torch.manual_seed(0)
    ok = True
    print(f"torch {torch.__version__}: parameter counts and shapes at the papers' class counts (MODELS.md)")
    print(f"{'model':<15} {'classes':>7} {'PyTorch':>10} {'Keras':>10} {'MODELS.md':>10} {'LSTM b_hh':>9} "
          f"{'non-train':>9}  shapes  result")
    for name in models:
        classes = PAPER_CLASSES[name]
        model = build_model(name, classes)
        p_torch, p_keras, nontrain = param_counts(model)
        expected = PAPER_PARAMS[name]
        good = p_keras == expected and nontrain == PAPER_NONTRAINABLE.get(name, 0)
        # Output shapes of every stage (eval mode and train mode, batch 2).
        shapes_ok = True
        for training in (False, True):
            model.train(training)
            model.trace = []
            x = torch.rand(2, SEQ, HEIGHT, WIDTH, CHANNELS)
            if training:
                out = model(x)
                F.cross_entropy(out, torch.arange(2) % classes).backward()
            else:
                with torch.inference_mode():
                    out = model(x)
            traced, model.trace = model.trace, None
            if traced != expected_shapes(name, classes) or tuple(out.shape) != (2, classes):
                shapes_ok = False
                print(f"  {name}: shapes {traced} != {expected_shapes(name, classes)}")
        good = good and shapes_ok
        ok = ok and good
        print(f"{name:<15} {classes:>7} {p_torch:>10,} {p_keras:>10,} {expected:>10,} {p_torch - p_keras:>+9,} "
              f"{nontrain:>9,}  {'ok' if shapes_ok else 'BAD':<6}  {'OK' if good else 'MISMATCH'}")

    # Semantics spot checks.
    x = torch.randn(3, 5, 29, 29)
    tf_same = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 2, 2)
    pool_ok = torch.equal(max_pool_frames(x, 2, "same"), tf_same) and \
        [max_pool_frames(torch.zeros(1, 1, s, s), 2, "same").shape[-1] for s in (62, 29, 13, 5)] == [31, 15, 7, 3]
    hs = hard_sigmoid(torch.tensor([-3.0, -2.5, 0.0, 1.0, 2.5, 3.0]))
    hs_ok = torch.allclose(hs, torch.tensor([0.0, 0.0, 0.5, 0.7, 1.0, 1.0]))
    cell = ConvLSTM2D(3, 4)
    h = torch.randn(2, 4, 9, 9)
    plain = F.conv2d(h, cell.recurrent_kernel, padding=1)
    grouped = F.conv2d(h.repeat(1, 4, 1, 1), cell.recurrent_kernel, padding=1, groups=4)
    group_ok = torch.allclose(plain, grouped, atol=1e-5)
    # Per-gate masks: with mask m only on gate g's copy of h, only gate g's pre-activation changes.
    m = torch.ones(2, 16, 9, 9)
    m[:, 4:8] = 0.0  # drop h entirely for the forget gate
    zg = F.conv2d(h.repeat(1, 4, 1, 1) * m, cell.recurrent_kernel, padding=1, groups=4)
    mask_ok = torch.allclose(zg[:, :4], plain[:, :4], atol=1e-5) and bool((zg[:, 4:8] == 0).all()) and \
        torch.allclose(zg[:, 8:], plain[:, 8:], atol=1e-5)
    bn = build_model("lrcn_bn", 10).bns[0]
    bn_ok = bn.eps == 1e-3 and abs(bn.momentum - 0.01) < 1e-12
    layout_ok = all(native_layout_matches(name, PAPER_CLASSES[name]) for name in models)
    for label, good in (("MaxPooling same == TF pad-at-end (-inf), 62/29/13/5 -> 31/15/7/3", pool_ok),
                        ("hard_sigmoid = clip(0.2x+0.5, 0, 1)", hs_ok),
                        ("ConvLSTM grouped recurrent conv == plain conv (eval path)", group_ok),
                        ("ConvLSTM recurrent dropout masks act per gate", mask_ok),
                        ("BatchNorm eps 1e-3, momentum 0.01 (Keras 0.99)", bn_ok),
                        ("--layout native == keras, the first weights after Flatten permuted", layout_ok)):
        print(f"  {'ok ' if good else 'BAD'} {label}")
        ok = ok and good
    print("self-check:", "PASSED" if ok else "FAILED")
    print("note: PyTorch's nn.LSTM has a second bias b_hh (+4*units per LSTM); Keras count = PyTorch count - b_hh.")
    return ok


# ---------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------

def torch_major():
    try:
        return int(torch.__version__.split(".")[0])
    except ValueError:
        return 0


def cpu_model_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def variant_skip_reason(variant, device):
    if variant == "eager":
        return None
    if variant == "cuda_graphs":
        return None if device == "cuda" else "CUDA graphs need a CUDA device"
    if torch_major() < 2 or not hasattr(torch, "compile"):
        return f"torch {torch.__version__} < 2 has no torch.compile"
    if device != "cuda":
        return "compile variants are measured on CUDA only"
    return None


def dynamo():
    import importlib
    return importlib.import_module("torch._dynamo")


def mark_cudagraph_step():
    fn = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
    if fn is not None:
        fn()


class LossModule(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        return F.cross_entropy(self.model(x), y)


def make_step(model, kind, variant, device, x, y, eval_grad_mode="inference_mode"):
    """Returns (step_fn, extra_warmup). The model is already on the device. eval_grad_mode:
    inference_mode (the default, as asked) or no_grad (the fallback for a compile variant that
    fails under inference_mode)."""
    adam_kwargs = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    if kind == "train":
        model.train()
    else:
        model.eval()

    if variant == "eager":
        if kind == "train":
            opt = torch.optim.Adam(model.parameters(), **adam_kwargs)

            def step():
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            return step, 0

        def step():
            with torch.inference_mode():
                model(x)
        return step, 0

    if variant in COMPILE_MODES:
        dynamo().reset()
        mode = COMPILE_MODES[variant]
        if kind == "train":
            opt = torch.optim.Adam(model.parameters(), **adam_kwargs)
            compiled = torch.compile(LossModule(model), mode=mode, dynamic=False)

            def step():
                mark_cudagraph_step()
                loss = compiled(x, y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            return step, 1
        compiled = torch.compile(model, mode=mode, dynamic=False)
        grad_ctx = torch.inference_mode if eval_grad_mode == "inference_mode" else torch.no_grad

        def step():
            mark_cudagraph_step()
            with grad_ctx():
                compiled(x)
        return step, 1

    if variant == "cuda_graphs":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        static = []  # the graph's output tensors, kept alive with it
        if kind == "train":
            opt = torch.optim.Adam(model.parameters(), capturable=True, **adam_kwargs)
            with torch.cuda.stream(side):  # warm-up on a side stream (cuDNN autotune, Adam state)
                for _ in range(3):
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(model(x), y).backward()
                    opt.step()
            torch.cuda.current_stream().wait_stream(side)
            opt.zero_grad(set_to_none=True)  # backward allocates the grads inside the graph's pool
            with torch.cuda.graph(graph):
                static_loss = F.cross_entropy(model(x), y)
                static_loss.backward()
                opt.step()
            static.append(static_loss)
        else:
            with torch.cuda.stream(side):
                with torch.no_grad():
                    for _ in range(3):
                        model(x)
            torch.cuda.current_stream().wait_stream(side)
            with torch.no_grad():
                with torch.cuda.graph(graph):
                    static.append(model(x))
        torch.cuda.synchronize()

        def step():
            graph.replay()
        step.keep = (graph, static, model)
        return step, 0

    raise ValueError(f"unknown variant '{variant}' (known: {', '.join(VARIANTS)})")


def measure(step, device, warmup, steps):
    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times, walls = [], []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            walls.append((time.perf_counter() - t0) * 1e3)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux; process peak
    return times, walls, peak


def run_one(name, kind, batch, device, variant, args):
    entry = {"model": name, "step": kind, "batch": batch, "device": device, "variant": variant,
             "classes": args.classes}
    torch.manual_seed(1)
    model = build_model(name, args.classes, args.layout)
    entry["params_torch"], entry["params_keras"], _ = param_counts(model)
    entry["layout"] = args.layout
    skip = variant_skip_reason(variant, device)
    if skip:
        entry.update(status="skipped", reason=skip)
        return entry
    step = None
    try:
        model = model.to(device)
        gen = torch.Generator().manual_seed(2)
        frame = (CHANNELS, HEIGHT, WIDTH) if args.layout == "native" else (HEIGHT, WIDTH, CHANNELS)
        x = torch.rand(batch, SEQ, *frame, generator=gen).to(device)
        y = (torch.arange(batch) % args.classes).to(device)
        steps = args.steps if args.steps is not None else (10 if device == "cpu" else 50)
        t_build = time.perf_counter()
        try:
            step, extra_warmup = make_step(model, kind, variant, device, x, y)
            warmup = args.warmup + extra_warmup
            times, walls, peak = measure(step, device, warmup, steps)
        except Exception as e:  # noqa: BLE001
            if not (kind == "eval" and variant in COMPILE_MODES):
                raise
            # A compiled eval step that fails under inference_mode: retry once under no_grad.
            first = f"{type(e).__name__}: {e}".strip().splitlines()
            entry["note"] = ("eval under torch.no_grad: inference_mode failed: " + (first[0] if first else ""))[:500]
            if args.verbose:
                traceback.print_exc()
            step = None
            gc.collect()
            step, extra_warmup = make_step(model, kind, variant, device, x, y, eval_grad_mode="no_grad")
            warmup = args.warmup + extra_warmup
            times, walls, peak = measure(step, device, warmup, steps)
        median = statistics.median(times)
        entry.update(status="ok", ms_per_step=median, mean_ms=statistics.fmean(times), min_ms=min(times),
                     clips_per_s=batch * 1000.0 / median, peak_memory_mb=peak, steps=steps, warmup=warmup,
                     setup_and_warmup_s=time.perf_counter() - t_build - sum(times) / 1e3,
                     timing="cuda_events" if device == "cuda" else "perf_counter")
        if walls:
            entry["wall_ms_per_step"] = statistics.median(walls)
        timed = walls or times  # the figure bench/compare uses
        if len(timed) > 1:  # the spread of single steps (hisvid_bench's is of repetitions' means)
            entry["cv"] = statistics.stdev(timed) / statistics.fmean(timed)
    except Exception as e:  # noqa: BLE001 -- a failing variant is a result, not a crash
        msg = f"{type(e).__name__}: {e}".strip().splitlines()
        entry.update(status="failed", reason=(msg[0] if msg else type(e).__name__)[:500])
        if args.verbose:
            traceback.print_exc()
    finally:
        del step, model
        gc.collect()
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    return entry


def fmt(v, spec):
    if isinstance(v, (int, float)):
        return format(v, spec)
    return "-".rjust(int(spec.split(".")[0]))


def configure_cuda(tf32=False):
    """TF32 off (a fair FP32 comparison; on with --tf32, as hisvid's --tf32) and cuDNN
    autotuning; returns the settings read back."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    if hasattr(torch, "set_float32_matmul_precision"):
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return {"matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}


def configure_dynamo():
    """Raises the recompile limit (each compiled run also starts from a reset, see make_step)."""
    if torch_major() < 2:
        return
    try:
        cfg = dynamo().config
        for attr in ("recompile_limit", "cache_size_limit"):
            if hasattr(cfg, attr):
                setattr(cfg, attr, max(getattr(cfg, attr), 64))
                break
    except Exception:  # noqa: BLE001 -- a private knob; never worth a crash
        pass


ROW_HEADER = (f"{'model':<15} {'step':<5} {'batch':>5} {'device':<6} {'variant':<24} {'ms/step':>10} "
              f"{'clips/s':>10} {'peak MB':>9} {'params torch':>12} {'keras':>10}")


def print_row(entry):
    status = "" if entry["status"] == "ok" else f"  {entry['status'].upper()}: {entry.get('reason', '')}"
    print(f"{entry['model']:<15} {entry['step']:<5} {entry['batch']:>5} {entry['device']:<6} {entry['variant']:<24} "
          f"{fmt(entry.get('ms_per_step'), '10.2f')} {fmt(entry.get('clips_per_s'), '10.1f')} "
          f"{fmt(entry.get('peak_memory_mb'), '9.0f')} {entry.get('params_torch', 0):>12,} "
          f"{entry.get('params_keras', 0):>10,}{status}", flush=True)


def batches_for(device, args):
    batches = [("train", TRAIN_BATCH), ("eval", EVAL_BATCH)]
    if args.throughput and device == "cuda":
        batches += [("train", THROUGHPUT_BATCH), ("eval", THROUGHPUT_BATCH)]
    return batches


class Stopped(BaseException):
    """SIGTERM, from a time limit around the run (scripts/gpu-check's, bench/compare's
    --time-limit): the steps measured so far are kept and written; the rest are reported as
    stopped. A BaseException, so that a variant's `except Exception` does not take it for its
    own failure."""


def stop_on_sigterm(signum, frame):
    # Once: `timeout` signals the whole process group and bench/compare its child as well, so a
    # second SIGTERM follows within milliseconds; raised again inside the clean-up, it would lose
    # what was measured.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped()


def die_with_parent():
    """A worker is killed when the process that started it ends, however it ends: a SIGKILL of
    that process (the end of a device call) runs no `finally`, and the worker, in a session of
    its own, would go on measuring into the next call (Linux's PR_SET_PDEATHSIG; elsewhere
    nothing is done)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The parent may have gone before the request was made (the worker then belongs to init or
    # to a subreaper): its pid, passed down, is no longer this process's parent.
    parent = os.environ.get("HISVID_PYTORCH_PARENT")
    if parent is not None and os.getppid() != int(parent):
        os._exit(1)


def run_worker(models, variant, device, args, report):
    """Runs one variant over all models in a child process (CUDA; the CPU with --isolate), so
    that a crash, a poisoned CUDA context (a failed graph capture) or compile state cannot
    affect the other variants. The
    worker writes its JSON after each step measured: a worker stopped by --variant-timeout or by
    SIGTERM keeps what it measured, and the rest is reported as stopped (re-raised on SIGTERM)."""
    import subprocess
    import tempfile
    fd, tmp = tempfile.mkstemp(prefix=f"pytorch_ref_{variant}_", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--device", device, "--variants", variant,
           "--models", ",".join(models), "--json", tmp, "--warmup", str(args.warmup), "--classes", str(args.classes)]
    for flag, value in (("--steps", args.steps), ("--threads", args.threads)):
        if value is not None:
            cmd += [flag, str(value)]
    cmd += ["--throughput"] if args.throughput else []
    cmd += ["--tf32"] if args.tf32 else []
    cmd += ["--layout", args.layout]
    cmd += ["--verbose"] if args.verbose else []
    # In a session of its own, so that stopping it reaches the processes it started too
    # (torch.compile's compile workers); whatever stops this process (a time limit, Ctrl-C, an
    # error) stops that session first, in the `finally`.
    proc, stopped, sigterm, err, done = None, None, False, "", []
    try:
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                env=dict(os.environ, HISVID_PYTORCH_PARENT=str(os.getpid())))
        try:
            _, err = proc.communicate(timeout=args.variant_timeout)
        except subprocess.TimeoutExpired:
            stopped = f"stopped after {args.variant_timeout:g} s (--variant-timeout)"
        except Stopped:
            stopped, sigterm = "stopped by SIGTERM (a time limit around the run)", True
    finally:
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, rest = proc.communicate()
            err = (err or "") + (rest or "")
        try:
            with open(tmp) as f:
                worker = json.load(f)
            done = worker.get("results", [])
            # What the worker's torch really ran with (TF32, cudnn.benchmark), per variant.
            report.setdefault("worker_cuda_settings", {})[variant] = worker.get("cuda_settings")
        except (OSError, ValueError):
            pass
        for path in (tmp, tmp + ".tmp"):
            if os.path.exists(path):
                os.remove(path)
        report["results"] += done  # kept even when this process is being stopped
    if args.verbose or proc.returncode != 0:
        sys.stderr.write(err[-4000:])
    have = {(r["model"], r["step"], r["batch"]) for r in done}
    tail = [ln for ln in err.strip().splitlines() if ln.strip()]
    why = stopped or f"worker process exited with {proc.returncode}" + (f": {tail[-1][:300]}" if tail else "")
    for name in models:
        for kind, batch in batches_for(device, args):
            if (name, kind, batch) not in have:
                entry = {"model": name, "step": kind, "batch": batch, "device": device, "variant": variant,
                         "classes": args.classes, "status": "failed", "reason": why}
                entry["params_torch"], entry["params_keras"], _ = param_counts(build_model(name, args.classes))
                report["results"].append(entry)
                print_row(entry)
    if sigterm:
        raise Stopped()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODEL_NAMES), help="comma list (default: all six)")
    ap.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto", "all"],
                    help="auto/all: the CPU, and CUDA when available (as hisvid_bench)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 10 on CPU, 50 on CUDA)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up steps (default 2, as hisvid_bench)")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON")
    ap.add_argument("--threads", type=int, default=None, help="CPU torch threads (default: torch's)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--classes", type=int, default=4, help="output classes (default 4, as hisvid_bench)")
    ap.add_argument("--throughput", action="store_true", help=f"also batch {THROUGHPUT_BATCH} train and eval (CUDA)")
    ap.add_argument("--tf32", action="store_true", help="CUDA: TF32 tensor cores for matmuls and cuDNN (default off)")
    ap.add_argument("--variant-timeout", type=float, default=None, metavar="S",
                    help="stop a variant's process (CUDA, or --isolate) after S seconds (a torch.compile variant can take "
                         "minutes); what it measured is kept, the rest reported as stopped")
    ap.add_argument("--layout", default="native", choices=["native", "keras"],
                    help="the input's layout: native (N, T, C, H, W), made before the timing, the default; keras "
                         "(N, T, H, W, C), permuted inside the timed step (see the module's help)")
    ap.add_argument("--check", action="store_true", help="self-check parameter counts and shapes, then exit")
    ap.add_argument("--in-process", action="store_true",
                    help="run CUDA variants in this process (default: one child process per CUDA variant)")
    ap.add_argument("--isolate", action="store_true",
                    help="each variant in a process of its own on the CPU too (always so on CUDA)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failing variants")
    args = ap.parse_args(argv)
    if args.worker:
        die_with_parent()

    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODEL_NAMES:
            ap.error(f"unknown model '{m}' (known: {', '.join(MODEL_NAMES)})")
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant '{v}' (known: {', '.join(VARIANTS)})")
    if args.variant_timeout is not None and not args.variant_timeout > 0:
        ap.error(f"--variant-timeout {args.variant_timeout:g}: must be more than 0 seconds")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.check:
        return 0 if self_check(models) else 1

    notes = []
    cuda_ok = torch.cuda.is_available()
    if args.device == "cuda" and not cuda_ok:
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else \
        (["cpu", "cuda"] if cuda_ok else ["cpu"])
    if args.device in ("auto", "all") and not cuda_ok:
        notes.append("no CUDA device: GPU runs and GPU-only variants (compile_*, cuda_graphs) skipped")
    cuda_settings = configure_cuda(args.tf32) if cuda_ok else None
    configure_dynamo()

    # Skipped variants are reported once per device, not per model.
    plan, skipped = [], []
    for device in devices:
        for variant in variants:
            reason = variant_skip_reason(variant, device)
            if reason:
                skipped.append({"device": device, "variant": variant, "reason": reason})
                notes.append(f"{device}: {variant} skipped: {reason}")
            else:
                plan.append((device, variant))
    if args.throughput and "cuda" not in devices:
        notes.append(f"--throughput (batch {THROUGHPUT_BATCH}) is GPU-only: skipped")

    cpu_name = cpu_model_name()
    gpu_name = torch.cuda.get_device_name(0) if "cuda" in devices else None
    report = {
        "torch_version": torch.__version__,
        "device_name": gpu_name or cpu_name,
        "cpu_name": cpu_name,
        "gpu_name": gpu_name,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "cuda_version": torch.version.cuda if cuda_ok else None,
        "cudnn_version": torch.backends.cudnn.version() if cuda_ok else None,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cuda_settings": cuda_settings,
        "layout": args.layout,
        "statistic": "median over timed steps (hisvid_bench: the median of 5 repetitions' means)",
        "notes": notes,
        "skipped": skipped,
        "results": [],
    }
    if not args.worker:
        print(f"# PyTorch {torch.__version__} | CPU: {cpu_name} ({os.cpu_count()} cores, torch threads "
              f"{torch.get_num_threads()})" + (f" | GPU: {gpu_name} (TF32 {'on' if args.tf32 else 'off'}, cudnn.benchmark)" if gpu_name else ""))
        for note in notes:
            print(f"# note: {note}")
        print(ROW_HEADER)
        print("-" * len(ROW_HEADER), flush=True)
    isolate = not args.in_process and not args.worker
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    stopped = False
    try:
        for device in devices:
            device_plan = [v for d, v in plan if d == device]
            if isolate and (device == "cuda" or args.isolate):
                for variant in device_plan:
                    try:
                        run_worker(models, variant, device, args, report)
                    finally:
                        if args.json:
                            write_json(args.json, report)
                continue
            for name in models:
                for variant in device_plan:
                    for kind, batch in batches_for(device, args):
                        entry = run_one(name, kind, batch, device, variant, args)
                        report["results"].append(entry)
                        print_row(entry)
                        if args.json:  # keep partial results if a later run dies hard
                            write_json(args.json, report)
    except Stopped:
        stopped = True
        report["notes"].append("stopped by SIGTERM (a time limit around the run): the steps not listed "
                               "were not measured")
        print(f"# note: {report['notes'][-1]}", flush=True)
    if not args.worker:
        print("# params: PyTorch counts nn.LSTM's second bias b_hh (+4*units per LSTM); 'keras' is Keras's count.")
        print("# ms/step: median; CUDA timed with events between synchronised step boundaries; "
              "CPU peak MB is the process ru_maxrss.")
    if args.json:
        write_json(args.json, report)
        if not args.worker:
            print(f"# wrote {args.json}")
    return 1 if stopped else 0


def write_json(path, report):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
