"""A Step's arithmetic written out line by line, as the article does it, or as a compact table;
and a gradient check as a short table (gradient_table).

    net1_h = 0 * 0.2 + 1 * 0.6 = 0.6
    output1_h = f(net1_h) = f(0.6) = 0.645656
    ...
    delta_o = deriv(output_o) * error_o = deriv(0.78553) * 0.21447 = 0.215079 * 0.21447
              = 0.0461281                                     (one line in the output)
    error1_h = delta_o * 0.6 = 0.0461281 * 0.6 = 0.0276769
    ...
    w_o[1,1] = old + output1_h * delta_o * learning_rate = 0.6 + 0.645656 * 0.0461281 * 0.001
               = 0.60003                                      (one line in the output)

Names follow the article: `_h` for the hidden layer (`_h1`, `_h2`, ... when there are several),
`_o` for the output layer, neurons numbered from 1 (no number when a layer has one neuron).
`w_o[j,i]` joins neuron i of the layer below (or input i) to neuron j, as weights are stored
[fan_out, fan_in]. Numbers have up to 6 significant digits; an updated weight gets more when 6
would hide its change. Every result on the right of a line is the server's value; the client
only recomputes the derivative factors it shows (with the kernels' formulas).
"""

from __future__ import annotations

import math

import numpy as np

from .results import GradientCheck, Model, StepTrace

_F = {  # f(x), as the legend shows it
    "sigmoid": "1 / (1 + exp(-x))",
    "tanh": "tanh(x)",
    "relu": "max(0, x)",
    "linear": "x",
    "softmax": "exp(x_j) / sum_k exp(x_k)",
}
_EXACT = {  # f'(x), written through y = f(x) as the kernels compute it
    "sigmoid": "f(x) * (1 - f(x)) = y * (1 - y)",
    "tanh": "1 - tanh(x)^2 = 1 - y^2",
    "relu": "1 if x > 0 else 0",
    "linear": "1",
}
_ARTICLE = {  # the derivative formula applied to the output y
    "sigmoid": "f(y) * (1 - f(y))",
    "tanh": "1 - tanh(y)^2",
    "relu": "1 if y > 0 else 0",
    "linear": "1",
}


def fmt(x: float, digits: int = 6) -> str:
    """Up to `digits` significant digits, no trailing zeros: 0.6, 0.645656, 1, 1e-07."""
    x = float(x)
    if x == 0.0:
        return "0"
    return f"{x:.{digits}g}"


def short_vector(values, most: int = 8) -> str:
    """(0, 1) for a short vector; the first `most` values and the count for a long one."""
    shown = ", ".join(fmt(v) for v in values[:most])
    return f"({shown})" if len(values) <= most else f"({shown}, ... {len(values)} values)"


def _operand(x: float) -> str:
    """A number inside a product: negatives in parentheses."""
    text = fmt(x)
    return f"({text})" if text.startswith("-") else text


def _fmt_new(old: float, new: float) -> str:
    """The updated value, with enough digits to differ from the old one when it does."""
    for digits in range(6, 16):
        if new == old or fmt(new, digits) != fmt(old, digits):
            return fmt(new, digits)
    return fmt(new, 16)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _derivative(kind: str, net: float, y: float, mode: str) -> float:
    """The kernels' derivative (service/engine/kernels.py `derivative`), for display."""
    article = mode == "article"
    if kind == "sigmoid":
        if article:
            s = _sigmoid(y)
            return s * (1.0 - s)
        return y * (1.0 - y)
    if kind == "tanh":
        if article:
            s = math.tanh(y)
            return 1.0 - s * s
        return 1.0 - y * y
    if kind == "relu":
        return 1.0 if (y if article else net) > 0.0 else 0.0
    return 1.0


class ArticleNames:
    """Article-style names for one Step's layers."""

    def __init__(self, trace: StepTrace):
        n = len(trace.layers)
        self.tags = ["h" if n == 2 else f"h{k + 1}" for k in range(n - 1)] + ["o"]
        self.sizes = [layer.net.size for layer in trace.layers]

    def neuron(self, kind: str, k: int, j: int) -> str:
        number = "" if self.sizes[k] == 1 else str(j + 1)
        return f"{kind}{number}_{self.tags[k]}"

    def inputs(self, k: int, n_inputs: int) -> list[str]:
        """What feeds layer k: the inputs, or the outputs of layer k - 1."""
        if k == 0:
            return [f"input{i + 1}" for i in range(n_inputs)]
        return [self.neuron("output", k - 1, i) for i in range(self.sizes[k - 1])]


def weights_before(trace: StepTrace, k: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Layer k's weights and biases before the update (recomputed from the update when the
    server did not send them: w_old = w_new - learning_rate * delta_j * input_i)."""
    layer = trace.layers[k]
    if layer.weights_before is not None:
        return layer.weights_before, layer.biases_before
    x = trace.input if k == 0 else trace.layers[k - 1].output
    w = layer.weights - trace.learning_rate * np.outer(layer.delta, x)
    b = None if layer.biases is None else layer.biases - trace.learning_rate * layer.delta
    return w, b


def explain(trace: StepTrace, model: Model) -> str:
    """The whole Step as the article writes it, one line per number."""
    names = ArticleNames(trace)
    n = len(trace.layers)
    activations = model.activations
    mode = model.gradient_mode
    same = len(set(activations)) == 1
    fname = ["f" if same else f"f_{'o' if k == n - 1 else 'h'}" for k in range(n)]
    lines: list[str] = []
    add = lines.append

    add(f"Step on model '{trace.model_id}' ({model.describe()})")
    add(f"input = ({', '.join(fmt(v) for v in trace.input)}), "
        f"target = ({', '.join(fmt(v) for v in trace.target)}), "
        f"learning_rate = {fmt(trace.learning_rate)}")
    legends = {}
    for k, kind in enumerate(activations):
        legends.setdefault(fname[k], kind)
    for symbol, kind in legends.items():
        add(f"{symbol}(x) = {_F.get(kind, kind)}")
        if kind == "softmax":
            continue
        if mode == "article":
            deriv = "deriv" if same else f"deriv_{symbol[-1]}"
            add(f"{deriv}(y) = {_ARTICLE.get(kind, '?')}, applied to the output y "
                "(ARTICLE gradients: the article's arithmetic)")
        else:
            add(f"{symbol}'(x) = {_EXACT.get(kind, '?')}")

    # Forward propagation: net = sum(input * weight) (+ bias), output = f(net).
    add("")
    add("Forward propagation")
    x = trace.input
    for k, layer in enumerate(trace.layers):
        w, b = weights_before(trace, k)
        for j in range(layer.net.size):
            terms = [f"{_operand(x[i])} * {_operand(w[j, i])}" for i in range(x.size)]
            if b is not None:
                terms.append(_operand(b[j]))
            add(f"  {names.neuron('net', k, j)} = {' + '.join(terms)} = {fmt(layer.net[j])}")
        if activations[k] == "softmax":
            total = float(np.sum(np.exp(layer.net)))
            for j in range(layer.net.size):
                add(f"  {names.neuron('output', k, j)} = exp({names.neuron('net', k, j)}) / "
                    f"sum(exp(net_{names.tags[k]})) = exp({fmt(layer.net[j])}) / {fmt(total)} "
                    f"= {fmt(layer.output[j])}")
        else:
            for j in range(layer.net.size):
                net = names.neuron("net", k, j)
                add(f"  {names.neuron('output', k, j)} = {fname[k]}({net}) = "
                    f"{fname[k]}({fmt(layer.net[j])}) = {fmt(layer.output[j])}")
        x = layer.output

    # Back propagation, from the output layer down.
    for k in range(n - 1, -1, -1):
        layer = trace.layers[k]
        add("")
        add("Output error and delta" if k == n - 1 else
            "Hidden error and delta" + ("" if n == 2 else f" ({names.tags[k]})"))
        if k == n - 1:
            for j in range(layer.net.size):
                out = names.neuron("output", k, j)
                target = "target" if layer.net.size == 1 else f"target{j + 1}"
                add(f"  {names.neuron('error', k, j)} = {target} - {out} = "
                    f"{fmt(trace.target[j])} - {_operand(layer.output[j])} = "
                    f"{fmt(layer.error[j])}")
        else:
            above = trace.layers[k + 1]
            w_above, _ = weights_before(trace, k + 1)
            for j in range(layer.net.size):
                symbols = [f"{names.neuron('delta', k + 1, m)} * {_operand(w_above[m, j])}"
                           for m in range(above.delta.size)]
                values = [f"{_operand(above.delta[m])} * {_operand(w_above[m, j])}"
                          for m in range(above.delta.size)]
                add(f"  {names.neuron('error', k, j)} = {' + '.join(symbols)} = "
                    f"{' + '.join(values)} = {fmt(layer.error[j])}")
        for line in _delta_lines(trace, model, names, k, fname[k]):
            add("  " + line)

    # Weight updates: w = old + input * delta * learning_rate, output layer first as the article.
    add("")
    add("Weight updates: w = old + input * delta * learning_rate")
    lr = trace.learning_rate
    for k in range(n - 1, -1, -1):
        layer = trace.layers[k]
        w_old, b_old = weights_before(trace, k)
        feed = trace.input if k == 0 else trace.layers[k - 1].output
        feed_names = names.inputs(k, feed.size)
        tag = names.tags[k]
        for j in range(layer.net.size):
            delta = names.neuron("delta", k, j)
            for i in range(feed.size):
                add(f"  w_{tag}[{j + 1},{i + 1}] = old + {feed_names[i]} * {delta} * learning_rate"
                    f" = {fmt(w_old[j, i])} + {_operand(feed[i])} * {_operand(layer.delta[j])} * "
                    f"{fmt(lr)} = {_fmt_new(w_old[j, i], layer.weights[j, i])}")
            if b_old is not None and layer.biases is not None:
                add(f"  b_{tag}[{j + 1}] = old + {delta} * learning_rate = {fmt(b_old[j])} + "
                    f"{_operand(layer.delta[j])} * {fmt(lr)} = "
                    f"{_fmt_new(b_old[j], layer.biases[j])}")

    add("")
    if trace.dry_run:
        add(f"loss = {fmt(trace.loss)}; a dry run: the stored weights are unchanged "
            f"(version {trace.version})")
    else:
        add(f"loss = {fmt(trace.loss)}; the updated weights are stored as version {trace.version}")
    return "\n".join(lines)


def _delta_lines(trace: StepTrace, model: Model, names: ArticleNames, k: int, f: str) -> list[str]:
    layer = trace.layers[k]
    n = len(trace.layers)
    kind = model.activations[k]
    mode = model.gradient_mode
    out = []
    if k == n - 1 and model.loss == "cross_entropy":
        for j in range(layer.net.size):
            out.append(f"{names.neuron('delta', k, j)} = {names.neuron('error', k, j)} = "
                       f"{fmt(layer.delta[j])}   (cross-entropy with a {kind} output: the "
                       "derivative cancels)")
        return out
    if kind == "softmax":
        y = layer.output
        s = y if mode != "article" else np.exp(y - y.max()) / np.exp(y - y.max()).sum()
        dot = float(np.dot(layer.error, s))
        s_name = "output" if mode != "article" else "softmax(output)"
        for j in range(layer.net.size):
            out.append(f"{names.neuron('delta', k, j)} = s{j + 1} * (error{j + 1} - "
                       f"sum(error * s)) = {_operand(s[j])} * ({fmt(layer.error[j])} - "
                       f"{_operand(dot)}) = {fmt(layer.delta[j])}   (s = {s_name})")
        return out
    for j in range(layer.net.size):
        d = _derivative(kind, layer.net[j], layer.output[j], mode)
        error = names.neuron("error", k, j)
        if mode == "article":
            deriv = "deriv" if f == "f" else f"deriv_{f[-1]}"
            factor = f"{deriv}({names.neuron('output', k, j)})"
            at = f"{deriv}({fmt(layer.output[j])})"
        else:
            factor = f"{f}'({names.neuron('net', k, j)})"
            at = f"{f}'({fmt(layer.net[j])})"
        out.append(f"{names.neuron('delta', k, j)} = {factor} * {error} = {at} * "
                   f"{_operand(layer.error[j])} = {fmt(d)} * {_operand(layer.error[j])} = "
                   f"{fmt(layer.delta[j])}")
    return out


def table(trace: StepTrace) -> str:
    """The Step as a compact table: one row per neuron, then the loss and version."""
    names = ArticleNames(trace)
    rows = [("layer", "neuron", "net", "output", "error", "delta", "max |dw|")]
    for k, layer in enumerate(trace.layers):
        w_old, _ = weights_before(trace, k)
        for j in range(layer.net.size):
            change = float(np.max(np.abs(layer.weights[j] - w_old[j]))) if w_old.size else 0.0
            rows.append((names.tags[k], str(j + 1), fmt(layer.net[j]), fmt(layer.output[j]),
                         fmt(layer.error[j]), fmt(layer.delta[j]), fmt(change, 3)))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[c]) if c == 0 else cell.rjust(widths[c])
                       for c, cell in enumerate(r)).rstrip() for r in rows]
    state = ("dry run, weights unchanged" if trace.dry_run else "weights updated")
    lines.append(f"loss {fmt(trace.loss)}; {state}; model version {trace.version}")
    return "\n".join(lines)


# Below this, EXACT gradients count as agreeing with the finite differences: the proto's
# relative error is about 1e-6 or less for a correct backward pass (CheckGradientsResponse).
AGREES = 1e-4
# A gradient check lists every parameter when the model has at most this many.
MAX_LISTED = 24


def gradient_table(check: GradientCheck, model: Model) -> str:
    """A gradient check as a short table: every parameter of a small model, then one row per
    layer with its largest relative error and where it is, and what the largest one means."""
    n = len(check.layers)
    tags = ["h" if n == 2 else f"h{k + 1}" for k in range(n - 1)] + ["o"]
    entries = []  # (layer, name, analytic, numeric, relative error)
    for k, layer in enumerate(check.layers):
        for (j, i), a in np.ndenumerate(layer.weights):
            entries.append((k, f"w_{tags[k]}[{j + 1},{i + 1}]", a, layer.numeric_weights[j, i]))
        if layer.biases is not None:
            for j, a in enumerate(layer.biases):
                entries.append((k, f"b_{tags[k]}[{j + 1}]", a, layer.numeric_biases[j]))
    entries = [(k, name, float(a), float(num), _relative_error(a, num))
               for k, name, a, num in entries]

    lines = [f"Gradient check on model '{check.model_id}' ({model.describe()}), version "
             f"{check.version}",
             f"input = {short_vector(check.input)}, target = {short_vector(check.target)}, "
             f"loss = {fmt(check.loss)}",
             "analytic: the engine's backward pass; numeric: -(loss(p + h) - loss(p - h)) / 2h "
             f"with h = {fmt(check.epsilon)}",
             "both are -dLoss/dp, the direction a Step moves p in (times the learning rate)",
             ""]
    rows = []
    if len(entries) <= MAX_LISTED:
        rows.append(("parameter", "analytic", "numeric", "rel. error"))
        rows += [(name, fmt(a), fmt(num), fmt(err, 3)) for _, name, a, num, err in entries]
        rows.append(("", "", "", ""))
    rows.append(("layer", "parameters", "max rel. error", "worst parameter"))
    for k, layer in enumerate(check.layers):
        mine = [e for e in entries if e[0] == k]
        _, name, a, num, err = max(mine, key=lambda e: e[4])
        rows.append((tags[k], str(len(mine)), fmt(layer.max_relative_error, 3),
                     f"{name}: analytic {fmt(a)}, numeric {fmt(num)}"))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    for r in rows:
        cells = [r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].rjust(widths[2]), r[3]]
        lines.append("  ".join(cells).rstrip())
    worst = check.max_relative_error
    lines.append("")
    if model.gradient_mode == "article":
        lines.append(f"largest relative error {fmt(worst, 3)}: ARTICLE gradients apply the "
                     "derivative formula to the output y instead of the net input, and this is "
                     "how far that is from the true gradient (EXACT mode follows it)")
    elif worst <= AGREES:
        lines.append(f"largest relative error {fmt(worst, 3)}: the backward pass agrees with "
                     "the finite differences")
    else:
        lines.append(f"largest relative error {fmt(worst, 3)}: more than the finite "
                     "differences' own error (about 1e-6). A relu neuron whose net input is "
                     "within h of 0 (its kink) does this; otherwise try a smaller --epsilon")
    return "\n".join(lines)


def _relative_error(analytic: float, numeric: float) -> float:
    """As the server computes it (CheckGradientsResponse): |a - n| / max(|a|, |n|, 1e-6)."""
    return abs(analytic - numeric) / max(abs(analytic), abs(numeric), 1e-6)
