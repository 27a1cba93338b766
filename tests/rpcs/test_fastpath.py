"""The one-sample Predict fast path (service/protocols/fastpath.py) on its own: the bytes it
answers are the general path's, in raw and values form, and what it cannot answer it leaves to
the general path. tests/fastpath has the packed-values forms as clients encode them."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest

from jitnet.service.config import Limits
from jitnet.service.engine import kernels
from jitnet.service.engine.model import Activation, Architecture, Init, initial_parameters
from jitnet.service.errors import NotFound
from jitnet.service.protocols import fastpath, prediction
from jitnet.service.protocols.jitnet_v1 import convert
from jitnet.service.store import ModelRecord, frozen
from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import tensor

BIG = 1 << 30


def _record(sizes, version=1, seed=0, output=Activation.SOFTMAX) -> ModelRecord:
    arch = Architecture(tuple(sizes), output_activation=output)
    params = frozen(initial_parameters(arch, Init.HE, seed))
    return ModelRecord("m", arch, version, 0, 0, 0.0, 0, 0, params)


def _request(x, raw=True) -> pb.PredictRequest:
    return pb.PredictRequest(model_id="m", inputs=tensor(np.atleast_2d(x), raw))


def general(record, request) -> bytes:
    """What the servicer's general path sends for the same request (its steps, in its order)."""
    tensor = request.inputs
    raw = tensor.raw
    result = prediction.predict(lambda _id, _min: record, Limits(), request.model_id,
                                convert.rows_of(tensor),
                                lambda: convert.to_array(tensor, "inputs", raw, read_only=True))
    reply = pb.PredictResponse(model_version=result.version)
    convert.write_array(reply.outputs, result.outputs, bool(raw))
    return reply.SerializeToString()


def _general(record, x) -> bytes:
    return general(record, _request(x))


@pytest.mark.parametrize("sizes", [(2, 4, 1), (64, 64, 10), (3, 5, 7, 2)])
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "values"])
def test_answers_the_general_paths_bytes(sizes, raw):
    record = _record(sizes)
    rng = np.random.default_rng(1)
    for _ in range(3):
        request = _request(rng.standard_normal(sizes[0]), raw)
        reply = fastpath.predict_reply(lambda _: record, request, BIG)
        assert reply is not None
        assert reply == general(record, request)


@pytest.mark.parametrize("columns", [1, 2, 10, 15, 16, 127, 128, 300, 20_000])
@pytest.mark.parametrize("version", [0, 1, 127, 128, 300, 2**35 + 3, 2**64 - 1])
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "values"])
def test_reply_frame_is_what_protobuf_encodes(columns, version, raw):
    outputs = np.random.default_rng(columns).standard_normal((1, columns))
    expected = pb.PredictResponse(model_version=version, outputs=tensor(outputs, raw))
    field = fastpath._TENSOR_RAW if raw else fastpath._TENSOR_VALUES
    prefix, suffix = fastpath._reply_frame(columns, version, field, 8 * columns)
    encoded = prefix + outputs.astype("<f8").tobytes() + suffix
    assert encoded == expected.SerializeToString()
    assert pb.PredictResponse.FromString(encoded) == expected


@pytest.mark.parametrize("request_, why", [
    (_request([[0.0, 1.0]]), "too few inputs"),
    (_request(np.zeros((2, 3))), "two samples"),
    (_request([0.0, np.nan, 1.0]), "not finite"),
    (_request([np.inf, 0.0, 1.0]), "not finite"),
    (_request([[0.0, np.nan, 1.0]], raw=False), "not finite, values"),
    (pb.PredictRequest(model_id="m", inputs=pb.Tensor(shape=[1, 3], raw=b"\0" * 16)), "bytes"),
    (pb.PredictRequest(model_id="m", inputs=pb.Tensor(shape=[1, 3], values=[0.0] * 2)),
     "too few values"),
    (pb.PredictRequest(model_id="m", inputs=pb.Tensor(shape=[1, 3], values=[0.0] * 4)),
     "too many values"),
    (pb.PredictRequest(model_id="m", inputs=pb.Tensor(shape=[1, 3], values=[1.0] * 3,
                                                      raw=b"\0" * 24)), "both forms"),
    (pb.PredictRequest(model_id="m", inputs=pb.Tensor(shape=[1, 3], raw=b"\0" * 24,
                                                      dtype=pb.DTYPE_FLOAT32)), "float32 raw"),
    (pb.PredictRequest(model_id="m", inputs=pb.Tensor(shape=[3], raw=b"\0" * 24)), "1-D"),
    (pb.PredictRequest(model_id="m", inputs=pb.Tensor(shape=[3], values=[0.0] * 3)),
     "1-D values"),
])
def test_leaves_what_it_cannot_answer_to_the_general_path(request_, why):
    record = _record((3, 4, 2))
    assert fastpath.predict_reply(lambda _: record, request_, BIG) is None, why
    assert fastpath.predict_reply(lambda _: record, _request([1.0, 2.0, 3.0]), BIG) is not None


def test_a_reply_over_the_size_limit_goes_to_the_general_path():
    record = _record((3, 4, 2))
    size = len(_general(record, np.ones(3)))
    assert fastpath.predict_reply(lambda _: record, _request(np.ones(3)), size) is not None
    assert fastpath.predict_reply(lambda _: record, _request(np.ones(3)), size - 1) is None


def test_an_unknown_model_is_left_to_the_general_path():
    """Which checks the request first: a malformed request for an unknown model is
    INVALID_ARGUMENT there, a well-formed one NOT_FOUND (tests/fastpath, through a server)."""
    asked = []

    def get(model_id):
        asked.append(model_id)
        raise NotFound(f"model '{model_id}' not found")

    assert fastpath.predict_reply(get, _request([1.0, 2.0]), BIG) is None
    assert asked == ["m"]


def test_a_new_version_is_answered_by_its_own_weights():
    x = np.array([0.5, -1.0])
    v1, v2 = _record((2, 4, 1), 1, seed=1), _record((2, 4, 1), 2, seed=2)
    assert fastpath.predict_reply(lambda _: v1, _request(x), BIG) == _general(v1, x)
    assert fastpath.predict_reply(lambda _: v2, _request(x), BIG) == _general(v2, x)
    assert _general(v1, x) != _general(v2, x)


def test_buffers_are_per_thread():
    record = _record((4, 8, 3))
    samples = np.random.default_rng(5).standard_normal((2, 4))
    expected = [_general(record, s) for s in samples]
    seen, buffers = {}, {}
    barrier = threading.Barrier(2)

    def predict(i):
        seen[i] = fastpath.predict_reply(lambda _: record, _request(samples[i]), BIG)
        # this thread's buffers, held until both threads have theirs: a thread's memory can
        # be reused once it ends, so the comparison is made while both live
        prepared = fastpath._per_thread.prepared[record.id]
        buffers[i] = (prepared.inputs.obj, prepared.outputs.obj)
        barrier.wait()

    threads = [threading.Thread(target=predict, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [seen[0], seen[1]] == expected
    for mine, theirs in zip(buffers[0], buffers[1], strict=True):
        assert not np.shares_memory(mine, theirs)


@pytest.mark.skipif(not hasattr(kernels.predict_rows, "compile"), reason="NUMBA_DISABLE_JIT")
def test_numba_internals_the_fast_path_relies_on():
    """Dispatcher.compile(signature) returns the compiled entry point, which predicts exactly
    as the dispatcher does. A numba upgrade that changes this fails here, loudly."""
    record = _record((3, 4, 2))
    x = np.array([[0.1, 0.2, 0.3]])

    def args(out):
        return (out, x, record.params, record.arch.layout.copy(), record.arch.kinds.copy(),
                np.empty((2, record.arch.n_units)))

    via_entry, via_dispatcher = np.empty((1, 2)), np.empty((1, 2))
    entry = kernels.predict_rows.compile(tuple(numba.typeof(a) for a in args(via_entry)))
    assert callable(entry) and entry is not kernels.predict_rows
    assert entry(*args(via_entry)) == 0 == kernels.predict_rows(*args(via_dispatcher))
    assert via_entry.tobytes() == via_dispatcher.tobytes()
