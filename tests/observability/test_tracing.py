"""OpenTelemetry spans (--tracing, the `otel` extra), read back through the SDK's in-memory
exporter, and exported over OTLP/gRPC by a server process to a collector made here."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from jitnet.service.protocols import prediction
from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import TIMEOUT, XOR_X, XOR_Y, code_of, create, tensor, wait_for

C = grpc.StatusCode
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"


@pytest.fixture(scope="session")
def exporter():
    """The process's tracer provider (set once per process, as OpenTelemetry allows): a
    server with --tracing uses it instead of making its own."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider
    return memory


@pytest.fixture
def spans(exporter):
    exporter.clear()
    return exporter


def _by_name(exporter, name):
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_a_server_span_per_call_with_model_rows_and_code(make_server, spans):
    server = make_server(tracing=True)
    create(server.stub, "xor")
    server.stub.Predict(pb.PredictRequest(model_id="xor", inputs=tensor(np.zeros((3, 2)))),
                        timeout=TIMEOUT)
    assert code_of(lambda: server.stub.Predict(pb.PredictRequest(
        model_id="nope", inputs=tensor([[1.0, 0.0]], raw=True)), timeout=TIMEOUT)) == C.NOT_FOUND
    ok, missing = _by_name(spans, "jitnet.v1.NetworkService/Predict")
    assert ok.kind == SpanKind.SERVER
    assert ok.attributes["rpc.system"] == "grpc"
    assert ok.attributes["rpc.service"] == "jitnet.v1.NetworkService"
    assert ok.attributes["rpc.method"] == "Predict"
    assert ok.attributes["rpc.grpc.status_code"] == 0
    assert ok.attributes["jitnet.model_id"] == "xor" and ok.attributes["jitnet.rows"] == 3
    assert ok.status.status_code == StatusCode.UNSET
    # NOT_FOUND is the caller's doing: the span is no error (OpenTelemetry's gRPC conventions).
    assert missing.attributes["rpc.grpc.status_code"] == C.NOT_FOUND.value[0]
    assert missing.attributes["jitnet.model_id"] == "nope"
    assert missing.status.status_code == StatusCode.UNSET
    assert ok.parent is None  # no trace context sent: a new trace
    [create_span] = _by_name(spans, "jitnet.v1.NetworkService/CreateModel")
    assert create_span.context.trace_id != ok.context.trace_id


def test_the_trace_context_of_the_metadata_is_the_parent(make_server, spans):
    server = make_server(tracing=True)
    create(server.stub, "xor")
    server.stub.Predict(pb.PredictRequest(model_id="xor", inputs=tensor([[1.0, 0.0]], raw=True)),
                        timeout=TIMEOUT, metadata=(("traceparent", TRACEPARENT),))
    [span] = _by_name(spans, "jitnet.v1.NetworkService/Predict")
    assert span.context.trace_id == TRACE_ID
    assert span.parent is not None and span.parent.span_id == PARENT_ID
    assert span.parent.is_remote


def test_train_has_child_spans_for_its_chunks_and_commits(make_server, spans):
    server = make_server(tracing=True)
    create(server.stub, "xor")
    progress = list(server.stub.Train(pb.TrainRequest(
        model_id="xor", inputs=tensor(XOR_X, raw=True), targets=tensor(XOR_Y, raw=True),
        epochs=30, learning_rate=0.5, report_every=10), timeout=TIMEOUT,
        metadata=(("traceparent", TRACEPARENT),)))
    [call] = _by_name(spans, "jitnet.v1.NetworkService/Train")
    chunks = _by_name(spans, "jitnet.train.chunk")
    commits = _by_name(spans, "jitnet.store.commit")
    assert call.attributes["jitnet.messages"] == len(progress) == 3
    assert sum(c.attributes["jitnet.epochs"] for c in chunks) == 30
    assert sum(c.attributes["jitnet.iterations"] for c in chunks) == 30 * 4
    assert [c.attributes["jitnet.model_version"] for c in commits] == [2, 3, 4]
    for child in chunks + commits:
        assert child.parent.span_id == call.context.span_id
        assert child.context.trace_id == TRACE_ID
        assert call.start_time <= child.start_time <= child.end_time <= call.end_time


def test_internal_errors_are_error_spans_and_the_access_log_names_the_trace(
        make_server, spans, caplog, monkeypatch):
    import logging

    caplog.set_level(logging.INFO)
    server = make_server(tracing=True, access_log=True)
    create(server.stub, "xor")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(prediction, "predict", broken)
    assert code_of(lambda: server.stub.Predict(pb.PredictRequest(
        model_id="xor", inputs=tensor(np.zeros((2, 2)))), timeout=TIMEOUT,
        metadata=(("x-request-id", "req-span"),))) == C.INTERNAL
    [span] = _by_name(spans, "jitnet.v1.NetworkService/Predict")
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["jitnet.request_id"] == "req-span"
    [line] = [r for r in caplog.records if r.name == "jitnet.access"
              and r.request_id == "req-span"]
    assert line.access["trace_id"] == f"{span.context.trace_id:032x}"


def test_no_spans_without_tracing_and_none_for_probes(make_server, spans):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    plain = make_server()
    create(plain.stub, "xor")
    traced = make_server(tracing=True)
    health_pb2_grpc.HealthStub(traced.channel).Check(health_pb2.HealthCheckRequest(),
                                                     timeout=TIMEOUT)
    assert spans.get_finished_spans() == ()


def test_without_the_extra_tracing_is_a_clear_start_failure_and_off_costs_nothing(tmp_path):
    program = f"""
import sys
sys.modules["opentelemetry"] = None  # as if `pip install jitnet[otel]` had not been run
from jitnet.service.server import main as server
code = server.main(["--host", "127.0.0.1", "--port", "0", "--data-dir", {str(tmp_path)!r},
                    "--tracing"])
print("exit", code)
"""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "exit 1", out.stderr
    assert "--tracing needs OpenTelemetry: pip install 'jitnet[otel]'" in out.stderr


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver, as an OpenTelemetry collector runs one."""

    def __init__(self):
        self.spans = []  # (resource attributes, span)
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value
                            for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    self.spans.extend((resource, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector():
    receiver = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, port
    server.stop(None)


def test_a_server_process_exports_its_spans_over_otlp(spawn, collector):
    receiver, port = collector
    server = spawn("--tracing", env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                                     "OTEL_EXPORTER_OTLP_INSECURE": "true",
                                     "OTEL_BSP_SCHEDULE_DELAY": "50",
                                     "OTEL_TRACES_EXPORTER": "otlp"})
    create(server.stub, "xor")
    server.stub.Predict(pb.PredictRequest(model_id="xor", inputs=tensor([[1.0, 0.0]], raw=True)),
                        timeout=TIMEOUT, metadata=(("traceparent", TRACEPARENT),))

    def exported():
        with receiver.lock:
            return [(r, s) for r, s in receiver.spans
                    if s.name == "jitnet.v1.NetworkService/Predict"]

    [(resource, span)] = wait_for(exported, 20, 0.05, "the Predict span at the collector")
    assert resource["service.name"] == "jitnet"
    assert span.trace_id == TRACE_ID.to_bytes(16, "big")
    assert span.parent_span_id == PARENT_ID.to_bytes(8, "big")
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["jitnet.model_id"].string_value == "xor"
    assert attributes["jitnet.rows"].int_value == 1
