"""Prometheus metrics of a real server (--metrics-port): every count exact, by method and code."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import (
    TIMEOUT,
    XOR_X,
    XOR_Y,
    code_of,
    create,
    long_train_request,
    tensor,
    wait_for,
)

from .scrape import JITNET, Scrape

C = grpc.StatusCode
PREDICT = f"/{JITNET}/Predict"


def _predict(stub, model_id: str, rows, raw: bool = True):
    return stub.Predict(pb.PredictRequest(model_id=model_id, inputs=tensor(rows, raw=raw)),
                        timeout=TIMEOUT)


def _train(stub, model_id: str, epochs: int, report_every: int, learning_rate: float = 0.5):
    return list(stub.Train(pb.TrainRequest(
        model_id=model_id, inputs=tensor(XOR_X, raw=True), targets=tensor(XOR_Y, raw=True),
        epochs=epochs, learning_rate=learning_rate, report_every=report_every),
        timeout=TIMEOUT))


@pytest.fixture
def metered(make_server):
    return make_server(metrics_port=0)


def test_each_call_is_counted_once_by_method_and_code(metered):
    stub = metered.stub
    create(metered.stub, "xor")
    assert code_of(lambda: create(stub, "xor")) == C.ALREADY_EXISTS
    for _ in range(3):
        _predict(stub, "xor", [[0.0, 1.0]])  # the one-sample fast path
    for _ in range(2):
        _predict(stub, "xor", np.zeros((5, 2)), raw=False)  # the general path, 5 rows
    assert code_of(lambda: _predict(stub, "nope", [[0.0, 1.0]])) == C.NOT_FOUND
    raw = metered.channel.unary_unary(PREDICT)
    assert code_of(lambda: raw(b"\xff\xff\xff", timeout=TIMEOUT)) == C.INVALID_ARGUMENT
    made_up = metered.channel.unary_unary(f"/{JITNET}/NoSuchMethod")
    assert code_of(lambda: made_up(b"", timeout=TIMEOUT)) == C.UNIMPLEMENTED
    progress = _train(stub, "xor", epochs=30, report_every=10)
    assert len(progress) == 3

    s = Scrape(metered.handle.metrics_port)
    predict = dict(grpc_type="unary", grpc_service=JITNET, grpc_method="Predict")
    assert s.handled("Predict") == {"OK": 5, "NotFound": 1, "InvalidArgument": 1}
    assert s.handled("CreateModel") == {"OK": 1, "AlreadyExists": 1}
    assert s.handled("Train") == {"OK": 1}
    assert s.value("grpc_server_started_total", **predict) == 7
    assert s.value("grpc_server_msg_received_total", **predict) == 7
    assert s.value("grpc_server_msg_sent_total", **predict) == 5  # the failed calls sent none
    assert s.value("grpc_server_handling_seconds_count", **predict) == 7
    assert 0 < s.value("grpc_server_handling_seconds_sum", **predict) < 60
    assert s.value("grpc_server_handling_seconds_bucket", le="+Inf", **predict) == 7
    train = dict(grpc_type="server_stream", grpc_service=JITNET, grpc_method="Train")
    assert s.value("grpc_server_msg_received_total", **train) == 1
    assert s.value("grpc_server_msg_sent_total", **train) == 3  # one per progress message
    # Rows of the calls that succeeded: three of 1, two of 5; Train's 4 rows.
    assert s.value("jitnet_request_rows_count", **predict) == 5
    assert s.value("jitnet_request_rows_sum", **predict) == 13
    assert s.value("jitnet_request_rows_bucket", le="1.0", **predict) == 3
    assert s.value("jitnet_request_rows_bucket", le="5.0", **predict) == 5
    assert s.value("jitnet_request_rows_sum", **train) == 4
    # Label sets are bounded: the methods that exist (not the made-up one), the 17 codes.
    assert "NoSuchMethod" not in s.labels("grpc_server_started_total", "grpc_method")
    assert len(s.labels("grpc_server_handled_total", "grpc_code")) == 17
    assert s.value("grpc_server_started_total", grpc_method="GetModel") == 0  # present, at 0


def test_counts_from_many_threads_at_once_are_exact(metered):
    create(metered.stub, "xor")
    threads, per_thread = 8, 40

    def work():
        for _ in range(per_thread):
            _predict(metered.stub, "xor", [[1.0, 0.0]])

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    s = Scrape(metered.handle.metrics_port)
    assert s.handled("Predict") == {"OK": threads * per_thread}
    assert s.value("grpc_server_msg_sent_total", grpc_method="Predict") == threads * per_thread


def test_training_commits_divergence_conflicts_and_models(metered):
    stub = metered.stub
    create(stub, "a")
    create(stub, "b", hidden_activation=pb.ACTIVATION_LINEAR,
           output_activation=pb.ACTIVATION_LINEAR)  # linear: a huge learning rate overflows
    progress = _train(stub, "a", epochs=40, report_every=10)
    assert code_of(lambda: _train(stub, "b", epochs=200, report_every=200,
                                  learning_rate=1e6)) == C.FAILED_PRECONDITION
    with metered.handle.store.lease("a"):  # another call holds the model: Train is refused
        assert code_of(lambda: _train(stub, "a", epochs=1, report_every=1)) == C.ABORTED
        assert code_of(lambda: stub.DeleteModel(pb.DeleteModelRequest(model_id="a"),
                                                timeout=TIMEOUT)) == C.ABORTED
    stub.Step(pb.StepRequest(model_id="a", input=[0.0, 1.0], target=[1.0],
                             learning_rate=0.5), timeout=TIMEOUT)

    s = Scrape(metered.handle.metrics_port)
    assert len(progress) == 4
    epochs = s.value("jitnet_train_epochs_total")
    assert 40 < epochs <= 240  # all of a's, and what b ran before it diverged
    assert s.value("jitnet_train_iterations_total") == 4 * epochs  # XOR: 4 rows an epoch
    assert s.value("jitnet_train_divergences_total") == 1
    assert s.value("jitnet_lease_conflicts_total") == 2
    assert s.value("jitnet_commit_seconds_count") == 4 + 1  # a's 4 progress commits, the Step
    assert s.value("jitnet_commit_seconds_sum") > 0
    assert s.value("jitnet_models") == 2
    assert s.value("jitnet_store_errors_total") == 0


def test_an_unreadable_model_file_is_one_store_error(make_server, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "broken.jitnet").write_bytes(b"not a model at all")
    server = make_server(metrics_port=0)  # start-up finds it unreadable
    for _ in range(3):  # re-read on calls: the failure is counted once, not per call
        assert code_of(lambda: server.stub.GetModel(
            pb.GetModelRequest(model_id="broken"), timeout=TIMEOUT)) == C.FAILED_PRECONDITION
        time.sleep(0.12)  # past refresh_seconds (0.1 in the harness)
    s = Scrape(server.handle.metrics_port)
    assert s.value("jitnet_store_errors_total", kind="unreadable") == 1
    assert s.value("jitnet_store_errors_total", kind="disk_full") == 0
    assert s.value("jitnet_models") == 1
    assert s.handled("GetModel") == {"FailedPrecondition": 3}


def test_a_cancelled_stream_is_counted_canceled(metered):
    create(metered.stub, "long")
    calls = metered.stub.Train(long_train_request("long"), timeout=TIMEOUT)
    next(calls)  # training and committing
    calls.cancel()
    wait_for(lambda: Scrape(metered.handle.metrics_port).handled("Train") == {"Canceled": 1},
             10, 0.05, "the cancelled Train counted")


def test_health_is_counted_and_warm_up_measured(make_server):
    def warm_up():
        time.sleep(0.05)

    server = make_server(metrics_port=0, warm_up=warm_up)
    health = health_pb2_grpc.HealthStub(server.channel)
    for _ in range(2):
        health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    assert code_of(lambda: health.Check(health_pb2.HealthCheckRequest(service="nope"),
                                        timeout=TIMEOUT)) == C.NOT_FOUND
    s = Scrape(server.handle.metrics_port)
    assert s.handled("Check", "grpc.health.v1.Health") == {"OK": 2, "NotFound": 1}
    assert 0.05 <= s.value("jitnet_warmup_seconds") < 30
    # The process and Python collectors.
    assert s.value("process_cpu_seconds_total") > 0
    assert s.value("process_resident_memory_bytes") > 0
    assert s.value("python_info") == 1
    assert "python_gc_objects_collected_total" in {n for n, _, _ in s.samples}


def test_metrics_port_taken_is_a_clear_start_failure(make_server, tmp_path):
    first = make_server(metrics_port=0)
    from jitnet.service.config import Config
    from jitnet.service.server.lifecycle import create_server

    with pytest.raises(RuntimeError, match=f"could not serve metrics on 127.0.0.1:"
                                           f"{first.handle.metrics_port}"):
        create_server(Config(host="127.0.0.1", port=0, data_dir=str(tmp_path / "other"),
                             metrics_port=first.handle.metrics_port))


def test_metrics_end_with_the_server(make_server):
    server = make_server(metrics_port=0)
    port = server.handle.metrics_port
    Scrape(port)
    server.handle.drain(0).wait(10)
    wait_for(lambda: _refused(port), 10, 0.05, "/metrics closed")


def _refused(port: int) -> bool:
    try:
        Scrape(port)
    except OSError:
        return True
    return False


def test_off_by_default_nothing_wraps_and_nothing_is_imported():
    """Metrics off: no observer at all (handlers are the guard's own), and neither
    prometheus_client nor opentelemetry is imported by building and running a server."""
    program = """
import sys, tempfile
from jitnet.service.config import Config
from jitnet.service.server.lifecycle import create_server
handle = create_server(Config(host="127.0.0.1", port=0, data_dir=tempfile.mkdtemp()),
                       warm_up=lambda: None).start()
assert handle.wait_ready(30)
assert handle.observer is None and handle.metrics_port is None
assert handle.calls._observer is None
handle.drain(0).wait(10)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("prometheus_client", "opentelemetry")))
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
