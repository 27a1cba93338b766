"""Specialised kernels (tier 1) against the generic ones (tier 0) and hand-written loops, and what
specialising costs a server: issue 14's engine targets, side by side in one run.

    python benchmarks/tiers.py            # a few minutes; rewrites `## Specialised kernels`
                                          # in docs/benchmarks.md (nothing else in that file)
    python benchmarks/tiers.py --quick    # fewer repeats, shorter runs
    python benchmarks/tiers.py --no-write # print only;  --json FILE also writes the numbers

In this process, pinned to one core with one BLAS thread (medians over repeats, the
implementations of a row back to back in each):
    xor       an epoch of XOR one sample at a time (2-4-1 sigmoid, MSE, lr 0.5, U[0, 1)) through
              training.train at tier 0 and tier 1, and engine.py's hand-written numba loop
    digits    64-64-10 relu / softmax cross-entropy, 30 epochs in batches of 32 through
              training.train, against the float64 compute floor: the multiply-adds of those
              epochs (forward, weight gradients, the input error of every layer above the first)
              at the peak rate of this core's BLAS dgemm, measured here on 1024 x 1024 matrices
    predict   Network.predict of one digits sample at tier 0 and tier 1
    compile   the compile process for each architecture (an empty kernel directory), then the
              same request again (found in the cache: compiled once per machine)
    load      a fresh process that has warmed up the generic kernels (as a server has before it
              loads stored models' architectures) loading each architecture from the cache
A server (`python -m jitnet.service.server`, pinned to core 0; this process is the client, on
core 1, one call at a time, latency measured at the client):
    train     1,000,000 XOR epochs through the Train RPC at tier 1 (the architecture specialised
              by a first, short Train) against the bare loop's 1,000,000 epochs in this process
    first     the first Predict of a model of a new architecture (tier 0: nothing compiles for
              it) against the median one-sample Predict of a model already served at tier 0
    compiling Predict latencies while the server specialises another architecture (a Train of
              it starts the compile process) against the same calls before and after it
    restart   the server started again on the same models and kernel directory: the stored
              architectures loaded from the cache (its log), and nothing compiled
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from itertools import pairwise
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = "1"

import common  # noqa: E402  (benchmarks/common.py: pinning, medians, the report section)
import engine  # noqa: E402  (benchmarks/engine.py: the bare loops and the data)
import numpy as np  # noqa: E402 - after the thread limits set above
from numba import njit  # noqa: E402 - after the thread limits set above

from jitnet.service.engine import jit, training  # noqa: E402 - after the thread limits set above
from jitnet.service.engine.model import Init, Network  # noqa: E402 - after the thread limits set above

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Specialised kernels"
SERVER_CORE, CLIENT_CORE = 0, 1

XOR = engine.XOR_ARCH
DIGITS = engine.DIGITS_ARCH
TARGETS = {
    "train_vs_bare": 1.05,  # 1M XOR epochs through Train: at most 1.05x the bare loop
    "xor_vs_bare": 1.0,  # an XOR epoch in-process: no slower than the bare loop
    "digits_vs_floor": 1.5,  # digits 30 epochs: at most 1.5x the float64 compute floor
    "predict_us": 1.0,  # one-sample digits Predict in-process, tier 1
    "first_vs_steady": 2.0,  # first Predict of a new architecture vs tier-0 steady latency
    "load_ms": 50.0,  # an architecture loaded from the cache after a restart
    "p99_compiling": 2.0,  # Predict p99 while a specialisation compiles vs steady p99
}


# ---------------------------------------------------------------------------------------------
# In this process


def xor_engine(epochs: int) -> float:
    net = Network.initialise(XOR, Init.UNIFORM, 1)
    options = training.TrainOptions(epochs=epochs, learning_rate=0.5)
    began = time.perf_counter()
    for _ in training.train(net, engine.XOR_X, engine.XOR_T, options):
        pass
    return (time.perf_counter() - began) / epochs


def digits_engine(data) -> float:
    return engine.digits_engine(data, 0)[0]


def gemm_peak(repeats: int) -> float:
    """Floating-point operations per second of one dgemm on 1024 x 1024 matrices (one thread),
    the best of `repeats`."""
    rng = np.random.default_rng(0)
    a, b = rng.random((1024, 1024)), rng.random((1024, 1024))
    out = np.empty((1024, 1024))
    np.dot(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        np.dot(a, b, out=out)
        best = min(best, time.perf_counter() - began)
    return 2 * 1024 ** 3 / best


@njit
def _batch_products(x, w1, h, w2, p, dw1, dw2, dh, batches):
    for _ in range(batches):
        np.dot(x, w1.T, h)  # forward, layer 0: [32, 64] x [64, 64]^T
        np.dot(h, w2.T, p)  # forward, layer 1: [32, 64] x [64, 10]^T
        np.dot(p.T, h, dw2)  # weight gradients, layer 1
        np.dot(p, w2, dh)  # input error of layer 1
        np.dot(dh.T, x, dw1)  # weight gradients, layer 0


def digits_products(samples: int, repeats: int) -> float:
    """Seconds of the digits epochs' matrix products alone, at their own shapes (batches of 32)
    through the same BLAS: what the compute floor's peak rate becomes for matrices this small."""
    rng = np.random.default_rng(0)
    shapes = ((32, 64), (64, 64), (32, 64), (10, 64), (32, 10), (64, 64), (10, 64), (32, 64))
    arrays = [rng.random(shape) for shape in shapes]
    batches = engine.EPOCHS * (samples // engine.BATCH)
    _batch_products(*arrays, 1)
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        _batch_products(*arrays, batches)
        best = min(best, time.perf_counter() - began)
    return best * samples / (batches // engine.EPOCHS * engine.BATCH)


def digits_flops(samples: int, epochs: int) -> float:
    """Floating-point operations of `epochs` epochs: per sample and layer, the forward pass and
    the weight gradients (fan_in x fan_out multiply-adds each), and above the first layer the
    input error (as many again); a multiply-add is 2 operations."""
    per_sample = 0
    for layer, (fan_in, fan_out) in enumerate(pairwise(DIGITS.layer_sizes)):
        per_sample += (2 if layer == 0 else 3) * fan_in * fan_out
    return 2.0 * per_sample * samples * epochs


def predict_per_call(net: Network, x: np.ndarray, calls: int) -> float:
    predict = net.predict
    began = time.perf_counter()
    for _ in range(calls):
        predict(x)
    return (time.perf_counter() - began) / calls


def compile_times(kernel_dir: Path) -> dict:
    """The compile process per architecture (empty directory), then the same again."""
    jit.room.configure(jit.Mode.BACKGROUND, directory=kernel_dir, max_loaded=8)
    out = {}
    for name, arch in (("xor", XOR), ("digits", DIGITS)):
        began = time.perf_counter()
        jit.room.request(arch)
        assert jit.room.wait_idle(1200) and not jit.room.failures(), jit.room.failures()
        out[name] = time.perf_counter() - began
    out["compiled"] = jit.room.compiles
    # Asked again by a room that has not loaded them (a second server on this machine): found.
    jit.room.configure(jit.Mode.BACKGROUND, directory=kernel_dir, max_loaded=8)
    for arch in (XOR, DIGITS):
        jit.room.request(arch)
    assert jit.room.wait_idle(600)
    out["compiled_again"] = jit.room.compiles
    return out


LOAD_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from jitnet.service.engine import jit
    from jitnet.service.server import warmup
    from jitnet.service.engine.model import Activation, Architecture, Loss
    warmup.warm_up()  # a server loads stored architectures after this
    jit.room.configure(jit.Mode.BACKGROUND, directory=sys.argv[1], max_loaded=8)
    times = []
    for arch in (Architecture((2, 4, 1)), Architecture((64, 64, 10), Activation.RELU,
                                                        Activation.SOFTMAX, Loss.CROSS_ENTROPY)):
        began = time.perf_counter()
        loaded, queued = jit.room.prefetch([arch], 1)
        times.append((time.perf_counter() - began, loaded, queued))
    print(json.dumps(times))
""")


def load_times(kernel_dir: Path) -> list:
    done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(kernel_dir)],
                          capture_output=True, text=True, timeout=600, check=True)
    times = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(loaded == 1 and queued == 0 for _, loaded, queued in times), times
    return [seconds for seconds, _, _ in times]


def in_process(quick: bool, kernel_dir: Path) -> dict:
    repeats = 3 if quick else 11
    xor_epochs = 25_000 if quick else 100_000
    results: dict = {"repeats": repeats}
    results["compile"] = compile_times(kernel_dir)
    results["load"] = load_times(kernel_dir)

    common.pin_self(SERVER_CORE)
    data = engine.digits_data()
    x_sample = np.ascontiguousarray(data[3][7])
    digits_net = Network.initialise(DIGITS, Init.HE, 0)
    tiers = {0: (jit.Mode.OFF,), 1: (jit.Mode.BACKGROUND,)}

    def use(tier: int) -> None:
        jit.room.configure(tiers[tier][0], directory=kernel_dir, max_loaded=8)
        if tier:
            jit.room.prefetch([XOR, DIGITS], 2)
            assert jit.kernels_for(XOR).tier == jit.kernels_for(DIGITS).tier == 1

    samples: dict = {key: [] for key in ("xor0", "xor1", "bare", "digits", "predict0",
                                         "predict1", "peak")}
    for tier in (0, 1):  # warm: everything compiled or loaded before the first timing
        use(tier)
        xor_engine(10)
        digits_engine(data)
        predict_per_call(digits_net, x_sample, 100)
    engine.xor_bare(10)
    calls = 2000 if quick else 20000
    for repeat in range(repeats):
        order = [0, 1, 2][repeat % 3:] + [0, 1, 2][:repeat % 3]
        for what in order:
            if what == 2:
                samples["bare"].append(engine.xor_bare(xor_epochs))
            else:
                use(what)
                samples[f"xor{what}"].append(xor_engine(xor_epochs))
                samples[f"predict{what}"].append(predict_per_call(digits_net, x_sample, calls))
                if what == 1:
                    samples["digits"].append(digits_engine(data))
        samples["peak"].append(gemm_peak(5))
    results["samples"] = samples
    results.update({key: common.median(values) for key, values in samples.items()})
    results["peak"] = max(samples["peak"])
    results["floor"] = digits_flops(len(data[0]), engine.EPOCHS) / results["peak"]
    results["products"] = digits_products(len(data[0]), repeats)
    # The bare loop over the Train RPC's 1,000,000 epochs, on the server's core.
    results["bare_1m"] = common.median(engine.xor_bare(1_000_000) * 1_000_000
                                for _ in range(1 if quick else 3))
    jit.room.configure(jit.Mode.OFF)
    return results


# ---------------------------------------------------------------------------------------------
# A server


class Server:
    def __init__(self, workdir: Path, kernel_dir: Path, data_dir: Path, name: str,
                 *flags: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log_path = workdir / f"{name}.log"
        argv = [sys.executable, "-m", "jitnet.service.server", "--host", "127.0.0.1", "--port",
                str(self.port), "--data-dir", str(data_dir), "--kernel-dir", str(kernel_dir),
                "--specialise-after-predicts", "1000000000", *flags]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=log,
                preexec_fn=common.pinned_to(SERVER_CORE))
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from jitnet.v1 import jitnet_pb2_grpc
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + 600
        while True:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the server did not start:\n" + self.log())
            time.sleep(0.05)
        self.stub = jitnet_pb2_grpc.NetworkServiceStub(self.channel)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.log()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {pattern!r} in the server's log:\n{self.log()[-3000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _tensor(rows):
    from jitnet.v1 import jitnet_pb2 as pb
    array = np.asarray(rows, dtype=np.float64)
    return pb.Tensor(shape=array.shape, raw=array.astype("<f8").tobytes())


def _create(server: Server, model_id: str, sizes, init=None, seed: int = 1) -> None:
    from jitnet.v1 import jitnet_pb2 as pb
    server.stub.CreateModel(pb.CreateModelRequest(
        model_id=model_id, architecture=pb.Architecture(layer_sizes=list(sizes)),
        init=init or pb.INIT_XAVIER, seed=seed), timeout=60)


def _train(server: Server, model_id: str, x, t, epochs: int) -> float:
    from jitnet.v1 import jitnet_pb2 as pb
    began = time.perf_counter()
    for _ in server.stub.Train(pb.TrainRequest(
            model_id=model_id, inputs=_tensor(x), targets=_tensor(t), epochs=epochs,
            learning_rate=0.5), timeout=3600):
        pass
    return time.perf_counter() - began


def _at_idle_on(core: int):
    """A preexec_fn: this core (where it exists), SCHED_IDLE, as the compile process runs."""
    def lower() -> None:
        if core in common.MACHINE_CORES:
            os.sched_setaffinity(0, {core})
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    return lower


def _predict_latencies(server: Server, model_id: str, width: int, *, calls: int = 0,
                       until=None) -> list[float]:
    from jitnet.v1 import jitnet_pb2 as pb
    request = pb.PredictRequest(model_id=model_id, inputs=_tensor(np.full((1, width), 0.5)))
    predict = server.stub.Predict
    out = []
    while (len(out) < calls) if calls else not until():
        began = time.perf_counter()
        predict(request, timeout=30)
        out.append(time.perf_counter() - began)
    return out


def served(quick: bool, workdir: Path, kernel_dir: Path) -> dict:
    from jitnet.v1 import jitnet_pb2 as pb

    common.pin_self(CLIENT_CORE)
    data_dir = workdir / "models"
    server = Server(workdir, kernel_dir, data_dir, "server")
    results: dict = {}
    try:
        # 1M XOR epochs through Train, at tier 1 (found in the kernel directory).
        _create(server, "xor", (2, 4, 1), init=pb.INIT_UNIFORM, seed=1)
        _train(server, "xor", engine.XOR_X, engine.XOR_T, 10)  # asks for tier 1
        server.wait_log(r"2-4-1 sigmoid/sigmoid mse exact: specialised kernels loaded")
        _train(server, "xor", engine.XOR_X, engine.XOR_T, 1000)
        results["train_1m"] = common.median(_train(server, "xor", engine.XOR_X, engine.XOR_T,
                                            1_000_000) for _ in range(1 if quick else 3))

        # Steady tier-0 Predict of one sample, and the first Predict of new architectures.
        _create(server, "probe", (8, 16, 4))
        _predict_latencies(server, "probe", 8, calls=200)
        steady = _predict_latencies(server, "probe", 8, calls=1000 if quick else 3000)
        results["steady_ms"] = 1e3 * common.median(steady)
        firsts = []
        for k in range(3 if quick else 7):
            _create(server, f"new{k}", (8, 17 + k, 4))
            firsts.append(_predict_latencies(server, f"new{k}", 8, calls=1)[0])
        results["first_ms"] = 1e3 * common.median(firsts)

        # Predict p99 while another architecture compiles, against just before.
        window = 2.0 if quick else 5.0
        end = time.monotonic() + window
        before = _predict_latencies(server, "probe", 8, until=lambda: time.monotonic() > end)
        _create(server, "fresh", (32, 48, 8))
        _train(server, "fresh", np.zeros((4, 32)), np.zeros((4, 8)), 2)
        done = re.compile(r"32-48-8 \S+ mse exact: specialised kernels loaded")
        during = _predict_latencies(server, "probe", 8,
                                    until=lambda: bool(done.search(server.log())))
        # ... and after, so that the steady figure is not one quiet (or busy) moment's.
        end = time.monotonic() + window
        before += _predict_latencies(server, "probe", 8, until=lambda: time.monotonic() > end)
        compiled = re.search(r"32-48-8 \S+ mse exact compiled in ([\d.]+) s", server.log())
        # The control: no compile, a bare busy loop at the same priority on the same core.
        # What it does to p99 is what any work on the server's core does here, compile or not.
        idle_loop = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                     preexec_fn=_at_idle_on(SERVER_CORE))
        try:
            time.sleep(0.5)
            end = time.monotonic() + window
            beside_loop = _predict_latencies(server, "probe", 8,
                                             until=lambda: time.monotonic() > end)
        finally:
            idle_loop.kill()
            idle_loop.wait()
        results.update(p99_before_ms=1e3 * float(np.percentile(before, 99)),
                       p99_during_ms=1e3 * float(np.percentile(during, 99)),
                       p50_before_ms=1e3 * common.median(before),
                       p50_during_ms=1e3 * common.median(during),
                       calls_during=len(during),
                       p99_idle_loop_ms=1e3 * float(np.percentile(beside_loop, 99)),
                       compile_s=float(compiled.group(1)) if compiled else float("nan"))
        _train(server, "xor", engine.XOR_X, engine.XOR_T, 10)  # the two most recent models
    finally:
        server.stop()

    # Restarted on the same models: the two most recently trained models' architectures (both
    # compiled above) come from the cache before SERVING, and nothing compiles again.
    again = Server(workdir, kernel_dir, data_dir, "restarted", "--specialise-at-start", "2")
    try:
        log = again.log()
        loads = [float(v) for v in re.findall(r"specialised kernels loaded from the cache in "
                                              r"([\d.]+) ms", log)]
        results.update(restart_loads_ms=loads,
                       restart_compiled=len(re.findall(r"exact compiled in ", log)))
    finally:
        again.stop()
    return results


# ---------------------------------------------------------------------------------------------
# The report


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def human(seconds: float) -> str:
    return engine.human(seconds)


def report(r: dict, quick: bool) -> str:
    ratio_xor = r["xor1"] / r["bare"]
    ratio_train = r["train_1m"] / r["bare_1m"]
    ratio_digits = r["digits"] / r["floor"]
    first_ratio = r["first_ms"] / r["steady_ms"]
    p99_ratio = r["p99_during_ms"] / r["p99_before_ms"]
    load_ms = max(r["load"]) * 1e3
    restart_ms = max(r["restart_loads_ms"]) if r["restart_loads_ms"] else float("nan")
    rows = [
        ("XOR, 1,000,000 epochs through the Train RPC (tier 1) / bare loop",
         f"{r['train_1m']:.3f} s / {r['bare_1m']:.3f} s = **{ratio_train:.3f}x**",
         f"<= {TARGETS['train_vs_bare']}x", verdict(ratio_train <= TARGETS["train_vs_bare"])),
        ("XOR epoch in-process: tier 1 / bare loop",
         f"{human(r['xor1'])} / {human(r['bare'])} = **{ratio_xor:.3f}x** (tier 0: "
         f"{human(r['xor0'])}, {r['xor0'] / r['bare']:.2f}x)",
         f"<= {TARGETS['xor_vs_bare']}x", verdict(ratio_xor <= TARGETS["xor_vs_bare"])),
        ("digits 64-64-10, 30 epochs, batch 32 / float64 compute floor",
         f"{human(r['digits'])} / {human(r['floor'])} = **{ratio_digits:.2f}x** (dgemm peak "
         f"{r['peak'] / 1e9:.1f} GFLOP/s; the epochs' matrix products alone, at their shapes: "
         f"{human(r['products'])}, {r['products'] / r['floor']:.2f}x)",
         f"<= {TARGETS['digits_vs_floor']}x", verdict(ratio_digits <= TARGETS["digits_vs_floor"])),
        ("one-sample digits Predict in-process (Network.predict), tier 1",
         f"**{r['predict1'] * 1e6:.2f} µs** (tier 0: {r['predict0'] * 1e6:.2f} µs)",
         f"<= {TARGETS['predict_us']} µs",
         verdict(r["predict1"] * 1e6 <= TARGETS["predict_us"])),
        ("first Predict of a new architecture on a warm server / tier-0 steady Predict",
         f"{r['first_ms']:.3f} ms / {r['steady_ms']:.3f} ms = **{first_ratio:.2f}x**",
         f"<= {TARGETS['first_vs_steady']}x", verdict(first_ratio <= TARGETS["first_vs_steady"])),
        ("Predict p99 while a specialisation compiles / steady p99 (before and after)",
         f"{r['p99_during_ms']:.3f} ms / {r['p99_before_ms']:.3f} ms = **{p99_ratio:.2f}x** "
         f"({r['calls_during']} calls during a {r['compile_s']:.1f} s compile; p50 "
         f"{r['p50_during_ms']:.3f} / {r['p50_before_ms']:.3f} ms; with no compile but a bare "
         f"busy loop at SCHED_IDLE on the server's core: {r['p99_idle_loop_ms']:.3f} ms, "
         f"{r['p99_idle_loop_ms'] / r['p99_before_ms']:.2f}x)",
         f"<= {TARGETS['p99_compiling']}x", verdict(p99_ratio <= TARGETS["p99_compiling"])),
        ("compile once per architecture per machine",
         f"compile process: XOR {r['compile']['xor']:.1f} s, digits "
         f"{r['compile']['digits']:.1f} s; asked again: {r['compile']['compiled_again']} "
         f"compiled; restarted server: {r['restart_compiled']} compiled",
         "once", verdict(r["compile"]["compiled_again"] == 0 and r["restart_compiled"] == 0)),
        ("load from the cache after a restart, per architecture",
         f"restarted server: **{restart_ms:.1f} ms** (the slowest of its loads, its log); a "
         f"fresh process after warm-up: XOR {r['load'][0] * 1e3:.1f} ms, digits "
         f"{r['load'][1] * 1e3:.1f} ms", f"< {TARGETS['load_ms']:.0f} ms",
         verdict(load_ms < TARGETS["load_ms"] and restart_ms < TARGETS["load_ms"])),
    ]
    table = "\n".join(["| measure | measured | target | result |", "|---|---|---|---|"]
                      + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows])
    setup = textwrap.fill(
        f"`python benchmarks/tiers.py{' --quick' if quick else ''}`, {datetime.date.today()}: "
        f"{engine.cpu_model()} ({engine.cpu_flags()}); {engine.versions()}. In-process "
        f"figures: this process pinned to one core, one BLAS thread, medians of "
        f"{r['repeats']} repeats with tier 0, tier 1 and the bare loop back to back in each. "
        f"Server figures: the server pinned to core 0, the client (one call at a time) on core "
        f"1. Load average {r['load_average'][0]:.1f} at the start, "
        f"{r['load_average'][1]:.1f} at the end (this run's own processes count).", 96)
    return textwrap.dedent(f"""\
        {SECTION}

        {{setup}}

        {{table}}

        Tier 0 is kernels.py, generic in the layers; tier 1 an architecture's generated
        one-sample kernels (service/engine/jit/template.py). Batches run the generic kernels at both
        tiers, so the digits row is the same code either way. The compile runs in a process of
        its own at the lowest priority (SCHED_IDLE); the server loads the result in
        milliseconds. On a machine whose cores are all taken (here the server's and the load
        client's) the compile shares the server's core, and the p99 row's control, a bare busy
        loop at that same lowest priority, shows what any work on that core costs the
        server's tail, whatever the work.
        """).replace("{setup}", setup).replace("{table}", table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter runs")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="jitnet-tiers-") as work:
        workdir = Path(work)
        kernel_dir = workdir / "kernels"
        results = in_process(args.quick, kernel_dir)
        results.update(served(args.quick, workdir, kernel_dir))
    results["load_average"] = (load_before, os.getloadavg()[0])
    text = report(results, args.quick)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
    if not args.no_write:
        common.write_section(text, SECTION, DOC)
        print(f"written to {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
