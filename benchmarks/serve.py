"""Serving benchmark: jitnet's gRPC server against a bare grpcio echo server, side by side.

    python benchmarks/serve.py            # ~7 minutes; rewrites the `## Serving` section of
                                          # docs/benchmarks.md (nothing else in that file)
    python benchmarks/serve.py --quick    # ~2 minutes, fewer and shorter rounds
    python benchmarks/serve.py --no-write # print the section only
    python benchmarks/serve.py --quick --cases xor1 --baseline HEAD~1
                                          # one case, this tree's server beside HEAD~1's

What runs where (2 cores): every server process is pinned to core 0 (os.sched_setaffinity),
this driver and the load client to core 1. The load client is a grpc.aio closed loop in its own
process: `--in-flight` calls (default 32) outstanding at all times, each sending the same
pre-serialised request bytes, timing every call. QPS counts the calls that started and ended
inside the measured window (after a warm-up); p50/p90/p99 are over those calls; errors count
every failed call of the run.

The yardstick, *echo*, is a bare grpcio server with the same thread pool (`--threads`, default the
server's 8) and the same server options, whose generic handler answers the same request bytes
with the canned reply: the very bytes jitnet answered for that request. The ratio
jitnet / echo is therefore jitnet's own cost (parsing, validation, the store lookup, the kernel,
the reply) on top of what grpcio costs anyway. The servers take turns within each round, in
reverse order every other round (ABBA), and the table reports medians over rounds.

`--baseline REV` runs the server of another git revision as a third server, "jitnet@REV", with
the same pinning, options and models: from a temporary `git worktree add --detach` of REV and an
import root that maps it as pyproject's package-dir does (jitnet -> protos/jitnet,
jitnet.service -> service, jitnet.client -> client), on PYTHONPATH, nothing installed. Both
jitnet/echo ratios of one run then show what the change between REV and the working tree did,
with the same noise on both. The worktree is removed at the end.

`--cases` runs only the Predict cases named (xor1, digits1-values, v2-digits1, ...), without the
start-up and Train measurements, and prints the section instead of writing it.

Cases (every one against the echo; the ModelInfer ones also against jitnet.v1 Predict of the same
row in the same form):
  xor1               Predict, one sample into a 2-4-1 model (raw tensor bytes, as the jitnet
                     client sends)
  xor1-values        the same sample in the values form (packed doubles: grpcurl, grpc-js, Go
                     and Java clients built from the .proto send this)
  digits1            Predict, one sklearn digits row into a 64-64-10 model, raw
  digits1-values     the same row in the values form
  v2-digits1         ModelInfer of the same row, raw FP64 (raw_input_contents)
  v2-digits1-typed   ModelInfer of the same row, typed (fp64_contents)
  digits1000         1,000 digits rows per call (raw); reported as samples/s end to end
  Metrics on         Predict XOR 1 on a second jitnet server with --metrics-port (Prometheus
                     metrics on) against the metrics-off server, ABBA rounds: the cost of
                     metrics (the server's /metrics must have counted every call)
  Train XOR 10k      10,000 epochs over gRPC (report_every 0, so the server commits about once a
                     second and at the end) against jitnet.service.engine.training.train on the same
                     model in a process pinned to core 0, plus one round trip (median Predict XOR
                     latency at one call in flight)
  Start to SERVING   process start to health SERVING, numba cache cold (empty NUMBA_CACHE_DIR)
                     and warm (the same directory again); empty data directory
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import json
import os
import pathlib
import pickle
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import NamedTuple

# benchmarks/common.py (a script's own directory is on sys.path)
from common import (
    DOC,
    MACHINE_CORES,
    ROOT,
    machine,
    median,
    pin_self,
    pinned_to,
    versions,
    wait_specialised,
    write_section,
)

SECTION = "## Serving"
PREDICT = "/jitnet.v1.NetworkService/Predict"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
SERVER_CORE, CLIENT_CORE = 0, 1


class Case(NamedTuple):
    title: str
    method: str  # PREDICT (jitnet.v1) or MODEL_INFER (the Open Inference Protocol)
    model: str  # "xor" or "digits"
    rows: int
    form: str  # how the rows travel: "raw" (bytes) or "values" (packed doubles; V2: typed)
    against: str | None = None  # V2: the jitnet.v1 case its QPS is compared with


CASES = {
    "xor1": Case("Predict XOR, 1 sample", PREDICT, "xor", 1, "raw"),
    "xor1-values": Case("Predict XOR, 1 sample, values form", PREDICT, "xor", 1, "values"),
    "digits1": Case("Predict digits 64-64-10, 1 sample", PREDICT, "digits", 1, "raw"),
    "digits1-values": Case("Predict digits 64-64-10, 1 sample, values form", PREDICT,
                           "digits", 1, "values"),
    "digits1000": Case("Predict digits 64-64-10, 1,000 rows per call", PREDICT, "digits",
                       1000, "raw"),
    "v2-digits1": Case("ModelInfer digits 64-64-10, 1 row, raw FP64", MODEL_INFER, "digits", 1,
                       "raw", against="digits1"),
    "v2-digits1-typed": Case("ModelInfer digits 64-64-10, 1 row, fp64_contents", MODEL_INFER,
                             "digits", 1, "values", against="digits1-values"),
}
PREDICT_CASES = tuple(CASES)
ONE_ROW_CASES = tuple(key for key, case in CASES.items() if case.rows == 1)

TARGETS = {
    "qps_ratio": 0.95,  # one row, either form, either protocol: at least 0.95x the echo's QPS
    "v2_ratio": 0.95,  # ModelInfer of one row: at least 0.95x jitnet.v1 Predict's, same form
    "tail": 2.0,  # p99 at most 2x p50
    "samples_per_s": 1_000_000,  # Predict of 1,000 rows per call
    "train_ratio": 1.2,  # Train over gRPC within 1.2x of in-process + one round trip
    "start_warm_s": 2.0,  # process start to SERVING with a warm numba cache
    "metrics_ratio": 0.97,  # Predict of one sample with metrics on: >= 0.97x metrics off
}


# The digits model of the Predict cases: 64-64-10, sigmoid hidden (the API's default), softmax
# output with cross-entropy (a classifier over the 10 digits).
DIGITS = dict(hidden="sigmoid", output="softmax", loss="cross-entropy")


def DIGITS_ARCH():
    from jitnet.service.engine.model import Activation, Architecture, Loss
    return Architecture((64, 64, 10), hidden_activation=Activation.SIGMOID,
                        output_activation=Activation.SOFTMAX, loss=Loss.CROSS_ENTROPY)


# ---------------------------------------------------------------------------------------------
# Pinning and processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads) and of its live descendants, from /proc: a
    server that answers in worker processes (MLServer's, benchmarks/peers.py) is all of them."""
    total = 0.0
    for one in _tree(pid):
        try:
            with open(f"/proc/{one}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # ended between listing and reading
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _tree(pid: int) -> list[int]:
    """pid and its live descendants (Linux: /proc/<pid>/task/<tid>/children)."""
    found, todo = [], [pid]
    while todo:
        one = todo.pop()
        found.append(one)
        try:
            for task in os.listdir(f"/proc/{one}/task"):
                with open(f"/proc/{one}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def _wait_serving(port: int, proc: subprocess.Popen, timeout: float, interval: float = 0.01):
    """Polls grpc.health.v1 Check until SERVING; returns the time.perf_counter() it was seen."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before SERVING")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.perf_counter()
            except grpc.RpcError:
                pass
            time.sleep(interval)
    raise RuntimeError(f"server on port {port} not SERVING after {timeout} s")


class Proc:
    """A child process pinned to a core, its stderr in a file; stopped by its pid."""

    def __init__(self, argv: list[str], env: dict, core: int | None, log: pathlib.Path):
        self.log = log
        with open(log, "wb") as stderr:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=stderr,
                                         preexec_fn=pinned_to(core))
        self.pid = self.proc.pid
        if pinned_to(core) is not None:  # the numbers mean nothing if the pinning did not hold
            assert os.sched_getaffinity(self.pid) == {core}, f"{argv[2]} is not on core {core}"

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def start_jitnet(env: dict, workdir: pathlib.Path, threads: int, name: str,
                 port: int | None = None, flags: tuple[str, ...] = (),
                 threads_flag: str = "--threads") -> tuple[Proc, int]:
    port = port or _free_port()
    data = workdir / f"data-{name}"
    argv = [sys.executable, "-m", "jitnet.service.server", "--host", "127.0.0.1", "--port",
            str(port), "--data-dir", str(data), threads_flag, str(threads), *flags]
    return Proc(argv, env, SERVER_CORE, workdir / f"{name}.log"), port


def start_echo(env: dict, workdir: pathlib.Path, threads: int, canned: pathlib.Path,
               max_concurrent: int, max_message: int) -> tuple[Proc, int]:
    port = _free_port()
    argv = [sys.executable, __file__, "_echo", "--port", str(port), "--threads", str(threads),
            "--canned", str(canned), "--max-concurrent", str(max_concurrent),
            "--max-message", str(max_message)]
    return Proc(argv, env, SERVER_CORE, workdir / "echo.log"), port


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


def commit_of(rev: str) -> str:
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RuntimeError:
        raise SystemExit(f"--baseline {rev}: not a commit of the git checkout {ROOT}") from None


class BaselineTree:
    """REV's sources in a temporary detached git worktree, and an import root that maps them as
    pyproject.toml's package-dir does, for a server started with PYTHONPATH=import_root (it
    comes before the installed or editable jitnet). Removes the worktree on exit."""

    # inside import_root/jitnet: what each name links to, inside REV's tree
    LINKS = {"__init__.py": "protos/jitnet/__init__.py", "v1": "protos/jitnet/v1",
             "service": "service", "client": "client"}

    def __init__(self, rev: str, workdir: pathlib.Path):
        self.rev = rev
        self.commit = commit_of(rev)
        self.tree = workdir / "baseline-tree"
        self.import_root = workdir / "baseline-import"

    def __enter__(self) -> BaselineTree:
        _git("worktree", "add", "--detach", "--quiet", str(self.tree), self.commit)
        package = self.import_root / "jitnet"
        package.mkdir(parents=True)
        for name, target in self.LINKS.items():
            (package / name).symlink_to(self.tree / target)
        # before server processes (`--workers`) came, `--workers` named the thread pool
        config = (self.tree / "service" / "config.py").read_text()
        self.threads_flag = "--threads" if 'Setting("threads"' in config else "--workers"
        return self

    def __exit__(self, *exc) -> None:
        _git("worktree", "remove", "--force", str(self.tree))


# ---------------------------------------------------------------------------------------------
# The echo server (a child process)


def echo_main(args) -> int:
    """A bare grpcio server: same thread pool and options as jitnet's, no interceptor, and a
    generic handler that answers Predict and ModelInfer with the canned reply for the request's
    bytes (the same rows in the values form and as raw bytes make requests of one size)."""
    from concurrent import futures

    import grpc

    with open(args.canned, "rb") as f:
        canned: dict[bytes, bytes] = pickle.load(f)

    def answer(request: bytes, context) -> bytes:
        return canned[request]

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.threads),
        options=[("grpc.max_receive_message_length", args.max_message),
                 ("grpc.max_send_message_length", args.max_message),
                 ("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=args.max_concurrent)
    for path in (PREDICT, MODEL_INFER):
        service, method = path.strip("/").split("/")
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            service, {method: grpc.unary_unary_rpc_method_handler(answer)}),))
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    server.stop(1).wait(5)
    return 0


# ---------------------------------------------------------------------------------------------
# The load client (a child process): grpc.aio, closed loop


def client_main(args) -> int:
    result = asyncio.run(_closed_loop(args))
    json.dump(result, sys.stdout)
    return 0


async def _closed_loop(args) -> dict:
    import grpc
    import numpy as np

    request = pathlib.Path(args.request).read_bytes()
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    async with grpc.aio.insecure_channel(args.target, options=options) as channel:
        call = channel.unary_unary(args.method)  # bytes in, bytes out: no client-side parsing
        first = await call(request, timeout=30)  # connects; checked by the driver
        latencies: list[int] = []
        errors: list[str] = []
        t_start = time.perf_counter_ns() + int(args.warmup * 1e9)
        t_end = t_start + int(args.seconds * 1e9)
        marks = {}

        async def worker():
            while True:
                began = time.perf_counter_ns()
                if began >= t_end:
                    return
                try:
                    await call(request, timeout=30)
                    ok = True
                except grpc.aio.AioRpcError as exc:
                    ok = False
                    if len(errors) < 5:
                        errors.append(f"{exc.code().name}: {exc.details()}")
                    errors_count[0] += 1
                done = time.perf_counter_ns()
                if began >= t_start and done <= t_end and ok:
                    latencies.append(done - began)

        async def sampler():
            # Server and client CPU over the measured window.
            await asyncio.sleep(max(0.0, (t_start - time.perf_counter_ns()) / 1e9))
            marks["server0"] = _cpu_seconds(args.server_pid) if args.server_pid else 0.0
            marks["client0"] = time.process_time()
            await asyncio.sleep(max(0.0, (t_end - time.perf_counter_ns()) / 1e9))
            marks["server1"] = _cpu_seconds(args.server_pid) if args.server_pid else 0.0
            marks["client1"] = time.process_time()

        errors_count = [0]
        await asyncio.gather(sampler(), *(worker() for _ in range(args.in_flight)))

    window = args.seconds
    lat = np.array(latencies, dtype=np.float64) / 1e6  # ms
    return {
        "calls": len(latencies),
        "qps": len(latencies) / window,
        "p50": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p90": float(np.percentile(lat, 90)) if lat.size else float("nan"),
        "p99": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "errors": errors_count[0],
        "error_samples": errors,
        "server_cpu": (marks["server1"] - marks["server0"]) / window,
        "client_cpu": (marks["client1"] - marks["client0"]) / window,
        "reply_bytes": len(first),
    }


def run_client(env: dict, target: str, request_file: pathlib.Path, server_pid: int,
               in_flight: int, seconds: float, warmup: float, method: str = PREDICT) -> dict:
    argv = [sys.executable, __file__, "_client", "--target", target, "--request",
            str(request_file), "--in-flight", str(in_flight), "--seconds", str(seconds),
            "--warmup", str(warmup), "--server-pid", str(server_pid), "--method", method]
    out = subprocess.run(argv, env=env, capture_output=True, text=True,
                         timeout=seconds + warmup + 120, preexec_fn=pinned_to(CLIENT_CORE))
    if out.returncode != 0:
        raise RuntimeError(f"load client failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


# ---------------------------------------------------------------------------------------------
# In-process engine (a child process pinned to the server's core)


def engine_main(args) -> int:
    from jitnet.client import datasets
    from jitnet.service.engine import training
    from jitnet.service.engine.model import Architecture, Init, Network
    from jitnet.service.server import warmup

    warmup.warm_up()
    arch = Architecture((2, 4, 1))
    x, t, _ = datasets.xor()
    times = []
    for _ in range(args.rounds):
        net = Network.initialise(arch, Init.XAVIER, args.seed)
        net.params.setflags(write=False)  # as the store hands records out
        options = training.TrainOptions(epochs=args.epochs, learning_rate=0.5)
        began = time.perf_counter()
        for progress in training.train(net, x, t, options):  # noqa: B007 - the last is used
            pass
        times.append(time.perf_counter() - began)
    # The kernel's ceiling for the 1,000-row case: Network.predict alone, same model shape.
    digits = Network.initialise(DIGITS_ARCH(), Init.XAVIER, 1)
    digits.params.setflags(write=False)
    rows = _digits(1000)
    predict_times = []
    for _ in range(args.rounds * 20):
        began = time.perf_counter()
        digits.predict(rows)
        predict_times.append(time.perf_counter() - began)
    json.dump({"seconds": times, "loss": progress.loss,
               "predict_1000": statistics.median(predict_times[5:])}, sys.stdout)
    return 0


# ---------------------------------------------------------------------------------------------
# The driver


def _digits(rows: int):
    import numpy as np
    from sklearn.datasets import load_digits

    x = load_digits().data / 16.0
    reps = -(-rows // len(x))
    return np.ascontiguousarray(np.tile(x, (reps, 1))[:rows], dtype=np.float64)


def _case_request(case: Case) -> bytes:
    """The request bytes of a case: its model's rows (XOR's (0, 1), or digits rows) in its
    protocol and form."""
    import numpy as np

    from jitnet.inference import open_inference_grpc_pb2 as oip
    from jitnet.v1 import jitnet_pb2 as pb

    x = np.ascontiguousarray([[0.0, 1.0]] if case.model == "xor" else _digits(case.rows),
                             dtype="<f8")
    raw = case.form == "raw"
    if case.method == PREDICT:
        tensor = (pb.Tensor(shape=x.shape, raw=x.tobytes()) if raw
                  else pb.Tensor(shape=x.shape, values=x.ravel().tolist()))
        return pb.PredictRequest(model_id=case.model, inputs=tensor).SerializeToString()
    tensor = oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP64", shape=x.shape)
    if not raw:
        tensor.contents.fp64_contents.extend(x.ravel().tolist())
    return oip.ModelInferRequest(model_name=case.model, inputs=[tensor],
                                 raw_input_contents=[x.tobytes()] if raw else []
                                 ).SerializeToString()


def _check_reply(case: Case, reply: bytes, server: str) -> None:
    """A case's reply: its rows' outputs, in the request's form."""
    from jitnet.inference import open_inference_grpc_pb2 as oip
    from jitnet.v1 import jitnet_pb2 as pb

    count = case.rows * (1 if case.model == "xor" else 10)
    if case.method == PREDICT:
        outputs = pb.PredictResponse.FromString(reply).outputs
        shape, data = list(outputs.shape), (len(outputs.raw) // 8 if case.form == "raw"
                                            else len(outputs.values))
    else:
        parsed = oip.ModelInferResponse.FromString(reply)
        shape = list(parsed.outputs[0].shape)
        data = (len(parsed.raw_output_contents[0]) // 8 if case.form == "raw"
                else len(parsed.outputs[0].contents.fp64_contents))
    assert shape == [case.rows, count // case.rows] and data == count, (server, case.title)


def _summarise(runs: list[dict]) -> dict:
    keys = ("qps", "p50", "p90", "p99", "server_cpu", "client_cpu")
    out = {k: median([r[k] for r in runs]) for k in keys}
    out["errors"] = sum(r["errors"] for r in runs)
    out["calls"] = sum(r["calls"] for r in runs)
    out["rounds"] = len(runs)
    out["error_samples"] = [e for r in runs for e in r["error_samples"]][:5]
    out["qps_all"] = [round(r["qps"]) for r in runs]
    return out


def measure_startup(env: dict, workdir: pathlib.Path, threads: int, warm_runs: int) -> dict:
    """Cold (empty NUMBA_CACHE_DIR) once, then warm runs on the cache the cold run filled."""
    result = {}
    for label, runs in (("cold", 1), ("warm", warm_runs)):
        times = []
        for k in range(runs):
            port = _free_port()
            began = time.perf_counter()
            proc, _ = start_jitnet(env, workdir, threads, f"start-{label}-{k}", port)
            try:
                times.append(_wait_serving(port, proc.proc, 600.0) - began)
            finally:
                proc.stop()
        result[label] = times
        print(f"  start to SERVING, {label}: {', '.join(f'{t:.2f}' for t in times)} s",
              flush=True)
    return result


def run(args) -> dict:
    pinned = {SERVER_CORE, CLIENT_CORE} <= MACHINE_CORES
    if pinned:
        pin_self(CLIENT_CORE)  # this driver, and the load client, on core 1
    else:
        print("warning: fewer than 2 cores; nothing is pinned", file=sys.stderr)

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="jitnet-bench-"))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(workdir / "numba-cache"), "PYTHONUNBUFFERED": "1"}
    results: dict = {"pinned": pinned, "threads": args.threads, "in_flight": args.in_flight,
                     "seconds": args.seconds, "warmup": args.warmup, "rounds": args.rounds}

    try:
        return _run_in(workdir, env, results, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _start_with_models(env: dict, workdir: pathlib.Path, threads: int, name: str,
                       running: contextlib.ExitStack, threads_flag: str = "--threads",
                       tiers: bool = True, flags: tuple[str, ...] = ()) -> tuple[str, Proc]:
    """A jitnet server on the server core, SERVING, holding the Predict cases' models (xor
    trained a little, digits as initialised), both served by their specialised kernels
    (`tiers`: a revision that has them); stopped when `running` closes."""
    import numpy as np

    from jitnet.client import Client, datasets

    proc, port = start_jitnet(env, workdir, threads, name, flags=flags,
                              threads_flag=threads_flag)
    running.callback(proc.stop)
    _wait_serving(port, proc.proc, 600.0)  # a cold numba cache compiles every kernel first
    target = f"127.0.0.1:{port}"
    xor = datasets.xor()
    with Client(target, timeout=60) as client:
        client.create_model([2, 4, 1], seed=1, model_id="xor")
        client.create_model([64, 64, 10], seed=1, model_id="digits", **DIGITS)
        for _ in client.train("xor", xor.inputs, xor.targets, epochs=2000, learning_rate=0.5):
            pass
        if tiers:  # a Train asks at once; digits only after --specialise-after-predicts
            digits_row = np.zeros(64)
            wait_specialised(proc.log, ("2-4-1", "64-64-10"),
                             lambda: [client.predict("digits", digits_row) for _ in range(100)],
                             lambda: proc.proc.poll() is None)
    return target, proc


def _run_in(workdir: pathlib.Path, env: dict, results: dict, args) -> dict:
    import grpc

    from jitnet.service.config import Limits

    if args.cases is None:
        print("start-up (cold numba cache first; it compiles every kernel)", flush=True)
        results["startup"] = measure_startup(env, workdir, args.threads, args.start_runs)

    with contextlib.ExitStack() as running:  # closes in reverse: echo, baseline, its tree, jitnet
        servers = {}  # name: (target, Proc), in the order of a round
        servers["jitnet"] = _start_with_models(env, workdir, args.threads, "jitnet", running)
        if args.baseline:
            tree = running.enter_context(BaselineTree(args.baseline, workdir))
            results["baseline"] = {"rev": tree.rev, "commit": tree.commit}
            print(f"jitnet@{tree.rev} is {tree.commit[:10]}, from {tree.tree}", flush=True)
            servers[f"jitnet@{tree.rev}"] = _start_with_models(
                {**env, "PYTHONPATH": str(tree.import_root)}, workdir, args.threads,
                "jitnet-baseline", running, tree.threads_flag,
                tiers=any((tree.tree / "service" / d).is_dir() for d in ("jit", "engine/jit")))

        requests = {key: _case_request(CASES[key]) for key in args.cases or PREDICT_CASES}
        canned, unserved = {}, set()  # unserved: (server, case) answered UNIMPLEMENTED
        channel_options = [("grpc.max_receive_message_length", -1),
                           ("grpc.max_send_message_length", -1)]
        for name, (target, _) in servers.items():
            with grpc.insecure_channel(target, options=channel_options) as channel:
                for key, request in requests.items():
                    case = CASES[key]
                    try:
                        reply = channel.unary_unary(case.method)(request, timeout=30)
                    except grpc.RpcError as exc:  # a baseline from before the protocol
                        if name == "jitnet" or exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                            raise
                        unserved.add((name, key))
                        continue
                    _check_reply(case, reply, name)
                    if name == "jitnet":  # echo answers what the working tree's server did
                        canned[request] = reply
                        (workdir / f"{key}.request").write_bytes(request)
        canned_file = workdir / "canned.pickle"
        canned_file.write_bytes(pickle.dumps(canned))
        limits = Limits()
        echo, echo_port = start_echo(env, workdir, args.threads, canned_file,
                                     limits.max_concurrent_calls, limits.max_message_bytes)
        running.callback(echo.stop)
        _wait_port(echo_port, echo.proc)
        servers["echo"] = (f"127.0.0.1:{echo_port}", echo)
        results["servers"] = list(servers)

        results["predict"] = {}
        for key, request in requests.items():
            case = CASES[key]
            runs = {name: [] for name in servers if (name, key) not in unserved}
            for r in range(args.rounds):
                for name in list(runs)[::1 if r % 2 == 0 else -1]:
                    target, proc = servers[name]
                    runs[name].append(run_client(env, target, workdir / f"{key}.request",
                                                 proc.pid, args.in_flight, args.seconds,
                                                 args.warmup, case.method))
            summary = {name: _summarise(v) for name, v in runs.items()}
            summary["rows"] = case.rows
            summary["title"] = case.title
            summary["request_bytes"] = len(request)
            summary["reply_bytes"] = len(canned[request])
            results["predict"][key] = summary
            e = summary["echo"]
            print(f"  {case.title}: " + " | ".join(
                f"{name} {summary[name]['qps']:.0f}/s p50 {summary[name]['p50']:.2f} p99 "
                f"{summary[name]['p99']:.2f} ms (cpu {summary[name]['server_cpu']:.2f})"
                + (f", {summary[name]['qps'] / e['qps']:.2f}x echo" if name != "echo" else "")
                for name in runs), flush=True)

        if args.cases is None:
            for name in servers:  # Train and the metrics case have the server core to themselves
                if name != "jitnet":
                    servers[name][1].stop()
            target, proc = servers["jitnet"]
            results["metrics"] = measure_metrics_cost(env, workdir, args, (target, proc.pid))
            results["train"] = measure_train(env, workdir, target, args)
    results["server_exit"] = servers["jitnet"][1].proc.returncode
    return results


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"echo server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {port}")


def measure_metrics_cost(env: dict, workdir: pathlib.Path, args, off: tuple[str, int]) -> dict:
    """Predict XOR 1 on the metrics-off server (`off`: target, pid) and on a second server
    with --metrics-port, twice as many ABBA rounds as the other cases (the difference sought
    is a few percent). The second server's /metrics must count every call the client made."""
    import urllib.request


    metrics_port = _free_port()
    with contextlib.ExitStack() as running:
        # the same models, trained and specialised alike: only --metrics-port differs
        target, server = _start_with_models(env, workdir, args.threads, "jitnet-metrics",
                                            running, flags=("--metrics-port", str(metrics_port)))
        servers = {"off": off, "on": (target, server.pid)}
        runs = {"off": [], "on": []}
        for r in range(2 * args.rounds):
            for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
                addr, pid = servers[name]
                runs[name].append(run_client(env, addr, workdir / "xor1.request", pid,
                                             args.in_flight, args.seconds, args.warmup))
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=10).read().decode()
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
                  if line.startswith("grpc_server_handled_total{") and 'grpc_method="Predict"'
                  in line and 'grpc_code="OK"' in line)
    measured = sum(r["calls"] for r in runs["on"])  # calls inside the windows: fewer than made
    assert counted >= measured, f"/metrics counted {counted} Predicts, the client {measured}"
    result = {name: _summarise(v) for name, v in runs.items()}
    result["counted"] = counted
    on, off_ = result["on"], result["off"]
    print(f"  Predict XOR 1, metrics on: {on['qps']:.0f}/s (cpu {on['server_cpu']:.2f}) vs off "
          f"{off_['qps']:.0f}/s (cpu {off_['server_cpu']:.2f}): ratio "
          f"{on['qps'] / off_['qps']:.3f}; /metrics counted {counted:.0f} Predicts", flush=True)
    return result


def measure_train(env: dict, workdir: pathlib.Path, target: str, args) -> dict:
    from jitnet.client import Client, datasets

    epochs, seed = 10_000, 3
    x, y, _ = datasets.xor()
    grpc_times, server_elapsed, rtts = [], [], []
    with Client(target, timeout=60) as client:
        for _ in range(200):  # one round trip: a Predict of one XOR sample, one call in flight
            began = time.perf_counter()
            client.predict("xor", x[1])
            rtts.append(time.perf_counter() - began)
        for k in range(args.train_rounds):
            model_id = f"train-{k}"
            client.create_model([2, 4, 1], seed=seed, model_id=model_id)
            began = time.perf_counter()
            for progress in client.train(  # noqa: B007 - the last one is used
                    model_id, x, y, epochs=epochs, learning_rate=0.5, report_every=0):
                pass
            grpc_times.append(time.perf_counter() - began)
            server_elapsed.append(progress.elapsed_seconds)
            assert progress.done and progress.epoch == epochs, progress
            client.delete_model(model_id)
    out = subprocess.run([sys.executable, __file__, "_engine", "--rounds",
                          str(args.train_rounds), "--epochs", str(epochs), "--seed", str(seed)],
                         env=env, capture_output=True, text=True, timeout=600,
                         preexec_fn=pinned_to(SERVER_CORE))
    if out.returncode != 0:
        raise RuntimeError(f"in-process engine run failed:\n{out.stderr[-3000:]}")
    engine = json.loads(out.stdout)
    result = {"grpc": median(grpc_times), "grpc_all": grpc_times,
              "server_elapsed": median(server_elapsed), "engine": median(engine["seconds"]),
              "engine_all": engine["seconds"], "rtt": median(rtts), "loss": progress.loss,
              "predict_1000": engine["predict_1000"]}
    print(f"  Train XOR 10k epochs: gRPC {result['grpc'] * 1e3:.1f} ms, in-process "
          f"{result['engine'] * 1e3:.1f} ms + round trip {result['rtt'] * 1e3:.2f} ms", flush=True)
    return result


# ---------------------------------------------------------------------------------------------
# The report


def _ok(met: bool) -> str:
    return "**met**" if met else "**missed**"


def _ms(v: float) -> str:
    return f"{v:.2f}"


def _span(values) -> str:
    low, high = f"{min(values):.0f}", f"{max(values):.0f}"
    return low if low == high else f"{low}-{high}"


def _cpu_us(r: dict) -> float:
    """Server CPU microseconds per call: the noise-robust view of a server's cost."""
    return r["server_cpu"] / r["qps"] * 1e6 if r["qps"] else float("nan")


def _command(results: dict) -> str:
    """The command line a run was made with (older --json files have only `quick`)."""
    return results.get("command") or (
        "python benchmarks/serve.py" + (" --quick" if results.get("quick") else ""))


def section(results: dict) -> str:
    p = results["predict"]
    t = results.get("train")  # absent after a run of --cases
    s = results.get("startup")
    keys = [key for key in PREDICT_CASES if key in p]
    names = results.get("servers", ["jitnet", "echo"])
    pinned = "" if results["pinned"] else " (NOT pinned: fewer than 2 cores)"
    threads = results.get("threads", results.get("workers"))  # older --json files: "workers"
    lines = [
        SECTION,
        "",
        f"Written by `{_command(results)}` on "
        f"{results.get('written') or f'{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M}'} "
        f"UTC. Machine: {machine()}. "
        f"{versions('grpcio', 'protobuf', 'numpy', 'numba', 'jitnet')}. Load average "
        f"{results['load'][0]:.1f} at the start, {results['load'][1]:.1f} at the end (the end "
        "counts this run's own processes; the servers' CPU per call, below, says whether they "
        "had their core).",
        "",
        f"Setup: each server process pinned to core {SERVER_CORE}, the load client (a grpc.aio "
        f"closed loop in its own process) to core {CLIENT_CORE}{pinned}; "
        f"{results['in_flight']} calls in flight; {threads} threads in every "
        f"server; per round {results['warmup']:g} s warm-up + {results['seconds']:g} s "
        f"measured, {results['rounds']} round(s) per server, the servers in turn (in reverse "
        "order every other round); medians over rounds. *echo* is a bare grpcio server (same "
        "thread pool, same options, none of jitnet's handler wrapping) whose generic handler "
        "answers the same request bytes with the reply bytes jitnet gave for them, so "
        "jitnet/echo is jitnet's own cost. Requests carry raw tensor bytes (as the jitnet "
        "client sends them) or, in the *values form*, the same rows as packed doubles (what "
        "clients built from the .proto send: grpcurl, grpc-js, Go, Java); ModelInfer's are "
        "raw FP64 (raw_input_contents) or typed (fp64_contents), and the reply comes in the "
        "request's form. *CPU us/call* is the server process's "
        "CPU time per completed call over the window: it moves less with a noisy neighbour "
        "than QPS does. The digits model is 64-64-10, sigmoid hidden, softmax output.",
    ]
    if "baseline" in results:
        base = results["baseline"]
        lines += ["", f"*jitnet@{base['rev']}* is the server of {base['rev']} (commit "
                  f"{base['commit'][:10]}), run from a temporary git worktree with the same "
                  "pinning, options and models; *jitnet* is the working tree's."]
    lines += [
        "",
        "| case | server | QPS | p50 ms | p90 ms | p99 ms | p99/p50 | errors | CPU us/call | "
        "jitnet/echo QPS |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in keys:
        case = p[key]
        served = [name for name in names if name in case]  # a baseline may lack a protocol
        for name in served:
            r = case[name]
            ratio = (f"**{r['qps'] / case['echo']['qps']:.2f}**" if name.startswith("jitnet")
                     else "")
            lines.append(
                f"| {case['title'] if name == served[0] else ''} | {name} | {r['qps']:,.0f} | "
                f"{_ms(r['p50'])} | {_ms(r['p90'])} | {_ms(r['p99'])} | "
                f"{r['p99'] / r['p50']:.2f} | {r['errors']} | {_cpu_us(r):,.0f} | {ratio} |")

    lines += ["", "| target | measured | result |", "|---|---|---|"]
    small_keys = [key for key in ONE_ROW_CASES if key in p]
    for key in small_keys:
        case = p[key]
        j, e = case["jitnet"], case["echo"]
        ratio = j["qps"] / e["qps"]
        tail = j["p99"] / j["p50"]
        lines.append(f"| {case['title']}: QPS >= {TARGETS['qps_ratio']}x echo | {ratio:.2f}x "
                     f"({j['qps']:,.0f} vs {e['qps']:,.0f}/s; by server CPU per call "
                     f"{_cpu_us(e) / _cpu_us(j):.2f}x) | "
                     f"{_ok(ratio >= TARGETS['qps_ratio'])} |")
        against = CASES[key].against
        if against in p:
            v1 = p[against]["jitnet"]
            v2_ratio = j["qps"] / v1["qps"]
            lines.append(f"| {case['title']}: QPS >= {TARGETS['v2_ratio']}x jitnet.v1's "
                         f"({p[against]['title']}) | {v2_ratio:.2f}x ({j['qps']:,.0f} vs "
                         f"{v1['qps']:,.0f}/s; by server CPU per call "
                         f"{_cpu_us(v1) / _cpu_us(j):.2f}x) | "
                         f"{_ok(v2_ratio >= TARGETS['v2_ratio'])} |")
        lines.append(f"| {case['title']}: p99 <= {TARGETS['tail']:g}x p50, no errors | "
                     f"{tail:.2f}x ({_ms(j['p99'])} / {_ms(j['p50'])} ms; echo "
                     f"{e['p99'] / e['p50']:.2f}x), {j['errors']} errors | "
                     f"{_ok(tail <= TARGETS['tail'] and j['errors'] == 0)} |")
    big = p.get("digits1000")
    if big:
        samples = big["jitnet"]["qps"] * big["rows"]
        met = samples >= TARGETS["samples_per_s"] and big["jitnet"]["errors"] == 0
        lines.append(f"| {big['title']}: >= 1M samples/s end to end | {samples / 1e6:.2f}M "
                     f"samples/s ({big['jitnet']['qps']:,.0f} calls/s of "
                     f"{big['request_bytes'] / 1024:.0f} KiB; echo "
                     f"{big['echo']['qps'] * big['rows'] / 1e6:.2f}M), "
                     f"{big['jitnet']['errors']} errors | {_ok(met)} |")
    if "metrics" in results:
        m = results["metrics"]
        on, off = m["on"], m["off"]
        ratio = on["qps"] / off["qps"]
        lines.append(f"| Predict XOR, 1 sample: metrics on >= {TARGETS['metrics_ratio']}x "
                     f"metrics off QPS | {ratio:.3f}x ({on['qps']:,.0f} vs {off['qps']:,.0f}/s, "
                     f"{on['rounds']} rounds each; by server CPU per call "
                     f"{_cpu_us(off) / _cpu_us(on):.3f}x: {_cpu_us(on):,.0f} vs "
                     f"{_cpu_us(off):,.0f} us), {on['errors']} errors | "
                     f"{_ok(ratio >= TARGETS['metrics_ratio'] and on['errors'] == 0)} |")
    if t:
        budget = t["engine"] + t["rtt"]
        tr = t["grpc"] / budget
        lines.append(f"| Train XOR 10k epochs over gRPC <= {TARGETS['train_ratio']}x in-process "
                     f"+ one round trip | {tr:.2f}x ({t['grpc'] * 1e3:.1f} ms vs "
                     f"{t['engine'] * 1e3:.1f} + {t['rtt'] * 1e3:.2f} ms) | "
                     f"{_ok(tr <= TARGETS['train_ratio'])} |")
    if s:
        warm = median(s["warm"])
        lines.append(f"| Start to SERVING, warm numba cache: <= {TARGETS['start_warm_s']:g} s | "
                     f"{warm:.2f} s (median of {', '.join(f'{x:.2f}' for x in s['warm'])}) | "
                     f"{_ok(warm <= TARGETS['start_warm_s'])} |")
        lines.append(f"| Start to SERVING, cold numba cache (reported) | {s['cold'][0]:.1f} s "
                     "| (compiles every kernel) |")

    # What the numbers say, from this run's own measurements.
    small = [p[key] for key in small_keys]
    # The server is the bottleneck of the one-sample cases and has a core of its own: well
    # under one core of CPU means another tenant took a share of the machine, which narrows
    # every ratio.
    server_cpu = [c[n]["server_cpu"] for c in small for n in names if n in c]
    if server_cpu and min(server_cpu) < 0.8:
        lines += ["", f"**Caution:** the pinned servers used only {min(server_cpu):.2f}-"
                  f"{max(server_cpu):.2f} of their core in the one-sample rounds (about 1.0 "
                  "when the machine is quiet): something else shared the machine, and the "
                  "ratios above are narrowed. Re-run on a quiet machine."]
    limits = []
    if small:
        own = [_cpu_us(c["jitnet"]) - _cpu_us(c["echo"]) for c in small]
        floor = [_cpu_us(c["echo"]) for c in small]
        limits.append(
            f"- **One row per call**: grpcio's synchronous server itself spends "
            f"{_span(floor)} us of its one core per call (echo), jitnet "
            f"{_span(own)} us more. {TARGETS['qps_ratio']}x echo leaves jitnet about "
            f"{min(floor) * (1 / TARGETS['qps_ratio'] - 1):.0f} us per call for everything of "
            "its own: parsing the request, validation, the store lookup, the kernel call and "
            "the reply.")
    if big and t:
        kernel = t["predict_1000"]
        limits.append(
            f"- **1,000 rows per call**: 1M samples/s is 1,000 such calls a second, at most 1 ms "
            f"of the server's one core per call. The bare echo server already spends "
            f"{_cpu_us(big['echo']) / 1e3:.2f} ms per call receiving 0.5 MiB and answering, and "
            f"`Network.predict` alone takes {kernel * 1e3:.2f} ms for the 1,000 rows (in a "
            "process pinned to the same core): together over the budget before jitnet decodes "
            "or encodes anything. The rest of jitnet's "
            f"{(_cpu_us(big['jitnet']) - _cpu_us(big['echo'])) / 1e3 - kernel * 1e3:.2f} ms per "
            "call is copies of the 0.5 MiB (protobuf's parse, reading `raw`, the float64 array) "
            "and the page faults of fresh buffers (see the malloc note in *Serving: profiling "
            "notes*).")
    if t:
        limits.append(
            f"- **Train**: the server's own training loop took {t['server_elapsed'] * 1e3:.1f} "
            f"ms (in-process {t['engine'] * 1e3:.1f} ms); the other "
            f"{(t['grpc'] - t['server_elapsed'] - t['rtt']) * 1e3:.1f} ms beyond the round trip "
            "are the server's work around the training, mostly the durable commit the API "
            "promises before a progress message is sent. 1.2x of "
            f"{(t['engine'] + t['rtt']) * 1e3:.1f} ms leaves "
            f"{0.2 * (t['engine'] + t['rtt']) * 1e3:.1f} ms for all of it (what a commit costs: "
            "*Serving: profiling notes*).")
    if limits:
        lines += ["", "What limits each case (this run):", "", *limits]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_echo", "_client", "_engine"):
        return _child(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s per case")
    parser.add_argument("--in-flight", type=int, default=32, help="calls in flight (default 32)")
    parser.add_argument("--threads", type=int, default=8,
                        help="server thread pool, every server (default 8, jitnet's default)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run the server of git revision REV, as 'jitnet@REV'")
    parser.add_argument("--cases", type=_cases, metavar="CASE,...",
                        help=f"only these Predict cases ({', '.join(PREDICT_CASES)}), no "
                             "start-up or Train; prints the section, writes nothing")
    parser.add_argument("--no-write", action="store_true",
                        help=f"print the section instead of writing {DOC.relative_to(ROOT)}")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--from-json", metavar="FILE",
                        help="measure nothing: render the section again from a --json file")
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(pathlib.Path(args.from_json).read_text())
        return _report(section(results), args)
    if args.baseline:
        commit_of(args.baseline)  # a bad REV fails now, not after minutes of measuring
    if args.cases is not None:
        args.no_write = True  # a section without start-up or Train would replace a whole one
    args.rounds = 1 if args.quick else 3
    args.seconds = 2.0 if args.quick else 5.0
    args.warmup = 0.5 if args.quick else 1.0
    args.start_runs = 2 if args.quick else 5
    args.train_rounds = 7 if args.quick else 31  # each round is milliseconds: many are cheap

    load_before = os.getloadavg()[0]
    results = run(args)
    results["load"] = (load_before, os.getloadavg()[0])
    results["quick"] = args.quick
    results["command"] = " ".join(
        ["python benchmarks/serve.py"] + (["--quick"] if args.quick else [])
        + ([f"--in-flight {args.in_flight}"] if args.in_flight != 32 else [])
        + ([f"--threads {args.threads}"] if args.threads != 8 else [])
        + ([f"--baseline {args.baseline}"] if args.baseline else [])
        + ([f"--cases {','.join(args.cases)}"] if args.cases else []))
    results["written"] = f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M}"
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return _report(section(results), args)


def _cases(text: str) -> list[str]:
    cases = [case.strip() for case in text.split(",") if case.strip()]
    unknown = [case for case in cases if case not in PREDICT_CASES]
    if unknown or not cases:
        raise argparse.ArgumentTypeError(f"{text!r}: name one or more of "
                                         f"{', '.join(PREDICT_CASES)}")
    return cases


def _report(text: str, args) -> int:
    if args.no_write:
        print(text)
    else:
        write_section(text, SECTION)
        print(f"wrote the {SECTION} section of {DOC}")
    return 0


def _child(argv: list[str]) -> int:
    kind = argv[0]
    parser = argparse.ArgumentParser(prog=f"serve.py {kind}")
    if kind == "_echo":
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--threads", type=int, required=True)
        parser.add_argument("--canned", required=True)
        parser.add_argument("--max-concurrent", type=int, required=True)
        parser.add_argument("--max-message", type=int, required=True)
        return echo_main(parser.parse_args(argv[1:]))
    if kind == "_client":
        parser.add_argument("--target", required=True)
        parser.add_argument("--request", required=True)
        parser.add_argument("--in-flight", type=int, required=True)
        parser.add_argument("--seconds", type=float, required=True)
        parser.add_argument("--warmup", type=float, required=True)
        parser.add_argument("--server-pid", type=int, default=0)
        parser.add_argument("--method", default=PREDICT)
        return client_main(parser.parse_args(argv[1:]))
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    return engine_main(parser.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
