"""A plain-numpy reference of the engine (as stumpy's tests/naive.py is for stumpy).

Written from the math in api.md and the article, not from kernels.py: whole-array numpy, one
line per formula, no flat parameter buffer, no fastmath, no BLAS thresholds. The tests compare
the kernels with this, and this (and the kernels) with central finite differences.

Conventions (api.md):
  * a network is a list of (W [fan_out, fan_in], b [fan_out] or None), the input side first;
  * samples are rows: x [n, n_in], t [n, n_out];
  * error = t - y, delta = error * f'(.), and the update is W += lr * delta * input, i.e. plain
    gradient descent on the loss; with several samples, the *mean* of their gradients.
  * `arch` is anything with hidden_activation, output_activation, loss, gradient_mode and bias
    (model.Architecture); activations are matched by name so this file needs no kernel codes.
"""

from __future__ import annotations

from itertools import pairwise
from typing import NamedTuple

import numpy as np


def _name(kind) -> str:
    return getattr(kind, "name", str(kind)).upper()


# ---------------------------------------------------------------------------------------------
# Activations and their derivatives.


def softmax(z):
    """Row-wise softmax(z)_k = exp(z_k) / sum_m exp(z_m), shifted by the row max for safety."""
    ex = np.exp(z - z.max(axis=-1, keepdims=True))
    return ex / ex.sum(axis=-1, keepdims=True)


def activate(kind, x):
    """f(x), element-wise (softmax: row-wise)."""
    kind = _name(kind)
    if kind == "SIGMOID":
        with np.errstate(over="ignore"):  # exp(-x) -> inf for x << 0 gives the right 0
            return 1.0 / (1.0 + np.exp(-x))
    if kind == "TANH":
        return np.tanh(x)
    if kind == "RELU":
        return np.maximum(x, 0.0)
    if kind == "LINEAR":
        return np.array(x, dtype=np.float64, copy=True)
    if kind == "SOFTMAX":
        return softmax(x)
    raise ValueError(kind)


def slope(kind, x):
    """f'(x) as a function of the *input* x of f (never through f's output)."""
    kind = _name(kind)
    if kind == "SIGMOID":
        s = activate("SIGMOID", x)
        return s * (1.0 - s)  # sigmoid' = sigmoid (1 - sigmoid)
    if kind == "TANH":
        return 1.0 - np.tanh(x) ** 2  # tanh' = 1 - tanh^2
    if kind == "RELU":
        return (x > 0.0).astype(np.float64)  # 0 at the kink, by convention
    if kind == "LINEAR":
        return np.ones_like(x)
    raise ValueError(kind)


def derivative(kind, net, y, mode):
    """The derivative the backward pass multiplies the error by.

    EXACT: f'(net), the true derivative. ARTICLE: the same formula evaluated at the neuron's
    output y instead of its net input -- the article's deriv(0.78) = f(0.78) (1 - f(0.78)).
    """
    return slope(kind, y if _name(mode) == "ARTICLE" else net)


# ---------------------------------------------------------------------------------------------
# Forward pass and losses.


def forward(layers, x, arch):
    """Per layer (net z [n, fan_out], output a [n, fan_out]), the input side first."""
    trace = []
    a = np.asarray(x, dtype=np.float64)
    for k, (w, b) in enumerate(layers):
        z = a @ w.T  # z[r, j] = sum_i W[j, i] a[r, i]
        if b is not None:
            z = z + b
        kind = arch.output_activation if k == len(layers) - 1 else arch.hidden_activation
        a = activate(kind, z)
        trace.append((z, a))
    return trace


def predict(layers, x, arch):
    return forward(layers, x, arch)[-1][1]


def sample_losses(z, y, t, arch):
    """Per-sample loss [n] from the output layer's nets z and outputs y.

    MSE: 0.5 sum_k (t_k - y_k)^2. Cross-entropy, written through z to stay finite:
      softmax: -sum_k t_k log softmax(z)_k = sum_k t_k (logsumexp(z) - z_k)
      sigmoid: -sum_k [t_k log s(z_k) + (1 - t_k) log(1 - s(z_k))]
               with -log s(z) = log(1 + e^-z) and -log(1 - s(z)) = log(1 + e^z).
    """
    if _name(arch.loss) == "MSE":
        return 0.5 * np.sum((t - y) ** 2, axis=1)
    if _name(arch.output_activation) == "SOFTMAX":
        top = z.max(axis=1, keepdims=True)
        lse = top + np.log(np.sum(np.exp(z - top), axis=1, keepdims=True))
        return np.sum(t * (lse - z), axis=1)
    return np.sum(t * np.logaddexp(0.0, -z) + (1.0 - t) * np.logaddexp(0.0, z), axis=1)


def mean_loss(layers, x, t, arch) -> float:
    z, y = forward(layers, x, arch)[-1]
    return float(np.mean(sample_losses(z, y, t, arch)))


# ---------------------------------------------------------------------------------------------
# Backward pass.


def output_error_and_delta(z, y, t, arch):
    """error = t - y; delta = what the output layer passes back (minus dLoss/dnet in EXACT mode).

    Cross-entropy (softmax or sigmoid output): delta = t - y in both modes, f' cancels
      (softmax: t - y * sum(t), which is t - y when a target row sums to 1).
    Softmax + MSE: delta = J e with the softmax Jacobian J[k, m] = s_k (δ_km - s_m), s = y
      (EXACT) or s = softmax(y) (ARTICLE: the formula applied to the output again).
    Otherwise: delta = e * derivative(f, net, y, mode).
    """
    e = t - y
    if _name(arch.loss) == "CROSS_ENTROPY":
        if _name(arch.output_activation) == "SOFTMAX":
            # -dL/dz for L = -sum t log softmax(z): t - y * sum(t), i.e. t - y for probability rows
            return e, t - y * t.sum(axis=1, keepdims=True)
        return e, e.copy()
    if _name(arch.output_activation) == "SOFTMAX":
        s = softmax(y) if _name(arch.gradient_mode) == "ARTICLE" else y
        eye = np.eye(s.shape[1])
        jacobian = s[:, :, None] * (eye[None, :, :] - s[:, None, :])  # [n, k, m]
        return e, np.einsum("nkm,nm->nk", jacobian, e)
    return e, e * derivative(arch.output_activation, z, y, arch.gradient_mode)


class Backward(NamedTuple):
    trace: list  # per layer (z, a)
    errors: list  # per layer e [n, fan_out]
    deltas: list  # per layer d [n, fan_out]
    descent: list  # per layer (gW, gb or None): minus the mean gradient (EXACT mode)
    losses: np.ndarray  # per-sample losses [n], before any update


def backward(layers, x, t, arch) -> Backward:
    """Errors and deltas of every layer, and the descent direction averaged over the rows:
    gW[j, i] = mean_r delta[r, j] * input[r, i], gb[j] = mean_r delta[r, j]. A hidden layer's
    error is sum_j delta_next[j] W_next[j, i], with the weights of the forward pass."""
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    trace = forward(layers, x, arch)
    n = x.shape[0]
    z, y = trace[-1]
    e, d = output_error_and_delta(z, y, t, arch)
    errors, deltas, descent = [None] * len(layers), [None] * len(layers), [None] * len(layers)
    for k in range(len(layers) - 1, -1, -1):
        errors[k], deltas[k] = e, d
        inputs = x if k == 0 else trace[k - 1][1]
        w, b = layers[k]
        descent[k] = (d.T @ inputs / n, None if b is None else d.mean(axis=0))
        if k > 0:
            z_below, a_below = trace[k - 1]
            e = d @ w  # e[r, i] = sum_j d[r, j] W[j, i]
            d = e * derivative(arch.hidden_activation, z_below, a_below, arch.gradient_mode)
    return Backward(trace, errors, deltas, descent, sample_losses(z, y, t, arch))


def finite_difference_descent(layers, x, t, arch, h=1e-6):
    """-d(mean loss)/dparam by central differences (f(p + h) - f(p - h)) / 2h, per parameter."""
    out = []
    for w, b in layers:
        grads = []
        for p in (w, b):
            if p is None:
                grads.append(None)
                continue
            g = np.zeros_like(p)
            for idx in np.ndindex(p.shape):
                keep = p[idx]
                p[idx] = keep + h
                up = mean_loss(layers, x, t, arch)
                p[idx] = keep - h
                down = mean_loss(layers, x, t, arch)
                p[idx] = keep
                g[idx] = -(up - down) / (2.0 * h)
            grads.append(g)
        out.append(tuple(grads))
    return out


# ---------------------------------------------------------------------------------------------
# SGD with momentum, and the mini-batch epoch loop.


def copy_layers(layers):
    return [(w.copy(), None if b is None else b.copy()) for w, b in layers]


def zeros_like_layers(layers):
    return [(np.zeros_like(w), None if b is None else np.zeros_like(b)) for w, b in layers]


def sgd_update(layers, velocity, descent, learning_rate, momentum):
    """v = momentum * v + lr * g; p += v, for every parameter p (in place)."""
    for (w, b), (vw, vb), (gw, gb) in zip(layers, velocity, descent, strict=True):
        vw *= momentum
        vw += learning_rate * gw
        w += vw
        if b is not None:
            vb *= momentum
            vb += learning_rate * gb
            b += vb


def train(layers, x, t, arch, epochs, learning_rate, batch_size=1, momentum=0.0, orders=None,
          velocity=None):
    """Mini-batch SGD. Each epoch visits the samples in orders[epoch] (default: stored order),
    batch_size at a time (the last batch may be smaller); each batch is one update with the mean
    gradient of its samples. An epoch's loss is the mean of the per-sample losses computed
    during it, each before its own batch's update.

    Returns (layers, velocity, epoch_losses); the inputs are not modified."""
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    layers = copy_layers(layers)
    velocity = zeros_like_layers(layers) if velocity is None else copy_layers(velocity)
    n = x.shape[0]
    batch_size = max(1, batch_size)
    epoch_losses = []
    for epoch in range(epochs):
        order = np.arange(n) if orders is None else np.asarray(orders[epoch])
        total = 0.0
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            result = backward(layers, x[rows], t[rows], arch)
            total += result.losses.sum()
            sgd_update(layers, velocity, result.descent, learning_rate, momentum)
        epoch_losses.append(total / n)
    return layers, velocity, np.array(epoch_losses)


# ---------------------------------------------------------------------------------------------
# Random problems for the tests.


def random_layers(rng, sizes, bias, scale=1.0):
    """W ~ N(0, scale^2 / fan_in) and b ~ N(0, 0.1^2): varied, unsaturated nets."""
    return [(rng.normal(0.0, scale / np.sqrt(fan_in), (fan_out, fan_in)),
             rng.normal(0.0, 0.1, fan_out) if bias else None)
            for fan_in, fan_out in pairwise(sizes)]


def random_targets(rng, n, width, arch):
    """Targets in [0, 1]. For softmax + cross-entropy every other row is a probability row (the
    usual case) and the rest are not, so the general gradient t - y * sum(t) is exercised too."""
    t = rng.random((n, width))
    if _name(arch.loss) == "CROSS_ENTROPY" and _name(arch.output_activation) == "SOFTMAX":
        t[::2] = (t[::2] + 0.05) / (t[::2] + 0.05).sum(axis=1, keepdims=True)
    return t
