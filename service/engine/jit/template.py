"""The tier-1 template: an Architecture in, the Python source of its specialised kernels out.

The generated module is kernels.py's one-sample math with the architecture fixed: the layers
are written out one after the other (no loop over layers), and every size, offset, activation,
loss, bias and gradient mode is a constant. numba then compiles loops of known length over
buffers at known offsets, with no branch on a kind and no lookup in `layout`. The text below is
kernels.sample_iteration's, line for line (`FORWARD_LAYER`, `BACKWARD_LAYER`), calling the same
building blocks: the scalar helpers (activate, derivative) with constant kinds, and
output_loss_and_delta, softmax_rows and last_sample_velocity with a frozen `LAYOUT` (a global
array numba compiles in as a constant).

What is specialised, and why only that (measured with benchmarks/engine.py, docs/benchmarks.md):

    sample_epochs(params, velocity, work, inputs, targets, orders, learning_rate, momentum,
                  target_loss, epoch_losses) -> epochs run
        Train with batch size 1, the article's iteration. Per sample the generic kernel spends
        most of its time finding its way (layer loop, offsets, kinds): an XOR epoch took
        1.6-2x a hand-written loop generic, 1.05-1.2x specialised (benchmarks/tiers.py).
    sample_step(params, velocity, work, inputs, targets, learning_rate) -> loss
        Step: one sample, every intermediate value kept (nets, outputs, errors, deltas).
    predict_sample(outputs, inputs, params, work) -> inputs not finite
        Predict of one sample (inputs [n_in], outputs [1, n_out]), the latency case.

Batches (Train with batch_size > 1, Predict of many rows) stay on the generic kernels: their
per-layer work is amortised over the rows and goes through BLAS, and the generic code with the
architecture's numbers frozen in measured no faster (digits 64-64-10 in batches of 32: 27.7
against 26.2 ms), while compiling it per architecture took several seconds more (numba inlines
every building block once per layer).

Arguments are those of the kernels.py functions minus `layout` and `kinds`; `work` is
Architecture.work_buffers(1) (rows nets, outputs, errors, deltas, targets).
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

from .. import kernels

# Bump when the generated text changes in a way the digest below does not see.
TEMPLATE_VERSION = 1

_KIND_NAMES = {kernels.SIGMOID: "SIGMOID", kernels.TANH: "TANH", kernels.RELU: "RELU",
               kernels.LINEAR: "LINEAR", kernels.SOFTMAX: "SOFTMAX"}
_LOSS_NAMES = {kernels.MSE: "MSE", kernels.CROSS_ENTROPY: "CROSS_ENTROPY"}
_MODE_NAMES = {kernels.EXACT: "EXACT", kernels.ARTICLE: "ARTICLE"}


def source_digest() -> str:
    """What the generated code depends on besides the architecture: kernels.py (its building
    blocks are compiled into the specialised kernels, and numba's cache would not notice them
    change) and this template."""
    digest = hashlib.sha256(str(TEMPLATE_VERSION).encode())
    for path in (Path(kernels.__file__), Path(__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# One layer, one sample: kernels.sample_iteration's loops with the layer's numbers. A line that
# ends in "# trace" is kept only where a value is read later (always in sample_step, which
# returns them all).

# net_j = b_j + sum_i W_ji a_i, a_j = f(net_j). Softmax: the whole row, after the loop.
FORWARD_LAYER = """\
# layer {layer}: {fan_in} -> {fan_out} {kind_name}; net_j = b_j + sum_i W_ji a_i, a_j = f(net_j)
for j in range({first}, {fan_out}):
    net = {bias_j}
    for i in range({fan_in}):
        net += params[{w_at} + j * {fan_in} + i] * a[{in_at} + i]
    z[{out_at} + j] = net  # trace
    a[{out_at} + j] = activate(net, {kind_name})
"""

# The same for a wide layer, four neurons a pass: each a_i loaded once feeds four dot products,
# which run side by side instead of each waiting for its own sum (a one-sample digits Predict:
# 0.57 -> 0.32 us in the kernel). The neurons past the last four go one by one (FORWARD_LAYER).
FORWARD_LAYER_BY_FOUR = """\
# layer {layer}: {fan_in} -> {fan_out} {kind_name}; net_j = b_j + sum_i W_ji a_i, a_j = f(net_j),
# four neurons a pass
for j in range(0, {by_four}, 4):
    net0 = {bias_j0}
    net1 = {bias_j1}
    net2 = {bias_j2}
    net3 = {bias_j3}
    for i in range({fan_in}):
        x = a[{in_at} + i]
        net0 += params[{w_at} + j * {fan_in} + i] * x
        net1 += params[{w_at} + (j + 1) * {fan_in} + i] * x
        net2 += params[{w_at} + (j + 2) * {fan_in} + i] * x
        net3 += params[{w_at} + (j + 3) * {fan_in} + i] * x
    z[{out_at} + j] = net0  # trace
    z[{out_at} + j + 1] = net1  # trace
    z[{out_at} + j + 2] = net2  # trace
    z[{out_at} + j + 3] = net3  # trace
    a[{out_at} + j] = activate(net0, {kind_name})
    a[{out_at} + j + 1] = activate(net1, {kind_name})
    a[{out_at} + j + 2] = activate(net2, {kind_name})
    a[{out_at} + j + 3] = activate(net3, {kind_name})
"""

# From the layer's deltas d_j, one pass over its weights, input by input: e_i = sum_j d_j W_ji
# with the forward pass's weights, the update W_ji += lr a_i d_j while W_ji is at hand (with
# momentum m: v_ji = m v_ji + lr a_i d_j, W_ji += v_ji).
BACKWARD_LAYER = """\
# layer {layer}: {fan_in} -> {fan_out}; e_i = sum_j d_j W_ji, W_ji += lr a_i d_j
for i in range({fan_in}):
    x = a[{in_at} + i]
    lr_x = learning_rate * x
    err = 0.0
    for j in range({fan_out}):
        k = {w_at} + j * {fan_in} + i
        err += d[{out_at} + j] * params[k]
        step = lr_x * d[{out_at} + j]
        if momentum != 0.0:
            step = velocity[k] = momentum * velocity[k] + step
        params[k] += step
"""

# ... above the first layer: the error and delta of the unit feeding input i, d_i = e_i f'(.)
BELOW_DELTA = """\
    e[{in_at} + i] = err  # trace
    d[{in_at} + i] = err * derivative(z[{in_at} + i], x, HIDDEN, MODE)
"""

# ... and when the layer below has biases, b_i += lr d_i (a bias is the weight of an input 1).
BELOW_BIAS = """\
    k = {b_at} + i
    step = learning_rate * d[{in_at} + i]
    if momentum != 0.0:
        step = velocity[k] = momentum * velocity[k] + step
    params[k] += step
"""

OUTPUT_BIAS = """\
# output biases: b_j += lr d_j
for j in range({fan_out}):
    k = {b_at} + j
    step = learning_rate * d[{out_at} + j]
    if momentum != 0.0:
        step = velocity[k] = momentum * velocity[k] + step
    params[k] += step
"""


class _Layer:
    """One layer's numbers for the templates (one sample: unit offsets are unit numbers)."""

    def __init__(self, arch, layer: int):
        fan_in, fan_out, w_at, b_at, u_at = (int(v) for v in arch.layout[layer])
        last = layer == arch.n_layers - 1
        kind = int(arch.output_activation if last else arch.hidden_activation)
        # Four neurons a pass where the dot products are long enough to vectorise.
        self.by_four = fan_out - fan_out % 4 if fan_in >= kernels.WIDE_FAN_IN else 0
        self.fields = dict(
            layer=layer, fan_in=fan_in, fan_out=fan_out, w_at=w_at, b_at=b_at,
            in_at=u_at - fan_in, out_at=u_at, kind_name=_KIND_NAMES[kind],
            first=self.by_four, by_four=self.by_four,
            bias_j=f"params[{b_at} + j]" if b_at >= 0 else "0.0",
            **{f"bias_j{k}": (f"params[{b_at} + j + {k}]" if k else f"params[{b_at} + j]")
               if b_at >= 0 else "0.0"
               for k in range(4)})
        self.has_bias = b_at >= 0
        self.last = last
        self.softmax = kind == kernels.SOFTMAX


def _block(text: str, indent: int, keep_trace: bool, **fields) -> str:
    lines = []
    for line in text.format(**fields).splitlines():
        if line.endswith("# trace"):
            if not keep_trace:
                continue
            line = line[: -len("# trace")].rstrip()
        lines.append(line)
    return textwrap.indent("\n".join(lines) + "\n", " " * indent)


def _forward(arch, layers, indent: int, trace: bool) -> str:
    # Without the trace, a hidden net is kept only where f' reads it (relu, exact), and the
    # output's always (the loss reads it).
    hidden_needs_net = (int(arch.hidden_activation) == kernels.RELU
                        and int(arch.gradient_mode) == kernels.EXACT)
    out = []
    for layer in layers:
        keep = trace or layer.last or hidden_needs_net
        if layer.by_four:
            out.append(_block(FORWARD_LAYER_BY_FOUR, indent, keep, **layer.fields))
        if layer.by_four < layer.fields["fan_out"]:
            text = FORWARD_LAYER if not layer.by_four else FORWARD_LAYER.split("\n", 1)[1]
            out.append(_block(text, indent, keep, **layer.fields))
    if layers[-1].softmax:
        out.append(_block("softmax_rows(a, z, {out_at}, 1, {fan_out})\n", indent, True,
                          **layers[-1].fields))
    return "".join(out)


def _backward(layers, indent: int, trace: bool) -> str:
    out = []
    if layers[-1].has_bias:
        out.append(_block(OUTPUT_BIAS, indent, True, **layers[-1].fields))
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        out.append(_block(BACKWARD_LAYER, indent, True, **layer.fields))
        if index > 0:
            out.append(_block(BELOW_DELTA, indent, trace, **layer.fields))
            below = layers[index - 1]
            if below.has_bias:
                out.append(_block(BELOW_BIAS, indent, True, in_at=layer.fields["in_at"],
                                  b_at=below.fields["b_at"]))
    return "".join(out)


MODULE = '''\
"""Tier-1 kernels of one architecture: {describe}.

Generated by jitnet.service.engine.jit.template ({key}); do not edit. kernels.py's one-sample math
with the architecture's numbers written in; the template's docstring says what and why.
"""

import numpy as np
from numba import njit

from jitnet.service.engine.kernels import (
    ARTICLE, CROSS_ENTROPY, EXACT, JIT, LINEAR, MSE, NARROW_JIT, RELU, SIGMOID, SOFTMAX, TANH,
    activate, derivative, last_sample_velocity, output_loss_and_delta, softmax_rows)

# Per layer: fan_in, fan_out, where W and b start in params (-1: no bias), its first unit.
LAYOUT = np.array({layout}, dtype=np.int64)
HIDDEN, OUTPUT, LOSS, MODE = {hidden}, {output}, {loss}, {mode}
N_IN, N_OUT, UNITS = {n_in}, {n_out}, {units}


@njit(**{sample_jit})
def sample_epochs(params, velocity, work, inputs, targets, orders, learning_rate, momentum,
                  target_loss, epoch_losses):
    """kernels.sample_epochs: each sample one iteration, the backward pass fused with the
    update."""
    n = inputs.shape[0]
    z, a, e, d, t = work[0], work[1], work[2], work[3], work[4]
    shuffled = orders.shape[1] > 0
    ran = epoch_losses.size
    for epoch in range(epoch_losses.size):
        total = 0.0
        for s in range(n):
            row = orders[epoch, s] if shuffled else s
            for i in range(N_IN):
                a[i] = inputs[row, i]
            for k in range(N_OUT):
                t[k] = targets[row, k]
{sample_forward}
            total += output_loss_and_delta(e, d, z, a, t, LAYOUT, 1, OUTPUT, LOSS, MODE)
{sample_backward}
        epoch_losses[epoch] = total / n
        if not np.isfinite(epoch_losses[epoch]) or (
                target_loss > 0.0 and epoch_losses[epoch] <= target_loss):
            ran = epoch + 1
            break
    if momentum == 0.0:
        last_sample_velocity(velocity, a, d, LAYOUT, learning_rate)
    return ran


@njit(**{sample_jit})
def sample_step(params, velocity, work, inputs, targets, learning_rate):
    """One iteration on the sample inputs[0] -> targets[0] without momentum, keeping every
    unit's net, output, error and delta in work; returns the loss before the update."""
    z, a, e, d, t = work[0], work[1], work[2], work[3], work[4]
    momentum = 0.0
    for i in range(N_IN):
        a[i] = inputs[0, i]
    for k in range(N_OUT):
        t[k] = targets[0, k]
{step_forward}
    loss = output_loss_and_delta(e, d, z, a, t, LAYOUT, 1, OUTPUT, LOSS, MODE)
{step_backward}
    return loss


@njit(**JIT)
def predict_sample(outputs, inputs, params, work):
    """kernels.predict_rows for one sample: outputs[0] = network(inputs), inputs [n_in];
    returns how many inputs are not finite."""
    z, a = work[0], work[1]
    not_finite = 0
    for i in range(N_IN):
        not_finite += not np.isfinite(inputs[i])
        a[i] = inputs[i]
{predict_forward}
    for k in range(N_OUT):
        outputs[0, k] = a[UNITS - N_OUT + k]
    return not_finite
'''


def generate(arch, key: str) -> str:
    """The source of `arch`'s tier-1 kernels (`key` names it in the module's docstring)."""
    layers = [_Layer(arch, layer) for layer in range(arch.n_layers)]
    # Dot products over many inputs vectorise with reassociation; short ones are faster
    # without (kernels.py, WIDE_FAN_IN).
    wide = max(arch.layer_sizes[:-1]) >= kernels.WIDE_FAN_IN
    return MODULE.format(
        describe=arch.describe(), key=key,
        layout=tuple(tuple(int(v) for v in row) for row in arch.layout),
        hidden=_KIND_NAMES[int(arch.hidden_activation)],
        output=_KIND_NAMES[int(arch.output_activation)],
        loss=_LOSS_NAMES[int(arch.loss)], mode=_MODE_NAMES[int(arch.gradient_mode)],
        n_in=arch.layer_sizes[0], n_out=arch.layer_sizes[-1], units=arch.n_units,
        sample_jit="JIT" if wide else "NARROW_JIT",
        sample_forward=_forward(arch, layers, 12, False).rstrip("\n"),
        sample_backward=_backward(layers, 12, False).rstrip("\n"),
        step_forward=_forward(arch, layers, 4, True).rstrip("\n"),
        step_backward=_backward(layers, 4, True).rstrip("\n"),
        predict_forward=_forward(arch, layers, 4, False).rstrip("\n"),
    )
