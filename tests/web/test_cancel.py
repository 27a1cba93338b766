"""Train from the page is a real Train call: when the page goes away (its connection closes:
pause, reload, a closed tab) the call ends, the lease is free again and the model keeps its
last committed version."""

from __future__ import annotations

import json
import time

import pytest

from jitnet.client import Aborted, Client
from tests.support.waiting import wait_for

from .conftest import XOR_INPUTS, XOR_TARGETS
from .test_errors import open_train


@pytest.fixture
def grpc(page_server):
    with Client(page_server.address) as client:
        yield client


def lease_is_free(grpc: Client, model_id: str) -> bool:
    """A committing Step succeeds only when no Train holds the model."""
    try:
        grpc.step(model_id, [0, 1], [1], 1e-9)
        return True
    except Aborted:
        return False


def settled_version(grpc: Client, model_id: str) -> int:
    """The version once it stops moving (a commit racing the cancel may still land)."""
    last = grpc.get_model(model_id).version
    while True:
        time.sleep(0.3)
        now = grpc.get_model(model_id).version
        if now == last:
            return now
        last = now


@pytest.mark.parametrize("after_lines", [3, 0], ids=["streaming", "before-the-first-line"])
def test_closing_the_connection_cancels_the_train(page, page_server, grpc, after_lines):
    model_id = page.create()["id"]
    # 400 rows for 10^7 epochs: hours of work, so only a cancel ends it within the test.
    epochs, rows = 10_000_000, {"inputs": XOR_INPUTS * 100, "targets": XOR_TARGETS * 100}
    if after_lines:  # a commit per epoch, each a line
        connection, response = open_train(page, model_id, epochs=epochs, report_every=1,
                                          **rows)
        seen = [json.loads(response.readline()) for _ in range(after_lines)]
        assert [p["epoch"] for p in seen] == list(range(1, after_lines + 1))
    else:  # the Train runs but has sent nothing yet: only the socket's watcher can tell
        connection, _ = open_train(page, model_id, answer=False, epochs=epochs,
                                   report_every=epochs, **rows)
        seen = []
    handle = page_server.handle
    # Running: a handler on the server (asking for the lease would race the Train for it).
    wait_for(lambda: not handle.wait_idle(0), 10, 0.02, "the Train to run")
    connection.close()
    began = time.monotonic()
    assert handle.wait_idle(10), "the Train still runs 10 s after the page left"
    print(f"Train ended {time.monotonic() - began:.2f} s after the page left")
    assert lease_is_free(grpc, model_id)
    version = settled_version(grpc, model_id)
    model = grpc.get_model(model_id)
    assert model.epochs_trained < epochs
    if seen:  # the model kept what it committed; the step that found the lease free is last
        assert version >= seen[-1]["version"] + 1
        assert model.epochs_trained >= seen[-1]["epoch"]
    # The model is whole: it predicts, and trains again from the page.
    assert grpc.predict(model_id, [[0, 1]]).shape == (1, 1)
    assert page.train_lines(model_id, epochs=2, learning_rate=0.5)[-1]["done"] is True


def test_a_finished_stream_leaves_the_connection_for_the_next_request(page_server):
    # Keep-alive: after the chunked stream's end, the same connection answers again.
    from .conftest import PageApi
    page = PageApi(page_server.handle.web.url)
    model_id = page.create()["id"]
    connection, response = open_train(page, model_id, epochs=3, report_every=1)
    try:
        lines = [json.loads(line) for line in response.read().splitlines()]
        assert [p["epoch"] for p in lines] == [1, 2, 3]
        connection.request("GET", f"/api/models/{model_id}")
        again = connection.getresponse()
        assert again.status == 200 and json.loads(again.read())["epochs_trained"] == 3
    finally:
        connection.close()
