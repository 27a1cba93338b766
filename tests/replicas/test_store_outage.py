"""The database out of reach is not a failure of serving (PostgreSQL store): Predict, GetModel
and ListModels answer from the versions in memory; Train, Step, CreateModel and DeleteModel
answer UNAVAILABLE saying the store is unreachable, never INTERNAL; the server reconnects and
carries on; a server started while the database is down stays NOT_SERVING until it has loaded
the models. The database is cut off for one server by a proxy between them
(tests/support/tcp_proxy.py); the real network cuts are in tests/hosts.
"""

from __future__ import annotations

import time

import grpc
import pytest

from jitnet.v1 import jitnet_pb2 as pb

from ..support.postgres import dbname_of
from ..support.rpc import (
    NOT_SERVING,
    SERVING,
    TIMEOUT,
    create,
    health_status,
    long_train_request,
    tensor,
    wait_for,
)
from ..support.tcp_proxy import Proxy

C = grpc.StatusCode


@pytest.fixture
def proxy(postgres_cluster):
    with Proxy((postgres_cluster.host, postgres_cluster.port)) as running:
        yield running


@pytest.fixture
def through_proxy(proxy, postgres_cluster, postgres_dsn) -> str:
    return postgres_cluster.dsn(dbname_of(postgres_dsn), port=proxy.port)


def _rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        for _ in (result if hasattr(result, "__next__") else ()):
            pass
    return info.value


def _predict(stub, rows, model_id="m"):
    return stub.Predict(pb.PredictRequest(model_id=model_id, inputs=tensor(rows, raw=True)),
                        timeout=TIMEOUT)


def test_while_unreachable_reads_answer_and_changes_are_unavailable(
        make_server, proxy, through_proxy):
    server = make_server(store=through_proxy, lease_seconds=2.0)
    stub = server.stub
    create(stub, "m")
    trained = list(stub.Train(long_train_request("m", epochs=40, report_every=20),
                              timeout=TIMEOUT))
    version = trained[-1].model_version
    before = _predict(stub, [[0.5, 0.5]]).outputs.raw

    proxy.cut()
    assert health_status(server.channel) == SERVING  # serving goes on
    for rows in ([[0.5, 0.5]], [[0.5, 0.5], [0.0, 1.0]]):  # the fast path and the general one
        reply = _predict(stub, rows)
        assert reply.model_version == version
    assert _predict(stub, [[0.5, 0.5]]).outputs.raw == before
    assert stub.GetModel(pb.GetModelRequest(model_id="m"), timeout=TIMEOUT).model.version == version
    assert [m.id for m in stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT).models] == ["m"]

    changes = {
        "Train": lambda: stub.Train(long_train_request("m", epochs=5), timeout=TIMEOUT),
        "Step": lambda: stub.Step(pb.StepRequest(model_id="m", input=[1, 0], target=[1],
                                                 learning_rate=0.1), timeout=TIMEOUT),
        "CreateModel": lambda: create(stub, "n"),
        "DeleteModel": lambda: stub.DeleteModel(pb.DeleteModelRequest(model_id="m"),
                                                timeout=TIMEOUT),
        "Predict newer": lambda: stub.Predict(pb.PredictRequest(
            model_id="m", inputs=tensor([[0.5, 0.5]], raw=True), min_version=version + 1),
            timeout=TIMEOUT),
    }
    for name, call in changes.items():
        error = _rpc_error(call)
        assert error.code() == C.UNAVAILABLE, (name, error.code(), error.details())
        assert "unreachable" in error.details(), (name, error.details())

    proxy.restore()  # the server reconnects by itself; changes work again

    def step_works():
        try:
            return stub.Step(pb.StepRequest(model_id="m", input=[1, 0], target=[1],
                                            learning_rate=0.1), timeout=TIMEOUT).model_version
        except grpc.RpcError as exc:
            assert exc.code() in (C.UNAVAILABLE, C.ABORTED), exc.details()  # never INTERNAL
            return None
    stepped = wait_for(step_works, 20, 0.1, "a Step after the outage")  # lease bound included
    assert stepped == version + 1  # nothing committed was lost, nothing half-done appeared
    create(stub, "n")
    assert stub.GetModel(pb.GetModelRequest(model_id="m"), timeout=TIMEOUT).model.version == stepped


def test_a_train_running_when_the_database_goes_away_ends_unavailable(
        make_server, proxy, through_proxy, postgres_cluster, postgres_dsn):
    server = make_server(store=through_proxy, lease_seconds=2.0)
    create(server.stub, "m")
    stream = server.stub.Train(long_train_request("m", report_every=5), timeout=60)
    received = [next(stream).model_version for _ in range(3)]
    proxy.cut()
    with pytest.raises(grpc.RpcError) as info:
        for message in stream:  # what was committed and sent before the cut still arrives
            received.append(message.model_version)
    error = info.value
    assert error.code() == C.UNAVAILABLE and "unreachable" in error.details(), error.details()
    stored = postgres_cluster.sql("SELECT version FROM jitnet_models WHERE id = 'm'",
                                  dbname=dbname_of(postgres_dsn))[0][0]
    # Every version the client was told of is stored; only the commit the cut interrupted may
    # have landed without its message (the error says so), nothing after it.
    assert stored in (received[-1], received[-1] + 1), (received, stored)
    assert received == list(range(received[0], received[-1] + 1))


def test_a_server_started_while_the_database_is_down_waits_not_serving(
        make_server, proxy, through_proxy, postgres_dsn):
    from jitnet.service.store import open_store

    seed = open_store(postgres_dsn)
    seed.open()
    from jitnet.service.engine.model import Architecture, Init, initial_parameters
    arch = Architecture((2, 4, 1))
    seed.create("m", arch, initial_parameters(arch, Init.XAVIER, 1))
    seed.close()

    proxy.cut()
    server = make_server(store=through_proxy, wait_ready=False)
    time.sleep(1.5)  # a few attempts to reach the database
    assert health_status(server.channel) == NOT_SERVING
    assert server.handle.startup_error is None  # waiting, not failed
    error = _rpc_error(lambda: _predict(server.stub, [[0.5, 0.5]]))
    assert error.code() == C.UNAVAILABLE

    proxy.restore()
    wait_for(lambda: health_status(server.channel) == SERVING, 30, 0.1, "SERVING")
    assert _predict(server.stub, [[0.5, 0.5]]).model_version == 1  # the models were loaded
