"""`--workers N`: N server processes on one port under a parent (service/server/workers.py).

SO_REUSEPORT hands out connections, not calls, so a test reaches a given worker by opening
fresh channels until one's health Check names that worker's pid (trailing metadata).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jitnet.service.config import Config, available_cores
from jitnet.service.protocols.health import WORKER_PID
from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc
from tests.support.rpc import (
    SERVING,
    TIMEOUT,
    XOR_X,
    XOR_Y,
    ServerProcess,
    array,
    create,
    long_train_request,
    tensor,
    wait_for,
)


@pytest.fixture
def workers(tmp_path, warmed):
    """workers(n, *flags) -> the parent's ServerProcess; the parent and every worker it
    started are killed (by pid) at the end."""
    started: list[ServerProcess] = []

    def start(n: int = 2, *flags: str, data_dir=None) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / "data", "--workers", str(n),
                               "--grace-seconds", "3", *flags)
        started.append(server)
        return server

    yield start
    for server in started:
        try:
            children = psutil.Process(server.proc.pid).children()
        except psutil.NoSuchProcess:
            children = []
        server.close()
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


def check(channel) -> tuple[int, int]:
    """(health status, pid of the worker that answered)."""
    reply, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
        health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status, int(dict(call.trailing_metadata())[WORKER_PID])


def fresh_channel(port: int) -> grpc.Channel:
    # A channel of its own subchannel pool: a new connection, not one shared with others.
    return grpc.insecure_channel(f"127.0.0.1:{port}",
                                 options=[("grpc.use_local_subchannel_pool", 1)])


def answering(port: int, tries: int = 40) -> dict[int, grpc.Channel]:
    """Open channels by the pid of the SERVING worker each reached (one channel per pid)."""
    found: dict[int, grpc.Channel] = {}
    for _ in range(tries):
        channel = fresh_channel(port)
        try:
            status, pid = check(channel)
        except grpc.RpcError:
            status, pid = None, None
        if status == SERVING and pid not in found:
            found[pid] = channel
        else:
            channel.close()
    return found


def worker_pids(server: ServerProcess) -> set[int]:
    return {child.pid for child in psutil.Process(server.proc.pid).children()}


def reach_all(server: ServerProcess, n: int, timeout: float = 120) -> dict[int, grpc.Channel]:
    """A channel to each of the n workers, once every one of them is SERVING."""
    def every_worker():
        found = answering(server.port)
        if len(found) == n and set(found) == worker_pids(server):
            return found
        for channel in found.values():
            channel.close()
        return None
    return wait_for(every_worker, timeout, 0.2, f"{n} workers SERVING")


def test_workers_share_the_port_and_the_models(workers):
    server = workers(2)
    channels = reach_all(server, 2)  # calls spread over both: each answered some
    (pid_a, channel_a), (pid_b, channel_b) = channels.items()
    assert pid_a != pid_b and server.proc.pid not in channels
    stub_a, stub_b = pb_grpc.NetworkServiceStub(channel_a), pb_grpc.NetworkServiceStub(channel_b)

    # Trained through one worker, predicted by the other (they share the store).
    create(stub_a, "xor", sizes=(2, 4, 1))
    progress = list(stub_a.Train(pb.TrainRequest(
        model_id="xor", inputs=tensor(XOR_X, raw=True), targets=tensor(XOR_Y, raw=True),
        epochs=300, learning_rate=0.5), timeout=TIMEOUT))
    version = progress[-1].model_version
    request = pb.PredictRequest(model_id="xor", inputs=tensor(XOR_X, raw=True))
    on_a = stub_a.Predict(request, timeout=TIMEOUT)
    on_b = wait_for(lambda: (lambda r: r if r.model_version == version else None)(
        stub_b.Predict(request, timeout=TIMEOUT)), 10, 0.05, "the other worker to see it")
    assert on_a.model_version == version
    np.testing.assert_array_equal(array(on_b.outputs), array(on_a.outputs))
    for channel in channels.values():
        channel.close()


def test_a_killed_worker_is_replaced_and_calls_keep_succeeding(workers):
    server = workers(2)
    channels = reach_all(server, 2)
    stub = pb_grpc.NetworkServiceStub(next(iter(channels.values())))
    create(stub, "m", sizes=(2, 3, 1))
    victim = next(iter(channels))
    for channel in channels.values():
        channel.close()
    os.kill(victim, signal.SIGKILL)
    # Calls on the killed worker's connections fail, as with any crash; from the moment it is
    # gone (its socket closed, the parent has reaped it) every new call reaches a live worker.
    wait_for(lambda: victim not in worker_pids(server), 30, 0.05, "the parent to reap it")

    calls = failures = 0
    deadline = time.monotonic() + 120
    replaced = None
    while time.monotonic() < deadline:
        channel = fresh_channel(server.port)  # a new connection each time: any worker
        try:
            reply = pb_grpc.NetworkServiceStub(channel).Predict(
                pb.PredictRequest(model_id="m", inputs=tensor([[0.0, 1.0]], raw=True)),
                timeout=TIMEOUT)
            assert array(reply.outputs).shape == (1, 1)
            calls += 1
        except grpc.RpcError as exc:
            failures += 1
            print("failed:", exc.code(), exc.details())
        finally:
            channel.close()
        pids = worker_pids(server)
        if victim not in pids and len(pids) == 2 and replaced is None:
            replaced = (pids - set(channels)).pop()
        if replaced is not None and replaced in answering(server.port, 10):
            break
    assert replaced is not None, "no new worker was started"
    assert replaced in answering(server.port), "the new worker does not answer"
    assert failures == 0 and calls > 0
    assert "worker" in server.log and "killed by SIGKILL" in server.log


def test_sigterm_drains_every_worker(workers):
    server = workers(2)
    channels = reach_all(server, 2)
    trains = []
    for k, channel in enumerate(channels.values()):  # a long Train on each worker
        stub = pb_grpc.NetworkServiceStub(channel)
        create(stub, f"long{k}", sizes=(2, 3, 1))
        stream = stub.Train(long_train_request(f"long{k}", report_every=5), timeout=60)
        next(stream)  # running
        trains.append(stream)
    pids = worker_pids(server)
    began = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait(3 + 10) == 0  # the grace (3 s) and the exit margin
    assert time.monotonic() - began < 3 + 10
    for stream in trains:  # cut at the grace: the stream ends with a status, not a hang
        with pytest.raises(grpc.RpcError):
            for _ in stream:
                pass
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                   for pid in pids)
    log = server.log
    assert log.count("SIGTERM: draining") == 3 and log.count("stopped") >= 3


def test_workers_do_not_outlive_a_killed_parent(workers):
    server = workers(2)
    reach_all(server, 2)
    pids = worker_pids(server)
    server.kill()  # SIGKILL: the parent cannot pass anything on

    def gone():
        return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                       for pid in pids)
    wait_for(gone, 30, 0.1, "the workers to exit after their parent")


@pytest.mark.slow
def test_the_parent_exits_non_zero_when_workers_keep_dying(workers, tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("models cannot live here")
    server = workers(2, data_dir=not_a_directory)
    assert server.wait(180) == 1
    assert "workers keep dying" in server.log


def test_workers_do_not_share_a_port_a_single_server_holds(spawn, tmp_path):
    single = spawn()
    done = subprocess.run(
        [sys.executable, "-m", "jitnet.service.server", "--host", "127.0.0.1", "--port",
         str(single.port), "--data-dir", str(tmp_path / "other"), "--workers", "2"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "cannot start" in done.stderr and str(single.port) in done.stderr
    assert check(single.channel)[0] == SERVING  # the single server goes on alone


def test_auto_is_the_cores_available_and_threads_kept_their_meaning():
    assert Config.from_env({"JITNET_WORKERS": "auto"}).workers == available_cores() >= 1
    assert available_cores() <= len(os.sched_getaffinity(0))
    config = Config.from_env({"JITNET_WORKERS": "3", "JITNET_THREADS": "5"})
    assert (config.workers, config.threads) == (3, 5)
    # What the parent hands its workers reads back as the same settings.
    assert Config.from_env(config.to_env()) == config
