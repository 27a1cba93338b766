"""The compose topology, run for real on loopback: two replicas on one data directory behind
Debian's nginx with deploy/nginx.conf (tests/support/topology.py), and `jitnet.client.Client`
through it.

Which replica answered a call is read from nginx's access log (`$upstream_addr`), never from the
API; each replica is also called directly.
"""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from jitnet.client import Client
from jitnet.client.errors import JitnetError
from tests.support.rpc import TIMEOUT, XOR
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

XOR_X, XOR_Y = XOR.inputs, XOR.targets


def test_both_replicas_serve_directly_and_through_nginx(stack):
    assert len({r.address for r in stack.replicas}) == 2
    for target in [r.address for r in stack.replicas] + [stack.target]:
        with Client(target, timeout=TIMEOUT) as client:
            assert client.health() == "SERVING", target


def test_nginx_balances_calls_over_both_replicas(stack):
    with Client(stack.target, timeout=TIMEOUT) as client:
        client.create_model([2, 4, 1], seed=3, model_id="balanced")
        mark = len(stack.nginx.entries())
        for _ in range(40):
            client.predict("balanced", XOR_X)
    stack.nginx.settled(mark + 40)
    served = stack.nginx.served("Predict", since=mark)
    addresses = {r.address for r in stack.replicas}
    assert set(served) == addresses, (served, stack.nginx.stderr)
    # Round-robin per request over one client connection: both get a fair share.
    assert min(served.values()) >= 15, served
    assert stack.nginx.failed("Predict", since=mark) == []
    # The model created through nginx is in the shared store, visible to each replica directly.
    for replica in stack.replicas:
        with Client(replica.address, timeout=TIMEOUT) as direct:
            assert direct.get_model("balanced").id == "balanced", replica.name


def test_a_model_trained_through_nginx_predicts_identically_on_every_replica(stack):
    with Client(stack.target, timeout=TIMEOUT) as client:
        client.create_model([2, 4, 1], hidden="tanh", seed=7, model_id="consistent")
        progress = list(client.train("consistent", XOR_X, XOR_Y, epochs=3000, learning_rate=0.5,
                                     report_every=1000, timeout=60))
        assert progress[-1].done and progress[-1].loss < 0.05, progress[-1]
        version = progress[-1].version

        # Replicas re-check a cached model against its file every refresh interval (0.5 s):
        # a commit by one is served by the other soon after. Wait for both, directly.
        def both_current():
            versions = []
            for replica in stack.replicas:
                with Client(replica.address, timeout=TIMEOUT) as direct:
                    versions.append(direct.get_model("consistent").version)
            return versions == [version, version]
        wait_for(both_current, 5.0, 0.05, f"both replicas at version {version}")

        expected = {}
        for replica in stack.replicas:
            with Client(replica.address, timeout=TIMEOUT) as direct:
                out, v = direct.predict("consistent", XOR_X, with_version=True)
                expected[replica.name] = (out.tobytes(), v)
        assert expected["a"] == expected["b"], "the two replicas disagree when called directly"
        reference = expected["a"]
        assert reference[1] == version

        mark = len(stack.nginx.entries())
        seen = set()
        calls = 100
        for _k in range(calls):
            out, v = client.predict("consistent", XOR_X, with_version=True)
            seen.add((out.tobytes(), v))
        # The values form too: the same float64 numbers, bit for bit.
        with Client(stack.target, timeout=TIMEOUT, raw=False) as friendly:
            for _ in range(20):
                out, v = friendly.predict("consistent", XOR_X, with_version=True)
                seen.add((np.ascontiguousarray(out, dtype="<f8").tobytes(), v))
    assert seen == {reference}, f"{len(seen)} distinct (outputs, version) pairs through nginx"
    assert np.all((np.frombuffer(reference[0]) > 0.5) == XOR_Y.ravel().astype(bool))

    stack.nginx.settled(mark + calls + 20)
    served = stack.nginx.served("Predict", since=mark)
    assert len(served) == 2 and min(served.values()) >= 30, served


def test_predict_keeps_succeeding_while_a_replica_drains_and_exits(fresh_stack):
    """SIGTERM one replica while Predict calls flow through nginx: no Predict fails, the other
    replica takes over, and the SIGTERMed one drains and exits 0.

    A call that reaches the replica in the instant it shuts down fails at nginx (UNAVAILABLE:
    nginx never re-sends a gRPC call it has sent) or in grpc (CANCELLED: accepted, not yet
    handled). The jitnet client retries Predict on both, so the callers see no failure; the
    access log shows such calls only on the leaving replica (docs/deploy.md)."""
    stack = fresh_stack
    survivor, leaving = stack.replicas
    with Client(stack.target, timeout=TIMEOUT) as setup:
        setup.create_model([64, 64, 10], output="softmax", loss="cross-entropy", seed=1,
                           model_id="failover")
    x = np.random.default_rng(0).random((8, 64))

    stop = threading.Event()
    lock = threading.Lock()
    results = {"ok": 0, "failed": []}
    versions = set()
    began = time.monotonic()

    def caller(raw: bool) -> None:
        # Bounded in count and time, whatever happens to the stop event.
        with Client(stack.target, timeout=TIMEOUT, raw=raw) as client:
            for _ in range(20_000):
                if stop.is_set() or time.monotonic() - began > 40:
                    return
                try:
                    _, v = client.predict("failover", x, with_version=True)
                except JitnetError as exc:
                    with lock:
                        results["failed"].append(f"{exc.code.name}: {exc.details}")
                    continue
                with lock:
                    results["ok"] += 1
                    versions.add(v)

    threads = [threading.Thread(target=caller, args=(k % 2 == 0,), daemon=True)
               for k in range(4)]
    for thread in threads:
        thread.start()
    try:
        # Traffic reaches both replicas before one leaves.
        wait_for(lambda: len(stack.nginx.served("Predict")) == 2
                 and min(stack.nginx.served("Predict").values()) >= 20, 15.0,
                 what="Predict calls served by both replicas")
        ok_before = results["ok"]
        leaving.signal(signal.SIGTERM)  # by pid, while the calls keep flowing
        code = leaving.proc.wait(15)
        exited_at = len(stack.nginx.entries())
        ok_at_exit = results["ok"]
        # Keep calling for a while after the exit: nginx must route everything to the survivor,
        # including when it retries the dead replica after fail_timeout (1 s).
        wait_for(lambda: results["ok"] >= ok_at_exit + 300, 20.0, what="calls after the exit")
        time.sleep(1.2)  # past fail_timeout: nginx tries the dead replica again, and moves on
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    assert code == 0, f"the SIGTERMed replica exited {code}:\n{leaving.log}"
    assert "draining" in leaving.log and "stopped" in leaving.log, leaving.log
    assert results["failed"] == [], (results["failed"][:5], stack.nginx.stderr[-2000:])
    assert ok_before > 0 and results["ok"] > ok_at_exit + 300, results["ok"]
    assert versions == {1}
    stack.nginx.settled(exited_at + 300)
    after = stack.nginx.served("Predict", since=exited_at)
    assert set(after) == {survivor.address}, after
    # A call that reached the leaving replica as it shut down may have failed at nginx (502,
    # or grpc's CANCELLED for a call accepted but not yet handled); the client retried those
    # (Predict has no side effects), so none reached the caller. None failed on the survivor.
    refused = stack.nginx.failed("Predict")
    assert all(ups[-1] == leaving.address for ups, _, _, _ in refused), refused
    with Client(survivor.address, timeout=TIMEOUT) as direct:
        assert direct.health() == "SERVING"
