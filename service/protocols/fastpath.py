"""Predict of one sample in raw form, the latency case, in one module: for jitnet.v1's Predict
(`predict_reply`) and for the Open Inference Protocol's ModelInfer (`infer_reply`), which share
everything but the reply's frame.

The network of a one-sample Predict takes about a microsecond; inside a busy server each numpy
or protobuf C call costs several (docs/benchmarks.md, "Serving"). So this path makes none: the
request's bytes are copied into this thread's buffers for the model's current version, the
kernel runs through its compiled entry point (bound once per buffer set, and again when the
kernel room swaps in another tier: engine/jit/), and the reply's bytes are written around the output
buffer. What it cannot answer (another shape, an input that is not finite, a reply over
the size limit, a big-endian host) it leaves to the general path, which answers or says what is
wrong: the servicer calls `predict_reply` (`infer_reply`) first and goes on when it returns
None. Errors it does raise (an unknown model) are the ones the general path would raise for the
same request. A request's min_version costs one integer comparison here; a replica holding an
older version leaves the request to the general path, which re-reads the store.

The one other place that knows of this path is the call guard (server/guard.py): handlers marked
`may_return_bytes` here, Predict's and ModelInfer's, may reply with the bytes made here (and the
metrics count such a reply as one row).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import numpy as np

from jitnet.inference import open_inference_grpc_pb2 as oip
from jitnet.v1 import jitnet_pb2 as pb

from ..engine import jit
from ..errors import FailedPrecondition, NotFound
from ..store import ModelRecord

_RETURNS_BYTES = "jitnet_may_return_bytes"


def may_return_bytes(method):
    """Marks a handler whose reply may be bytes it encoded itself (this module's); the call
    guard sends them as they are. Such a reply answers one row: the metrics count it so without
    reading the request's tensor again (observability._counted_unary)."""
    setattr(method, _RETURNS_BYTES, True)
    return method


def returns_bytes(method) -> bool:
    return getattr(method, _RETURNS_BYTES, False)


# The wire's raw tensors are little-endian float64: on such a host, this machine's float64.
_NATIVE_IS_WIRE = sys.byteorder == "little"

# Models a thread keeps buffers for; past this many it starts over (a few KiB each).
MAX_MODELS_PER_THREAD = 256


def predict_reply(get_record: Callable[[str], ModelRecord], request: pb.PredictRequest,
                  max_reply_bytes: int) -> bytes | None:
    """The encoded PredictResponse for a one-sample raw request, or None for the general path.
    `get_record` is the store's get (NotFound for an unknown model; a model made a moment ago
    on another replica is NotFound here until seen: a request with min_version leaves that
    case to the general path as well)."""
    tensor = request.inputs
    dims = tensor.shape
    if len(dims) != 2 or dims[0] != 1 or len(tensor.values) or not _NATIVE_IS_WIRE:
        return None
    raw = tensor.raw  # a copy per read: read once, and only for one row
    model_id = request.model_id
    try:
        record = get_record(model_id)
    except (NotFound, FailedPrecondition):
        if request.min_version:
            return None  # made or repaired elsewhere a moment ago? The general path asks
        raise
    if record.version < request.min_version:
        return None  # read your writes: the general path re-reads the store first
    prepared = _prepared(model_id, record)
    if len(raw) != len(prepared.inputs) or len(raw) != 8 * dims[1]:
        return None
    prepared.inputs[:] = raw
    if prepared.run():  # the count of inputs that are not finite
        return None
    reply = b"".join((prepared.prefix, prepared.outputs, prepared.suffix))
    return reply if len(reply) <= max_reply_bytes else None


def infer_reply(get_record: Callable[[str], ModelRecord], request: oip.ModelInferRequest,
                max_reply_bytes: int) -> bytes | None:
    """The encoded ModelInferResponse for a request of one raw FP64 row [1, n_in] into the
    input 'input' (asking for 'output' or for nothing), or None for the general path. The
    same buffers and kernel as predict_reply; only the reply's frame differs."""
    inputs = request.inputs
    if len(inputs) != 1 or len(request.raw_input_contents) != 1 or not _NATIVE_IS_WIRE:
        return None
    tensor = inputs[0]
    dims = tensor.shape
    if (len(dims) != 2 or dims[0] != 1 or tensor.datatype != "FP64" or tensor.name != "input"
            or tensor.HasField("contents")):
        return None
    outputs = request.outputs
    if len(outputs) > 1 or (outputs and outputs[0].name != "output"):
        return None
    model_id = request.model_name
    record = get_record(model_id)
    prepared = _prepared(model_id, record)
    version = request.model_version
    if version and version != prepared.version_text:
        return None  # the general path names the version that is not there
    raw = request.raw_input_contents[0]  # a copy per read: read once, and only for one row
    if len(raw) != len(prepared.inputs) or len(raw) != 8 * dims[1]:
        return None
    prepared.inputs[:] = raw
    if prepared.run():  # the count of inputs that are not finite
        return None
    request_id = request.id
    reply = b"".join((prepared.infer_head, _string_field(3, request_id) if request_id else b"",
                      prepared.infer_tail, prepared.outputs))
    return reply if len(reply) <= max_reply_bytes else None


class _Prepared:
    """One thread's buffers for one version of a model, the kernel bound to them, and the
    replies' bytes around the outputs (jitnet.v1's PredictResponse, the protocol's
    ModelInferResponse)."""

    __slots__ = ("record", "generation", "inputs", "outputs", "run", "prefix", "suffix",
                 "version_text", "infer_head", "infer_tail")

    def __init__(self, record: ModelRecord):
        arch = record.arch
        inputs = np.empty((1, arch.layer_sizes[0]))
        outputs = np.empty((1, arch.layer_sizes[-1]))
        self.generation = _room.generation  # before asking: a swap after it binds again
        self.run = jit.kernels_for(arch).bind_predict_sample(outputs, inputs, record.params,
                                                              np.empty((2, arch.n_units)))
        self.record = record
        self.inputs = memoryview(inputs).cast("B")
        self.outputs = memoryview(outputs).cast("B")
        self.prefix, self.suffix = _reply_frame(arch.layer_sizes[-1], record.version)
        self.version_text = str(record.version)
        self.infer_head, self.infer_tail = _infer_reply_frame(record.id, self.version_text,
                                                              arch.layer_sizes[-1])


class _PerThread(threading.local):
    def __init__(self):
        self.prepared: dict[str, _Prepared] = {}


_per_thread = _PerThread()
_room = jit.room


def _prepared(model_id: str, record: ModelRecord) -> _Prepared:
    table = _per_thread.prepared
    prepared = table.get(model_id)
    if (prepared is None or prepared.record is not record
            or prepared.generation != _room.generation):
        if len(table) >= MAX_MODELS_PER_THREAD:
            table.clear()
        prepared = table[model_id] = _Prepared(record)
    return prepared


def _reply_frame(columns: int, version: int) -> tuple[bytes, bytes]:
    """The bytes of PredictResponse{outputs: Tensor{shape: [1, columns], raw: <8 x columns
    bytes>}, model_version: version} before and after the outputs, exactly as protobuf encodes
    them (tests compare with SerializeToString). The wire format: a field is a key (number << 3
    | wire type), then a varint (type 0) or a varint length and that many bytes (type 2);
    repeated numbers are packed."""
    shape = _varint(1) + _varint(columns)
    tensor = (_key(1, 2) + _varint(len(shape)) + shape  # Tensor.shape = 1
              + _key(3, 2) + _varint(8 * columns))  # Tensor.raw = 3, then the outputs
    prefix = _key(1, 2) + _varint(len(tensor) + 8 * columns) + tensor  # .outputs = 1
    suffix = _key(2, 0) + _varint(version) if version else b""  # .model_version = 2
    return prefix, suffix


def _infer_reply_frame(model_name: str, version: str, columns: int) -> tuple[bytes, bytes]:
    """The bytes of ModelInferResponse{model_name, model_version, [id,] outputs:
    [InferOutputTensor{name: "output", datatype: "FP64", shape: [1, columns]}],
    raw_output_contents: [<8 x columns bytes>]} before the id (`head`) and between the id and
    the outputs' bytes (`tail`), exactly as protobuf encodes them: fields in number order, the
    outputs' bytes last (tests compare with SerializeToString)."""
    head = _string_field(1, model_name) + _string_field(2, version)  # model_name, model_version
    shape = _varint(1) + _varint(columns)
    tensor = (_string_field(1, "output") + _string_field(2, "FP64")  # .name, .datatype
              + _key(3, 2) + _varint(len(shape)) + shape)  # .shape, packed
    tail = (_key(5, 2) + _varint(len(tensor)) + tensor  # .outputs = 5
            + _key(6, 2) + _varint(8 * columns))  # .raw_output_contents = 6, then the outputs
    return head, tail


def _string_field(number: int, text: str) -> bytes:
    """A string field; empty strings are not on the wire (proto3)."""
    data = text.encode()
    return _key(number, 2) + _varint(len(data)) + data if data else b""


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
