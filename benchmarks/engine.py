"""The engine against a bare numba loop, numpy, PyTorch (CPU) and scikit-learn, side by side.

    python benchmarks/engine.py            # full run (a few minutes), writes docs/benchmarks.md
    python benchmarks/engine.py --quick    # fewer repeats, smaller runs (about a minute)

Three rows, each the same math in every implementation (same sizes, initial weights, learning
rate and batches, where the library lets us choose):

    xor       an epoch of XOR one sample at a time: 2-4-1 sigmoid, biases, MSE, lr 0.5, U[0, 1)
    digits    load_digits / 16, 75/25 split (random_state 0), 64-64-10 relu / softmax
              cross-entropy, He init, batch 32, lr 0.1, 30 epochs, shuffled each epoch
    predict   one digits sample through the trained 64-64-10 network, in-process

plus the engine's cold start (a fresh process with an empty NUMBA_CACHE_DIR compiles every
kernel) and warm start (the same with the cache filled). The process runs on one core with
one BLAS / OpenMP / torch thread; implementations alternate within each repeat and every figure
is a median over the repeats. torch and scikit-learn are optional (`pip install .[bench]`).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

# Before numpy loads a BLAS: one thread everywhere, so every implementation gets the same core.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = "1"
# Some machines set OPENBLAS_CORETYPE (with OPENBLAS_L2_SIZE) for old OpenBLAS builds; it pins a
# current OpenBLAS to an older, slower kernel. The numbers compare implementations on this CPU,
# so this process (and its children) drops both unless --keep-openblas-env; the report records
# what was set and which kernel each BLAS runs.
_OPENBLAS_ENV = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
if "--keep-openblas-env" not in sys.argv:
    for _name in _OPENBLAS_ENV:
        os.environ.pop(_name, None)

import numpy as np  # noqa: E402 - after the thread limits set above

# benchmarks/common.py (a script's own directory is on sys.path)
from common import (  # noqa: E402 - after the thread limits set above
    DOC,
    MACHINE_CORES,
    ROOT,
    cpu_flags,
    cpu_model,
    median,
    pin_self,
    versions,
    write_section,
)
from numba import njit  # noqa: E402 - after the thread limits set above

from jitnet.client import datasets  # noqa: E402 - after the thread limits set above
from jitnet.service.engine import training  # noqa: E402 - after the thread limits set above
from jitnet.service.engine.model import Activation, Architecture, Init, Loss, Network  # noqa: E402 - after the thread limits set above

try:
    import torch
except ImportError:  # the bench extra is optional
    torch = None
try:
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
except ImportError:
    sklearn = None

XOR_X, XOR_T, _ = datasets.xor()
XOR_ARCH = Architecture((2, 4, 1))  # sigmoid / sigmoid, MSE, biases
DIGITS_ARCH = Architecture((64, 64, 10), Activation.RELU, Activation.SOFTMAX,
                           Loss.CROSS_ENTROPY)
EPOCHS, BATCH, LR = 30, 32, 0.1

# The targets: (row, implementation, the engine must be at least this many times faster)
# and the absolute ones.
TARGETS = {("xor", "torch"): 1000.0, ("digits", "numpy"): 2.0, ("digits", "torch"): 5.0,
           ("digits", "sklearn"): 5.0}
XOR_MAX_VS_BARE = 1.5
PREDICT_MAX_US = 1.5
DIGITS_MIN_ACCURACY = 0.95


def pin_to_one_core():
    if MACHINE_CORES:  # empty where the OS has no CPU affinity
        pin_self(min(MACHINE_CORES))
    if torch is not None:
        torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# XOR, one sample at a time: seconds per epoch.


def xor_engine(epochs):
    net = Network.initialise(XOR_ARCH, Init.UNIFORM, 1)
    options = training.TrainOptions(epochs=epochs, learning_rate=0.5)
    began = time.perf_counter()
    for _ in training.train(net, XOR_X, XOR_T, options):
        pass
    return (time.perf_counter() - began) / epochs


@njit(fastmath={"nsz", "arcp", "contract", "reassoc"})
def _bare_xor(w1, b1, w2, b2, x, t, epochs, lr):
    # The hand-written loop: sizes fixed at 2-4-1, everything unrolled by the compiler.
    h = np.empty(4)
    dh = np.empty(4)
    for _ in range(epochs):
        for s in range(4):
            for j in range(4):
                n = b1[j]
                for i in range(2):
                    n += w1[j, i] * x[s, i]
                h[j] = 1.0 / (1.0 + np.exp(-n))
            n = b2[0]
            for j in range(4):
                n += w2[0, j] * h[j]
            y = 1.0 / (1.0 + np.exp(-n))
            d = (t[s, 0] - y) * y * (1.0 - y)
            for j in range(4):
                dh[j] = d * w2[0, j] * h[j] * (1.0 - h[j])
            for j in range(4):
                w2[0, j] += lr * d * h[j]
            b2[0] += lr * d
            for j in range(4):
                for i in range(2):
                    w1[j, i] += lr * dh[j] * x[s, i]
                b1[j] += lr * dh[j]


def xor_layers():
    return [(w.copy(), b.copy()) for w, b in Network.initialise(XOR_ARCH, Init.UNIFORM, 1).layers()]


def xor_bare(epochs):
    (w1, b1), (w2, b2) = xor_layers()
    began = time.perf_counter()
    _bare_xor(w1, b1, w2, b2, XOR_X, XOR_T, epochs, 0.5)
    return (time.perf_counter() - began) / epochs


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def xor_numpy(epochs):
    (w1, b1), (w2, b2) = xor_layers()
    began = time.perf_counter()
    for _ in range(epochs):
        for x, t in zip(XOR_X, XOR_T, strict=True):
            h = _sigmoid(w1 @ x + b1)
            y = _sigmoid(w2 @ h + b2)
            d = (t - y) * y * (1.0 - y)
            dh = (w2.T @ d) * h * (1.0 - h)
            w2 += 0.5 * np.outer(d, h)
            b2 += 0.5 * d
            w1 += 0.5 * np.outer(dh, x)
            b1 += 0.5 * dh
    return (time.perf_counter() - began) / epochs


def torch_mlp(layers, hidden, output):
    """nn.Sequential with the given (W, b) layers copied in."""
    modules = []
    for k, (w, b) in enumerate(layers):
        linear = torch.nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w))
            linear.bias.copy_(torch.from_numpy(b))
        modules.append(linear)
        if k < len(layers) - 1:
            modules.append(hidden())
        elif output is not None:
            modules.append(output())
    return torch.nn.Sequential(*modules)


def xor_torch(epochs):
    model = torch_mlp(xor_layers(), torch.nn.Sigmoid, torch.nn.Sigmoid)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    xs, ts = torch.from_numpy(XOR_X), torch.from_numpy(XOR_T)
    began = time.perf_counter()
    for _ in range(epochs):
        for x, t in zip(xs, ts, strict=True):
            optimizer.zero_grad()
            loss = 0.5 * ((model(x) - t) ** 2).sum()
            loss.backward()
            optimizer.step()
    return (time.perf_counter() - began) / epochs


def xor_sklearn(epochs):
    # MLPClassifier: a logistic output with log-loss (sklearn has no MSE-sigmoid network) and
    # its own initial weights; otherwise the same 2-4-1 sigmoid net, batch 1, lr 0.5, no
    # momentum, no L2 penalty, stored order.
    model = MLPClassifier(hidden_layer_sizes=(4,), activation="logistic", solver="sgd",
                          batch_size=1, learning_rate_init=0.5, momentum=0.0, alpha=0.0,
                          shuffle=False, random_state=1)
    y = XOR_T.ravel().astype(int)
    model.partial_fit(XOR_X, y, classes=[0, 1])
    began = time.perf_counter()
    for _ in range(epochs):
        model.partial_fit(XOR_X, y)
    return (time.perf_counter() - began) / epochs


# ---------------------------------------------------------------------------------------------
# Digits: seconds for 30 epochs, and test accuracy.


def digits_data():
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(digits.data / 16.0, digits.target,
                                                        test_size=0.25, random_state=0)
    return (np.ascontiguousarray(x_train), np.eye(10)[y_train], y_train,
            np.ascontiguousarray(x_test), y_test)


def digits_start(seed, n):
    """He-initialised layers (the engine's, copied) and the 30 epochs' sample orders that
    training.train draws with shuffle=True and this seed."""
    net = Network.initialise(DIGITS_ARCH, Init.HE, seed)
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(n) for _ in range(EPOCHS)]
    return net, [(w.copy(), b.copy()) for w, b in net.layers()], orders


def accuracy(scores, y):
    return float((np.argmax(scores, axis=1) == y).mean())


def digits_engine(data, seed):
    x, t, _, x_test, y_test = data
    net, _, _ = digits_start(seed, len(x))
    options = training.TrainOptions(epochs=EPOCHS, learning_rate=LR, batch_size=BATCH,
                                    shuffle=True, seed=seed)
    began = time.perf_counter()
    for progress in training.train(net, x, t, options):  # noqa: B007 - the last one is used
        pass
    took = time.perf_counter() - began
    return took, accuracy(Network(net.arch, progress.params).predict(x_test), y_test)


@njit(fastmath={"nsz", "arcp", "contract", "reassoc"})
def _bare_digits(w1, b1, w2, b2, x, t, orders, batch, lr):
    # Hand-written loops for 64-64-10 relu / softmax cross-entropy, batch gradients, plain SGD.
    n = x.shape[0]
    h = np.empty((batch, 64))
    p = np.empty((batch, 10))
    dh = np.empty((batch, 64))
    gw1, gb1 = np.empty((64, 64)), np.empty(64)
    gw2, gb2 = np.empty((10, 64)), np.empty(10)
    for order in orders:
        for start in range(0, n, batch):
            rows = min(batch, n - start)
            for r in range(rows):
                s = order[start + r]
                for j in range(64):
                    v = b1[j]
                    for i in range(64):
                        v += w1[j, i] * x[s, i]
                    h[r, j] = max(v, 0.0)
                top = -np.inf
                for k in range(10):
                    v = b2[k]
                    for j in range(64):
                        v += w2[k, j] * h[r, j]
                    p[r, k] = v
                    top = max(top, v)
                total = 0.0
                for k in range(10):
                    p[r, k] = np.exp(p[r, k] - top)
                    total += p[r, k]
                for k in range(10):
                    p[r, k] = (p[r, k] / total - t[s, k]) / rows  # dloss/dz of the mean loss
                for j in range(64):
                    v = 0.0
                    for k in range(10):
                        v += p[r, k] * w2[k, j]
                    dh[r, j] = v if h[r, j] > 0.0 else 0.0
            gw1[:] = 0.0
            gb1[:] = 0.0
            gw2[:] = 0.0
            gb2[:] = 0.0
            for r in range(rows):
                s = order[start + r]
                for k in range(10):
                    gb2[k] += p[r, k]
                    for j in range(64):
                        gw2[k, j] += p[r, k] * h[r, j]
                for j in range(64):
                    gb1[j] += dh[r, j]
                    for i in range(64):
                        gw1[j, i] += dh[r, j] * x[s, i]
            for j in range(64):
                b1[j] -= lr * gb1[j]
                for i in range(64):
                    w1[j, i] -= lr * gw1[j, i]
            for k in range(10):
                b2[k] -= lr * gb2[k]
                for j in range(64):
                    w2[k, j] -= lr * gw2[k, j]


def digits_bare(data, seed):
    x, t, _, x_test, y_test = data
    _, ((w1, b1), (w2, b2)), orders = digits_start(seed, len(x))
    orders = np.array(orders)
    began = time.perf_counter()
    _bare_digits(w1, b1, w2, b2, x, t, orders, BATCH, LR)
    took = time.perf_counter() - began
    return took, accuracy(np.maximum(x_test @ w1.T + b1, 0.0) @ w2.T + b2, y_test)


def digits_numpy(data, seed):
    x, t, _, x_test, y_test = data
    _, ((w1, b1), (w2, b2)), orders = digits_start(seed, len(x))
    began = time.perf_counter()
    for order in orders:
        for start in range(0, len(x), BATCH):
            rows = order[start:start + BATCH]
            xb, tb = x[rows], t[rows]
            h = np.maximum(xb @ w1.T + b1, 0.0)
            z = h @ w2.T + b2
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            dz = (p - tb) / len(rows)  # gradient of the mean cross-entropy
            dh = (dz @ w2) * (h > 0.0)
            w2 -= LR * (dz.T @ h)
            b2 -= LR * dz.sum(axis=0)
            w1 -= LR * (dh.T @ xb)
            b1 -= LR * dh.sum(axis=0)
    took = time.perf_counter() - began
    return took, accuracy(np.maximum(x_test @ w1.T + b1, 0.0) @ w2.T + b2, y_test)


def digits_torch(data, seed):
    x, _, y, x_test, y_test = data
    _, layers, orders = digits_start(seed, len(x))
    model = torch_mlp(layers, torch.nn.ReLU, None)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()  # softmax + mean cross-entropy, from the logits
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    began = time.perf_counter()
    for order in orders:
        order = torch.from_numpy(order)
        for start in range(0, len(x), BATCH):
            rows = order[start:start + BATCH]
            optimizer.zero_grad()
            loss = loss_fn(model(xs[rows]), ys[rows])
            loss.backward()
            optimizer.step()
    took = time.perf_counter() - began
    with torch.no_grad():
        scores = model(torch.from_numpy(x_test)).numpy()
    return took, accuracy(scores, y_test)


def digits_sklearn(data, seed):
    # Its own Glorot initialisation and shuffling (seeded), otherwise the same: 64 relu units,
    # softmax / log-loss, plain SGD, batch 32, lr 0.1 constant, no L2, 30 epochs, no early stop.
    x, _, y, x_test, y_test = data
    model = MLPClassifier(hidden_layer_sizes=(64,), activation="relu", solver="sgd",
                          batch_size=BATCH, learning_rate_init=LR, learning_rate="constant",
                          momentum=0.0, nesterovs_momentum=False, alpha=0.0, max_iter=EPOCHS,
                          shuffle=True, random_state=seed, early_stopping=False, tol=0.0,
                          n_iter_no_change=EPOCHS + 1)
    with warnings.catch_warnings():  # "maximum iterations reached": 30 epochs is the point
        warnings.simplefilter("ignore")
        began = time.perf_counter()
        model.fit(x, y)
        took = time.perf_counter() - began
    return took, float(model.score(x_test, y_test))


# ---------------------------------------------------------------------------------------------
# Predict one digits sample: seconds per call.


@njit
def _bare_predict(w1, b1, w2, b2, x, out):
    h = np.empty(64)
    for j in range(64):
        v = b1[j]
        for i in range(64):
            v += w1[j, i] * x[i]
        h[j] = max(v, 0.0)
    top = -np.inf
    for k in range(10):
        v = b2[k]
        for j in range(64):
            v += w2[k, j] * h[j]
        out[k] = v
        top = max(top, v)
    total = 0.0
    for k in range(10):
        out[k] = np.exp(out[k] - top)
        total += out[k]
    for k in range(10):
        out[k] /= total


def predict_calls(data):
    """One callable per implementation, each predicting one sample (class probabilities)."""
    x_test = data[3]
    sample = np.ascontiguousarray(x_test[7])
    net = Network.initialise(DIGITS_ARCH, Init.HE, 0)
    (w1, b1), (w2, b2) = [(w.copy(), b.copy()) for w, b in net.layers()]
    out = np.empty(10)

    def numpy_predict():
        z = np.maximum(w1 @ sample + b1, 0.0) @ w2.T + b2
        p = np.exp(z - z.max())
        return p / p.sum()

    calls = {"engine": lambda: net.predict(sample),
             "bare": lambda: _bare_predict(w1, b1, w2, b2, sample, out),
             "numpy": numpy_predict}
    if torch is not None:
        torch_model = torch_mlp([(w1, b1), (w2, b2)], torch.nn.ReLU,
                                lambda: torch.nn.Softmax(-1))
        tensor = torch.from_numpy(sample)

        def torch_predict():
            with torch.no_grad():
                return torch_model(tensor).numpy()
        calls["torch"] = torch_predict
    if sklearn is not None:
        sk_model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1)
        with warnings.catch_warnings():  # one iteration does not converge, and need not
            warnings.simplefilter("ignore")
            sk_model.fit(data[0], data[2])  # fixes the shapes; the weights are replaced below
        sk_model.coefs_ = [w1.T.copy(), w2.T.copy()]
        sk_model.intercepts_ = [b1.copy(), b2.copy()]
        row = sample[None]
        calls["sklearn"] = lambda: sk_model.predict_proba(row)
    reference = calls["numpy"]()
    for name, call in calls.items():  # the same answer everywhere (and compiled, if it compiles)
        got = np.ravel(call() if name != "bare" else (call(), out)[1])
        assert np.allclose(got, reference, rtol=1e-9, atol=1e-12), (name, got, reference)
    return calls


def per_call(call, calls):
    began = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - began) / calls


# ---------------------------------------------------------------------------------------------
# Cold and warm start of the engine's kernels, in fresh processes.

START_SCRIPT = textwrap.dedent("""
    import time
    began = time.perf_counter()
    import numpy as np
    from jitnet.service.engine import training
    from jitnet.service.engine.model import Activation, Architecture, Init, Loss, Network
    imported = time.perf_counter()
    x, t = np.random.default_rng(0).random((40, 64)), np.eye(10)[np.arange(40) % 10]
    arch = Architecture((64, 64, 10), Activation.RELU, Activation.SOFTMAX, Loss.CROSS_ENTROPY)
    small = Architecture((2, 4, 1))
    for a, xs, ts in ((arch, x, t), (small, x[:, :2], t[:, :1])):
        net = Network.initialise(a, Init.XAVIER, 0)
        for batch in (1, 32):
            for _ in training.train(net, xs, ts, training.TrainOptions(
                    epochs=2, learning_rate=0.01, batch_size=batch, shuffle=True)):
                pass
        net.predict(xs[0]), net.predict(xs), net.step(xs[0], ts[0], 0.01)
    print(imported - began, time.perf_counter() - imported)
""")


def start_times():
    """(import seconds, first-use seconds) with an empty numba cache, then with it filled."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = []
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", START_SCRIPT], env=env, check=True,
                                  capture_output=True, text=True)
            runs.append(tuple(float(v) for v in done.stdout.split()))
    return runs


# ---------------------------------------------------------------------------------------------
# The run, the table and the report.


def blas_info():
    try:
        import threadpoolctl
    except ImportError:
        return "threadpoolctl not installed"
    __import__("scipy.linalg")  # load the BLAS numba's np.dot calls (scipy's), to list it
    rows = []
    for lib in threadpoolctl.threadpool_info():
        if lib.get("user_api") == "blas":
            rows.append(f"{Path(lib['filepath']).name} {lib.get('version')} "
                        f"({lib.get('architecture')} kernel, {lib.get('num_threads')} thread)")
    return "; ".join(rows) or "none found"


def measure(quick):
    repeats = 3 if quick else 11
    impls = ["engine", "bare", "numpy", "torch", "sklearn"]
    available = {"engine": True, "bare": True, "numpy": True, "torch": torch is not None,
                 "sklearn": sklearn is not None}
    data = digits_data() if sklearn is not None else None
    xor_epochs = {"engine": 100_000, "bare": 100_000, "numpy": 400, "torch": 40, "sklearn": 40}
    if quick:
        xor_epochs = {k: max(10, v // 4) for k, v in xor_epochs.items()}
    xor_fns = {"engine": xor_engine, "bare": xor_bare, "numpy": xor_numpy, "torch": xor_torch,
               "sklearn": xor_sklearn}
    digit_fns = {"engine": digits_engine, "bare": digits_bare, "numpy": digits_numpy,
                 "torch": digits_torch, "sklearn": digits_sklearn}
    results = {row: {} for row in ("xor", "digits", "predict")}
    accuracies = {}
    # Warm-up: compile every numba function and touch every library once, untimed.
    for name in impls:
        if available[name]:
            xor_fns[name](2)
            if data is not None:
                digit_fns[name](data, 0)
    calls = predict_calls(data) if data is not None else {}
    samples = {row: {name: [] for name in impls} for row in results}
    for repeat in range(repeats):
        # Side by side: one row at a time, the implementations back to back (in an order that
        # rotates between repeats), so that they share whatever else the machine is doing.
        order = [impls[(k + repeat) % len(impls)] for k in range(len(impls))]
        order = [name for name in order if available[name]]
        for name in order:
            samples["xor"][name].append(xor_fns[name](xor_epochs[name]))
        for name in order if data is not None else ():
            took, acc = digit_fns[name](data, repeat)
            samples["digits"][name].append(took)
            accuracies.setdefault(name, []).append(acc)
        for name in order:
            if name in calls:
                samples["predict"][name].append(per_call(calls[name], 2000 if quick else 20000))
    for row in results:
        for name in impls:
            if samples[row][name]:
                results[row][name] = median(samples[row][name])
    accuracies = {name: float(np.mean(v)) for name, v in accuracies.items()}
    return results, accuracies, repeats


ROW_TITLES = {"xor": "XOR epoch, one sample at a time", "digits": "digits, 30 epochs, batch 32",
              "predict": "predict one digits sample"}
IMPL_TITLES = {"engine": "engine", "bare": "bare numba loop", "numpy": "numpy",
               "torch": "PyTorch CPU", "sklearn": "scikit-learn"}


def human(seconds):
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        if seconds < 1e-5:
            return f"{seconds * 1e6:.2f} µs"
        return f"{seconds * 1e6:.1f} µs" if seconds < 1e-4 else f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1.0 else f"{seconds:.2f} s"


def table(results):
    names = list(IMPL_TITLES)
    lines = ["| work | " + " | ".join(IMPL_TITLES[n] for n in names) + " |",
             "| --- |" + " --- |" * len(names)]
    for row, title in ROW_TITLES.items():
        cells = []
        engine = results[row].get("engine")
        for name in names:
            value = results[row].get(name)
            if value is None:
                cells.append("not installed" if name in ("torch", "sklearn") else "n/a")
            elif name == "engine":
                cells.append(f"**{human(value)}**")
            else:
                cells.append(f"{human(value)} ({value / engine:.2f}x)" if engine else human(value))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(results, accuracies):
    out = []
    xor, predict = results["xor"], results["predict"]

    def check(ok, text):
        out.append(f"- {'met' if ok else '**not met**'}: {text}")

    if "bare" in xor:
        ratio = xor["engine"] / xor["bare"]
        check(ratio <= XOR_MAX_VS_BARE, f"XOR epoch within {XOR_MAX_VS_BARE}x of the bare loop "
                                        f"(engine / bare = {ratio:.2f})")
    for (row, name), factor in TARGETS.items():
        if name in results[row]:
            ratio = results[row][name] / results[row]["engine"]
            check(ratio >= factor, f"{ROW_TITLES[row]}: at least {factor:g}x faster than "
                                   f"{IMPL_TITLES[name]} ({ratio:.1f}x)")
        else:
            out.append(f"- not measured: {ROW_TITLES[row]} vs {IMPL_TITLES[name]} "
                       "(not installed)")
    if accuracies:
        best_other = max(v for k, v in accuracies.items() if k != "engine")
        ok = accuracies["engine"] >= min(best_other, 1.0) - 1e-12 and \
            accuracies["engine"] >= DIGITS_MIN_ACCURACY
        check(ok, f"digits test accuracy {accuracies['engine']:.4f}, no lower than the others' "
                  f"(best {best_other:.4f}) and at least {DIGITS_MIN_ACCURACY}")
    if "engine" in predict:
        check(predict["engine"] <= PREDICT_MAX_US * 1e-6,
              f"one-sample predict at most {PREDICT_MAX_US} µs ({human(predict['engine'])})")
    return "\n".join(out)


def report(results, accuracies, repeats, starts, quick):
    (cold_import, cold_first), (warm_import, warm_first) = starts
    acc = ", ".join(f"{IMPL_TITLES[k]} {v:.4f}" for k, v in accuracies.items()) or "not measured"
    set_env = {k: v for k, v in _OPENBLAS_ENV.items() if v is not None}
    kept = "--keep-openblas-env" in sys.argv
    env_note = ("none was set" if not set_env else
                f"{set_env} was set; " + ("kept (--keep-openblas-env)" if kept else
                                          "the run unset both, in its own process only"))
    return textwrap.dedent(f"""\
        ## Engine

        `python benchmarks/engine.py{' --quick' if quick else ''}`, {datetime.date.today()}:
        {cpu_model()} ({cpu_flags()}), pinned to one core, one BLAS / OpenMP / torch thread;
        {versions("numpy", "numba", "scipy", "torch", "scikit-learn")}. BLAS: {blas_info()}.
        OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: {env_note}.
        Medians of {repeats} repeats, the implementations of a row back to back in each; ratios
        are each implementation's time over the engine's (above 1: the engine is faster).

        {{table}}

        Test accuracy on digits (mean of the repeats, one seed each): {acc}.

        Engine start, in fresh processes (numba compiles every kernel the server uses: Train with
        batch 1 and 32, Predict of one and many samples, Step, for a tiny and a 64-64-10 net):
        cold (empty NUMBA_CACHE_DIR) {cold_first:.1f} s, warm (cache filled; `cache=True` loads
        the compiled code) {warm_first:.2f} s, plus {warm_import:.2f} s of imports.

        The targets set for the engine:

        {{verdicts}}

        What each column runs: *engine* is `training.train` and `Network.predict` (validation
        included); *bare* a hand-written numba loop with the sizes fixed in the code; *numpy*,
        *PyTorch* and *scikit-learn* the idiomatic loop of each, with the engine's initial
        weights, batches and sample orders where the library lets us set them (scikit-learn:
        MLPClassifier with its own initialisation and shuffling, sgd, momentum 0, alpha 0, no
        early stopping; on XOR a logistic output with log-loss, as it has no MSE classifier).
        """).replace("{table}", table(results)).replace("{verdicts}",
                                                         verdicts(results, accuracies))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter runs")
    parser.add_argument("--keep-openblas-env", action="store_true",
                        help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE if the machine sets them")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    pin_to_one_core()
    results, accuracies, repeats = measure(args.quick)
    starts = start_times()
    text = report(results, accuracies, repeats, starts, args.quick)
    print(text)
    if not args.no_write:
        write_section(text, "## Engine")
        print(f"written to {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
