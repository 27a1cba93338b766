"""jitnet against ONNX Runtime and PyTorch on jitnet's own exported model, and the scikit-learn
estimator against MLPClassifier (issue 23), side by side in one run.

    python benchmarks/interchange.py            # full run; rewrites `## ONNX and scikit-learn`
                                                # in docs/benchmarks.md (nothing else)
    python benchmarks/interchange.py --quick    # fewer repeats and calls (a smoke run)
    python benchmarks/interchange.py --no-write # print only

    predict   one digits sample (64-64-10 relu / softmax, float64) in this process, pinned to
              one core: jitnet's Network.predict at tier 1 (the architecture's specialised
              kernels, compiled first into a temporary kernel directory), ONNX Runtime's
              InferenceSession.run on the file client/onnx.py exports from those weights (CPU
              provider, one intra-op and one inter-op thread, spinning off, default graph
              optimisations), and torch (one thread, no_grad) on the same weights.
    fit       JitnetClassifier.fit on digits (75/25 split, / 16) through a server on another
              core against MLPClassifier.fit in this process, the same settings: 64 relu,
              solver sgd, lr 0.1, momentum 0.9 with Nesterov, batch 200, alpha 1e-4, 30 epochs
              (n_iter_no_change 30: neither stops early); the time of the whole fit call and
              the test accuracy, once the server serves 64-64-10 at tier 1.

Medians over the repeats; the implementations of a row run back to back in each repeat, in an
order that rotates. Needs the test extra's onnx, onnxruntime, torch and scikit-learn.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = "1"  # before numpy loads a BLAS: one thread for every implementation

import numpy as np  # noqa: E402 - after the thread limits set above

# benchmarks/common.py (a script's own directory is on sys.path)
from common import (  # noqa: E402 - after the thread limits set above
    machine,
    median,
    pin_self,
    pinned_to,
    versions,
    wait_specialised,
    write_section,
)

HEADING = "## ONNX and scikit-learn"
CLIENT_CORE, SERVER_CORE = 1, 0
FIT = dict(hidden_layer_sizes=(64,), activation="relu", solver="sgd", learning_rate_init=0.1,
           momentum=0.9, nesterovs_momentum=True, batch_size=200, alpha=1e-4, max_iter=30,
           n_iter_no_change=30, tol=0.0, random_state=0)


def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)


def client_model(net, arch):
    """The client's Model for an engine Network, as get_model(include_weights=True) gives it."""
    from jitnet.client.results import Model

    layers = tuple((w.copy(), b.copy()) for w, b in net.layers())
    return Model(id="digits", layer_sizes=tuple(arch.layer_sizes), hidden_activation="relu",
                 output_activation="softmax", loss="cross_entropy", bias=True,
                 gradient_mode="exact", version=1, epochs_trained=0, iterations=0,
                 last_loss=0.0, create_time=None, update_time=None,
                 parameter_count=sum(w.size + b.size for w, b in layers), layers=layers)


def predict_calls(kernel_dir: Path) -> dict:
    import onnxruntime as ort
    import torch

    from jitnet.client import onnx as jitnet_onnx
    from jitnet.service.engine import jit
    from jitnet.service.engine.model import Activation, Architecture, Init, Loss, Network

    arch = Architecture((64, 64, 10), Activation.RELU, Activation.SOFTMAX, Loss.CROSS_ENTROPY)
    jit.room.configure(jit.Mode.BACKGROUND, directory=kernel_dir, max_loaded=4)
    jit.room.prefetch([arch], 1)
    deadline = time.monotonic() + 900
    while jit.kernels_for(arch).tier != 1:  # the steady tier, compiled in the background
        if time.monotonic() > deadline:
            raise RuntimeError("64-64-10 not specialised within 900 s")
        time.sleep(0.2)
    net = Network.initialise(arch, Init.HE, 0)
    sample = np.ascontiguousarray(digits()[1][7])
    data = jitnet_onnx.serialized(client_model(net, arch))

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feed = {"input": sample[None]}

    torch.set_num_threads(1)
    (w1, b1), (w2, b2) = net.layers()
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10), torch.nn.Softmax(-1)).double().eval()
    with torch.no_grad():
        for layer, w, b in ((model[0], w1, b1), (model[2], w2, b2)):
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))
    tensor = torch.from_numpy(sample)

    def torch_predict():
        with torch.no_grad():
            return model(tensor).numpy()

    calls = {"jitnet": lambda: net.predict(sample),
             "onnxruntime": lambda: session.run(None, feed)[0],
             "torch": torch_predict}
    reference = calls["jitnet"]()
    for name, call in calls.items():  # the same answer everywhere before anything is timed
        assert np.allclose(np.ravel(call()), reference, rtol=0, atol=1e-12), name
    return calls


def per_call(call, calls: int) -> float:
    began = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - began) / calls


class Server:
    """`python -m jitnet.service.server` on SERVER_CORE, stopped by its pid."""

    def __init__(self, workdir: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = workdir / "server.log"
        argv = [sys.executable, "-m", "jitnet.service.server", "--host", "127.0.0.1", "--port",
                str(self.port), "--data-dir", str(workdir / "data")]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log,
                                         stdin=subprocess.DEVNULL,
                                         preexec_fn=pinned_to(SERVER_CORE))
        from jitnet.client import Client

        with Client(f"127.0.0.1:{self.port}") as client:
            try:
                client.wait_until_serving(600)
            except Exception:
                self.stop()
                raise RuntimeError("the server did not start:\n"
                                   + self.log.read_text(errors="replace")[-3000:]) from None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def fit_calls(address: str) -> dict:
    from sklearn.neural_network import MLPClassifier

    from jitnet.client.sklearn import JitnetClassifier

    x_train, x_test, y_train, y_test = digits()

    def run(make):
        def fit():
            estimator = make()
            began = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # 30 epochs: ConvergenceWarning by design
                estimator.fit(x_train, y_train)
            took = time.perf_counter() - began
            accuracy = estimator.score(x_test, y_test)
            if hasattr(estimator, "delete_model"):
                estimator.delete_model()
            return took, accuracy
        return fit

    return {"jitnet": run(lambda: JitnetClassifier(target=address, **FIT)),
            "sklearn": run(lambda: MLPClassifier(**FIT))}


def measure(quick: bool) -> dict:
    repeats = 3 if quick else 11
    calls_per_repeat = 2000 if quick else 20000
    fit_repeats = 2 if quick else 7
    pin_self(CLIENT_CORE)
    results = {"predict": {}, "fit": {}, "accuracy": {}}
    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        calls = predict_calls(workdir / "kernels")
        for call in calls.values():
            per_call(call, 200)  # warm
        samples = {name: [] for name in calls}
        names = list(calls)
        for repeat in range(repeats):
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                samples[name].append(per_call(calls[name], calls_per_repeat))
        results["predict"] = {name: median(v) for name, v in samples.items()}

        server = Server(workdir)
        try:
            fits = fit_calls(server.address)
            for fit in fits.values():
                fit()  # warm: sklearn's imports; the first Train asks for 64-64-10's kernels
            # Timed at the steady tier, not beside the compile process.
            wait_specialised(server.log, ("64-64-10",), lambda: None,
                             lambda: server.proc.poll() is None)
            times = {name: [] for name in fits}
            accuracy = {name: [] for name in fits}
            for repeat in range(fit_repeats):
                for name in (list(fits) if repeat % 2 == 0 else list(fits)[::-1]):
                    took, acc = fits[name]()
                    times[name].append(took)
                    accuracy[name].append(acc)
            results["fit"] = {name: median(v) for name, v in times.items()}
            results["accuracy"] = {name: float(np.mean(v)) for name, v in accuracy.items()}
        finally:
            server.stop()
    results["repeats"] = (repeats, calls_per_repeat, fit_repeats)
    return results


def report(results: dict, quick: bool) -> str:
    p, f, a = results["predict"], results["fit"], results["accuracy"]
    repeats, calls, fit_repeats = results["repeats"]
    us = {name: seconds * 1e6 for name, seconds in p.items()}
    lines = [
        HEADING, "",
        f"`python benchmarks/interchange.py{' --quick' if quick else ''}`, "
        f"{datetime.date.today()}: {machine()}; "
        f"{versions('numpy', 'numba', 'onnx', 'onnxruntime', 'torch', 'scikit-learn')}. "
        f"Medians of {repeats} repeats of {calls} calls (predict) and of {fit_repeats} fits.",
        "",
        "| one digits sample, in-process (64-64-10, float64) | µs per call | / jitnet |",
        "| --- | ---: | ---: |",
    ]
    for name, label in (("jitnet", "jitnet `Network.predict`, tier 1"),
                        ("onnxruntime", "ONNX Runtime `InferenceSession.run`, exported file"),
                        ("torch", "PyTorch `nn.Sequential`, no_grad")):
        lines.append(f"| {label} | {us[name]:.2f} | {us[name] / us['jitnet']:.1f}x |")
    lines += [
        "",
        "| digits fit, 30 epochs of SGD (64 relu, batch 200) | seconds | test accuracy |",
        "| --- | ---: | ---: |",
        f"| `JitnetClassifier.fit` (a server on another core) | {f['jitnet']:.3f} | "
        f"{a['jitnet']:.3f} |",
        f"| `MLPClassifier.fit` (in-process) | {f['sklearn']:.3f} | {a['sklearn']:.3f} |",
        "",
        f"ONNX Runtime / jitnet: {p['onnxruntime'] / p['jitnet']:.1f}x (issue 23 asks for at "
        f"least 3x); MLPClassifier's fit / JitnetClassifier's: "
        f"{f['sklearn'] / f['jitnet']:.1f}x. The estimator's time includes CreateModel, "
        "sending the data, the Train stream and fetching the weights.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and calls")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    text = report(measure(args.quick), args.quick)
    print(text)
    if not args.no_write:
        write_section(text, HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
