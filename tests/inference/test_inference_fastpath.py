"""ModelInfer's one-row fast path (fastpath.infer_reply) on its own: its reply frame is what
protobuf encodes, byte for byte; it answers the general path's bytes, FP64 and FP32, raw and
typed; it shares jitnet.v1's prepared buffers; and what it cannot answer it leaves to the
general path."""

from __future__ import annotations

import numpy as np
import pytest

from jitnet.inference import open_inference_grpc_pb2 as oip
from jitnet.service.config import Limits
from jitnet.service.engine.model import Activation, Architecture, Init, initial_parameters
from jitnet.service.errors import NotFound
from jitnet.service.protocols import fastpath, prediction
from jitnet.service.protocols.inference import convert as convert
from jitnet.service.store import ModelRecord, frozen
from jitnet.v1 import jitnet_pb2 as pb

BIG = 1 << 30
Input = oip.ModelInferRequest.InferInputTensor
Output = oip.ModelInferRequest.InferRequestedOutputTensor


def _record(sizes, version=1, seed=0, model_id="m") -> ModelRecord:
    arch = Architecture(tuple(sizes), output_activation=Activation.SOFTMAX)
    params = frozen(initial_parameters(arch, Init.HE, seed))
    return ModelRecord(model_id, arch, version, 0, 0, 0.0, 0, 0, params)


WIRE = {"FP64": "<f8", "FP32": "<f4"}
TYPED = {"FP64": "fp64_contents", "FP32": "fp32_contents"}


def _request(x, model="m", datatype="FP64", typed=False, **fields) -> oip.ModelInferRequest:
    x = np.atleast_2d(np.asarray(x, dtype=np.float64)).astype(WIRE[datatype])
    if typed:
        contents = oip.InferTensorContents(**{TYPED[datatype]: x.ravel().tolist()})
        return oip.ModelInferRequest(model_name=model, inputs=[Input(
            name="input", datatype=datatype, shape=x.shape, contents=contents)], **fields)
    return oip.ModelInferRequest(
        model_name=model, inputs=[Input(name="input", datatype=datatype, shape=x.shape)],
        raw_input_contents=[x.tobytes()], **fields)


def _general(record, request) -> bytes:
    """What the servicer's general path sends for the same request."""
    inp = convert.infer_input(request)
    result = prediction.predict(lambda _id, _min: record, Limits(), request.model_name, inp.rows,
                                lambda: convert.decode(inp))
    return convert.infer_response(request, inp, result.outputs,
                                  result.version).SerializeToString()


@pytest.mark.parametrize("sizes", [(2, 4, 1), (64, 64, 10), (3, 5, 7, 2)])
@pytest.mark.parametrize("fields", [{}, {"id": "request-7"}, {"model_version": "1"},
                                    {"outputs": [Output(name="output")]},
                                    {"id": "é" * 70, "model_version": "1"}])
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
@pytest.mark.parametrize("typed", [False, True], ids=["raw", "typed"])
def test_answers_the_general_paths_bytes(sizes, fields, datatype, typed):
    record = _record(sizes)
    rng = np.random.default_rng(1)
    for _ in range(3):
        request = _request(rng.standard_normal(sizes[0]), datatype=datatype, typed=typed,
                           **fields)
        reply = fastpath.infer_reply(lambda _: record, request, BIG)
        assert reply is not None
        assert reply == _general(record, request)


@pytest.mark.parametrize("columns", [1, 10, 15, 16, 127, 300, 20_000])
@pytest.mark.parametrize("version", [1, 127, 128, 2**35 + 3, 2**64 - 1])
@pytest.mark.parametrize("name", ["m", "a" * 127, "digits-64.x_y"])
@pytest.mark.parametrize("request_id", ["", "x", "i" * 200])
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
@pytest.mark.parametrize("typed", [False, True], ids=["raw", "typed"])
def test_reply_frame_is_what_protobuf_encodes(columns, version, name, request_id, datatype,
                                              typed):
    numbers = np.random.default_rng(columns).standard_normal(columns).astype(WIRE[datatype])
    tensor = oip.ModelInferResponse.InferOutputTensor(name="output", datatype=datatype,
                                                      shape=[1, columns])
    expected = oip.ModelInferResponse(model_name=name, model_version=str(version),
                                      id=request_id, outputs=[tensor])
    if typed:
        getattr(expected.outputs[0].contents, TYPED[datatype]).extend(numbers.tolist())
    else:
        expected.raw_output_contents.append(numbers.tobytes())
    head = fastpath._string_field(1, name) + fastpath._string_field(2, str(version))
    frame = fastpath._infer_reply_frame(datatype, columns, numbers.nbytes, typed)
    encoded = head + fastpath._string_field(3, request_id) + frame + numbers.tobytes()
    assert encoded == expected.SerializeToString()
    assert oip.ModelInferResponse.FromString(encoded) == expected


def _leave(**changes):
    request = _request([1.0, 2.0, 3.0])
    for name, value in changes.items():
        if name == "input":
            for field, v in value.items():
                if field == "shape":
                    request.inputs[0].ClearField("shape")
                    request.inputs[0].shape.extend(v)
                elif field == "contents":
                    request.inputs[0].contents.CopyFrom(v)
                else:
                    setattr(request.inputs[0], field, v)
        elif name == "raw":
            request.ClearField("raw_input_contents")
            request.raw_input_contents.extend(value)
        elif name == "outputs":
            request.outputs.extend(value)
        elif name == "inputs":
            request.inputs.extend(value)
        else:
            setattr(request, name, value)
    return request


@pytest.mark.parametrize("request_, why", [
    (_request([[0.0, 1.0]]), "too few inputs"),
    (_request(np.zeros((2, 3))), "two rows"),
    (_request([0.0, np.nan, 1.0]), "not finite"),
    (_leave(input={"datatype": "FP32"}), "FP32 of FP64's size"),
    (_leave(input={"datatype": "FP16"}), "FP16"),
    (_leave(input={"name": "x"}), "another input name"),
    (_leave(input={"shape": [3]}), "1-D"),
    (_leave(input={"contents": oip.InferTensorContents(fp64_contents=[1.0])}), "both forms"),
    (_leave(input={"contents": oip.InferTensorContents()}), "an empty contents message"),
    (_leave(raw=[b"\0" * 16]), "raw size"),
    (_leave(raw=[b"\0" * 24, b"\0" * 24]), "two buffers"),
    (_leave(raw=[]), "typed"),
    (_leave(inputs=[Input(name="input", datatype="FP64", shape=[1, 3])]), "two inputs"),
    (_leave(outputs=[Output(name="probabilities")]), "another output"),
    (_leave(outputs=[Output(name="output"), Output(name="output")]), "two outputs"),
    (_leave(model_version="2"), "another version"),
    (_leave(model_version="01"), "the version, spelt otherwise"),
    (_request([1.0, 2.0], typed=True), "too few typed numbers"),
    (_request([1.0, 2.0, 3.0, 4.0], typed=True), "too many typed numbers"),
    (_leave(raw=[], input={"contents": oip.InferTensorContents(fp32_contents=[1.0] * 3)}),
     "FP64 with FP32's contents"),
    (_leave(raw=[], input={"datatype": "FP32", "contents": oip.InferTensorContents(
        fp64_contents=[1.0] * 3)}), "FP32 with FP64's contents"),
    (_leave(input={"contents": oip.InferTensorContents(fp64_contents=[1.0] * 3)}),
     "typed and raw"),
    (_request([0.0, np.nan, 1.0], typed=True), "not finite, typed"),
    (_request([0.0, np.inf, 1.0], datatype="FP32"), "not finite, FP32"),
])
def test_leaves_what_it_cannot_answer_to_the_general_path(request_, why):
    record = _record((3, 4, 2))
    assert fastpath.infer_reply(lambda _: record, request_, BIG) is None, why
    assert fastpath.infer_reply(lambda _: record, _request([1.0, 2.0, 3.0]), BIG) is not None


def test_a_reply_over_the_size_limit_goes_to_the_general_path():
    record = _record((3, 4, 2))
    size = len(_general(record, _request(np.ones(3))))
    assert fastpath.infer_reply(lambda _: record, _request(np.ones(3)), size) is not None
    assert fastpath.infer_reply(lambda _: record, _request(np.ones(3)), size - 1) is None


def test_an_unknown_model_is_left_to_the_general_path():
    """Which checks the request first: a malformed request for an unknown model is
    INVALID_ARGUMENT there, a well-formed one NOT_FOUND (tests/fastpath, through a server)."""
    asked = []

    def get(model_id):
        asked.append(model_id)
        raise NotFound(f"model '{model_id}' not found")

    assert fastpath.infer_reply(get, _request([1.0, 2.0]), BIG) is None
    assert asked == ["m"]


def test_shares_predicts_prepared_buffers_and_answers_the_same_numbers():
    """Both protocols' one-sample paths in one thread use one prepared entry per model
    version, and give the same output bytes."""
    record = _record((4, 8, 3), version=5)
    x = np.random.default_rng(3).standard_normal(4)
    v1 = fastpath.predict_reply(lambda _: record, pb.PredictRequest(model_id="m", inputs=pb.Tensor(
        shape=[1, 4], raw=x.astype("<f8").tobytes())), BIG)
    prepared = fastpath._per_thread.prepared["m"]
    v2 = fastpath.infer_reply(lambda _: record, _request(x), BIG)
    assert fastpath._per_thread.prepared["m"] is prepared
    v1_out = pb.PredictResponse.FromString(v1).outputs.raw
    assert oip.ModelInferResponse.FromString(v2).raw_output_contents[0] == v1_out
    assert oip.ModelInferResponse.FromString(v2).model_version == "5"
