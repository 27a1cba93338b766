"""ModelInfer's one-row fast path (fastpath.infer_reply) on its own: its reply frame is what
protobuf encodes, byte for byte; it answers the general path's bytes; it shares jitnet.v1's
prepared buffers; and what it cannot answer it leaves to the general path."""

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


def _request(x, model="m", **fields) -> oip.ModelInferRequest:
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    return oip.ModelInferRequest(
        model_name=model, inputs=[Input(name="input", datatype="FP64", shape=x.shape)],
        raw_input_contents=[x.astype("<f8").tobytes()], **fields)


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
def test_answers_the_general_paths_bytes(sizes, fields):
    record = _record(sizes)
    rng = np.random.default_rng(1)
    for _ in range(3):
        request = _request(rng.standard_normal(sizes[0]), **fields)
        reply = fastpath.infer_reply(lambda _: record, request, BIG)
        assert reply is not None
        assert reply == _general(record, request)


@pytest.mark.parametrize("columns", [1, 10, 15, 16, 127, 300, 20_000])
@pytest.mark.parametrize("version", [1, 127, 128, 2**35 + 3, 2**64 - 1])
@pytest.mark.parametrize("name", ["m", "a" * 127, "digits-64.x_y"])
@pytest.mark.parametrize("request_id", ["", "x", "i" * 200])
def test_reply_frame_is_what_protobuf_encodes(columns, version, name, request_id):
    outputs = np.random.default_rng(columns).standard_normal((1, columns))
    expected = oip.ModelInferResponse(
        model_name=name, model_version=str(version), id=request_id,
        outputs=[oip.ModelInferResponse.InferOutputTensor(name="output", datatype="FP64",
                                                          shape=[1, columns])],
        raw_output_contents=[outputs.astype("<f8").tobytes()])
    head, tail = fastpath._infer_reply_frame(name, str(version), columns)
    encoded = (head + fastpath._string_field(3, request_id) + tail
               + outputs.astype("<f8").tobytes())
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
    (_leave(input={"datatype": "FP32"}), "FP32"),
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


def test_an_unknown_model_is_the_stores_error():
    def get(model_id):
        raise NotFound(f"model '{model_id}' not found")

    with pytest.raises(NotFound):
        fastpath.infer_reply(get, _request([1.0, 2.0]), BIG)


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
