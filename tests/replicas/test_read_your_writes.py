"""Read your writes across replicas (api.md): `min_version` on Predict (the fast path and the
general path), GetModel and dry-run Step, on both stores. Two in-process servers share a store;
one commits, the other is asked for at least that version.

On the file store the second server re-checks files only every minute here, so without
min_version it answers the version before (the control), and with it, the new one. On
PostgreSQL a notice brings the commit within milliseconds, so the test asks right after each
commit, in a tight loop, and never gets an older version.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from jitnet.client import Client
from jitnet.v1 import jitnet_pb2 as pb

from ..support.rpc import TIMEOUT, create, tensor

C = grpc.StatusCode
X1 = [[0.25, 0.75]]  # one sample, raw: the fast path
X4 = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]  # four samples: the general path


def _pair(make_server, shared: dict):
    """Two servers on one store, the second slow to notice changes by itself."""
    writer = make_server(refresh_seconds=0.1, **shared)
    reader = make_server(refresh_seconds=60, store_poll_seconds=60, **shared)
    return writer, reader


@pytest.fixture(params=["file", "postgres"])
def pair(request, make_server, tmp_path):
    if request.param == "file":
        shared = {"data_dir": str(tmp_path / "shared")}
    else:
        shared = {"store": request.getfixturevalue("postgres_dsn")}
    return (request.param, *_pair(make_server, shared))


def _step(stub, model_id):
    return stub.Step(pb.StepRequest(model_id=model_id, input=[1.0, 0.0], target=[1.0],
                                    learning_rate=0.5), timeout=TIMEOUT)


def _predict(stub, model_id, rows, min_version=0):
    return stub.Predict(pb.PredictRequest(model_id=model_id, inputs=tensor(rows, raw=True),
                                          min_version=min_version), timeout=TIMEOUT)


def test_every_read_honours_min_version(pair):
    kind, writer, reader = pair
    create(writer.stub, "m")
    assert _predict(reader.stub, "m", X1, min_version=1).model_version == 1
    for _ in range(10):
        version = _step(writer.stub, "m").model_version
        assert _predict(reader.stub, "m", X1, version).model_version >= version  # fast path
        assert _predict(reader.stub, "m", X4, version).model_version >= version  # general
    version = _step(writer.stub, "m").model_version
    got = reader.stub.GetModel(pb.GetModelRequest(model_id="m", min_version=version),
                               timeout=TIMEOUT).model
    assert got.version >= version
    version = _step(writer.stub, "m").model_version
    dry = reader.stub.Step(pb.StepRequest(model_id="m", input=[1.0, 0.0], target=[1.0],
                                          learning_rate=0.5, dry_run=True, min_version=version),
                           timeout=TIMEOUT)
    assert dry.model_version >= version
    # The answers are the new version's: the same outputs as the writer's.
    assert (_predict(reader.stub, "m", X4, version).outputs.raw
            == _predict(writer.stub, "m", X4).outputs.raw)


def test_without_min_version_a_slow_replica_answers_the_version_before(make_server, tmp_path):
    """The control: what min_version prevents does happen without it (file store: the reader
    re-checks its files only every minute)."""
    writer, reader = _pair(make_server, {"data_dir": str(tmp_path / "shared")})
    create(writer.stub, "m")
    assert _predict(reader.stub, "m", X1).model_version == 1
    version = _step(writer.stub, "m").model_version
    assert version == 2
    assert _predict(reader.stub, "m", X1).model_version == 1  # stale, as seen through nginx
    assert _predict(reader.stub, "m", X1, min_version=2).model_version == 2
    assert _predict(reader.stub, "m", X1).model_version == 2  # and current from then on


def test_a_model_made_a_moment_ago_elsewhere_is_found_with_min_version(pair):
    kind, writer, reader = pair
    create(writer.stub, "new")
    for rows in (X1, X4):
        assert _predict(reader.stub, "new", rows, min_version=1).model_version == 1


def test_a_version_the_store_never_had_is_failed_precondition_naming_both(pair):
    kind, writer, reader = pair
    create(writer.stub, "m")
    for stub in (writer.stub, reader.stub):
        for call in (lambda s=stub: _predict(s, "m", X1, 5),
                     lambda s=stub: _predict(s, "m", X4, 5),
                     lambda s=stub: s.GetModel(pb.GetModelRequest(model_id="m", min_version=5),
                                               timeout=TIMEOUT),
                     lambda s=stub: s.Step(pb.StepRequest(model_id="m", input=[1.0, 0.0],
                                                          target=[1.0], learning_rate=0.1,
                                                          dry_run=True, min_version=5),
                                           timeout=TIMEOUT)):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == C.FAILED_PRECONDITION
            assert "version 1" in info.value.details() and "min_version 5" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        _predict(reader.stub, "nope", X1, 1)
    assert info.value.code() == C.NOT_FOUND


def test_the_client_reads_its_own_writes_on_a_slow_replica(pair):
    """One Client, its calls alternating between the two servers (as a balancer would): every
    read answers at least the version of its own last commit."""
    kind, writer, reader = pair
    with Client(f"127.0.0.1:{writer.port}") as to_writer, \
            Client(f"127.0.0.1:{reader.port}") as to_reader:
        to_reader.versions = to_writer.versions  # one client's memory, two connections
        to_writer.create_model([2, 4, 1], seed=1, model_id="mine")
        x = np.array(X4)
        for k in range(8):
            last = [p.version for p in to_writer.train("mine", x, [[0], [1], [1], [0]],
                                                       epochs=5, learning_rate=0.5)][-1]
            _, seen = to_reader.predict("mine", x[:1], with_version=True)
            assert seen >= last, (k, seen, last)
            assert to_reader.get_model("mine").version >= last
            trace = to_reader.step("mine", [0, 1], [1], 0.1, dry_run=True)
            assert trace.version >= last
            step = to_writer.step("mine", [0, 1], [1], 0.1)  # a commit: version + 1
            assert to_reader.predict("mine", x, with_version=True)[1] >= step.version
        if kind == "file":  # min_version=0 asks for any version: the reader's own, stale one
            to_writer.step("mine", [0, 1], [1], 0.1)
            _, any_version = to_reader.predict("mine", x, with_version=True, min_version=0)
            assert any_version < to_writer.versions.min_version("mine")
