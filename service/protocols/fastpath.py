"""Predict of one row, the latency case, in one module: for jitnet.v1's Predict
(`predict_reply`) and for the Open Inference Protocol's ModelInfer (`infer_reply`), which share
everything but the encodings around the numbers.

The network of a one-sample Predict takes about a microsecond; inside a busy server each numpy
or protobuf C call costs several (docs/benchmarks.md, "Serving"). So this path makes few: the
request's numbers are copied into this thread's buffers for the model's current version, the
kernel runs through its compiled entry point (bound once per buffer set, and again when the
kernel room swaps in another tier: engine/jit/), and the reply's bytes are written around the output
buffer.

Every form ends in the same packed numbers. grpc hands the handler the request as protobuf
parsed it (the call guard's parse); this path asks protobuf once for the encoding of the input
tensor (`SerializeToString`, one C call, about what reading `raw` costs) and compares it with
the encodings of the forms it answers, made once per model version (`_Prepared`). protobuf
encodes canonically whatever the client sent: fields in number order, repeated numbers packed
(a client may send them unpacked, one tag per number, or in several runs: the parse joins
them), nothing for a default value. And a packed `repeated double` is little-endian float64,
like `raw`: so jitnet.v1's `raw` and `values`, and the protocol's raw_input_contents,
`fp64_contents` and `fp32_contents`, are all a known header and then the numbers, which one
reader (`_Packed`) copies into the model's buffer, converting between dtypes where they differ.
The reply is written in the request's form. Bytes that do not parse (a packed field cut short,
a length that is not a whole number of numbers) never get here: the guard answers
INVALID_ARGUMENT. An encoding that is no form of one row for this model (another shape, a count
that is not the shape's, data in two forms, a field this path does not write back) is left to
the general path, as is what else it cannot answer (an input that is not finite, a reply over
the size limit, a big-endian host, an unknown model), which answers or says what is wrong: the
servicer calls `predict_reply` (`infer_reply`) first and goes on when it returns None. So every
error is the general path's, which checks the request before it asks the store (a malformed
request for an unknown model is INVALID_ARGUMENT, as before). A request's min_version costs one
integer comparison here; a replica holding an older version (or none yet) leaves the request to
the general path, which re-reads the store.

The one other place that knows of this path is the call guard (server/guard.py): handlers marked
`may_return_bytes` here, Predict's and ModelInfer's, may reply with the bytes made here (and the
metrics count such a reply as one row).
"""

from __future__ import annotations

import struct
import sys
import threading
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from jitnet.inference import open_inference_grpc_pb2 as oip
from jitnet.v1 import jitnet_pb2 as pb

from ..engine import jit
from ..errors import FailedPrecondition, NotFound
from ..store import ModelRecord
from .inference.convert import CONTENTS, FP32, FP64, INPUT, OUTPUT

_RETURNS_BYTES = "jitnet_may_return_bytes"


def may_return_bytes(method):
    """Marks a handler whose reply may be bytes it encoded itself (this module's); the call
    guard sends them as they are. Such a reply answers one row: the metrics count it so without
    reading the request's tensor again (observability._counted_unary)."""
    setattr(method, _RETURNS_BYTES, True)
    return method


def returns_bytes(method) -> bool:
    return getattr(method, _RETURNS_BYTES, False)


# The wire's numbers are little-endian: on such a host, this machine's.
_NATIVE_IS_WIRE = sys.byteorder == "little"

# Models a thread keeps buffers for; past this many it starts over (a few KiB each).
MAX_MODELS_PER_THREAD = 256


class Elements(NamedTuple):
    """A type of packed numbers: struct's format character and the size of one."""

    code: str
    size: int


FLOAT64, FLOAT32 = Elements("d", 8), Elements("f", 4)
# The protocol's datatypes this path answers: their numbers, and their typed-contents field.
_DATATYPES = {FP64: FLOAT64, FP32: FLOAT32}
_CONTENTS_FIELD = {datatype: oip.InferTensorContents.DESCRIPTOR.fields_by_name[name].number
                   for datatype, name in CONTENTS.items()}


class _Packed:
    """`count` numbers packed little-endian as `wire` elements (raw bytes and packed repeated
    fields alike), to and from a buffer of `native` elements (a model's dtype): copied as they
    are when the two are the same, converted by struct otherwise (one C call each way, no
    numpy). float32 to float64 is exact; float64 to float32 rounds to nearest as a C cast
    does (numpy's astype), and a number past float32's range is refused (the general path
    decides what it gives)."""

    __slots__ = ("size", "_wire", "_native")

    def __init__(self, count: int, wire: Elements, native: Elements):
        self.size = count * wire.size  # bytes on the wire
        if wire == native:
            self._wire = self._native = None
        else:
            self._wire = struct.Struct(f"<{count}{wire.code}")
            self._native = struct.Struct(f"<{count}{native.code}")

    def read(self, data: bytes, start: int, into: memoryview) -> bool:
        """The numbers at data[start:start + size] into the buffer `into` (its bytes); False
        when one does not fit the buffer's dtype."""
        if self._wire is None:
            into[:] = data[start:start + self.size]
            return True
        try:
            self._native.pack_into(into, 0, *self._wire.unpack_from(data, start))
        except OverflowError:
            return False
        return True

    def write(self, buffer: memoryview) -> bytes | memoryview | None:
        """The buffer's numbers as the wire's bytes; None when one does not fit."""
        if self._wire is None:
            return buffer
        try:
            return self._wire.pack(*self._native.unpack(buffer))
        except OverflowError:
            return None


class _Form(NamedTuple):
    """One encoding of a one-row input that this path answers, and its reply's frame."""

    header: bytes  # the input tensor's encoding before its numbers (V2 raw: all of it)
    trailer: bytes  # and after them
    numbers: _Packed  # the request's numbers
    reply_numbers: _Packed  # the reply's, in the same elements
    before: bytes  # the reply's bytes before its numbers (V2: after the model and the id)
    after: bytes  # and after them
    in_tensor: bool = True  # False: the numbers are in raw_input_contents[0] (V2 raw)


def _match(forms: dict[int, tuple[_Form, ...]], encoded: bytes) -> _Form | None:
    """The form whose encoding `encoded` is: a header, the numbers, a trailer. The header
    gives the numbers' length, so a header and trailer around exactly that many bytes are
    the whole of the tensor."""
    for form in forms.get(len(encoded), ()):
        if encoded.startswith(form.header) and encoded.endswith(form.trailer):
            return form
    return None


def predict_reply(get_record: Callable[[str], ModelRecord], request: pb.PredictRequest,
                  max_reply_bytes: int) -> bytes | None:
    """The encoded PredictResponse for a one-row request ([1, n_in], raw or values), in the
    request's form, or None for the general path. `get_record` is the store's get (NotFound
    for an unknown model, or for one made a moment ago on another replica and not seen yet:
    both are the general path's to answer)."""
    tensor = request.inputs
    dims = tensor.shape
    if len(dims) != 2 or dims[0] != 1 or not _NATIVE_IS_WIRE:
        return None  # and a tensor of many rows is not encoded again here
    model_id = request.model_id
    record = _record_or_none(get_record, model_id)
    if record is None or record.version < request.min_version:
        return None  # read your writes: the general path re-reads the store first
    prepared = _prepared(model_id, record)
    encoded = tensor.SerializeToString()
    form = _match(prepared.predict_forms, encoded)
    if form is None or not form.numbers.read(encoded, len(form.header), prepared.inputs):
        return None
    if prepared.run():  # the count of inputs that are not finite
        return None
    numbers = form.reply_numbers.write(prepared.outputs)
    if numbers is None:
        return None
    reply = b"".join((form.before, numbers, form.after))
    return reply if len(reply) <= max_reply_bytes else None


def infer_reply(get_record: Callable[[str], ModelRecord], request: oip.ModelInferRequest,
                max_reply_bytes: int) -> bytes | None:
    """The encoded ModelInferResponse for a request of one row [1, n_in], FP64 or FP32, raw
    or typed, into the input 'input' (asking for 'output' or for nothing), in the request's
    datatype and form; or None for the general path. The same buffers and kernel as
    predict_reply; only the frames differ."""
    inputs = request.inputs
    if len(inputs) != 1 or not _NATIVE_IS_WIRE:
        return None
    tensor = inputs[0]
    dims = tensor.shape
    if len(dims) != 2 or dims[0] != 1:
        return None
    outputs = request.outputs
    if len(outputs) > 1 or (outputs and outputs[0].name != OUTPUT):
        return None
    model_id = request.model_name
    record = _record_or_none(get_record, model_id)
    if record is None:
        return None
    prepared = _prepared(model_id, record)
    version = request.model_version
    if version and version != prepared.version_text:
        return None  # the general path names the version that is not there
    encoded = tensor.SerializeToString()
    form = _match(prepared.infer_forms, encoded)
    if form is None:
        return None
    buffers = request.raw_input_contents
    if form.in_tensor:
        if len(buffers):
            return None  # data in two forms: the general path says so
        data, start = encoded, len(form.header)
    else:
        if len(buffers) != 1:
            return None
        data, start = buffers[0], 0  # a copy per read: read once, and only for one row
        if len(data) != form.numbers.size:
            return None
    if not form.numbers.read(data, start, prepared.inputs) or prepared.run():
        return None  # run(): the count of inputs that are not finite
    numbers = form.reply_numbers.write(prepared.outputs)
    if numbers is None:
        return None
    request_id = request.id
    reply = b"".join((prepared.infer_head, _string_field(3, request_id) if request_id else b"",
                      form.before, numbers, form.after))
    return reply if len(reply) <= max_reply_bytes else None


def _record_or_none(get_record: Callable[[str], ModelRecord], model_id: str) -> ModelRecord | None:
    """The model's record; None when the store has none (or cannot read it): the general path
    checks the request first and then says so, as it does for every request."""
    try:
        return get_record(model_id)
    except (NotFound, FailedPrecondition):
        return None


class _Prepared:
    """One thread's buffers for one version of a model, the kernel bound to them, and the
    forms this path answers for it: their encodings, and their replies' bytes around the
    outputs (jitnet.v1's PredictResponse, the protocol's ModelInferResponse)."""

    __slots__ = ("record", "generation", "inputs", "outputs", "run", "version_text",
                 "predict_forms", "infer_head", "infer_forms")

    def __init__(self, record: ModelRecord):
        arch = record.arch
        n_in, n_out = arch.layer_sizes[0], arch.layer_sizes[-1]
        native = FLOAT64  # the model's dtype, that of its buffers
        inputs = np.empty((1, n_in))
        outputs = np.empty((1, n_out))
        self.generation = _room.generation  # before asking: a swap after it binds again
        self.run = jit.kernels_for(arch).bind_predict_sample(outputs, inputs, record.params,
                                                              np.empty((2, arch.n_units)))
        self.record = record
        self.inputs = memoryview(inputs).cast("B")
        self.outputs = memoryview(outputs).cast("B")
        self.version_text = str(record.version)

        def packed(wire: Elements) -> tuple[_Packed, _Packed]:
            """The request's numbers and the reply's, both in the request's elements."""
            return _Packed(n_in, wire, native), _Packed(n_out, wire, native)

        forms = []
        for field, trailer in ((_TENSOR_RAW, b""), (_TENSOR_RAW, _DTYPE_FLOAT64),
                               (_TENSOR_VALUES, b"")):
            request, reply = packed(FLOAT64)  # raw float64 and values: float64 on the wire
            before, after = _reply_frame(n_out, record.version, field, reply.size)
            forms.append(_Form(_tensor_head(n_in, field, request.size), trailer, request,
                               reply, before, after))
        self.predict_forms = _by_length(forms)

        self.infer_head = _string_field(1, record.id) + _string_field(2, self.version_text)
        forms = []
        for datatype, wire in _DATATYPES.items():
            request, reply = packed(wire)
            for typed in (False, True):
                header = _infer_tensor_head(INPUT, datatype, n_in, request.size if typed
                                            else None)
                forms.append(_Form(header, b"", request, reply,
                                   _infer_reply_frame(datatype, n_out, reply.size, typed), b"",
                                   in_tensor=typed))
        self.infer_forms = _by_length(forms)


def _by_length(forms: list[_Form]) -> dict[int, tuple[_Form, ...]]:
    """The forms by the length of their encoding, for `_match`."""
    table: dict[int, tuple[_Form, ...]] = {}
    for form in forms:
        length = len(form.header) + (form.numbers.size if form.in_tensor else 0) + len(
            form.trailer)
        table[length] = (*table.get(length, ()), form)
    return table


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


# -- the encodings, exactly as protobuf writes them (tests compare with SerializeToString) ---
# The wire format: a field is a key (number << 3 | wire type), then a varint (type 0) or a
# varint length and that many bytes (type 2); repeated numbers are packed, in one field.

_TENSOR_VALUES, _TENSOR_RAW = 2, 3  # Tensor.values, Tensor.raw
_DTYPE_FLOAT64 = b"\x20\x01"  # Tensor.dtype = 4: DTYPE_FLOAT64, as a client may set it


def _tensor_head(columns: int, field: int, size: int) -> bytes:
    """Tensor{shape: [1, columns], <field>: <size bytes of numbers>} up to the numbers."""
    shape = _varint(1) + _varint(columns)
    return (_key(1, 2) + _varint(len(shape)) + shape  # Tensor.shape = 1
            + _key(field, 2) + _varint(size))  # .values or .raw, then the numbers


def _reply_frame(columns: int, version: int, field: int, size: int) -> tuple[bytes, bytes]:
    """The bytes of PredictResponse{outputs: Tensor{shape: [1, columns], <field>: <size bytes
    of numbers>}, model_version: version} before and after the numbers."""
    tensor = _tensor_head(columns, field, size)
    prefix = _key(1, 2) + _varint(len(tensor) + size) + tensor  # .outputs = 1
    suffix = _key(2, 0) + _varint(version) if version else b""  # .model_version = 2
    return prefix, suffix


def _infer_tensor_head(name: str, datatype: str, columns: int, typed_size: int | None) -> bytes:
    """InferInputTensor or InferOutputTensor (the same fields) {name, datatype, shape: [1,
    columns], contents: {<datatype's field>: <typed_size bytes of numbers>}} up to the numbers;
    without contents when `typed_size` is None (the numbers are raw, elsewhere)."""
    shape = _varint(1) + _varint(columns)
    head = (_string_field(1, name) + _string_field(2, datatype)  # .name, .datatype
            + _key(3, 2) + _varint(len(shape)) + shape)  # .shape, packed
    if typed_size is None:
        return head
    contents = _key(_CONTENTS_FIELD[datatype], 2) + _varint(typed_size)
    return head + _key(5, 2) + _varint(len(contents) + typed_size) + contents  # .contents = 5


def _infer_reply_frame(datatype: str, columns: int, size: int, typed: bool) -> bytes:
    """The bytes of ModelInferResponse{model_name, model_version, [id,] outputs:
    [InferOutputTensor{name: "output", datatype, shape: [1, columns], [contents]}],
    [raw_output_contents: [...]]} between the id and the numbers (which come last: fields in
    number order, the numbers in the last field)."""
    tensor = _infer_tensor_head(OUTPUT, datatype, columns, size if typed else None)
    if typed:  # .outputs = 5, its numbers inside
        return _key(5, 2) + _varint(len(tensor) + size) + tensor
    return (_key(5, 2) + _varint(len(tensor)) + tensor  # .outputs = 5
            + _key(6, 2) + _varint(size))  # .raw_output_contents = 6, then the numbers


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
