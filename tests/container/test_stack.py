"""The compose stack for real: docker-compose.yml with two jitnet replicas healthy through the
image's HEALTHCHECK, nginx in front, the named volume, and the `load` profile. Only the
project's network is changed (compose.internal.yml makes it internal: no route out, nothing
published); every call comes from a client container on that network, by service name.

Which replica answered a call through nginx is nginx's `x-jitnet-upstream` response header
(deploy/nginx.conf), matched against the replicas' addresses on the network.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time

import numpy as np
import pytest

from ..support.waiting import wait_for
from . import docker_support as ds

pytestmark = pytest.mark.slow

NGINX = "nginx:50051"
TARGET = {"JITNET_TARGET": NGINX}
STOP_GRACE = 20.0  # stop_grace_period in docker-compose.yml


@pytest.fixture(scope="module")
def stack(engine, images):
    project = ds.ComposeProject(engine, ds.PREFIX)
    try:
        began = time.monotonic()
        project("up", "-d")  # returns once nginx started, after the replicas turned healthy
        project.wait_healthy()
        ds.figure(f"compose up -d to two healthy replicas and nginx: "
                  f"{time.monotonic() - began:.1f} s")
        yield project
    finally:
        project.remove()


def _addresses(engine, project, network: str) -> dict[str, str]:
    """replica container id -> its host:port on the project's network."""
    out = {}
    for container in engine.inspect(*project.containers("jitnet")):
        ip = container["NetworkSettings"]["Networks"][network]["IPAddress"]
        out[container["Id"]] = f"{ip}:50051"
    return out


def _cli(engine, network, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`jitnet ARGS` in a client container on the compose network, against nginx."""
    return engine.client(network, "jitnet", *args, env=TARGET, timeout=timeout)


def _outputs(hex_text: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hex_text), "<f8")


def _restore(engine, project) -> None:
    """Both replicas up and healthy, and nginx restarted so that it resolves them again (as
    docs/deploy.md tells after replicas were recreated)."""
    project("up", "-d")
    project.wait_healthy()
    project("restart", "nginx")
    network = project.network()
    wait_for(lambda: engine.client(network, "jitnet", "health", env=TARGET, check=False
                                   ).returncode == 0, 60, what="SERVING through nginx",
             interval=0.5)


def test_two_replicas_turn_healthy_behind_nginx_on_an_internal_network(engine, stack):
    replicas = stack.wait_healthy()
    assert len(replicas) == 2
    for container in engine.inspect(*replicas):
        assert container["Config"]["User"] == f"{ds.UID}:{ds.UID}"
        assert container["State"]["Health"]["Status"] == "healthy"
        assert container["HostConfig"]["Init"] is True
        assert container["Config"]["StopTimeout"] == STOP_GRACE
        assert not container["HostConfig"]["PortBindings"], "replicas publish nothing"
    (nginx,) = engine.inspect(*stack.containers("nginx"))
    assert nginx["State"]["Running"]
    # Nothing published beyond loopback, and on the internal network nothing at all.
    bindings = [b for ports in nginx["HostConfig"]["PortBindings"].values() for b in ports]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings
    assert not any(nginx["NetworkSettings"]["Ports"].get(p) for p in nginx["NetworkSettings"]
                   ["Ports"]), nginx["NetworkSettings"]["Ports"]

    network = stack.network()
    info = engine.inspect(network, kind="network")[0]
    assert info["Internal"] is True and info["Driver"] == "bridge"
    # No route out: the kernel drops whatever enters from the project's bridge for an address
    # outside its subnet (Docker's rule for an internal network), so containers reach only
    # each other (and the host's own addresses).
    subnet = info["IPAM"]["Config"][0]["Subnet"]
    bridge = info["Options"].get("com.docker.network.bridge.name") or f"br-{info['Id'][:12]}"
    rules = subprocess.run(["iptables", "-S", "DOCKER-ISOLATION-STAGE-1"], capture_output=True,
                           text=True, timeout=30).stdout
    assert f"! -d {subnet} -i {bridge} -j DROP" in rules, rules
    assert _cli(engine, network, "health").stdout.strip() == "SERVING"


def test_create_train_predict_through_nginx_both_replicas_answer_identically(engine, stack):
    network = stack.network()
    _cli(engine, network, "create", "--id", "xor", "--layers", "2,4,1", "--init", "uniform",
         "--seed", "0")
    trained = _cli(engine, network, "train", "xor", "--data", "xor", "--epochs", "5000",
                   "--learning-rate", "0.5")
    predicted = _cli(engine, network, "predict", "xor", "--data", "xor")
    print(trained.stdout[-500:], predicted.stdout, sep="\n")

    addresses = _addresses(engine, stack, network)
    result = ds.probe_result(engine.client(network, "identify", NGINX, "xor", "40",
                                           *addresses.values(), probe=True))
    versions = set(result["direct"].values())
    assert len(versions) == 1 and min(versions) > 1, result["direct"]
    calls = result["calls"]
    served = {}
    for call in calls:
        served[call["upstream"]] = served.get(call["upstream"], 0) + 1
    assert set(served) == set(addresses.values()), served  # each call answered by one replica
    assert min(served.values()) >= 10, served  # round-robin per call
    assert {c["version"] for c in calls} == versions
    assert len({c["outputs"] for c in calls}) == 1, "replicas disagree on the outputs"
    outputs = _outputs(calls[0]["outputs"])
    assert np.array_equal(np.round(outputs), [0.0, 1.0, 1.0, 0.0]), outputs  # learnt XOR


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def test_docker_stop_of_a_replica_under_predict_load_fails_no_predict(engine, stack):
    network = stack.network()
    _cli(engine, network, "create", "--id", "steady", "--layers", "2,4,1", "--seed", "1")
    victim = stack.containers("jitnet")[0]
    seconds, threads = 8, 4
    load = subprocess.Popen(
        [engine.docker, "run", "--rm", "-i", "--label", f"{ds.LABEL}={ds.TOKEN}",
         "--network", network, ds.IMAGE, "python", "-", "load", NGINX, "steady",
         str(seconds), str(threads)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ds.ROOT)
    try:
        load.stdin.write(ds.PROBE)
        load.stdin.close()
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_read_lines, args=(load.stdout, lines), daemon=True).start()
        first = lines.get(timeout=60)
        assert first and first.strip() == "ready", (first, load.stderr.read() if first is None
                                                    else "")
        time.sleep(1.5)  # calls flowing through nginx to both replicas
        began = time.monotonic()
        engine.run("stop", victim, timeout=60)
        stop_took = time.monotonic() - began
        load.wait(seconds + 60)
        out = []
        while (line := lines.get(timeout=10)) is not None:
            out.append(line)
        stderr = load.stderr.read()
    finally:
        if load.poll() is None:
            load.kill()  # the docker client we started; --rm removes its container
            load.wait(30)
    assert load.returncode == 0, stderr[-3000:]
    result = json.loads(out[-1])
    ds.figure(f"docker stop of a replica under Predict load: {stop_took:.2f} s, "
              f"{result['ok']} Predicts ok, {result['failed']} failed")

    state = engine.inspect(victim)[0]["State"]
    log = engine.logs(victim)
    assert not state["Running"] and state["ExitCode"] == 0 and not state["OOMKilled"], state
    assert stop_took < STOP_GRACE, "stopped by SIGKILL at the end of the grace, not by itself"
    assert "SIGTERM: draining" in log and re.search(r": stopped$", log, re.M), log[-2000:]

    assert result["failed"] == 0, result["errors"]
    assert result["ok"] > 100, result
    # Predicts went on after the stop, served by the other replica alone.
    assert all(n > 0 for n in result["ok_by_second"][4:seconds]), result["ok_by_second"]
    _restore(engine, stack)


def test_down_then_up_keeps_the_models_on_the_named_volume(engine, stack):
    network = stack.network()
    _cli(engine, network, "create", "--id", "kept", "--layers", "2,3,1", "--seed", "2")
    _cli(engine, network, "train", "kept", "--data", "xor", "--epochs", "200",
         "--learning-rate", "0.5")
    before = ds.probe_result(engine.client(network, "snapshot", NGINX, "kept", probe=True))

    stack("down")
    assert not stack.containers("jitnet") and not stack.containers("nginx")
    volumes = [v["Name"] for v in engine.inspect(*engine.ids("volume", stack.label),
                                                 kind="volume")]
    assert any(re.fullmatch(rf"{stack.name}_jitnet-data", v) for v in volumes), volumes

    began = time.monotonic()
    stack("up", "-d")
    stack.wait_healthy()
    ds.figure(f"compose up -d after down (warm): {time.monotonic() - began:.1f} s")
    network = stack.network()
    after = ds.probe_result(engine.client(network, "snapshot", NGINX, "kept", probe=True))
    assert after == before
    assert before["version"] > 1


def test_load_profile_locust_through_nginx_fails_nothing(engine, stack):
    """The image's default command: 10 users for 30 s against nginx:50051, exit code 1 on any
    failed call."""
    began = time.monotonic()
    run = stack("--profile", "load", "run", "--rm", "loadtest", timeout=300, check=False)
    took = time.monotonic() - began
    text = run.stdout + run.stderr
    summary = [line for line in text.splitlines()
               if re.match(r"\s*(Type|grpc|-{5}|Aggregated|Response time|#|\s*$)", line)
               or "|" in line]
    ds.figure(f"locust through nginx (compose profile load), {took:.0f} s:")
    for line in summary[-40:]:
        ds.figure("    " + line)
    assert run.returncode == 0, text[-4000:]
    aggregated = [line for line in text.splitlines() if line.strip().startswith("Aggregated")]
    assert aggregated, text[-4000:]
    # "Aggregated   12345   0(0.00%) | ..."
    requests, failures = re.search(r"Aggregated\s+(\d+)\s+(\d+)\(", aggregated[0]).groups()
    assert int(failures) == 0 and int(requests) > 1000, aggregated[0]
