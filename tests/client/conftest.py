"""Client test fixtures: one server on 127.0.0.1 port 0 for the session (client_support.py)."""

from __future__ import annotations

import itertools
import re

import pytest

from .client_support import ARTICLE_HIDDEN, ARTICLE_OUTPUT, start_server

from jitnet.client import Client


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("models"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def address(server) -> str:
    return server.address


@pytest.fixture
def client(address):
    with Client(address) as c:
        yield c


_ids = itertools.count(1)


@pytest.fixture
def model_id(request) -> str:
    """A model id unique to this test."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:100]
    return f"{name}-{next(_ids)}"


@pytest.fixture
def article(client, model_id):
    """The article's network (api.md): 2-4-1 sigmoid, no bias, ARTICLE mode, its weights."""
    return client.create_model([2, 4, 1], bias=False, gradient_mode="article",
                               layers=[ARTICLE_HIDDEN, ARTICLE_OUTPUT], model_id=model_id)
