"""The access log (--access-log), request ids, and --log-format json."""

from __future__ import annotations

import json
import logging
import re

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jitnet.service.protocols import prediction
from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import TIMEOUT, XOR_X, XOR_Y, code_of, create, error_of, tensor, wait_for

C = grpc.StatusCode


def _predict(stub, model_id, rows, raw=True, request_id=None):
    metadata = (("x-request-id", request_id),) if request_id else None
    return stub.Predict.with_call(
        pb.PredictRequest(model_id=model_id, inputs=tensor(rows, raw=raw)), timeout=TIMEOUT,
        metadata=metadata)


def _returned_id(call) -> str | None:
    return dict(call.trailing_metadata() or ()).get("x-request-id")


def _access(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "jitnet.access"]


@pytest.fixture
def logged(make_server, caplog):
    caplog.set_level(logging.INFO)
    return make_server(access_log=True)


def test_one_line_per_call_with_the_clients_request_id(logged, caplog):
    create(logged.stub, "xor")
    caplog.clear()
    _, call = _predict(logged.stub, "xor", [[0.0, 1.0]], request_id="req-42")
    assert _returned_id(call) == "req-42"
    [line] = _access(caplog)
    assert line.request_id == "req-42"
    assert line.access["method"] == "jitnet.v1.NetworkService/Predict"
    assert line.access["code"] == "OK"
    assert line.access["model_id"] == "xor" and line.access["rows"] == 1
    assert line.access["peer"].startswith("ipv4:127.0.0.1:")
    assert 0 < line.access["duration_ms"] < 60_000
    text = line.getMessage()
    assert re.fullmatch(r"jitnet\.v1\.NetworkService/Predict OK [0-9.]+ ms peer=ipv4:127\.0\.0"
                        r"\.1:\d+ model=xor rows=1", text), text


def test_a_request_id_is_made_up_when_missing_or_unusable(logged, caplog):
    create(logged.stub, "xor")
    caplog.clear()
    _, first = _predict(logged.stub, "xor", [[0.0, 1.0]])
    _, second = _predict(logged.stub, "xor", [[0.0, 1.0]], request_id="x" * 200)
    made = [_returned_id(first), _returned_id(second)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", m) for m in made) and made[0] != made[1]
    assert [r.request_id for r in _access(caplog)] == made
    # Failed calls are returned their id too, and logged with their code and rows.
    error = error_of(lambda: _predict(logged.stub, "nope", np.zeros((3, 2)), raw=False,
                                      request_id="req-nf"))
    assert error.code() == C.NOT_FOUND
    assert dict(error.trailing_metadata())["x-request-id"] == "req-nf"
    last = _access(caplog)[-1]
    assert (last.request_id, last.access["code"], last.access["rows"]) == ("req-nf",
                                                                         "NOT_FOUND", 3)


def test_every_line_of_a_call_has_its_id_internal_incidents_included(logged, caplog,
                                                                      monkeypatch):
    create(logged.stub, "xor")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(prediction, "predict", broken)
    caplog.clear()
    error = error_of(lambda: _predict(logged.stub, "xor", np.zeros((2, 2)), raw=False,
                                      request_id="req-bug"))
    assert error.code() == C.INTERNAL
    incident = re.search(r"incident (\w+)", error.details()).group(1)
    lines = [r for r in caplog.records if getattr(r, "request_id", None) == "req-bug"]
    names = [r.name for r in lines]
    assert names == ["jitnet.service.protocols.status", "jitnet.access"], names
    assert incident in lines[0].getMessage() and lines[0].exc_info is not None
    assert lines[1].access["code"] == "INTERNAL"
    # Lines outside any call carry no id.
    logging.getLogger("jitnet.test").info("outside")
    assert caplog.records[-1].request_id is None


def test_streams_health_and_malformed_requests(logged, caplog):
    create(logged.stub, "xor")
    caplog.clear()
    list(logged.stub.Train(pb.TrainRequest(
        model_id="xor", inputs=tensor(XOR_X, raw=True), targets=tensor(XOR_Y, raw=True),
        epochs=20, learning_rate=0.5, report_every=10), timeout=TIMEOUT,
        metadata=(("x-request-id", "req-train"),)))
    health_pb2_grpc.HealthStub(logged.channel).Check(health_pb2.HealthCheckRequest(),
                                                     timeout=TIMEOUT)
    raw = logged.channel.unary_unary("/jitnet.v1.NetworkService/Predict")
    assert code_of(lambda: raw(b"\xff\xff", timeout=TIMEOUT)) == C.INVALID_ARGUMENT
    train, malformed = _access(caplog)  # probes are not logged: they would bury the calls
    assert train.request_id == "req-train"
    assert (train.access["code"], train.access["messages"], train.access["rows"]) == (
        "OK", 2, 4)
    assert "messages=2" in train.getMessage()
    assert malformed.access["code"] == "INVALID_ARGUMENT"
    assert malformed.access["model_id"] is None and malformed.access["rows"] is None


def test_access_lines_show_whatever_the_log_level(logged):
    assert logging.getLogger("jitnet.access").level == logging.INFO


def test_off_by_default_no_lines_and_no_id(server, caplog):
    caplog.set_level(logging.INFO)
    create(server.stub, "xor")
    _, call = _predict(server.stub, "xor", [[0.0, 1.0]], request_id="req-1")
    assert _returned_id(call) is None
    assert _access(caplog) == []


def test_json_lines_from_a_server_process(spawn):
    server = spawn("--access-log", "--log-format", "json")
    create(server.stub, "xor")
    server.stub.Predict(pb.PredictRequest(model_id="xor", inputs=tensor([[1.0, 0.0]], raw=True)),
                        timeout=TIMEOUT, metadata=(("x-request-id", "req-json"),))
    lines = wait_for(lambda: [json.loads(text) for text in server.lines
                              if '"jitnet.access"' in text and "req-json" in text], 10,
                     what="the access line")
    everything = [json.loads(line) for line in server.lines]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(everything[0])
    [line] = lines
    assert line["request_id"] == "req-json" and line["code"] == "OK"
    assert line["method"] == "jitnet.v1.NetworkService/Predict"
    assert line["model_id"] == "xor" and line["rows"] == 1 and line["level"] == "INFO"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


def test_text_lines_from_a_server_process_end_with_the_request_id(spawn):
    server = spawn("--access-log", "on")
    create(server.stub, "xor")
    server.stub.Predict(pb.PredictRequest(model_id="xor", inputs=tensor([[1.0, 0.0]], raw=True)),
                        timeout=TIMEOUT, metadata=(("x-request-id", "req-text"),))
    [line] = wait_for(lambda: [text for text in server.lines if "jitnet.access" in text
                               and "Predict" in text], 10, what="the access line")
    assert re.fullmatch(r"\S+ \S+ INFO jitnet\.access: jitnet\.v1\.NetworkService/Predict OK "
                        r"[0-9.]+ ms peer=ipv4:127\.0\.0\.1:\d+ model=xor rows=1 "
                        r"request_id=req-text\n", line), line


def test_the_clients_errors_carry_the_request_id(logged, caplog):
    from jitnet.client import Client, NotFound

    with Client(f"127.0.0.1:{logged.port}") as client, pytest.raises(NotFound) as info:
        client.predict("nope", np.zeros(2))
    [line] = [r for r in _access(caplog) if r.access["code"] == "NOT_FOUND"]
    assert info.value.request_id == line.request_id
    assert str(info.value).endswith(f"(request id {line.request_id})")
