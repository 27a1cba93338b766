"""The client's side of read-your-writes (client/read_your_writes.py): which version it
remembers per model and sends as min_version, seen on the wire by an interceptor."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from jitnet.client import Client
from jitnet.client.errors import InvalidArgument
from jitnet.client.read_your_writes import VersionMemory

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([[0.0], [1.0], [1.0], [0.0]])


class _Sent(grpc.UnaryUnaryClientInterceptor):
    """Records (method, min_version) of every unary request that has the field."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    def intercept_unary_unary(self, continuation, details, request):
        if "min_version" in type(request).DESCRIPTOR.fields_by_name:
            self.calls.append((details.method.rsplit("/", 1)[1], request.min_version))
        return continuation(details, request)

    def last(self, method: str) -> int:
        return [v for m, v in self.calls if m == method][-1]


@pytest.fixture
def client_and_wire(server):
    sent = _Sent()
    with Client(f"127.0.0.1:{server.port}", interceptors=[sent]) as client:
        yield client, sent


def test_reads_send_the_last_version_committed_or_seen(client_and_wire):
    client, sent = client_and_wire
    client.create_model([2, 3, 1], seed=1, model_id="m")
    client.predict("m", X)
    assert sent.last("Predict") == 1  # created: version 1
    progress = list(client.train("m", X, Y, epochs=30, learning_rate=0.5, report_every=10))
    assert [p.version for p in progress] == [2, 3, 4]
    client.predict("m", X)
    assert sent.last("Predict") == 4  # the last commit of the Train
    step = client.step("m", [0, 1], [1], 0.1)
    client.get_model("m")
    assert sent.last("GetModel") == step.version == 5
    client.step("m", [0, 1], [1], 0.1, dry_run=True)
    assert sent.last("Step") == 5  # a dry run reads
    client.step("m", [0, 1], [1], 0.1)
    assert sent.last("Step") == 0  # a step that commits starts from the newest anyway


def test_an_explicit_min_version_overrides_and_zero_reads_any(client_and_wire):
    client, sent = client_and_wire
    client.create_model([2, 3, 1], seed=1, model_id="m")
    client.step("m", [0, 1], [1], 0.1)
    client.predict("m", X, min_version=0)
    assert sent.last("Predict") == 0
    client.get_model("m", min_version=1)
    assert sent.last("GetModel") == 1
    assert client.predict("m", X, with_version=True, min_version=2)[1] == 2
    with pytest.raises(InvalidArgument, match="min_version"):
        client.predict("m", X, min_version=-1)
    with pytest.raises(InvalidArgument, match="min_version"):
        client.predict("m", X, min_version="2")


def test_a_deleted_model_is_forgotten_and_a_new_one_starts_over(client_and_wire):
    client, sent = client_and_wire
    client.create_model([2, 3, 1], seed=1, model_id="m")
    for _ in range(3):
        client.step("m", [0, 1], [1], 0.1)
    assert client.versions.min_version("m") == 4
    client.delete_model("m")
    assert client.versions.min_version("m") == 0
    client.create_model([2, 3, 1], seed=2, model_id="m")
    assert client.predict("m", X, with_version=True)[1] == 1  # not asking for version 4
    assert sent.last("Predict") == 1


def test_version_memory_only_moves_forward():
    memory = VersionMemory()
    memory.saw("m", 5)
    memory.saw("m", 3)  # an older answer (a slower replica) does not lower it
    memory.saw("m", 0)
    assert memory.min_version("m") == 5 and memory.min_version("other") == 0
    memory.created("m", 1)  # except a new model under the same id
    assert memory.min_version("m") == 1
    assert memory.min_version("m", np.int64(7)) == 7


def test_the_async_client_remembers_and_sends_the_same_way(server):
    import asyncio

    from jitnet.client import AsyncClient
    from jitnet.client.errors import FailedPrecondition

    async def scenario():
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            await client.create_model([2, 3, 1], seed=1, model_id="m")
            versions = [p.version async for p in client.train("m", X, Y, epochs=20,
                                                              learning_rate=0.5,
                                                              report_every=10)]
            assert client.versions.min_version("m") == versions[-1] == 3
            _, seen = await client.predict("m", X, with_version=True)
            assert seen == 3
            with pytest.raises(FailedPrecondition, match="min_version 9"):  # it reaches the server
                await client.predict("m", X, min_version=9)
            with pytest.raises(FailedPrecondition, match="min_version 9"):
                await client.get_model("m", min_version=9)
            with pytest.raises(FailedPrecondition, match="min_version 9"):
                await client.step("m", [0, 1], [1], 0.1, dry_run=True, min_version=9)
            await client.delete_model("m")
            assert client.versions.min_version("m") == 0

    asyncio.run(scenario())
