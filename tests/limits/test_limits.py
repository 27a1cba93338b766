"""Limits: each one exactly at its value and one over; over a limit is RESOURCE_EXHAUSTED at
once, naming the setting (its flag, its variable and its value); nothing big is allocated
before the check; calls over the number at once are refused at once, never queued without
bound; message sizes both ways."""

from __future__ import annotations

import statistics
import time
import tracemalloc

import grpc
import numpy as np
import pytest

from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc
from tests.support.rpc import (
    SERVING,
    TIMEOUT,
    C,
    create,
    error_of,
    expect_error,
    finished,
    health_status,
    long_train_request,
    tensor,
    unless,
)
from tests.support.servers import start_in_process
from tests.support.stored import fingerprint, timed
from tests.support.waiting import wait_for


def _make(stub, sizes, bias=True, model_id=""):
    return lambda: stub.CreateModel(pb.CreateModelRequest(
        model_id=model_id, architecture=pb.Architecture(layer_sizes=sizes, bias=bias)),
        timeout=TIMEOUT)


def _train(stub, rows, epochs, n_in=1, n_out=1, model_id="m"):
    x, y = np.zeros((rows, n_in)), np.zeros((rows, n_out))
    return lambda: stub.Train(pb.TrainRequest(
        model_id=model_id, inputs=tensor(x, raw=True), targets=tensor(y, raw=True),
        epochs=epochs, learning_rate=0.1), timeout=TIMEOUT)


def _predict(stub, rows, n_in=1, model_id="m"):
    return lambda: stub.Predict(pb.PredictRequest(
        model_id=model_id, inputs=tensor(np.zeros((rows, n_in)), raw=True)), timeout=TIMEOUT)


def _size(result) -> int:
    """What a call at a limit was as big as: a model's parameters, a Predict's rows, a Train's
    iterations (rows x epochs, the work)."""
    if isinstance(result, pb.CreateModelResponse):
        return result.model.parameter_count
    if isinstance(result, pb.PredictResponse):
        return result.outputs.shape[0]
    assert result[-1].done
    return result[-1].iterations


LIMITS = dict(max_parameters=101, max_layer_width=100, max_layers=3, max_rows=10, max_work=1000)


@pytest.fixture(scope="module")
def limited(tmp_path_factory, warmed):
    """A server with small limits, and a model "m" of 1 input and 1 output."""
    server = start_in_process(tmp_path_factory.mktemp("limited"), limits=LIMITS)
    create(server.stub, "m", sizes=(1, 1))
    yield server
    server.close()


# limit, request, its arguments exactly at the limit, one over, the size at the limit, words
# of the refusal (besides the setting's flag, variable and value)
EXACTLY_AT_AND_ONE_OVER = [
    ("max_layer_width", _make, dict(sizes=[100, 1], bias=False), dict(sizes=[101, 1], bias=False),
     100, "layer_sizes[0] is 101"),
    ("max_layer_width", _make, dict(sizes=[1, 100], bias=False), dict(sizes=[1, 101], bias=False),
     100, "layer_sizes[1] is 101"),
    ("max_parameters", _make, dict(sizes=[100, 1]), dict(sizes=[50, 2]), 101, "102 parameters"),
    ("max_layers", _make, dict(sizes=[1, 1, 1, 1]), dict(sizes=[1, 1, 1, 1, 1]), 6, "4 layers"),
    ("max_rows", _predict, dict(rows=10), dict(rows=11), 10, "11 rows"),
    ("max_rows", _train, dict(rows=10, epochs=1), dict(rows=11, epochs=1), 10, "11 rows"),
    ("max_work", _train, dict(rows=10, epochs=100), dict(rows=10, epochs=101), 1000, "1010"),
    ("max_work", _train, dict(rows=1, epochs=1000), dict(rows=1, epochs=1001), 1000, "1001"),
]


@pytest.mark.parametrize("limit, call, at, over, size, words", EXACTLY_AT_AND_ONE_OVER)
def test_each_limit_exactly_at_and_one_over(limited, limit, call, at, over, size, words):
    stub = limited.stub
    assert _size(finished(call(stub, **at)())) == size
    expect_error(C.RESOURCE_EXHAUSTED, call(stub, **over), words,
                 "--" + limit.replace("_", "-"), "JITNET_" + limit.upper(), str(LIMITS[limit]))
    assert health_status(limited.channel) == SERVING


def test_a_refused_call_is_answered_at_once_and_changes_nothing(limited):
    stub = limited.stub
    before = fingerprint(limited.data_dir)
    latencies = []
    for call in [_train(stub, 11, 1), _train(stub, 10, 101), _predict(stub, 11),
                 _make(stub, [70000, 1])] * 3:
        result, seconds = timed(lambda call=call: finished(call()))
        assert isinstance(result, grpc.RpcError) and result.code() == C.RESOURCE_EXHAUSTED
        latencies.append(seconds)
    assert fingerprint(limited.data_dir) == before
    # "at once": no work was started. Generous bounds for a noisy 2-core box.
    assert statistics.median(latencies) < 0.1 and max(latencies) < 0.5, latencies


def _peak_bytes(call) -> tuple[object, int]:
    """(result, peak bytes allocated by Python and numpy, in any thread, during call())."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        result, _ = timed(call)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - base


def test_huge_declared_sizes_are_refused_before_anything_is_allocated(make_server):
    server = make_server()  # the default limits
    stub = server.stub
    create(stub, "wide", sizes=(1, 65536))  # as wide as the default limit allows
    create(stub, "m", sizes=(2, 1))
    huge = [
        # a layer of 10^9 neurons: the check is on the number, before any array exists
        (_make(stub, [2, 10**9, 1]), C.RESOURCE_EXHAUSTED, ["layer_sizes[1] is 1000000000",
                                                           "--max-layer-width"]),
        (_make(stub, [60000, 60000]), C.RESOURCE_EXHAUSTED, ["3600060000 parameters"]),
        (_make(stub, [4] * 100), C.RESOURCE_EXHAUSTED, ["99 layers", "--max-layers"]),
        # declared rows far past the limit, with almost no data sent
        (lambda: stub.Predict(pb.PredictRequest(model_id="m", inputs=pb.Tensor(
            shape=[10**9, 2], raw=b"\0" * 16)), timeout=TIMEOUT), C.RESOURCE_EXHAUSTED,
         ["1000000000 rows", "--max-rows"]),
        (lambda: stub.Train(pb.TrainRequest(
            model_id="m", inputs=pb.Tensor(shape=[4294967295, 2]), targets=pb.Tensor(
                shape=[4294967295, 1]), epochs=1, learning_rate=0.1), timeout=TIMEOUT),
         C.RESOURCE_EXHAUSTED, ["--max-rows"]),
        (_train(stub, 10, 4294967295, n_in=2), C.RESOURCE_EXHAUSTED, ["--max-work"]),
        # a shape whose product is astronomic, with one number sent
        (lambda: stub.Predict(pb.PredictRequest(model_id="m", inputs=pb.Tensor(
            shape=[1, 4294967295], values=[1.0])), timeout=TIMEOUT), C.INVALID_ARGUMENT,
         ["inputs.values has 1 numbers"]),
        # 10^6 rows (at the rows limit) through a 65536-wide output layer: the reply would be
        # 524 GB; it is refused before the outputs are allocated (8 MB of inputs are decoded)
        (_predict(stub, 1_000_000, model_id="wide"), C.RESOURCE_EXHAUSTED,
         ["Predict reply", "--max-message-bytes"]),
    ]
    for call, code, words in huge:
        result, peak = _peak_bytes(lambda call=call: finished(call()))
        assert isinstance(result, grpc.RpcError), result
        assert result.code() == code, (result.code(), result.details())
        for word in words:
            assert word in result.details(), (word, result.details())
        assert peak < 40 * 2**20, (words, peak)  # what the request itself carries, no more
    assert health_status(server.channel) == SERVING


def test_replies_that_cannot_fit_are_refused_before_they_are_built_or_committed(make_server):
    server = make_server(limits=dict(max_message_bytes=64 * 1024))
    stub = server.stub
    # 100 x 100 + 100 = 10100 parameters: 80 KB of weights, over a 64 KiB message
    created = stub.CreateModel(pb.CreateModelRequest(
        model_id="big", architecture=pb.Architecture(layer_sizes=[100, 100])), timeout=TIMEOUT)
    assert not created.model.layers  # created, but its weights do not fit in the reply
    create(stub, "wide", sizes=(1, 1000))
    before = fingerprint(server.data_dir)
    expect_error(C.RESOURCE_EXHAUSTED, lambda: stub.GetModel(pb.GetModelRequest(
        model_id="big", include_weights=True), timeout=TIMEOUT), "--max-message-bytes", "65536")
    # a Step reply carries the weights before and after: refused *before* the step, so the
    # model does not change behind an error
    for dry_run in (False, True):
        expect_error(C.RESOURCE_EXHAUSTED, lambda dry_run=dry_run: stub.Step(pb.StepRequest(
            model_id="big", input=[0.5] * 100, target=[1.0] * 100, learning_rate=0.1,
            dry_run=dry_run), timeout=TIMEOUT), "Step reply", "--max-message-bytes")
    # a Predict reply that cannot fit (20 rows of 1000 outputs), in the values form
    expect_error(C.RESOURCE_EXHAUSTED, lambda: stub.Predict(pb.PredictRequest(
        model_id="wide", inputs=tensor(np.zeros((20, 1)))), timeout=TIMEOUT), "Predict reply",
        "--max-message-bytes", "65536")
    assert fingerprint(server.data_dir) == before
    assert stub.GetModel(pb.GetModelRequest(model_id="big"), timeout=TIMEOUT).model.version == 1
    # what fits still works: Predict of 8 rows, and Train
    assert _predict(stub, 8, n_in=100, model_id="big")().model_version == 1
    assert list(_train(stub, 8, 2, n_in=100, n_out=100, model_id="big")())[-1].model_version == 2


def _sized_predict(model_id: str, size: int) -> pb.PredictRequest:
    """A PredictRequest for a [rows, 1] model of exactly `size` serialized bytes."""
    for rows in range(size // 8, 0, -1):
        request = pb.PredictRequest(model_id=model_id, inputs=pb.Tensor(
            shape=[rows, 1], raw=b"\0" * (8 * rows)))
        gap = size - request.ByteSize()
        if 0 <= gap:
            request.model_id += "x" * gap  # one byte per id character, as long as it fits
            if request.ByteSize() == size:
                return request
    raise AssertionError(f"no request of {size} bytes")


def test_request_message_size_exactly_at_and_one_over_and_the_server_stays_healthy(make_server):
    server = make_server(limits=dict(max_message_bytes=8192))
    stub = server.stub
    at = _sized_predict("m", 8192)
    over = _sized_predict("m", 8193)
    assert at.ByteSize() == 8192 and over.ByteSize() == 8193
    for request in (at, over):
        create(stub, request.model_id, sizes=(1, 1))
    reply = stub.Predict(at, timeout=TIMEOUT)  # accepted and answered (in raw form)
    assert list(reply.outputs.shape) == list(at.inputs.shape)
    exc = error_of(lambda: stub.Predict(over, timeout=TIMEOUT))
    assert exc.code() == C.RESOURCE_EXHAUSTED and "8193" in exc.details(), exc.details()
    # a reply over the client's own limit fails on the client, and nothing breaks
    with grpc.insecure_channel(f"127.0.0.1:{server.port}",
                               options=[("grpc.max_receive_message_length", 1024)]) as small:
        exc = error_of(lambda: pb_grpc.NetworkServiceStub(small).Predict(at, timeout=TIMEOUT))
        assert exc.code() == C.RESOURCE_EXHAUSTED, exc
    assert health_status(server.channel) == SERVING
    assert stub.Predict(at, timeout=TIMEOUT).model_version == 1


@pytest.mark.parametrize("limit, threads", [(1, 1), (3, 3), (2, 4)])
def test_calls_at_once_exactly_at_the_limit_and_one_over(make_server, limit, threads):
    server = make_server(limits=dict(max_concurrent_calls=limit), threads=threads)
    stub = server.stub
    for k in range(limit):
        create(stub, f"t{k}")
    streams = [stub.Train(long_train_request(f"t{k}"), timeout=60) for k in range(limit)]
    try:
        for stream in streams:  # at the limit: every one of them runs
            assert next(stream).model_version >= 2
        latencies = []
        for _ in range(5):  # one over: refused, at once
            result, seconds = timed(lambda: stub.ListModels(pb.ListModelsRequest(),
                                                            timeout=TIMEOUT))
            assert isinstance(result, grpc.RpcError)
            assert result.code() == C.RESOURCE_EXHAUSTED, result
            latencies.append(seconds)
        assert statistics.median(latencies) < 0.1 and max(latencies) < 0.5, latencies
        for stream in streams:  # the busy calls were not disturbed
            assert next(stream).model_version >= 3
    finally:
        for stream in streams:
            stream.cancel()
    # the cancelled calls end, and their slots take calls again
    wait_for(lambda: unless(lambda: stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT),
                            C.RESOURCE_EXHAUSTED) is not None, 5, what="a free call slot")


def test_the_queue_behind_busy_workers_is_bounded(make_server):
    """One worker, two calls at once: one running, one queued; a third is refused at once, and
    the queued one is served when the worker frees."""
    server = make_server(limits=dict(max_concurrent_calls=2), threads=1)
    stub = server.stub
    create(stub, "busy")
    create(stub, "other")
    train = stub.Train(long_train_request("busy"), timeout=60)
    assert next(train).model_version >= 2
    queued = stub.Predict.future(pb.PredictRequest(model_id="other", inputs=tensor([[0.0, 1.0]])),
                                 timeout=TIMEOUT)
    time.sleep(0.3)
    assert not queued.done()  # waiting for the worker, not refused
    result, seconds = timed(lambda: stub.GetModel(pb.GetModelRequest(model_id="other"),
                                                  timeout=TIMEOUT))
    assert isinstance(result, grpc.RpcError) and result.code() == C.RESOURCE_EXHAUSTED
    assert seconds < 0.5
    train.cancel()
    assert queued.result(timeout=TIMEOUT).model_version == 1
