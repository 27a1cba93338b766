"""The numba kernels: forward pass, backpropagation and the SGD update of a multi-layer perceptron.

Everything here is a plain `@njit` function over contiguous float64 arrays: no classes, no I/O,
no raising, no allocation inside loops. Validation happens before these run (model.py).

Memory layout, shared by every kernel:

    params    flat float64: layer 0's W [fan_out, fan_in] row-major, then its b [fan_out] (when
              the architecture has biases), then layer 1's, ...  W[j, i] joins input i to neuron j.
    layout    int64 [n_layers, 5]: per layer FAN_IN, FAN_OUT, W_AT, B_AT (-1: no bias) and U_AT,
              the offset of the layer's neurons in the unit numbering (the input units are 0..).
    z, a, e, d  flat float64 unit buffers for `rows` samples at once: nets, outputs, errors, deltas.
              Layer l's block starts at rows * U_AT and is a row-major [rows, FAN_OUT] matrix, so
              with rows == 1 the buffers are simply indexed by unit.

Sign convention (the article's): error = target - output, delta = error * f'(.), and the update is
w += learning_rate * delta * input. With loss 0.5 * sum((t - y)^2) that is gradient descent.
`grad` therefore holds the *descent direction* (minus the gradient of the mean loss).
"""

import numpy as np
from numba import njit

# Activation, loss and gradient-mode codes: the same numbers as the proto enums.
SIGMOID, TANH, RELU, LINEAR, SOFTMAX = 1, 2, 3, 4, 5
MSE, CROSS_ENTROPY = 1, 2
EXACT, ARTICLE = 1, 2

# Columns of `layout`.
FAN_IN, FAN_OUT, W_AT, B_AT, U_AT = 0, 1, 2, 3, 4

# Below this many multiply-adds a dense op runs as plain loops; above, it calls BLAS, whose
# per-call cost (~0.3 us) only pays off on real matrices. Measured by benchmarks/engine.py.
BLAS_MIN_WORK = 2048

# No nnan/ninf: divergence detection relies on NaN and inf surviving the arithmetic.
JIT = dict(cache=True, nogil=True, fastmath={"nsz", "arcp", "contract", "reassoc"})
# Inlined into their callers at numba level, so references to the shared buffers are not
# counted on every call of the per-sample loop.
INLINE = dict(JIT, inline="always")


# ---------------------------------------------------------------------------------------------
# Activations: f, and its derivative in both gradient modes.


@njit(**INLINE)
def sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + np.exp(-x))
    ex = np.exp(x)  # never overflows for x < 0
    return ex / (1.0 + ex)


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
def softmax_rows(a, z, at, rows, width):
    """a[r, :] = exp(z[r, :] - max) / sum, for the [rows, width] block at `at`."""
    for r in range(rows):
        row = at + r * width
        top = z[row]
        for k in range(1, width):
            top = max(top, z[row + k])
        total = 0.0
        for k in range(width):
            a[row + k] = np.exp(z[row + k] - top)
            total += a[row + k]
        for k in range(width):
            a[row + k] /= total


@njit(**INLINE)
def activation_forward(a, z, at, rows, width, kind):
    if kind == SOFTMAX:
        softmax_rows(a, z, at, rows, width)
    else:
        for k in range(at, at + rows * width):
            a[k] = activate(z[k], kind)


# ---------------------------------------------------------------------------------------------
# The same dense ops through BLAS, for layers big enough to pay for the call. Kept out of line:
# the views they make would otherwise cost reference counting in the per-sample loop.


@njit(**JIT)
def matmul_forward(z, a, params, in_at, out_at, w_at, b_at, rows, fan_in, fan_out):
    # z_out [rows, fan_out] = a_in [rows, fan_in] @ W.T + b
    w = params[w_at : w_at + fan_out * fan_in].reshape((fan_out, fan_in))
    x = a[in_at : in_at + rows * fan_in].reshape((rows, fan_in))
    out = z[out_at : out_at + rows * fan_out].reshape((rows, fan_out))
    np.dot(x, w.T, out)
    if b_at >= 0:
        for r in range(rows):
            for j in range(fan_out):
                out[r, j] += params[b_at + j]


@njit(**JIT)
def matmul_weight_grad(grad, a, d, in_at, out_at, w_at, rows, fan_in, fan_out):
    # dW [fan_out, fan_in] = d [rows, fan_out].T @ a_in [rows, fan_in] / rows
    dw = grad[w_at : w_at + fan_out * fan_in].reshape((fan_out, fan_in))
    delta = d[out_at : out_at + rows * fan_out].reshape((rows, fan_out))
    x = a[in_at : in_at + rows * fan_in].reshape((rows, fan_in))
    np.dot(delta.T, x, dw)
    scale = 1.0 / rows
    for k in range(w_at, w_at + fan_out * fan_in):
        grad[k] *= scale


@njit(**JIT)
def matmul_input_error(e, d, params, in_at, out_at, w_at, rows, fan_in, fan_out):
    # e_in [rows, fan_in] = d [rows, fan_out] @ W [fan_out, fan_in]
    w = params[w_at : w_at + fan_out * fan_in].reshape((fan_out, fan_in))
    delta = d[out_at : out_at + rows * fan_out].reshape((rows, fan_out))
    err = e[in_at : in_at + rows * fan_in].reshape((rows, fan_in))
    np.dot(delta, w, err)



# ---------------------------------------------------------------------------------------------
# Dense layer: z = a_in W^T + b, and its backward pass.


@njit(**INLINE)
def dense_forward(z, a, params, layout, layer, rows):
    # a_in [rows, fan_in] -> z_out [rows, fan_out]; W [fan_out, fan_in], b [fan_out]
    fan_in, fan_out = layout[layer, FAN_IN], layout[layer, FAN_OUT]
    w_at, b_at = layout[layer, W_AT], layout[layer, B_AT]
    in_at = rows * (layout[layer, U_AT] - fan_in)
    out_at = rows * layout[layer, U_AT]
    if rows * fan_in * fan_out >= BLAS_MIN_WORK:
        matmul_forward(z, a, params, in_at, out_at, w_at, b_at, rows, fan_in, fan_out)
        return
    for r in range(rows):
        x_r = in_at + r * fan_in
        for j in range(fan_out):
            net = params[b_at + j] if b_at >= 0 else 0.0
            w_j = w_at + j * fan_in
            for i in range(fan_in):
                net += params[w_j + i] * a[x_r + i]
            z[out_at + r * fan_out + j] = net


@njit(**INLINE)
def dense_backward(grad, e, a, d, params, layout, layer, rows):
    """From this layer's deltas d [rows, fan_out]:
    grad W[j, i] = mean_r d[r, j] * a_in[r, i], grad b[j] = mean_r d[r, j], and, below the first
    layer, the error of the neurons feeding it: e_in[r, i] = sum_j d[r, j] * W[j, i]."""
    fan_in, fan_out = layout[layer, FAN_IN], layout[layer, FAN_OUT]
    w_at, b_at = layout[layer, W_AT], layout[layer, B_AT]
    in_at = rows * (layout[layer, U_AT] - fan_in)
    out_at = rows * layout[layer, U_AT]
    scale = 1.0 / rows
    blas = rows * fan_in * fan_out >= BLAS_MIN_WORK

    if blas:
        matmul_weight_grad(grad, a, d, in_at, out_at, w_at, rows, fan_in, fan_out)
    else:
        for k in range(w_at, w_at + fan_out * fan_in):
            grad[k] = 0.0
        for r in range(rows):
            x_r = in_at + r * fan_in
            for j in range(fan_out):
                dj = d[out_at + r * fan_out + j] * scale
                w_j = w_at + j * fan_in
                for i in range(fan_in):
                    grad[w_j + i] += dj * a[x_r + i]
    if b_at >= 0:
        for j in range(fan_out):
            db = 0.0
            for r in range(rows):
                db += d[out_at + r * fan_out + j]
            grad[b_at + j] = db * scale

    if layer == 0:
        return  # the inputs have no error to propagate to
    if blas:
        matmul_input_error(e, d, params, in_at, out_at, w_at, rows, fan_in, fan_out)
        return
    for r in range(rows):
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
def output_loss_and_delta(e, d, z, a, t, layout, rows, output, loss, mode):
    """Fills the output layer's error e = t - y and delta d; returns the summed loss of the rows.

    MSE: loss 0.5 * sum((t - y)^2), delta = e * f'(.) (softmax: its Jacobian applied to e).
    Cross-entropy (softmax or sigmoid output): delta = t - y exactly, the derivative cancels
    (softmax: t - y * sum(t), the same for target rows that sum to 1).
    """
    last = layout.shape[0] - 1
    width = layout[last, FAN_OUT]
    at = rows * layout[last, U_AT]
    total = 0.0
    for r in range(rows):
        row = at + r * width
        t_r = r * width
        for k in range(width):
            e[row + k] = t[t_r + k] - a[row + k]
        if loss == CROSS_ENTROPY:
            if output == SOFTMAX:
                # -sum t log softmax(z) = sum t * (logsumexp(z) - z), from z for stability
                top = z[row]
                for k in range(1, width):
                    top = max(top, z[row + k])
                lse = 0.0
                for k in range(width):
                    lse += np.exp(z[row + k] - top)
                lse = top + np.log(lse)
                # d(loss)/dz_k = y_k * sum(t) - t_k: the familiar t - y when a target row sums to 1
                t_sum = 0.0
                for k in range(width):
                    total += t[t_r + k] * (lse - z[row + k])
                    t_sum += t[t_r + k]
                for k in range(width):
                    d[row + k] = t[t_r + k] - a[row + k] * t_sum
                continue
            # sigmoid: -[t log s(z) + (1 - t) log(1 - s(z))] = softplus(z) - t z
            for k in range(width):
                x = z[row + k]
                total += max(x, 0.0) + np.log1p(np.exp(-abs(x))) - t[t_r + k] * x
            for k in range(width):
                d[row + k] = e[row + k]  # the sigmoid's derivative cancels: exactly t - y
            continue
        for k in range(width):
            total += 0.5 * e[row + k] * e[row + k]
        if output == SOFTMAX:
            # d_k = s_k (e_k - sum_m e_m s_m); s is the output (EXACT) or softmax(output) (ARTICLE)
            if mode == ARTICLE:
                softmax_rows(d, a, row, 1, width)
            else:
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
    return total


# ---------------------------------------------------------------------------------------------
# One iteration: forward, backward, update.


@njit(**INLINE)
def forward(z, a, params, layout, rows, hidden, output):
    """All layers for the `rows` samples whose inputs sit in the input block of `a`."""
    last = layout.shape[0] - 1
    for layer in range(last + 1):
        dense_forward(z, a, params, layout, layer, rows)
        kind = output if layer == last else hidden
        at = rows * layout[layer, U_AT]
        activation_forward(a, z, at, rows, layout[layer, FAN_OUT], kind)


@njit(**INLINE)
def backward(grad, e, d, z, a, params, layout, rows, hidden, mode):
    """From the output deltas down: each layer's gradient, and each hidden layer's e and d.
    Hidden errors use the weights as they were in the forward pass: nothing is updated here."""
    for layer in range(layout.shape[0] - 1, -1, -1):
        dense_backward(grad, e, a, d, params, layout, layer, rows)
        if layer > 0:
            width = layout[layer - 1, FAN_OUT]
            at = rows * layout[layer - 1, U_AT]
            for k in range(at, at + rows * width):
                d[k] = e[k] * derivative(z[k], a[k], hidden, mode)


@njit(**INLINE)
def sgd_update(params, velocity, grad, learning_rate, momentum):
    """v = momentum * v + lr * grad; params += v. With momentum 0: params += lr * grad."""
    if momentum == 0.0:
        for k in range(params.size):
            params[k] += learning_rate * grad[k]
        return
    for k in range(params.size):
        velocity[k] = momentum * velocity[k] + learning_rate * grad[k]
        params[k] += velocity[k]


@njit(**INLINE)
def load_rows(a, t, inputs, targets, orders, epoch, start, rows):
    """Copies samples orders[epoch, start : start + rows] (start.. when orders has no columns)
    into the input block of `a` and into t."""
    n_in = inputs.shape[1]
    n_out = targets.shape[1]
    for r in range(rows):
        s = orders[epoch, start + r] if orders.shape[1] > 0 else start + r
        for i in range(n_in):
            a[r * n_in + i] = inputs[s, i]
        for k in range(n_out):
            t[r * n_out + k] = targets[s, k]


@njit(**INLINE)
def iteration(params, velocity, grad, z, a, e, d, t, layout, kinds, inputs, targets, orders,
              epoch, start, rows, learning_rate, momentum):
    """One iteration on `rows` samples: forward, loss and deltas, backward, update.
    Returns the summed loss of those samples (before the update)."""
    hidden, output, loss, mode = kinds[0], kinds[1], kinds[2], kinds[3]
    load_rows(a, t, inputs, targets, orders, epoch, start, rows)
    forward(z, a, params, layout, rows, hidden, output)
    total = output_loss_and_delta(e, d, z, a, t, layout, rows, output, loss, mode)
    backward(grad, e, d, z, a, params, layout, rows, hidden, mode)
    if learning_rate != 0.0:
        sgd_update(params, velocity, grad, learning_rate, momentum)
    return total


# ---------------------------------------------------------------------------------------------
# Whole epochs in one call: the training loop of a chunk.


@njit(**JIT)
def train_epochs(params, velocity, grad, work, layout, kinds, inputs, targets, orders,
                 batch_size, learning_rate, momentum, target_loss, epoch_losses):
    """Runs epoch_losses.size epochs of mini-batch SGD over (inputs, targets).

    orders [epochs, n] gives each epoch's sample order; shape [0, 0] means the stored order.
    epoch_losses[k] receives the mean per-sample loss seen during epoch k. Stops early after an
    epoch whose loss is non-finite (divergence) or at most target_loss (> 0); returns the number
    of epochs run.
    """
    n = inputs.shape[0]
    z, a, e, d, t = work[0], work[1], work[2], work[3], work[4]
    for epoch in range(epoch_losses.size):
        total = 0.0
        for start in range(0, n, batch_size):
            rows = min(batch_size, n - start)
            total += iteration(params, velocity, grad, z, a, e, d, t, layout, kinds, inputs,
                               targets, orders, epoch, start, rows, learning_rate, momentum)
        epoch_losses[epoch] = total / n
        if not np.isfinite(epoch_losses[epoch]):
            return epoch + 1
        if target_loss > 0.0 and epoch_losses[epoch] <= target_loss:
            return epoch + 1
    return epoch_losses.size


@njit(**JIT)
def predict_rows(outputs, inputs, params, layout, hidden, output, work):
    """outputs [n, n_out] = network(inputs [n, n_in]), `block` rows at a time, where the unit
    buffers work[0] (nets) and work[1] (outputs) hold block * units values."""
    n, n_in = inputs.shape
    last = layout.shape[0] - 1
    n_out = layout[last, FAN_OUT]
    units = layout[last, U_AT] + n_out
    block = work.shape[1] // units
    z, a = work[0], work[1]
    for start in range(0, n, block):
        rows = min(block, n - start)
        for r in range(rows):
            for i in range(n_in):
                a[r * n_in + i] = inputs[start + r, i]
        forward(z, a, params, layout, rows, hidden, output)
        at = rows * layout[last, U_AT]
        for r in range(rows):
            for k in range(n_out):
                outputs[start + r, k] = a[at + r * n_out + k]
