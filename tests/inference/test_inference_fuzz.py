"""Property-based fuzzing of the Open Inference Protocol's RPCs (hypothesis), as
tests/validation/test_fuzz.py does for jitnet.v1: plausible ModelInfer requests for a stored
model with one part replaced by a random value (names, datatypes, shapes of any length and
sign, raw buffers of any number and length, typed contents in any field, outputs, versions,
ids, parameters), random ones, random bytes parsed by the server, and ModelReady and
ModelMetadata with random names and versions. After every case:

- the status is never UNKNOWN, INTERNAL, UNAVAILABLE or DEADLINE_EXCEEDED, and an error
  carries a message with no traceback;
- nothing stored changes (every RPC of the protocol only reads);
- a successful ModelInfer answers one 'output' in the request's datatype and form, and its
  numbers are jitnet.v1 Predict's for the same rows;
- the server stays SERVING.

Bounded and reproducible: derandomized, no deadlines, no example database; JITNET_FUZZ_SCALE
multiplies the number of examples (default 1: ~260 cases).
"""

from __future__ import annotations

import os

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitnet.inference import open_inference_grpc_pb2 as oip
from jitnet.service.config import Config, Limits
from jitnet.service.server.lifecycle import create_server
from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc
from tests.support.rpc import SERVING, health_status
from tests.support.stored import SUMMARY, C, fingerprint

SCALE = max(1, int(os.environ.get("JITNET_FUZZ_SCALE", "1")))
ALLOWED = {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.RESOURCE_EXHAUSTED}
LIMITS = dict(max_rows=64, max_message_bytes=64 * 1024, max_concurrent_calls=16)
MODELS = {"f1": (2, 4, 1), "f2": (3, 5, 2)}  # id -> layer sizes
SERVICE = "/inference.GRPCInferenceService/"
Input = oip.ModelInferRequest.InferInputTensor
Output = oip.ModelInferRequest.InferRequestedOutputTensor
CONTENT_FIELDS = [f.name for f in oip.InferTensorContents.DESCRIPTOR.fields]


class Fuzzer:
    def __init__(self, handle, channel):
        self.channel = channel
        self.data_dir = handle.store.data_dir
        self.predict = pb_grpc.NetworkServiceStub(channel).Predict
        self.cases = 0
        self.codes: dict[str, int] = {}
        self.stored = fingerprint(self.data_dir)

    def send(self, rpc: str, request) -> None:
        """One case: `request` is a message, or bytes for the server to parse."""
        self.cases += 1
        reply_type = getattr(oip, f"{rpc}Response")
        call = self.channel.unary_unary(SERVICE + rpc)
        data = request if isinstance(request, bytes) else request.SerializeToString()
        code, details, reply = C.OK, "", None
        try:
            reply = reply_type.FromString(call(data, timeout=30))
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
        self.codes[code.name] = self.codes.get(code.name, 0) + 1
        shown = request if isinstance(request, bytes) else str(request)[:800]
        assert code in ALLOWED, f"{rpc} -> {code.name} {details!r}\nrequest: {shown}"
        if code != C.OK:
            assert details and "Traceback" not in details, (rpc, details)
        assert fingerprint(self.data_dir) == self.stored, f"{rpc} changed what is stored"
        if rpc == "ModelInfer" and code == C.OK:
            self._check_answer(oip.ModelInferRequest.FromString(data), reply)

    def _check_answer(self, request, reply) -> None:
        """An answered ModelInfer: one output in the request's datatype and form, and the
        numbers jitnet.v1 Predict gives for the same rows (as float64, then the datatype)."""
        tensor = request.inputs[0]
        wire = {"FP64": "<f8", "FP32": "<f4"}[tensor.datatype]
        field = {"FP64": "fp64_contents", "FP32": "fp32_contents"}[tensor.datatype]
        if request.raw_input_contents:
            rows = np.frombuffer(request.raw_input_contents[0], wire)
        else:
            rows = np.array(getattr(tensor.contents, field), dtype=wire)
        rows = rows.astype(np.float64).reshape(-1, MODELS[request.model_name][0])
        assert [(o.name, o.datatype) for o in reply.outputs] == [("output", tensor.datatype)]
        assert bool(reply.raw_output_contents) == bool(request.raw_input_contents)
        if reply.raw_output_contents:
            got = np.frombuffer(reply.raw_output_contents[0], wire)
        else:
            got = np.array(getattr(reply.outputs[0].contents, field), dtype=wire)
        predicted = self.predict(pb.PredictRequest(model_id=request.model_name, inputs=pb.Tensor(
            shape=rows.shape, raw=rows.astype("<f8").tobytes())), timeout=30)
        want = np.frombuffer(predicted.outputs.raw, "<f8").astype(wire)
        assert got.tobytes() == want.tobytes()
        assert reply.id == request.id and reply.model_name == request.model_name


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory, warmed):
    config = Config(host="127.0.0.1", port=0, data_dir=str(tmp_path_factory.mktemp("fuzz-v2")),
                    refresh_seconds=0.1, threads=4, limits=Limits(**LIMITS))
    handle = create_server(config, warm_up=lambda: None).start()
    assert handle.wait_ready(30)
    channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
    stub = pb_grpc.NetworkServiceStub(channel)
    for model_id, sizes in MODELS.items():
        stub.CreateModel(pb.CreateModelRequest(model_id=model_id, architecture=pb.Architecture(
            layer_sizes=sizes), seed=7), timeout=30)
    fuzz = Fuzzer(handle, channel)
    yield fuzz
    SUMMARY["inference fuzz cases run"] = (
        f"{fuzz.cases} (statuses: "
        + ", ".join(f"{k} {v}" for k, v in sorted(fuzz.codes.items())) + ")")
    assert health_status(channel) == SERVING
    channel.close()
    handle.drain(0).wait(10)


def _settings(examples: int):
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=True,
                    database=None, print_blob=True, suppress_health_check=list(HealthCheck))


# -- strategies -------------------------------------------------------------------------------

names = st.one_of(st.sampled_from(sorted(MODELS)), st.text(max_size=20),
                  st.text(alphabet="abcf12.-_", min_size=1, max_size=140))
versions = st.one_of(st.sampled_from(["", "", "1", "2", "01", "-1", "1.0", "9" * 30]),
                     st.text(max_size=12))
datatypes = st.one_of(st.sampled_from(["FP64", "FP32", "FP16", "INT64", "BYTES", "fp64", ""]),
                      st.text(max_size=8))
int64 = st.integers(-2**63, 2**63 - 1)
dims = st.one_of(st.integers(-2, 70), int64)
shapes = st.lists(dims, max_size=4)
floats = st.one_of(st.floats(width=64), st.sampled_from([0.0, 1e308, -1e308, float("nan"),
                                                           float("inf")]))
parameters = st.dictionaries(
    st.text(max_size=10),
    st.sampled_from([oip.InferParameter(bool_param=True), oip.InferParameter(int64_param=-1),
                     oip.InferParameter(string_param="x"), oip.InferParameter(double_param=0.5),
                     oip.InferParameter(uint64_param=2**64 - 1)]),
    max_size=2)


@st.composite
def contents(draw):
    """A typed contents message with random fields set to random values."""
    message = oip.InferTensorContents()
    for name in draw(st.lists(st.sampled_from(CONTENT_FIELDS), max_size=2, unique=True)):
        field = getattr(message, name)
        if name in ("fp32_contents", "fp64_contents"):
            field.extend(draw(st.lists(st.floats(width=32 if "32" in name else 64),
                                       max_size=12)))
        elif name == "bool_contents":
            field.extend(draw(st.lists(st.booleans(), max_size=12)))
        elif name == "bytes_contents":
            field.extend(draw(st.lists(st.binary(max_size=8), max_size=4)))
        else:
            bits = 64 if "64" in name else 32
            low = 0 if name.startswith("uint") else -2**(bits - 1)
            high = 2**bits - 1 if name.startswith("uint") else 2**(bits - 1) - 1
            field.extend(draw(st.lists(st.integers(low, high), max_size=12)))
    return message


@st.composite
def plausible_infer(draw):
    """A request a stored model answers (right width, rows within the limit or a little over,
    finite or not), with (most of the time) one part replaced by a random value."""
    model = draw(st.sampled_from(sorted(MODELS)))
    width = MODELS[model][0]
    rows = draw(st.integers(0, 70))
    datatype = draw(st.sampled_from(["FP64", "FP32"]))
    wire = {"FP64": "<f8", "FP32": "<f4"}[datatype]
    finite = (st.floats(-2.0**99, 2.0**99, width=32, allow_subnormal=False) if datatype == "FP32"
              else st.floats(-1e300, 1e300))
    values = draw(st.lists(st.one_of(finite, floats) if draw(st.booleans()) else finite,
                           min_size=rows * width, max_size=rows * width))
    with np.errstate(over="ignore"):  # a huge double sent as FP32 is inf: wanted here
        data = np.array(values, dtype=np.float64).astype(wire)
    shape = [rows, width] if rows != 1 or draw(st.booleans()) else [width]
    request = oip.ModelInferRequest(model_name=model, id=draw(st.text(max_size=6)),
                                    inputs=[Input(name="input", datatype=datatype, shape=shape)])
    if draw(st.booleans()):
        request.raw_input_contents.append(data.tobytes())
    else:
        getattr(request.inputs[0].contents, {"FP64": "fp64_contents",
                                             "FP32": "fp32_contents"}[datatype]).extend(
            data.tolist())
    if draw(st.booleans()):
        request.outputs.append(Output(name="output"))
    mutation = draw(st.sampled_from([None, None, "model_name", "model_version", "datatype",
                                     "name", "shape", "raw", "extra raw", "contents", "inputs",
                                     "outputs", "parameters"]))
    tensor = request.inputs[0]
    if mutation == "model_name":
        request.model_name = draw(names)
    elif mutation == "model_version":
        request.model_version = draw(versions)
    elif mutation == "datatype":
        tensor.datatype = draw(datatypes)
    elif mutation == "name":
        tensor.name = draw(st.text(max_size=8))
    elif mutation == "shape":
        tensor.ClearField("shape")
        tensor.shape.extend(draw(shapes))
    elif mutation == "raw":
        request.ClearField("raw_input_contents")
        request.raw_input_contents.extend(draw(st.lists(st.binary(max_size=80), max_size=3)))
    elif mutation == "extra raw":
        request.raw_input_contents.append(draw(st.binary(max_size=40)))
    elif mutation == "contents":
        tensor.contents.MergeFrom(draw(contents()))
    elif mutation == "inputs":
        request.inputs.append(Input(name=draw(st.sampled_from(["input", "x"])),
                                    datatype=draw(datatypes), shape=draw(shapes)))
    elif mutation == "outputs":
        request.outputs.append(Output(name=draw(st.sampled_from(["output", "out", ""]))))
    elif mutation == "parameters":
        for key, value in draw(parameters).items():
            request.parameters[key].CopyFrom(value)
            tensor.parameters[key].CopyFrom(value)
    return request


random_infer = st.builds(
    lambda model, version, inputs, raw, outputs: oip.ModelInferRequest(
        model_name=model, model_version=version, inputs=inputs, raw_input_contents=raw,
        outputs=outputs),
    names, versions,
    st.lists(st.builds(lambda name, datatype, shape, c: Input(name=name, datatype=datatype,
                                                              shape=shape, contents=c),
                       st.sampled_from(["input", "x", ""]), datatypes, shapes, contents()),
             max_size=3),
    st.lists(st.binary(max_size=80), max_size=3),
    st.lists(st.builds(Output, name=st.sampled_from(["output", "y"])), max_size=2))


# -- properties -------------------------------------------------------------------------------


@_settings(120)
@given(request=plausible_infer())
def test_fuzz_plausible_model_infer(fuzzer, request):
    fuzzer.send("ModelInfer", request)


@_settings(60)
@given(request=random_infer)
def test_fuzz_random_model_infer(fuzzer, request):
    fuzzer.send("ModelInfer", request)


@_settings(40)
@given(rpc=st.sampled_from(["ModelInfer", "ModelReady", "ModelMetadata", "ServerReady",
                            "ServerLive", "ServerMetadata"]),
       data=st.binary(max_size=120))
def test_fuzz_random_bytes(fuzzer, rpc, data):
    """Random bytes: sent as they are; the server parses them, or says they do not parse."""
    fuzzer.send(rpc, data)


@_settings(40)
@given(rpc=st.sampled_from(["ModelReady", "ModelMetadata"]), name=names, version=versions)
def test_fuzz_model_ready_and_metadata(fuzzer, rpc, name, version):
    request = getattr(oip, f"{rpc}Request")(name=name, version=version)
    fuzzer.send(rpc, request)
