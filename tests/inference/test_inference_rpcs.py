"""GRPCInferenceService in-process, through jitnet's own generated stub: what tritonclient cannot
send (typed contents, both forms at once, a wrong number of raw buffers), readiness against
grpc.health.v1 (starting, serving, draining), reflection and health listing the service, and
outputs equal to jitnet.v1 Predict's bit for bit in every form."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jitnet.inference import open_inference_grpc_pb2 as oip
from jitnet.inference import open_inference_grpc_pb2_grpc as oip_grpc
from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import SERVING, TIMEOUT, create, health_status, tensor, wait_for

C = grpc.StatusCode
Input = oip.ModelInferRequest.InferInputTensor


@pytest.fixture
def v2(server):
    return oip_grpc.GRPCInferenceServiceStub(server.channel)


def infer_request(rows, model="m", datatype="FP64", raw=True, **fields) -> oip.ModelInferRequest:
    rows = np.asarray(rows, dtype=np.float64)
    wire = {"FP64": "<f8", "FP32": "<f4"}[datatype]
    request = oip.ModelInferRequest(model_name=model, inputs=[
        Input(name="input", datatype=datatype, shape=rows.shape)], **fields)
    if raw:
        request.raw_input_contents.append(rows.astype(wire).tobytes())
    else:
        field = {"FP64": "fp64_contents", "FP32": "fp32_contents"}[datatype]
        getattr(request.inputs[0].contents, field).extend(rows.astype(wire).ravel().tolist())
    return request


def outputs_of(reply: oip.ModelInferResponse) -> np.ndarray:
    out = reply.outputs[0]
    if reply.raw_output_contents:
        wire = {"FP64": "<f8", "FP32": "<f4"}[out.datatype]
        data = np.frombuffer(reply.raw_output_contents[0], wire)
    else:
        field = {"FP64": "fp64_contents", "FP32": "fp32_contents"}[out.datatype]
        data = np.array(getattr(out.contents, field),
                        dtype={"FP64": np.float64, "FP32": np.float32}[out.datatype])
    return data.reshape(list(out.shape))


def predict(stub, rows, model="m") -> np.ndarray:
    reply = stub.Predict(pb.PredictRequest(model_id=model, inputs=tensor(rows, raw=True)),
                         timeout=TIMEOUT)
    return np.frombuffer(reply.outputs.raw, "<f8").reshape(list(reply.outputs.shape))


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


@pytest.fixture
def model(stub):
    create(stub, "m", sizes=(5, 7, 3), seed=2, output_activation=pb.ACTIVATION_SOFTMAX,
           loss=pb.LOSS_CROSS_ENTROPY)
    return "m"


@pytest.mark.parametrize("rows", [1, 2, 33])
@pytest.mark.parametrize("raw", [True, False])
def test_fp64_equals_predict_bit_for_bit(stub, v2, model, rows, raw):
    x = np.random.default_rng(rows).standard_normal((rows, 5))
    reply = v2.ModelInfer(infer_request(x, raw=raw, id="r-1"), timeout=TIMEOUT)
    assert reply.model_name == "m" and reply.model_version == "1" and reply.id == "r-1"
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [
        ("output", "FP64", [rows, 3])]
    # The reply's form follows the request's: raw in, raw out; typed in, typed out.
    assert bool(reply.raw_output_contents) == raw
    assert reply.outputs[0].HasField("contents") == (not raw)
    assert outputs_of(reply).tobytes() == predict(stub, x).tobytes()


@pytest.mark.parametrize("raw", [True, False])
def test_fp32_in_fp32_out(stub, v2, model, raw):
    x = np.random.default_rng(4).standard_normal((3, 5)).astype(np.float32)
    reply = v2.ModelInfer(infer_request(x, datatype="FP32", raw=raw), timeout=TIMEOUT)
    assert reply.outputs[0].datatype == "FP32"
    expected = predict(stub, x.astype(np.float64)).astype(np.float32)
    assert outputs_of(reply).tobytes() == expected.tobytes()


def test_a_1d_input_is_one_row(stub, v2, model):
    x = np.arange(5.0) / 5
    reply = v2.ModelInfer(infer_request(x), timeout=TIMEOUT)
    assert list(reply.outputs[0].shape) == [1, 3]
    assert outputs_of(reply).tobytes() == predict(stub, x[None]).tobytes()


def test_zero_rows(v2, model):
    reply = v2.ModelInfer(infer_request(np.zeros((0, 5))), timeout=TIMEOUT)
    assert list(reply.outputs[0].shape) == [0, 3]


def test_the_version_asked_for(stub, v2, model):
    x = np.ones((1, 5))
    assert v2.ModelInfer(infer_request(x, model_version="1"), timeout=TIMEOUT).model_version == "1"
    stub.Step(pb.StepRequest(model_id="m", input=[0.1] * 5, target=[1, 0, 0],
                             learning_rate=0.5), timeout=TIMEOUT)  # now version 2
    for version in ("1", "3", "x", "1" * 40):
        code, details = status_of(lambda version=version: v2.ModelInfer(
            infer_request(x, model_version=version), timeout=TIMEOUT))
        assert code == C.NOT_FOUND and "version" in details, (version, details)
    reply = v2.ModelInfer(infer_request(x, model_version="2"), timeout=TIMEOUT)
    assert reply.model_version == "2"
    assert outputs_of(reply).tobytes() == predict(stub, x).tobytes()
    assert v2.ModelReady(oip.ModelReadyRequest(name="m", version="2"), timeout=TIMEOUT).ready
    assert not v2.ModelReady(oip.ModelReadyRequest(name="m", version="1"), timeout=TIMEOUT).ready
    assert v2.ModelMetadata(oip.ModelMetadataRequest(name="m"), timeout=TIMEOUT).versions == ["2"]
    code, _ = status_of(lambda: v2.ModelMetadata(oip.ModelMetadataRequest(name="m", version="1"),
                                                timeout=TIMEOUT))
    assert code == C.NOT_FOUND


def _malformed():
    x = np.ones((2, 5))
    both = infer_request(x)
    both.inputs[0].contents.fp64_contents.extend(x.ravel().tolist())
    two_buffers = infer_request(x)
    two_buffers.raw_input_contents.append(b"\0" * 80)
    short = infer_request(x)
    short.raw_input_contents[0] = b"\0" * 79
    wrong_field = infer_request(x, raw=False)
    wrong_field.inputs[0].contents.fp32_contents.extend([1.0] * 10)
    fp32_in_fp64 = infer_request(x, datatype="FP64", raw=False)
    fp32_in_fp64.inputs[0].contents.ClearField("fp64_contents")
    fp32_in_fp64.inputs[0].contents.fp32_contents.extend([1.0] * 10)
    few_values = infer_request(x, raw=False)
    del few_values.inputs[0].contents.fp64_contents[-1]
    no_data = infer_request(x, raw=False)
    no_data.inputs[0].contents.ClearField("fp64_contents")
    negative = infer_request(x)
    negative.inputs[0].shape[0] = -2
    no_inputs = oip.ModelInferRequest(model_name="m")
    return {
        "both forms": (both, "both raw_input_contents and inputs[0].contents.fp64_contents"),
        "two raw buffers": (two_buffers, "raw_input_contents has 2 buffers"),
        "raw size": (short, "raw_input_contents[0] has 79 bytes"),
        "typed field of another datatype": (wrong_field, "inputs[0].contents.fp32_contents"),
        "fp32 contents for FP64": (fp32_in_fp64, "inputs[0].contents.fp32_contents"),
        "too few values": (few_values, "fp64_contents has 9 numbers"),
        "no data": (no_data, "fp64_contents has 0 numbers"),
        "negative dimension": (negative, "inputs[0].shape is [-2, 5]"),
        "no inputs": (no_inputs, "inputs has 0 tensors"),
        "datatype": (infer_request(x, datatype="FP64").__class__(
            model_name="m", inputs=[Input(name="input", datatype="BYTES", shape=[2, 5])],
            raw_input_contents=[b"\0" * 80]), "inputs[0].datatype is 'BYTES'"),
        "width": (infer_request(np.ones((2, 4))), "4 columns"),
        "model name": (infer_request(x, model="../etc"), "model_name '../etc'"),
    }


@pytest.mark.parametrize("case", sorted(_malformed()))
def test_malformed_requests_name_the_field(v2, model, case):
    request, words = _malformed()[case]
    code, details = status_of(lambda: v2.ModelInfer(request, timeout=TIMEOUT))
    assert code == C.INVALID_ARGUMENT, (case, code, details)
    assert words in details, (case, details)


def test_an_unknown_model(v2, model):
    code, details = status_of(lambda: v2.ModelInfer(infer_request(np.ones((1, 5)), model="nope"),
                                                   timeout=TIMEOUT))
    assert code == C.NOT_FOUND and "nope" in details
    assert not v2.ModelReady(oip.ModelReadyRequest(name="nope"), timeout=TIMEOUT).ready
    code, _ = status_of(lambda: v2.ModelReady(oip.ModelReadyRequest(name=""), timeout=TIMEOUT))
    assert code == C.INVALID_ARGUMENT  # no name at all is a malformed request, not a model


def test_limits_are_jitnet_v1s(make_server):
    server = make_server(limits={"max_rows": 10, "max_message_bytes": 1024})
    create(server.stub, "m", sizes=(5, 7, 3))
    create(server.stub, "w", sizes=(2, 200))  # one row's reply: 1,600 bytes of outputs
    v2 = oip_grpc.GRPCInferenceServiceStub(server.channel)
    code, details = status_of(lambda: v2.ModelInfer(infer_request(np.ones((11, 5))),
                                                    timeout=TIMEOUT))
    assert code == C.RESOURCE_EXHAUSTED and "max_rows" in details
    code, details = status_of(lambda: v2.ModelInfer(infer_request(np.ones((1, 2)), model="w"),
                                                    timeout=TIMEOUT))
    assert code == C.RESOURCE_EXHAUSTED and "max_message_bytes" in details


def test_metadata(v2, model):
    meta = v2.ServerMetadata(oip.ServerMetadataRequest(), timeout=TIMEOUT)
    assert meta.name == "jitnet" and meta.version and list(meta.extensions) == []
    model_meta = v2.ModelMetadata(oip.ModelMetadataRequest(name="m"), timeout=TIMEOUT)
    tensor_meta = oip.ModelMetadataResponse.TensorMetadata
    assert model_meta == oip.ModelMetadataResponse(
        name="m", versions=["1"], platform="jitnet",
        inputs=[tensor_meta(name="input", datatype="FP64", shape=[-1, 5])],
        outputs=[tensor_meta(name="output", datatype="FP64", shape=[-1, 3])])


def test_server_ready_is_health_serving_from_start_to_drain(make_server):
    release = threading.Event()
    server = make_server(warm_up=release.wait, wait_ready=False)
    v2 = oip_grpc.GRPCInferenceServiceStub(server.channel)

    def ready():
        return v2.ServerReady(oip.ServerReadyRequest(), timeout=TIMEOUT).ready

    try:
        assert v2.ServerLive(oip.ServerLiveRequest(), timeout=TIMEOUT).live
        assert health_status(server.channel) != SERVING and not ready()
        assert not v2.ModelReady(oip.ModelReadyRequest(name="m"), timeout=TIMEOUT).ready
        code, _ = status_of(lambda: v2.ModelInfer(infer_request(np.ones((1, 5))),
                                                 timeout=TIMEOUT))
        assert code == C.UNAVAILABLE
        code, _ = status_of(lambda: v2.ModelMetadata(oip.ModelMetadataRequest(name="m"),
                                                    timeout=TIMEOUT))
        assert code == C.UNAVAILABLE
    finally:
        release.set()
    wait_for(lambda: health_status(server.channel) == SERVING, 30, what="SERVING")
    assert ready()
    # Draining: health NOT_SERVING at once, and ServerReady says the same (asked in-process:
    # the drained server takes no new calls).
    servicer_says = server.handle.health.is_serving
    server.handle.health.enter_graceful_shutdown()
    assert not servicer_says()


def test_health_and_reflection_cover_the_service(server):
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    health = health_pb2_grpc.HealthStub(server.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"),
                         timeout=TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    db = ProtoReflectionDescriptorDatabase(server.channel)
    assert {"jitnet.v1.NetworkService", "inference.GRPCInferenceService"} <= set(
        db.get_services())
    methods = {m.name for m in DescriptorPool(db).FindServiceByName(
        "inference.GRPCInferenceService").methods}
    assert methods == {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                       "ModelMetadata", "ModelInfer"}


@pytest.mark.parametrize("rpc", ["ModelConfig", "ModelStatistics", "RepositoryIndex",
                                 "RepositoryModelLoad", "SystemSharedMemoryStatus",
                                 "CudaSharedMemoryRegister", "TraceSetting", "LogSettings"])
def test_triton_only_rpcs_are_unimplemented(server, rpc):
    call = server.channel.unary_unary(f"/inference.GRPCInferenceService/{rpc}")
    code, _ = status_of(lambda: call(b"", timeout=TIMEOUT))
    assert code == C.UNIMPLEMENTED


def test_streaming_infer_is_unimplemented(server):
    call = server.channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
    code, _ = status_of(lambda: list(call(iter([b""]), timeout=TIMEOUT)))
    assert code == C.UNIMPLEMENTED


def test_requests_that_do_not_parse(server):
    call = server.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    code, details = status_of(lambda: call(b"\x0a\xff\xff", timeout=TIMEOUT))
    assert code == C.INVALID_ARGUMENT and "ModelInfer request does not parse" in details
