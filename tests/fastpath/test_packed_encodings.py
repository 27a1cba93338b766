"""Packed numbers as clients built from the .proto send them (grpcurl, grpc-js, Go, Java), and
as protobuf also allows them: jitnet.v1's `values` and the inference protocol's fp64_contents /
fp32_contents, packed, unpacked (one tag per number), in several runs, fields out of order.
Each is answered by the fast path with the general path's bytes. Malformed packed fields (cut
short, a length that is no whole number of numbers) get INVALID_ARGUMENT from a server, and a
well-formed field of the wrong count is the general path's INVALID_ARGUMENT: never a wrong
answer, and the model answers as before afterwards."""

from __future__ import annotations

import struct

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError

from jitnet.inference import open_inference_grpc_pb2 as oip
from jitnet.service.engine.model import Activation, Architecture
from jitnet.service.protocols import fastpath
from jitnet.service.store import ModelRecord, frozen
from jitnet.v1 import jitnet_pb2 as pb
from tests.inference.test_inference_fastpath import _general as infer_general
from tests.inference.test_inference_fastpath import _record
from tests.rpcs.test_fastpath import general as predict_general
from tests.support.rpc import TIMEOUT, create, error_of

BIG = 1 << 30
ROW = [0.25, -1.5, 3.0]
INFER = "/inference.GRPCInferenceService/ModelInfer"
PREDICT = "/jitnet.v1.NetworkService/Predict"

# -- the wire format, written out here independently of fastpath.py's encoder ----------------
# A field is a key (number << 3 | wire type: 0 varint, 1 fixed64, 2 length-delimited, 5
# fixed32) and its value; a packed field is one length-delimited run of the numbers.


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


FIXED = {"d": 1, "f": 5}  # struct's code -> the wire type of one number


def _numbers(number: int, values, code: str, form: str) -> bytes:
    """A repeated double (code "d") or float ("f") field in one of the forms protobuf parses."""
    one = [struct.pack("<" + code, v) for v in values]
    if form == "packed":
        return _delimited(number, b"".join(one))
    if form == "unpacked":
        return b"".join(_key(number, FIXED[code]) + item for item in one)
    if form == "two runs":
        return _delimited(number, b"".join(one[:1])) + _delimited(number, b"".join(one[1:]))
    if form == "mixed":  # one unpacked, then a packed run
        return _key(number, FIXED[code]) + one[0] + _delimited(number, b"".join(one[1:]))
    raise ValueError(form)


FORMS = ["packed", "unpacked", "two runs", "mixed"]


def _shape(number: int, dims, packed: bool = True) -> bytes:
    if packed:
        return _delimited(number, b"".join(_varint(d) for d in dims))
    return b"".join(_key(number, 0) + _varint(d) for d in dims)


def _predict_bytes(values, form: str, *, model: bytes = b"m", shape_first=True,
                   packed_shape=True, dims=None) -> bytes:
    """PredictRequest{model_id, inputs: Tensor{shape, values}} as bytes."""
    shape = _shape(1, dims or [1, len(values)], packed_shape)
    numbers = _numbers(2, values, "d", form)
    tensor = shape + numbers if shape_first else numbers + shape
    return _delimited(1, model) + _delimited(2, tensor)


def _infer_bytes(values, datatype: str, form: str, *, model: bytes = b"m", dims=None) -> bytes:
    """ModelInferRequest{model_name, inputs: [{name: "input", datatype, shape, contents}]}."""
    code, field = {"FP64": ("d", 7), "FP32": ("f", 6)}[datatype]
    contents = _numbers(field, values, code, form)
    tensor = (_delimited(1, b"input") + _delimited(2, datatype.encode())
              + _shape(3, dims or [1, len(values)]) + _delimited(5, contents))
    return _delimited(1, model) + _delimited(5, tensor)


# -- in-process: each form parses to the request the fast path answers ------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("layout", [{}, {"shape_first": False}, {"packed_shape": False}],
                         ids=["in order", "values first", "unpacked shape"])
def test_values_in_every_form_get_the_general_paths_bytes(form, layout):
    record = _record((3, 5, 2))
    request = pb.PredictRequest.FromString(_predict_bytes(ROW, form, **layout))
    reply = fastpath.predict_reply(lambda _: record, request, BIG)
    assert reply is not None, "the fast path answers it"
    assert reply == predict_general(record, request)
    canonical = pb.PredictRequest(model_id="m", inputs=pb.Tensor(shape=[1, 3], values=ROW))
    assert reply == fastpath.predict_reply(lambda _: record, canonical, BIG)
    assert list(pb.PredictResponse.FromString(reply).outputs.values)  # values in, values out


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_typed_contents_in_every_form_get_the_general_paths_bytes(form, datatype):
    record = _record((3, 5, 2))
    request = oip.ModelInferRequest.FromString(_infer_bytes(ROW, datatype, form))
    reply = fastpath.infer_reply(lambda _: record, request, BIG)
    assert reply is not None, "the fast path answers it"
    assert reply == infer_general(record, request)
    assert oip.ModelInferResponse.FromString(reply).outputs[0].datatype == datatype


def _linear(weight: float, bias: float) -> ModelRecord:
    """y = weight x + bias, the parameters set (a 1-1 network: one weight, one bias)."""
    arch = Architecture((1, 1), output_activation=Activation.LINEAR)
    params = frozen(np.array([weight, bias]))
    return ModelRecord("m", arch, 1, 0, 0, 0.0, 0, 0, params, frozen(np.zeros_like(params)))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_fp32_outputs_past_float32s_range_are_the_general_paths():
    """4 x 3e38 has no float32: the fast path leaves that reply to the general path (which
    answers what numpy's cast gives), and answers the same model's small outputs itself."""
    record = _linear(4.0, 0.0)
    assert record.network.predict(np.array([[1.0]]))[0, 0] == 4.0  # the weight is where set
    for x, answered in ((1.0, True), (3e38, False)):
        request = oip.ModelInferRequest.FromString(_infer_bytes([x], "FP32", "packed"))
        reply = fastpath.infer_reply(lambda _: record, request, BIG)
        assert (reply is not None) == answered, x
        expected = infer_general(record, request)
        if answered:
            assert reply == expected
        else:
            assert np.isinf(oip.ModelInferResponse.FromString(expected).outputs[0]
                            .contents.fp32_contents[0])
    fp64 = oip.ModelInferRequest.FromString(_infer_bytes([3e38], "FP64", "packed"))
    assert fastpath.infer_reply(lambda _: record, fp64, BIG) == infer_general(record, fp64)


# -- through a server: malformed packed fields, and well-formed ones of the wrong count -------


def _packed_field(number: int, payload: bytes, claimed: int) -> bytes:
    """A delimited field whose length says `claimed` bytes, around `payload`."""
    return _key(number, 2) + _varint(claimed) + payload


MODEL = b"fastpath-packed"


def _malformed_predicts(values: bytes) -> dict[str, bytes]:
    """PredictRequests whose packed (or one unpacked) `values` are cut short or uneven; the
    enclosing messages' lengths match what is there, so only the numbers' field is wrong."""
    shape = _shape(1, [1, 3])
    whole = len(values)
    tensors = {
        "cut short": shape + _packed_field(2, values[:-3], whole),  # says 24 bytes, has 21
        "not whole doubles": shape + _packed_field(2, values[:-1], whole - 1),  # 23 bytes
        "a double cut short, unpacked": shape + _key(2, 1) + values[:5],
    }
    return {why: _delimited(1, MODEL) + _delimited(2, t) for why, t in tensors.items()}


def _malformed_infers(values: bytes) -> dict[str, bytes]:
    """ModelInferRequests whose fp32_contents are cut short or uneven, as above."""
    head = _delimited(1, b"input") + _delimited(2, b"FP32") + _shape(3, [1, 3])
    whole = len(values)
    contents = {
        "cut short": _packed_field(6, values[:-2], whole),  # says 12 bytes, has 10
        "not whole floats": _packed_field(6, values[:-1], whole - 1),  # 11 bytes
        "a float cut short, unpacked": _key(6, 5) + values[:3],
    }
    return {why: _delimited(1, MODEL) + _delimited(5, head + _delimited(5, c))
            for why, c in contents.items()}


@pytest.fixture(scope="module")
def model(shared_server):
    """A 3-5-2 model on the session's server, and its reply to ROW."""
    create(shared_server.stub, MODEL.decode(), sizes=(3, 5, 2))
    return shared_server


def _call(server, method: str, reply_class):
    return server.channel.unary_unary(method, response_deserializer=reply_class.FromString)


def _answers_as_before(server):
    good = pb.PredictRequest(model_id=MODEL.decode(), inputs=pb.Tensor(shape=[1, 3],
                                                                          values=ROW))
    return server.stub.Predict(good, timeout=TIMEOUT)


def test_malformed_packed_values_are_invalid_argument(model):
    before = _answers_as_before(model)
    predict = _call(model, PREDICT, pb.PredictResponse)
    values = struct.pack("<3d", *ROW)
    for why, data in _malformed_predicts(values).items():
        with pytest.raises(DecodeError):
            pb.PredictRequest.FromString(data)  # protobuf itself refuses it: ...
        error = error_of(lambda data=data: predict(data, timeout=TIMEOUT))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, why  # ... and so do we
        assert "does not parse" in error.details(), why
    assert _answers_as_before(model) == before  # and the model answers as it did


def test_malformed_typed_contents_are_invalid_argument(model):
    infer = _call(model, INFER, oip.ModelInferResponse)
    well_formed = _infer_bytes(ROW, "FP32", "packed", model=MODEL)
    before = infer(well_formed, timeout=TIMEOUT)
    for why, data in _malformed_infers(struct.pack("<3f", *ROW)).items():
        with pytest.raises(DecodeError):
            oip.ModelInferRequest.FromString(data)
        error = error_of(lambda data=data: infer(data, timeout=TIMEOUT))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, why
        assert "does not parse" in error.details(), why
    assert infer(well_formed, timeout=TIMEOUT) == before


@pytest.mark.parametrize("count", [2, 4])
@pytest.mark.parametrize("form", ["packed", "unpacked"])
def test_a_wrong_count_is_the_general_paths_invalid_argument(model, count, form):
    values = [0.5] * count
    predict = _call(model, PREDICT, pb.PredictResponse)
    data = _predict_bytes(values, form, model=MODEL, dims=[1, 3])
    error = error_of(lambda: predict(data, timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs.values" in error.details()
    infer = _call(model, INFER, oip.ModelInferResponse)
    for datatype, field in (("FP64", "fp64_contents"), ("FP32", "fp32_contents")):
        data = _infer_bytes(values, datatype, form, model=MODEL, dims=[1, 3])
        error = error_of(lambda data=data: infer(data, timeout=TIMEOUT))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, datatype
        assert field in error.details(), datatype


@pytest.mark.parametrize("form", FORMS)
def test_a_server_answers_every_form_as_the_packed_one(model, form):
    predict = _call(model, PREDICT, pb.PredictResponse)
    data = _predict_bytes(ROW, form, model=MODEL)
    assert predict(data, timeout=TIMEOUT) == _answers_as_before(model)
    infer = _call(model, INFER, oip.ModelInferResponse)
    packed = infer(_infer_bytes(ROW, "FP64", "packed", model=MODEL), timeout=TIMEOUT)
    assert infer(_infer_bytes(ROW, "FP64", form, model=MODEL),
                 timeout=TIMEOUT) == packed
    assert list(packed.outputs[0].contents.fp64_contents) == list(
        _answers_as_before(model).outputs.values)


def test_an_unknown_model_is_not_found_after_the_requests_checks(model):
    """The fast path leaves an unknown model to the general path, which checks the request
    before the store: malformed is INVALID_ARGUMENT, well-formed NOT_FOUND, in both protocols."""
    stub = model.stub
    row = pb.Tensor(shape=[1, 3], values=ROW)
    both = pb.Tensor(shape=[1, 3], values=ROW, raw=struct.pack("<3d", *ROW))
    for inputs, code in ((row, grpc.StatusCode.NOT_FOUND),
                         (both, grpc.StatusCode.INVALID_ARGUMENT)):
        request = pb.PredictRequest(model_id="no-such-model", inputs=inputs)
        assert error_of(lambda r=request: stub.Predict(r, timeout=TIMEOUT)).code() == code
    infer = _call(model, INFER, oip.ModelInferResponse)
    well_formed = oip.ModelInferRequest.FromString(
        _infer_bytes(ROW, "FP64", "packed", model=b"no-such-model"))
    renamed = oip.ModelInferRequest()
    renamed.CopyFrom(well_formed)
    renamed.inputs[0].name = "x"
    for request, code in ((well_formed, grpc.StatusCode.NOT_FOUND),
                          (renamed, grpc.StatusCode.INVALID_ARGUMENT)):
        data = request.SerializeToString()
        assert error_of(lambda d=data: infer(d, timeout=TIMEOUT)).code() == code
