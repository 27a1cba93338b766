"""Helpers for the container tests: the Docker engine (started here when none runs), the docker
and compose clients, containers and compose projects that are always removed again.

Everything a test makes carries the label LABEL=TOKEN (compose projects: their own project
label), and is removed by id through those labels in the fixtures' finalizers, also after a
failure. The images built from the repository (jitnet, jitnet-loadtest) and the stand-in base
images stay, so a rerun builds from Docker's cache.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import subprocess
import time

from ..support.waiting import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
# The test's only addition to docker-compose.yml: the project's network has no route out.
INTERNAL_OVERRIDE = HERE / "compose.internal.yml"
PROBE = (HERE / "probe.py").read_text()

SKIP_VARIABLE = "JITNET_SKIP_CONTAINER_TESTS"
IMAGE = "jitnet"
LOADTEST_IMAGE = "jitnet-loadtest"
BASE_IMAGES = ("python:3.11-slim-bookworm", "nginx:1.22.1")
UID = "10001"

LABEL = "org.jitnet.test"
TOKEN = f"{os.getpid()}-{secrets.token_hex(3)}"
PREFIX = f"jitnetct{os.getpid()}"  # container, network and compose project names

# "what: value" lines printed in pytest's terminal summary (conftest.py).
FIGURES: list[str] = []


def figure(line: str) -> None:
    FIGURES.append(line)


def skip_requested() -> bool:
    return os.environ.get(SKIP_VARIABLE, "") not in ("", "0")


def docker_client() -> str:
    """A client that builds with BuildKit: docker with buildx, or Debian's 20.10 docker (the
    newer `docker` some machines put first on PATH demands buildx). Same rule as
    deploy/build-images.sh; DOCKER overrides."""
    if os.environ.get("DOCKER"):
        return os.environ["DOCKER"]
    if shutil.which("docker") and subprocess.run(
            ["docker", "buildx", "version"], capture_output=True, timeout=30).returncode == 0:
        return "docker"
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


def compose_command(docker: str) -> list[str] | None:
    """Compose v2 (`docker compose`) where the client has it, else docker-compose (1.29 here)."""
    for candidate in ([docker, "compose"], ["docker", "compose"]):
        if shutil.which(candidate[0]) and subprocess.run(
                [*candidate, "version"], capture_output=True, timeout=30).returncode == 0:
            return candidate
    found = shutil.which("docker-compose")
    return [found] if found else None


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclasses.dataclass
class Engine:
    docker: str
    compose: list[str]
    env: dict
    dockerd: subprocess.Popen | None = None  # when this session started the engine
    dockerd_log: pathlib.Path | None = None
    forward_policy: str | None = None  # the iptables FORWARD policy before we started dockerd

    def run(self, *args: str, timeout: float = 120, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([self.docker, *args], capture_output=True, text=True,
                                timeout=timeout, input=input, env=self.env, cwd=ROOT,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n"
                                 f"{_tail(result.stdout)}\n{_tail(result.stderr)}")
        return result

    def inspect(self, *ids: str, kind: str = "container") -> list[dict]:
        return json.loads(self.run(kind, "inspect", *ids).stdout)

    def ids(self, kind: str, *filters: str) -> list[str]:
        args = {"container": ["ps", "-aq"], "network": ["network", "ls", "-q"],
                "volume": ["volume", "ls", "-q"]}[kind]
        for f in filters:
            args += ["--filter", f]
        return self.run(*args).stdout.split()

    def remove_labelled(self, *filters: str) -> None:
        """Every container, then network and volume matching the filters, by id."""
        containers = self.ids("container", *filters)
        if containers:
            self.run("rm", "-f", "-v", *containers, check=False, timeout=120)
        for kind in ("network", "volume"):
            found = self.ids(kind, *filters)
            if found:
                self.run(kind, "rm", *found, check=False)

    def logs(self, container: str, timestamps: bool = False) -> str:
        args = ["logs", *(["-t"] if timestamps else []), container]
        result = self.run(*args, check=False)
        return result.stdout + result.stderr

    def client(self, network: str, *command: str, probe: bool = False, timeout: float = 120,
               check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        """A throwaway client container of the jitnet image on `network`, removed on exit.
        With `probe`, runs tests/container/probe.py (sent on stdin) with `command` as args."""
        args = ["run", "--rm", "-i", "--label", f"{LABEL}={TOKEN}", "--network", network]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        args.append(IMAGE)
        args += ["python", "-", *command] if probe else list(command)
        return self.run(*args, timeout=timeout, check=check, input=PROBE if probe else "")


def probe_result(completed: subprocess.CompletedProcess) -> dict:
    """The JSON object on probe.py's last line."""
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    assert lines, f"probe printed nothing:\n{completed.stderr}"
    return json.loads(lines[-1])


def engine_answers(docker: str, env: dict) -> bool:
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=30,
                              env=env).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _forward_policy() -> str | None:
    iptables = shutil.which("iptables") or "/usr/sbin/iptables"
    try:
        out = subprocess.run([iptables, "-S", "FORWARD"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"^-P FORWARD (\w+)$", out, re.M)
    return match.group(1) if match else None


def start_engine(log_dir: pathlib.Path) -> Engine:
    """The Docker engine: the one that answers, or a dockerd started here (by its pid)."""
    docker = docker_client()
    compose = compose_command(docker)
    env = dict(os.environ)
    if compose is None:
        raise AssertionError("no docker-compose: apt-get install -y --no-install-recommends "
                             f"docker-compose (or set {SKIP_VARIABLE}=1 to skip these tests)")
    engine = Engine(docker, compose, env)
    if engine_answers(docker, env):
        return engine
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if os.access("/usr/sbin/dockerd",
                                                                             os.X_OK) else None)
    if dockerd is None:
        raise AssertionError("no Docker engine runs and dockerd is not installed: apt-get install "
                             f"-y docker.io (or set {SKIP_VARIABLE}=1 to skip these tests)")
    engine.forward_policy = _forward_policy()
    engine.dockerd_log = log_dir / "dockerd.log"
    with open(engine.dockerd_log, "wb") as log:
        engine.dockerd = subprocess.Popen([dockerd], stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not engine_answers(docker, env):
        if engine.dockerd.poll() is not None:
            if engine_answers(docker, env):  # another dockerd won the race: use that one
                engine.dockerd = None
                break
            raise AssertionError(f"dockerd exited {engine.dockerd.returncode}:\n"
                                 f"{_tail(engine.dockerd_log.read_text(errors='replace'))}")
        if time.monotonic() > deadline:
            stop_engine(engine)
            raise AssertionError("dockerd did not answer within 60 s:\n"
                                 f"{_tail(engine.dockerd_log.read_text(errors='replace'))}")
        time.sleep(0.2)
    return engine


def stop_engine(engine: Engine) -> None:
    """Stops the dockerd this session started (SIGTERM to its pid; it stops its containerd),
    and puts back the iptables FORWARD policy that dockerd turned to DROP."""
    proc = engine.dockerd
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
    engine.dockerd = None
    if engine.forward_policy and _forward_policy() not in (None, engine.forward_policy):
        subprocess.run([shutil.which("iptables") or "/usr/sbin/iptables", "-P", "FORWARD",
                        engine.forward_policy], capture_output=True, timeout=30)


def timestamp(text: str) -> dt.datetime:
    """Docker's RFC 3339 time with nanoseconds, to a datetime (microseconds)."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    assert match, f"not a docker timestamp: {text!r}"
    fraction = (match.group(2) or "0")[:6].ljust(6, "0")
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return dt.datetime.fromisoformat(f"{match.group(1)}.{fraction}{zone}")


def seconds_to_serving(engine: Engine, container: str, timeout: float = 120) -> float:
    """From the container's start to the server's `SERVING` log line, by Docker's timestamps."""
    def serving_line():
        state = engine.inspect(container)[0]["State"]
        if not state["Running"] and state["Status"] != "created":
            raise AssertionError(f"{container} stopped ({state['Status']}, exit "
                                 f"{state['ExitCode']}):\n{_tail(engine.logs(container))}")
        for line in engine.logs(container, timestamps=True).splitlines():
            if line.rstrip().endswith(" SERVING"):
                return line
        return None
    line = wait_for(serving_line, timeout, what=f"{container} to log SERVING", interval=0.2)
    started = timestamp(engine.inspect(container)[0]["State"]["StartedAt"])
    return (timestamp(line.split(" ", 1)[0]) - started).total_seconds()


class ComposeProject:
    """docker-compose.yml plus the internal-network override, as project `name`."""

    def __init__(self, engine: Engine, name: str):
        self.engine = engine
        self.name = name
        self.base = [*engine.compose, "-p", name, "-f", str(COMPOSE_FILE),
                     "-f", str(INTERNAL_OVERRIDE)]

    def __call__(self, *args: str, timeout: float = 300, check: bool = True
                 ) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.base, *args], capture_output=True, text=True,
                                timeout=timeout, env=self.engine.env, cwd=ROOT,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} exited {result.returncode}:\n"
                                 f"{_tail(result.stdout)}\n{_tail(result.stderr)}")
        return result

    @property
    def label(self) -> str:
        return f"label=com.docker.compose.project={self.name}"

    def containers(self, service: str) -> list[str]:
        """Ids of the service's containers, running or not (not `run` containers)."""
        return self.engine.ids("container", self.label,
                               f"label=com.docker.compose.service={service}",
                               "label=com.docker.compose.oneoff=False")

    def network(self) -> str:
        ids = self.engine.ids("network", self.label)
        assert len(ids) == 1, f"expected one network of project {self.name}, found {ids}"
        return self.engine.inspect(ids[0], kind="network")[0]["Name"]

    def wait_healthy(self, replicas: int = 2, timeout: float = 120) -> list[str]:
        def healthy():
            ids = self.containers("jitnet")
            if len(ids) != replicas:
                return None
            states = [c["State"] for c in self.engine.inspect(*ids)]
            for state in states:
                if state.get("Health", {}).get("Status") == "unhealthy" or not state["Running"]:
                    raise AssertionError(f"a replica is {state.get('Health', {}).get('Status')}"
                                         f" / {state['Status']}:\n{json.dumps(state)[:3000]}")
            return ids if all(s["Health"]["Status"] == "healthy" for s in states) else None
        return wait_for(healthy, timeout, what=f"{replicas} healthy jitnet replicas",
                        interval=0.5)

    def remove(self) -> None:
        """down -v, then anything of the project's still there (by label, by id)."""
        self("down", "-v", "--remove-orphans", "-t", "25", timeout=300, check=False)
        self.engine.remove_labelled(self.label)
