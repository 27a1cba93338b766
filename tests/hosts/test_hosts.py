"""Replicas on separate hosts sharing a PostgreSQL store (issue "Across hosts"): the hosts are
network namespaces (topology.py): PostgreSQL 15 on `db`, a replica on `a` and on `b`, nginx
with deploy/nginx.conf on `lb`; the test reaches them across the bridge. Links are cut with
`ip link set ... down`: packets are dropped, connects time out, as when a host is cut off.

Measured figures (failover, convergence, the lease bound as it happened) are printed in the
run's summary (tests/support/stored.SUMMARY).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from jitnet.client import Client
from jitnet.client.errors import JitnetError

from ..support.stored import SUMMARY
from ..support.waiting import wait_for
from .conftest import LEASE_SECONDS
from .topology import in_thread

pytestmark = pytest.mark.slow

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([[0.0], [1.0], [1.0], [0.0]])
TIMEOUT = 20.0
SLACK = 3.0  # a busy 2-core machine, on top of the bounds the tests check


def _version_on(target, model_id: str) -> int | None:
    """The version a replica (an address, or a Client connected to it) holds now, not asking
    it to re-read."""
    try:
        if isinstance(target, Client):
            return target.get_model(model_id, min_version=0).version
        with Client(target, timeout=5) as direct:
            return direct.get_model(model_id, min_version=0).version
    except JitnetError:
        return None


def _both_at(hosts, model_id: str, version: int, clients=None) -> bool:
    targets = clients or [r.address for r in hosts.replicas.values()]
    return all(_version_on(target, model_id) == version for target in targets)


def test_a_model_made_and_trained_through_lb_is_predicted_identically_by_both(hosts):
    with Client(hosts.lb, timeout=TIMEOUT) as client:
        client.create_model([2, 4, 1], hidden="tanh", seed=7, model_id="xor")
        progress = list(client.train("xor", XOR_X, XOR_Y, epochs=3000, learning_rate=0.5,
                                     report_every=1000, timeout=60))
    version = progress[-1].version
    assert progress[-1].done and progress[-1].loss < 0.05
    wait_for(lambda: _both_at(hosts, "xor", version), 5, what=f"both replicas at {version}",
             interval=0.05)
    answers = {}
    for host, replica in hosts.replicas.items():
        with Client(replica.address, timeout=TIMEOUT) as direct:
            out, seen = direct.predict("xor", XOR_X, with_version=True, min_version=0)
            answers[host] = (out.tobytes(), seen)
    assert answers["a"] == answers["b"]
    assert answers["a"][1] == version == hosts.stored_version("xor")
    assert np.all((np.frombuffer(answers["a"][0]) > 0.5) == XOR_Y.ravel().astype(bool))


def test_through_lb_one_client_never_reads_older_than_its_last_commit(hosts):
    """Train and Predict in a tight loop through nginx (round-robin per call over a and b)."""
    with Client(hosts.lb, timeout=TIMEOUT) as client:
        client.create_model([2, 4, 1], seed=3, model_id="ryw")
        older = []
        for k in range(40):
            last = [p.version for p in client.train("ryw", XOR_X, XOR_Y, epochs=2,
                                                    learning_rate=0.5)][-1]
            for _ in range(2):  # both replicas, whichever answered the Train
                _, seen = client.predict("ryw", XOR_X[:1], with_version=True)
                if seen < last:
                    older.append((k, seen, last))
    assert older == []
    assert hosts.stored_version("ryw") == last


def _predict_load(address: str, model_id: str, stop: threading.Event, results: list,
                  lock: threading.Lock, threads: int = 4) -> list[threading.Thread]:
    """Closed-loop Predict callers; results get (start, end, error or None). Bounded in count
    and time whatever happens to `stop`."""
    x = XOR_X[:1]
    began = time.monotonic()

    def caller():
        with Client(address, timeout=10) as client:
            for _ in range(50_000):
                if stop.is_set() or time.monotonic() - began > 120:
                    return
                start = time.monotonic()
                try:
                    client.predict(model_id, x)
                    error = None
                except JitnetError as exc:
                    error = f"{exc.code.name}: {exc.details}"
                with lock:
                    results.append((start, time.monotonic(), error))

    workers = [threading.Thread(target=caller, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    return workers


def test_host_a_cut_off_under_predict_load_fails_nothing_after_failover_and_catches_up(hosts):
    net = hosts.net
    with Client(hosts.lb, timeout=TIMEOUT) as setup:
        setup.create_model([2, 4, 1], seed=5, model_id="load")
    stop, lock, results = threading.Event(), threading.Lock(), []
    workers = _predict_load(hosts.lb, "load", stop, results, lock)
    try:
        wait_for(lambda: len(results) >= 100, 30, what="Predict load flowing", interval=0.05)
        cut_at = time.monotonic()
        net.cut("a")
        with Client(hosts.lb, timeout=60) as trainer:  # versions a cannot see while cut off
            for _ in range(3):
                last = [p.version for p in trainer.train("load", XOR_X, XOR_Y, epochs=50,
                                                         learning_rate=0.5)][-1]
        time.sleep(max(0.0, cut_at + 6.0 - time.monotonic()))
        assert _version_on(hosts.replicas["b"].address, "load") == last
        net.restore("a")
        restored_at = time.monotonic()
        wait_for(lambda: _version_on(hosts.replicas["a"].address, "load") == last, 20,
                 what=f"host a catching up on version {last}", interval=0.1)
        caught_up = time.monotonic() - restored_at
        time.sleep(1.5)  # load through both again
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    in_flight = [r for r in results if r[0] < cut_at and r[1] > cut_at and r[2]]
    after = [r for r in results if r[0] >= cut_at and r[2]]
    SUMMARY["hosts: a cut off under load"] = (
        f"{len(results)} Predicts, {len(in_flight)} in flight to a at the cut failed, "
        f"{len(after)} failed after; a caught up {caught_up:.2f} s after its link returned")
    assert after == [], after[:5]
    assert len([r for r in results if r[0] >= cut_at and not r[2]]) > 20
    assert hosts.stored_version("load") == last


def test_db_cut_off_during_train_predict_goes_on_and_both_converge(hosts):
    net = hosts.net
    with Client(hosts.lb, timeout=TIMEOUT) as setup:
        setup.create_model([2, 16, 1], seed=9, model_id="dbcut")
    rng = np.random.default_rng(0)
    x = rng.random((512, 2))
    y = (x.sum(axis=1, keepdims=True) > 1.0).astype(float)
    received: list[int] = []
    started = threading.Event()

    def train():
        with Client(hosts.lb, timeout=TIMEOUT) as client:
            for progress in client.train("dbcut", x, y, epochs=600, learning_rate=0.1,
                                         report_every=20, timeout=120):
                received.append(progress.version)
                if len(received) >= 3:
                    started.set()
            return "completed"

    thread, outcome = in_thread(train)
    assert started.wait(60), outcome
    net.cut("db")
    cut_at = time.monotonic()
    told_before_cut = len(received)
    answered = {"a": 0, "b": 0}
    while time.monotonic() - cut_at < 3.0:  # Predict keeps answering on both, from memory
        for host, replica in hosts.replicas.items():
            with Client(replica.address, timeout=5) as direct:
                out = direct.predict("dbcut", x[:4], min_version=0)
                assert out.shape == (4, 1)
                answered[host] += 1
        time.sleep(0.1)
    net.restore("db")
    restored_at = time.monotonic()
    thread.join(120)
    assert not thread.is_alive()
    result = outcome[0]
    if isinstance(result, JitnetError):  # or it completed after the link returned
        assert result.code.name == "UNAVAILABLE" and "unreachable" in result.details, result
    else:  # it was still running: it committed again once the link returned
        assert result == "completed" and len(received) > told_before_cut, (result, received)
    ended_at = time.monotonic()
    stored = hosts.stored_version("dbcut")
    direct = [Client(r.address, timeout=5) for r in hosts.replicas.values()]
    try:
        wait_for(lambda: _both_at(hosts, "dbcut", stored, direct), 10,
                 what=f"both replicas at {stored}", interval=0.01)
    finally:
        for client in direct:
            client.close()
    converged = time.monotonic() - ended_at
    SUMMARY["hosts: db cut off 3 s during a Train"] = (
        f"Train {'completed' if result == 'completed' else 'ended UNAVAILABLE'}; "
        f"{answered['a']}+{answered['b']} Predicts answered during the cut; both replicas at "
        f"the last version {converged:.2f} s after the Train ended "
        f"({ended_at - restored_at:.2f} s after the link returned)")
    assert min(answered.values()) >= 5
    assert converged <= 1.0 + SLACK
    # Nothing committed was lost: every version the client was told of is stored; only a
    # commit cut in the middle may have landed without its message.
    assert received and stored >= received[-1]
    assert stored <= received[-1] + (0 if result == "completed" else 1)
    assert received == list(range(received[0], received[-1] + 1))


def test_a_client_balances_by_itself_over_both_replicas_without_lb(hosts):
    """gRPC round_robin over the replicas' addresses: the headless-service pattern (README)."""
    net = hosts.net
    target = "ipv4:" + ",".join(r.address for r in hosts.replicas.values())
    with Client(target, timeout=TIMEOUT,
                options=[("grpc.lb_policy_name", "round_robin")]) as client:
        client.create_model([2, 4, 1], seed=4, model_id="spread")
        for k in range(30):  # each client reads its own writes whichever replica answers
            last = [p.version for p in client.train("spread", XOR_X, XOR_Y, epochs=2,
                                                    learning_rate=0.5)][-1]
            for _ in range(2):
                _, seen = client.predict("spread", XOR_X, with_version=True)
                assert seen >= last, (k, seen, last)
        before = {host: net.packets_to(host) for host in ("a", "b")}
        for _ in range(200):
            client.predict("spread", XOR_X)
    sent = {host: net.packets_to(host) - before[host] for host in ("a", "b")}
    total = sum(sent.values())
    # Round-robin per call: each replica took about half of the Predicts' packets.
    assert min(sent.values()) >= 0.35 * total, sent


def test_sigkill_of_the_lease_holder_frees_the_model_within_the_lease_bound(hosts):
    """Last in the module: replica a stays dead (the next test's fixture would restart it)."""
    a, b = hosts.replicas["a"], hosts.replicas["b"]
    with Client(hosts.lb, timeout=TIMEOUT) as setup:
        setup.create_model([2, 8, 1], seed=2, model_id="orphan")
    with Client(a.address, timeout=TIMEOUT) as on_a:
        stream = on_a.train("orphan", XOR_X, XOR_Y, epochs=10_000_000, learning_rate=0.1,
                            report_every=2000)
        seen = [next(stream).version for _ in range(2)]  # a holds the lease, commits
        a.process.kill()  # SIGKILL, by pid, mid-Train
        killed_at = time.monotonic()
        stream.close()
    time.sleep(0.2)
    at_kill = hosts.stored_version("orphan")
    assert at_kill >= seen[-1]
    with Client(b.address, timeout=TIMEOUT) as on_b:
        busy = 0
        while True:
            assert hosts.stored_version("orphan") == at_kill  # nothing more from a, ever
            try:
                before = on_b.get_model("orphan", min_version=at_kill)
                progress = list(on_b.train("orphan", XOR_X, XOR_Y, epochs=10,
                                           learning_rate=0.1))
                break
            except JitnetError as exc:
                assert exc.code.name == "ABORTED", exc  # the dead holder's lease, until it ends
                busy += 1
                assert time.monotonic() - killed_at < LEASE_SECONDS + SLACK, "never freed"
                time.sleep(0.1)
        freed_after = time.monotonic() - killed_at
    SUMMARY["hosts: lease of a SIGKILLed replica"] = (
        f"freed {freed_after:.2f} s after the kill (bound {LEASE_SECONDS:g} s)")
    assert busy > 0  # it was the lease that held b off, not luck
    assert freed_after <= LEASE_SECONDS + SLACK
    # b trained from the last version a committed; a's unfinished epochs never appeared.
    assert before.version == at_kill and progress[0].version == at_kill + 1
    with Client(hosts.lb, timeout=TIMEOUT) as after:
        model = after.get_model("orphan", min_version=progress[-1].version)
    assert model.epochs_trained == before.epochs_trained + 10
    assert hosts.stored_version("orphan") == progress[-1].version
