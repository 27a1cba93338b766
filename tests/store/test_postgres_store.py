"""The PostgreSQL store's own promises, beyond the contract (test_contract.py): its schema and
migrations, the lease's fencing epoch and expiry, a dead holder's lease freeing within the
stated bound, notices lost while disconnected made up by the re-sync, and the database out of
reach (through a proxy the test cuts) failing changes with StoreUnavailable while reads go on.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pytest

from jitnet.service.engine.model import Architecture, Init, initial_parameters
from jitnet.service.engine.optimizers import NO_STATE
from jitnet.service.errors import (
    Busy,
    FailedPrecondition,
    LeaseLost,
    StorageFailed,
    StoreUnavailable,
)
from jitnet.service.store import model_format, open_store
from jitnet.service.store import postgres as postgres_store
from jitnet.service.store.postgres import PostgresStore

from ..support.postgres import dbname_of
from ..support.tcp_proxy import Proxy

ARCH = Architecture((2, 3, 1))


def _params(seed=0) -> np.ndarray:
    return initial_parameters(ARCH, Init.XAVIER, seed)


@pytest.fixture
def stores(postgres_dsn):
    """stores(dsn=postgres_dsn, **options) -> an opened PostgresStore, closed afterwards."""
    made = []

    def make(dsn=None, *, opened=True, **options) -> PostgresStore:
        store = PostgresStore(dsn or postgres_dsn, **options)
        made.append(store)
        if opened:
            store.open()
        return store

    yield make
    for store in made:
        store.close()


def _sql(cluster, dsn, statement, params=()):
    return cluster.sql(statement, params, dbname=dbname_of(dsn))


def _eventually(check, within: float, what: str):
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        time.sleep(0.02)


# -- schema --------------------------------------------------------------------------------------


def test_the_first_server_creates_the_schema_and_servers_starting_together_agree(
        stores, postgres_cluster, postgres_dsn):
    opened = []
    threads = [threading.Thread(target=lambda: opened.append(stores().ids()))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert opened == [[]] * 4  # every one opened (no "relation already exists")
    assert _sql(postgres_cluster, postgres_dsn, "SELECT version FROM jitnet_schema") == [(1,)]
    tables = _sql(postgres_cluster, postgres_dsn,
                  "SELECT tablename FROM pg_tables WHERE tablename LIKE 'jitnet%' ORDER BY 1")
    assert tables == [("jitnet_leases",), ("jitnet_models",), ("jitnet_schema",)]


def test_a_schema_newer_than_the_server_refuses_to_open(stores, postgres_cluster, postgres_dsn):
    stores()
    _sql(postgres_cluster, postgres_dsn, "UPDATE jitnet_schema SET version = 99")
    with pytest.raises(FailedPrecondition, match="version 99, newer than this server knows"):
        stores()


def test_an_older_schema_is_migrated_at_start(stores, postgres_cluster, postgres_dsn,
                                              monkeypatch):
    first = stores()
    first.create("m", ARCH, _params())
    monkeypatch.setattr(postgres_store, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(postgres_store, "MIGRATIONS",
                        {1: ("ALTER TABLE jitnet_models ADD COLUMN note text",)})
    second = stores()
    assert second.get("m").version == 1  # the models survive the migration
    assert _sql(postgres_cluster, postgres_dsn, "SELECT version FROM jitnet_schema") == [(2,)]
    assert _sql(postgres_cluster, postgres_dsn, "SELECT note FROM jitnet_models") == [(None,)]


def test_the_password_is_never_shown(stores, postgres_cluster, postgres_dsn):
    store = stores(opened=False)
    assert postgres_cluster.password not in store.location
    assert store.location.startswith("postgresql://jitnet@127.0.0.1:")
    with Proxy((postgres_cluster.host, postgres_cluster.port)) as proxy:
        proxy.cut()
        cut = stores(_through(proxy, postgres_cluster, postgres_dsn), opened=False)
        with pytest.raises(StoreUnavailable) as info:
            cut.open()
    assert postgres_cluster.password not in str(info.value)
    assert "unreachable" in str(info.value)


# -- leases --------------------------------------------------------------------------------------


def _expire(cluster, dsn, model_id):
    """As if the holder had stalled past its expiry (its renewals stopped)."""
    _sql(cluster, dsn, "UPDATE jitnet_leases SET expires = clock_timestamp() - interval '1 s'"
         " WHERE id = %s", (model_id,))


def test_a_lease_taken_over_after_its_expiry_can_never_commit(stores, postgres_cluster,
                                                              postgres_dsn):
    a, b = stores(), stores()
    a.create("m", ARCH, _params())
    stale = a.lease("m")
    with pytest.raises(Busy, match="held by server"):
        b.lease("m")
    _expire(postgres_cluster, postgres_dsn, "m")
    with b.lease("m") as taken:
        assert taken.epoch > stale.epoch  # a new fencing epoch
        with pytest.raises(LeaseLost, match="expired"):
            stale.commit(_params(9), NO_STATE, last_loss=0.0)
        assert taken.commit(_params(1), NO_STATE, last_loss=0.5).version == 2
    with pytest.raises(LeaseLost):  # still refused afterwards: the epoch is gone for good
        stale.commit(_params(9), NO_STATE, last_loss=0.0)
    stale.release()  # harmless: it deletes only its own epoch's row
    record = stores().get("m")
    assert record.version == 2 and record.params.tobytes() == _params(1).tobytes()


def test_an_expired_lease_cannot_commit_even_if_nobody_took_it(stores, postgres_cluster,
                                                              postgres_dsn):
    store = stores()
    store.create("m", ARCH, _params())
    with store.lease("m") as lease:
        _expire(postgres_cluster, postgres_dsn, "m")
        with pytest.raises(LeaseLost):
            lease.commit(_params(1), NO_STATE, last_loss=0.5)
    assert stores().get("m").version == 1


def test_the_holder_renews_its_lease_past_lease_seconds(stores):
    holder, other = stores(lease_seconds=2.0), stores(lease_seconds=2.0)
    holder.create("m", ARCH, _params())
    with holder.lease("m") as lease:
        began = time.monotonic()
        while time.monotonic() - began < 5.0:  # well past one lease_seconds
            with pytest.raises(Busy):
                other.lease("m")
            time.sleep(0.25)
        assert lease.commit(_params(1), NO_STATE, last_loss=0.5).version == 2


_HOLDER = textwrap.dedent("""
    import sys, time
    from jitnet.service.store import open_store
    store = open_store(sys.argv[1], lease_seconds=float(sys.argv[2]))
    store.open()
    lease = store.lease("m")
    print("held", flush=True)
    time.sleep(120)
""")


def test_a_dead_holders_lease_frees_within_lease_seconds(stores, postgres_dsn):
    lease_seconds = 2.0
    store = stores()
    store.create("m", ARCH, _params())
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, postgres_dsn, str(lease_seconds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        with pytest.raises(Busy):
            store.lease("m")
        holder.send_signal(signal.SIGKILL)  # by pid
        holder.wait(10)
        killed = time.monotonic()
        while True:
            try:
                store.lease("m").release()
                break
            except Busy:
                assert time.monotonic() - killed < lease_seconds + 2.0, "the lease never freed"
                time.sleep(0.05)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
    assert time.monotonic() - killed <= lease_seconds + 2.0  # the bound, plus a busy machine


# -- visibility ----------------------------------------------------------------------------------


def _store_by_hand(cluster, dsn, record):
    """Writes a version into the table directly: no notice is sent."""
    _sql(cluster, dsn, "UPDATE jitnet_models SET version = %s, body = %s WHERE id = %s",
         (record.version, model_format.encode(record), record.id))


def test_the_backstop_poll_finds_a_change_no_notice_announced(stores, postgres_cluster,
                                                             postgres_dsn):
    polling = stores(poll_seconds=0.2)
    deaf = stores(poll_seconds=60)
    polling.create("m", ARCH, _params())
    _eventually(lambda: "m" in deaf.ids(), 5, "the create's notice")
    v2 = dataclasses.replace(polling.get("m"), version=2, params=_params(2))
    _store_by_hand(postgres_cluster, postgres_dsn, v2)
    _eventually(lambda: polling.get("m").version == 2, 5, "the poll")
    assert polling.get("m").params.tobytes() == _params(2).tobytes()
    assert deaf.get("m").version == 1  # no notice, no poll yet: it is the poll that found it


def _through(proxy, cluster, dsn) -> str:
    return cluster.dsn(dbname_of(dsn), port=proxy.port)


def test_after_a_reconnect_the_listener_resyncs_what_it_missed(stores, postgres_cluster,
                                                               postgres_dsn):
    writer = stores()
    writer.create("kept", ARCH, _params())
    writer.create("doomed", ARCH, _params())
    with Proxy((postgres_cluster.host, postgres_cluster.port)) as proxy:
        reader = stores(_through(proxy, postgres_cluster, postgres_dsn), poll_seconds=60)
        assert reader.ids() == ["doomed", "kept"]
        proxy.cut()  # the reader's connections drop; its notices are lost from now on
        with writer.lease("kept") as lease:
            for k in range(1, 4):
                lease.commit(_params(k), NO_STATE, last_loss=1.0 / k)
        writer.delete("doomed")
        writer.create("born", ARCH, _params(5))
        time.sleep(0.5)
        assert reader.get("kept").version == 1 and "doomed" in reader.ids()  # still cut off
        proxy.restore()
        _eventually(lambda: reader.ids() == ["born", "kept"]
                    and reader.get("kept").version == 4, 10, "the re-sync")
    assert reader.get("kept").params.tobytes() == _params(3).tobytes()
    assert reader.get("born").params.tobytes() == _params(5).tobytes()


# -- the database out of reach -------------------------------------------------------------------


def test_unreachable_changes_fail_with_store_unavailable_and_reads_go_on(
        stores, postgres_cluster, postgres_dsn):
    writer = stores()
    with Proxy((postgres_cluster.host, postgres_cluster.port)) as proxy:
        store = stores(_through(proxy, postgres_cluster, postgres_dsn), lease_seconds=2.0)
        store.create("m", ARCH, _params())
        lease = store.lease("m")
        proxy.cut()
        for change in (lambda: store.create("n", ARCH, _params()),
                       lambda: store.lease("m"),
                       lambda: store.delete("m"),
                       lambda: lease.commit(_params(1), NO_STATE, last_loss=1.0),
                       lambda: store.get_at_least("m", 2)):
            began = time.monotonic()
            with pytest.raises(StoreUnavailable, match="unreachable"):
                change()
            assert time.monotonic() - began < 15  # bounded: it does not hang
        lease.release()  # does not raise; the lease frees when it expires
        assert store.get("m").version == 1 and store.ids() == ["m"]  # reads go on
        assert store.page("", 10)[0][0].version == 1
        # The writer (connected directly) goes on; what it does shows up once reachable.
        _eventually(lambda: _free(writer), 10, "the unreachable holder's lease expiring")
        with writer.lease("m") as other:
            other.commit(_params(2), NO_STATE, last_loss=0.5)
        proxy.restore()
        _eventually(lambda: store.get("m").version == 2, 10, "the re-sync after the outage")
        with store.lease("m") as again:  # changes work again
            assert again.commit(_params(3), NO_STATE,
                                last_loss=0.25).version == 3
        store.create("n", ARCH, _params())
    assert writer.get_at_least("m", 3).params.tobytes() == _params(3).tobytes()


def _free(store) -> bool:
    try:
        store.lease("m").release()
        return True
    except Busy:
        return False


def test_open_while_unreachable_raises_store_unavailable_then_succeeds(
        stores, postgres_cluster, postgres_dsn):
    stores().create("m", ARCH, _params())
    with Proxy((postgres_cluster.host, postgres_cluster.port)) as proxy:
        proxy.cut()
        store = stores(_through(proxy, postgres_cluster, postgres_dsn), opened=False)
        with pytest.raises(StoreUnavailable):
            store.open()
        proxy.restore()
        assert store.open().loaded == ["m"]


def test_a_malformed_dsn_is_refused_when_the_store_is_made():
    with pytest.raises(RuntimeError, match="not a valid PostgreSQL DSN"):
        open_store("postgresql://host:notaport:x/db?nonsense=1")


def test_a_refusal_by_the_database_is_storage_failed_not_unreachable(
        stores, postgres_cluster, postgres_dsn):
    stores().create("m", ARCH, _params())
    role = "reader_" + uuid.uuid4().hex[:8]
    _sql(postgres_cluster, postgres_dsn, f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    try:
        _sql(postgres_cluster, postgres_dsn,
             f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        reader = stores(f"postgresql://{role}:pw@{postgres_cluster.host}:{postgres_cluster.port}/"
                        f"{dbname_of(postgres_dsn)}")
        assert reader.get("m").version == 1  # it may read
        with pytest.raises(StorageFailed, match="permission denied") as info:
            reader.create("n", ARCH, _params())
        assert "unreachable" not in str(info.value)
        reader.close()
    finally:
        _sql(postgres_cluster, postgres_dsn, f"DROP OWNED BY {role}")
        postgres_cluster.sql(f"DROP ROLE {role}")
