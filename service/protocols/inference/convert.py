"""Protobuf <-> numpy and domain objects for the Open Inference Protocol
(inference.GRPCInferenceService), and nothing else; jitnet_v1/convert.py is jitnet.v1's.

What a jitnet model looks like through the protocol (docs/inference-protocol.md): one input
named "input" and one output named "output", FP64, shapes [-1, n_in] and [-1, n_out]. A
request's input may be FP32, converted to float64 on the way in, and its outputs are then FP32
too; its data is in raw_input_contents (one buffer) or in the typed contents of its datatype,
and the reply answers in the same form (raw or typed), as MLServer and KServe do.

Checks happen on sizes and names before anything is decoded; each error names the field. The
width and finiteness of the rows are the model's to check (prediction.py), as for jitnet.v1.
"""

from __future__ import annotations

import importlib.metadata
import math
from typing import NamedTuple

import numpy as np

from jitnet.inference import open_inference_grpc_pb2 as pb

from ...errors import InvalidArgument, NotFound
from ...store import ModelRecord

INPUT, OUTPUT = "input", "output"
PLATFORM = SERVER_NAME = "jitnet"
FP64, FP32 = "FP64", "FP32"
# Each accepted datatype: its wire dtype (little-endian) and its typed-contents field.
_WIRE = {FP64: np.dtype("<f8"), FP32: np.dtype("<f4")}
CONTENTS = {FP64: "fp64_contents", FP32: "fp32_contents"}
_FLOAT64 = np.dtype(np.float64)
# Longer version strings cannot name a version (and int() refuses very long ones).
_MAX_VERSION_DIGITS = 20


def server_version() -> str:
    try:
        return importlib.metadata.version("jitnet")
    except importlib.metadata.PackageNotFoundError:  # run from a tree that is not installed
        return "0+unknown"


class InferInput(NamedTuple):
    """ModelInfer's one input, checked for form but not decoded."""

    datatype: str  # FP64 or FP32
    shape: tuple[int, ...]  # [rows, n_in] or [n_in]
    raw: bytes | None  # raw_input_contents[0], or None: the data is in `contents`
    contents: pb.InferTensorContents

    @property
    def rows(self) -> int:
        """For the row limit, before anything is decoded: [n_in] is one row."""
        return self.shape[0] if len(self.shape) == 2 else 1


def infer_input(request: pb.ModelInferRequest) -> InferInput:
    """The request's input, checked for everything but its numbers: one input named 'input',
    FP64 or FP32, a 1-D or 2-D shape, its data in exactly one form and of the right size."""
    if len(request.inputs) != 1:
        raise InvalidArgument(f"inputs has {len(request.inputs)} tensors; a jitnet model takes "
                              f"one, '{INPUT}' [rows, n_in] (ModelMetadata)")
    tensor = request.inputs[0]
    if tensor.name != INPUT:
        raise InvalidArgument(f"inputs[0].name is {tensor.name!r}; a jitnet model's input is "
                              f"named '{INPUT}' (ModelMetadata)")
    datatype = tensor.datatype
    if datatype not in _WIRE:
        raise InvalidArgument(f"inputs[0].datatype is {datatype!r}; send FP64 (or FP32, "
                              "answered in FP32)")
    shape = tuple(int(d) for d in tensor.shape)
    if len(shape) not in (1, 2) or min(shape) < 0:
        raise InvalidArgument(f"inputs[0].shape is {list(shape)}; send [rows, n_in] or [n_in]")
    _check_outputs(request)

    typed = [field.name for field, _ in tensor.contents.ListFields()]  # the non-empty ones
    count = math.prod(shape)
    buffers = len(request.raw_input_contents)
    if buffers:
        if buffers != 1:
            raise InvalidArgument(f"raw_input_contents has {buffers} buffers; send one per "
                                  "input, and a jitnet model has one input")
        if typed:
            raise InvalidArgument(f"both raw_input_contents and inputs[0].contents."
                                  f"{typed[0]} carry data; send the input in exactly one")
        raw = request.raw_input_contents[0]
        size = _WIRE[datatype].itemsize
        if len(raw) != size * count:
            raise InvalidArgument(
                f"raw_input_contents[0] has {len(raw)} bytes; inputs[0].shape {list(shape)} "
                f"of {datatype} needs {size} x {count} = {size * count} (little-endian)")
        return InferInput(datatype, shape, raw, tensor.contents)
    expected = CONTENTS[datatype]
    other = [name for name in typed if name != expected]
    if other:
        raise InvalidArgument(f"inputs[0].contents.{other[0]} is set, but inputs[0].datatype "
                              f"is {datatype}, whose data goes in contents.{expected}")
    values = len(getattr(tensor.contents, expected))
    if values != count:
        raise InvalidArgument(f"inputs[0].contents.{expected} has {values} numbers; "
                              f"inputs[0].shape {list(shape)} needs {count} (or send the data "
                              "in raw_input_contents)")
    return InferInput(datatype, shape, None, tensor.contents)


def _check_outputs(request: pb.ModelInferRequest) -> None:
    names = [output.name for output in request.outputs]
    if len(names) > 1 or any(name != OUTPUT for name in names):
        raise InvalidArgument(f"outputs asks for {names}; a jitnet model has one output, "
                              f"'{OUTPUT}' (ask for it, or for nothing)")


def decode(inp: InferInput) -> np.ndarray:
    """The input as float64 of its shape. Raw FP64 comes back as a read-only view of the
    request's bytes where this host's float64 is the wire's (one copy fewer: Predict does the
    same); FP32 is converted exactly (every float32 is a float64)."""
    wire = _WIRE[inp.datatype]
    if inp.raw is not None:
        values = np.frombuffer(inp.raw, dtype=wire)
        if not (values.dtype == _FLOAT64 and values.dtype.isnative and values.flags.aligned):
            values = values.astype(np.float64)
    else:
        field = getattr(inp.contents, CONTENTS[inp.datatype])
        values = np.fromiter(field, dtype=np.float64, count=len(field))
    return values.reshape(inp.shape)


def infer_response(request: pb.ModelInferRequest, inp: InferInput, outputs: np.ndarray,
                   version: int) -> pb.ModelInferResponse:
    """The reply: the output in the request's datatype and form (raw or typed), the request's
    model name and id, the version that answered."""
    reply = pb.ModelInferResponse(model_name=request.model_name, model_version=str(version),
                                  id=request.id)
    tensor = reply.outputs.add(name=OUTPUT, datatype=inp.datatype, shape=outputs.shape)
    data = np.ascontiguousarray(outputs, dtype=_WIRE[inp.datatype])
    if inp.raw is not None:
        reply.raw_output_contents.append(data.tobytes())
    else:
        getattr(tensor.contents, CONTENTS[inp.datatype]).extend(data.ravel().tolist())
    return reply


def requested_version(model_name: str, text: str) -> int | None:
    """model_version / version as a number, None when empty (the current version). Anything
    that is not a whole number cannot name a version of a jitnet model: NotFound."""
    if not text:
        return None
    if text.isascii() and text.isdigit() and len(text) <= _MAX_VERSION_DIGITS:
        return int(text)
    shown = text if len(text) <= 40 else text[:40] + "..."
    raise NotFound(f"model '{model_name}' has no version {shown!r}: versions are whole numbers "
                   "(ModelMetadata lists the one served); leave the version empty for it")


def model_metadata(record: ModelRecord) -> pb.ModelMetadataResponse:
    sizes = record.arch.layer_sizes
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=record.id, versions=[str(record.version)], platform=PLATFORM,
        inputs=[tensor(name=INPUT, datatype=FP64, shape=[-1, sizes[0]])],
        outputs=[tensor(name=OUTPUT, datatype=FP64, shape=[-1, sizes[-1]])])


def server_metadata() -> pb.ServerMetadataResponse:
    # No protocol extension (Triton's model repository, statistics, shared memory...) is
    # implemented: their RPCs answer UNIMPLEMENTED.
    return pb.ServerMetadataResponse(name=SERVER_NAME, version=server_version(), extensions=[])
