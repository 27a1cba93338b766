"""The numba kernels: forward pass, backpropagation and the optimizers of a multi-layer perceptron.

Everything here is a plain `@njit` function over contiguous arrays: no classes, no I/O, no
raising, no allocation inside loops. Validation happens before these run (model.py,
training.py). The new kernels take their dtype from the arrays they are given (no float64
allocated inside), so that they can compile per dtype.

Memory layout, shared by every kernel:

    params    flat: layer 0's W [fan_out, fan_in] row-major, then its b [fan_out] (when the
              architecture has biases), then layer 1's, ...  W[j, i] joins input i to neuron j.
    layout    int64 [n_layers, 5]: per layer FAN_IN, FAN_OUT, W_AT, B_AT (-1: no bias) and U_AT,
              the offset of the layer's neurons in the unit numbering (the input units are 0..).
    z, a, e, d  flat unit buffers for `rows` samples at once: nets, outputs, errors, deltas.
              Layer l's block starts at rows * U_AT and is a row-major [rows, FAN_OUT] matrix, so
              with rows == 1 the buffers are simply indexed by unit. t holds the rows' targets,
              s their shares of a batch (sample weights): work = [z, a, e, d, t, s].
    state     the optimizer's arrays, [k, n_params]: SGD's velocity; Adam's and AdamW's m, v.

Sign convention (the article's): error = target - output, delta = error * f'(.), and the update is
w += learning_rate * delta * input. With loss 0.5 * sum((t - y)^2) that is gradient descent.
`grad` therefore holds the *descent direction* (minus the gradient of the mean loss); the
optimizers' section below turns torch's formulas into this sign, once.

Two ways through an epoch, both generic in the number and sizes of layers:

    one sample at a time   `sample_epochs` -> `sample_iteration`: plain SGD (momentum, no
                           weight decay, no sample weights): forward, then one pass per layer
                           that propagates the error and updates the weights together (no
                           gradient buffer). The tier-1 kernels (jit/template.py) are this.
    batches                `batch_epochs`: per batch `batch_gradient` (forward, loss, `backward`
                           into `grad`, BLAS for layers big enough to pay for the call, sample
                           weights through the rows' shares), then `optimizer_update` (SGD with
                           momentum, Nesterov and weight decay, Adam, AdamW). Any batch size,
                           1 included: what the one-sample path does not cover runs here.

`evaluate_rows` measures a set of rows (loss, right answers) without training: validation
after each epoch, and the training rows' accuracy when progress is reported.
The gradient check (CheckGradients) reuses `iteration` at learning rate 0 for the analytic
gradient; `finite_differences` is its numeric half: two forward passes per parameter.

Performance notes (measured with benchmarks/engine.py; results in docs/benchmarks.md):

  * Offsets into the flat buffers are unsigned (np.uint64, `at` below). Numba adds a
    negative-index wraparound to every signed index that LLVM cannot prove non-negative, and
    offsets read from `layout` never are; unsigned offsets drop that work from every access
    (15% of an XOR epoch). Keep index arithmetic unsigned: an int64 or a Python int literal
    mixed in makes the expression signed again (hence ONE and TWO).
  * In the one-sample path, helpers that take arrays are not inlined inside loops or branches
    (sample_iteration calls output_loss_and_delta once, unconditionally). Anywhere else, numba
    leaves reference-count updates (atomic NRT_incref / NRT_decref calls) in the per-sample loop,
    which cost more than the arithmetic of a small network (one such helper took an XOR epoch
    from 0.28 to 0.7 us); so sample_iteration writes its loops out, with scalar helpers only.
  * fastmath is set per compiled function. `reassoc` lets LLVM split a dot product into vector
    lanes: the way to go for long ones, pure set-up cost for a 2-input neuron. The one-sample
    epoch loop is therefore compiled twice, and sample_epochs_for picks by the widest fan-in.
  * Cold compile (empty cache) of everything a server uses is about 20 s on this machine, most
    of it LLVM on the unswitched loops of the two one-sample compiles and iteration(); with
    `cache=True` a later start loads it all in about 0.3 s. Each compiled loop is compiled on
    first use (sample_epochs_for is a plain function that picks one).
  * error_model="numpy": x / 0 gives inf or nan as in numpy instead of raising, so no kernel
    carries an exception path (they never raise anyway).
"""

import numpy as np
from numba import njit

# Activation, loss and gradient-mode codes: the same numbers as the proto enums.
SIGMOID, TANH, RELU, LINEAR, SOFTMAX = 1, 2, 3, 4, 5
MSE, CROSS_ENTROPY = 1, 2
EXACT, ARTICLE = 1, 2

# Columns of `layout`.
FAN_IN, FAN_OUT, W_AT, B_AT, U_AT = 0, 1, 2, 3, 4

# Below this many multiply-adds (rows x fan_in x fan_out) a dense op of a batch runs as plain
# loops; from here on it calls BLAS, whose per-call cost only pays off on real matrices. Measured
# on training iterations: loops and BLAS are even at 2048 (8 rows of 16x16, 32 rows of 8x8),
# BLAS is ahead from 4608 on (8 rows of 24x24: 5.4 against 6.3 us) and 1.7x at 32 x 64x64.
BLAS_MIN_WORK = 2048


# No nnan/ninf: divergence detection relies on NaN and inf surviving the arithmetic.
FASTMATH = {"nsz", "arcp", "contract", "reassoc"}
JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath=FASTMATH)
# Short dot products: without reassoc (see the module notes).
NARROW_JIT = dict(JIT, fastmath=FASTMATH - {"reassoc"})
# Inlined into their callers at numba level (helpers over arrays: see the module notes).
INLINE = dict(JIT, inline="always")

at = np.uint64  # an unsigned offset into a flat buffer
ONE, TWO = at(1), at(2)


# ---------------------------------------------------------------------------------------------
# Activations: f, and its derivative in both gradient modes.


# e^x for loops over many units: batch activations and softmax. numba compiles np.exp to a call
# of libm's scalar exp (llvmlite's wheels have no SVML), so such a loop cannot be vectorised:
# 64,000 sigmoids took 0.29 ms, most of a 1,000-row digits Predict. This one is arithmetic that
# LLVM vectorises (0.10 ms): e^x = 2^n e^r with n = round(x / ln 2) and |r| <= ln(2) / 2
# (Cody-Waite: ln 2 in two parts, so r is exact), e^r by Horner to degree 13 (truncation under
# 1e-17 there), and 2^n built from its bits in two halves, so that subnormal and near-overflow
# results come out right. Within 1 ulp of np.exp over its whole range, with inf, 0 and nan where
# np.exp gives them (tests/engine/test_exp.py). One value at a time it is slower than libm's (the
# 13 Horner steps wait on each other), so single units (`sigmoid`, the one-sample path) keep
# np.exp. Its own fastmath flags: `reassoc` would undo the reduction.
EXP_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
_LOG2_E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 to 32 bits: n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10  # the rest of ln 2


@njit(**EXP_JIT)
def vexp(x):
    clamped = min(max(x, -746.0), 710.0)  # keeps n in int64 range for inf and nan too
    n = np.floor(clamped * _LOG2_E + 0.5)
    r = (clamped - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 6227020800.0  # 1 / 13!
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    k = np.int64(n)
    half = k >> 1  # 2^n = 2^half * 2^(n - half), each a normal double
    y = (p * np.int64((half + 1023) << 52).view(np.float64)
         * np.int64((k - half + 1023) << 52).view(np.float64))
    y = np.inf if x > 710.0 else y
    y = 0.0 if x < -746.0 else y
    return x if x != x else y  # nan stays nan


@njit(**INLINE)
def sigmoid(x):
    # 1 / (1 + e^-x): for x below about -709, e^-x is inf and the result 0, as it should be.
    return 1.0 / (1.0 + np.exp(-x))


@njit(**INLINE)
def activate(x, kind):
    """f(x) for the element-wise activations (softmax works on whole rows, see softmax_rows)."""
    if kind == SIGMOID:
        return sigmoid(x)
    if kind == TANH:
        return np.tanh(x)
    if kind == RELU:
        return x if x > 0.0 else 0.0
    return x  # LINEAR


@njit(**INLINE)
def derivative(net, y, kind, mode):
    """f' at a neuron with net input `net` and output y = f(net).

    EXACT is the true derivative, written through y where that is cheaper (sigmoid: y (1 - y)).
    ARTICLE applies the derivative formula to the output instead: f(y) (1 - f(y)) for sigmoid,
    which is the arithmetic of the article's worked example.
    """
    if kind == SIGMOID:
        if mode == ARTICLE:
            s = sigmoid(y)
            return s * (1.0 - s)
        return y * (1.0 - y)
    if kind == TANH:
        if mode == ARTICLE:
            s = np.tanh(y)
            return 1.0 - s * s
        return 1.0 - y * y
    if kind == RELU:
        x = y if mode == ARTICLE else net
        return 1.0 if x > 0.0 else 0.0
    return 1.0  # LINEAR


@njit(**INLINE)
def softmax_rows(a, z, start, rows, width):
    """a[r, :] = exp(z[r, :] - max) / sum, for the [rows, width] block at `start`."""
    start, width = at(start), at(width)
    for r in range(at(rows)):
        row = start + r * width
        top = z[row]
        for k in range(ONE, width):
            top = max(top, z[row + k])
        total = 0.0
        for k in range(width):
            a[row + k] = vexp(z[row + k] - top)
            total += a[row + k]
        for k in range(width):
            a[row + k] /= total


@njit(**INLINE)
def activation_forward(a, z, start, rows, width, kind):
    start, end = at(start), at(start) + at(rows) * at(width)
    if kind == SOFTMAX:
        softmax_rows(a, z, start, rows, width)
    elif kind == SIGMOID:
        for k in range(start, end):
            a[k] = 1.0 / (1.0 + vexp(-z[k]))  # sigmoid, vectorised
    elif kind == TANH:
        for k in range(start, end):
            a[k] = np.tanh(z[k])
    elif kind == RELU:
        for k in range(start, end):
            a[k] = max(z[k], 0.0)
    else:
        for k in range(start, end):
            a[k] = z[k]


@njit(**INLINE)
def layer_offsets(layout, layer, rows):
    """The layer's sizes and unsigned offsets: fan_in, fan_out, where W starts, whether it has a
    bias and where b starts, and where its input and output blocks start in the unit buffers."""
    fan_in, fan_out = at(layout[layer, FAN_IN]), at(layout[layer, FAN_OUT])
    w_at = at(layout[layer, W_AT])
    has_bias = layout[layer, B_AT] >= 0
    b_at = at(layout[layer, B_AT]) if has_bias else w_at
    out_at = at(rows) * at(layout[layer, U_AT])
    in_at = out_at - at(rows) * fan_in
    return fan_in, fan_out, w_at, has_bias, b_at, in_at, out_at


# ---------------------------------------------------------------------------------------------
# The same dense ops through BLAS, for layers big enough to pay for the call. Kept out of line:
# the views they make would otherwise cost reference counting in the loops around them.


@njit(**JIT)
def matmul_forward(z, a, params, in_at, out_at, w_at, rows, fan_in, fan_out):
    in_at, out_at, w_at = np.int64(in_at), np.int64(out_at), np.int64(w_at)
    rows, fan_in, fan_out = np.int64(rows), np.int64(fan_in), np.int64(fan_out)
    # z_out [rows, fan_out] = a_in [rows, fan_in] @ W.T
    w = params[w_at : w_at + fan_out * fan_in].reshape((fan_out, fan_in))
    x = a[in_at : in_at + rows * fan_in].reshape((rows, fan_in))
    out = z[out_at : out_at + rows * fan_out].reshape((rows, fan_out))
    np.dot(x, w.T, out)


@njit(**JIT)
def matmul_weight_grad(grad, a, d, in_at, out_at, w_at, rows, fan_in, fan_out):
    in_at, out_at, w_at = np.int64(in_at), np.int64(out_at), np.int64(w_at)
    rows, fan_in, fan_out = np.int64(rows), np.int64(fan_in), np.int64(fan_out)
    # dW [fan_out, fan_in] = d [rows, fan_out].T @ a_in [rows, fan_in]
    dw = grad[w_at : w_at + fan_out * fan_in].reshape((fan_out, fan_in))
    delta = d[out_at : out_at + rows * fan_out].reshape((rows, fan_out))
    x = a[in_at : in_at + rows * fan_in].reshape((rows, fan_in))
    np.dot(delta.T, x, dw)


@njit(**JIT)
def matmul_input_error(e, d, params, in_at, out_at, w_at, rows, fan_in, fan_out):
    in_at, out_at, w_at = np.int64(in_at), np.int64(out_at), np.int64(w_at)
    rows, fan_in, fan_out = np.int64(rows), np.int64(fan_in), np.int64(fan_out)
    # e_in [rows, fan_in] = d [rows, fan_out] @ W [fan_out, fan_in]
    w = params[w_at : w_at + fan_out * fan_in].reshape((fan_out, fan_in))
    delta = d[out_at : out_at + rows * fan_out].reshape((rows, fan_out))
    err = e[in_at : in_at + rows * fan_in].reshape((rows, fan_in))
    np.dot(delta, w, err)


# ---------------------------------------------------------------------------------------------
# Dense layer: z = a_in W^T + b, and its backward pass, for `rows` samples at once.


@njit(**INLINE)
def dense_forward(z, a, params, layout, layer, rows):
    # a_in [rows, fan_in] -> z_out [rows, fan_out]; W [fan_out, fan_in], b [fan_out]
    fan_in, fan_out, w_at, has_bias, b_at, in_at, out_at = layer_offsets(layout, layer, rows)
    if rows * fan_in * fan_out >= BLAS_MIN_WORK:
        matmul_forward(z, a, params, in_at, out_at, w_at, rows, fan_in, fan_out)
        if has_bias:
            for r in range(at(rows)):
                for j in range(fan_out):
                    z[out_at + r * fan_out + j] += params[b_at + j]
        return
    for r in range(at(rows)):
        x_r = in_at + r * fan_in
        for j in range(fan_out):
            net = params[b_at + j] if has_bias else 0.0
            w_j = w_at + j * fan_in
            for i in range(fan_in):
                net += params[w_j + i] * a[x_r + i]
            z[out_at + r * fan_out + j] = net


@njit(**INLINE)
def dense_backward(grad, e, a, d, params, layout, layer, rows):
    """From this layer's deltas d [rows, fan_out]:
    grad W[j, i] = mean_r d[r, j] * a_in[r, i], grad b[j] = mean_r d[r, j], and, below the first
    layer, the error of the neurons feeding it: e_in[r, i] = sum_j d[r, j] * W[j, i]."""
    fan_in, fan_out, w_at, has_bias, b_at, in_at, out_at = layer_offsets(layout, layer, rows)
    scale = 1.0 / rows
    w_end = w_at + fan_out * fan_in
    blas = rows * fan_in * fan_out >= BLAS_MIN_WORK

    if blas:
        matmul_weight_grad(grad, a, d, in_at, out_at, w_at, rows, fan_in, fan_out)
    else:
        for k in range(w_at, w_end):
            grad[k] = 0.0
        for r in range(at(rows)):
            x_r = in_at + r * fan_in
            for j in range(fan_out):
                dj = d[out_at + r * fan_out + j]
                w_j = w_at + j * fan_in
                for i in range(fan_in):
                    grad[w_j + i] += dj * a[x_r + i]
    for k in range(w_at, w_end):
        grad[k] *= scale
    if has_bias:
        for j in range(fan_out):
            grad[b_at + j] = 0.0
        for r in range(at(rows)):
            for j in range(fan_out):
                grad[b_at + j] += d[out_at + r * fan_out + j]
        for j in range(fan_out):
            grad[b_at + j] *= scale

    if layer == 0:
        return  # the inputs have no error to propagate to
    if blas:
        matmul_input_error(e, d, params, in_at, out_at, w_at, rows, fan_in, fan_out)
        return
    for r in range(at(rows)):
        e_r = in_at + r * fan_in
        for i in range(fan_in):
            e[e_r + i] = 0.0
        for j in range(fan_out):
            dj = d[out_at + r * fan_out + j]
            w_j = w_at + j * fan_in
            for i in range(fan_in):
                e[e_r + i] += dj * params[w_j + i]


# ---------------------------------------------------------------------------------------------
# Loss at the output layer, and the output deltas.


@njit(**INLINE)
def output_loss_and_delta(e, d, z, a, t, layout, rows, output, loss, mode, scale=None):
    """Fills the output layer's error e = t - y and delta d; returns the summed loss of the rows.

    MSE: loss 0.5 * sum((t - y)^2), delta = e * f'(.) (softmax: its Jacobian applied to e).
    Cross-entropy (softmax or sigmoid output): delta = t - y exactly, the derivative cancels
    (softmax: t - y * sum(t), the same for target rows that sum to 1).
    `scale` [rows] (optional): row r's loss and delta count scale[r] times (sample weights);
    without it (the one-sample path) the branch is compiled out.
    """
    last = layout.shape[0] - 1
    width = at(layout[last, FAN_OUT])
    start = at(rows) * at(layout[last, U_AT])
    jacobian = output == SOFTMAX and loss == MSE
    if jacobian and mode == ARTICLE:
        softmax_rows(d, a, start, rows, width)  # s = softmax(output), see below
    total = 0.0
    for r in range(at(rows)):
        row = start + r * width
        t_r = r * width
        c = 1.0  # x * 1.0 is x: unweighted rows sum exactly as they always did
        if scale is not None:
            c = scale[r]
        for k in range(width):
            e[row + k] = t[t_r + k] - a[row + k]
        if loss == CROSS_ENTROPY and output == SOFTMAX:
            # -sum t log softmax(z) = sum t (logsumexp(z) - z), from z for stability. The
            # largest output is a_max = e^0 / sum e^(z - max z), so logsumexp(z) is
            # max z - log(a_max): no second round of exponentials.
            top, a_max = z[row], a[row]
            for k in range(ONE, width):
                top, a_max = max(top, z[row + k]), max(a_max, a[row + k])
            lse = top - np.log(a_max)
            # d(loss)/dz_k = y_k sum(t) - t_k: the familiar t - y when a target row sums to 1
            t_sum = 0.0
            for k in range(width):
                total += c * (t[t_r + k] * (lse - z[row + k]))
                t_sum += t[t_r + k]
            for k in range(width):
                d[row + k] = t[t_r + k] - a[row + k] * t_sum
        elif loss == CROSS_ENTROPY:
            # sigmoid: -[t log s(z) + (1 - t) log(1 - s(z))] = softplus(z) - t z
            for k in range(width):
                x = z[row + k]
                total += c * (max(x, 0.0) + np.log1p(np.exp(-abs(x))) - t[t_r + k] * x)
            for k in range(width):
                d[row + k] = e[row + k]  # the sigmoid's derivative cancels: exactly t - y
        else:
            for k in range(width):
                total += c * (0.5 * e[row + k] * e[row + k])
            if jacobian:
                # d_k = s_k (e_k - sum_m e_m s_m); s is the output (EXACT) or softmax(output)
                # (ARTICLE, already in d)
                if mode == EXACT:
                    for k in range(width):
                        d[row + k] = a[row + k]
                dot = 0.0
                for k in range(width):
                    dot += e[row + k] * d[row + k]
                for k in range(width):
                    d[row + k] = d[row + k] * (e[row + k] - dot)
            else:
                for k in range(width):
                    d[row + k] = e[row + k] * derivative(z[row + k], a[row + k], output, mode)
        if scale is not None:
            for k in range(width):
                d[row + k] *= c
    return total


# ---------------------------------------------------------------------------------------------
# One iteration on a batch: forward, backward, update.


@njit(**INLINE)
def delta_from_error(d, e, z, a, start, end, kind, mode):
    """d = e * f'(.) over the units start..end: one loop per activation, so that each compiles
    to straight (vectorised, branch-free) code."""
    if kind == SIGMOID:
        for k in range(start, end):
            d[k] = e[k] * derivative(z[k], a[k], SIGMOID, mode)
    elif kind == TANH:
        for k in range(start, end):
            d[k] = e[k] * derivative(z[k], a[k], TANH, mode)
    elif kind == RELU:
        for k in range(start, end):
            d[k] = e[k] * derivative(z[k], a[k], RELU, mode)
    else:
        for k in range(start, end):
            d[k] = e[k]  # LINEAR: f' = 1


@njit(**INLINE)
def forward(z, a, params, layout, rows, hidden, output):
    """All layers for the `rows` samples whose inputs sit in the input block of `a`."""
    last = layout.shape[0] - 1
    for layer in range(last + 1):
        dense_forward(z, a, params, layout, layer, rows)
        kind = output if layer == last else hidden
        activation_forward(a, z, rows * layout[layer, U_AT], rows, layout[layer, FAN_OUT], kind)


@njit(**INLINE)
def backward(grad, e, d, z, a, params, layout, rows, hidden, mode):
    """From the output deltas down: each layer's gradient, and each hidden layer's e and d.
    Hidden errors use the weights as they were in the forward pass: nothing is updated here."""
    for layer in range(layout.shape[0] - 1, -1, -1):
        dense_backward(grad, e, a, d, params, layout, layer, rows)
        if layer > 0:
            start = at(rows) * at(layout[layer - 1, U_AT])
            end = start + at(rows) * at(layout[layer - 1, FAN_OUT])
            delta_from_error(d, e, z, a, start, end, hidden, mode)


@njit(**INLINE)
def load_rows(a, t, inputs, targets, orders, epoch, start, rows):
    """Copies samples orders[epoch, start : start + rows] (start.. when orders has no columns)
    into the input block of `a` and into t."""
    n_in = at(inputs.shape[1])
    n_out = at(targets.shape[1])
    for r in range(at(rows)):
        s = orders[epoch, start + r] if orders.shape[1] > 0 else start + r
        for i in range(n_in):
            a[r * n_in + i] = inputs[s, i]
        for k in range(n_out):
            t[r * n_out + k] = targets[s, k]


@njit(**INLINE)
def load_weights(s, weights, orders, epoch, start, rows):
    """s[:rows] = the sample weights of the rows load_rows loads; returns their sum."""
    total = 0.0
    for r in range(at(rows)):
        row = orders[epoch, start + r] if orders.shape[1] > 0 else start + r
        s[r] = weights[row]
        total += s[r]
    return total


@njit(**JIT)
def batch_gradient(grad, z, a, e, d, t, s, params, layout, kinds, inputs, targets, orders,
                   epoch, start, rows):
    """Forward, loss and deltas, then backward, on `rows` samples, into the descent direction
        grad = sum_r s_r g_r / rows        g_r: minus the gradient of row r's loss
    (s = 1: the mean; s_r = w_r rows / sum(w): sum(w_r g_r) / sum(w), the sample weights').
    Returns sum_r s_r loss_r, before any update. A function of its own (not inlined), so the
    forward and backward passes are compiled once for every caller."""
    hidden, output, loss, mode = kinds[0], kinds[1], kinds[2], kinds[3]
    load_rows(a, t, inputs, targets, orders, epoch, start, rows)
    forward(z, a, params, layout, rows, hidden, output)
    total = output_loss_and_delta(e, d, z, a, t, layout, rows, output, loss, mode, s)
    backward(grad, e, d, z, a, params, layout, rows, hidden, mode)
    return total


@njit(**JIT)
def iteration(params, velocity, grad, z, a, e, d, t, s, layout, kinds, inputs, targets, orders,
              epoch, start, rows, learning_rate, momentum):
    """One iteration of plain SGD on `rows` samples, each counted once: batch_gradient, then
    sgd_update (none at learning rate 0: the gradient check's analytic half). Returns the
    summed loss of those samples (before the update)."""
    for r in range(at(rows)):
        s[r] = 1.0
    total = batch_gradient(grad, z, a, e, d, t, s, params, layout, kinds, inputs, targets,
                           orders, epoch, start, rows)
    if learning_rate != 0.0:
        sgd_update(params, velocity, grad, learning_rate, momentum)
    return total


# ---------------------------------------------------------------------------------------------
# The optimizers: how a batch's descent direction `grad` moves the parameters. torch.optim's
# updates, written in the engine's sign (grad = minus the gradient of the mean loss), so every
# sign below is flipped from torch's once and only here:
#     torch's gradient g = -grad,  SGD's velocity = -lr * momentum_buffer,  Adam's m = -exp_avg
# Weight decay applies to each layer's W range, never to its b range (`layout`).


@njit(**INLINE)
def sgd_update(params, velocity, grad, learning_rate, momentum):
    """v = momentum * v + lr * grad; params += v. With momentum 0: params += lr * grad, and the
    velocity is left alone (batch_epochs sets v = lr * grad of the last batch at the end).
    torch.optim.SGD with a constant rate: its buffer is v / lr."""
    if momentum == 0.0:
        for k in range(params.size):
            params[k] += learning_rate * grad[k]
        return
    for k in range(params.size):
        velocity[k] = momentum * velocity[k] + learning_rate * grad[k]
        params[k] += velocity[k]


@njit(**INLINE)
def sgd_range(params, velocity, grad, first, end, learning_rate, momentum, nesterov, decay):
    """torch.optim.SGD (dampening 0) on params[first:end] with weight decay `decay`:
        G = grad - decay * w        (torch: g + decay * w)
        v = momentum * v + lr * G   (torch: buf = momentum * buf + g, v = -lr * buf)
        w += v, or with nesterov: w += lr * G + momentum * v   (torch: g + momentum * buf)
    G is kept in grad: a momentum-0 call's last velocity is lr * G."""
    for k in range(at(first), at(end)):
        g = grad[k] - decay * params[k]
        grad[k] = g
        v = momentum * velocity[k] + learning_rate * g
        velocity[k] = v
        params[k] += (learning_rate * g + momentum * v) if nesterov else v


@njit(**INLINE)
def adam_range(params, m, v, grad, first, end, step_size, bias2_sqrt, beta1, beta2, epsilon,
               decay, shrink):
    """torch.optim.Adam / AdamW on params[first:end], step t:
        Adam:   G = grad - decay * w                     (torch: g + decay * w)
        AdamW:  w *= shrink = 1 - lr * decay, G = grad   (decoupled decay)
        m += (1 - beta1) (G - m)                         (torch's lerp)
        v = beta2 v + (1 - beta2) G^2
        w += step_size m / (sqrt(v) / sqrt(1 - beta2^t) + epsilon),  step_size = lr / (1 - beta1^t)
    epsilon is added to sqrt(v_hat), as torch does (not the "epsilon hat" of Keras and
    scikit-learn)."""
    for k in range(at(first), at(end)):
        w = params[k]
        g = grad[k] - decay * w
        m_k = m[k] + (1.0 - beta1) * (g - m[k])
        v_k = beta2 * v[k] + (1.0 - beta2) * g * g
        m[k], v[k] = m_k, v_k
        params[k] = w * shrink + step_size * m_k / (np.sqrt(v_k) / bias2_sqrt + epsilon)


# Optimizer codes: the proto's Optimizer numbers (optimizers.Optimizer).
SGD, ADAM, ADAMW = 1, 2, 3
# What `hyper` holds, by index: one float array instead of seven arguments.
LR, MOMENTUM, NESTEROV, BETA1, BETA2, EPSILON, WEIGHT_DECAY = 0, 1, 2, 3, 4, 5, 6
N_HYPER = 7


@njit(**INLINE)
def optimizer_update(params, state, steps, grad, layout, optimizer, hyper):
    """One update of params along grad: state [arrays, n_params] is the optimizer's (SGD:
    velocity; Adam, AdamW: m, v), steps[0] the updates made with it (Adam's t after this)."""
    steps[0] += 1
    lr, decay = hyper[LR], hyper[WEIGHT_DECAY]
    if optimizer == SGD:
        momentum, nesterov = hyper[MOMENTUM], hyper[NESTEROV] != 0.0
        if decay == 0.0 and not nesterov:
            sgd_update(params, state[0], grad, lr, momentum)  # the plain loop, as before
            return
        for layer in range(layout.shape[0]):
            fan_in, fan_out, w_at, has_bias, b_at, _, _ = layer_offsets(layout, layer, 1)
            sgd_range(params, state[0], grad, w_at, w_at + fan_in * fan_out, lr, momentum,
                      nesterov, decay)
            if has_bias:
                sgd_range(params, state[0], grad, b_at, b_at + fan_out, lr, momentum,
                          nesterov, 0.0)
        return
    beta1, beta2, epsilon = hyper[BETA1], hyper[BETA2], hyper[EPSILON]
    t = float(steps[0])  # a float power, as torch's python floats: beta ** t
    step_size = lr / (1.0 - beta1 ** t)
    bias2_sqrt = np.sqrt(1.0 - beta2 ** t)
    coupled = decay if optimizer == ADAM else 0.0
    shrink = 1.0 - lr * decay if optimizer == ADAMW else 1.0
    for layer in range(layout.shape[0]):
        fan_in, fan_out, w_at, has_bias, b_at, _, _ = layer_offsets(layout, layer, 1)
        adam_range(params, state[0], state[1], grad, w_at, w_at + fan_in * fan_out, step_size,
                   bias2_sqrt, beta1, beta2, epsilon, coupled, shrink)
        if has_bias:
            adam_range(params, state[0], state[1], grad, b_at, b_at + fan_out, step_size,
                       bias2_sqrt, beta1, beta2, epsilon, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# One iteration on one sample, the article's: the arithmetic of iteration() with rows == 1, with
# the backward pass and the update fused (no gradient buffer, no separate update pass).


@njit(**INLINE)
def sample_forward(z, a, params, layout, hidden, output):
    """forward() for one sample without the batch machinery (no BLAS branch, no per-layer
    helpers): net_j = b_j + sum_i W_ji a_i, a_j = f(net_j), layer by layer. Predict's path for
    a single sample; sample_iteration has the same loop written out."""
    last = layout.shape[0] - 1
    for layer in range(last + 1):
        fan_in, fan_out, w_at, has_bias, b_at, in_at, out_at = layer_offsets(layout, layer, 1)
        kind = output if layer == last else hidden
        # Two neurons per pass over the inputs: each input load feeds two products, and the
        # loop's fixed cost is paid half as often (0.1 us of a one-sample digits predict).
        pairs_end = fan_out - fan_out % TWO
        for j in range(0, pairs_end, TWO):
            w_j, w_k = w_at + j * fan_in, w_at + (j + ONE) * fan_in
            net_j = params[b_at + j] if has_bias else 0.0
            net_k = params[b_at + j + ONE] if has_bias else 0.0
            for i in range(fan_in):
                net_j += params[w_j + i] * a[in_at + i]
                net_k += params[w_k + i] * a[in_at + i]
            z[out_at + j], z[out_at + j + ONE] = net_j, net_k
            a[out_at + j], a[out_at + j + ONE] = activate(net_j, kind), activate(net_k, kind)
        for j in range(pairs_end, fan_out):  # the odd one out
            net = params[b_at + j] if has_bias else 0.0
            w_j = w_at + j * fan_in
            for i in range(fan_in):
                net += params[w_j + i] * a[in_at + i]
            z[out_at + j] = net
            a[out_at + j] = activate(net, kind)  # softmax: the whole row below
    if output == SOFTMAX:
        softmax_rows(a, z, at(layout[last, U_AT]), 1, layout[last, FAN_OUT])


@njit(**INLINE)
def sample_iteration(params, velocity, z, a, e, d, t, layout, hidden, output, loss, mode,
                     learning_rate, momentum):
    """One sample whose input sits in a[:n_in] and target in t; returns its loss.

    Forward, layer by layer: net_j = b_j + sum_i W_ji a_i, a_j = f(net_j). Then, from the top,
    one pass over each layer's weights, column by column (input i):
        e_i = sum_j d_j W_ji            the error of unit i below, with the forward pass's weights
        v_ji = m v_ji + lr a_i d_j      the update (momentum m), while W_ji is at hand;
        W_ji += v_ji                    without momentum, W_ji += lr a_i d_j (the velocity is
                                        set once, at the end of the call: last_sample_velocity)
        d_i = e_i f'(net_i)             the delta of unit i, as soon as its error is known
    A bias is the weight of a constant input 1; it moves as soon as its neuron's delta is known.

    The forward loop is sample_forward's, written out: calling that helper here would cost
    reference counting on every sample (see the module notes).
    """
    last = layout.shape[0] - 1
    for layer in range(last + 1):
        fan_in, fan_out, w_at, has_bias, b_at, in_at, out_at = layer_offsets(layout, layer, 1)
        kind = output if layer == last else hidden
        pairs_end = fan_out - fan_out % TWO
        for j in range(0, pairs_end, TWO):
            w_j, w_k = w_at + j * fan_in, w_at + (j + ONE) * fan_in
            net_j = params[b_at + j] if has_bias else 0.0
            net_k = params[b_at + j + ONE] if has_bias else 0.0
            for i in range(fan_in):
                net_j += params[w_j + i] * a[in_at + i]
                net_k += params[w_k + i] * a[in_at + i]
            z[out_at + j], z[out_at + j + ONE] = net_j, net_k
            a[out_at + j], a[out_at + j + ONE] = activate(net_j, kind), activate(net_k, kind)
        for j in range(pairs_end, fan_out):  # the odd one out
            net = params[b_at + j] if has_bias else 0.0
            w_j = w_at + j * fan_in
            for i in range(fan_in):
                net += params[w_j + i] * a[in_at + i]
            z[out_at + j] = net
            a[out_at + j] = activate(net, kind)  # softmax: the whole row below
    fan_in, fan_out, w_at, has_bias, b_at, in_at, out_at = layer_offsets(layout, last, 1)
    if output == SOFTMAX:
        softmax_rows(a, z, out_at, 1, fan_out)

    total = output_loss_and_delta(e, d, z, a, t, layout, 1, output, loss, mode)
    if has_bias:
        for j in range(fan_out):
            k = b_at + j
            step = learning_rate * d[out_at + j]
            if momentum != 0.0:
                step = velocity[k] = momentum * velocity[k] + step
            params[k] += step
    for layer in range(last, -1, -1):
        fan_in, fan_out, w_at, _, _, in_at, out_at = layer_offsets(layout, layer, 1)
        below = layer - 1  # the layer whose outputs are this layer's inputs; -1: the inputs
        below_has_bias = below >= 0 and layout[below, B_AT] >= 0
        below_b_at = at(layout[below, B_AT]) if below_has_bias else w_at
        for i in range(fan_in):
            x = a[in_at + i]
            lr_x = learning_rate * x
            err = 0.0
            for j in range(fan_out):
                k = w_at + j * fan_in + i
                err += d[out_at + j] * params[k]
                step = lr_x * d[out_at + j]
                if momentum != 0.0:
                    step = velocity[k] = momentum * velocity[k] + step
                params[k] += step
            if below >= 0:
                e[in_at + i] = err
                d[in_at + i] = err * derivative(z[in_at + i], x, hidden, mode)
                if below_has_bias:
                    k = below_b_at + i
                    step = learning_rate * d[in_at + i]
                    if momentum != 0.0:
                        step = velocity[k] = momentum * velocity[k] + step
                    params[k] += step
    return total


@njit(**INLINE)
def last_sample_velocity(velocity, a, d, layout, learning_rate):
    """v = lr * delta * input for the sample still in the buffers: what v = m v + lr g leaves
    with m = 0 (sample_iteration skips the velocity on every sample without momentum)."""
    for layer in range(layout.shape[0]):
        fan_in, fan_out, w_at, has_bias, b_at, in_at, out_at = layer_offsets(layout, layer, 1)
        for j in range(fan_out):
            for i in range(fan_in):
                velocity[w_at + j * fan_in + i] = learning_rate * a[in_at + i] * d[out_at + j]
            if has_bias:
                velocity[b_at + j] = learning_rate * d[out_at + j]


# ---------------------------------------------------------------------------------------------
# Whole epochs in one call: the training loop of a chunk.


@njit(**INLINE)
def sample_epochs(params, velocity, work, layout, kinds, inputs, targets, orders,
                  learning_rate, momentum, target_loss, epoch_losses):
    """epoch_losses.size epochs of plain SGD (momentum, no weight decay) one sample at a time,
    each sample one sample_iteration; orders, target_loss and the return as batch_epochs.
    Compiled through sample_epochs_narrow and sample_epochs_wide (sample_epochs_for picks)."""
    n = inputs.shape[0]
    n_in, n_out = at(inputs.shape[1]), at(targets.shape[1])
    z, a, e, d, t = work[0], work[1], work[2], work[3], work[4]
    hidden, output, loss, mode = kinds[0], kinds[1], kinds[2], kinds[3]
    shuffled = orders.shape[1] > 0
    ran = epoch_losses.size
    for epoch in range(epoch_losses.size):
        total = 0.0
        for s in range(n):
            row = orders[epoch, s] if shuffled else s
            for i in range(n_in):
                a[i] = inputs[row, i]
            for k in range(n_out):
                t[k] = targets[row, k]
            total += sample_iteration(params, velocity, z, a, e, d, t, layout, hidden, output,
                                      loss, mode, learning_rate, momentum)
        epoch_losses[epoch] = total / n
        if not np.isfinite(epoch_losses[epoch]) or (
                target_loss > 0.0 and epoch_losses[epoch] <= target_loss):
            ran = epoch + 1
            break
    if momentum == 0.0:
        last_sample_velocity(velocity, a, d, layout, learning_rate)
    return ran


# The same loop compiled twice (umap's pattern), as the fastmath flags are set per compiled
# function: without reassoc, a dot product is one chain of dependent multiply-adds, the fastest
# over a few inputs; with it, LLVM splits long ones into vector lanes. Networks with a layer this
# wide or wider take the vectorised compile (per sample of a 16-16-16 net: 0.66 against 0.79 us;
# of 64-64-64: 7.9 against 12 us; an XOR epoch is 8% faster narrow). Two functions, not two
# njit() of one: numba's cache keys a function by its code, not by its flags, so two compiles
# of one function would load each other's machine code.
WIDE_FAN_IN = 16


@njit(**NARROW_JIT)
def sample_epochs_narrow(params, velocity, work, layout, kinds, inputs, targets, orders,
                         learning_rate, momentum, target_loss, epoch_losses):
    return sample_epochs(params, velocity, work, layout, kinds, inputs, targets, orders,
                         learning_rate, momentum, target_loss, epoch_losses)


@njit(**JIT)
def sample_epochs_wide(params, velocity, work, layout, kinds, inputs, targets, orders,
                       learning_rate, momentum, target_loss, epoch_losses):
    return sample_epochs(params, velocity, work, layout, kinds, inputs, targets, orders,
                         learning_rate, momentum, target_loss, epoch_losses)


def sample_epochs_for(layout):
    """The one-sample epoch loop for a layout: sample_epochs_wide when a layer has at least
    WIDE_FAN_IN inputs, else sample_epochs_narrow. A plain function: numba compiles each the
    first time it is used, not both at once."""
    return sample_epochs_wide if layout[:, FAN_IN].max() >= WIDE_FAN_IN else sample_epochs_narrow


@njit(**JIT)
def batch_epochs(params, state, steps, grad, work, layout, kinds, inputs, targets, weights,
                 orders, batch_size, optimizer, hyper, target_loss, epoch_losses):
    """epoch_losses.size epochs in batches of batch_size (>= 1): each batch one batch_gradient
    and one optimizer_update (hyper: the rate and the rest, by index; state and steps as there).

    weights [n] (or no elements: every row counts once): each batch's gradient is
    sum(w_r g_r) / sum(w_r), and a batch whose weights sum to 0 makes no update at all (as if
    its rows were not there). epoch_losses[k] receives the epoch's weighted mean per-sample
    loss, each row's before its batch's update. Stops early as sample_epochs does; returns the
    epochs run. work: Architecture.work_buffers(batch_size), row 5 the rows' shares."""
    n = inputs.shape[0]
    z, a, e, d, t, s = work[0], work[1], work[2], work[3], work[4], work[5]
    weighted = weights.size > 0
    if not weighted:
        for r in range(min(batch_size, n)):
            s[r] = 1.0
    ran = epoch_losses.size
    for epoch in range(epoch_losses.size):
        total, seen = 0.0, 0.0
        for start in range(0, n, batch_size):
            rows = min(batch_size, n - start)
            share = float(rows)
            if weighted:
                share = load_weights(s, weights, orders, epoch, start, rows)
                if share == 0.0:
                    continue
                for r in range(rows):
                    s[r] *= rows / share  # s_r = w_r rows / sum(w): see batch_gradient
            loss = batch_gradient(grad, z, a, e, d, t, s, params, layout, kinds, inputs,
                                  targets, orders, epoch, start, rows)
            total += loss * (share / rows) if weighted else loss
            seen += share
            optimizer_update(params, state, steps, grad, layout, optimizer, hyper)
        epoch_losses[epoch] = total / seen
        if not np.isfinite(epoch_losses[epoch]) or (
                target_loss > 0.0 and epoch_losses[epoch] <= target_loss):
            ran = epoch + 1
            break
    if optimizer == SGD and hyper[MOMENTUM] == 0.0:
        # v = m v + lr g holds for m = 0 too: the velocity a later call may continue from is
        # the last batch's step (sgd_update skips it on every batch without momentum).
        velocity = state[0]
        for k in range(params.size):
            velocity[k] = hyper[LR] * grad[k]
    return ran


@njit(**INLINE)
def right_rows(a, t, layout, rows, output, s):
    """sum_r s_r over the rows the output layer gets right: softmax, when the largest output is
    the largest target (the first of equals, as numpy's argmax); sigmoid, when every output is
    on its target's side of 0.5 (above it, or not). Other outputs: 0 (no classes)."""
    last = layout.shape[0] - 1
    width = at(layout[last, FAN_OUT])
    start = at(rows) * at(layout[last, U_AT])
    right = 0.0
    if output != SOFTMAX and output != SIGMOID:
        return right
    for r in range(at(rows)):
        row, t_r = start + r * width, r * width
        if output == SOFTMAX:
            best_y, best_t = at(0), at(0)
            for k in range(ONE, width):
                if a[row + k] > a[row + best_y]:
                    best_y = k
                if t[t_r + k] > t[t_r + best_t]:
                    best_t = k
            ok = best_y == best_t
        else:
            ok = True
            for k in range(width):
                ok = ok and (a[row + k] > 0.5) == (t[t_r + k] > 0.5)
        if ok:
            right += s[r]
    return right


@njit(**JIT)
def evaluate_rows(totals, inputs, targets, weights, orders, params, layout, kinds, work):
    """The model as it stands on a set of rows (validation, the training rows' accuracy):
        totals = [sum_r w_r loss_r, sum_r w_r right_r (right_rows), sum_r w_r]
    with w = 1 when weights has no elements. Forward passes only, work.shape[1] // units rows
    at a time (work: Architecture.work_buffers(block)); nothing is changed but work."""
    n = inputs.shape[0]
    hidden, output, loss, mode = kinds[0], kinds[1], kinds[2], kinds[3]
    last = layout.shape[0] - 1
    block = work.shape[1] // (layout[last, U_AT] + layout[last, FAN_OUT])
    z, a, e, d, t, s = work[0], work[1], work[2], work[3], work[4], work[5]
    weighted = weights.size > 0
    totals[0], totals[1], totals[2] = 0.0, 0.0, 0.0
    for start in range(0, n, block):
        rows = min(block, n - start)
        if weighted:
            totals[2] += load_weights(s, weights, orders, 0, start, rows)
        else:
            for r in range(rows):
                s[r] = 1.0
            totals[2] += rows
        load_rows(a, t, inputs, targets, orders, 0, start, rows)
        forward(z, a, params, layout, rows, hidden, output)
        totals[0] += output_loss_and_delta(e, d, z, a, t, layout, rows, output, loss, mode, s)
        totals[1] += right_rows(a, t, layout, rows, output, s)


@njit(**JIT)
def finite_differences(numeric, params, z, a, e, d, t, layout, kinds, first, end, h):
    """The descent direction by central differences, for parameters first..end-1:
        numeric[k] = -(loss(p_k + h) - loss(p_k - h)) / 2h
    for the one sample whose input sits in a[:n_in] and target in t: two forward passes per
    parameter, with the loss training uses (output_loss_and_delta; its e and d are scratch
    here). The divisor is the step actually taken, (p + h) - (p - h) as rounded, not 2h. Each
    parameter is put back exactly as it was. One loop over both passes of every parameter, so
    that the forward pass and the loss are compiled in once (each is a good part of a cold
    compile)."""
    hidden, output, loss, mode = kinds[0], kinds[1], kinds[2], kinds[3]
    up = 0.0
    for n in range(2 * first, 2 * end):
        k = n // 2
        keep = params[k]
        params[k] = keep + h if n % 2 == 0 else keep - h
        forward(z, a, params, layout, 1, hidden, output)
        value = output_loss_and_delta(e, d, z, a, t, layout, 1, output, loss, mode)
        if n % 2 == 0:
            up = value
            params[k] = keep
        else:
            numeric[k] = (value - up) / ((keep + h) - (keep - h))
            params[k] = keep


@njit(**JIT)
def predict_rows(outputs, inputs, params, layout, kinds, work):
    """outputs [n, n_out] = network(inputs [n, n_in]), `block` rows at a time, where the unit
    buffers work[0] (nets) and work[1] (outputs) hold block * units values. Returns how many
    inputs are not finite (then the outputs mean nothing and the caller rejects the request)."""
    n, n_in = inputs.shape
    last = layout.shape[0] - 1
    n_out = layout[last, FAN_OUT]
    units = layout[last, U_AT] + n_out
    block = work.shape[1] // units
    z, a = work[0], work[1]
    not_finite = 0
    if n == 1:  # one sample, the common request
        for i in range(n_in):
            not_finite += not np.isfinite(inputs[0, i])
            a[i] = inputs[0, i]
        sample_forward(z, a, params, layout, kinds[0], kinds[1])
        for k in range(n_out):
            outputs[0, k] = a[units - n_out + k]
        return not_finite
    for start in range(0, n, block):
        rows = min(block, n - start)
        for r in range(rows):
            for i in range(n_in):
                x = inputs[start + r, i]
                not_finite += not np.isfinite(x)
                a[r * n_in + i] = x
        forward(z, a, params, layout, rows, kinds[0], kinds[1])
        first = rows * layout[last, U_AT]
        for r in range(rows):
            for k in range(n_out):
                outputs[start + r, k] = a[first + r * n_out + k]
    return not_finite
