"""The page's tests share a server with its page (in this process, port 0 for both) and a
small urllib client of the page's JSON API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

XOR_INPUTS = [[0, 0], [0, 1], [1, 0], [1, 1]]
XOR_TARGETS = [[0], [1], [1], [0]]


@dataclass
class Answer:
    status: int
    body: object  # the JSON answer (None when it was not JSON), or the text for NDJSON
    headers: dict

    @property
    def error(self) -> dict:
        return self.body["error"]


class PageApi:
    """http://127.0.0.1:PORT/ through urllib: call(method, path, body) -> Answer, never
    raising for an HTTP error status."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def call(self, method: str, path: str, body=None, *, headers: dict | None = None,
             data: bytes | None = None, timeout: float = 30.0) -> Answer:
        headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return _answer(response.status, response.read(), response.headers)
        except urllib.error.HTTPError as e:
            return _answer(e.code, e.read(), e.headers)

    def get(self, path: str, **kwargs) -> Answer:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body=None, **kwargs) -> Answer:
        return self.call("POST", path, {} if body is None else body, **kwargs)

    def create(self, **fields) -> dict:
        answer = self.post("/api/models", {"layer_sizes": [2, 4, 1], "init": "uniform",
                                           **fields})
        assert answer.status == 201, answer.body
        return answer.body

    def train_lines(self, model_id: str, **fields) -> list[dict]:
        answer = self.post(f"/api/models/{model_id}/train",
                           {"inputs": XOR_INPUTS, "targets": XOR_TARGETS, **fields})
        assert answer.status == 200, answer.body
        return [json.loads(line) for line in answer.body.splitlines() if line]


def _answer(status: int, raw: bytes, headers) -> Answer:
    kind = headers.get("Content-Type", "")
    text = raw.decode("utf-8")
    if kind.startswith("application/json"):
        return Answer(status, json.loads(text), dict(headers))
    return Answer(status, text, dict(headers))


@pytest.fixture
def page_server(make_server):
    """A server with its page; `.handle.web` is the page's WebServer."""
    return make_server(web_port=0)


@pytest.fixture
def page(page_server) -> PageApi:
    return PageApi(page_server.handle.web.url)
