"""Property-based fuzzing of every RPC (hypothesis): random and malformed field values, random
shapes and raw lengths, huge numbers, and random bytes sent as the request (parsed by the
server). Properties, checked after every case:

- the status is never UNKNOWN, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED or ABORTED (calls are
  sequential, so ABORTED would mean a leaked lease); errors carry a message;
- a failed call changes nothing stored (a fingerprint of every model file: versions, counters,
  weights, momentum), except the versions a failed Train had already acknowledged; a read
  (GetModel, ListModels, Predict, dry-run Step) changes nothing even when it succeeds;
- the server stays SERVING, and no lock file is made for an id that never named a model.

The run is bounded and reproducible: derandomized (a fixed seed per test), no deadlines, no
example database; JITNET_FUZZ_SCALE multiplies the number of examples (default 1: ~390 cases).
The number of cases run is printed in pytest's summary.
"""

from __future__ import annotations

import math
import os
import struct
from itertools import pairwise

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import RPCS, SERVICE, SERVING, STREAMING, C, health_status
from tests.support.servers import start_in_process
from tests.support.stored import SUMMARY, fingerprint

SCALE = max(1, int(os.environ.get("JITNET_FUZZ_SCALE", "1")))
ALLOWED = {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.ALREADY_EXISTS, C.FAILED_PRECONDITION,
           C.RESOURCE_EXHAUSTED}
# Small limits, so that random sizes reach them and every case stays fast.
LIMITS = dict(max_parameters=5000, max_layer_width=64, max_layers=4, max_rows=64,
              max_work=20000, max_message_bytes=256 * 1024, max_concurrent_calls=16)
BASELINE = {  # id -> architecture; recreated whenever a case deletes one
    "f1": pb.Architecture(layer_sizes=[2, 4, 1]),
    "f2": pb.Architecture(layer_sizes=[3, 5, 2], output_activation=pb.ACTIVATION_SOFTMAX,
                          loss=pb.LOSS_CROSS_ENTROPY, hidden_activation=pb.ACTIVATION_TANH),
    "f3": pb.Architecture(layer_sizes=[1, 1], output_activation=pb.ACTIVATION_LINEAR,
                          bias=False),
}
REQUEST_TYPES = {rpc: getattr(pb, f"{rpc}Request") for rpc in RPCS}


class Fuzzer:
    def __init__(self, server):
        self.channel = server.channel
        self.stub = server.stub
        self.data_dir = server.data_dir
        self.cases = 0
        self.codes: dict[str, int] = {}
        self.ever_created: set[str] = set()

    def ensure_baseline(self) -> None:
        present = set(fingerprint(self.data_dir))
        for model_id, arch in BASELINE.items():
            if model_id + ".jitnet" not in present:
                self.stub.CreateModel(pb.CreateModelRequest(model_id=model_id, architecture=arch,
                                                            seed=7), timeout=30)
                self.ever_created.add(model_id)

    def send(self, rpc: str, request) -> None:
        """One case: `request` is a message, or bytes the server is to parse."""
        self.cases += 1
        self.ensure_baseline()
        before = fingerprint(self.data_dir)
        streaming = rpc in STREAMING
        acked: list[int] = []  # versions a Train reported (each committed before it was sent)
        code, details = C.OK, ""
        try:
            if isinstance(request, bytes):
                path = f"/{SERVICE}/{rpc}"
                call = (self.channel.unary_stream(path) if streaming
                        else self.channel.unary_unary(path))
            else:
                call = getattr(self.stub, rpc)
            result = call(request, timeout=30)
            if streaming:
                for reply in result:
                    acked.append(reply.model_version)
            elif rpc == "CreateModel" and not isinstance(request, bytes):
                self.ever_created.add(result.model.id)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
        self.codes[code.name] = self.codes.get(code.name, 0) + 1
        shown = request if isinstance(request, bytes) else str(request)[:600]
        assert code in ALLOWED, f"{rpc} -> {code.name} {details!r}\nrequest: {shown}"
        if code != C.OK:
            assert details and "Traceback" not in details, (rpc, details)
        read_only = rpc in ("GetModel", "ListModels", "Predict") or (
            rpc == "Step" and not isinstance(request, bytes) and request.dry_run)
        if code != C.OK or read_only:
            after = fingerprint(self.data_dir)
            if rpc == "Train" and acked:
                self._check_failed_train(request, before, after, acked[-1])
            else:
                assert after == before, f"{rpc} -> {code.name} changed what is stored\n{shown}"

    def _check_failed_train(self, request, before, after, last_acked: int) -> None:
        """A Train that failed after reporting progress (e.g. it diverged later): only its own
        model changed, to the last version it reported, with finite weights."""
        model_id = request.model_id if not isinstance(request, bytes) else \
            pb.TrainRequest.FromString(request).model_id
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        assert changed == {model_id + ".jitnet"}, changed
        model = self.stub.GetModel(pb.GetModelRequest(model_id=model_id,
                                                      include_weights=True, raw=True),
                                   timeout=30).model
        assert model.version == last_acked, (model.version, last_acked)
        for layer in model.layers:
            for t in (layer.weights, layer.biases):
                assert all(math.isfinite(v) for v in memoryview(t.raw).cast("d"))


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory, warmed):
    server = start_in_process(tmp_path_factory.mktemp("fuzz"), threads=4, limits=LIMITS)
    fuzz = Fuzzer(server)
    yield fuzz
    SUMMARY["fuzz cases run"] = (f"{fuzz.cases} (statuses: "
                                 + ", ".join(f"{k} {v}" for k, v in sorted(fuzz.codes.items()))
                                 + ")")
    print(f"\nfuzz: {fuzz.cases} cases, statuses {fuzz.codes}")
    assert health_status(server.channel) == SERVING
    locks = set(os.listdir(os.path.join(fuzz.data_dir, ".locks")))
    assert {name[: -len(".lock")] for name in locks} <= fuzz.ever_created
    server.close()


def _settings(examples: int):
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=True,
                    database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


# -- strategies -------------------------------------------------------------------------------

ID_CHARS = "ABCXYZabcxyz0189._-"
ids = st.one_of(
    st.sampled_from(sorted(BASELINE)),
    st.text(alphabet=ID_CHARS, min_size=1, max_size=130),
    st.text(max_size=140),
    st.just(""),
)
u32 = st.one_of(st.integers(0, 6), st.sampled_from([64, 65, 2**31, 2**32 - 1]),
                st.integers(0, 2**32 - 1))
u64 = st.one_of(st.integers(0, 9), st.integers(0, 2**64 - 1))
enums = st.one_of(st.integers(0, 6), st.integers(-2**31, 2**31 - 1))
floats = st.one_of(st.floats(), st.sampled_from([0.0, 0.05, 0.5, 1.0, -0.5, 1e308, -1e308,
                                                 5e-324, float("nan"), float("inf")]))
finite = st.floats(-10, 10, allow_nan=False)
rates = st.one_of(st.sampled_from([0.1, 0.5, 1e-3]), floats)


@st.composite
def tensors(draw, columns=(1, 2, 3)):
    """Plausible tensors (right shapes, finite or not), and random ones (any shape, any data,
    raw bytes of any length, both forms at once)."""
    if draw(st.booleans()):
        shape = [draw(st.integers(0, 6)), draw(st.sampled_from(columns))]
        data = finite
    else:
        shape = draw(st.lists(st.one_of(st.integers(0, 5), u32), max_size=4))
        data = floats
    count = math.prod(shape) if shape else 0
    form = draw(st.sampled_from(["values", "raw", "none", "both", "random raw",
                                 "random values"]))
    tensor = pb.Tensor(shape=shape)
    fits = 0 < count <= 64
    if form in ("values", "both") and fits:
        tensor.values.extend(draw(st.lists(data, min_size=count, max_size=count)))
    if form in ("raw", "both") and fits:
        tensor.raw = struct.pack(f"<{count}d", *draw(st.lists(data, min_size=count,
                                                               max_size=count)))
    if form == "random raw":
        tensor.raw = draw(st.binary(max_size=80))
    if form == "random values":
        tensor.values.extend(draw(st.lists(floats, max_size=12)))
    return tensor


architectures = st.builds(
    lambda sizes, hidden, output, loss, bias, mode: pb.Architecture(
        layer_sizes=sizes, hidden_activation=hidden, output_activation=output, loss=loss,
        gradient_mode=mode, **({} if bias is None else {"bias": bias})),
    st.one_of(st.lists(st.integers(0, 8), max_size=6), st.lists(u32, max_size=5)),
    enums, enums, enums, st.one_of(st.none(), st.booleans()), enums)
layers = st.lists(st.builds(lambda w, b, has_b: pb.Layer(weights=w, **({"biases": b} if has_b
                                                                        else {})),
                            tensors(columns=(1, 2, 3, 4, 5)), tensors(columns=(1, 2, 3, 4, 5)),
                            st.booleans()), max_size=3)


# Plausible requests: right shapes for a baseline model, then (half the time) one field
# replaced by a random value. They get past the first checks and reach training, commits and
# the kernels, where random requests rarely go.
DIMS = {model_id: (arch.layer_sizes[0], arch.layer_sizes[-1])
        for model_id, arch in BASELINE.items()}


@st.composite
def _matrix(draw, rows: int, columns: int, values=finite):
    data = draw(st.lists(values, min_size=rows * columns, max_size=rows * columns))
    tensor = pb.Tensor(shape=[rows, columns])
    if rows * columns:
        if draw(st.booleans()):
            tensor.raw = struct.pack(f"<{len(data)}d", *data)
        else:
            tensor.values.extend(data)
    return tensor


def _mutated(draw, request, fields: dict):
    """Replaces one field of `request` (or none) with a value drawn from its strategy."""
    name = draw(st.sampled_from([None, *sorted(fields)]))
    if name is not None:
        value = draw(fields[name])
        request.ClearField(name)
        if isinstance(value, list):
            getattr(request, name).extend(value)
        elif isinstance(value, pb.Tensor):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


@st.composite
def plausible_train(draw):
    model_id = draw(st.sampled_from(sorted(BASELINE)))
    n_in, n_out = DIMS[model_id]
    rows = draw(st.integers(1, 6))
    request = pb.TrainRequest(
        model_id=model_id, inputs=draw(_matrix(rows, n_in)), targets=draw(_matrix(rows, n_out)),
        epochs=draw(st.integers(1, 60)), learning_rate=draw(st.sampled_from([0.1, 0.5, 3.0])),
        batch_size=draw(st.integers(0, 8)), momentum=draw(st.sampled_from([0.0, 0.5, 0.9])),
        shuffle=draw(st.booleans()), seed=draw(u64), report_every=draw(st.integers(0, 20)),
        target_loss=draw(st.sampled_from([0.0, 0.0, 0.01])))
    return _mutated(draw, request, dict(
        inputs=tensors(), targets=tensors(), epochs=u32, learning_rate=floats, batch_size=u32,
        momentum=floats, seed=u64, target_loss=floats, report_every=u32, model_id=ids))


@st.composite
def plausible_step(draw):
    model_id = draw(st.sampled_from(sorted(BASELINE)))
    n_in, n_out = DIMS[model_id]
    request = pb.StepRequest(
        model_id=model_id, input=draw(st.lists(finite, min_size=n_in, max_size=n_in)),
        target=draw(st.lists(finite, min_size=n_out, max_size=n_out)),
        learning_rate=draw(st.sampled_from([0.1, 1.0, 1e3])), dry_run=draw(st.booleans()))
    return _mutated(draw, request, dict(input=vectors, target=vectors, learning_rate=floats,
                                        model_id=ids))


@st.composite
def plausible_predict(draw):
    model_id = draw(st.sampled_from(sorted(BASELINE)))
    n_in, _ = DIMS[model_id]
    request = pb.PredictRequest(model_id=model_id,
                                inputs=draw(_matrix(draw(st.integers(0, 70)), n_in,
                                                    st.floats(-1e300, 1e300))))
    return _mutated(draw, request, dict(inputs=tensors(), model_id=ids))


@st.composite
def plausible_create(draw):
    sizes = draw(st.lists(st.integers(1, 6), min_size=2, max_size=4))
    bias = draw(st.booleans())
    arch = pb.Architecture(layer_sizes=sizes, bias=bias,
                           hidden_activation=draw(st.integers(0, 4)),
                           output_activation=draw(st.sampled_from([0, 1, 4, 5])),
                           gradient_mode=draw(st.integers(0, 2)))
    request = pb.CreateModelRequest(model_id=draw(st.text(alphabet=ID_CHARS[:-3], min_size=1,
                                                          max_size=12)),
                                    architecture=arch, init=draw(st.integers(0, 3)),
                                    seed=draw(u64))
    if draw(st.booleans()):
        for fan_in, fan_out in pairwise(sizes):
            layer = pb.Layer(weights=draw(_matrix(fan_out, fan_in)))
            if bias:
                layer.biases.CopyFrom(pb.Tensor(shape=[fan_out], values=draw(st.lists(
                    finite, min_size=fan_out, max_size=fan_out))))
            request.layers.append(layer)
    return _mutated(draw, request, dict(init=enums, seed=u64, model_id=ids))


# -- one property per RPC ---------------------------------------------------------------------


@_settings(70)
@given(model_id=ids, arch=st.one_of(architectures, st.sampled_from(list(BASELINE.values()))),
       init=enums, seed=u64, explicit=layers, plausible=st.one_of(st.none(), plausible_create()))
def test_fuzz_create_model(fuzzer, model_id, arch, init, seed, explicit, plausible):
    fuzzer.send("CreateModel", plausible or pb.CreateModelRequest(
        model_id=model_id, architecture=arch, init=init, seed=seed, layers=explicit))


@_settings(25)
@given(model_id=ids, include_weights=st.booleans(), raw=st.booleans())
def test_fuzz_get_model(fuzzer, model_id, include_weights, raw):
    fuzzer.send("GetModel", pb.GetModelRequest(model_id=model_id,
                                               include_weights=include_weights, raw=raw))


@_settings(25)
@given(page_size=u32, page_token=st.one_of(st.text(max_size=60), st.just(""),
                                           st.sampled_from(["YWZ0ZXI6ZjE", "YWZ0ZXI6"])))
def test_fuzz_list_models(fuzzer, page_size, page_token):
    fuzzer.send("ListModels", pb.ListModelsRequest(page_size=page_size, page_token=page_token))


@_settings(25)
@given(model_id=ids)
def test_fuzz_delete_model(fuzzer, model_id):
    fuzzer.send("DeleteModel", pb.DeleteModelRequest(model_id=model_id))


@_settings(70)
@given(model_id=ids, inputs=tensors(), targets=tensors(), epochs=u32, rate=rates,
       batch_size=u32, momentum=st.one_of(st.sampled_from([0.0, 0.9]), floats),
       shuffle=st.booleans(), seed=u64,
       target_loss=st.one_of(st.just(0.0), floats), report_every=u32,
       plausible=st.one_of(st.none(), plausible_train(), plausible_train()))
def test_fuzz_train(fuzzer, model_id, inputs, targets, epochs, rate, batch_size, momentum,
                    shuffle, seed, target_loss, report_every, plausible):
    fuzzer.send("Train", plausible or pb.TrainRequest(
        model_id=model_id, inputs=inputs, targets=targets, epochs=epochs, learning_rate=rate,
        batch_size=batch_size, momentum=momentum, shuffle=shuffle, seed=seed,
        target_loss=target_loss, report_every=report_every))


vectors = st.one_of(st.lists(finite, min_size=1, max_size=3), st.lists(floats, max_size=70))


@_settings(55)
@given(model_id=ids, inputs=vectors, target=vectors, rate=rates, dry_run=st.booleans(),
       plausible=st.one_of(st.none(), plausible_step(), plausible_step()))
def test_fuzz_step(fuzzer, model_id, inputs, target, rate, dry_run, plausible):
    fuzzer.send("Step", plausible or pb.StepRequest(
        model_id=model_id, input=inputs, target=target, learning_rate=rate, dry_run=dry_run))


@_settings(55)
@given(model_id=ids, inputs=tensors(),
       plausible=st.one_of(st.none(), plausible_predict(), plausible_predict()))
def test_fuzz_predict(fuzzer, model_id, inputs, plausible):
    fuzzer.send("Predict", plausible or pb.PredictRequest(model_id=model_id, inputs=inputs))


@_settings(70)
@given(rpc=st.sampled_from(sorted(RPCS)), data=st.binary(max_size=200))
def test_fuzz_random_bytes_as_requests(fuzzer, rpc, data):
    """Random bytes: parsed as the request type where they parse (then sent as that message),
    else sent as they are for the server to parse."""
    try:
        request = REQUEST_TYPES[rpc].FromString(data)
    except Exception:  # noqa: BLE001 - DecodeError: the server gets the bytes themselves
        request = data
    fuzzer.send(rpc, request)
