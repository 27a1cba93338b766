"""The page API's errors: each gRPC status the server answers arrives as its one HTTP status
with the server's message (each made to happen on a real server), and the API's own guards
(content type, body size, Host and Origin, the token)."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest
from grpc import StatusCode

from jitnet.client import Client, errors
from jitnet.service.web import WebServer, http_status

from .conftest import XOR_INPUTS, XOR_TARGETS, PageApi

# The brief's table (api.md's errors, as HTTP says them).
EXPECTED = {
    StatusCode.INVALID_ARGUMENT: 400, StatusCode.OUT_OF_RANGE: 400,
    StatusCode.UNAUTHENTICATED: 401, StatusCode.PERMISSION_DENIED: 403,
    StatusCode.NOT_FOUND: 404, StatusCode.ALREADY_EXISTS: 409, StatusCode.ABORTED: 409,
    StatusCode.FAILED_PRECONDITION: 412, StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.UNIMPLEMENTED: 501, StatusCode.UNAVAILABLE: 503, StatusCode.CANCELLED: 503,
    StatusCode.DEADLINE_EXCEEDED: 504, StatusCode.INTERNAL: 500,
}


@pytest.mark.parametrize("code", [c for c in StatusCode if c is not StatusCode.OK],
                         ids=lambda c: c.name)
def test_every_grpc_status_has_one_http_status_and_keeps_its_message(code):
    error = http_status.from_call(errors.error_for(code, f"the server says {code.name}"))
    assert int(error.status) == EXPECTED.get(code, 500)
    assert error.to_json() == {"error": {"status": EXPECTED.get(code, 500), "code": code.name,
                                         "message": f"the server says {code.name}"}}


def expect(answer, status: int, code: str, *words: str) -> str:
    assert answer.status == status, answer.body
    assert answer.error["status"] == status and answer.error["code"] == code, answer.body
    for word in words:
        assert word in answer.error["message"], answer.error["message"]
    return answer.error["message"]


def test_invalid_argument_not_found_already_exists(page):
    expect(page.post("/api/models", {"layer_sizes": [2, 4, 1], "hidden": "softmax"}), 400,
           "INVALID_ARGUMENT", "SOFTMAX", "output layer only")
    expect(page.get("/api/models/nope"), 404, "NOT_FOUND", "'nope'")
    expect(page.post("/api/models/nope/step", {"input": [0, 1], "target": [1],
                                               "learning_rate": 0.1}), 404, "NOT_FOUND")
    page.create(model_id="taken")
    expect(page.post("/api/models", {"layer_sizes": [2, 1], "model_id": "taken"}), 409,
           "ALREADY_EXISTS", "taken")
    # A width the model does not take is the server's INVALID_ARGUMENT, before any stream.
    expect(page.post("/api/models/taken/train", {"inputs": [[1, 2, 3]], "targets": [[1]],
                                                 "epochs": 1, "learning_rate": 0.1}),
           400, "INVALID_ARGUMENT", "inputs")


def test_failed_precondition_for_a_diverging_train(page, page_server):
    model_id = page.post("/api/models", {"layer_sizes": [1, 1], "output": "linear"}).body["id"]
    # api.md: a non-finite loss fails the Train, the model keeps its last committed weights.
    expect(page.post(f"/api/models/{model_id}/train",
                     {"inputs": [[100.0], [-50.0]], "targets": [[1e3], [-2e3]], "epochs": 500,
                      "learning_rate": 10.0, "report_every": 500}),
           412, "FAILED_PRECONDITION", "learning rate")
    assert page.get(f"/api/models/{model_id}").body["version"] == 1


def test_aborted_while_the_page_trains_the_model(page):
    model_id = page.create()["id"]
    connection, response = open_train(page, model_id, epochs=10_000_000, report_every=1)
    try:
        assert json.loads(response.readline())["version"] >= 2
        expect(page.post(f"/api/models/{model_id}/step",
                         {"input": [0, 1], "target": [1], "learning_rate": 0.1}),
               409, "ABORTED", "being trained")
    finally:
        connection.close()


def test_resource_exhausted_over_a_server_limit(make_server):
    page = PageApi(make_server(web_port=0, limits={"max_rows": 3}).handle.web.url)
    model_id = page.create()["id"]
    expect(page.post(f"/api/models/{model_id}/predict", {"inputs": XOR_INPUTS}), 429,
           "RESOURCE_EXHAUSTED", "max_rows")


def test_unavailable_while_the_server_starts(make_server):
    release = threading.Event()
    server = make_server(web_port=0, warm_up=release.wait, wait_ready=False)
    page = PageApi(server.handle.web.url)
    try:
        expect(page.get("/api/models"), 503, "UNAVAILABLE")
        assert page.get("/api/info").body["health"] == "NOT_SERVING"  # the page waits on it
    finally:
        release.set()
    assert server.handle.wait_ready(10)
    assert page.get("/api/models").status == 200


def test_deadline_exceeded(page_server, monkeypatch):
    # The API's own deadline on its unary calls, shorter than a store that takes its time.
    slow = page_server.handle.store.page

    def slow_page(*args, **kwargs):
        time.sleep(0.5)
        return slow(*args, **kwargs)

    monkeypatch.setattr(page_server.handle.store, "page", slow_page)
    web = WebServer("127.0.0.1", 0, page_server.address, timeout=0.1).start()
    try:
        expect(PageApi(web.url).get("/api/models"), 504, "DEADLINE_EXCEEDED")
    finally:
        web.close()


def test_internal_is_500_with_the_servers_incident(page, page_server, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(page_server.handle.store, "page", broken)
    message = expect(page.get("/api/models"), 500, "INTERNAL", "incident")
    assert "a bug" not in message


def test_the_token_goes_on_to_the_server(make_server):
    server = make_server(web_port=0, auth_token="s3cret")
    page = PageApi(server.handle.web.url)
    assert page.get("/api/info").body["token_required"] is True  # health needs no token
    answer = page.get("/api/models")
    expect(answer, 401, "UNAUTHENTICATED", "token")
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="jitnet"'
    expect(page.get("/api/models", headers={"Authorization": "Bearer wrong"}), 401,
           "UNAUTHENTICATED")
    good = {"Authorization": "Bearer s3cret"}
    assert page.get("/api/models", headers=good).status == 200
    made = page.call("POST", "/api/models", {"layer_sizes": [2, 1]}, headers=good)
    assert made.status == 201
    # Over gRPC the model is there, for a client with the token.
    with Client(server.address, token="s3cret") as client:
        assert client.get_model(made.body["id"]).version == 1


@pytest.mark.parametrize("headers, data, status, words", [
    ({}, b'{"layer_sizes": [2, 1]}', 415, "Content-Type: application/json"),
    ({"Content-Type": "text/plain"}, b'{"layer_sizes": [2, 1]}', 415, "text/plain"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"layer_sizes=2", 415, "form"),
    ({"Content-Type": "application/json"}, b"{nope", 400, "not JSON"),
    ({"Content-Type": "application/json"}, b'{"layer_sizes": NaN}', 400, "NaN"),
    ({"Content-Type": "application/json"}, b"[2, 1]", 400, "JSON object"),
    ({"Content-Type": "application/json"}, b'{"layer_sizes": [2, 1], "seeed": 1}', 400,
     "'seeed'"),
    ({"Content-Type": "application/json"}, b'{"layer_sizes": "2,1"}', 400, "layer_sizes"),
    ({"Content-Type": "application/json", "Content-Length": str(5 << 20)}, b"{}", 413,
     "at most 4194304"),
    ({"Content-Type": "application/json", "Origin": "http://evil.example"}, b"{}", 403,
     "evil.example"),
    ({"Content-Type": "application/json", "Host": "evil.example:80"}, b"{}", 403,
     "Host header"),
])
def test_the_api_refuses_what_it_cannot_take(page, headers, data, status, words):
    if "form" in words:
        words = "application/x-www-form-urlencoded"
    answer = page.call("POST", "/api/models", data=data, headers=headers)
    assert answer.status == status, answer.body
    assert words in answer.error["message"], answer.error
    assert page.get("/api/models").body["models"] == []  # nothing was made


def test_a_json_body_of_the_page_s_own_origin_is_taken(page):
    answer = page.call("POST", "/api/models", {"layer_sizes": [2, 1]},
                       headers={"Origin": page.url})
    assert answer.status == 201


def test_wrong_methods_and_routes(page):
    answer = page.call("PUT", "/api/models", {})
    assert answer.status == 405 and answer.headers["Allow"] == "GET, POST"
    assert page.get("/api/nothing").status == 404
    assert page.get("/api/models/x/train").status == 405
    answer = page.call("DELETE", "/api/models/x", data=b"")  # no Content-Type: not a change
    assert answer.status == 415


def test_a_body_without_a_length_is_refused(page_server):
    connection = http.client.HTTPConnection("127.0.0.1", page_server.handle.web.port, timeout=10)
    try:
        connection.putrequest("POST", "/api/models")
        connection.putheader("Content-Type", "application/json")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 411
        assert response.getheader("Connection") == "close"
    finally:
        connection.close()


def open_train(page: PageApi, model_id: str, *, answer: bool = True, **fields):
    """A Train stream on a connection of its own: (connection, response), the response None
    unless `answer` (which waits for the first line, when the headers come)."""
    host, port = page.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps({"inputs": XOR_INPUTS, "targets": XOR_TARGETS, "learning_rate": 0.5,
                       **fields})
    connection.request("POST", f"/api/models/{model_id}/train", body,
                       {"Content-Type": "application/json"})
    if not answer:
        return connection, None
    response = connection.getresponse()
    assert response.status == 200
    return connection, response


def test_query_values_the_api_cannot_read_name_their_field(page):
    model_id = page.create()["id"]
    for query, field in (("x=1&y=0,1", "x must be 2 numbers"), ("x=0,1&y=0,nan", "y must"),
                         ("x=0,1&y=0,1&steps=500", "steps must"),
                         ("x=0,1&y=0,1&steps=two", "steps must")):
        expect(page.get(f"/api/models/{model_id}/frame?{query}"), 400, "INVALID_ARGUMENT", field)
    expect(page.get(f"/api/models/{model_id}/activations?input=abc"), 400, "INVALID_ARGUMENT",
           "input must")
    wide = page.post("/api/models", {"layer_sizes": [3, 1]}).body["id"]
    expect(page.get(f"/api/models/{wide}/frame?x=0,1&y=0,1"), 400, "INVALID_ARGUMENT",
           "2 inputs", "has 3")
