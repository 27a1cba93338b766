"""Peers benchmark: jitnet against MLServer and KServe's Python model server, all spoken to
through the Open Inference Protocol (KServe V2 gRPC ModelInfer), plus a bare grpcio echo server
as the floor and jitnet's own jitnet.v1 Predict as its baseline.

    python benchmarks/peers.py            # ~4 minutes after the first run; rewrites the
                                          # `## Peers (Open Inference Protocol)` section of
                                          # docs/benchmarks.md (nothing else in that file)
    python benchmarks/peers.py --quick    # 1 round of 2 s per server and case
    python benchmarks/peers.py --no-write # print the section only
    python benchmarks/peers.py --from-json FILE  # render again from a --json file

The model: scikit-learn's MLPClassifier (64-64-10, relu hidden, softmax output) trained on the
digits set here (a few seconds), saved with joblib for the peers, and the very same weights
loaded into jitnet with CreateModel. Every server gets the same ModelInfer request bytes (one
FP64 input "input", raw_input_contents, no outputs asked for) and is checked first to answer
the same probabilities as scikit-learn's predict_proba.

The peers run from virtual environments this script makes (pip, from the package index) under
--venvs (default ~/.cache/jitnet/peers; nothing in the repository): MLServer 1.7.1 with
mlserver-sklearn (and uvloop<0.22, which it needs to start today), KServe 0.21.0; each with
this environment's scikit-learn version, so the model file loads. An environment whose
requirements changed is made again.

What runs where (2 cores): every server process, and the processes it starts, on core 0; this
driver and the closed-loop load client (serve.py's: grpc.aio, `--in-flight` calls, default 32,
the same pre-serialised request bytes, every call timed) on core 1. All servers are started
first and measured in rotating order, round by round; idle ones take no CPU to speak of.
Server CPU per call is the CPU time of the server's whole process tree over the window.
Every server listens on 127.0.0.1 only, checked before measuring. KServe binds [::] and
0.0.0.0 with no setting to change it (its gRPC server's add_insecure_port, uvicorn's host): the
script's `_kserve` child rewrites both to 127.0.0.1 before KServe starts.

Servers and settings (each peer's defaults, and its documented throughput settings):
  jitnet V2          jitnet's server with its defaults (8 worker threads), ModelInfer
  jitnet v1          the same server, jitnet.v1 Predict of the same rows (the V2 target's base)
  echo               a bare grpcio server (serve.py's) answering the ModelInfer bytes jitnet
                     answered: what grpcio alone costs
  MLServer default   `mlserver start` with defaults: inference in parallel_workers=1 worker
                     process
  MLServer inproc    parallel_workers=0: inference in the server's own process (no IPC)
  MLServer batching  parallel_workers=0 and adaptive batching (max_batch_size 32 = the
                     calls in flight, max_batch_time 2 ms), MLServer's documented way to
                     raise throughput
  KServe             kserve.ModelServer defaults (gRPC thread pool max_threads=4), a
                     kserve.Model whose predict calls predict_proba on the decoded tensor;
                     uvicorn workers only serve REST, and one core leaves nothing to scale
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import common  # siblings: run as a script, benchmarks/ is on sys.path
import serve

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Peers (Open Inference Protocol)"
MODEL = "digits"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
PREDICT = "/jitnet.v1.NetworkService/Predict"
MODEL_READY = "/inference.GRPCInferenceService/ModelReady"
DEFAULT_VENVS = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")
                             ) / "jitnet" / "peers"
ROWS = (1, 100)
TARGETS = {"v2_vs_v1": 0.9, "peer_1": 5.0, "peer_100": 4.0}
PEERS = {  # venv -> requirements (plus this environment's scikit-learn)
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"],
    "kserve": ["kserve==0.21.0"],
}
SERVERS = ["jitnet V2", "jitnet v1", "echo", "MLServer default", "MLServer inproc",
           "MLServer batching", "KServe"]
PEER_SERVERS = ["MLServer default", "MLServer inproc", "MLServer batching", "KServe"]


# ---------------------------------------------------------------------------------------------
# Virtual environments


def ensure_venv(root: pathlib.Path, name: str) -> pathlib.Path:
    """The peer's venv, made (or made again) when its requirements differ; returns its python."""
    import sklearn

    requirements = PEERS[name] + [f"scikit-learn=={sklearn.__version__}"]
    venv = root / name
    marker = venv / "jitnet-requirements.txt"
    python = venv / "bin" / "python"
    if marker.exists() and marker.read_text() == "\n".join(requirements) and python.exists():
        return python
    print(f"making the {name} environment in {venv} (pip: {' '.join(requirements)})",
          flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *requirements], check=True)
    marker.write_text("\n".join(requirements))
    return python


# ---------------------------------------------------------------------------------------------
# The model and the requests


def train_model(workdir: pathlib.Path):
    """The digits MLP, trained here, saved with joblib; returns (classifier, the data)."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x = load_digits().data / 16.0
    y = load_digits().target
    clf = MLPClassifier(hidden_layer_sizes=(64,), activation="relu", max_iter=1000,
                        random_state=0).fit(x, y)
    (workdir / "model").mkdir(exist_ok=True)
    joblib.dump(clf, workdir / "model" / "model.joblib")
    return clf, np.ascontiguousarray(x, dtype=np.float64)


def create_in_jitnet(target: str, clf) -> None:
    """The classifier's weights as a jitnet model: layer weights are [fan_out, fan_in]."""
    import grpc
    import numpy as np

    from jitnet.v1 import jitnet_pb2 as pb
    from jitnet.v1 import jitnet_pb2_grpc as pb_grpc

    def tensor(a):
        a = np.ascontiguousarray(a, dtype="<f8")
        return pb.Tensor(shape=list(a.shape), raw=a.tobytes())

    layers = [pb.Layer(weights=tensor(w.T), biases=tensor(b))
              for w, b in zip(clf.coefs_, clf.intercepts_, strict=True)]
    arch = pb.Architecture(layer_sizes=[64, 64, 10], hidden_activation=pb.ACTIVATION_RELU,
                           output_activation=pb.ACTIVATION_SOFTMAX, loss=pb.LOSS_CROSS_ENTROPY)
    with grpc.insecure_channel(target) as channel:
        pb_grpc.NetworkServiceStub(channel).CreateModel(pb.CreateModelRequest(
            model_id=MODEL, architecture=arch, layers=layers), timeout=60)


def infer_request(rows) -> bytes:
    """The one ModelInfer request every server gets: FP64 'input', raw, no outputs asked."""
    from jitnet.inference import open_inference_grpc_pb2 as oip

    rows = rows.astype("<f8")
    return oip.ModelInferRequest(model_name=MODEL, inputs=[
        oip.ModelInferRequest.InferInputTensor(name="input", datatype="FP64",
                                               shape=list(rows.shape))],
        raw_input_contents=[rows.tobytes()]).SerializeToString()


def probabilities(reply: bytes):
    import numpy as np

    from jitnet.inference import open_inference_grpc_pb2 as oip

    parsed = oip.ModelInferResponse.FromString(reply)
    assert len(parsed.outputs) == 1 and parsed.outputs[0].datatype == "FP64", parsed.outputs
    return np.frombuffer(parsed.raw_output_contents[0], "<f8").reshape(
        list(parsed.outputs[0].shape))


# ---------------------------------------------------------------------------------------------
# Starting the peers


def start_mlserver(serve, python: pathlib.Path, workdir: pathlib.Path, env: dict, name: str,
                   settings: dict, model_settings: dict):
    """`mlserver start DIR` with settings.json (loopback, free ports) and the model's
    model-settings.json (mlserver_sklearn, predict_proba as the default output)."""
    home = workdir / name.replace(" ", "-")
    (home / MODEL).mkdir(parents=True)
    port = serve._free_port()
    (home / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "grpc_port": port, "http_port": serve._free_port(),
        "metrics_port": serve._free_port(), **settings}))
    (home / MODEL / "model-settings.json").write_text(json.dumps({
        "name": MODEL, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(workdir / "model" / "model.joblib"),
                       "extra": {"predict_fn": "predict_proba"}}, **model_settings}))
    mlserver = python.parent / "mlserver"
    proc = serve.Proc([str(mlserver), "start", str(home)], env, serve.SERVER_CORE,
                      workdir / f"{home.name}.log")
    return proc, port


def start_kserve(serve, python: pathlib.Path, workdir: pathlib.Path, env: dict):
    port = serve._free_port()
    argv = [str(python), str(pathlib.Path(__file__).resolve()), "_kserve", "--grpc-port",
            str(port), "--http-port", str(serve._free_port()), "--model",
            str(workdir / "model" / "model.joblib")]
    return serve.Proc(argv, env, serve.SERVER_CORE, workdir / "kserve.log"), port


def kserve_main(args) -> int:
    """KServe's model server (in its own venv) on 127.0.0.1: KServe binds [::] (gRPC) and
    0.0.0.0 (uvicorn) with no setting to change it, so both are rewritten before it starts."""
    import grpc.aio._server as aio_server
    import uvicorn

    add_port = aio_server.Server.add_insecure_port

    def loopback_port(self, address):
        return add_port(self, address.replace("[::]", "127.0.0.1").replace("0.0.0.0",
                                                                             "127.0.0.1"))

    aio_server.Server.add_insecure_port = loopback_port
    config = uvicorn.Config

    class LoopbackConfig(config):
        def __init__(self, *a, **kw):
            kw["host"] = "127.0.0.1"
            super().__init__(*a, **kw)

    uvicorn.Config = LoopbackConfig

    import joblib
    import kserve
    from kserve import InferOutput, InferRequest, InferResponse

    class Digits(kserve.Model):
        def __init__(self, name: str, path: str):
            super().__init__(name)
            self.model = joblib.load(path)
            self.ready = True

        def predict(self, payload: InferRequest, headers=None) -> InferResponse:
            p = self.model.predict_proba(payload.inputs[0].as_numpy())
            output = InferOutput(name="output", shape=list(p.shape), datatype="FP64")
            # Raw in, raw out (KServe's own rule for gRPC): the data as raw bytes.
            output.set_data_from_numpy(p, binary_data=payload.use_binary_outputs)
            return InferResponse(response_id=payload.id, model_name=self.name,
                                 infer_outputs=[output],
                                 use_binary_outputs=payload.use_binary_outputs)

    kserve.ModelServer(grpc_port=args.grpc_port, http_port=args.http_port).start(
        [Digits(MODEL, args.model)])
    return 0


def wait_model_ready(port: int, proc, timeout: float) -> None:
    import grpc

    from jitnet.inference import open_inference_grpc_pb2 as oip

    request = oip.ModelReadyRequest(name=MODEL).SerializeToString()
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(MODEL_READY)
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.proc.returncode}; see {proc.log}")
            try:
                if oip.ModelReadyResponse.FromString(call(request, timeout=1)).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"model not ready on port {port} after {timeout} s; see {proc.log}")


def check_loopback_only(serve, pid: int, name: str) -> None:
    """Every listening socket of the server's process tree is on loopback (gRPC's listener
    for 127.0.0.1 may show as the IPv4-mapped ::ffff:127.0.0.1)."""
    import ipaddress

    import psutil

    for one in serve._tree(pid):
        try:
            connections = psutil.Process(one).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for c in connections:
            address = ipaddress.ip_address(c.laddr.ip.split("%")[0])
            address = getattr(address, "ipv4_mapped", None) or address
            if c.status == psutil.CONN_LISTEN and not address.is_loopback:
                raise RuntimeError(f"{name} listens on {c.laddr.ip}:{c.laddr.port}")


# ---------------------------------------------------------------------------------------------
# The driver


def run(args) -> dict:
    pinned = {serve.SERVER_CORE, serve.CLIENT_CORE} <= common.MACHINE_CORES
    if pinned:
        os.sched_setaffinity(0, {serve.CLIENT_CORE})
    else:
        print("warning: fewer than 2 cores; nothing is pinned", file=sys.stderr)
    venvs = {name: ensure_venv(args.venvs, name) for name in PEERS}
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="jitnet-peers-"))
    # jitnet's numba cache stays where the installed package keeps it: warm after a first run.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results = {"pinned": pinned, "in_flight": args.in_flight, "seconds": args.seconds,
               "rounds": args.rounds}
    procs = []
    try:
        return _run_in(serve, workdir, env, venvs, procs, results, args)
    finally:
        for proc in procs:
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _run_in(serve, workdir, env, venvs, procs, results, args) -> dict:
    import grpc
    import numpy as np

    from jitnet.service.config import Limits
    from jitnet.v1 import jitnet_pb2 as pb

    clf, x = train_model(workdir)
    print("starting the servers (jitnet compiles its kernels: about a minute cold)", flush=True)
    jitnet, jitnet_port = serve.start_jitnet(env, workdir, 8, "jitnet")
    procs.append(jitnet)
    peers = {}
    for name, settings, model_settings in (
            ("MLServer default", {}, {}),
            ("MLServer inproc", {"parallel_workers": 0}, {}),
            ("MLServer batching", {"parallel_workers": 0},
             {"max_batch_size": 32, "max_batch_time": 0.002})):
        proc, port = start_mlserver(serve, venvs["mlserver"], workdir, env, name, settings,
                                    model_settings)
        procs.append(proc)
        peers[name] = (proc, port)
    proc, port = start_kserve(serve, venvs["kserve"], workdir, env)
    procs.append(proc)
    peers["KServe"] = (proc, port)

    serve._wait_serving(jitnet_port, jitnet.proc, 600.0)
    create_in_jitnet(f"127.0.0.1:{jitnet_port}", clf)
    requests = {}
    for rows in ROWS:
        data = x[:rows]
        requests[rows] = {"v2": infer_request(data), "v1": pb.PredictRequest(
            model_id=MODEL, inputs=pb.Tensor(shape=list(data.shape), raw=data.astype(
                "<f8").tobytes())).SerializeToString()}
        for kind, body in requests[rows].items():
            (workdir / f"{kind}-{rows}.request").write_bytes(body)

    # The echo answers each ModelInfer request with the bytes jitnet answered for it.
    canned = {}
    options = [("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{jitnet_port}", options=options) as channel:
        # jitnet measured on the model's specialised kernels, which a model that is only
        # predicted gets after --specialise-after-predicts
        predict = channel.unary_unary(PREDICT)
        common.wait_specialised(jitnet.log, ("64-64-10",),
                                lambda: [predict(requests[1]["v1"], timeout=30)
                                         for _ in range(100)],
                                lambda: jitnet.proc.poll() is None)
        for rows in ROWS:
            canned[requests[rows]["v2"]] = channel.unary_unary(MODEL_INFER)(
                requests[rows]["v2"], timeout=30)
    import pickle

    (workdir / "canned.pickle").write_bytes(pickle.dumps(canned))
    limits = Limits()
    echo, echo_port = serve.start_echo(env, workdir, 8, workdir / "canned.pickle",
                                       limits.max_concurrent_calls, limits.max_message_bytes)
    procs.append(echo)
    serve._wait_port(echo_port, echo.proc)

    servers = {"jitnet V2": (jitnet, jitnet_port, "v2", MODEL_INFER),
               "jitnet v1": (jitnet, jitnet_port, "v1", serve.PREDICT),
               "echo": (echo, echo_port, "v2", MODEL_INFER)}
    for name, (proc, port) in peers.items():
        wait_model_ready(port, proc, 600.0)
        servers[name] = (proc, port, "v2", MODEL_INFER)

    # Same probabilities from every server first (the echo's are jitnet's).
    expected = {rows: clf.predict_proba(x[:rows]) for rows in ROWS}
    results["agreement"] = {}
    for name, (proc, port, kind, method) in servers.items():
        check_loopback_only(serve, proc.pid, name)
        if kind != "v2":
            continue
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            worst = 0.0
            for rows in ROWS:
                try:
                    reply = channel.unary_unary(method)(requests[rows]["v2"], timeout=60)
                except grpc.RpcError as exc:
                    raise RuntimeError(f"{name}: {exc.code().name} {exc.details()}; its log "
                                       f"ends:\n{proc.log.read_text()[-3000:]}") from None
                got = probabilities(reply)
                assert got.shape == expected[rows].shape, (name, got.shape)
                worst = max(worst, float(np.max(np.abs(got - expected[rows]))))
        assert worst < 1e-9, f"{name} answers other probabilities (max difference {worst:g})"
        results["agreement"][name] = worst
        print(f"  {name}: probabilities agree with predict_proba (max |difference| "
              f"{worst:.1e})", flush=True)

    results["cases"] = {}
    for rows in ROWS:
        runs = {name: [] for name in servers}
        for r in range(args.rounds):
            order = SERVERS[r % len(SERVERS):] + SERVERS[:r % len(SERVERS)]
            for name in order:
                proc, port, kind, method = servers[name]
                runs[name].append(serve.run_client(
                    env, f"127.0.0.1:{port}", workdir / f"{kind}-{rows}.request", proc.pid,
                    args.in_flight, args.seconds, args.warmup, method=method))
                last = runs[name][-1]
                print(f"  {rows} row(s), round {r + 1}: {name:18s} {last['qps']:8,.0f} QPS  "
                      f"p50 {last['p50']:.2f} ms  p99 {last['p99']:.2f} ms  errors "
                      f"{last['errors']}", flush=True)
        results["cases"][str(rows)] = {name: serve._summarise(v) for name, v in runs.items()}
    return results


# ---------------------------------------------------------------------------------------------
# The report


def _us(r: dict) -> float:
    """Server CPU per completed call, in microseconds."""
    return 1e6 * r["server_cpu"] / r["qps"] if r["qps"] else float("nan")


def section(results: dict) -> str:
    cases = results["cases"]
    lines = [
        SECTION,
        "",
        f"`python benchmarks/peers.py{' --quick' if results['quick'] else ''}`, "
        f"{results['written']} UTC. Every server pinned to core 0 (with the processes it "
        "starts), the closed-loop load client on core 1, "
        f"{results['in_flight']} calls in flight, {results['rounds']} round(s) of "
        f"{results['seconds']:g} s per server and case, medians over rounds; load average "
        f"{results['load'][0]:.2f} before, {results['load'][1]:.2f} after"
        f"{'' if results['pinned'] else '; NOT pinned (fewer than 2 cores)'}. Every server got "
        "the same ModelInfer request bytes (FP64, raw_input_contents) for the digits MLP "
        "(scikit-learn's MLPClassifier 64-64-10, relu, softmax; the same weights in jitnet), and "
        "answered the same probabilities as predict_proba first (max |difference|: "
        + ", ".join(f"{k} {v:.0e}" for k, v in results["agreement"].items()) + "). "
        "*CPU us/call*: the server's process tree's CPU time per completed call; "
        "*calls/CPU-s*: its inverse, the QPS one fully used core would give. Servers and "
        "settings: benchmarks/peers.py's docstring.",
        "",
    ]
    for rows in map(str, ROWS):
        case = cases[rows]
        base = case["jitnet V2"]
        lines += [f"**{rows} row{'s' if rows != '1' else ''} per call**", "",
                  "| server | QPS | p50 ms | p99 ms | errors | CPU us/call | calls/CPU-s | "
                  "jitnet V2 / this, QPS |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name in SERVERS:
            r = case[name]
            us = _us(r)
            lines.append(f"| {name} | {r['qps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                         f"{r['errors']} | {us:,.0f} | {1e6 / us:,.0f} | "
                         f"{base['qps'] / r['qps']:.2f} |")
        lines.append("")
    one, hundred = cases["1"], cases["100"]
    best1 = max(PEER_SERVERS, key=lambda n: one[n]["qps"])
    best100 = max(PEER_SERVERS, key=lambda n: hundred[n]["qps"])
    v2v1 = one["jitnet V2"]["qps"] / one["jitnet v1"]["qps"]
    p1 = one["jitnet V2"]["qps"] / one[best1]["qps"]
    p100 = hundred["jitnet V2"]["qps"] / hundred[best100]["qps"]

    def ok(good):
        return "met" if good else "**not met**"

    lines += [
        "| target | measured | result |", "|---|---|---|",
        f"| ModelInfer >= {TARGETS['v2_vs_v1']}x jitnet.v1 Predict QPS, 1 row | {v2v1:.2f}x "
        f"({one['jitnet V2']['qps']:,.0f} vs {one['jitnet v1']['qps']:,.0f}) | "
        f"{ok(v2v1 >= TARGETS['v2_vs_v1'])} |",
        f"| jitnet >= {TARGETS['peer_1']:g}x the best peer's QPS per core, 1 row | {p1:.2f}x "
        f"(best peer: {best1}, {one[best1]['qps']:,.0f}) | {ok(p1 >= TARGETS['peer_1'])} |",
        f"| jitnet >= {TARGETS['peer_100']:g}x the best peer's QPS per core, 100 rows | "
        f"{p100:.2f}x (best peer: {best100}, {hundred[best100]['qps']:,.0f}) | "
        f"{ok(p100 >= TARGETS['peer_100'])} |",
        f"| (ceiling: the bare grpcio echo / the best peer, 1 row and 100 rows) | "
        f"{one['echo']['qps'] / one[best1]['qps']:.2f}x and "
        f"{hundred['echo']['qps'] / hundred[best100]['qps']:.2f}x | what any server on "
        "grpcio's sync server could reach in this run |",
        "",
        f"By server CPU per call (steadier than QPS on a shared machine), jitnet V2 costs "
        f"{_us(one['jitnet V2']):,.0f} us per 1-row call and {_us(hundred['jitnet V2']):,.0f} "
        f"us per 100-row call, of which the echo's grpcio floor is {_us(one['echo']):,.0f} and "
        f"{_us(hundred['echo']):,.0f} us; the best peer costs {_us(one[best1]):,.0f} and "
        f"{_us(hundred[best100]):,.0f} us: "
        f"{_us(one[best1]) / _us(one['jitnet V2']):.2f}x and "
        f"{_us(hundred[best100]) / _us(hundred['jitnet V2']):.2f}x jitnet's.",
        "",
    ]
    cpu = [c[n]["server_cpu"] for c in (one, hundred) for n in SERVERS]
    if min(cpu) < 0.8:
        lines += [f"**Caution:** the pinned servers used {min(cpu):.2f}-{max(cpu):.2f} of their "
                  "core (about 1.0 on a quiet machine for a server that is the bottleneck): "
                  "something else shared the machine. Compare calls/CPU-s, which moves less; "
                  "re-run on a quiet machine for the QPS ratios.", ""]
    return "\n".join(lines + [NOTES])


# Read off the runs of 2026-12-01 (a shared machine, load average 6-24): not re-measured.
NOTES = """\
Notes (2026-12-01, smoke runs on a shared machine; the integrator re-measures on a quiet one):

- jitnet's V2 ModelInfer of one row runs the same fast path as a one-sample jitnet.v1 Predict
  (service/protocols/fastpath.py), so the two are within run-to-run noise of each other; the V2
  request is a few bytes longer (the datatype and input name).
- Every peer's own cost is far above grpcio's: MLServer spends 1.5-3.7 ms of CPU per call
  (its default, one parallel inference worker, adds a process hop; in-process inference is its
  fastest setting here; adaptive batching did not pay off with 32 calls in flight on one core),
  KServe about 1.2 ms (a grpc.aio server with two interceptors and its InferRequest /
  InferResponse objects around predict_proba). jitnet spends 20-180 us above the bare echo.
- So the ratios against the best peer are bounded by grpcio itself: the ceiling row above is
  what a server answering canned bytes from grpcio's sync server reaches against that peer in
  the same run. With 100 rows per call that ceiling was 3.2-3.4x in these runs, under the 4x
  target: no handler on grpcio's sync server meets it here, whatever it costs itself. The rest
  of jitnet's 100-row cost is the kernel (100 rows of 64-64-10) and copies of the 51 KiB
  request and 8 KiB reply, the same as jitnet.v1 Predict's."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_kserve":
        parser = argparse.ArgumentParser(prog="peers.py _kserve")
        parser.add_argument("--grpc-port", type=int, required=True)
        parser.add_argument("--http-port", type=int, required=True)
        parser.add_argument("--model", required=True)
        return kserve_main(parser.parse_args(argv[1:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s per case")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--venvs", type=pathlib.Path, default=DEFAULT_VENVS,
                        help=f"where the peers' environments live (default {DEFAULT_VENVS})")
    parser.add_argument("--no-write", action="store_true",
                        help=f"print the section instead of writing {DOCS.relative_to(ROOT)}")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--from-json", metavar="FILE",
                        help="measure nothing: render the section again from a --json file")
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(pathlib.Path(args.from_json).read_text())
    else:
        args.rounds = 1 if args.quick else 3
        args.seconds = 2.0 if args.quick else 5.0
        args.warmup = 0.5 if args.quick else 1.0
        load_before = os.getloadavg()[0]
        results = run(args)
        results["load"] = (load_before, os.getloadavg()[0])
        results["quick"] = args.quick
        results["written"] = f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M}"
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    text = section(results)
    if args.no_write:
        print(text)
    else:
        common.write_section(text, SECTION, DOCS)
        print(f"wrote the {SECTION} section of {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
