"""The store contract (service/store/base.py), run against every implementation in backends.py.

What the servicers rely on, whichever store holds the models: versions, leases, visibility to
other servers (threads, instances and processes), and one damaged model failing alone.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from jitnet.service.engine.model import (
    Activation,
    Architecture,
    GradientMode,
    Init,
    Loss,
    initial_parameters,
)
from jitnet.service.engine.optimizers import NO_STATE, Optimizer, OptimizerState
from jitnet.service.errors import (
    AlreadyExists,
    Busy,
    FailedPrecondition,
    InvalidArgument,
    LeaseLost,
    NotFound,
)
from tests.support.waiting import wait_for

from .backends import BACKENDS

ARCH = Architecture((3, 4, 2), hidden_activation=Activation.TANH,
                    output_activation=Activation.SOFTMAX, loss=Loss.CROSS_ENTROPY, bias=False,
                    gradient_mode=GradientMode.ARTICLE)


def _params(seed=0) -> np.ndarray:
    return initial_parameters(ARCH, Init.HE, seed)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path):
    made = BACKENDS[request.param](tmp_path, request.getfixturevalue)
    yield made
    made.close()


@pytest.fixture
def store(backend):
    return backend.store()


# -- create and get ------------------------------------------------------------------------------


def test_create_makes_version_1_and_get_returns_it_exactly(store, backend):
    params = _params()
    created = store.create("m", ARCH, params.copy(), {"classes": "[0, 1]", "from": "test"})
    assert (created.id, created.version, created.epochs_trained, created.iterations) == (
        "m", 1, 0, 0)
    assert created.create_time_ns == created.update_time_ns > 0
    for seen in (store.get("m"), backend.store().get("m")):  # this server and another
        assert seen.arch == ARCH and seen.version == 1
        assert seen.params.tobytes() == params.tobytes()
        assert seen.optimizer.optimizer is None and seen.optimizer.arrays == ()
        assert dict(seen.metadata) == {"classes": "[0, 1]", "from": "test"}
        assert seen.create_time_ns == created.create_time_ns


def test_records_are_immutable(store):
    store.create("m", ARCH, _params(), {"k": "v"})
    with store.lease("m") as lease:
        lease.commit(_params(1), _adam_state(), last_loss=1.0)
    held = store.get("m")
    snapshot = held.params.copy()
    for array in (held.params, *held.optimizer.arrays):
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0] = 1.0
    with pytest.raises(TypeError):
        held.metadata["k"] = "changed"
    with store.lease("m") as lease:
        lease.commit(held.params + 1.0, held.optimizer, last_loss=1.0)
    assert (held.params == snapshot).all() and held.version == 2
    assert held.network is held.network  # one Network per version
    assert store.get("m").version == 3


def test_create_refuses_a_taken_id_also_from_another_server(store, backend):
    store.create("m", ARCH, _params())
    for creator in (store, backend.store()):
        with pytest.raises(AlreadyExists, match="'m' already exists"):
            creator.create("m", ARCH, _params(1))
    assert store.get("m").params.tobytes() == _params().tobytes()


def test_concurrent_creates_of_one_id_have_one_winner(backend):
    stores = [backend.store() for _ in range(4)]
    outcomes = []

    def create(store, seed):
        try:
            store.create("race", ARCH, _params(seed))
            outcomes.append(seed)
        except AlreadyExists:
            outcomes.append(None)

    threads = [threading.Thread(target=create, args=(s, k)) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = [seed for seed in outcomes if seed is not None]
    assert len(outcomes) == 4 and len(winners) == 1
    assert backend.store().get("race").params.tobytes() == _params(winners[0]).tobytes()


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "a\\b", ".hidden", "x" * 129,
                                 "nul\0", "tab\t", "ü", "a'; DROP TABLE models; --"])
def test_invalid_ids_are_refused_by_every_operation(store, bad):
    for operation in (lambda: store.create(bad, ARCH, _params()), lambda: store.get(bad),
                      lambda: store.lease(bad), lambda: store.delete(bad)):
        with pytest.raises(InvalidArgument, match="not a valid model id"):
            operation()
    assert store.ids() == []


def test_unknown_models_are_not_found(store):
    for operation in (lambda: store.get("nope"), lambda: store.lease("nope"),
                      lambda: store.delete("nope")):
        with pytest.raises(NotFound, match="'nope' not found"):
            operation()


# -- listing -------------------------------------------------------------------------------------


def test_ids_are_sorted_and_pages_continue_in_order(store, backend):
    names = ["b", "a", "c-1", "C", "a.b", "z_9"]
    for model_id in names:
        store.create(model_id, ARCH, _params())
    assert store.ids() == sorted(names)
    seen, after = [], ""
    while True:
        records, more = store.page(after, 2)
        seen += [r.id for r in records]
        if not more:
            break
        after = records[-1].id
    assert seen == sorted(names)
    assert store.page("c-1", 10) == ([store.get("z_9")], False)
    assert backend.store().ids() == sorted(names)


# -- leases and commits --------------------------------------------------------------------------


def test_commits_make_versions_with_their_counters(store, backend):
    store.create("m", ARCH, _params())
    velocity = np.linspace(-1, 1, ARCH.n_params)
    adam = _adam_state()
    with store.lease("m") as lease:
        assert lease.record.version == 1
        second = lease.commit(_params(1), OptimizerState.sgd(velocity), last_loss=0.25,
                              epochs_trained=3, iterations=12)
        third = lease.commit(_params(2), adam, last_loss=0.125)
        assert lease.record is third
    assert (second.version, second.epochs_trained, second.iterations, second.last_loss) == (
        2, 3, 12, 0.25)
    assert (third.version, third.epochs_trained, third.iterations, third.last_loss) == (
        3, 3, 12, 0.125)  # counters left out stay as they were
    assert third.update_time_ns >= second.update_time_ns >= third.create_time_ns
    restarted = backend.store()  # a server started now reads the last commit whole
    loaded = restarted.get("m")
    assert (loaded.version, loaded.last_loss, loaded.epochs_trained) == (3, 0.125, 3)
    assert loaded.params.tobytes() == _params(2).tobytes()
    assert (loaded.optimizer.optimizer, loaded.optimizer.steps) == (Optimizer.ADAM, 7)
    for stored, sent in zip(loaded.optimizer.arrays, adam.arrays, strict=True):
        assert stored.tobytes() == sent.tobytes()
    assert second.velocity.tobytes() == velocity.tobytes()  # SGD's buffer, as Train reads it
    assert loaded.velocity.tobytes() == np.zeros(ARCH.n_params).tobytes()  # not SGD's state


def test_one_lease_at_a_time_across_threads_and_servers(store, backend):
    store.create("m", ARCH, _params())
    other = backend.store()
    lease = store.lease("m")
    in_thread = []
    thread = threading.Thread(target=lambda: in_thread.append(_busy(store, "m")))
    thread.start()
    thread.join(10)
    assert in_thread == [True]
    assert _busy(other, "m")
    with pytest.raises(Busy):
        other.delete("m")
    lease.release()
    lease.release()  # idempotent
    with other.lease("m") as again:
        assert again.record.version == 1


def test_leases_of_different_models_are_independent(store):
    store.create("a", ARCH, _params())
    store.create("b", ARCH, _params())
    with store.lease("a"), store.lease("b") as b:
        assert b.commit(_params(1), NO_STATE, last_loss=1.0).version == 2


def test_a_released_lease_cannot_commit(store, backend):
    store.create("m", ARCH, _params())
    lease = store.lease("m")
    lease.release()
    with pytest.raises(LeaseLost, match="'m'.*nothing was stored"):
        lease.commit(_params(1), NO_STATE, last_loss=1.0)
    assert store.get("m").version == 1
    assert backend.store().get("m").params.tobytes() == _params().tobytes()


def _busy(store, model_id) -> bool:
    try:
        store.lease(model_id).release()
        return False
    except Busy:
        return True


# -- other servers -------------------------------------------------------------------------------


def test_another_server_sees_commits_and_deletes_within_the_bound(store, backend):
    other = backend.store()
    store.create("m", ARCH, _params())
    wait_for(lambda: "m" in other.ids(), backend.visible_within, 0.01, "the new model")
    assert other.get("m").version == 1
    with store.lease("m") as lease:
        lease.commit(_params(1), NO_STATE, last_loss=0.5)
    wait_for(lambda: other.get("m").version == 2, backend.visible_within, 0.01, "the commit")
    assert other.get("m").params.tobytes() == _params(1).tobytes()
    store.delete("m")

    def gone():
        try:
            other.get("m")
            return False
        except NotFound:
            return True
    wait_for(gone, backend.visible_within, 0.01, "the delete")
    assert other.ids() == []


_OTHER_PROCESS = textwrap.dedent("""
    import sys
    import numpy as np
    from jitnet.service.errors import Busy
    from jitnet.service.engine.model import Architecture, Init, initial_parameters
    from jitnet.service.engine.optimizers import NO_STATE
    from jitnet.service.store import open_store

    store = open_store(sys.argv[1])
    store.open()
    arch = Architecture((2, 3, 1))
    record = store.create("from-afar", arch, initial_parameters(arch, Init.XAVIER, 7))
    with store.lease("from-afar") as lease:
        lease.commit(record.params * 2, NO_STATE, last_loss=0.5, iterations=4)
    try:
        store.lease("held").release()
        print("leased")
    except Busy:
        print("busy")
    store.close()
""")


def test_another_process_shares_models_and_leases(store, backend):
    store.create("held", ARCH, _params())
    with store.lease("held"):
        done = subprocess.run([sys.executable, "-c", _OTHER_PROCESS, backend.location],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "busy"  # our lease held it off
    record = wait_for(lambda: "from-afar" in store.ids() and store.get("from-afar"),
                      backend.visible_within, 0.01, "the other process's model")
    arch = Architecture((2, 3, 1))
    assert (record.version, record.iterations, record.last_loss) == (2, 4, 0.5)
    assert record.params.tobytes() == (initial_parameters(arch, Init.XAVIER, 7) * 2).tobytes()


# -- read your writes ---------------------------------------------------------------------------


def test_get_at_least_rereads_what_another_server_committed(store, backend):
    """A server that would not look for changes by itself for a minute still answers a version
    at least as new as asked: it re-reads the model from the store."""
    other = backend.store(attentive=False)
    store.create("m", ARCH, _params())
    assert other.get_at_least("m", 1).version == 1  # made a moment ago on another server
    with store.lease("m") as lease:
        for k in range(1, 6):
            committed = lease.commit(_params(k), NO_STATE, last_loss=1.0 / k)
            seen = other.get_at_least("m", committed.version)
            assert seen.version >= committed.version
            assert seen.params.tobytes() == _params(k).tobytes()
    assert other.get_at_least("m", 0).version == 6
    assert other.get("m").version == 6  # the re-read copy is what get serves now too


def test_get_at_least_names_both_versions_when_the_store_has_none_that_new(store, backend):
    store.create("m", ARCH, _params())
    for asking in (store, backend.store(attentive=False)):
        with pytest.raises(FailedPrecondition) as info:
            asking.get_at_least("m", 7)
        message = str(info.value)
        assert "'m'" in message and "version 1" in message and "min_version 7" in message
    with pytest.raises(NotFound):
        store.get_at_least("nope", 1)
    with pytest.raises(InvalidArgument):
        store.get_at_least("../x", 1)


# -- a damaged model -----------------------------------------------------------------------------


def test_a_damaged_model_fails_alone_and_can_be_deleted(store, backend):
    store.create("ok", ARCH, _params())
    store.create("broken", ARCH, _params())
    backend.corrupt("broken")
    restarted = backend.store(opened=False)  # a server starting now
    report = restarted.open()
    assert report.loaded == ["ok"] and list(report.failed) == ["broken"]
    assert restarted.get("ok").version == 1
    for attempt in (lambda: restarted.get("broken"), lambda: restarted.lease("broken")):
        with pytest.raises(FailedPrecondition) as info:
            attempt()
        assert "'broken'" in str(info.value) and "unreadable" in str(info.value)
    assert [r.id for r in restarted.page("", 10)[0]] == ["ok"]
    restarted.delete("broken")
    with pytest.raises(NotFound):
        restarted.get("broken")
    assert restarted.ids() == ["ok"]


def test_a_server_that_read_a_good_version_keeps_serving_it(store, backend):
    store.create("m", ARCH, _params())
    assert store.get("m").version == 1
    backend.corrupt("m")
    time.sleep(2 * backend.visible_within)  # long enough to have noticed the change
    assert store.get("m").version == 1  # availability: the last good version keeps serving
    with pytest.raises(FailedPrecondition):
        store.lease("m")  # but nothing builds on a version it cannot read


def _adam_state() -> OptimizerState:
    """An Adam state whose arrays differ from each other and from the parameters."""
    return OptimizerState(Optimizer.ADAM, (np.linspace(-1, 1, ARCH.n_params),
                                           np.linspace(0, 2, ARCH.n_params) ** 2), steps=7)
