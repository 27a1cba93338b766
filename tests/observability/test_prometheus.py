"""A real Prometheus scrapes a real jitnet server: after a known set of calls, PromQL through
Prometheus's HTTP API gives exactly those counts; the shipped alert rules load and one fires
on real metrics; every panel query of the shipped Grafana dashboard runs without error."""

from __future__ import annotations

import json
import math

import grpc
import numpy as np
import pytest

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import TIMEOUT, XOR_X, XOR_Y, code_of, create, tensor, wait_for

from .prometheus import ROOT, Prometheus

C = grpc.StatusCode
DASHBOARD = ROOT / "deploy" / "grafana" / "jitnet.json"
NETWORK = 'grpc_service="jitnet.v1.NetworkService"'


@pytest.fixture
def scraped(make_server, tmp_path):
    server = make_server(metrics_port=0)
    prometheus = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{server.handle.metrics_port}"])
    yield server, prometheus
    prometheus.stop()


def _train(stub, model_id, learning_rate=0.5):
    return list(stub.Train(pb.TrainRequest(
        model_id=model_id, inputs=tensor(XOR_X, raw=True), targets=tensor(XOR_Y, raw=True),
        epochs=20, learning_rate=learning_rate, report_every=10), timeout=TIMEOUT))


def _predict(stub, model_id, rows, raw=True):
    return stub.Predict(pb.PredictRequest(model_id=model_id, inputs=tensor(rows, raw=raw)),
                        timeout=TIMEOUT)


def _scalar(prometheus, promql: str) -> float:
    [sample] = prometheus.query(promql)
    return float(sample["value"][1])


def test_prometheus_counts_exactly_what_was_called(scraped):
    server, prometheus = scraped
    stub = server.stub
    create(stub, "xor")
    _predict(stub, "xor", [[0.0, 1.0]])
    # Prometheus has seen the server with these first calls before the rest are made, so the
    # rates below span calls made between two scrapes.
    wait_for(lambda: prometheus.query(
        f'grpc_server_handled_total{{{NETWORK},grpc_method="Predict",grpc_code="OK"}} == 1'),
        30, 0.2, "the first Predict in Prometheus")

    for _ in range(4):
        _predict(stub, "xor", [[1.0, 0.0]])
    for _ in range(3):
        _predict(stub, "xor", np.zeros((10, 2)), raw=False)
    for _ in range(3):
        assert code_of(lambda: _predict(stub, "nope", [[1.0, 0.0]])) == C.NOT_FOUND
    raw = server.channel.unary_unary("/jitnet.v1.NetworkService/Predict")
    for _ in range(2):
        assert code_of(lambda: raw(b"\xff\xff\xff", timeout=TIMEOUT)) == C.INVALID_ARGUMENT
    assert [len(_train(stub, "xor")) for _ in range(2)] == [2, 2]
    assert code_of(lambda: _train(stub, "nope")) == C.NOT_FOUND
    create(stub, "linear", hidden_activation=pb.ACTIVATION_LINEAR,
           output_activation=pb.ACTIVATION_LINEAR)
    assert code_of(lambda: _train(stub, "linear", learning_rate=1e6)) == C.FAILED_PRECONDITION
    assert code_of(lambda: create(stub, "xor")) == C.ALREADY_EXISTS

    expected = {("Predict", "OK"): 8, ("Predict", "NotFound"): 3,
                ("Predict", "InvalidArgument"): 2, ("Train", "OK"): 2, ("Train", "NotFound"): 1,
                ("Train", "FailedPrecondition"): 1, ("CreateModel", "OK"): 2,
                ("CreateModel", "AlreadyExists"): 1}

    def handled():
        result = prometheus.query(f"sum by (grpc_method, grpc_code) "
                                  f"(grpc_server_handled_total{{{NETWORK}}}) > 0")
        return {(r["metric"]["grpc_method"], r["metric"]["grpc_code"]): int(r["value"][1])
                for r in result}

    wait_for(lambda: handled() == expected, 30, 0.25, f"Prometheus to count {expected}")
    started = {r["metric"]["grpc_method"]: int(r["value"][1]) for r in prometheus.query(
        f"sum by (grpc_method) (grpc_server_started_total{{{NETWORK}}}) > 0")}
    assert started == {"Predict": 13, "Train": 4, "CreateModel": 3}
    assert _scalar(prometheus, 'sum(grpc_server_msg_sent_total{grpc_method="Train"})') == 4
    assert _scalar(prometheus, 'sum(grpc_server_msg_received_total{grpc_method="Train"})') == 4
    assert _scalar(prometheus, 'sum(jitnet_request_rows_sum{grpc_method="Predict"})') == 35
    assert _scalar(prometheus, 'sum(jitnet_request_rows_count{grpc_method="Predict"})') == 8
    assert _scalar(prometheus, "jitnet_commit_seconds_count") == 4  # 2 Trains x 2 progress
    assert _scalar(prometheus, "jitnet_train_divergences_total") == 1
    assert _scalar(prometheus, "jitnet_models") == 2
    assert _scalar(prometheus, 'up{job="jitnet"}') == 1
    for q in (0.5, 0.99):
        seconds = _scalar(prometheus, f"histogram_quantile({q}, sum by (le) (rate("
                                      f"grpc_server_handling_seconds_bucket{{{NETWORK},"
                                      f'grpc_method="Predict"}}[1m])))')
        assert math.isfinite(seconds) and 0 < seconds < 60, (q, seconds)

    # The shipped rules: loaded, evaluated without error; the divergence alert fires.
    def evaluated():
        groups = prometheus.api("rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if all(r.get("lastEvaluation", "").startswith("20") for r in rules) \
            else None

    rules = wait_for(evaluated, 30, 0.25, "the rules evaluated")
    assert {r["name"] for r in rules} == {"JitnetHighErrorRatio", "JitnetPredictLatencyHigh",
                                          "JitnetReplicaDown", "JitnetNoReplicas",
                                          "JitnetModelDiverged"}
    assert all(r["health"] == "ok" for r in rules), rules

    def firing():
        alerts = prometheus.api("alerts")["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

    assert wait_for(lambda: firing() or None, 30, 0.25, "an alert firing") == {
        "JitnetModelDiverged"}

    # Every panel query of the dashboard answers; the traffic panels have data.
    dashboard = json.loads(DASHBOARD.read_text())
    answers = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            promql = target["expr"].replace("$__rate_interval", "1m")
            answer = prometheus.api("query", query=promql)
            assert answer["status"] == "success", (panel["title"], promql, answer)
            answers.setdefault(panel["title"], []).append(answer["data"]["result"])
    assert len(answers) == len(dashboard["panels"]) >= 6
    for title in ("Requests per second by method", "Latency p50 / p99 by method (unary)",
                  "Predict rows per second", "Train epochs per second", "Commits"):
        assert all(answers[title][0]), f"no data in the first query of {title!r}"
    methods = {r["metric"]["grpc_method"] for r in answers["Requests per second by method"][0]}
    assert {"Predict", "Train", "CreateModel"} <= methods
